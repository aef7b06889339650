/* The write guard on the serve loop. See watch.h. */
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accesslog.h"
#include "alert.h"
#include "dbdrift.h"
#include "drift.h"
#include "err.h"
#include "firewall.h"
#include "log.h"
#include "webhook.h"

struct watch {
    uv_loop_t *loop;
    const cfg_t *cfg;
    guard_t *guard;
    accesslog_t *alog; /* NULL without [guard] access_log */
    alert_t *alert;
    webhook_t *hook; /* NULL without [guard] webhook_listen */
    uv_timer_t tick;
    uv_async_t wake;
    int open_handles;
    unsigned running_work;
    bool stopping;

    /* The live generation as last seen (loop thread). */
    bool have_live;
    time_t since;      /* requests count from here */
    time_t cleared_at; /* the guard's last clear */

    /* Access-log errors are logged when they change, not every second. */
    char last_log_error[512];

    /* File drift (the work runs on a worker thread; the rest is loop thread). */
    uv_work_t drift_req;
    bool drift_running;
    uint64_t drift_interval_ms, last_drift_ms;
    time_t drift_since; /* the clear time the running check uses */
    drift_report_t drift_rep;
    int drift_result;
    char drift_err[512];
    char drift_root[PATH_MAX];

    /* Database drift (dbdrift.h; the work runs on a worker thread, the rest is loop thread). */
    uv_work_t dbd_req;
    bool dbd_running;
    uint64_t dbd_interval_ms, last_dbd_ms;
    time_t dbd_cleared, dbd_switched;
    dbdrift_report_t dbd_rep;
    int dbd_result;
    char dbd_err[512], dbd_last_err[512];

    /* Alert delivery. */
    uv_work_t deliver_req;
    bool deliver_running;
    time_t next_due_check;
    alert_stats_t deliver_stats;

    /* Shared with worker threads. */
    pthread_mutex_t mu;
    pthread_cond_t polled;
    unsigned long poll_seq; /* incremented after each poll */
    bool poll_wanted;
    time_t last_success, failing_since;
    char last_failure[512];
};

/* ---- history ----------------------------------------------------------------------------- */

static void history_path(const watch_t *w, char *out, size_t size)
{
    snprintf(out, size, "%s/alerts/history", cfg_get(w->cfg, "site", "data"));
}

static void history_load(watch_t *w)
{
    char path[PATH_MAX], line[600];
    long long v;
    history_path(w, path, sizeof(path));
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "success %lld", &v) == 1)
            w->last_success = (time_t)v;
        else if (sscanf(line, "failing %lld", &v) == 1)
            w->failing_since = (time_t)v;
        else if (!strncmp(line, "failure ", 8))
            snprintf(w->last_failure, sizeof(w->last_failure), "%.500s", line + 8);
    }
    fclose(f);
}

/* Caller holds w->mu. Written through a temp file and rename (no fsync: losing the last update
 * to a crash only delays a stale or failing alert). */
static void history_save(watch_t *w)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    history_path(w, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return;
    fprintf(f, "success %lld\nfailing %lld\nfailure %s\n", (long long)w->last_success,
            (long long)w->failing_since, w->last_failure);
    if (fclose(f) == 0)
        rename(tmp, path);
    else
        unlink(tmp);
}

void watch_sync_done(watch_t *w, bool ok, time_t when, const char *failure)
{
    pthread_mutex_lock(&w->mu);
    if (ok) {
        w->last_success = when;
        w->failing_since = 0;
        w->last_failure[0] = '\0';
    } else {
        if (!w->failing_since)
            w->failing_since = when;
        size_t o = 0;
        for (const char *p = failure ? failure : ""; *p && o + 1 < sizeof(w->last_failure); p++)
            w->last_failure[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        w->last_failure[o] = '\0';
    }
    history_save(w);
    pthread_mutex_unlock(&w->mu);
}

/* ---- the live generation ----------------------------------------------------------------- */

static uint64_t now_ms(const watch_t *w)
{
    return uv_now(w->loop);
}

/* Follows the docroot symlink's mtime (a new one means a switch) and the guard's last clear:
 * requests count from the later of the two. */
static void live_check(watch_t *w)
{
    struct stat st;
    guard_info_t info;
    const char *docroot = cfg_get(w->cfg, "site", "docroot");
    bool have = lstat(docroot, &st) == 0 && S_ISLNK(st.st_mode);

    guard_is_tripped(w->guard, &info);
    w->have_live = have;
    w->cleared_at = info.cleared_at;
    time_t since = !have                                 ? (time_t)INT64_MAX
                   : st.st_mtim.tv_sec > info.cleared_at ? st.st_mtim.tv_sec
                                                         : info.cleared_at;
    if (since != w->since) {
        w->since = since;
        if (w->alog)
            accesslog_set_since(w->alog, since);
    }
}

/* ---- access logs ------------------------------------------------------------------------- */

static void poll_logs(watch_t *w)
{
    al_hit_t hits[WATCH_MAX_HITS];
    const char *lines[WATCH_MAX_HITS];
    size_t n = 0;

    if (!w->alog)
        return;
    live_check(w);
    int r = accesslog_poll(w->alog, hits, WATCH_MAX_HITS, &n);
    if (r < 0 && strcmp(w->last_log_error, accesslog_last_error(w->alog))) {
        snprintf(w->last_log_error, sizeof(w->last_log_error), "%s", accesslog_last_error(w->alog));
        log_error("write guard: cannot read an access log: %s; writes logged there go unseen "
                  "until it is readable ([guard] access_log)",
                  w->last_log_error);
    } else if (r == 0) {
        w->last_log_error[0] = '\0';
    }
    if (n == 0 || !w->have_live)
        return;
    size_t k = n < WATCH_MAX_HITS ? n : WATCH_MAX_HITS;
    for (size_t i = 0; i < k; i++)
        lines[i] = hits[i].line;
    r = guard_trip(w->guard, GUARD_SIGNAL_ACCESS_LOG, hits[0].time, lines, k);
    if (r == 1)
        log_warn("write guard tripped: the backup served a write (%s%s); syncs are refused "
                 "until 'understudy-controller resolve'",
                 hits[0].line, n > 1 ? ", and more" : "");
    else if (r < 0)
        log_error("write guard: cannot record the trip in %s/guard: %s (refusing syncs anyway)",
                  cfg_get(w->cfg, "site", "data"), err_str(r));
}

/* ---- file drift -------------------------------------------------------------------------- */

static void drift_work(uv_work_t *req)
{
    watch_t *w = req->data;
    const cfg_t *cfg = w->cfg;
    const char *const *ignore;
    char manifest[PATH_MAX + 16];
    drift_opts_t o = {.hash = cfg_get_bool(cfg, "guard", "hash_files", false),
                      .since = w->drift_since};

    o.n_ignore = cfg_get_all(cfg, "guard", "ignore_path", &ignore);
    o.ignore = ignore;
    w->drift_root[0] = '\0';
    if (!realpath(cfg_get(cfg, "site", "docroot"), w->drift_root)) {
        w->drift_result = 1; /* no live generation */
        return;
    }
    char *slash = strrchr(w->drift_root, '/');
    snprintf(manifest, sizeof(manifest), "%.*s/manifest", (int)(slash ? slash - w->drift_root : 0),
             w->drift_root);
    w->drift_result =
        drift_scan(w->drift_root, manifest, &o, &w->drift_rep, w->drift_err, sizeof(w->drift_err));
}

static void watch_maybe_free(watch_t *w);

static void drift_done(uv_work_t *req, int status)
{
    watch_t *w = req->data;
    const drift_report_t *rep = &w->drift_rep;
    guard_info_t info;

    w->drift_running = false;
    w->running_work--;
    if (w->stopping || status < 0) {
        watch_maybe_free(w);
        return;
    }
    if (w->drift_result < 0) {
        log_error("write guard: file drift check failed: %s", w->drift_err);
        return;
    }
    if (w->drift_result == 1 || !drift_found(rep))
        return;
    guard_is_tripped(w->guard, &info);
    if (info.cleared_at != w->drift_since)
        return; /* resolved while it ran: the next check counts from the clear */
    if (info.tripped && (info.signals & (1u << GUARD_SIGNAL_FILES)))
        return; /* already on record; do not repeat the same evidence every interval */
    const char *lines[DRIFT_MAX_EXAMPLES + 1];
    char summary[160];
    size_t n = 0;
    snprintf(summary, sizeof(summary), "%llu created, %llu changed, %llu deleted",
             (unsigned long long)rep->created, (unsigned long long)rep->changed,
             (unsigned long long)rep->deleted);
    lines[n++] = summary;
    for (size_t i = 0; i < rep->n_examples; i++)
        lines[n++] = rep->examples[i];
    int r = guard_trip(w->guard, GUARD_SIGNAL_FILES, time(NULL), lines, n);
    if (r == 1)
        log_warn("write guard tripped: files changed in the live site (%s: %s); syncs are "
                 "refused until 'understudy-controller resolve'",
                 summary, rep->n_examples ? rep->examples[0] : "");
}

static void drift_maybe_start(watch_t *w)
{
    if (w->drift_running || !w->have_live || now_ms(w) - w->last_drift_ms < w->drift_interval_ms)
        return;
    w->last_drift_ms = now_ms(w);
    w->drift_since = w->cleared_at;
    w->drift_req.data = w;
    if (uv_queue_work(w->loop, &w->drift_req, drift_work, drift_done) == 0) {
        w->drift_running = true;
        w->running_work++;
    }
}

/* ---- database drift ---------------------------------------------------------------------- */

static void dbd_work(uv_work_t *req)
{
    watch_t *w = req->data;
    w->dbd_result =
        dbdrift_check(w->cfg, w->dbd_cleared, &w->dbd_rep, w->dbd_err, sizeof(w->dbd_err));
}

static void dbd_done(uv_work_t *req, int status)
{
    watch_t *w = req->data;
    const dbdrift_report_t *rep = &w->dbd_rep;
    guard_info_t info;

    w->dbd_running = false;
    w->running_work--;
    if (w->stopping || status < 0) {
        watch_maybe_free(w);
        return;
    }
    if (w->dbd_result < 0) {
        if (strcmp(w->dbd_err, w->dbd_last_err))
            log_error("write guard: database drift check failed: %s", w->dbd_err);
        snprintf(w->dbd_last_err, sizeof(w->dbd_last_err), "%s", w->dbd_err);
        return;
    }
    w->dbd_last_err[0] = '\0';
    if (w->dbd_result == 1) {
        w->dbd_switched = 0; /* caught mid-switch: look again on the next tick */
        return;
    }
    if (rep->baseline_written) {
        log_info("write guard: database baseline of generation %llu taken (%llu tables)",
                 (unsigned long long)rep->live, (unsigned long long)rep->tables);
        return;
    }
    if (!rep->differing)
        return;
    guard_is_tripped(w->guard, &info);
    if (info.cleared_at != w->dbd_cleared)
        return; /* resolved while it ran: the next check takes a new baseline */
    if (info.tripped && (info.signals & (1u << GUARD_SIGNAL_DATABASE)))
        return; /* already on record */
    const char *lines[DBDRIFT_MAX_EXAMPLES + 1];
    char summary[160];
    size_t n = 0;
    snprintf(summary, sizeof(summary), "%llu of %llu tables differ from what was applied",
             (unsigned long long)rep->differing, (unsigned long long)rep->tables);
    lines[n++] = summary;
    for (size_t i = 0; i < rep->n_examples; i++)
        lines[n++] = rep->examples[i];
    int r = guard_trip(w->guard, GUARD_SIGNAL_DATABASE, time(NULL), lines, n);
    if (r == 1)
        log_warn("write guard tripped: the live database changed (%s: %s); syncs are refused "
                 "until 'understudy-controller resolve'",
                 summary, rep->n_examples ? rep->examples[0] : "");
}

static void dbd_maybe_start(watch_t *w)
{
    if (w->dbd_running || !w->have_live || !cfg_get(w->cfg, "database", "name"))
        return;
    /* A new generation or a clear wants its baseline at once, not an interval later. */
    struct stat st;
    const char *docroot = cfg_get(w->cfg, "site", "docroot");
    time_t switched = lstat(docroot, &st) == 0 ? st.st_mtim.tv_sec : 0;
    bool fresh = switched != w->dbd_switched || w->cleared_at != w->dbd_cleared;
    if (!fresh && now_ms(w) - w->last_dbd_ms < w->dbd_interval_ms)
        return;
    w->last_dbd_ms = now_ms(w);
    w->dbd_switched = switched;
    w->dbd_cleared = w->cleared_at;
    w->dbd_req.data = w;
    if (uv_queue_work(w->loop, &w->dbd_req, dbd_work, dbd_done) == 0) {
        w->dbd_running = true;
        w->running_work++;
    }
}

/* ---- alerts ------------------------------------------------------------------------------ */

static void deliver_work(uv_work_t *req)
{
    watch_t *w = req->data;
    alert_deliver(w->alert, time(NULL), &w->deliver_stats);
}

static void deliver_done(uv_work_t *req, int status)
{
    watch_t *w = req->data;
    w->deliver_running = false;
    w->next_due_check = 0; /* a full batch may have left more due items */
    w->running_work--;
    if (w->stopping || status < 0) {
        watch_maybe_free(w);
        return;
    }
    const alert_stats_t *s = &w->deliver_stats;
    if (s->delivered)
        log_info("alerts: %u delivered", s->delivered);
    if (s->failed)
        log_warn("alerts: %u deliveries failed, will retry (%u pending): %s", s->failed, s->pending,
                 s->first_error);
}

static void alerts_tick(watch_t *w)
{
    guard_info_t info;
    char reason[1024] = "";
    alert_status_t st;
    time_t now = time(NULL);

    guard_is_tripped(w->guard, &info);
    if (info.tripped)
        guard_reason_line(w->guard, reason, sizeof(reason));
    pthread_mutex_lock(&w->mu);
    st = (alert_status_t){
        .tripped = info.tripped,
        .tripped_since = info.since,
        .reason = reason,
        .last_success = w->last_success,
        .failing_since = w->failing_since,
        .last_failure = w->last_failure,
        .primary_down = info.primary == GUARD_PRIMARY_DOWN,
        .primary_down_since = info.primary_since,
        .primary_detail = info.primary_detail,
    };
    int r = alert_check(w->alert, &st, now);
    pthread_mutex_unlock(&w->mu);
    if (r < 0)
        log_error("alerts: cannot queue an alert in %s/alerts: %s", cfg_get(w->cfg, "site", "data"),
                  err_str(r));
    /* The outbox is looked at every 10 s, and at once when something was queued. */
    if (w->deliver_running || (r <= 0 && now < w->next_due_check))
        return;
    w->next_due_check = now + 10;
    time_t due = alert_next_due(w->alert);
    if (due && due <= now) {
        w->deliver_req.data = w;
        if (uv_queue_work(w->loop, &w->deliver_req, deliver_work, deliver_done) == 0) {
            w->deliver_running = true;
            w->running_work++;
        }
    }
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    watch_t *w = t->data;
    poll_logs(w);
    live_check(w);
    drift_maybe_start(w);
    dbd_maybe_start(w);
    alerts_tick(w);
}

static void on_wake(uv_async_t *a)
{
    watch_t *w = a->data;
    pthread_mutex_lock(&w->mu);
    bool wanted = w->poll_wanted;
    w->poll_wanted = false;
    pthread_mutex_unlock(&w->mu);
    if (wanted && w->alog) {
        /* A sync waits on this poll: read everything there is, not one budget's worth. */
        accesslog_set_budget(w->alog, SIZE_MAX);
        poll_logs(w);
        accesslog_set_budget(w->alog, 0);
    }
    pthread_mutex_lock(&w->mu);
    w->poll_seq++;
    pthread_cond_broadcast(&w->polled);
    pthread_mutex_unlock(&w->mu);
}

bool watch_refusal(watch_t *w, char *reason, size_t size)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WATCH_BARRIER_MS / 1000;
    pthread_mutex_lock(&w->mu);
    unsigned long seq = w->poll_seq;
    w->poll_wanted = true;
    if (!w->stopping && uv_async_send(&w->wake) == 0)
        while (w->poll_seq == seq &&
               pthread_cond_timedwait(&w->polled, &w->mu, &deadline) != ETIMEDOUT)
            ;
    pthread_mutex_unlock(&w->mu);
    return guard_reason_line(w->guard, reason, size);
}

guard_t *watch_guard(watch_t *w)
{
    return w->guard;
}

static void on_webhook_event(void *ctx, guard_primary_t state, const char *detail)
{
    alerts_tick(ctx); /* a DOWN is announced at once */
}

/* Reads Cloudflare's ranges for the access-log follower: [firewall] cloudflare_ranges, else the
 * built-in list. */
static int load_ranges(const cfg_t *cfg, fw_spec_t *spec, char *err, size_t err_size)
{
    const char *path = cfg_get(cfg, "firewall", "cloudflare_ranges");
    if (!path)
        return fw_spec_add_builtin_ranges(spec);
    char *text = malloc(FW_MAX_RANGES_FILE + 1);
    FILE *f = text ? fopen(path, "re") : NULL;
    if (!f) {
        int e = text ? -errno : UV_ENOMEM;
        snprintf(err, err_size, "cannot read [firewall] cloudflare_ranges %s: %s", path,
                 err_str(e));
        free(text);
        return e;
    }
    size_t len = fread(text, 1, FW_MAX_RANGES_FILE + 1, f);
    fclose(f);
    int r = fw_spec_add_ranges(spec, path, text, len);
    free(text);
    if (r < 0)
        snprintf(err, err_size, "%s", fw_last_error(spec));
    return r < 0 ? r : 0;
}

int watch_start(uv_loop_t *loop, const cfg_t *cfg, watch_t **ret, char *err, size_t err_size)
{
    watch_t *w = calloc(1, sizeof(*w));
    alert_opts_t ao;
    webhook_opts_t wo;
    int r;

    if (!w) {
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    w->loop = loop;
    w->cfg = cfg;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->polled, NULL);
    w->drift_interval_ms = cfg_get_duration(cfg, "guard", "file_check_interval", 300) * 1000;
    w->dbd_interval_ms = cfg_get_duration(cfg, "guard", "db_interval", 30) * 1000;
    r = guard_open(cfg_get(cfg, "site", "data"), &w->guard, err, err_size);

    const char *const *paths, *const *ignore;
    size_t n_paths = cfg_get_all(cfg, "guard", "access_log", &paths);
    if (r == 0 && n_paths) {
        fw_spec_t spec;
        fw_spec_init(&spec);
        r = load_ranges(cfg, &spec, err, err_size);
        al_opts_t ao_log = {.paths = paths,
                            .n_paths = n_paths,
                            .format = cfg_get(cfg, "guard", "access_log_format"),
                            .trusted = &spec.cloudflare};
        ao_log.n_ignore = cfg_get_all(cfg, "guard", "ignore", &ignore);
        ao_log.ignore = ignore;
        if (r == 0)
            r = accesslog_new(&ao_log, &w->alog, err, err_size);
        fw_spec_free(&spec);
    }
    alert_opts_from_cfg(cfg, &ao);
    if (r == 0)
        r = alert_open(&ao, &w->alert, err, err_size);
    if (r == 0 && webhook_opts_from_cfg(cfg, &wo))
        r = webhook_start(loop, &wo, w->guard, on_webhook_event, w, &w->hook, err, err_size);
    if (r < 0) {
        accesslog_free(w->alog);
        alert_free(w->alert);
        guard_free(w->guard);
        pthread_cond_destroy(&w->polled);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return r;
    }
    history_load(w);
    w->last_drift_ms = now_ms(w) - w->drift_interval_ms; /* first check on the first tick */
    uv_timer_init(loop, &w->tick);
    uv_async_init(loop, &w->wake, on_wake);
    w->tick.data = w->wake.data = w;
    w->open_handles = 2;
    live_check(w);
    uv_timer_start(&w->tick, on_tick, 0, WATCH_TICK_MS);
    if (w->hook)
        log_info("write guard: failover webhook listening on port %d", webhook_port(w->hook));
    *ret = w;
    return 0;
}

static void watch_maybe_free(watch_t *w)
{
    if (!w->stopping || w->open_handles || w->running_work)
        return;
    accesslog_free(w->alog);
    alert_free(w->alert);
    guard_free(w->guard);
    pthread_cond_destroy(&w->polled);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    watch_t *w = h->data;
    w->open_handles--;
    watch_maybe_free(w);
}

void watch_stop(watch_t *w)
{
    if (!w || w->stopping)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    w->poll_seq++; /* release any waiting worker */
    pthread_cond_broadcast(&w->polled);
    pthread_mutex_unlock(&w->mu);
    webhook_stop(w->hook);
    uv_close((uv_handle_t *)&w->tick, on_handle_closed);
    uv_close((uv_handle_t *)&w->wake, on_handle_closed);
}
