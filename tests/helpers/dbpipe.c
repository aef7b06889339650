/* dbpipe: the database phase end to end without sockets, against real MariaDB servers.
 *
 * Runs dbsend_run (the agent's side, on a thread) and dbrecv_run (the controller's side) over an
 * in-memory msgpipe, then the generation hooks a switch calls (prepare on --root, switch_db,
 * prune). Prints one line of figures:
 *   tables=N sent=N rows=N agent_bytes=N controller_bytes=N seconds=S rows_per_s=R
 * With --agent-only the controller's side is a stub that asks for every table and discards the
 * rows (to measure the agent alone, e.g. its peak RSS).
 *
 * usage: dbpipe --agent-socket S --agent-db D --agent-user U --agent-password P
 *               [--backup-socket S --backup-user U --backup-password-file F --backup-name N]
 *               [--generation G] [--root DIR] [--data DIR] [--agent-only] [--dry-run]
 * --data DIR is [site] data: the retained dumps go to DIR/dumps. --cache FILE: the agent's
 * digest cache (dbsend_opts_t.digest_cache). --routines: also stored procedures, functions and
 * events ([database] routines = yes).
 * --rollback-to G: no sync; only the switch_db hook back to generation G (as gen_rollback does).
 * Exit status 0 when both sides succeeded; the error is printed otherwise.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "dbrecv.h"
#include "dbsend.h"
#include "err.h"
#include "msgpipe.h"
#include "wire.h"

static const cfg_key_t schema[] = {
    {"database", "socket", CFG_PATH, 0, NULL, ""},
    {"database", "host", CFG_STRING, 0, NULL, ""},
    {"database", "port", CFG_UINT, 0, "3306", ""},
    {"database", "user", CFG_STRING, 0, NULL, ""},
    {"database", "password_file", CFG_PATH, 0, NULL, ""},
    {"database", "name", CFG_STRING, 0, NULL, ""},
    {"site", "data", CFG_PATH, 0, NULL, ""},
    {"site", "wp_cron", CFG_BOOL, 0, "no", ""},
    {"retention", "days", CFG_UINT, 0, "5", ""},
    {NULL, NULL, 0, 0, NULL, NULL},
};

typedef struct agent_job {
    wpconfig_t wp;
    msgio_t io;
    msgpipe_t *pipe;
    const char *cache;
    bool routines;
    dbsend_stats_t stats;
    int r;
    char err[1024];
} agent_job_t;

static void *agent_main(void *arg)
{
    agent_job_t *j = arg;
    dbsend_opts_t opts = {.digest_cache = j->cache, .routines = j->routines};
    j->r = dbsend_run(&j->wp, &j->io, &opts, &j->stats, j->err, sizeof(j->err));
    if (j->r < 0) {
        wire_msg_t m = {.type = WIRE_ERROR};
        m.u.error.code = (uint32_t)err_exit_code(j->r);
        m.u.error.text = j->err;
        msgio_send(&j->io, &m);
    }
    msgpipe_close(j->pipe, 0);
    return NULL;
}

/* --agent-only: ask for everything, discard it. */
static int stub_controller(const msgio_t *io, uint64_t *ret_rows, char *err, size_t err_size)
{
    wire_msg_t *m = NULL, need = {.type = WIRE_DB_NEED};
    int r = msgio_recv(io, &m, 0);
    if (r < 0 || m->type != WIRE_DB_BEGIN) {
        snprintf(err, err_size, "no DbBegin");
        wire_msg_free(m);
        return ERR_PROTOCOL;
    }
    const char **names = calloc(m->u.db_begin.n_tables + 1, sizeof(*names));
    for (size_t i = 0; i < m->u.db_begin.n_tables; i++)
        names[i] = m->u.db_begin.tables[i].name;
    need.u.db_need.tables = names;
    need.u.db_need.n_tables = m->u.db_begin.n_tables;
    msgio_send(io, &need);
    free(names);
    wire_msg_free(m);
    *ret_rows = 0;
    while ((r = msgio_recv(io, &m, 0)) == 1) {
        if (m->type == WIRE_ROW_BATCH)
            *ret_rows += m->u.row_batch.n_rows;
        wire_msg_free(m);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *a_sock = NULL, *a_db = NULL, *a_user = NULL, *a_pw = NULL;
    const char *b_sock = NULL, *b_user = NULL, *b_pwfile = NULL, *b_name = NULL, *root = NULL;
    const char *data = NULL, *cache = NULL;
    uint64_t gen = 1, rollback = 0;
    bool agent_only = false, dry_run = false;
    agent_job_t job = {0};
    pthread_t th;
    char err[1024] = "", text[2048];
    struct timespec t0, t1;
    dbrecv_stats_t st = {0};
    int r = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name, var)                                                                             \
    if (!strcmp(a, name) && v) {                                                                   \
        var = v;                                                                                   \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        OPT("--agent-socket", a_sock);
        OPT("--agent-db", a_db);
        OPT("--agent-user", a_user);
        OPT("--agent-password", a_pw);
        OPT("--backup-socket", b_sock);
        OPT("--backup-user", b_user);
        OPT("--backup-password-file", b_pwfile);
        OPT("--backup-name", b_name);
        OPT("--root", root);
        OPT("--data", data);
        OPT("--cache", cache);
#undef OPT
        if (!strcmp(a, "--generation") && v) {
            gen = strtoull(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--rollback-to") && v) {
            rollback = strtoull(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--agent-only")) {
            agent_only = true;
        } else if (!strcmp(a, "--dry-run")) {
            dry_run = true;
        } else if (!strcmp(a, "--routines")) {
            job.routines = true;
        } else {
            fprintf(stderr, "dbpipe: unknown argument %s\n", a);
            return 2;
        }
    }
    if (!a_sock || !a_db || !a_user || !a_pw || (!agent_only && (!b_sock || !b_name))) {
        fprintf(stderr, "dbpipe: missing arguments\n");
        return 2;
    }

    if (rollback) {
        cfg_t *cfg = cfg_new(schema);
        dbrecv_t *d = NULL;
        snprintf(text, sizeof(text), "[database]\nsocket = %s\nname = %s\n%s%s%s%s%s%s", b_sock,
                 b_name, b_user ? "user = " : "", b_user ? b_user : "", b_user ? "\n" : "",
                 b_pwfile ? "password_file = " : "", b_pwfile ? b_pwfile : "",
                 b_pwfile ? "\n" : "");
        r = cfg_load_string(cfg, "dbpipe.conf", text);
        if (r == 0)
            r = dbrecv_open(cfg, &d, err, sizeof(err));
        if (r == 0) {
            gen_hooks_t h = dbrecv_hooks(d);
            r = h.switch_db(h.ctx, rollback, err, sizeof(err));
            if (r == 0 && h.db_is_live(h.ctx, rollback) != 1) {
                snprintf(err, sizeof(err), "db_is_live: not live after the rollback");
                r = ERR_INTERNAL;
            }
        }
        dbrecv_close(d);
        cfg_free(cfg);
        if (r < 0)
            fprintf(stderr, "dbpipe: rollback: %s\n", err);
        return r < 0 ? 1 : 0;
    }

    job.wp.db_name = (char *)a_db;
    job.wp.db_user = (char *)a_user;
    job.wp.db_password = (char *)a_pw;
    job.wp.socket = (char *)a_sock;
    job.wp.table_prefix = (char *)"wp_";
    job.cache = cache;
    job.pipe = msgpipe_new(8u << 20);
    job.io = msgpipe_end(job.pipe, 0);
    msgio_t cio = msgpipe_end(job.pipe, 1);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_create(&th, NULL, agent_main, &job);
    if (agent_only) {
        uint64_t rows = 0;
        r = stub_controller(&cio, &rows, err, sizeof(err));
        st.rows_received = rows;
    } else {
        cfg_t *cfg = cfg_new(schema);
        dbrecv_t *d = NULL;
        wire_msg_t *m = NULL;
        snprintf(text, sizeof(text),
                 "[database]\nsocket = %s\nname = %s\n%s%s%s%s%s%s[site]\n%s%s\n", b_sock, b_name,
                 b_user ? "user = " : "", b_user ? b_user : "", b_user ? "\n" : "",
                 b_pwfile ? "password_file = " : "", b_pwfile ? b_pwfile : "", b_pwfile ? "\n" : "",
                 data ? "data = " : "", data ? data : "");
        r = cfg_load_string(cfg, "dbpipe.conf", text);
        if (r < 0)
            snprintf(err, sizeof(err), "%s", cfg_last_error(cfg));
        if (r == 0)
            r = dbrecv_open(cfg, &d, err, sizeof(err));
        if (r == 0 && (r = msgio_recv(&cio, &m, 0)) == 1) {
            r = 0;
            if (m->type != WIRE_DB_BEGIN) {
                snprintf(err, sizeof(err), "agent: %s",
                         m->type == WIRE_ERROR ? m->u.error.text : "no DbBegin");
                r = ERR_PROTOCOL;
            }
        }
        if (r == 0)
            r = dbrecv_run(d, &cio, &m->u.db_begin, gen, dry_run, &st, err, sizeof(err));
        wire_msg_free(m);
        if (r < 0 && d)
            dbrecv_abort(d);
        gen_hooks_t h = d ? dbrecv_hooks(d) : (gen_hooks_t){0};
        if (r == 0 && !dry_run && root) {
            int fd = open(root, O_RDONLY | O_DIRECTORY);
            r = h.prepare(h.ctx, gen, fd, err, sizeof(err));
            close(fd);
        }
        if (r == 0 && !dry_run)
            r = h.switch_db(h.ctx, gen, err, sizeof(err));
        if (r == 0 && !dry_run && h.db_is_live(h.ctx, gen) != 1) {
            snprintf(err, sizeof(err), "db_is_live says generation %llu is not live",
                     (unsigned long long)gen);
            r = ERR_INTERNAL;
        }
        if (r == 0 && !dry_run)
            h.prune(h.ctx, gen > 2 ? gen - 2 : 0);
        msgpipe_close(job.pipe, 1);
        dbrecv_close(d);
        cfg_free(cfg);
    }
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("tables=%llu sent=%llu rows=%llu agent_bytes=%llu controller_bytes=%llu seconds=%.3f "
           "rows_per_s=%.0f cached=%llu nontx=[%s]\n",
           (unsigned long long)job.stats.tables, (unsigned long long)job.stats.tables_sent,
           (unsigned long long)job.stats.rows_sent, (unsigned long long)msgpipe_bytes(job.pipe, 0),
           (unsigned long long)msgpipe_bytes(job.pipe, 1), secs,
           secs > 0 ? (double)job.stats.rows_sent / secs : 0.0,
           (unsigned long long)job.stats.digests_cached, job.stats.non_transactional);
    msgpipe_free(job.pipe);
    if (job.r < 0) {
        fprintf(stderr, "dbpipe: agent: %s\n", job.err);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "dbpipe: controller: %s\n", err);
        return 1;
    }
    return 0;
}
