/* understudy-agent sync: scan the site, and one session with the controller: Hello, SyncBegin,
 * the files phase, the database phase, Commit, Result; with --no-database and a tree that is
 * the controller's live one, Hello, SyncBegin and the Result (SyncBegin.files_only in
 * understudy.proto). The libuv loop runs on the main thread; the session itself runs on a
 * worker thread (common/chan.h) as plain sequential code.
 *
 * The scan runs on a thread of its own from the start, while the connection is made (TCP, TLS,
 * Hello): the session waits for it after Hello, and the new manifest's fsync then runs while the
 * session does. A scan still running after SCAN_WAIT_MS (the first scan of a big site) would
 * keep the controller waiting on an idle connection: that session ends there, quietly, and a
 * new one starts when the scan is done. A scan that fails is reported before any connection
 * error, as when it ran first.
 *
 * Output: nothing but errors when stderr is not a terminal (cron mails whatever is printed);
 * a progress bar and a summary on a terminal or with --verbose, with the run's CPU time and peak
 * memory. One line on stderr on failure,
 * and the exit code of common/err.h.
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "agent.h"
#include "chan.h"
#include "dbsend.h"
#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "files.h"
#include "log.h"
#include "version.h"
#include "wpconfig.h"

#define SYNC_RECV_TIMEOUT_MS (10 * 60 * 1000)
#define SCAN_WAIT_MS         (30 * 1000)

typedef struct scanjob {
    const files_opts_t *opts;
    files_scan_t *scan;
    int r;
    char err[1024];
    bool done, started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
} scanjob_t;

static void *scan_main(void *arg)
{
    scanjob_t *j = arg;
    files_scan_t *scan = NULL;
    int r = files_scan(j->opts, &scan, j->err, sizeof(j->err));
    pthread_mutex_lock(&j->mu);
    j->scan = scan;
    j->r = r;
    j->done = true;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mu);
    if (r == 0 && !j->opts->dry_run)
        files_scan_sync_new(scan);
    return NULL;
}

/* Whether the scan is done, waiting up to ms for it. */
static bool scan_wait(scanjob_t *j, int ms)
{
    struct timespec until = deadline_after_ms((uint64_t)ms);
    pthread_mutex_lock(&j->mu);
    while (!j->done && pthread_cond_timedwait(&j->cond, &j->mu, &until) == 0)
        ;
    bool done = j->done;
    pthread_mutex_unlock(&j->mu);
    return done;
}

typedef struct syncrun {
    cfg_t *cfg;
    wpconfig_t wp;
    files_scan_t *scan;
    bool dry_run, database;
    int result; /* first error */
    char error[1024];
    wire_status_t status;
    uint64_t generation;
    files_stats_t fst;
    dbsend_stats_t dst;
    uint64_t wire_in, wire_out;
    char digest_cache[PATH_MAX + 16]; /* "" when off */
    bool full_digest;                 /* this run re-digests every table */
    msgio_t chan_io;                  /* the connection, under result_io() */
    scanjob_t *job;                   /* the scan, until the session takes it (sr->scan) */
    bool again;                       /* the scan outlasted SCAN_WAIT_MS: a new session */
} syncrun_t;

#define DIGEST_CACHE_MAX_AGE (24 * 3600)

/* The database digest cache trusts the server's UPDATE_TIME bookkeeping; to bound what a gap in
 * it could hide, every table is digested again once the last full pass is a day old. */
static void setup_digest_cache(syncrun_t *sr, const char *state_dir)
{
    char marker[PATH_MAX + 32];
    struct stat st;

    if (!cfg_get_bool(sr->cfg, "database", "digest_cache", true))
        return;
    snprintf(sr->digest_cache, sizeof(sr->digest_cache), "%s/db-digests", state_dir);
    snprintf(marker, sizeof(marker), "%s/db-digests.verified", state_dir);
    if (stat(marker, &st) != 0 || time(NULL) - st.st_mtime > DIGEST_CACHE_MAX_AGE) {
        unlink(sr->digest_cache);
        sr->full_digest = true;
    }
}

static void digest_cache_verified(const syncrun_t *sr, const char *state_dir)
{
    char marker[PATH_MAX + 32];
    if (!sr->full_digest || !sr->digest_cache[0] || sr->dry_run)
        return;
    snprintf(marker, sizeof(marker), "%s/db-digests.verified", state_dir);
    int fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

static void run_fail(syncrun_t *sr, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void run_fail(syncrun_t *sr, int r, const char *fmt, ...)
{
    va_list ap;
    if (sr->result < 0)
        return;
    sr->result = r;
    va_start(ap, fmt);
    vsnprintf(sr->error, sizeof(sr->error), fmt, ap);
    va_end(ap);
}

/* The controller's verdict when it is not a success: the line cron mails to the owner. */
static void result_fail(syncrun_t *sr, const wire_result_t *res)
{
    if (res->status == WIRE_STATUS_REFUSED)
        run_fail(sr, ERR_REFUSED,
                 "Can't update backup website: it has local changes that would be lost (%s)",
                 res->reason);
    else
        run_fail(sr, ERR_INTERNAL, "the controller could not apply the sync: %s", res->reason);
}

/* Every message the session receives passes here. The controller answers a sync it cannot go on
 * with at once, so its failure Result can come in place of whatever a phase waits for (a
 * FileNeed, a DbNeed): record its reason as the sync's error, and hand the phase an error code
 * (its own message then loses to the first error, the controller's). */
static int result_recv(void *ctx, wire_msg_t **ret, uint64_t timeout_ms)
{
    syncrun_t *sr = ctx;
    int r = msgio_recv(&sr->chan_io, ret, timeout_ms);
    if (r == 1 && (*ret)->type == WIRE_RESULT &&
        ((*ret)->u.result.status == WIRE_STATUS_REFUSED ||
         (*ret)->u.result.status == WIRE_STATUS_FAILED)) {
        result_fail(sr, &(*ret)->u.result);
        wire_msg_free(*ret);
        *ret = NULL;
        return sr->result;
    }
    return r;
}

static int result_send(void *ctx, const wire_msg_t *m)
{
    syncrun_t *sr = ctx;
    return msgio_send(&sr->chan_io, m);
}

/* Receives one message of type or alt; an Error from the controller ends the sync. */
static int expect_either(syncrun_t *sr, const msgio_t *io, wire_type_t type, wire_type_t alt,
                         wire_msg_t **ret)
{
    int r = msgio_recv(io, ret, SYNC_RECV_TIMEOUT_MS);
    if (r < 0) {
        run_fail(sr, r, "connection to the controller lost: %s", err_str(r));
        return r;
    }
    if ((*ret)->type == WIRE_ERROR) {
        int code = (*ret)->u.error.code == (uint32_t)err_exit_code(ERR_PROTO_VERSION)
                       ? ERR_PROTO_VERSION
                       : ERR_PROTOCOL;
        run_fail(sr, code, "the controller refused: %s", (*ret)->u.error.text);
        wire_msg_free(*ret);
        return code;
    }
    if ((*ret)->type != type && (*ret)->type != alt) {
        run_fail(sr, ERR_PROTOCOL, "the controller sent %s where %s was expected",
                 wire_type_name((*ret)->type), wire_type_name(type));
        wire_msg_free(*ret);
        return ERR_PROTOCOL;
    }
    return 0;
}

static int expect(syncrun_t *sr, const msgio_t *io, wire_type_t type, wire_msg_t **ret)
{
    return expect_either(sr, io, type, type, ret);
}

static int session_hello(syncrun_t *sr, const msgio_t *io)
{
    wire_msg_t m = {.type = WIRE_HELLO};
    wire_msg_t *reply;
    int r;

    m.u.hello.magic = WIRE_MAGIC;
    m.u.hello.protocol_version = proto_version();
    m.u.hello.program_version = UNDERSTUDY_VERSION;
    m.u.hello.site_id = cfg_get(sr->cfg, "site", "id");
    m.u.hello.role = WIRE_ROLE_AGENT;
    r = msgio_send(io, &m);
    if (r == 0)
        r = expect(sr, io, WIRE_HELLO, &reply);
    if (r < 0)
        return r;
    if (reply->u.hello.protocol_version != proto_version()) {
        run_fail(sr, ERR_PROTO_VERSION,
                 "protocol version mismatch: controller %s speaks protocol %u, this agent %s "
                 "speaks %u; install the same understudy release on both hosts",
                 reply->u.hello.program_version, reply->u.hello.protocol_version,
                 UNDERSTUDY_VERSION, proto_version());
        r = ERR_PROTO_VERSION;
    }
    wire_msg_free(reply);
    return r;
}

static int session_sync(syncrun_t *sr, const msgio_t *io)
{
    uint8_t sync_id[16];
    wire_msg_t *ready = NULL, *result = NULL;
    char err[1024] = "";
    int r;

    RAND_bytes(sync_id, sizeof(sync_id));
    wire_msg_t begin = {.type = WIRE_SYNC_BEGIN};
    begin.u.sync_begin.sync_id.data = sync_id;
    begin.u.sync_begin.sync_id.len = sizeof(sync_id);
    begin.u.sync_begin.dry_run = sr->dry_run;
    begin.u.sync_begin.base_generation = files_scan_base_generation(sr->scan);
    begin.u.sync_begin.tree_digest.data = files_scan_digest(sr->scan);
    begin.u.sync_begin.tree_digest.len = MF_HASH_LEN;
    begin.u.sync_begin.file_count = files_scan_count(sr->scan);
    begin.u.sync_begin.files_only = !sr->database;
    r = msgio_send(io, &begin);
    if (r == 0)
        r = expect_either(sr, io, WIRE_SYNC_READY, WIRE_RESULT, &ready);
    if (r < 0)
        return r;
    /* Files only, and this tree is the live one: the controller's Result (UNCHANGED) came in
     * place of SyncReady, and the sync ends here (SyncBegin.files_only). A failure Result was
     * taken by result_recv(). */
    if (ready->type == WIRE_RESULT) {
        const wire_result_t *res = &ready->u.result;
        r = 0;
        if (!begin.u.sync_begin.files_only || res->status != WIRE_STATUS_UNCHANGED ||
            res->generation != begin.u.sync_begin.base_generation) {
            run_fail(sr, ERR_PROTOCOL,
                     "the controller answered SyncBegin with a Result (status %d, generation "
                     "%" PRIu64 ") where SyncReady was expected",
                     (int)res->status, res->generation);
            r = ERR_PROTOCOL;
        } else {
            sr->status = res->status;
            sr->generation = res->generation;
        }
        wire_msg_free(ready);
        return r;
    }

    r = files_send(sr->scan, io, &ready->u.sync_ready, &sr->fst, err, sizeof(err));
    wire_msg_free(ready);
    if (r < 0) {
        run_fail(sr, r, "%s", err);
        return r;
    }
    if (sr->database) {
        dbsend_opts_t opts = {.routines = cfg_get_bool(sr->cfg, "database", "routines", false),
                              .dry_run = sr->dry_run,
                              .digest_cache = sr->digest_cache[0] ? sr->digest_cache : NULL};
        r = dbsend_run(&sr->wp, io, &opts, &sr->dst, err, sizeof(err));
        if (r < 0) {
            run_fail(sr, r, "%s", err);
            return r;
        }
    }

    wire_msg_t commit = {.type = WIRE_COMMIT};
    commit.u.commit.tree_digest.data = files_scan_digest(sr->scan);
    commit.u.commit.tree_digest.len = MF_HASH_LEN;
    commit.u.commit.file_count = files_scan_count(sr->scan);
    commit.u.commit.table_count = (uint32_t)sr->dst.tables;
    r = msgio_send(io, &commit);
    if (r == 0) {
        fault_point("agent.commit.sent");
        r = expect(sr, io, WIRE_RESULT, &result);
    }
    if (r < 0)
        return r;
    /* A failure Result was taken by result_recv(): this one is a success. */
    sr->status = result->u.result.status;
    sr->generation = result->u.result.generation;
    wire_msg_free(result);
    return r;
}

static void sync_worker(chan_t *ch, void *arg)
{
    syncrun_t *sr = arg;
    sr->chan_io = chan_io(ch);
    msgio_t io = {.send = result_send, .recv = result_recv, .ctx = sr};
    int r = session_hello(sr, &io);
    if (r == 0 && !sr->scan) {
        /* UNDERSTUDY_TEST_SCAN_WAIT=never (tests): as if every scan outlasted the wait. */
        const char *t = getenv("UNDERSTUDY_TEST_SCAN_WAIT");
        if ((t && !strcmp(t, "never")) || !scan_wait(sr->job, SCAN_WAIT_MS)) {
            sr->again = true;
            return;
        }
        if (sr->job->r < 0)
            return; /* cmd_sync reports it */
        sr->scan = sr->job->scan;
    }
    if (r == 0)
        r = session_sync(sr, &io);
    /* A send that failed (the controller died or the link broke) has not said why yet: without
     * this the transport's "peer closed" would be taken for a clean end and the sync for done. */
    if (r < 0 && sr->result == 0)
        run_fail(sr, r, "connection to the controller lost: %s", err_str(r));
    if (r < 0)
        chan_fail(ch, r, "%s", sr->error);
}

static void on_sync_done(chan_t *ch, int status, void *arg)
{
    syncrun_t *sr = arg;
    chan_bytes(ch, &sr->wire_in, &sr->wire_out);
    /* A transport failure (handshake, trust, timeouts) explains itself better than our view. */
    if (status < 0 && status != ERR_PEER_CLOSED && sr->result == 0)
        run_fail(sr, status, "%s", chan_last_error(ch));
    else if (status < 0 && sr->result < 0 && sr->result != status && status != ERR_PEER_CLOSED &&
             (sr->result == ERR_PEER_CLOSED || sr->result == UV_ECANCELED)) {
        sr->result = 0;
        run_fail(sr, status, "%s", chan_last_error(ch));
    }
}

static int run_session(syncrun_t *sr)
{
    const char *const *pins;
    size_t n_pins = cfg_get_all(sr->cfg, "controller", "fingerprint", &pins);
    conn_limits_t limits = CONN_LIMITS_DEFAULT;
    tls_ctx_t *tls = NULL;
    chan_t *ch = NULL;
    conn_t *conn;
    uv_loop_t loop;
    char *error = NULL, host[256];
    uint16_t port;
    int r;

    r = tls_ctx_new(false, cfg_get(sr->cfg, "identity", "key"),
                    cfg_get(sr->cfg, "identity", "cert"), pins, n_pins, &tls, &error);
    if (r < 0) {
        run_fail(sr, r, "%s", error ? error : err_str(r));
        free(error);
        return r;
    }
    cfg_parse_address(cfg_get(sr->cfg, "controller", "address"), host, sizeof(host), &port);
    limits.connect_timeout_ms = cfg_get_duration(sr->cfg, "agent", "connect_timeout", 10) * 1000;
    limits.handshake_timeout_ms =
        cfg_get_duration(sr->cfg, "agent", "handshake_timeout", 10) * 1000;
    limits.idle_timeout_ms = SYNC_RECV_TIMEOUT_MS;
    uv_loop_init(&loop);
    /* Small queues: the agent runs on a shared host with a memory target of 32 MiB. */
    r = chan_new(&loop, 4u << 20, 2u << 20, limits.max_frame, sync_worker, on_sync_done, sr, &ch);
    if (r == 0) {
        r = conn_connect(&loop, host, port, tls, &limits, chan_conn_callbacks(), ch, &conn);
        if (r < 0) {
            run_fail(sr, ERR_UNREACHABLE, "cannot connect to %s:%u: %s", host, port,
                     uv_strerror(r));
            chan_cancel(ch, r);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&loop) != 0)
        log_warn("event loop closed with handles still open");
    tls_ctx_free(tls);
    return sr->result;
}

static int default_state_dir(const char *config_path, char *out, size_t size)
{
    char abs[PATH_MAX];
    if (!realpath(config_path, abs))
        return -errno;
    int n = snprintf(out, size, "%s/state", dirname(abs));
    return n < 0 || (size_t)n >= size ? UV_ENAMETOOLONG : 0;
}

/* What this run cost the host, for an admin sizing it against a shared host's limits (CPU
 * seconds, memory) and for the benchmarks, which take it from here rather than from a wrapper
 * process in the timed run: getrusage, all threads, as time(1) reports it. */
static void print_resources(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return;
    fprintf(stderr, "resources: %ld.%03ld s user, %ld.%03ld s system CPU; peak memory %ld KiB\n",
            (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec / 1000, (long)ru.ru_stime.tv_sec,
            (long)ru.ru_stime.tv_usec / 1000, ru.ru_maxrss);
}

static void sync_usage(FILE *f)
{
    fprintf(f, "usage: understudy-agent sync --config FILE [--dry-run] [--no-database] "
               "[--verbose]\n\n"
               "Sends what changed in the site's files and database to the controller, which\n"
               "switches the backup to the new generation atomically. Quiet unless something\n"
               "fails (for cron); a progress bar on a terminal. --dry-run lists what would be\n"
               "sent and changes nothing. --verbose prints, as on a terminal, a summary: what\n"
               "was sent, the bytes on the wire, the run's CPU time and peak memory.\n");
}

int cmd_sync(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"dry-run", no_argument, NULL, 'n'},
        {"no-database", no_argument, NULL, 'D'},  {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool verbose = false;
    syncrun_t sr = {.database = true};
    char state_dir[PATH_MAX], wp_path[PATH_MAX + 32], err[1024];
    int opt, r;

    while ((opt = getopt_long(argc, argv, "c:nDvh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'n':
            sr.dry_run = true;
            break;
        case 'D':
            sr.database = false;
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            sync_usage(stdout);
            return 0;
        default:
            sync_usage(stderr);
            return err_exit_code(ERR_USAGE);
        }
    }
    if (!config_path || optind != argc) {
        log_error("sync needs --config FILE; see 'understudy-agent sync --help'");
        return err_exit_code(ERR_USAGE);
    }
    r = agent_load_config(config_path, &sr.cfg);
    if (r < 0)
        return err_exit_code(r);
    agent_lower_priority();

    const char *root = cfg_get(sr.cfg, "site", "root");
    const char *wp = cfg_get(sr.cfg, "site", "wp_config");
    if (!wp) {
        snprintf(wp_path, sizeof(wp_path), "%s/wp-config.php", root);
        wp = wp_path;
    }
    if (sr.database) {
        r = wpconfig_load(wp, &sr.wp, err, sizeof(err));
        if (r < 0) {
            if (r == ERR_WPCONFIG)
                log_error("%s", err);
            else
                log_error("cannot read %s: %s", wp, err_str(r));
            r = ERR_WPCONFIG;
            goto out;
        }
    }
    if (cfg_get(sr.cfg, "agent", "state"))
        snprintf(state_dir, sizeof(state_dir), "%s", cfg_get(sr.cfg, "agent", "state"));
    else if ((r = default_state_dir(config_path, state_dir, sizeof(state_dir))) < 0) {
        log_error("cannot place the state directory beside %s: %s", config_path, err_str(r));
        goto out;
    }

    static const char *const default_excludes[] = {"wp-content/cache/", "wp-content/upgrade/"};
    const char *const *excludes;
    size_t n_excludes = cfg_get_all(sr.cfg, "site", "exclude", &excludes);
    if (n_excludes == 0) {
        excludes = default_excludes;
        n_excludes = 2;
    }
    files_opts_t fopts = {
        .root = root,
        .state_dir = state_dir,
        .excludes = excludes,
        .n_excludes = n_excludes,
        .dry_run = sr.dry_run,
        .progress = isatty(STDERR_FILENO) || verbose,
        .bandwidth_limit = cfg_get_size(sr.cfg, "agent", "bandwidth_limit", 0),
    };
    scanjob_t job = {.opts = &fopts};
    pthread_mutex_init(&job.mu, NULL);
    pthread_cond_init(&job.cond, NULL);
    job.started = pthread_create(&job.thread, NULL, scan_main, &job) == 0;
    if (!job.started)
        scan_main(&job);
    sr.job = &job;
    if (sr.database)
        setup_digest_cache(&sr, state_dir);
    r = run_session(&sr);
    if (job.started)
        pthread_join(job.thread, NULL);
    pthread_cond_destroy(&job.cond);
    pthread_mutex_destroy(&job.mu);
    sr.scan = job.scan;
    sr.job = NULL;
    if (job.r < 0) {
        log_error("%s", job.err);
        r = job.r;
        goto out;
    }
    if (r == 0 && sr.again)
        r = run_session(&sr);
    if (r < 0) {
        log_error("%s", sr.error);
        goto out;
    }
    digest_cache_verified(&sr, state_dir);
    if (!sr.dry_run) {
        r = files_scan_commit(sr.scan, sr.generation);
        if (r < 0) {
            log_error("cannot save the sync state in %s: %s (the next sync will compare "
                      "everything again)",
                      state_dir, err_str(r));
            r = 0;
        }
    }
    if (verbose || isatty(STDERR_FILENO))
        fprintf(stderr,
                "%s: generation %llu; %llu files sent (%llu bytes), %llu tables sent "
                "(%llu rows); on the wire: %llu bytes sent, %llu received\n",
                sr.status == WIRE_STATUS_UNCHANGED ? "unchanged" : "applied",
                (unsigned long long)sr.generation, (unsigned long long)sr.fst.needs,
                (unsigned long long)(sr.fst.bytes_content + sr.fst.bytes_delta),
                (unsigned long long)sr.dst.tables_sent, (unsigned long long)sr.dst.rows_sent,
                (unsigned long long)sr.wire_out, (unsigned long long)sr.wire_in);
    if (verbose || isatty(STDERR_FILENO))
        print_resources();
out:
    files_scan_free(sr.scan);
    wpconfig_clear(&sr.wp);
    cfg_free(sr.cfg);
    return err_exit_code(r);
}
