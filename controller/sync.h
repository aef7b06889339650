/* One sync from SyncBegin to Result: the files phase, the database phase, the switch. */
#ifndef UNDERSTUDY_CONTROLLER_SYNC_H
#define UNDERSTUDY_CONTROLLER_SYNC_H

#include "cfg.h"
#include "msgio.h"

typedef struct syncer syncer_t;

/* Under [site] data: written by `resolve --discard-local`, it makes the next sync replace
 * everything the backup changed (a full listing, every live file checked against its manifest
 * entry, every table sent again); removed once that sync applied. */
#define SYNC_RESYNC_FILE "resync"
typedef struct watch watch_t;

/* Opens the generation store and the database connection (when configured), recovering an
 * interrupted switch. Returns 0 or a negative code with err. */
int syncer_open(const cfg_t *cfg, syncer_t **ret, char *err, size_t err_size);
void syncer_close(syncer_t *s);

/* Makes every sync ask the write guard before its switch (watch_refusal) and report its outcome
 * (watch_sync_done). Call before the first sync; w must outlive the sync workers. */
void syncer_set_watch(syncer_t *s, watch_t *w);

/* Runs one sync after its SyncBegin and always answers with a Result (unless the connection is
 * gone). Only one sync runs at a time; a second one is answered FAILED at once. Returns 0 when
 * the Result was sent, 1 when it was a failure sent before the agent's Commit (the agent may
 * still be streaming the rest of that sync), else the transport error. Worker thread. */
int syncer_run(syncer_t *s, const msgio_t *io, const wire_sync_begin_t *begin, const char *peer);

#endif
