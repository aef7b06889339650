/* The write guard's latch: once any signal shows that the backup took writes of its own, syncs are
 * refused until an operator resolves it, across restarts and reboots (DRBD's
 * discard-zero-changes: sync only to a node that touched nothing).
 *
 * State lives under [site] data/guard/ (mode 0700):
 *   tripped   present while tripped: the first signal, its time and up to GUARD_MAX_EVIDENCE
 *             lines of evidence, written atomically (temp + fsync + rename). An unreadable or
 *             corrupt file still counts as tripped (fail safe).
 *   primary   the last failover notification: "down" or "up", its time and detail (atomic).
 *   cleared   the time of the last clear ("cleared 1795654923"), atomic: requests and file
 *             changes from before it were dealt with by the operator and do not count again.
 *   events    an append-only log, one JSON object per line: trips, evidence added, primary
 *             down/up notifications and clears.
 *
 * Several processes share the state (serve trips; resolve clears; status reads): every query
 * first compares the tripped file with what this process last read or wrote (inode, size,
 * mtime) and reloads it, so a clear by 'resolve' reaches the running controller at once. A trip
 * this process could not write to disk stays latched in its memory.
 *
 * Thread-safe: every function takes the guard's mutex, so worker threads may ask while the loop
 * thread trips. Functions that write to disk block for an fsync or two; trips are rare.
 */
#ifndef UNDERSTUDY_GUARD_H
#define UNDERSTUDY_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define GUARD_MAX_EVIDENCE 10  /* evidence lines kept for one trip */
#define GUARD_EVIDENCE_LEN 256 /* bytes per evidence line, NUL included */
#define GUARD_DETAIL_LEN   256 /* bytes of a failover notification's detail, NUL included */

typedef enum guard_signal {
    GUARD_SIGNAL_ACCESS_LOG, /* a write request in the backup web server's access log */
    GUARD_SIGNAL_DATABASE,   /* the live database differs from what was applied */
    GUARD_SIGNAL_FILES,      /* the live generation's tree differs from its manifest */
    GUARD_SIGNAL_MANUAL,     /* an operator tripped it */
    GUARD_SIGNAL_COUNT_
} guard_signal_t;

typedef enum guard_primary {
    GUARD_PRIMARY_UNKNOWN,
    GUARD_PRIMARY_DOWN,
    GUARD_PRIMARY_UP
} guard_primary_t;

typedef struct guard guard_t;

/* A copy of the latch, for status and reasons. */
typedef struct guard_info {
    bool tripped;
    guard_signal_t signal; /* the first signal */
    time_t since;          /* when it first tripped */
    unsigned signals;      /* bit (1 << signal) for every signal seen since */
    size_t n_evidence;
    char evidence[GUARD_MAX_EVIDENCE][GUARD_EVIDENCE_LEN];
    size_t dropped_evidence; /* lines that did not fit */
    time_t cleared_at;       /* the last guard_clear (by any process), or 0 */
    guard_primary_t primary; /* the last failover notification */
    time_t primary_since;
    char primary_detail[GUARD_DETAIL_LEN];
} guard_info_t;

/* "access-log", "database", "files", "manual". */
const char *guard_signal_name(guard_signal_t signal);

/* Opens (creating data_dir/guard, mode 0700) and reads back the latch and the primary's state.
 * Returns 0 and *ret, or a negative errno with a one-line explanation in err. */
int guard_open(const char *data_dir, guard_t **ret, char *err, size_t err_size);

/* Frees the guard; accepts NULL. */
void guard_free(guard_t *g);

/* Trips the latch for signal at time `when`, with n evidence lines (each cut to
 * GUARD_EVIDENCE_LEN - 1 bytes, non-printable bytes escaped as \xNN). The first trip is kept;
 * later calls only add evidence up to GUARD_MAX_EVIDENCE lines (lines of another signal are
 * prefixed with its name) and count the rest. Returns 1 when this call tripped a clear latch,
 * 0 when it was already tripped, or a negative errno if the state could not be written — the
 * latch is then still tripped in memory for this process's lifetime. */
int guard_trip(guard_t *g, guard_signal_t signal, time_t when, const char *const *evidence,
               size_t n);

/* Whether the latch is tripped; fills *ret_info (if not NULL) with a copy of the state. */
bool guard_is_tripped(guard_t *g, guard_info_t *ret_info);

/* Writes the reason a sync is refused into buf and returns true, or returns false (buf "") when
 * syncs may proceed. Tripped: "signal access-log at 2026-11-26T01:02:03Z: EVIDENCE; EVIDENCE
 * (+N more)". Not tripped but the primary reported DOWN: "failover: the primary was reported
 * DOWN at TIME (DETAIL); the backup is serving". Cut to fit buf with "...". */
bool guard_reason_line(guard_t *g, char *buf, size_t size);

/* Clears the latch (resolve, after its snapshot): removes `tripped` and logs a "clear" event
 * with the operator's note. Returns 0 or a negative errno. */
int guard_clear(guard_t *g, const char *note);

/* Records a failover notification: the primary is DOWN or UP since `when`, with a detail
 * (cut and escaped like evidence). Returns 0 or a negative errno (kept in memory anyway). */
int guard_note_primary(guard_t *g, guard_primary_t state, time_t when, const char *detail);

/* True while the last notification said the primary is DOWN. */
bool guard_primary_down(guard_t *g);

/* Formats t as "2026-11-26T01:02:03Z" into out (at least 21 bytes). Returns out. */
char *guard_format_time(time_t t, char *out, size_t size);

#endif
