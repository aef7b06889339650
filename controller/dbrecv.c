/* The controller's side of the database phase (see dbrecv.h).
 *
 * Switch design. The site's database is the live schema L ([database] name), the one the
 * backup's wp-config.php names in every generation. Next to it the controller owns:
 *   L_new<N>   the tables of generation N that changed (and nothing else) plus its manifest
 *              table `understudy~gen<N>`, while N is received and until it is switched in;
 *   L_meta     the manifest of the live generation (one table, `understudy~gen<N>`): every
 *              table, view and trigger of it with the agent's digest, and the checked statement
 *              of each view and trigger;
 *   L_old<N>   what generation N displaced: the previous versions of the tables it replaced or
 *              dropped, and the previous manifest.
 * The switch is one multi-table RENAME TABLE, atomic and crash-safe on MariaDB >= 10.6:
 *   L.t -> L_old<N>.t (replaced or dropped tables), L_new<N>.t -> L.t (changed and new tables),
 *   L_meta.`understudy~gen<M>` -> L_old<N>, L_new<N>.`understudy~gen<N>` -> L_meta.
 * Going back (gen_rollback, or generation.c undoing a switch whose symlink flip failed) is the
 * same move the other way, one RENAME per generation undone: L_old<N> -> L, L -> L_new<N>.
 * Both schemas of a generation are dropped by prune once it is older than the oldest kept.
 * Moving the manifest in the same statement makes "is generation N's database live?" a question
 * about one table's existence (db_is_live), with no window in which the answer and the tables
 * disagree. Unchanged tables never move: a sync that changed nothing moves only the manifest.
 * Two things cannot take part in a cross-schema RENAME: views (error 1450), which therefore live
 * only in L and are (re)created from the manifest after the rename (they resolve names at query
 * time, so the old ones keep working until then); and tables with triggers (error 1435), so the
 * triggers of tables that move out are dropped right before the RENAME and every trigger of the
 * new manifest that is missing is created right after it. A crash between those steps is
 * repaired when the controller opens the database again (ensure_objects from the live
 * manifest), and crash recovery of the whole switch asks db_is_live.
 * The alternative, a schema per generation named in that generation's wp-config.php (the
 * symlink flip alone switching), would have to copy every unchanged table into each new schema:
 * a full copy of the database per sync, which defeats sending only what changed.
 *
 * Import: each needed table is created in L_new<N> from its typed TableDef (dbddl.c builds and
 * checks the statement) and filled by one LOAD DATA LOCAL INFILE ... CHARACTER SET binary whose
 * "file" is the RowBatch stream itself (ctldb_load's read callback pulls the next batch from
 * the agent), with unique_checks, foreign_key_checks off (and sql_log_bin off where permitted).
 * Before anything can become live, the digest of the rows as handed to LOAD DATA must equal
 * the one the agent computed in its snapshot, with the exact row count and no warning from the
 * server (verify_table says why that proves what was stored). A table received by chunks is
 * created like the live one and filled with the live rows outside those chunks on a connection
 * of its own (copier_run, in parallel with the rest of the import), then the chunks are loaded.
 * Deferred tables (DbBegin.deferred: the agent had no digest at hand) cost one more exchange
 * when the live generation has them (ask_digests); the others come whole, their digests with
 * their rows (TableEnd), so a first sync reads every table once on each side.
 * Stored procedures, functions and events ([database] routines = yes on the agent) are checked
 * like views (dbddl_check_object) and, like views, (re)created from the manifest after the
 * RENAME (ensure_objects).
 */
#include "dbrecv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "db.h"
#include "dbddl.h"
#include "dumps.h"
#include "err.h"
#include "fault.h"
#include "log.h"

#define DBRECV_MAX_OBJECTS   20000
#define DBRECV_RECV_TIMEOUT  (10u * 60 * 1000)
#define DBRECV_MAX_WPCONFIG  (1u << 20)
#define DBRECV_MAX_LIVE_NAME 40
/* Tables received by chunks whose unchanged rows are copied in parallel, one connection each. */
#define DBRECV_COPIERS 4

typedef struct mentry {
    int kind;
    char *name;
    uint8_t digest[64];
    size_t digest_len;
    uint64_t rows;
    char *sql; /* views, triggers: the checked statement */
    char *sql_mode, *cs, *coll;
    char *chunks; /* the agent's chunk digests, one per line ("" for none) */
} mentry_t;

typedef struct want {
    uint32_t *ids; /* chunks to receive; the others are copied from the live table */
    size_t n;
    uint32_t width;       /* keys per chunk */
    const mentry_t *live; /* the live table's manifest entry (its chunk lines) */
    uint64_t copied;      /* rows copy_unchanged copied */
    unsigned copy_warnings;
    bool partial;
    /* The copy on a connection of its own (copier_run), started as soon as the DbNeeds are
     * out: it overlaps the other tables' copies and the agent's sending. */
    pthread_t copier;
    bool copier_started, copier_joined;
    const char *name; /* the table */
    dbrecv_t *d;
    int copy_r;
    char copy_err[512];
} want_t;

typedef struct manifest {
    mentry_t *v;
    size_t n;
} manifest_t;

struct dbrecv {
    MYSQL *db;
    ctldb_opts_t opts;                    /* to connect again after the server restarted */
    bool resync;                          /* take every table, whatever its digest */
    char live[72], stage[96], meta[80];   /* stage: L_new<N> of the run in progress ("" if none) */
    char *user, *password, *host_setting; /* for wp-config.php */
    char *dumps_dir;                      /* [site] data/dumps; NULL: no retained dumps */
    unsigned dump_days;                   /* [retention] days */
    bool wp_cron;                         /* [site] wp_cron: leave DISABLE_WP_CRON alone */
};

/* ---- helpers ---- */

/* The backup's server may have restarted since the last sync: connect again if needed, with
 * this session's settings. */
static int session_setup(dbrecv_t *d, char *err, size_t err_size);

static int reconnect(dbrecv_t *d, char *err, size_t err_size)
{
    bool had = d->db != NULL;
    MYSQL *before = d->db;
    int r = ctldb_ensure(&d->db, &d->opts, err, err_size);
    if (r == 0 && (!had || d->db != before))
        r = session_setup(d, err, err_size);
    return r;
}

static void manifest_clear(manifest_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].name);
        free(m->v[i].sql);
        free(m->v[i].sql_mode);
        free(m->v[i].cs);
        free(m->v[i].coll);
        free(m->v[i].chunks);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

static const mentry_t *manifest_find(const manifest_t *m, int kind, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i].kind == kind && !strcmp(m->v[i].name, name))
            return &m->v[i];
    return NULL;
}

static char *xstrndup(const char *s, size_t n)
{
    return strndup(s ? s : "", s ? n : 0);
}

static int exec_buf(dbrecv_t *d, buf_t *q, char *err, size_t err_size)
{
    return ctldb_exec(d->db, (const char *)buf_data(q), q->len, err, err_size);
}

static int execf(dbrecv_t *d, char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int execf(dbrecv_t *d, char *err, size_t err_size, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(sql))
        return UV_E2BIG;
    return ctldb_exec(d->db, sql, (size_t)n, err, err_size);
}

/* Appends `schema`.`name`. */
static int qname(buf_t *q, const char *schema, const char *name)
{
    int r = dbddl_ident(q, schema);
    if (r == 0)
        r = buf_append(q, ".", 1);
    return r < 0 ? r : dbddl_ident(q, name);
}

static void marker_name(char *out, size_t size, uint64_t gen)
{
    snprintf(out, size, DBDDL_MARKER_PREFIX "%" PRIu64, gen);
}

static int table_exists(dbrecv_t *d, const char *schema, const char *name, char *err,
                        size_t err_size)
{
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v;
    unsigned long *len;
    int r = buf_append_str(&q, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                               "TABLE_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    if (r == 0)
        r = buf_append_str(&q, " AND TABLE_NAME = ");
    if (r == 0)
        r = dbddl_literal(&q, name);
    if (r == 0)
        r = ctldb_query(d->db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    buf_free(&q);
    if (r < 0)
        return r;
    r = ctldb_res_next(res, &v, &len) == 1 && v[0] && strcmp(v[0], "0") != 0;
    ctldb_res_free(res);
    return r;
}

/* The generation whose manifest is in schema: its highest marker (0: none). */
static int marker_in(dbrecv_t *d, const char *schema, uint64_t *ret, char *err, size_t err_size)
{
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v;
    unsigned long *len;
    int r = buf_append_str(&q, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                               "TABLE_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    if (r == 0)
        r = ctldb_query(d->db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    buf_free(&q);
    if (r < 0)
        return r;
    *ret = 0;
    while (ctldb_res_next(res, &v, &len) == 1) {
        size_t pl = strlen(DBDDL_MARKER_PREFIX);
        if (v[0] && !strncmp(v[0], DBDDL_MARKER_PREFIX, pl)) {
            uint64_t g = strtoull(v[0] + pl, NULL, 10);
            if (g > *ret)
                *ret = g;
        }
    }
    ctldb_res_free(res);
    return 0;
}

/* The live generation: the marker in L_meta (0: none yet). */
static int live_generation(dbrecv_t *d, uint64_t *ret, char *err, size_t err_size)
{
    return marker_in(d, d->meta, ret, err, err_size);
}

static int load_manifest(dbrecv_t *d, const char *schema, uint64_t gen, manifest_t *m, char *err,
                         size_t err_size)
{
    char marker[64];
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v;
    unsigned long *len;
    int r;

    memset(m, 0, sizeof(*m));
    if (gen == 0)
        return 0;
    marker_name(marker, sizeof(marker), gen);
    r = buf_append_str(&q, "SELECT kind, name, digest, row_count, sql_text, sql_mode, cs, coll, "
                           "chunks FROM ");
    if (r == 0)
        r = qname(&q, schema, marker);
    if (r == 0)
        r = buf_append_str(&q, " ORDER BY ord");
    if (r == 0)
        r = ctldb_query(d->db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    buf_free(&q);
    if (r < 0)
        return r;
    size_t n = 0;
    while (r == 0 && ctldb_res_next(res, &v, &len) == 1) {
        mentry_t *nv = realloc(m->v, (n + 1) * sizeof(*nv));
        if (!nv) {
            r = UV_ENOMEM;
            break;
        }
        m->v = nv;
        mentry_t *e = &m->v[n++];
        memset(e, 0, sizeof(*e));
        m->n = n;
        e->kind = v[0] ? atoi(v[0]) : 0;
        e->name = xstrndup(v[1], len[1]);
        e->digest_len = len[2] < sizeof(e->digest) ? len[2] : sizeof(e->digest);
        if (v[2])
            memcpy(e->digest, v[2], e->digest_len);
        e->rows = v[3] ? strtoull(v[3], NULL, 10) : 0;
        e->sql = xstrndup(v[4], len[4]);
        e->sql_mode = xstrndup(v[5], len[5]);
        e->cs = xstrndup(v[6], len[6]);
        e->coll = xstrndup(v[7], len[7]);
        e->chunks = xstrndup(v[8], len[8]);
        if (!e->name || !e->sql || !e->sql_mode || !e->cs || !e->coll || !e->chunks)
            r = UV_ENOMEM;
    }
    ctldb_res_free(res);
    if (r < 0)
        manifest_clear(m);
    return r;
}

static int session_setup(dbrecv_t *d, char *err, size_t err_size)
{
    char ignored[256];
    int r = execf(d, err, err_size,
                  "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00', "
                  "foreign_key_checks = 0, unique_checks = 0, character_set_results = utf8mb4, "
                  "net_read_timeout = 3600, net_write_timeout = 3600");
    /* net_read_timeout: LOAD DATA LOCAL waits for the agent's next RowBatch, which may take
     * long on a slow link or a busy primary; the default 30 s would abort the import. */
    /* Needs BINLOG ADMIN (or SUPER), which the controller's account does not have. */
    if (r == 0)
        execf(d, ignored, sizeof(ignored), "SET SESSION sql_log_bin = 0");
    return r;
}

/* A time zone name or offset as SHOW CREATE EVENT reports it: SYSTEM, +05:30, Europe/Paris. */
static bool time_zone_ok(const char *tz)
{
    size_t n = strlen(tz);
    if (n > 64)
        return false;
    for (const char *p = tz; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("_/:+-", *p)))
            return false;
    return true;
}

/* Runs a view, trigger, routine or event statement of the manifest with its own session
 * settings. */
static int create_object(dbrecv_t *d, const mentry_t *e, char *err, size_t err_size)
{
    int r = 0;

    if (!dbddl_sql_mode_ok(e->sql_mode) || !dbddl_charset_ok(e->cs) || !dbddl_charset_ok(e->coll))
        return ERR_REFUSED;
    /* An event's schedule is read in the time zone it was written in ("tz:<zone>"). */
    const char *tz = e->kind == WIRE_TABLE_EVENT && e->chunks && !strncmp(e->chunks, "tz:", 3)
                         ? e->chunks + 3
                         : NULL;
    if (tz && !time_zone_ok(tz)) {
        snprintf(err, err_size, "event %s: bad time zone \"%.64s\"", e->name, tz);
        return ERR_REFUSED;
    }
    if (tz && tz[0])
        r = execf(d, err, err_size, "SET SESSION time_zone = '%s'", tz);
    if (r == 0)
        r = execf(d, err, err_size, "SET SESSION sql_mode = '%s'", e->sql_mode);
    if (r == 0)
        r = execf(d, err, err_size, "SET NAMES %s COLLATE %s", e->cs, e->coll);
    if (r == 0)
        r = ctldb_exec(d->db, e->sql, strlen(e->sql), err, err_size);
    int r2 = execf(d, err, err_size, "SET NAMES utf8mb4");
    if (r2 == 0)
        r2 = session_setup(d, err, err_size);
    return r < 0 ? r : r2;
}

/* Names of objects of one kind in L: tables (BASE TABLE), views, triggers (name + table),
 * procedures, functions or events. */
static int list_live(dbrecv_t *d, int kind, char ***ret, char ***ret_tables, size_t *ret_n,
                     char *err, size_t err_size)
{
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v, **names = NULL, **tables = NULL;
    unsigned long *len;
    size_t n = 0;
    int r;

    if (kind == WIRE_TABLE_TRIGGER)
        r = buf_append_str(&q, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM "
                               "information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ");
    else if (kind == WIRE_TABLE_ROUTINE || kind == WIRE_TABLE_FUNCTION)
        r = buf_printf(&q,
                       "SELECT ROUTINE_NAME, ROUTINE_NAME FROM information_schema.ROUTINES "
                       "WHERE ROUTINE_TYPE = '%s' AND ROUTINE_SCHEMA = ",
                       kind == WIRE_TABLE_ROUTINE ? "PROCEDURE" : "FUNCTION");
    else if (kind == WIRE_TABLE_EVENT)
        r = buf_append_str(&q, "SELECT EVENT_NAME, EVENT_NAME FROM information_schema.EVENTS "
                               "WHERE EVENT_SCHEMA = ");
    else
        r = buf_printf(&q,
                       "SELECT TABLE_NAME, TABLE_NAME FROM information_schema.TABLES WHERE "
                       "TABLE_TYPE = '%s' AND TABLE_SCHEMA = ",
                       kind == WIRE_TABLE_VIEW ? "VIEW" : "BASE TABLE");
    if (r == 0)
        r = dbddl_literal(&q, d->live);
    if (r == 0)
        r = ctldb_query(d->db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    buf_free(&q);
    if (r < 0)
        return r;
    while (r == 0 && ctldb_res_next(res, &v, &len) == 1) {
        char **nn = realloc(names, (n + 1) * sizeof(*nn));
        if (nn)
            names = nn;
        char **nt = nn ? realloc(tables, (n + 1) * sizeof(*nt)) : NULL;
        if (nt)
            tables = nt;
        if (!nn || !nt) {
            r = UV_ENOMEM;
            break;
        }
        names[n] = xstrndup(v[0], len[0]);
        tables[n] = xstrndup(v[1], len[1]);
        n++;
    }
    ctldb_res_free(res);
    *ret = names;
    *ret_tables = tables;
    *ret_n = n;
    return r;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* Procedures, functions or events (kind) of L: those of m are (re)created (CREATE OR REPLACE:
 * few and cheap, and they may have changed), the others dropped. */
static int ensure_routines(dbrecv_t *d, const manifest_t *m, int kind, char *err, size_t err_size)
{
    char **names = NULL, **tables = NULL;
    size_t n = 0;
    int r = list_live(d, kind, &names, &tables, &n, err, err_size);

    for (size_t i = 0; r == 0 && i < n; i++) {
        if (manifest_find(m, kind, names[i]))
            continue;
        buf_t q = BUF_INIT;
        r = buf_printf(&q, "DROP %s IF EXISTS ",
                       kind == WIRE_TABLE_EVENT      ? "EVENT"
                       : kind == WIRE_TABLE_FUNCTION ? "FUNCTION"
                                                     : "PROCEDURE");
        if (r == 0)
            r = qname(&q, d->live, names[i]);
        if (r == 0)
            r = exec_buf(d, &q, err, err_size);
        buf_free(&q);
    }
    for (size_t i = 0; r == 0 && i < m->n; i++)
        if (m->v[i].kind == kind)
            r = create_object(d, &m->v[i], err, err_size);
    free_names(names, n);
    free_names(tables, n);
    return r;
}

/* Views and triggers of manifest m that are missing in L are created; views are all
 * (re)created (they are cheap and may have changed); views not in m are dropped. Procedures and
 * functions come first (a view may call a function), events last. */
static int ensure_objects(dbrecv_t *d, const manifest_t *m, char *err, size_t err_size)
{
    char **names = NULL, **tables = NULL;
    size_t n = 0, pending = 0;
    int r = execf(d, err, err_size, "USE `%s`", d->live);

    if (r == 0)
        r = ensure_routines(d, m, WIRE_TABLE_FUNCTION, err, err_size);
    if (r == 0)
        r = ensure_routines(d, m, WIRE_TABLE_ROUTINE, err, err_size);

    /* Views may use views: repeat until every view is created or no progress is made. */
    bool *done = calloc(m->n + 1, sizeof(*done));
    if (!done)
        return UV_ENOMEM;
    for (size_t i = 0; i < m->n; i++)
        pending += m->v[i].kind == WIRE_TABLE_VIEW;
    while (r == 0 && pending) {
        size_t before = pending;
        for (size_t i = 0; r == 0 && i < m->n; i++) {
            if (m->v[i].kind != WIRE_TABLE_VIEW || done[i])
                continue;
            if (create_object(d, &m->v[i], err, err_size) == 0) {
                done[i] = true;
                pending--;
            }
        }
        if (pending == before) {
            r = ERR_DB; /* err holds the last failure */
            break;
        }
    }
    free(done);
    if (r == 0)
        r = list_live(d, WIRE_TABLE_VIEW, &names, &tables, &n, err, err_size);
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (manifest_find(m, WIRE_TABLE_VIEW, names[i]))
            continue;
        buf_t q = BUF_INIT;
        r = buf_append_str(&q, "DROP VIEW IF EXISTS ");
        if (r == 0)
            r = qname(&q, d->live, names[i]);
        if (r == 0)
            r = exec_buf(d, &q, err, err_size);
        buf_free(&q);
    }
    free_names(names, n);
    free_names(tables, n);
    names = tables = NULL;
    n = 0;
    if (r == 0)
        r = list_live(d, WIRE_TABLE_TRIGGER, &names, &tables, &n, err, err_size);
    for (size_t i = 0; r == 0 && i < m->n; i++) {
        bool exists = false;
        if (m->v[i].kind != WIRE_TABLE_TRIGGER)
            continue;
        for (size_t j = 0; j < n; j++)
            exists |= !strcmp(names[j], m->v[i].name);
        if (!exists)
            r = create_object(d, &m->v[i], err, err_size);
    }
    free_names(names, n);
    free_names(tables, n);
    if (r == 0)
        r = ensure_routines(d, m, WIRE_TABLE_EVENT, err, err_size);
    return r;
}

/* ---- opening ---- */

int dbrecv_open(const cfg_t *cfg, dbrecv_t **ret, char *err, size_t err_size)
{
    const char *name = cfg_get(cfg, "database", "name");
    const char *pwfile = cfg_get(cfg, "database", "password_file");
    const char *socket = cfg_get(cfg, "database", "socket");
    const char *host = cfg_get(cfg, "database", "host");
    ctldb_opts_t o = {0};
    dbrecv_t *d;
    manifest_t m;
    uint64_t gen;
    int r;

    *ret = NULL;
    if (!name)
        return 0; /* files only */
    if (strlen(name) > DBRECV_MAX_LIVE_NAME || !dbddl_charset_ok(name)) {
        snprintf(err, err_size,
                 "[database] name \"%s\": use at most %d letters, digits and '_' (understudy "
                 "adds suffixes for its staging schemas)",
                 name, DBRECV_MAX_LIVE_NAME);
        return ERR_CONFIG;
    }
    d = calloc(1, sizeof(*d));
    if (!d)
        return UV_ENOMEM;
    snprintf(d->live, sizeof(d->live), "%s", name);
    snprintf(d->meta, sizeof(d->meta), "%s_meta", name);
    d->user = strdup(cfg_get(cfg, "database", "user") ? cfg_get(cfg, "database", "user") : "");
    d->password = pwfile ? cfg_read_secret(pwfile, err, err_size) : strdup("");
    if (socket)
        r = asprintf(&d->host_setting, "localhost:%s", socket);
    else
        r = asprintf(&d->host_setting, "%s:%u", host ? host : "localhost",
                     (unsigned)cfg_get_uint(cfg, "database", "port", 3306));
    if (r < 0)
        d->host_setting = NULL;
    if (cfg_get(cfg, "site", "data") &&
        asprintf(&d->dumps_dir, "%s/dumps", cfg_get(cfg, "site", "data")) < 0)
        d->dumps_dir = NULL;
    d->dump_days = (unsigned)cfg_get_uint(cfg, "retention", "days", 5);
    d->wp_cron = cfg_get_bool(cfg, "site", "wp_cron", false);
    if (!d->user || !d->password || !d->host_setting) {
        dbrecv_close(d);
        return pwfile && !d->password ? ERR_CONFIG : UV_ENOMEM;
    }
    o.socket = socket;
    o.host = socket ? NULL : (host ? host : "127.0.0.1");
    o.port = (unsigned)cfg_get_uint(cfg, "database", "port", 3306);
    o.user = d->user[0] ? d->user : NULL;
    o.password = d->password;
    d->opts = o;
    r = ctldb_connect(&o, &d->db, err, err_size);
    if (r == 0)
        r = session_setup(d, err, err_size);
    if (r == 0)
        r = execf(d, err, err_size, "CREATE DATABASE IF NOT EXISTS `%s`", d->live);
    if (r == 0)
        r = execf(d, err, err_size, "CREATE DATABASE IF NOT EXISTS `%s`", d->meta);
    /* Repair a switch a crash interrupted between its RENAME and the views and triggers. */
    if (r == 0)
        r = live_generation(d, &gen, err, err_size);
    if (r == 0 && gen) {
        r = load_manifest(d, d->meta, gen, &m, err, err_size);
        if (r == 0)
            r = ensure_objects(d, &m, err, err_size);
        manifest_clear(&m);
    }
    if (r < 0) {
        dbrecv_close(d);
        return r;
    }
    *ret = d;
    return 0;
}

void dbrecv_set_resync(dbrecv_t *d, bool on)
{
    d->resync = on;
}

void dbrecv_close(dbrecv_t *d)
{
    if (!d)
        return;
    ctldb_close(d->db);
    free(d->user);
    free(d->password);
    free(d->host_setting);
    free(d->dumps_dir);
    free(d);
}

/* ---- receiving ---- */

typedef struct loader {
    const msgio_t *io;
    const char *table;
    size_t ncols;
    buf_t pending;
    bool done;
    uint64_t rows;
    wire_rowsum_t sum; /* of the rows handed to LOAD DATA (see verify_table) */
    wire_msg_t *end;   /* the TableEnd */
    char err[512];
} loader_t;

static int encode_row(buf_t *b, const wire_row_t *row)
{
    int r = 0;
    for (size_t i = 0; r == 0 && i < row->n_values; i++) {
        if (i)
            r = buf_append(b, "\t", 1);
        if (r < 0)
            break;
        if (wire_row_is_null(row, i)) {
            r = buf_append(b, "\\N", 2);
            continue;
        }
        const uint8_t *p = row->values[i].data;
        size_t n = row->values[i].len, start = 0;
        if (n == 0)
            continue; /* the empty string: nothing between the tabs */
        for (size_t j = 0; r == 0 && j < n; j++) {
            const char *esc = p[j] == '\\'   ? "\\\\"
                              : p[j] == '\t' ? "\\t"
                              : p[j] == '\n' ? "\\n"
                              : p[j] == 0    ? "\\0"
                                             : NULL;
            if (!esc)
                continue;
            r = buf_append(b, p + start, j - start);
            if (r == 0)
                r = buf_append(b, esc, 2);
            start = j + 1;
        }
        if (r == 0)
            r = buf_append(b, p + start, n - start);
    }
    return r < 0 ? r : buf_append(b, "\n", 1);
}

static long on_load_read(void *ctx, char *out, unsigned size)
{
    loader_t *l = ctx;

    while (l->pending.len == 0 && !l->done) {
        wire_msg_t *m = NULL;
        int r = msgio_recv(l->io, &m, DBRECV_RECV_TIMEOUT);
        if (r < 0) {
            snprintf(l->err, sizeof(l->err), "rows of %s: connection lost: %s", l->table,
                     err_str(r));
            return -1;
        }
        if (m->type == WIRE_TABLE_END) {
            l->end = m;
            l->done = true;
            break;
        }
        if (m->type != WIRE_ROW_BATCH || strcmp(m->u.row_batch.table, l->table) != 0) {
            snprintf(l->err, sizeof(l->err), "rows of %s: unexpected %s%s%s", l->table,
                     m->type == WIRE_ERROR ? "error from the agent: " : wire_type_name(m->type),
                     m->type == WIRE_ERROR ? m->u.error.text : "",
                     m->type == WIRE_ROW_BATCH ? " for another table" : "");
            wire_msg_free(m);
            return -1;
        }
        for (size_t i = 0; i < m->u.row_batch.n_rows; i++) {
            if (m->u.row_batch.rows[i].n_values != l->ncols) {
                snprintf(l->err, sizeof(l->err), "rows of %s: a row has %zu values, not %zu",
                         l->table, m->u.row_batch.rows[i].n_values, l->ncols);
                wire_msg_free(m);
                return -1;
            }
            if (encode_row(&l->pending, &m->u.row_batch.rows[i]) < 0 ||
                wire_rowsum_add(&l->sum, &m->u.row_batch.rows[i], NULL) < 0) {
                snprintf(l->err, sizeof(l->err), "rows of %s: out of memory", l->table);
                wire_msg_free(m);
                return -1;
            }
            l->rows++;
        }
        wire_msg_free(m);
    }
    size_t n = l->pending.len < size ? l->pending.len : size;
    if (n == 0)
        return 0; /* TableEnd: the end of the "file" */
    memcpy(out, buf_data(&l->pending), n);
    buf_consume(&l->pending, n);
    return (long)n;
}

__extension__ typedef unsigned __int128 u128_t;

/* Parses "c:<id>:<count>:<sum>" (len bytes, not NUL-terminated). */
static bool chunk_fields(const uint8_t *p, size_t len, uint64_t *ret_id, uint64_t *ret_count,
                         u128_t *ret_sum)
{
    u128_t v[3] = {0, 0, 0};
    size_t f = 0, digits = 0;
    if (len < 2 || p[0] != 'c' || p[1] != ':')
        return false;
    for (size_t i = 2; i < len; i++) {
        if (p[i] == ':') {
            if (!digits || ++f > 2)
                return false;
            digits = 0;
        } else if (p[i] >= '0' && p[i] <= '9' && ++digits <= 38) {
            v[f] = v[f] * 10 + (u128_t)(p[i] - '0');
        } else {
            return false;
        }
    }
    if (f != 2 || !digits || v[0] > UINT64_MAX || v[1] > UINT64_MAX)
        return false;
    *ret_id = (uint64_t)v[0];
    *ret_count = (uint64_t)v[1];
    *ret_sum = v[2];
    return true;
}

static bool wanted(const want_t *w, uint64_t id)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->ids[i] == id)
            return true;
    return false;
}

/* A table received by chunks: the rows of the chunks asked for came from the agent, the others
 * were copied (copy_unchanged) from the live table, whose rows are those of the live manifest:
 * it was verified when it became live, nothing but a switch changes it (the write guard refuses
 * syncs over local writes, and after `resolve --discard-local` every table comes whole). So:
 * the stream must equal the sum of the agent's digests of the chunks asked for (the same proof
 * as for a whole table, see verify_table, LOAD DATA's warnings included), and the copy must have
 * moved exactly the live table's rows outside those chunks, without a warning. */
static int verify_chunks(const wire_table_def_t *t, const wire_table_summary_t *sum,
                         const loader_t *l, const want_t *w, char *err, size_t err_size)
{
    wire_rowsum_t want = {0};
    uint64_t id, count, live_wanted = 0;
    u128_t v, acc = 0;
    char got[160], exp[160];

    for (size_t i = 1; i < sum->n_chunk_digests; i++) {
        if (!chunk_fields(sum->chunk_digests[i].data, sum->chunk_digests[i].len, &id, &count, &v))
            goto bad;
        if (!wanted(w, id))
            continue;
        want.rows += count;
        acc += v;
    }
    want.hi = (uint64_t)(acc >> 64);
    want.lo = (uint64_t)acc;
    for (const char *p = w->live->chunks, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        if (p == w->live->chunks)
            continue; /* the "d:" line */
        if (!chunk_fields((const uint8_t *)p, (size_t)(nl - p), &id, &count, &v))
            goto bad;
        live_wanted += wanted(w, id) ? count : 0;
    }
    wire_rowsum_text(&l->sum, got, sizeof(got));
    wire_rowsum_text(&want, exp, sizeof(exp));
    if (strcmp(got, exp) != 0) {
        snprintf(err, err_size,
                 "table %s: the imported chunks do not match the digests the agent computed in "
                 "its snapshot (%s here, %s there); nothing was applied",
                 t->name, got, exp);
        return ERR_DB;
    }
    if (w->copy_warnings || live_wanted > w->live->rows ||
        w->copied != w->live->rows - live_wanted || w->copied + l->rows != sum->row_count) {
        snprintf(err, err_size,
                 "table %s: copying the unchanged rows from the live table moved %" PRIu64
                 " rows (%u warnings), not %" PRIu64 " (the agent counts %" PRIu64
                 " in all); nothing was applied",
                 t->name, w->copied, w->copy_warnings, w->live->rows - live_wanted, sum->row_count);
        return ERR_DB;
    }
    return 0;
bad:
    snprintf(err, err_size, "table %s: a chunk digest is malformed; nothing was applied", t->name);
    return ERR_PROTOCOL;
}

/* Checks a staged table against the agent's digest, computed inside its snapshot.
 *
 * A whole table is checked without reading it back: the digest of the rows exactly as they
 * were handed to LOAD DATA (wire_rowsum_t, the same value as the agent's SQL digest over the
 * same rows) must equal the agent's, the server must report as many rows inserted as were
 * sent, and no warning. That still proves what was stored: every row the agent read reached
 * the server byte for byte (the stream digest); LOAD DATA inserted each of them (row count: none
 * skipped, none duplicated); and the server stored every value as given, because each way it
 * can store something else instead - a value truncated or out of range, bytes invalid in the
 * column's character set, a NULL into NOT NULL, a missing or extra field, a date adjusted -
 * raises a warning or note under the session's non-strict sql_mode (session_setup), and any
 * warning refuses the table. What it does not re-check is the server's own write path (the
 * storage engine losing data it acknowledged), which reading back through the same server
 * would not prove either. It saves a full read of every imported table: the second-largest
 * cost of a first sync after the import itself.
 * A table received by chunks: see verify_chunks. */
static int verify_table(dbrecv_t *d, const wire_table_def_t *t, const wire_table_summary_t *sum,
                        const loader_t *l, uint64_t loaded, unsigned warnings, const want_t *w,
                        char *err, size_t err_size)
{
    bool partial = w != NULL;
    const wire_table_end_t *e = &l->end->u.table_end;
    char got[160] = "";

    /* A partial table: its total is checked by the digest (which starts with the count). */
    if (strcmp(e->table, t->name) != 0 || e->row_count != l->rows || loaded != l->rows ||
        (!partial && sum->digest.len && l->rows != sum->row_count)) {
        snprintf(err, err_size,
                 "table %s: row counts disagree (agent's snapshot %" PRIu64 ", sent %" PRIu64
                 ", received %" PRIu64 ", stored %" PRIu64 "); nothing was applied",
                 t->name, sum->row_count, e->row_count, l->rows, loaded);
        return ERR_DB;
    }
    if (warnings) {
        snprintf(err, err_size,
                 "table %s: the server changed %u of the imported values (warnings of LOAD "
                 "DATA); nothing was applied",
                 t->name, warnings);
        return ERR_DB;
    }
    if (!partial) {
        wire_rowsum_text(&l->sum, got, sizeof(got));
        if (strlen(got) != e->digest.len || memcmp(got, e->digest.data, e->digest.len) != 0) {
            snprintf(err, err_size,
                     "table %s: the imported rows do not match the digest the agent computed in "
                     "its snapshot (%s here, %.*s there); nothing was applied",
                     t->name, got, (int)e->digest.len, (const char *)e->digest.data);
            return ERR_DB;
        }
        return 0;
    }
    return verify_chunks(t, sum, l, w, err, err_size);
}

static int copy_unchanged(dbrecv_t *d, const wire_table_def_t *t, want_t *w, char *err,
                          size_t err_size);
static int chunk_ranges(buf_t *q, const char *key, const want_t *w);

/* INSERT INTO stage.table (cols) SELECT cols FROM live.table WHERE NOT (the chunks asked for):
 * the live rows a chunked table keeps. */
static int copy_sql(buf_t *q, const dbrecv_t *d, const char *table, const buf_t *cols,
                    const char *key, const want_t *w)
{
    int r = buf_append_str(q, "INSERT INTO ");
    if (r == 0)
        r = qname(q, d->stage, table);
    if (r == 0)
        r = buf_append_str(q, " (");
    if (r == 0)
        r = buf_append(q, buf_data(cols), cols->len);
    if (r == 0)
        r = buf_append_str(q, ") SELECT ");
    if (r == 0)
        r = buf_append(q, buf_data(cols), cols->len);
    if (r == 0)
        r = buf_append_str(q, " FROM ");
    if (r == 0)
        r = qname(q, d->live, table);
    if (r == 0 && w->n) {
        r = buf_append_str(q, " WHERE NOT (");
        if (r == 0)
            r = chunk_ranges(q, key, w);
        if (r == 0)
            r = buf_append(q, ")", 1);
    }
    return r;
}

/* A table received by chunks, on its own connection: creates the staged table like the live
 * one (plan_chunks asked for chunks only because the agent's definition is the live table's)
 * and copies the live rows outside the chunks asked for into it; receive_table then loads the
 * chunks and sets AUTO_INCREMENT. Column list and key come from the live table. */
static void *copier_run(void *arg)
{
    want_t *w = arg;
    dbrecv_t *d = w->d;
    MYSQL *db = NULL;
    buf_t q = BUF_INIT, cols = BUF_INIT;
    ctldb_res_t *res = NULL;
    char **v, key[260] = "";
    unsigned long *len;
    size_t n_key = 0;
    char *err = w->copy_err;
    size_t err_size = sizeof(w->copy_err);
    int r = ctldb_connect(&d->opts, &db, err, err_size);

    if (r == 0)
        r = ctldb_exec(db,
                       "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00', "
                       "foreign_key_checks = 0, unique_checks = 0, net_read_timeout = 3600, "
                       "net_write_timeout = 3600",
                       strlen("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = "
                              "'+00:00', foreign_key_checks = 0, unique_checks = 0, "
                              "net_read_timeout = 3600, net_write_timeout = 3600"),
                       err, err_size);
    if (r == 0)
        r = buf_append_str(&q, "CREATE TABLE ");
    if (r == 0)
        r = qname(&q, d->stage, w->name);
    if (r == 0)
        r = buf_append_str(&q, " LIKE ");
    if (r == 0)
        r = qname(&q, d->live, w->name);
    if (r == 0)
        r = ctldb_exec(db, (const char *)buf_data(&q), q.len, err, err_size);
    buf_reset(&q);
    if (r == 0)
        r = buf_append_str(&q, "SELECT c.COLUMN_NAME, c.IS_GENERATED, s.SEQ_IN_INDEX FROM "
                               "information_schema.COLUMNS c LEFT JOIN "
                               "information_schema.STATISTICS s ON s.TABLE_SCHEMA = "
                               "c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME AND "
                               "s.COLUMN_NAME = c.COLUMN_NAME AND s.INDEX_NAME = 'PRIMARY' "
                               "WHERE c.TABLE_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, d->live);
    if (r == 0)
        r = buf_append_str(&q, " AND c.TABLE_NAME = ");
    if (r == 0)
        r = dbddl_literal(&q, w->name);
    if (r == 0)
        r = buf_append_str(&q, " ORDER BY c.ORDINAL_POSITION");
    if (r == 0)
        r = ctldb_query(db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    while (r == 0 && ctldb_res_next(res, &v, &len) == 1) {
        if (!v[0] || (v[1] && strcmp(v[1], "NEVER") != 0))
            continue; /* generated: computed by the server */
        if (v[2]) {
            n_key++;
            snprintf(key, sizeof(key), "%s", v[0]);
        }
        r = cols.len ? buf_append(&cols, ",", 1) : 0;
        if (r == 0)
            r = dbddl_ident(&cols, v[0]);
    }
    ctldb_res_free(res);
    if (r == 0 && (n_key != 1 || !cols.len)) {
        snprintf(err, err_size, "table %s: the live table has no one-column key to copy by",
                 w->name);
        r = ERR_DB;
    }
    buf_reset(&q);
    if (r == 0)
        r = copy_sql(&q, d, w->name, &cols, key, w);
    if (r == 0)
        r = ctldb_exec(db, (const char *)buf_data(&q), q.len, err, err_size);
    if (r == 0) {
        w->copied = ctldb_affected(db);
        w->copy_warnings = ctldb_warnings(db);
    }
    if (r == UV_ENOMEM)
        snprintf(err, err_size, "out of memory");
    buf_free(&q);
    buf_free(&cols);
    ctldb_close(db);
    w->copy_r = r;
    return NULL;
}

/* Waits for w's copier; returns its result (err filled on failure). */
static int copier_join(want_t *w, char *err, size_t err_size)
{
    if (!w->copier_started || w->copier_joined)
        return 0;
    pthread_join(w->copier, NULL);
    w->copier_joined = true;
    if (w->copy_r < 0)
        snprintf(err, err_size, "%s", w->copy_err);
    return w->copy_r;
}

static int receive_table(dbrecv_t *d, const msgio_t *io, const wire_table_def_t *t,
                         const wire_table_summary_t *sum, want_t *w, mentry_t *rec,
                         dbrecv_stats_t *stats, char *err, size_t err_size)
{
    loader_t l = {.io = io, .table = t->name};
    buf_t q = BUF_INIT;
    uint64_t loaded = 0;
    bool first = true;
    /* Built (and so checked) even when a copier creates the table like the live one. */
    int r = dbddl_create_table(t, d->stage, &q, err, err_size);

    if (r == 0 && w && w->copier_started)
        r = copier_join(w, err, err_size);
    else if (r == 0)
        r = exec_buf(d, &q, err, err_size);
    buf_reset(&q);
    /* Only some chunks come: the others' rows are the live table's (same definition). */
    if (r == 0 && w && !w->copier_started)
        r = copy_unchanged(d, t, w, err, err_size);
    if (r == 0)
        r = buf_append_str(&q, "LOAD DATA LOCAL INFILE 'understudy-rows' INTO TABLE ");
    if (r == 0)
        r = qname(&q, d->stage, t->name);
    if (r == 0)
        r = buf_append_str(&q, " CHARACTER SET binary FIELDS TERMINATED BY '\\t' ESCAPED BY "
                               "'\\\\' LINES TERMINATED BY '\\n' (");
    for (size_t i = 0; r == 0 && i < t->n_columns; i++) {
        if (t->columns[i].generated)
            continue;
        r = first ? 0 : buf_append(&q, ",", 1);
        if (r == 0)
            r = dbddl_ident(&q, t->columns[i].name);
        first = false;
        l.ncols++;
    }
    if (r == 0)
        r = buf_append(&q, ")", 2); /* with the NUL */
    buf_init(&l.pending, 0);
    unsigned warnings = 0;
    if (r == 0)
        r = wire_rowsum_init(&l.sum);
    if (r == 0) {
        r = ctldb_load(d->db, (const char *)buf_data(&q), on_load_read, &l, &loaded, err, err_size);
        warnings = r == 0 ? ctldb_warnings(d->db) : 0;
        if (l.err[0]) {
            snprintf(err, err_size, "%s", l.err);
            r = r < 0 ? r : ERR_PROTOCOL;
        }
    }
    /* A table with no rows: LOAD DATA still reads to the end, so TableEnd has been taken. */
    if (r == 0 && !l.end) {
        snprintf(err, err_size, "table %s: no TableEnd", t->name);
        r = ERR_PROTOCOL;
    }
    if (r == 0)
        r = verify_table(d, t, sum, &l, loaded, warnings, w, err, err_size);
    /* A table created like the live one has the live counter: the primary's, as sent. */
    if (r == 0 && w && w->copier_started && t->auto_increment) {
        buf_reset(&q);
        r = buf_append_str(&q, "ALTER TABLE ");
        if (r == 0)
            r = qname(&q, d->stage, t->name);
        if (r == 0)
            r = buf_printf(&q, " AUTO_INCREMENT = %" PRIu64, t->auto_increment);
        if (r == 0)
            r = exec_buf(d, &q, err, err_size);
        buf_reset(&q);
    }
    if (r == 0 && !sum->digest.len) { /* deferred */
        const wire_bytes_t *td = &l.end->u.table_end.table_digest;
        if (!td->len || td->len > sizeof(rec->digest)) {
            snprintf(err, err_size, "table %s: its TableEnd has no table digest", t->name);
            r = ERR_PROTOCOL;
        } else {
            memcpy(rec->digest, td->data, td->len);
            rec->digest_len = td->len;
            rec->rows = l.rows;
        }
        /* Its chunk digests, one per line as the manifest keeps them (plan_chunks checks them
         * line by line when they are used). */
        const wire_table_end_t *te = &l.end->u.table_end;
        buf_t c = BUF_INIT;
        for (size_t j = 0; r == 0 && j < te->n_chunk_digests; j++) {
            const wire_bytes_t *x = &te->chunk_digests[j];
            if (!x->len || x->len > 400 || memchr(x->data, '\n', x->len) ||
                memchr(x->data, 0, x->len)) {
                snprintf(err, err_size, "table %s: a malformed chunk digest", t->name);
                r = ERR_PROTOCOL;
                break;
            }
            r = buf_append(&c, x->data, x->len);
            if (r == 0)
                r = buf_append(&c, "\n", 1);
        }
        if (r == 0 && c.len && buf_append(&c, "", 1) == 0)
            rec->chunks = strdup((const char *)buf_data(&c));
        buf_free(&c);
    }
    if (r == 0) {
        stats->rows_received += l.rows;
        fault_point("controller.db.table");
    }
    wire_msg_free(l.end);
    wire_rowsum_free(&l.sum);
    buf_free(&l.pending);
    buf_free(&q);
    return r;
}

/* Receives a view or trigger: checked, and kept for the manifest. */
static int receive_object(const msgio_t *io, const wire_table_def_t *t, const wire_db_begin_t *b,
                          const char *live, mentry_t *e, char *err, size_t err_size)
{
    const char **names = calloc(b->n_tables + 1, sizeof(*names));
    const char **tables = calloc(b->n_tables + 1, sizeof(*tables));
    size_t nn = 0, nt = 0;
    buf_t q = BUF_INIT;
    wire_msg_t *m = NULL;
    int r = names && tables ? 0 : UV_ENOMEM;

    for (size_t i = 0; r == 0 && i < b->n_tables; i++) {
        if (b->tables[i].kind == WIRE_TABLE_BASE)
            tables[nt++] = names[nn++] = b->tables[i].name;
        else if (b->tables[i].kind == WIRE_TABLE_VIEW || b->tables[i].kind == WIRE_TABLE_ROUTINE ||
                 b->tables[i].kind == WIRE_TABLE_FUNCTION)
            names[nn++] = b->tables[i].name; /* routines: for CALL */
    }
    if (r == 0)
        r = dbddl_check_object(t, b->schema, live, names, nn, tables, nt, &q, err, err_size);
    if (r == 0 && buf_append(&q, "", 1) < 0)
        r = UV_ENOMEM;
    if (r == 0) {
        e->sql = strdup((const char *)buf_data(&q));
        e->sql_mode = strdup(t->sql_mode);
        e->cs = strdup(t->charset);
        e->coll = strdup(t->collation);
        e->kind = t->kind;
        /* The manifest's chunks column is free for objects other than tables: an event keeps
         * the time zone of its schedule there. */
        if (t->kind == WIRE_TABLE_EVENT && t->time_zone && t->time_zone[0] &&
            asprintf(&e->chunks, "tz:%s", t->time_zone) < 0)
            e->chunks = NULL, r = UV_ENOMEM;
        if (r == 0 && e->chunks && !time_zone_ok(e->chunks + 3)) {
            snprintf(err, err_size, "refused: event %s: bad time zone", t->name);
            r = ERR_REFUSED;
        }
        if (!e->sql || !e->sql_mode || !e->cs || !e->coll)
            r = UV_ENOMEM;
    }
    if (r == 0) {
        r = msgio_recv(io, &m, DBRECV_RECV_TIMEOUT);
        if (r >= 0 && (m->type != WIRE_TABLE_END || strcmp(m->u.table_end.table, t->name))) {
            snprintf(err, err_size, "%s: expected its TableEnd", t->name);
            r = ERR_PROTOCOL;
        } else if (r < 0) {
            snprintf(err, err_size, "connection lost: %s", err_str(r));
        } else {
            r = 0;
        }
    }
    wire_msg_free(m);
    buf_free(&q);
    free(names);
    free(tables);
    return r;
}

/* Writes the manifest of generation gen into the staging schema. */
static int write_manifest(dbrecv_t *d, uint64_t gen, const wire_db_begin_t *b,
                          const manifest_t *live, const mentry_t *got, const bool *need, char *err,
                          size_t err_size)
{
    char marker[64];
    buf_t q = BUF_INIT;
    int r;

    marker_name(marker, sizeof(marker), gen);
    r = buf_append_str(&q, "CREATE TABLE ");
    if (r == 0)
        r = qname(&q, d->stage, marker);
    if (r == 0)
        r = buf_append_str(&q, " (ord INT NOT NULL PRIMARY KEY, kind TINYINT NOT NULL, name "
                               "VARBINARY(255) NOT NULL, digest VARBINARY(64) NOT NULL, "
                               "row_count BIGINT UNSIGNED NOT NULL, sql_text LONGBLOB NOT NULL, "
                               "sql_mode VARCHAR(512) NOT NULL, cs VARCHAR(64) NOT NULL, coll "
                               "VARCHAR(64) NOT NULL, chunks LONGBLOB NOT NULL) ENGINE=InnoDB");
    if (r == 0)
        r = exec_buf(d, &q, err, err_size);
    for (size_t i = 0; r == 0 && i < b->n_tables; i++) {
        const wire_table_summary_t *s = &b->tables[i];
        const mentry_t *e = need[i] ? &got[i] : manifest_find(live, s->kind, s->name);
        if (!e || !e->sql)
            continue;
        buf_reset(&q);
        r = buf_append_str(&q, "INSERT INTO ");
        if (r == 0)
            r = qname(&q, d->stage, marker);
        if (r == 0)
            r = buf_printf(&q, " VALUES (%zu, %d, ", i, (int)s->kind);
        if (r == 0)
            r = dbddl_literal(&q, s->name);
        if (r == 0)
            r = buf_append_str(&q, ", 0x");
        for (size_t j = 0; r == 0 && j < s->digest.len && j < 64; j++)
            r = buf_printf(&q, "%02x", s->digest.data[j]);
        if (r == 0 && s->digest.len == 0)
            r = buf_append_str(&q, "00");
        if (r == 0)
            r = buf_printf(&q, ", %" PRIu64 ", ", s->row_count);
        if (r == 0)
            r = dbddl_literal(&q, e->sql);
        if (r == 0)
            r = buf_append_str(&q, ", ");
        if (r == 0)
            r = dbddl_literal(&q, e->sql_mode);
        if (r == 0)
            r = buf_append_str(&q, ", ");
        if (r == 0)
            r = dbddl_literal(&q, e->cs);
        if (r == 0)
            r = buf_append_str(&q, ", ");
        if (r == 0)
            r = dbddl_literal(&q, e->coll);
        if (r == 0)
            r = buf_append_str(&q, ", ");
        /* A table's chunk digests: this sync's when the agent sent any (an unchanged table's
         * describe the same rows as the live ones), else the live generation's. */
        if (r == 0 && s->kind == WIRE_TABLE_BASE && need[i] && !s->n_chunk_digests &&
            e->chunks) { /* a deferred table's, from its rows as sent */
            r = dbddl_literal(&q, e->chunks);
        } else if (r == 0 && s->kind == WIRE_TABLE_BASE && (need[i] || s->n_chunk_digests)) {
            buf_t c = BUF_INIT;
            for (size_t j = 0; r == 0 && j < s->n_chunk_digests; j++) {
                r = buf_append(&c, s->chunk_digests[j].data, s->chunk_digests[j].len);
                if (r == 0)
                    r = buf_append(&c, "\n", 1);
            }
            if (r == 0)
                r = buf_append(&c, "", 1);
            if (r == 0)
                r = dbddl_literal(&q, (const char *)buf_data(&c));
            buf_free(&c);
        } else if (r == 0) {
            r = dbddl_literal(&q, e->chunks ? e->chunks : "");
        }
        if (r == 0)
            r = buf_append_str(&q, ")");
        if (r == 0)
            r = exec_buf(d, &q, err, err_size);
    }
    buf_free(&q);
    return r;
}

static int check_begin(const wire_db_begin_t *b, char *err, size_t err_size)
{
    int r;
    if (b->n_tables > DBRECV_MAX_OBJECTS) {
        snprintf(err, err_size, "refused: the database has more than %d objects",
                 DBRECV_MAX_OBJECTS);
        return ERR_REFUSED;
    }
    if (!b->schema[0]) {
        snprintf(err, err_size, "refused: DbBegin names no schema");
        return ERR_REFUSED;
    }
    for (size_t i = 0; i < b->n_tables; i++) {
        if ((r = dbddl_check_name(b->tables[i].name, err, err_size)) < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (b->tables[j].kind == b->tables[i].kind &&
                !strcmp(b->tables[j].name, b->tables[i].name)) {
                snprintf(err, err_size, "refused: %s is listed twice", b->tables[i].name);
                return ERR_REFUSED;
            }
    }
    return 0;
}

/* ---- chunks ---- */

typedef struct chunk_ref {
    uint64_t id;
    const char *p;
    size_t len;
} chunk_ref_t;

/* Parses one "c:<id>:..." line. */
static bool chunk_line(const char *p, size_t len, chunk_ref_t *ret)
{
    char *end;
    if (len < 3 || p[0] != 'c' || p[1] != ':')
        return false;
    ret->id = strtoull(p + 2, &end, 10);
    ret->p = p;
    ret->len = len;
    return end > p + 2 && end < p + len && *end == ':' && ret->id <= UINT32_MAX;
}

/* The chunk width a definition line names: "d:<64 hex>" is DBDDL_CHUNK_WIDTH, "d:<64 hex>/<W>"
 * W (a power of two, at least DBDDL_CHUNK_WIDTH_MIN). 0: not a definition line we can use. */
static uint32_t chunk_width(const uint8_t *p, size_t len)
{
    if (len < 66 || memcmp(p, "d:", 2) != 0)
        return 0;
    if (len == 66)
        return DBDDL_CHUNK_WIDTH;
    if (p[66] != '/' || len > 72)
        return 0;
    uint32_t w = 0;
    for (size_t i = 67; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        w = w * 10 + (uint32_t)(p[i] - '0');
    }
    return w >= DBDDL_CHUNK_WIDTH_MIN && w <= DBDDL_CHUNK_WIDTH && !(w & (w - 1)) ? w : 0;
}

/* Which chunks of a changed table to ask for: those whose digests differ between the agent's
 * summary and the live manifest, when both list chunks of the same definition ("d:" line) and
 * at most half of them changed. Returns 0 (w->partial tells), or UV_ENOMEM. */
static int plan_chunks(const wire_table_summary_t *s, const mentry_t *e, want_t *w)
{
    chunk_ref_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0, i = 0, j = 0, changed = 0;
    const char *p, *nl;
    int r = 0;

    memset(w, 0, sizeof(*w));
    if (!e || !e->chunks[0] || s->n_chunk_digests < 2)
        return 0;
    nl = strchr(e->chunks, '\n');
    if (!nl || (size_t)(nl - e->chunks) != s->chunk_digests[0].len ||
        memcmp(e->chunks, s->chunk_digests[0].data, s->chunk_digests[0].len) != 0 ||
        strncmp(e->chunks, "d:", 2) != 0)
        return 0; /* another definition: the whole table */
    w->width = chunk_width(s->chunk_digests[0].data, s->chunk_digests[0].len);
    if (!w->width)
        return 0;
    a = calloc(s->n_chunk_digests, sizeof(*a));
    b = calloc(strlen(e->chunks) / 4 + 1, sizeof(*b));
    if (!a || !b) {
        r = UV_ENOMEM;
        goto out;
    }
    for (size_t k = 1; k < s->n_chunk_digests; k++) {
        if (!chunk_line((const char *)s->chunk_digests[k].data, s->chunk_digests[k].len, &a[na]) ||
            (na && a[na].id <= a[na - 1].id))
            goto out;
        na++;
    }
    for (p = nl + 1; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl || !chunk_line(p, (size_t)(nl - p), &b[nb]) || (nb && b[nb].id <= b[nb - 1].id))
            goto out;
        nb++;
    }
    w->ids = calloc(na + nb + 1, sizeof(*w->ids));
    if (!w->ids) {
        r = UV_ENOMEM;
        goto out;
    }
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i].id < b[j].id)) {
            w->ids[w->n++] = (uint32_t)a[i++].id; /* new chunk */
        } else if (i == na || b[j].id < a[i].id) {
            w->ids[w->n++] = (uint32_t)b[j++].id; /* chunk gone: its rows are not copied */
        } else {
            if (a[i].len != b[j].len || memcmp(a[i].p, b[j].p, a[i].len) != 0)
                w->ids[w->n++] = (uint32_t)a[i].id;
            i++;
            j++;
        }
    }
    changed = w->n;
    if (changed == 0 && na)
        w->ids[w->n++] = (uint32_t)a[0].id; /* only the definition's counter moved */
    w->partial = changed * 2 <= (na > nb ? na : nb);
    w->live = e;
    if (!w->partial) {
        free(w->ids);
        w->ids = NULL;
        w->n = 0;
    }
out:
    free(a);
    free(b);
    return r;
}

/* Appends "(`k` >= lo AND `k` < hi) OR ..." for the chunks of w. */
static int chunk_ranges(buf_t *q, const char *key, const want_t *w)
{
    int r = 0;
    for (size_t i = 0; r == 0 && i < w->n; i++) {
        uint64_t lo = (uint64_t)w->ids[i] * w->width;
        r = buf_append_str(q, i ? " OR (" : "(");
        if (r == 0)
            r = dbddl_ident(q, key);
        if (r == 0)
            r = buf_printf(q, " >= %" PRIu64 " AND ", lo);
        if (r == 0)
            r = dbddl_ident(q, key);
        if (r == 0)
            r = buf_printf(q, " < %" PRIu64 ")", lo + w->width);
    }
    return r;
}

/* Copies the rows of the chunks not asked for from the live table into the staged one. */
static int copy_unchanged(dbrecv_t *d, const wire_table_def_t *t, want_t *w, char *err,
                          size_t err_size)
{
    const char *key = NULL;
    buf_t q = BUF_INIT, cols = BUF_INIT;
    int r = 0;

    for (size_t i = 0; i < t->n_indexes; i++)
        if (!strcmp(t->indexes[i].name, "PRIMARY") && t->indexes[i].n_columns == 1)
            key = t->indexes[i].columns[0];
    for (size_t i = 0; r == 0 && i < t->n_columns; i++) {
        if (t->columns[i].generated)
            continue;
        r = cols.len ? buf_append(&cols, ",", 1) : 0;
        if (r == 0)
            r = dbddl_ident(&cols, t->columns[i].name);
    }
    if (!key) {
        snprintf(err, err_size, "table %s: chunks sent for a table without a one-column key",
                 t->name);
        r = ERR_PROTOCOL;
    }
    if (r == 0)
        r = copy_sql(&q, d, t->name, &cols, key, w);
    if (r == 0)
        r = exec_buf(d, &q, err, err_size);
    if (r == 0) {
        w->copied = ctldb_affected(d->db);
        w->copy_warnings = ctldb_warnings(d->db);
    }
    buf_free(&q);
    buf_free(&cols);
    return r;
}

/* Deferred tables (DbBegin.deferred) whose digest is needed to decide, and changed tables
 * whose chunk digests were withheld: asks for them with a DbNeed and takes the agent's DbBegin
 * of their whole summaries (kept in *ret_msg, which the patched entries of sums point into). */
static int ask_digests(const msgio_t *io, wire_table_summary_t *sums, size_t n, const char **names,
                       size_t n_names, wire_msg_t **ret_msg, char *err, size_t err_size)
{
    wire_msg_t dn = {.type = WIRE_DB_NEED}, *m = NULL;
    dn.u.db_need.digests = names;
    dn.u.db_need.n_digests = n_names;
    dn.u.db_need.more = true;
    int r = msgio_send(io, &dn);
    if (r < 0) {
        snprintf(err, err_size, "sending DbNeed: %s", err_str(r));
        return r;
    }
    r = msgio_recv(io, &m, DBRECV_RECV_TIMEOUT);
    if (r < 0) {
        snprintf(err, err_size, "connection lost during the database phase: %s", err_str(r));
        return r;
    }
    *ret_msg = m;
    if (m->type == WIRE_ERROR) {
        snprintf(err, err_size, "the agent failed: %s", m->u.error.text);
        return ERR_DB;
    }
    if (m->type != WIRE_DB_BEGIN || m->u.db_begin.n_tables != n_names) {
        snprintf(err, err_size, "expected a DbBegin with %zu digests, got %s", n_names,
                 wire_type_name(m->type));
        return ERR_PROTOCOL;
    }
    for (size_t k = 0; k < n_names; k++) {
        const wire_table_summary_t *t = &m->u.db_begin.tables[k];
        size_t i = SIZE_MAX;
        for (size_t j = 0; j < n; j++)
            if (sums[j].kind == WIRE_TABLE_BASE &&
                (!sums[j].digest.len || sums[j].chunks_withheld) && !strcmp(sums[j].name, t->name))
                i = j;
        if (i == SIZE_MAX || t->kind != WIRE_TABLE_BASE || !t->digest.len || t->digest.len > 64 ||
            t->chunks_withheld) {
            snprintf(err, err_size, "refused: a digest of %s, which was not asked for", t->name);
            return ERR_PROTOCOL;
        }
        sums[i] = *t;
    }
    return 0;
}

int dbrecv_run(dbrecv_t *d, const msgio_t *io, const wire_db_begin_t *b0, uint64_t generation,
               bool dry_run, dbrecv_stats_t *stats, char *err, size_t err_size)
{
    manifest_t live = {0};
    uint64_t live_gen = 0;
    /* The agent's summaries; those of deferred tables are completed as their digests come
     * (ask_digests, or the TableEnd of a table sent whole). */
    wire_table_summary_t *sums = calloc(b0->n_tables + 1, sizeof(*sums));
    wire_db_begin_t bb = *b0;
    const wire_db_begin_t *b = &bb;
    wire_msg_t *digests_msg = NULL;
    const char **ask = calloc(b0->n_tables + 1, sizeof(*ask));
    size_t n_ask = 0;
    if (sums)
        memcpy(sums, b0->tables, b0->n_tables * sizeof(*sums));
    bb.tables = sums;
    bool *need = calloc(b->n_tables + 1, sizeof(*need));
    bool *got = calloc(b->n_tables + 1, sizeof(*got));
    mentry_t *recv = calloc(b->n_tables + 1, sizeof(*recv));
    const char **names = calloc(b->n_tables + 1, sizeof(*names));
    want_t *want = calloc(b->n_tables + 1, sizeof(*want));
    size_t n_need = 0, n_whole = 0, n_partial = 0;
    wire_msg_t *m = NULL;
    int r = need && got && recv && names && want && sums && ask ? 0 : UV_ENOMEM;

    memset(stats, 0, sizeof(*stats));
    stats->tables = b->n_tables;
    if (r == 0)
        r = check_begin(b, err, err_size);
    if (r == 0)
        r = reconnect(d, err, err_size);
    if (r == 0)
        r = session_setup(d, err, err_size);
    if (r == 0)
        r = live_generation(d, &live_gen, err, err_size);
    if (r == 0)
        r = load_manifest(d, d->meta, live_gen, &live, err, err_size);
    /* Deferred tables: those the live generation has need their digest to compare; the others
     * come whole anyway (their digest follows their rows). */
    for (size_t i = 0; r == 0 && i < b->n_tables; i++) {
        const wire_table_summary_t *s = &b->tables[i];
        const mentry_t *e = manifest_find(&live, s->kind, s->name);
        if (s->digest.len && s->chunks_withheld && s->kind == WIRE_TABLE_BASE &&
            (d->resync || !e || e->digest_len != s->digest.len ||
             memcmp(e->digest, s->digest.data, s->digest.len) != 0)) {
            ask[n_ask++] = s->name; /* changed: its chunk digests, to plan and to keep */
            continue;
        }
        if (s->digest.len)
            continue;
        if (!b->deferred || s->kind != WIRE_TABLE_BASE) {
            snprintf(err, err_size, "refused: %s comes without a digest", s->name);
            r = ERR_PROTOCOL;
        } else if (!d->resync && e) {
            ask[n_ask++] = s->name;
        }
    }
    if (r == 0 && n_ask)
        r = ask_digests(io, sums, b->n_tables, ask, n_ask, &digests_msg, err, err_size);
    for (size_t i = 0; r == 0 && i < b->n_tables; i++) {
        const wire_table_summary_t *s = &b->tables[i];
        const mentry_t *e = manifest_find(&live, s->kind, s->name);
        need[i] = d->resync || !e || !s->digest.len || e->digest_len != s->digest.len ||
                  memcmp(e->digest, s->digest.data, s->digest.len) != 0;
        if (!need[i] || dry_run)
            continue;
        n_need++;
        /* Chunks copy unchanged rows from the live table: not after local writes. */
        if (s->kind == WIRE_TABLE_BASE)
            r = plan_chunks(s, d->resync ? NULL : e, &want[i]);
        if (want[i].partial)
            n_partial++;
        else
            names[n_whole++] = s->name;
    }
    /* Objects of the live generation the primary no longer has also make a change. */
    for (size_t i = 0; r == 0 && i < live.n; i++) {
        bool kept = false;
        for (size_t j = 0; j < b->n_tables && !kept; j++)
            kept = (int)b->tables[j].kind == live.v[i].kind &&
                   !strcmp(b->tables[j].name, live.v[i].name);
        stats->tables_received += !kept; /* counted so that the sync is not "unchanged" */
    }
    snprintf(d->stage, sizeof(d->stage), "%s_new%" PRIu64, d->live, generation);
    if (r == 0 && !dry_run)
        r = execf(d, err, err_size, "DROP DATABASE IF EXISTS `%s`", d->stage);
    if (r == 0 && !dry_run)
        r = execf(d, err, err_size, "CREATE DATABASE `%s` CHARACTER SET utf8mb4", d->stage);
    /* One DbNeed for the whole tables, then one per table asked for by chunks. */
    if (r == 0) {
        wire_msg_t dn = {.type = WIRE_DB_NEED};
        dn.u.db_need.tables = names;
        dn.u.db_need.n_tables = n_whole;
        dn.u.db_need.more = n_partial > 0;
        r = msgio_send(io, &dn);
    }
    for (size_t i = 0, left = n_partial; r == 0 && i < b->n_tables; i++) {
        if (!want[i].partial)
            continue;
        wire_msg_t dn = {.type = WIRE_DB_NEED};
        dn.u.db_need.tables = &b->tables[i].name;
        dn.u.db_need.n_tables = 1;
        dn.u.db_need.chunks = want[i].ids;
        dn.u.db_need.n_chunks = want[i].n;
        dn.u.db_need.more = --left > 0;
        r = msgio_send(io, &dn);
    }
    if (r < 0 && !err[0])
        snprintf(err, err_size, "sending DbNeed: %s", err_str(r));
    for (size_t i = 0, started = 0; r == 0 && i < b->n_tables && started < DBRECV_COPIERS; i++) {
        if (!want[i].partial)
            continue;
        started++;
        want[i].d = d;
        want[i].name = b->tables[i].name;
        want[i].copier_started = pthread_create(&want[i].copier, NULL, copier_run, &want[i]) == 0;
    }
    for (size_t k = 0; r == 0 && k < n_need; k++) {
        size_t i = SIZE_MAX;
        r = msgio_recv(io, &m, DBRECV_RECV_TIMEOUT);
        if (r < 0) {
            snprintf(err, err_size, "connection lost during the database phase: %s", err_str(r));
            break;
        }
        r = 0;
        if (m->type == WIRE_ERROR) {
            snprintf(err, err_size, "the agent failed: %s", m->u.error.text);
            r = ERR_DB;
            break;
        }
        if (m->type != WIRE_TABLE_DEF) {
            snprintf(err, err_size, "expected TableDef, got %s", wire_type_name(m->type));
            r = ERR_PROTOCOL;
            break;
        }
        const wire_table_def_t *t = &m->u.table_def;
        for (size_t j = 0; j < b->n_tables; j++)
            if (need[j] && !got[j] && b->tables[j].kind == t->kind &&
                !strcmp(b->tables[j].name, t->name))
                i = j;
        if (i == SIZE_MAX) {
            snprintf(err, err_size, "refused: TableDef for %s, which was not asked for", t->name);
            r = ERR_REFUSED;
            break;
        }
        got[i] = true;
        recv[i].kind = t->kind;
        if (t->kind == WIRE_TABLE_BASE) {
            r = receive_table(d, io, t, &b->tables[i], want[i].partial ? &want[i] : NULL, &recv[i],
                              stats, err, err_size);
            if (r == 0 && !sums[i].digest.len) { /* deferred: its digest came with its rows */
                sums[i].digest.data = recv[i].digest;
                sums[i].digest.len = recv[i].digest_len;
                sums[i].row_count = recv[i].rows;
            }
            recv[i].sql = strdup("");
            recv[i].sql_mode = strdup("");
            recv[i].cs = strdup("");
            recv[i].coll = strdup("");
            if (r == 0 && (!recv[i].sql || !recv[i].sql_mode || !recv[i].cs || !recv[i].coll))
                r = UV_ENOMEM;
        } else {
            r = receive_object(io, t, b, d->live, &recv[i], err, err_size);
        }
        wire_msg_free(m);
        m = NULL;
        stats->tables_received++;
    }
    if (r == 0 && !dry_run)
        r = write_manifest(d, generation, b, &live, recv, need, err, err_size);
    if (r == 0) {
        log_info("database: %zu of %zu objects changed, %" PRIu64 " rows imported into %s", n_need,
                 b->n_tables, stats->rows_received, d->stage);
        fault_point("controller.db.verified");
    }
    wire_msg_free(m);
    manifest_clear(&live);
    for (size_t i = 0; recv && i < b->n_tables; i++) {
        free(recv[i].sql);
        free(recv[i].sql_mode);
        free(recv[i].cs);
        free(recv[i].coll);
        free(recv[i].chunks);
    }
    free(recv);
    for (size_t i = 0; want && i < b->n_tables; i++) {
        char ignored[16];
        copier_join(&want[i], ignored, sizeof(ignored)); /* before the stage can be dropped */
        free(want[i].ids);
    }
    free(want);
    wire_msg_free(digests_msg);
    free(sums);
    free(ask);
    free(need);
    free(got);
    free(names);
    return r;
}

void dbrecv_abort(dbrecv_t *d)
{
    char err[512];
    if (d && d->stage[0] &&
        execf(d, err, sizeof(err), "DROP DATABASE IF EXISTS `%s`", d->stage) < 0)
        log_warn("database: cannot drop the staging schema: %s", err);
}

/* ---- the switch ---- */

static bool in_names(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i], s))
            return true;
    return false;
}

/* Lists base tables of a schema other than L (the staging schema), markers excluded. */
static int list_tables(dbrecv_t *d, const char *schema, char ***ret, size_t *ret_n, char *err,
                       size_t err_size)
{
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v, **names = NULL;
    unsigned long *len;
    size_t n = 0;
    int r = buf_append_str(&q, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                               "TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    if (r == 0)
        r = ctldb_query(d->db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    buf_free(&q);
    if (r < 0)
        return r;
    while (r == 0 && ctldb_res_next(res, &v, &len) == 1) {
        if (!strncmp(v[0], DBDDL_MARKER_PREFIX, strlen(DBDDL_MARKER_PREFIX)))
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(*nn));
        if (!nn || !(nn[n] = xstrndup(v[0], len[0]))) {
            names = nn ? nn : names;
            r = UV_ENOMEM;
            break;
        }
        names = nn;
        n++;
    }
    ctldb_res_free(res);
    *ret = names;
    *ret_n = n;
    return r;
}

/* Makes generation gen's database live: its tables wait in schema `from` with its manifest;
 * one RENAME moves them into L and what they displace (and the live manifest) into `to`.
 * Applying a new generation is from = L_new<gen>, to = L_old<gen>; undoing generation M back to
 * the generation before it is the same move the other way: from = L_old<M>, to = L_new<M>. */
static int apply(dbrecv_t *d, uint64_t gen, const char *from, const char *old, char *err,
                 size_t err_size)
{
    char marker[64];
    char **staged = NULL, **live_t = NULL, **live_t2 = NULL, **trg = NULL, **trg_t = NULL,
         **views = NULL, **views2 = NULL;
    size_t n_staged = 0, n_live = 0, n_trg = 0, n_views = 0;
    manifest_t m = {0}, prev = {0};
    uint64_t prev_gen = 0;
    buf_t q = BUF_INIT;
    bool any = false;
    int r;

    marker_name(marker, sizeof(marker), gen);
    r = load_manifest(d, from, gen, &m, err, err_size);
    if (r == 0)
        r = live_generation(d, &prev_gen, err, err_size);
    if (r == 0)
        r = load_manifest(d, d->meta, prev_gen, &prev, err, err_size);
    if (r == 0)
        r = list_tables(d, from, &staged, &n_staged, err, err_size);
    if (r == 0)
        r = list_live(d, WIRE_TABLE_BASE, &live_t, &live_t2, &n_live, err, err_size);
    if (r == 0)
        r = list_live(d, WIRE_TABLE_TRIGGER, &trg, &trg_t, &n_trg, err, err_size);
    if (r == 0)
        r = list_live(d, WIRE_TABLE_VIEW, &views, &views2, &n_views, err, err_size);
    if (r == 0)
        r = execf(d, err, err_size, "CREATE DATABASE IF NOT EXISTS `%s`", old);
    /* Triggers of tables that move out, and triggers that changed or went away. */
    for (size_t i = 0; r == 0 && i < n_trg; i++) {
        const mentry_t *now = manifest_find(&m, WIRE_TABLE_TRIGGER, trg[i]);
        const mentry_t *was = manifest_find(&prev, WIRE_TABLE_TRIGGER, trg[i]);
        bool moves =
            in_names(staged, n_staged, trg_t[i]) || !manifest_find(&m, WIRE_TABLE_BASE, trg_t[i]);
        if (!moves && now && was && now->digest_len == was->digest_len &&
            !memcmp(now->digest, was->digest, now->digest_len))
            continue;
        buf_reset(&q);
        r = buf_append_str(&q, "DROP TRIGGER IF EXISTS ");
        if (r == 0)
            r = qname(&q, d->live, trg[i]);
        if (r == 0)
            r = exec_buf(d, &q, err, err_size);
    }
    /* A view whose name a table of this generation takes. */
    for (size_t i = 0; r == 0 && i < n_views; i++) {
        if (!in_names(staged, n_staged, views[i]))
            continue;
        buf_reset(&q);
        r = buf_append_str(&q, "DROP VIEW IF EXISTS ");
        if (r == 0)
            r = qname(&q, d->live, views[i]);
        if (r == 0)
            r = exec_buf(d, &q, err, err_size);
    }
    buf_reset(&q);
    if (r == 0)
        r = buf_append_str(&q, "RENAME TABLE ");
    for (size_t i = 0; r == 0 && i < n_live; i++) {
        if (!in_names(staged, n_staged, live_t[i]) && manifest_find(&m, WIRE_TABLE_BASE, live_t[i]))
            continue; /* unchanged: stays */
        r = buf_append_str(&q, any ? ", " : "");
        if (r == 0)
            r = qname(&q, d->live, live_t[i]);
        if (r == 0)
            r = buf_append_str(&q, " TO ");
        if (r == 0)
            r = qname(&q, old, live_t[i]);
        any = true;
    }
    for (size_t i = 0; r == 0 && i < n_staged; i++) {
        r = buf_append_str(&q, any ? ", " : "");
        if (r == 0)
            r = qname(&q, from, staged[i]);
        if (r == 0)
            r = buf_append_str(&q, " TO ");
        if (r == 0)
            r = qname(&q, d->live, staged[i]);
        any = true;
    }
    if (r == 0 && prev_gen) {
        char pm[64];
        marker_name(pm, sizeof(pm), prev_gen);
        r = buf_append_str(&q, any ? ", " : "");
        if (r == 0)
            r = qname(&q, d->meta, pm);
        if (r == 0)
            r = buf_append_str(&q, " TO ");
        if (r == 0)
            r = qname(&q, old, pm);
        any = true;
    }
    if (r == 0)
        r = buf_append_str(&q, any ? ", " : "");
    if (r == 0)
        r = qname(&q, from, marker);
    if (r == 0)
        r = buf_append_str(&q, " TO ");
    if (r == 0)
        r = qname(&q, d->meta, marker);
    if (r == 0)
        r = exec_buf(d, &q, err, err_size);
    if (r == 0) {
        fault_point("controller.db.renamed");
        r = ensure_objects(d, &m, err, err_size);
    }
    if (r == 0) {
        log_info("database: generation %" PRIu64 " is live (%zu tables moved in)", gen, n_staged);
        if (execf(d, err, err_size, "DROP DATABASE IF EXISTS `%s`", from) < 0) /* empty now */
            log_warn("database: cannot drop %s: %s", from, err);
    }
    buf_free(&q);
    free_names(staged, n_staged);
    free_names(live_t, n_live);
    free_names(live_t2, n_live);
    free_names(trg, n_trg);
    free_names(trg_t, n_trg);
    free_names(views, n_views);
    free_names(views2, n_views);
    manifest_clear(&m);
    manifest_clear(&prev);
    return r;
}

static int on_switch_db(void *ctx, uint64_t gen, char *err, size_t err_size)
{
    dbrecv_t *d = ctx;
    char marker[64], from[96], to[96];
    uint64_t cur = 0, prev = 0;
    manifest_t m = {0};
    int r = reconnect(d, err, err_size);
    if (r < 0)
        return r;

    marker_name(marker, sizeof(marker), gen);
    r = table_exists(d, d->meta, marker, err, err_size);
    if (r == 1) { /* already live (recovery): make sure its views and triggers are there */
        r = load_manifest(d, d->meta, gen, &m, err, err_size);
        if (r == 0)
            r = ensure_objects(d, &m, err, err_size);
        manifest_clear(&m);
        return r;
    }
    snprintf(from, sizeof(from), "%s_new%" PRIu64, d->live, gen);
    if (r == 0)
        r = table_exists(d, from, marker, err, err_size);
    if (r == 1) {
        snprintf(to, sizeof(to), "%s_old%" PRIu64, d->live, gen);
        return apply(d, gen, from, to, err, err_size);
    }
    /* Back to an older generation: undo the switches after it, newest first. */
    if (r == 0)
        r = live_generation(d, &cur, err, err_size);
    while (r == 0 && cur != gen) {
        snprintf(from, sizeof(from), "%s_old%" PRIu64, d->live, cur);
        snprintf(to, sizeof(to), "%s_new%" PRIu64, d->live, cur);
        r = marker_in(d, from, &prev, err, err_size);
        if (r == 0 && (prev == 0 || prev < gen)) {
            snprintf(err, err_size,
                     "the database cannot go back to generation %" PRIu64
                     ": what generation %" PRIu64
                     " replaced is no longer kept (or the target is newer than the live one)",
                     gen, cur);
            r = ERR_DB;
        }
        if (r == 0)
            r = apply(d, prev, from, to, err, err_size);
        cur = prev;
    }
    return r;
}

static int on_db_is_live(void *ctx, uint64_t gen)
{
    dbrecv_t *d = ctx;
    char marker[64], err[256];
    int r = reconnect(d, err, sizeof(err));
    if (r < 0)
        return r;
    marker_name(marker, sizeof(marker), gen);
    return table_exists(d, d->meta, marker, err, sizeof(err));
}

/* After a switch: the live generation's dump (once), and dumps past [retention] days. */
static void write_dump(dbrecv_t *d)
{
    char err[512] = "", path[4200];
    uint64_t gen = 0;

    if (!d->dumps_dir || live_generation(d, &gen, err, sizeof(err)) < 0 || gen == 0)
        return;
    snprintf(path, sizeof(path), "%s/gen%" PRIu64 ".sql.zst", d->dumps_dir, gen);
    if (access(path, F_OK) != 0) {
        fault_point("controller.dump");
        if (dumps_write(d->db, d->live, d->dumps_dir, gen, err, sizeof(err)) < 0)
            log_warn("database: the dump of generation %" PRIu64 " was not kept: %s", gen, err);
        session_setup(d, err, sizeof(err));
    }
    int n = dumps_prune(d->dumps_dir, d->dump_days);
    if (n > 0)
        log_info("database: %d dumps older than %u days removed", n, d->dump_days);
}

static void on_prune(void *ctx, uint64_t oldest_kept)
{
    dbrecv_t *d = ctx;
    char err[512], prefix[96];

    write_dump(d);
    buf_t q = BUF_INIT;
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *len;

    snprintf(prefix, sizeof(prefix), "%s_", d->live);
    if (buf_append_str(&q, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA") < 0 ||
        ctldb_query(d->db, (const char *)buf_data(&q), q.len, &res, err, sizeof(err)) < 0) {
        buf_free(&q);
        return;
    }
    buf_free(&q);
    while (ctldb_res_next(res, &v, &len) == 1) {
        char *end;
        const char *rest = v[0] ? v[0] + strlen(prefix) : NULL;
        if (!v[0] || strncmp(v[0], prefix, strlen(prefix)) != 0 ||
            (strncmp(rest, "old", 3) != 0 && strncmp(rest, "new", 3) != 0))
            continue;
        uint64_t g = strtoull(rest + 3, &end, 10);
        if (*end || g == 0 || g > oldest_kept)
            continue;
        if (execf(d, err, sizeof(err), "DROP DATABASE IF EXISTS `%s`", v[0]) < 0)
            log_warn("database: cannot drop %s: %s", v[0], err);
    }
    ctldb_res_free(res);
}

/* ---- wp-config.php ---- */

int dbrecv_prepare_wpconfig(dbrecv_t *d, int root_fd, char *err, size_t err_size)
{
    static const char tmp[] = ".wp-config.php.understudy";
    dbddl_wp_t vals = {d->live, d->user, d->password, d->host_setting, !d->wp_cron};
    buf_t in = BUF_INIT, out = BUF_INIT;
    struct stat st;
    int fd, r = 0;

    fd = openat(root_fd, "wp-config.php", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0; /* no wp-config.php in this tree: nothing to rewrite */
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (size_t)st.st_size > DBRECV_MAX_WPCONFIG) {
        snprintf(err, err_size, "wp-config.php: cannot read it (%s)",
                 fd < 0 ? strerror(errno) : "not a regular file of at most 1 MiB");
        if (fd >= 0)
            close(fd);
        return ERR_WPCONFIG;
    }
    uint8_t *p = buf_reserve(&in, (size_t)st.st_size + 1);
    ssize_t n = p ? read(fd, p, (size_t)st.st_size + 1) : -1;
    close(fd);
    if (n < 0 || n > st.st_size) {
        snprintf(err, err_size, "wp-config.php: read failed");
        buf_free(&in);
        return ERR_WPCONFIG;
    }
    buf_commit(&in, (size_t)n);
    r = dbddl_rewrite_wpconfig((const char *)buf_data(&in), in.len, &vals, &out, err, err_size);
    buf_free(&in);
    if (r < 0) {
        buf_free(&out);
        return ERR_WPCONFIG;
    }
    unlinkat(root_fd, tmp, 0);
    fd = openat(root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                st.st_mode & 07777);
    if (fd < 0 || (fchown(fd, st.st_uid, st.st_gid) < 0 && errno != EPERM) ||
        fchmod(fd, st.st_mode & 07777) < 0 ||
        write(fd, buf_data(&out), out.len) != (ssize_t)out.len || fsync(fd) < 0) {
        snprintf(err, err_size, "wp-config.php: cannot write the rewritten file: %s",
                 strerror(errno));
        r = ERR_WPCONFIG;
    }
    if (fd >= 0)
        close(fd);
    if (r == 0 && renameat(root_fd, tmp, root_fd, "wp-config.php") < 0) {
        snprintf(err, err_size, "wp-config.php: rename failed: %s", strerror(errno));
        r = ERR_WPCONFIG;
    }
    if (r < 0)
        unlinkat(root_fd, tmp, 0);
    buf_free(&out);
    return r;
}

static int on_prepare(void *ctx, uint64_t gen, int root_fd, char *err, size_t err_size)
{
    return dbrecv_prepare_wpconfig(ctx, root_fd, err, err_size);
}

gen_hooks_t dbrecv_hooks(dbrecv_t *d)
{
    gen_hooks_t h = {
        .prepare = on_prepare,
        .switch_db = on_switch_db,
        .db_is_live = on_db_is_live,
        .prune = on_prune,
        .ctx = d,
    };
    return h;
}
