/* Alerts: mail over SMTP (libcurl; STARTTLS and authentication) to every configured recipient and
 * JSON POSTs (a Slack-compatible "text" field) to every configured webhook, through a persistent
 * outbox so that no alert is lost to a delivery failure or a restart.
 *
 * Outbox: [site] data/alerts/ (mode 0700) holds one file per pending delivery (one alert to one
 * recipient or webhook), "<created>-<random>.alert", written atomically; a delivered item is
 * removed, a failed one is rewritten with its attempt count, the next attempt's time (backoff
 * 1, 2, 4 ... minutes, at most an hour; never given up) and the last error. data/alerts/state
 * remembers which trip, failure streak, stale period and failover were already announced and
 * when the last reminder went out, so a restart neither repeats nor forgets an alert.
 *
 * Threads: alert_check and alert_enqueue run on the loop thread (they write a few small files);
 * alert_deliver blocks on the network and runs on a worker thread (uv_queue_work). The two only
 * share the outbox directory, where items are created whole by rename and then only touched by
 * alert_deliver. At most one alert_deliver runs at a time (UV_EBUSY otherwise).
 */
#ifndef UNDERSTUDY_ALERT_H
#define UNDERSTUDY_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cfg.h"

#define ALERT_MAX_TEXT      (32 * 1024) /* body of one alert */
#define ALERT_MAX_ITEMS     10000       /* pending deliveries kept; past it new ones are refused */
#define ALERT_BATCH         64          /* deliveries attempted per alert_deliver call */
#define ALERT_BACKOFF_S     60 /* first retry delay; doubles, capped at ALERT_MAX_BACKOFF_S */
#define ALERT_MAX_BACKOFF_S 3600
#define ALERT_TIMEOUT_S     30 /* per delivery */

typedef enum alert_kind {
    ALERT_TRIPPED,      /* the guard tripped (once per trip) */
    ALERT_REMINDER,     /* still tripped (every remind) */
    ALERT_SYNC_FAILING, /* syncs failing for longer than failure_grace (once per streak) */
    ALERT_STALE,        /* no successful sync for longer than stale_after (once per period) */
    ALERT_FAILOVER,     /* Cloudflare reported the primary DOWN (once per notification) */
    ALERT_TEST,         /* sent by hand */
    ALERT_KIND_COUNT_
} alert_kind_t;

typedef struct alert_opts {
    const char *data_dir; /* [site] data */
    const char *site_id;  /* named in subjects */
    const char *const *emails;
    size_t n_emails;
    const char *smtp_url;     /* smtp://HOST:PORT or smtps://HOST:PORT; required with emails */
    bool smtp_starttls;       /* with smtp://: require STARTTLS (CURLUSESSL_ALL) */
    const char *smtp_ca_file; /* or NULL: the system's CAs */
    const char *smtp_user;    /* or NULL: no AUTH */
    const char *smtp_password_file; /* read at each delivery; mode 0600 */
    const char *from;               /* required with emails */
    const char *const *webhooks;
    size_t n_webhooks;
    uint64_t remind_s, failure_grace_s, stale_after_s;
} alert_opts_t;

/* What alert_check looks at, filled by the caller from the guard and the sync history. */
typedef struct alert_status {
    bool tripped;
    time_t tripped_since;
    const char *reason;   /* guard_reason_line, or NULL */
    time_t last_success;  /* last applied or unchanged sync (or when the store was created); 0:
                             unknown */
    time_t failing_since; /* first failure of the current streak; 0: the last sync succeeded */
    const char *last_failure;
    bool primary_down;
    time_t primary_down_since;
    const char *primary_detail;
} alert_status_t;

typedef struct alert_stats {
    unsigned delivered, failed, pending; /* pending: left in the outbox after the call */
    char first_error[512];               /* "ops@example.org: Login denied (...)" or "" */
} alert_stats_t;

typedef struct alert alert_t;

/* Fills *ret from a controller configuration's [site] and [alerts] sections (strings borrowed
 * from cfg, which must outlive the alert_open call). */
void alert_opts_from_cfg(const cfg_t *cfg, alert_opts_t *ret);

/* Checks the options (recipients need smtp_url and from; the password file must be private),
 * creates data/alerts/ and reads the state back. Calls curl_global_init: call it before other
 * threads start. Returns 0 and *ret, or ERR_CONFIG / a negative errno with err. An alert_t
 * with no recipient and no webhook is valid and enqueues nothing. */
int alert_open(const alert_opts_t *opts, alert_t **ret, char *err, size_t err_size);

/* Frees; accepts NULL. Pending items stay on disk for the next start. */
void alert_free(alert_t *a);

/* "tripped", "reminder", "sync-failing", "stale", "failover", "test". */
const char *alert_kind_name(alert_kind_t kind);

/* Queues one alert for every recipient and webhook. subject is one line (CR and LF become
 * blanks); text at most ALERT_MAX_TEXT bytes (cut). Returns the number of items written, or a
 * negative errno (what was written stays queued). */
int alert_enqueue(alert_t *a, alert_kind_t kind, time_t now, const char *subject, const char *text);

/* Decides which alerts st calls for at time now (see alert_kind_t) and enqueues them, updating
 * the state file. Returns the number of alerts queued (not items) or a negative errno. */
int alert_check(alert_t *a, const alert_status_t *st, time_t now);

/* Attempts the items due at time now (at most ALERT_BATCH, oldest first): blocking, for a
 * worker thread. Fills *ret. Returns 0, or UV_EBUSY when another alert_deliver runs. */
int alert_deliver(alert_t *a, time_t now, alert_stats_t *ret);

/* Number of items in the outbox. */
size_t alert_pending(alert_t *a);

/* The earliest next-attempt time of a pending item, or 0 when none. */
time_t alert_next_due(alert_t *a);

#endif
