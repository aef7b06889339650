/* One sync, from SyncBegin to Result. See sync.h and proto/understudy.proto. */
#include "sync.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "dbrecv.h"
#include "err.h"
#include "files.h"
#include "generation.h"
#include "log.h"
#include "status.h"
#include "watch.h"

#define SYNC_RECV_TIMEOUT_MS (10 * 60 * 1000)

struct syncer {
    gen_store_t *gen;
    dbrecv_t *db;
    pthread_mutex_t mu; /* one sync at a time */
    watch_t *watch;     /* the write guard, or NULL */
    char *data;         /* [site] data, for the last-sync record (status.h) */
};

void syncer_set_watch(syncer_t *s, watch_t *w)
{
    s->watch = w;
}

int syncer_open(const cfg_t *cfg, syncer_t **ret, char *err, size_t err_size)
{
    syncer_t *s = calloc(1, sizeof(*s));
    gen_hooks_t hooks = {0};
    gen_opts_t opts = {
        .data = cfg_get(cfg, "site", "data"),
        .docroot = cfg_get(cfg, "site", "docroot"),
        .owner = cfg_get(cfg, "site", "owner"),
        .keep = (unsigned)cfg_get_uint(cfg, "retention", "generations", 10),
        .max_files = cfg_get_uint(cfg, "limits", "max_files", 1000000),
        .max_file_size = cfg_get_size(cfg, "limits", "max_file_size", 4ull << 30),
        .max_total_size = cfg_get_size(cfg, "limits", "max_total_size", 64ull << 30),
    };
    int r;

    if (!s)
        return UV_ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    s->data = strdup(opts.data ? opts.data : ".");
    r = dbrecv_open(cfg, &s->db, err, err_size);
    if (r < 0)
        goto fail;
    if (s->db)
        hooks = dbrecv_hooks(s->db);
    r = gen_store_open(&opts, &hooks, &s->gen, err, err_size);
    if (r < 0)
        goto fail;
    stage_prepare_next(s->gen); /* the first sync after a start finds its tree ready */
    *ret = s;
    return 0;
fail:
    syncer_close(s);
    return r;
}

void syncer_close(syncer_t *s)
{
    if (!s)
        return;
    gen_store_close(s->gen);
    dbrecv_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->data);
    free(s);
}

static int send_result(const msgio_t *io, wire_status_t status, uint64_t generation, int code,
                       const char *reason)
{
    wire_msg_t m = {.type = WIRE_RESULT};
    m.u.result.status = status;
    m.u.result.generation = generation;
    m.u.result.reason_code = code < 0 ? (uint32_t)err_exit_code(code) : 0;
    m.u.result.reason = reason ? reason : "";
    return msgio_send(io, &m);
}

/* Receives the next message, which must be one of two types. */
static int expect(const msgio_t *io, wire_type_t a, wire_type_t b, wire_msg_t **ret, char *err,
                  size_t err_size)
{
    int r = msgio_recv(io, ret, SYNC_RECV_TIMEOUT_MS);
    if (r < 0) {
        snprintf(err, err_size, "connection lost: %s", err_str(r));
        return r;
    }
    if ((*ret)->type != a && (*ret)->type != b) {
        snprintf(err, err_size, "expected %s, got %s", wire_type_name(a),
                 wire_type_name((*ret)->type));
        wire_msg_free(*ret);
        *ret = NULL;
        return ERR_PROTOCOL;
    }
    return 0;
}

static void resync_path(const syncer_t *s, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", s->data, SYNC_RESYNC_FILE);
}

static bool resync_pending(const syncer_t *s)
{
    char path[PATH_MAX];
    resync_path(s, path, sizeof(path));
    return access(path, F_OK) == 0;
}

static void resync_done(const syncer_t *s)
{
    char path[PATH_MAX];
    resync_path(s, path, sizeof(path));
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("cannot remove %s: %s (the next sync will replace everything again)", path,
                 strerror(errno));
}

/* The body of a sync; the caller sends the Result. */
static int sync_body(syncer_t *s, const msgio_t *io, const wire_sync_begin_t *begin,
                     const char *peer, uint64_t *ret_gen, bool *ret_unchanged, bool *ret_committed,
                     char *err, size_t err_size)
{
    files_rx_stats_t fst = {0};
    dbrecv_stats_t dst = {0};
    stage_t *st = NULL;
    wire_msg_t *m = NULL;
    int r = gen_store_refresh(s->gen, err, err_size); /* `rollback` may have run meanwhile */
    if (r < 0)
        return r;
    uint64_t live = gen_store_live(s->gen);
    const uint8_t *live_digest = gen_store_live_digest(s->gen);
    /* After `resolve --discard-local` (sync.h): replace whatever the backup changed. */
    bool resync = resync_pending(s);
    bool full = live == 0 || begin->base_generation != live || resync;

    /* Files only, and the agent's tree is the live one (SyncBegin.files_only): nothing to stage
     * or list. The Result replaces SyncReady, after the same write-guard check as a Commit's. */
    if (begin->files_only && !full && !begin->dry_run && live_digest &&
        begin->tree_digest.len == MF_HASH_LEN &&
        !memcmp(begin->tree_digest.data, live_digest, MF_HASH_LEN)) {
        *ret_committed = true; /* the agent sends nothing more for this sync */
        if (s->watch && watch_refusal(s->watch, err, err_size))
            return ERR_REFUSED;
        *ret_unchanged = true;
        *ret_gen = live;
        log_info("%s: sync: the agent's tree is live generation %llu, unchanged", peer,
                 (unsigned long long)live);
        return 0;
    }

    wire_msg_t ready = {.type = WIRE_SYNC_READY};
    ready.u.sync_ready.live_generation = live;
    ready.u.sync_ready.full_listing = full;
    ready.u.sync_ready.live_tree_digest.data = live_digest;
    ready.u.sync_ready.live_tree_digest.len = live_digest ? MF_HASH_LEN : 0;
    r = msgio_send(io, &ready);
    if (r < 0)
        return r;
    log_info("%s: sync begins (live generation %llu, %s listing%s)", peer, (unsigned long long)live,
             full ? "full" : "incremental", begin->dry_run ? ", dry run" : "");

    r = stage_begin(s->gen, &st, err, err_size);
    if (r < 0)
        return r;
    stage_set_verify_live(st, resync);
    if (s->db)
        dbrecv_set_resync(s->db, resync);
    r = stage_receive_files(st, io, full, begin->dry_run, &fst, err, err_size);
    if (r < 0)
        goto out;

    r = expect(io, WIRE_DB_BEGIN, WIRE_COMMIT, &m, err, err_size);
    if (r < 0)
        goto out;
    if (m->type == WIRE_DB_BEGIN) {
        if (!s->db) {
            snprintf(err, err_size,
                     "the agent sends a database but this controller has no "
                     "[database] section");
            r = ERR_CONFIG;
            goto out;
        }
        r = dbrecv_run(s->db, io, &m->u.db_begin, stage_generation(st), begin->dry_run, &dst, err,
                       err_size);
        wire_msg_free(m);
        m = NULL;
        if (r < 0)
            goto out;
        r = expect(io, WIRE_COMMIT, WIRE_COMMIT, &m, err, err_size);
        if (r < 0)
            goto out;
    }
    *ret_committed = true;
    if (m->u.commit.tree_digest.len != MF_HASH_LEN) {
        snprintf(err, err_size, "Commit carries no tree digest");
        r = ERR_PROTOCOL;
        goto out;
    }
    /* The write guard: never switch over a backup that took writes of its own (nor while the
     * primary is reported down). The staged generation and database are discarded at out:. */
    if (s->watch && watch_refusal(s->watch, err, err_size)) {
        r = ERR_REFUSED;
        goto out;
    }
    if (begin->dry_run || (!resync && live_digest &&
                           !memcmp(m->u.commit.tree_digest.data, live_digest, MF_HASH_LEN) &&
                           dst.tables_received == 0)) {
        *ret_unchanged = true;
        *ret_gen = live;
        r = 0;
        goto out;
    }
    r = stage_commit(st, m->u.commit.tree_digest.data, ret_gen, err, err_size);
    st = NULL; /* stage_commit consumes the stage */
    if (r == 1) {
        *ret_unchanged = true;
        r = 0;
    }
    if (r == 0 && resync)
        resync_done(s);
    if (r == 0)
        log_info("%s: generation %llu is live (%llu entries, %llu files received, %llu tables)",
                 peer, (unsigned long long)*ret_gen, (unsigned long long)fst.entries,
                 (unsigned long long)fst.needs, (unsigned long long)dst.tables_received);
out:
    wire_msg_free(m);
    stage_abort(st);
    if (r < 0 && s->db)
        dbrecv_abort(s->db);
    /* After a failed sync, or when the prepared tree went stale (a rollback by another process):
     * prepare it again. A no-op when it is ready or being prepared. */
    stage_prepare_next(s->gen);
    return r;
}

int syncer_run(syncer_t *s, const msgio_t *io, const wire_sync_begin_t *begin, const char *peer)
{
    char err[1024] = "";
    uint64_t gen = 0;
    bool unchanged = false, committed = false;
    int r;

    if (pthread_mutex_trylock(&s->mu) != 0) {
        r = send_result(io, WIRE_STATUS_FAILED, 0, ERR_OVERLOADED,
                        "another sync is in progress on this controller; try again later");
        return r < 0 ? r : 1;
    }
    r = sync_body(s, io, begin, peer, &gen, &unchanged, &committed, err, sizeof(err));
    pthread_mutex_unlock(&s->mu);
    if (r == ERR_REFUSED)
        log_warn("%s: sync refused: %s", peer, err);
    else if (r < 0)
        log_error("%s: sync failed: %s", peer, err[0] ? err : err_str(r));
    if (s->watch && r != ERR_REFUSED) /* refusals are the guard's own alerts */
        watch_sync_done(s->watch, r >= 0, time(NULL), err[0] ? err : err_str(r));
    /* The outcome for 'understudy-controller status'. */
    if (s->data && !begin->dry_run)
        status_record_sync(s->data,
                           r == ERR_REFUSED ? "refused"
                           : r < 0          ? "failed"
                           : unchanged      ? "unchanged"
                                            : "applied",
                           time(NULL), r < 0 ? gen_store_live(s->gen) : gen, peer,
                           r < 0 ? (err[0] ? err : err_str(r)) : "");
    if (r < 0) {
        int sr = send_result(io, r == ERR_REFUSED ? WIRE_STATUS_REFUSED : WIRE_STATUS_FAILED,
                             gen_store_live(s->gen), r, err[0] ? err : err_str(r));
        return sr < 0 ? sr : committed ? 0 : 1;
    }
    return send_result(io, unchanged ? WIRE_STATUS_UNCHANGED : WIRE_STATUS_APPLIED, gen, 0,
                       begin->dry_run ? "dry run: nothing changed" : "");
}
