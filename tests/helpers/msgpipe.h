/* An in-memory, two-ended message pipe for testing sync phases without sockets: what one end
 * sends the other receives, through a real wire_encode/wire_decode round trip. Each direction is
 * bounded (send blocks while more than max_bytes wait), like a chan. Closing an end makes the
 * other end's recv return ERR_PEER_CLOSED once its queue is empty. */
#ifndef UNDERSTUDY_MSGPIPE_H
#define UNDERSTUDY_MSGPIPE_H

#include "msgio.h"

typedef struct msgpipe msgpipe_t;

msgpipe_t *msgpipe_new(size_t max_bytes);
/* end 0 and end 1 */
msgio_t msgpipe_end(msgpipe_t *p, int end);
void msgpipe_close(msgpipe_t *p, int end);
/* Bytes of frames sent from end `from` so far (the wire cost of that direction). */
uint64_t msgpipe_bytes(msgpipe_t *p, int from);
void msgpipe_free(msgpipe_t *p);

#endif
