/* Follows the backup web server's access logs and finds the requests that wrote to the site: the
 * access-log signal of the write guard.
 *
 * A request counts when its method is POST, PUT, PATCH or DELETE (or it is a GET under /wp-admin/
 * carrying _wpnonce=, WordPress's nonce-protected actions such as trashing a post), its status is
 * 2xx or 3xx, its time is at or after the `since` time (the live generation's switch), and no
 * ignore rule matches it. The status is not otherwise trusted: xmlrpc.php answers 200 even to
 * failed logins, and counts. The built-in ignore rule is "POST /wp-cron.php" (WordPress POSTs
 * it to itself on ordinary page views, any query string).
 *
 * Formats: "combined" (nginx's and Apache's predefined format; the default) or an nginx-style
 * log_format string. Recognised variables: $remote_addr, $time_local (dd/Mon/yyyy:HH:MM:SS
 * +zzzz), $time_iso8601, $request ("METHOD TARGET PROTOCOL"), $request_method, $request_uri,
 * $status, $http_cf_connecting_ip; any other $variable matches a field and is ignored. A
 * variable's value runs to the literal text that follows it in the format (backslash escapes
 * skipped), so quoted fields may hold blanks.
 *
 * The client is CF-Connecting-IP only when the peer ($remote_addr) is inside the trusted ranges
 * (Cloudflare's); otherwise the peer itself.
 *
 * Rotation: a file renamed away (new inode at the path) is read to its end first, then the new
 * file from its start; a file truncated in place (copytruncate: smaller than what was read) is
 * read again from its start. A path that does not exist yet is retried on every poll. Each
 * poll reads at most AL_POLL_BUDGET bytes per file, so a huge backlog is caught up over several
 * polls without blocking the loop; lines longer than AL_MAX_LINE are skipped; a partial last
 * line waits for its end.
 *
 * Not thread-safe: one thread (the loop thread, from a timer) owns an accesslog_t.
 */
#ifndef UNDERSTUDY_ACCESSLOG_H
#define UNDERSTUDY_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "firewall.h"

#define AL_MAX_LINE    (16 * 1024)   /* longest line considered */
#define AL_POLL_BUDGET (1024 * 1024) /* bytes read per file per poll */
#define AL_MAX_RULES   64            /* ignore rules */
#define AL_HIT_LEN     300           /* one hit's evidence line, NUL included */

typedef struct accesslog accesslog_t;

typedef struct al_opts {
    const char *const *paths; /* access logs to follow */
    size_t n_paths;
    const char *format;        /* NULL or "combined", else an nginx-style format string */
    const char *const *ignore; /* extra rules "METHOD PATH-PREFIX" (METHOD may be '*') */
    size_t n_ignore;
    const fw_list_t *trusted; /* proxies whose CF-Connecting-IP is believed; NULL: none */
} al_opts_t;

/* One counted request. */
typedef struct al_hit {
    time_t time;           /* the request's time (or the time read, if the format has none) */
    char line[AL_HIT_LEN]; /* "POST /wp-comments-post.php 302 from 203.0.113.9 at TIME (FILE)" */
} al_hit_t;

/* Checks the options (format, rules) and creates a follower; no file is opened yet. trusted is
 * copied. Returns 0 and *ret, or ERR_CONFIG / UV_ENOMEM with a one-line explanation in err. */
int accesslog_new(const al_opts_t *opts, accesslog_t **ret, char *err, size_t err_size);

/* Closes every file and frees; accepts NULL. */
void accesslog_free(accesslog_t *al);

/* Counts requests at or after `since` from now on (earlier lines are still read, not counted). */
void accesslog_set_since(accesslog_t *al, time_t since);

/* Sets the bytes read per file per poll (0: AL_POLL_BUDGET). SIZE_MAX reads every file to its
 * end, for a poll a sync is waiting on (after a restart with a large log, that poll may take a
 * while on the loop thread: better late than missing a write at the end of the log). */
void accesslog_set_budget(accesslog_t *al, size_t bytes);

/* Reads what was appended since the last poll (bounded, see above) and stores up to max_hits
 * counted requests in hits; *ret_n is the number of counted requests found, which may exceed
 * max_hits (the rest are only counted). Never blocks on anything but local file reads. Returns
 * 0, or a negative errno when a file could not be read (it is retried next poll; the others are
 * still read); accesslog_last_error says which. */
int accesslog_poll(accesslog_t *al, al_hit_t *hits, size_t max_hits, size_t *ret_n);

/* The one-line explanation of the last failure of accesslog_poll, or "". */
const char *accesslog_last_error(const accesslog_t *al);

/* Parses nginx's $time_local ("26/Nov/2026:01:02:03 +0100") into a time_t. Returns 0 or
 * UV_EINVAL. */
int accesslog_parse_time_local(const char *text, size_t len, time_t *ret);

/* Checks one line against the follower's format and rules, as accesslog_poll does; for tests
 * and the fuzzer. Returns 1 (counted; *ret_hit filled), 0 (not counted) or UV_EINVAL (the line
 * does not match the format). */
int accesslog_match_line(accesslog_t *al, const char *line, size_t len, const char *file,
                         al_hit_t *ret_hit);

/* True when addr (text) is in list. */
bool accesslog_addr_in(const fw_list_t *list, const char *addr);

#endif
