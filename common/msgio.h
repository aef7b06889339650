/* The message I/O a sync phase is written against: send and receive wire messages, blocking.
 *
 * In the programs it is a chan (chan_io()); in tests it can be an in-memory pipe between two
 * threads (tests/helpers/msgpipe.h), so each phase of a sync can be tested without sockets. */
#ifndef UNDERSTUDY_MSGIO_H
#define UNDERSTUDY_MSGIO_H

#include <stdint.h>

#include "wire.h"

typedef struct msgio {
    /* Sends a message (the callee copies what it needs). Returns 0 or a negative code. */
    int (*send)(void *ctx, const wire_msg_t *msg);
    /* Receives the next message (caller frees with wire_msg_free). Returns 1, or a negative
     * code (ERR_PEER_CLOSED, UV_ETIMEDOUT after timeout_ms; 0 means no timeout). */
    int (*recv)(void *ctx, wire_msg_t **ret_msg, uint64_t timeout_ms);
    void *ctx;
} msgio_t;

static inline int msgio_send(const msgio_t *io, const wire_msg_t *msg)
{
    return io->send(io->ctx, msg);
}

static inline int msgio_recv(const msgio_t *io, wire_msg_t **ret_msg, uint64_t timeout_ms)
{
    return io->recv(io->ctx, ret_msg, timeout_ms);
}

#endif
