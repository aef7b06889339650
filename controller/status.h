/* What `understudy-controller status` reads that no other module records: the outcome of the
 * last sync, kept in [site] data/last-sync (key=value lines, written as temp + fsync + rename):
 *   result=applied|unchanged|refused|failed
 *   time=1795654923
 *   generation=12          (the live generation after the sync)
 *   peer=203.0.113.7:51234
 *   reason=...             (refused or failed: one line)
 */
#ifndef UNDERSTUDY_CONTROLLER_STATUS_H
#define UNDERSTUDY_CONTROLLER_STATUS_H

#include <stdint.h>
#include <time.h>

/* Records the last sync's outcome in data_dir/last-sync. Blocking (one fsync); failures are
 * logged once and otherwise ignored (status then shows an older outcome). */
void status_record_sync(const char *data_dir, const char *result, time_t when, uint64_t generation,
                        const char *peer, const char *reason);

#endif
