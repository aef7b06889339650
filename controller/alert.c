/* Alerts through a persistent outbox. See alert.h.
 *
 * Item file ("<created>-<random>.alert"):
 *   understudy-alert 1
 *   kind tripped
 *   to mail ops@example.org        (or: to webhook https://...)
 *   created 1795654923
 *   attempts 2
 *   next 1795655103
 *   error Login denied
 *   subject backup tripped: ...
 *   <empty line>
 *   body text
 */
#include "alert.h"
#include "safefs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "buf.h"
#include "cfg.h"
#include "err.h"

#define ITEM_MAGIC "understudy-alert 1\n"
#define ITEM_MAX   (ALERT_MAX_TEXT + 16 * 1024)

struct alert {
    alert_opts_t o; /* strings below are owned copies */
    void **owned;   /* copies of the options' strings and lists */
    size_t n_owned;
    int dirfd;
    pthread_mutex_t deliver_mu;
    /* Announced already (data/alerts/state). */
    time_t st_tripped, st_reminded, st_failing, st_stale, st_failover;
};

static const char *const kind_names[ALERT_KIND_COUNT_] = {
    [ALERT_TRIPPED] = "tripped",           [ALERT_REMINDER] = "reminder",
    [ALERT_SYNC_FAILING] = "sync-failing", [ALERT_STALE] = "stale",
    [ALERT_FAILOVER] = "failover",         [ALERT_TEST] = "test",
};

const char *alert_kind_name(alert_kind_t kind)
{
    return (unsigned)kind < ALERT_KIND_COUNT_ ? kind_names[kind] : "unknown";
}

/* ---- small helpers ----------------------------------------------------------------------- */

/* Records an allocation to free with the alert_t; returns it (NULL stays NULL). */
static void *own(alert_t *a, void *p)
{
    if (!p)
        return NULL;
    void **n = realloc(a->owned, (a->n_owned + 1) * sizeof(*n));
    if (!n) {
        free(p);
        return NULL;
    }
    a->owned = n;
    return a->owned[a->n_owned++] = p;
}

static const char *keep(alert_t *a, const char *s)
{
    return s ? own(a, strdup(s)) : NULL;
}

static const char *const *keep_list(alert_t *a, const char *const *list, size_t n)
{
    const char **out = own(a, calloc(n ? n : 1, sizeof(*out)));
    for (size_t i = 0; out && i < n; i++)
        if (!(out[i] = keep(a, list[i])))
            return NULL;
    return out;
}

/* The guard's and the outbox's files hold evidence and recipients: mode 0600. */
static int write_atomic(int dirfd, const char *name, const void *data, size_t len)
{
    return safefs_write_atomic(dirfd, name, data, len, 0600);
}

/* Reads a file of at most max bytes into a malloc'ed NUL-terminated string. */
static ssize_t read_at(int dirfd, const char *name, size_t max, char **ret)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char *text = malloc(max + 1);
    size_t len = 0;
    ssize_t n = 1;
    while (text && len < max && (n = read(fd, text + len, max - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    int e = !text ? -ENOMEM : n < 0 ? -errno : 0;
    close(fd);
    if (e < 0) {
        free(text);
        return e;
    }
    text[len] = '\0';
    *ret = text;
    return (ssize_t)len;
}

/* Copies one line of text: CR, LF and other control bytes become blanks. */
static void one_line(const char *s, char *out, size_t size)
{
    size_t o = 0;
    for (; s && *s && o + 1 < size; s++)
        out[o++] = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
    out[o] = '\0';
}

static void format_time(time_t t, char *out, size_t size)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- state ------------------------------------------------------------------------------- */

static void load_state(alert_t *a)
{
    char *text = NULL;
    if (read_at(a->dirfd, "state", 4096, &text) < 0)
        return;
    long long v;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (sscanf(line, "tripped %lld", &v) == 1)
            a->st_tripped = (time_t)v;
        else if (sscanf(line, "reminded %lld", &v) == 1)
            a->st_reminded = (time_t)v;
        else if (sscanf(line, "failing %lld", &v) == 1)
            a->st_failing = (time_t)v;
        else if (sscanf(line, "stale %lld", &v) == 1)
            a->st_stale = (time_t)v;
        else if (sscanf(line, "failover %lld", &v) == 1)
            a->st_failover = (time_t)v;
    }
    free(text);
}

static int save_state(alert_t *a)
{
    char text[256];
    int n = snprintf(text, sizeof(text),
                     "tripped %lld\nreminded %lld\nfailing %lld\nstale %lld\nfailover %lld\n",
                     (long long)a->st_tripped, (long long)a->st_reminded, (long long)a->st_failing,
                     (long long)a->st_stale, (long long)a->st_failover);
    return write_atomic(a->dirfd, "state", text, (size_t)n);
}

/* ---- open -------------------------------------------------------------------------------- */

static bool valid_address(const char *s)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strchr(at + 1, '@'))
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || strchr("<>,;\"()[]\\", *s))
            return false;
    return true;
}

void alert_opts_from_cfg(const cfg_t *cfg, alert_opts_t *ret)
{
    *ret = (alert_opts_t){
        .data_dir = cfg_get(cfg, "site", "data"),
        .site_id = cfg_get(cfg, "site", "id"),
        .smtp_url = cfg_get(cfg, "alerts", "smtp_url"),
        .smtp_starttls = cfg_get_bool(cfg, "alerts", "smtp_starttls", true),
        .smtp_ca_file = cfg_get(cfg, "alerts", "smtp_ca_file"),
        .smtp_user = cfg_get(cfg, "alerts", "smtp_user"),
        .smtp_password_file = cfg_get(cfg, "alerts", "smtp_password_file"),
        .from = cfg_get(cfg, "alerts", "from"),
        .remind_s = cfg_get_duration(cfg, "alerts", "remind", 12 * 3600),
        .failure_grace_s = cfg_get_duration(cfg, "alerts", "failure_grace", 6 * 3600),
        .stale_after_s = cfg_get_duration(cfg, "alerts", "stale_after", 24 * 3600),
    };
    ret->n_emails = cfg_get_all(cfg, "alerts", "email", &ret->emails);
    ret->n_webhooks = cfg_get_all(cfg, "alerts", "webhook", &ret->webhooks);
}

int alert_open(const alert_opts_t *opts, alert_t **ret, char *err, size_t err_size)
{
    char path[4096];
    alert_t *a;

    for (size_t i = 0; i < opts->n_emails; i++)
        if (!valid_address(opts->emails[i])) {
            snprintf(err, err_size, "[alerts] email: \"%.200s\" is not a plain address",
                     opts->emails[i]);
            return ERR_CONFIG;
        }
    if (opts->n_emails) {
        if (!opts->smtp_url ||
            (strncmp(opts->smtp_url, "smtp://", 7) && strncmp(opts->smtp_url, "smtps://", 8))) {
            snprintf(err, err_size,
                     "[alerts] email needs smtp_url = smtp://HOST:PORT or "
                     "smtps://HOST:PORT");
            return ERR_CONFIG;
        }
        if (!opts->from || !valid_address(opts->from)) {
            snprintf(err, err_size, "[alerts] email needs from = a plain sender address");
            return ERR_CONFIG;
        }
        if (!opts->smtp_user != !opts->smtp_password_file) {
            snprintf(err, err_size, "[alerts] smtp_user and smtp_password_file go together");
            return ERR_CONFIG;
        }
        if (opts->smtp_password_file) {
            char why[512];
            int r = cfg_check_secret_file(opts->smtp_password_file, why, sizeof(why));
            if (r < 0) {
                snprintf(err, err_size, "[alerts] smtp_password_file: %s", why);
                return r;
            }
        }
    }
    for (size_t i = 0; i < opts->n_webhooks; i++)
        if (strncmp(opts->webhooks[i], "https://", 8) && strncmp(opts->webhooks[i], "http://", 7)) {
            snprintf(err, err_size, "[alerts] webhook: \"%.200s\" is not an http(s) URL",
                     opts->webhooks[i]);
            return ERR_CONFIG;
        }
    if ((size_t)snprintf(path, sizeof(path), "%s/alerts", opts->data_dir) >= sizeof(path))
        return -ENAMETOOLONG;
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        int e = -errno;
        snprintf(err, err_size, "cannot create %s: %s", path, strerror(-e));
        return e;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, err_size, "libcurl failed to initialise");
        return ERR_INTERNAL;
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    pthread_mutex_init(&a->deliver_mu, NULL);
    a->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (a->dirfd < 0) {
        int e = -errno;
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(-e));
        alert_free(a);
        return e;
    }
    a->o = *opts;
    a->o.data_dir = keep(a, opts->data_dir);
    a->o.site_id = keep(a, opts->site_id ? opts->site_id : "default");
    a->o.smtp_url = keep(a, opts->smtp_url);
    a->o.smtp_ca_file = keep(a, opts->smtp_ca_file);
    a->o.smtp_user = keep(a, opts->smtp_user);
    a->o.smtp_password_file = keep(a, opts->smtp_password_file);
    a->o.from = keep(a, opts->from);
    a->o.emails = keep_list(a, opts->emails, opts->n_emails);
    a->o.webhooks = keep_list(a, opts->webhooks, opts->n_webhooks);
    if (!a->o.emails || !a->o.webhooks) {
        snprintf(err, err_size, "out of memory");
        alert_free(a);
        return UV_ENOMEM;
    }
    load_state(a);
    *ret = a;
    return 0;
}

void alert_free(alert_t *a)
{
    if (!a)
        return;
    if (a->dirfd >= 0)
        close(a->dirfd);
    for (size_t i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    free(a->owned);
    pthread_mutex_destroy(&a->deliver_mu);
    free(a);
    curl_global_cleanup();
}

/* ---- the outbox -------------------------------------------------------------------------- */

typedef struct item {
    char name[64];
    alert_kind_t kind;
    bool webhook;
    char to[1024];
    time_t created, next;
    unsigned attempts;
    char error[512];
    char subject[512];
    const char *body; /* inside text */
    char *text;
} item_t;

static int item_save(alert_t *a, const item_t *it)
{
    buf_t b = BUF_INIT;
    int r = buf_printf(&b,
                       ITEM_MAGIC "kind %s\nto %s %s\ncreated %lld\nattempts %u\nnext %lld\n"
                                  "error %s\nsubject %s\n\n%s",
                       alert_kind_name(it->kind), it->webhook ? "webhook" : "mail", it->to,
                       (long long)it->created, it->attempts, (long long)it->next, it->error,
                       it->subject, it->body);
    if (r == 0)
        r = write_atomic(a->dirfd, it->name, buf_data(&b), b.len);
    buf_free(&b);
    return r;
}

/* Parses an item file; returns 0 or UV_EINVAL. it->text owns the body. */
static int item_load(alert_t *a, const char *name, item_t *it)
{
    char *text = NULL;
    long long v;

    memset(it, 0, sizeof(*it));
    snprintf(it->name, sizeof(it->name), "%s", name);
    if (read_at(a->dirfd, name, ITEM_MAX, &text) < 0)
        return UV_EIO;
    it->text = text;
    if (strncmp(text, ITEM_MAGIC, strlen(ITEM_MAGIC)))
        return UV_EINVAL;
    char *p = text + strlen(ITEM_MAGIC);
    bool have_to = false;
    it->kind = ALERT_TEST;
    while (*p && *p != '\n') {
        char *nl = strchr(p, '\n');
        if (!nl)
            return UV_EINVAL;
        *nl = '\0';
        if (!strncmp(p, "kind ", 5)) {
            for (int k = 0; k < ALERT_KIND_COUNT_; k++)
                if (!strcmp(p + 5, kind_names[k]))
                    it->kind = (alert_kind_t)k;
        } else if (!strncmp(p, "to mail ", 8)) {
            snprintf(it->to, sizeof(it->to), "%s", p + 8);
            have_to = true;
        } else if (!strncmp(p, "to webhook ", 11)) {
            snprintf(it->to, sizeof(it->to), "%s", p + 11);
            it->webhook = have_to = true;
        } else if (sscanf(p, "created %lld", &v) == 1) {
            it->created = (time_t)v;
        } else if (sscanf(p, "attempts %lld", &v) == 1) {
            it->attempts = (unsigned)v;
        } else if (sscanf(p, "next %lld", &v) == 1) {
            it->next = (time_t)v;
        } else if (!strncmp(p, "error ", 6)) {
            snprintf(it->error, sizeof(it->error), "%s", p + 6);
        } else if (!strncmp(p, "subject ", 8)) {
            snprintf(it->subject, sizeof(it->subject), "%s", p + 8);
        }
        p = nl + 1;
    }
    if (*p != '\n' || !have_to)
        return UV_EINVAL;
    it->body = p + 1;
    return 0;
}

static int item_new(alert_t *a, alert_kind_t kind, time_t now, bool webhook, const char *to,
                    const char *subject, const char *body)
{
    item_t it = {.kind = kind, .webhook = webhook, .created = now, .next = now, .body = body};
    uint8_t rnd[6];

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -errno;
    snprintf(it.name, sizeof(it.name), "%012lld-%02x%02x%02x%02x%02x%02x.alert", (long long)now,
             rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    one_line(to, it.to, sizeof(it.to));
    one_line(subject, it.subject, sizeof(it.subject));
    return item_save(a, &it);
}

/* Lists the item names, sorted (oldest first); returns the count or a negative errno. */
static int list_items(alert_t *a, char ***ret)
{
    int dfd = dup(a->dirfd);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;

    if (!d) {
        int e = -errno;
        if (dfd >= 0)
            close(dfd);
        return e;
    }
    rewinddir(d);
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 7 || strcmp(de->d_name + len - 6, ".alert"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof(*nn));
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name)))
            break;
        n++;
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    *ret = names;
    return (int)n;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

size_t alert_pending(alert_t *a)
{
    char **names;
    int n = list_items(a, &names);
    if (n < 0)
        return 0;
    free_names(names, n);
    return (size_t)n;
}

time_t alert_next_due(alert_t *a)
{
    char **names;
    time_t due = 0;
    int n = list_items(a, &names);
    for (int i = 0; i < n; i++) {
        item_t it;
        if (item_load(a, names[i], &it) == 0 && (due == 0 || it.next < due))
            due = it.next;
        free(it.text);
    }
    if (n >= 0)
        free_names(names, n);
    return due;
}

int alert_enqueue(alert_t *a, alert_kind_t kind, time_t now, const char *subject, const char *text)
{
    char *body = strndup(text ? text : "", ALERT_MAX_TEXT);
    int written = 0, r = 0;

    if (!body)
        return UV_ENOMEM;
    if (alert_pending(a) + a->o.n_emails + a->o.n_webhooks > ALERT_MAX_ITEMS) {
        free(body);
        return UV_ENOSPC;
    }
    for (size_t i = 0; i < a->o.n_emails && r == 0; i++)
        if ((r = item_new(a, kind, now, false, a->o.emails[i], subject, body)) == 0)
            written++;
    for (size_t i = 0; i < a->o.n_webhooks && r == 0; i++)
        if ((r = item_new(a, kind, now, true, a->o.webhooks[i], subject, body)) == 0)
            written++;
    free(body);
    return r < 0 ? r : written;
}

/* ---- deciding ---------------------------------------------------------------------------- */

static int announce(alert_t *a, alert_kind_t kind, time_t now, const char *subject, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));

static int announce(alert_t *a, alert_kind_t kind, time_t now, const char *subject, const char *fmt,
                    ...)
{
    char full[600];
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return UV_ENOMEM;
    snprintf(full, sizeof(full), "[understudy %s] %s", a->o.site_id, subject);
    int r = alert_enqueue(a, kind, now, full, text);
    free(text);
    return r < 0 ? r : 1;
}

int alert_check(alert_t *a, const alert_status_t *st, time_t now)
{
    char t1[32], t2[32];
    int queued = 0, r = 0;
    bool changed = false;
    static const char what_to_do[] =
        "\n\nUntil this is resolved every sync from the primary is refused, so nothing written "
        "on the backup is overwritten. If visitors or editors wrote to the backup during a "
        "failover, carry their work back to the primary first:\n"
        "  understudy-controller status\n"
        "  understudy-controller export-local-changes DIR\n"
        "then, once the primary has it (or if it can be dropped):\n"
        "  understudy-controller resolve --discard-local\n"
        "Cloudflare fails back to the primary automatically when it is healthy again: the "
        "sooner this is handled, the less is stranded on the backup.\n";

    if (st->tripped) {
        format_time(st->tripped_since, t1, sizeof(t1));
        if (a->st_tripped != st->tripped_since) {
            r = announce(a, ALERT_TRIPPED, now, "backup has local changes: syncs refused",
                         "The backup of site \"%s\" has taken writes of its own since %s:\n  %s%s",
                         a->o.site_id, t1, st->reason ? st->reason : "(no detail)", what_to_do);
            if (r >= 0) {
                a->st_tripped = st->tripped_since;
                a->st_reminded = now;
                changed = true;
                queued++;
            }
        } else if (a->o.remind_s && now - a->st_reminded >= (time_t)a->o.remind_s) {
            r = announce(a, ALERT_REMINDER, now,
                         "reminder: backup has local changes, syncs still refused",
                         "Still unresolved: the backup of site \"%s\" has taken writes of its "
                         "own since %s:\n  %s%s",
                         a->o.site_id, t1, st->reason ? st->reason : "(no detail)", what_to_do);
            if (r >= 0) {
                a->st_reminded = now;
                changed = true;
                queued++;
            }
        }
    } else if (a->st_tripped) {
        a->st_tripped = 0;
        changed = true;
    }

    if (r >= 0 && st->failing_since && now - st->failing_since >= (time_t)a->o.failure_grace_s &&
        a->st_failing != st->failing_since) {
        format_time(st->failing_since, t1, sizeof(t1));
        r = announce(a, ALERT_SYNC_FAILING, now, "syncs are failing",
                     "Every sync of site \"%s\" since %s has failed; the backup is falling "
                     "behind the primary. The last error:\n  %s\n\nSee the controller's log "
                     "(journalctl -u understudy-controller) and the agent's cron mail.\n",
                     a->o.site_id, t1, st->last_failure ? st->last_failure : "(unknown)");
        if (r >= 0) {
            a->st_failing = st->failing_since;
            changed = true;
            queued++;
        }
    }

    if (r >= 0 && st->last_success && now - st->last_success >= (time_t)a->o.stale_after_s &&
        a->st_stale != st->last_success) {
        format_time(st->last_success, t1, sizeof(t1));
        format_time(now, t2, sizeof(t2));
        r = announce(a, ALERT_STALE, now, "backup is stale: no sync reached it",
                     "No sync of site \"%s\" has succeeded since %s (now %s). Is the agent's "
                     "cron job still running on the primary, and can it reach this "
                     "controller?\n",
                     a->o.site_id, t1, t2);
        if (r >= 0) {
            a->st_stale = st->last_success;
            changed = true;
            queued++;
        }
    }

    if (r >= 0 && st->primary_down && a->st_failover != st->primary_down_since) {
        format_time(st->primary_down_since, t1, sizeof(t1));
        r = announce(a, ALERT_FAILOVER, now, "failover: the primary is down, the backup serves",
                     "Cloudflare reported the primary of site \"%s\" DOWN at %s (%s). Visitors "
                     "are on the backup now; syncs are refused while the primary is down, and "
                     "any write on the backup will hold them until resolved.\n",
                     a->o.site_id, t1, st->primary_detail ? st->primary_detail : "");
        if (r >= 0) {
            a->st_failover = st->primary_down_since;
            changed = true;
            queued++;
        }
    }

    int s = changed ? save_state(a) : 0;
    return r < 0 ? r : s < 0 ? s : queued;
}

/* ---- delivering -------------------------------------------------------------------------- */

typedef struct upload {
    const char *data;
    size_t len, off;
} upload_t;

static size_t on_upload(char *dst, size_t size, size_t n, void *arg)
{
    upload_t *u = arg;
    size_t room = size * n, left = u->len - u->off;
    size_t k = left < room ? left : room;
    memcpy(dst, u->data + u->off, k);
    u->off += k;
    return k;
}

static size_t on_discard(char *data, size_t size, size_t n, void *arg)
{
    return size * n;
}

/* Reads the SMTP password (first line of the file). */
static int read_password(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    if (!fgets(out, (int)size, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

/* Builds the message: headers and the body with CRLF line ends. */
static int build_mail(alert_t *a, const item_t *it, buf_t *m)
{
    char date[64], host[256] = "localhost";
    struct tm tm;
    time_t now = time(NULL);
    uint8_t rnd[6];

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    gethostname(host, sizeof(host) - 1);
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0, sizeof(rnd));
    int r = buf_printf(m,
                       "Date: %s\r\nFrom: understudy <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
                       "Message-ID: <%s.%02x%02x%02x%02x%02x%02x@%s>\r\nMIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n"
                       "X-Understudy-Alert: %s\r\n\r\n",
                       date, a->o.from, it->to, it->subject, it->name, rnd[0], rnd[1], rnd[2],
                       rnd[3], rnd[4], rnd[5], host, alert_kind_name(it->kind));
    for (const char *p = it->body; *p && r == 0; p++)
        r = *p == '\n' ? buf_append(m, "\r\n", 2) : *p == '\r' ? 0 : buf_append(m, p, 1);
    if (r == 0 && (m->len < 2 || memcmp(buf_data(m) + m->len - 2, "\r\n", 2)))
        r = buf_append(m, "\r\n", 2);
    return r;
}

static int send_mail(alert_t *a, const item_t *it, char *err, size_t err_size)
{
    char ebuf[CURL_ERROR_SIZE] = "", from[600], rcpt[1100], password[512] = "";
    buf_t m = BUF_INIT;
    struct curl_slist *to = NULL;
    CURLcode cc;
    int r = build_mail(a, it, &m);

    if (r < 0) {
        snprintf(err, err_size, "cannot build the message: %s", err_str(r));
        return r;
    }
    if (a->o.smtp_password_file &&
        (r = read_password(a->o.smtp_password_file, password, sizeof(password))) < 0) {
        snprintf(err, err_size, "cannot read %s: %s", a->o.smtp_password_file, strerror(-r));
        buf_free(&m);
        return r;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        buf_free(&m);
        snprintf(err, err_size, "libcurl: out of memory");
        return UV_ENOMEM;
    }
    snprintf(from, sizeof(from), "<%s>", a->o.from);
    snprintf(rcpt, sizeof(rcpt), "<%s>", it->to);
    to = curl_slist_append(NULL, rcpt);
    upload_t up = {(const char *)buf_data(&m), m.len, 0};
    curl_easy_setopt(c, CURLOPT_URL, a->o.smtp_url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    if (a->o.smtp_starttls)
        curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (a->o.smtp_ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, a->o.smtp_ca_file);
    if (a->o.smtp_user) {
        curl_easy_setopt(c, CURLOPT_USERNAME, a->o.smtp_user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, password);
    }
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
    curl_easy_setopt(c, CURLOPT_READDATA, &up);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)m.len);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)ALERT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        snprintf(err, err_size, "%.200s: %.250s", it->to, ebuf[0] ? ebuf : curl_easy_strerror(cc));
    curl_slist_free_all(to);
    curl_easy_cleanup(c);
    explicit_bzero(password, sizeof(password));
    buf_free(&m);
    return cc == CURLE_OK ? 0 : ERR_UNREACHABLE;
}

/* Appends s as a JSON string. */
static int json_string(buf_t *b, const char *s)
{
    int r = buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && r == 0; p++) {
        if (*p == '"' || *p == '\\')
            r = buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            r = buf_append(b, "\\n", 2);
        else if (*p < 0x20 || *p == 0x7f)
            r = buf_printf(b, "\\u%04x", *p);
        else
            r = buf_append(b, p, 1); /* UTF-8 passes through */
    }
    return r < 0 ? r : buf_append(b, "\"", 1);
}

static int send_webhook(alert_t *a, const item_t *it, char *err, size_t err_size)
{
    char ebuf[CURL_ERROR_SIZE] = "";
    buf_t body = BUF_INIT, text = BUF_INIT;
    struct curl_slist *h = NULL;
    long status = 0;
    CURLcode cc;
    int r = buf_printf(&text, "%s\n%s", it->subject, it->body);

    if (r == 0)
        r = buf_append(&text, "", 1);
    if (r == 0)
        r = buf_append_str(&body, "{\"text\":");
    if (r == 0)
        r = json_string(&body, (const char *)buf_data(&text));
    if (r == 0)
        r = buf_printf(&body, ",\"kind\":\"%s\",\"site\":", alert_kind_name(it->kind));
    if (r == 0)
        r = json_string(&body, a->o.site_id);
    if (r == 0)
        r = buf_append_str(&body, "}");
    buf_free(&text);
    CURL *c = r == 0 ? curl_easy_init() : NULL;
    if (!c) {
        buf_free(&body);
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, it->to);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)buf_data(&body));
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body.len);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "understudy-controller");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_discard);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)ALERT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    buf_free(&body);
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "%.200s: %.250s", it->to, ebuf[0] ? ebuf : curl_easy_strerror(cc));
        return ERR_UNREACHABLE;
    }
    if (status < 200 || status > 299) {
        snprintf(err, err_size, "%.200s: HTTP status %ld", it->to, status);
        return ERR_UNREACHABLE;
    }
    return 0;
}

int alert_deliver(alert_t *a, time_t now, alert_stats_t *ret)
{
    char **names = NULL;
    unsigned tried = 0;
    int n;

    memset(ret, 0, sizeof(*ret));
    if (pthread_mutex_trylock(&a->deliver_mu) != 0)
        return UV_EBUSY;
    n = list_items(a, &names);
    for (int i = 0; i < n && tried < ALERT_BATCH; i++) {
        item_t it;
        char err[512] = "";
        int r = item_load(a, names[i], &it);
        if (r == UV_EINVAL) {
            /* Not ours or damaged: set aside under another name, never deleted. */
            char bad[300];
            snprintf(bad, sizeof(bad), "%s.damaged", names[i]);
            renameat(a->dirfd, names[i], a->dirfd, bad);
        }
        if (r < 0 || it.next > now) {
            free(it.text);
            continue;
        }
        tried++;
        r = it.webhook ? send_webhook(a, &it, err, sizeof(err))
                       : send_mail(a, &it, err, sizeof(err));
        if (r == 0) {
            unlinkat(a->dirfd, it.name, 0);
            ret->delivered++;
        } else {
            unsigned shift = it.attempts < 10 ? it.attempts : 10;
            uint64_t delay = (uint64_t)ALERT_BACKOFF_S << shift;
            it.attempts++;
            it.next = now + (time_t)(delay < ALERT_MAX_BACKOFF_S ? delay : ALERT_MAX_BACKOFF_S);
            one_line(err, it.error, sizeof(it.error));
            item_save(a, &it);
            ret->failed++;
            if (!ret->first_error[0])
                snprintf(ret->first_error, sizeof(ret->first_error), "%s", it.error);
        }
        free(it.text);
    }
    if (n >= 0)
        free_names(names, n);
    pthread_mutex_unlock(&a->deliver_mu);
    ret->pending = (unsigned)alert_pending(a);
    return 0;
}
