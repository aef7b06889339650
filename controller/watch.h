/* The write guard's moving parts on the serve loop, in one place: the guard latch, the access-log
 * follower (polled every second), the file drift check (every [guard] file_check_interval, on a
 * worker thread), the failover webhook and the alerts (checked every second, delivered on a
 * worker thread). serve.c starts it; the sync workers ask it before every switch.
 *
 * The live generation is read from the file system, so no other module has to report switches:
 * its tree is the [site] docroot symlink's target (data/generations/N/root), its manifest the
 * "manifest" file beside that root, and its switch time the symlink's own mtime (the symlink is
 * created just before it is renamed over the docroot, so this errs early: a write in the same
 * second as a switch counts). Without a docroot there is no live generation, and nothing is
 * counted.
 *
 * Sync outcomes (for the stale and failing alerts) are remembered in data/alerts/history across
 * restarts.
 */
#ifndef UNDERSTUDY_WATCH_H
#define UNDERSTUDY_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <uv.h>

#include "cfg.h"
#include "guard.h"

#define WATCH_TICK_MS    1000
#define WATCH_BARRIER_MS 3000 /* watch_refusal waits at most this for the loop's poll */
#define WATCH_MAX_HITS   16   /* access-log hits turned into evidence per poll */

typedef struct watch watch_t;

/* Loop thread: opens the guard, the access logs, the alert outbox and the webhook (when
 * configured) from cfg (which must outlive the watch) and starts the timers. Returns 0 and *ret,
 * or a negative code with a one-line explanation in err. Call before worker threads start
 * (libcurl's global initialisation). */
int watch_start(uv_loop_t *loop, const cfg_t *cfg, watch_t **ret, char *err, size_t err_size);

/* The latch, for status and resolve. Valid until the watch is freed. */
guard_t *watch_guard(watch_t *w);

/* Any thread (sync workers): makes the loop read the access logs now, waits for it (at most
 * WATCH_BARRIER_MS), then returns true with the reason (guard_reason_line) when syncs must be
 * refused. Never call it from the loop thread. */
bool watch_refusal(watch_t *w, char *reason, size_t size);

/* Any thread: a sync ended, successfully (applied or unchanged) or not (failure: one line). */
void watch_sync_done(watch_t *w, bool ok, time_t when, const char *failure);

/* Loop thread: stops timers, the webhook and the handles; the watch is freed once they are
 * closed and running work is done (keep running the loop). Call it after the sync workers
 * have ended (they may be inside watch_refusal or watch_sync_done). Accepts NULL. */
void watch_stop(watch_t *w);

#endif
