/* Retained database dumps (see dumps.h) and the `dumps` command. */
#include "dumps.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <zstd.h>

#include "buf.h"
#include "controller.h"
#include "db.h"
#include "dbddl.h"
#include "err.h"
#include "log.h"

#define DUMPS_STMT_BYTES (1u << 20) /* INSERT statements stay below this (net_buffer_length) */

/* ---- a zstd-compressed file ---- */

typedef struct zout {
    FILE *f;
    ZSTD_CCtx *cctx;
    buf_t in;
    uint8_t out[1 << 16];
    int error;
} zout_t;

static int zout_flush(zout_t *z, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer in = {buf_data(&z->in), z->in.len, 0};
    size_t left;

    do {
        ZSTD_outBuffer out = {z->out, sizeof(z->out), 0};
        left = ZSTD_compressStream2(z->cctx, &out, &in, mode);
        if (ZSTD_isError(left))
            return UV_EIO;
        if (out.pos && fwrite(z->out, 1, out.pos, z->f) != out.pos)
            return UV_EIO;
    } while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
    buf_reset(&z->in);
    return 0;
}

static int zout_put(zout_t *z, const void *p, size_t n)
{
    if (z->error)
        return z->error;
    if (buf_append(&z->in, p, n) < 0)
        return z->error = UV_ENOMEM;
    if (z->in.len >= (1u << 17) && (z->error = zout_flush(z, ZSTD_e_continue)) < 0)
        return z->error;
    return 0;
}

static int zout_str(zout_t *z, const char *s)
{
    return zout_put(z, s, strlen(s));
}

/* ---- SQL text ---- */

static int put_quoted(zout_t *z, const char *p, size_t n)
{
    char tmp[2];
    size_t start = 0;
    zout_put(z, "'", 1);
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        char e = c == 0      ? '0'
                 : c == '\n' ? 'n'
                 : c == '\r' ? 'r'
                 : c == '\\' ? '\\'
                 : c == '\'' ? '\''
                 : c == 0x1a ? 'Z'
                             : 0;
        if (!e)
            continue;
        zout_put(z, p + start, i - start);
        tmp[0] = '\\';
        tmp[1] = e;
        zout_put(z, tmp, 2);
        start = i + 1;
    }
    zout_put(z, p + start, n - start);
    return zout_put(z, "'", 1);
}

static int put_hex(zout_t *z, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char tmp[2];
    if (n == 0)
        return zout_put(z, "''", 2);
    zout_put(z, "0x", 2);
    for (size_t i = 0; i < n; i++) {
        tmp[0] = hex[p[i] >> 4];
        tmp[1] = hex[p[i] & 15];
        zout_put(z, tmp, 2);
    }
    return z->error;
}

/* Removes DEFINER=`user`@`host` (and the blank after it) from a SHOW CREATE text. */
static void strip_definer(char *s)
{
    char *d = strstr(s, "DEFINER=`");
    if (!d)
        return;
    char *p = d + 8;
    for (int part = 0; part < 2; part++) {
        if (*p != '`')
            return;
        for (p++; *p && !(*p == '`' && p[1] != '`'); p++)
            if (*p == '`')
                p++;
        if (!*p)
            return;
        p++;
        if (part == 0 && *p++ != '@')
            return;
    }
    while (*p == ' ')
        p++;
    memmove(d, p, strlen(p) + 1);
}

/* Runs a one-row query and returns a copy of column col of its row (NULL on failure). */
static char *one_value(MYSQL *db, const char *sql, size_t len, unsigned col, char *err,
                       size_t err_size)
{
    ctldb_res_t *res;
    char **v, *out = NULL;
    unsigned long *l;
    if (ctldb_query(db, sql, len, &res, err, err_size) < 0)
        return NULL;
    if (ctldb_res_fields(res) > col && ctldb_res_next(res, &v, &l) == 1 && v[col])
        out = strndup(v[col], l[col]);
    ctldb_res_free(res);
    return out;
}

typedef struct obj {
    char *name, *type, *extra; /* type: BASE TABLE, VIEW, TRIGGER, PROCEDURE, FUNCTION, EVENT;
                                * extra: the sql_mode of a trigger, routine or event */
} obj_t;

static int list_objects(MYSQL *db, const char *schema, obj_t **ret, size_t *ret_n, char *err,
                        size_t err_size)
{
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v;
    unsigned long *l;
    obj_t *o = NULL;
    size_t n = 0;
    int r = buf_append_str(&q, "SELECT TABLE_NAME, TABLE_TYPE, '' FROM information_schema.TABLES "
                               "WHERE TABLE_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    if (r == 0)
        r = buf_append_str(&q, " UNION ALL SELECT TRIGGER_NAME, 'TRIGGER', SQL_MODE FROM "
                               "information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    /* Stored procedures, functions and events ([database] routines = yes on the agent). */
    if (r == 0)
        r = buf_append_str(&q, " UNION ALL SELECT ROUTINE_NAME, ROUTINE_TYPE, SQL_MODE FROM "
                               "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    if (r == 0)
        r = buf_append_str(&q, " UNION ALL SELECT EVENT_NAME, 'EVENT', SQL_MODE FROM "
                               "information_schema.EVENTS WHERE EVENT_SCHEMA = ");
    if (r == 0)
        r = dbddl_literal(&q, schema);
    if (r == 0)
        r = ctldb_query(db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    buf_free(&q);
    if (r < 0)
        return r;
    while (r == 0 && ctldb_res_next(res, &v, &l) == 1) {
        obj_t *no = realloc(o, (n + 1) * sizeof(*no));
        if (!no) {
            r = UV_ENOMEM;
            break;
        }
        o = no;
        o[n].name = strndup(v[0], l[0]);
        o[n].type = strndup(v[1], l[1]);
        o[n].extra = strndup(v[2] ? v[2] : "", v[2] ? l[2] : 0);
        n++;
    }
    ctldb_res_free(res);
    *ret = o;
    *ret_n = n;
    return r;
}

static int dump_rows(MYSQL *db, zout_t *z, const char *name, char *err, size_t err_size)
{
    buf_t q = BUF_INIT;
    ctldb_res_t *res;
    char **v;
    unsigned long *l;
    size_t stmt = 0;
    int r = buf_append_str(&q, "SELECT * FROM ");

    if (r == 0)
        r = dbddl_ident(&q, name);
    if (r == 0)
        r = ctldb_stream(db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    if (r < 0) {
        buf_free(&q);
        return r;
    }
    unsigned nf = ctldb_res_fields(res);
    buf_reset(&q);
    dbddl_ident(&q, name);
    while (ctldb_res_next(res, &v, &l) == 1) {
        if (stmt == 0) {
            zout_str(z, "INSERT INTO ");
            zout_put(z, buf_data(&q), q.len);
            zout_str(z, " VALUES (");
        } else {
            zout_str(z, ",(");
        }
        size_t before = z->in.len;
        for (unsigned i = 0; i < nf; i++) {
            if (i)
                zout_put(z, ",", 1);
            if (!v[i])
                zout_str(z, "NULL");
            else if (ctldb_res_binary(res, i))
                put_hex(z, (const unsigned char *)v[i], l[i]);
            else if (ctldb_res_numeric(res, i))
                zout_put(z, v[i], l[i]);
            else
                put_quoted(z, v[i], l[i]);
        }
        zout_put(z, ")", 1);
        stmt += z->in.len > before ? z->in.len - before : l[0];
        if (stmt >= DUMPS_STMT_BYTES) {
            zout_str(z, ";\n");
            stmt = 0;
        }
    }
    if (stmt)
        zout_str(z, ";\n");
    r = ctldb_res_failed(res, err, err_size) ? ERR_DB : z->error;
    ctldb_res_free(res);
    buf_free(&q);
    return r;
}

/* Column values of SHOW CREATE ... : 1 for tables and views, 2 for triggers, procedures and
 * functions (and an event's time zone), 3 for events. */
static char *show_create(MYSQL *db, const char *what, const char *name, unsigned col, char *err,
                         size_t err_size)
{
    buf_t q = BUF_INIT;
    char *s = NULL;
    if (buf_printf(&q, "SHOW CREATE %s ", what) == 0 && dbddl_ident(&q, name) == 0)
        s = one_value(db, (const char *)buf_data(&q), q.len, col, err, err_size);
    buf_free(&q);
    if (s)
        strip_definer(s);
    return s;
}

/* A procedure, function or event: its statement between DELIMITER ;; lines, under its own
 * sql_mode (and an event under its time zone, then back to UTC). */
static int put_compound(MYSQL *db, zout_t *z, const char *type, const char *name,
                        const char *sql_mode, char *err, size_t err_size)
{
    bool event = !strcmp(type, "EVENT");
    char *ct = show_create(db, type, name, event ? 3 : 2, err, err_size);
    char *tz = event ? show_create(db, type, name, 2, err, err_size) : NULL;
    if (!ct || (event && !tz)) {
        free(ct);
        free(tz);
        return ERR_DB;
    }
    zout_str(z, "\nSET sql_mode = '");
    zout_str(z, sql_mode);
    zout_str(z, "';\n");
    bool tz_ok = tz && tz[0] && strlen(tz) < 64 &&
                 strspn(tz, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"
                            "klmnopqrstuvwxyz0123456789_/:+-") == strlen(tz);
    if (tz_ok) {
        zout_str(z, "SET time_zone = '");
        zout_str(z, tz);
        zout_str(z, "';\n");
    }
    /* The client character set it was written in, as mariadb-dump does. */
    char *cs = show_create(db, type, name, event ? 4 : 3, err, err_size);
    char *coll = show_create(db, type, name, event ? 5 : 4, err, err_size);
    bool names = cs && coll && dbddl_charset_ok(cs) && dbddl_charset_ok(coll);
    if (names) {
        zout_str(z, "SET NAMES ");
        zout_str(z, cs);
        zout_str(z, " COLLATE ");
        zout_str(z, coll);
        zout_str(z, ";\n");
    }
    free(cs);
    free(coll);
    zout_str(z, "DELIMITER ;;\n");
    zout_str(z, ct);
    zout_str(z, ";;\nDELIMITER ;\nSET sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n");
    if (names)
        zout_str(z, "SET NAMES utf8mb4;\n");
    if (tz_ok)
        zout_str(z, "SET time_zone = '+00:00';\n");
    free(ct);
    free(tz);
    return z->error;
}

static int write_body(MYSQL *db, zout_t *z, const char *schema, uint64_t gen, char *err,
                      size_t err_size)
{
    obj_t *o = NULL;
    size_t n = 0;
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    int r;

    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    r = list_objects(db, schema, &o, &n, err, err_size);
    zout_str(z, "-- understudy: the database of generation ");
    char num[32];
    snprintf(num, sizeof(num), "%" PRIu64, gen);
    zout_str(z, num);
    zout_str(z, " (schema ");
    zout_str(z, schema);
    zout_str(z, "), written ");
    zout_str(z, when);
    zout_str(z, "\n-- restore: zstd -dc FILE | mariadb DATABASE\n"
                "SET NAMES utf8mb4;\nSET time_zone = '+00:00';\n"
                "SET foreign_key_checks = 0, unique_checks = 0;\n"
                "SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n");
    /* Tables, then views (those using other views last, by repeated passes), then triggers. */
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (strcmp(o[i].type, "BASE TABLE") != 0)
            continue;
        char *ct = show_create(db, "TABLE", o[i].name, 1, err, err_size);
        if (!ct) {
            r = ERR_DB;
            break;
        }
        buf_t q = BUF_INIT;
        dbddl_ident(&q, o[i].name);
        zout_str(z, "\nDROP TABLE IF EXISTS ");
        zout_put(z, buf_data(&q), q.len);
        zout_str(z, ";\n");
        zout_str(z, ct);
        zout_str(z, ";\n");
        buf_free(&q);
        free(ct);
        r = dump_rows(db, z, o[i].name, err, err_size);
    }
    /* Procedures and functions before the views (a view may call a function). */
    for (size_t i = 0; r == 0 && i < n; i++) {
        if ((strcmp(o[i].type, "PROCEDURE") && strcmp(o[i].type, "FUNCTION")) ||
            !dbddl_sql_mode_ok(o[i].extra))
            continue;
        r = put_compound(db, z, o[i].type, o[i].name, o[i].extra, err, err_size);
    }
    bool *done = calloc(n + 1, sizeof(*done));
    size_t pending = 0;
    for (size_t i = 0; i < n; i++)
        pending += !strcmp(o[i].type, "VIEW");
    for (int pass = 0; r == 0 && pending && pass < 64 && done; pass++) {
        for (size_t i = 0; r == 0 && i < n; i++) {
            if (done[i] || strcmp(o[i].type, "VIEW") != 0)
                continue;
            char *cv = show_create(db, "VIEW", o[i].name, 1, err, err_size);
            if (!cv) {
                r = ERR_DB;
                break;
            }
            bool waits = false; /* uses a view not written yet */
            for (size_t j = 0; j < n && !waits; j++) {
                if (j == i || done[j] || strcmp(o[j].type, "VIEW") != 0)
                    continue;
                buf_t q = BUF_INIT;
                dbddl_ident(&q, o[j].name);
                buf_append(&q, "", 1);
                waits = strstr(cv, (const char *)buf_data(&q)) != NULL && pass < 63;
                buf_free(&q);
            }
            if (!waits) {
                zout_str(z, "\n");
                zout_str(z, cv);
                zout_str(z, ";\n");
                done[i] = true;
                pending--;
            }
            free(cv);
        }
    }
    free(done);
    for (size_t i = 0; r == 0 && i < n; i++) {
        if (strcmp(o[i].type, "TRIGGER") != 0 || !dbddl_sql_mode_ok(o[i].extra))
            continue;
        char *ct = show_create(db, "TRIGGER", o[i].name, 2, err, err_size);
        if (!ct) {
            r = ERR_DB;
            break;
        }
        zout_str(z, "\nSET sql_mode = '");
        zout_str(z, o[i].extra);
        zout_str(z, "';\nDELIMITER ;;\n");
        zout_str(z, ct);
        zout_str(z, ";;\nDELIMITER ;\n");
        free(ct);
    }
    for (size_t i = 0; r == 0 && i < n; i++)
        if (!strcmp(o[i].type, "EVENT") && dbddl_sql_mode_ok(o[i].extra))
            r = put_compound(db, z, "EVENT", o[i].name, o[i].extra, err, err_size);
    for (size_t i = 0; i < n; i++) {
        free(o[i].name);
        free(o[i].type);
        free(o[i].extra);
    }
    free(o);
    return r < 0 ? r : z->error;
}

int dumps_write(MYSQL *db, const char *schema, const char *dir, uint64_t gen, char *err,
                size_t err_size)
{
    char path[4096], tmp[4096], use[160];
    zout_t z = {0};
    int r, n;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, err_size, "cannot create %s: %s", dir, strerror(errno));
        return -errno;
    }
    snprintf(path, sizeof(path), "%s/gen%" PRIu64 ".sql.zst", dir, gen);
    snprintf(tmp, sizeof(tmp), "%s/.gen%" PRIu64 ".sql.zst.tmp", dir, gen);
    n = snprintf(use, sizeof(use), "USE `%s`", schema);
    r = ctldb_exec(db, use, (size_t)n, err, err_size);
    if (r < 0)
        return r;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    z.f = fd >= 0 ? fdopen(fd, "w") : NULL;
    z.cctx = ZSTD_createCCtx();
    buf_init(&z.in, 0);
    if (!z.f || !z.cctx) {
        snprintf(err, err_size, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0 && !z.f)
            close(fd);
        r = UV_EIO;
    }
    if (r == 0) {
        ZSTD_CCtx_setParameter(z.cctx, ZSTD_c_compressionLevel, 3);
        r = write_body(db, &z, schema, gen, err, err_size);
    }
    if (r == 0)
        r = zout_flush(&z, ZSTD_e_end);
    if (r == 0 && (fflush(z.f) != 0 || fsync(fileno(z.f)) != 0))
        r = UV_EIO;
    if (z.f && fclose(z.f) != 0 && r == 0)
        r = UV_EIO;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        if (!err[0] || r == UV_EIO)
            snprintf(err, err_size, "writing %s failed: %s", path, err_str(r));
        unlink(tmp);
    }
    ZSTD_freeCCtx(z.cctx);
    buf_free(&z.in);
    return r;
}

/* ---- listing and pruning ---- */

typedef struct dump_file {
    uint64_t gen;
    time_t mtime;
    off_t size;
} dump_file_t;

static int cmp_gen(const void *a, const void *b)
{
    const dump_file_t *x = a, *y = b;
    return x->gen < y->gen ? 1 : x->gen > y->gen ? -1 : 0;
}

/* Lists dir's dumps, newest generation first. */
static int list_dumps(const char *dir, dump_file_t **ret, size_t *ret_n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    dump_file_t *v = NULL;
    size_t n = 0;

    *ret = NULL;
    *ret_n = 0;
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    while ((e = readdir(d))) {
        char *end;
        struct stat st;
        if (strncmp(e->d_name, "gen", 3) != 0)
            continue;
        uint64_t g = strtoull(e->d_name + 3, &end, 10);
        if (strcmp(end, ".sql.zst") != 0 || fstatat(dirfd(d), e->d_name, &st, 0) < 0)
            continue;
        dump_file_t *nv = realloc(v, (n + 1) * sizeof(*nv));
        if (!nv)
            break;
        v = nv;
        v[n++] = (dump_file_t){g, st.st_mtime, st.st_size};
    }
    closedir(d);
    qsort(v, n, sizeof(*v), cmp_gen);
    *ret = v;
    *ret_n = n;
    return 0;
}

int dumps_prune(const char *dir, unsigned days)
{
    dump_file_t *v;
    size_t n;
    int removed = 0, r = list_dumps(dir, &v, &n);
    time_t limit = time(NULL) - (time_t)days * 86400;

    if (r < 0)
        return r;
    for (size_t i = 1; i < n; i++) { /* v[0], the newest, stays */
        char path[4096];
        if (v[i].mtime >= limit)
            continue;
        snprintf(path, sizeof(path), "%s/gen%" PRIu64 ".sql.zst", dir, v[i].gen);
        removed += unlink(path) == 0;
    }
    free(v);
    /* A dump cut short by a crash stays as its temporary file; none is being written now
     * (dumps are written and pruned by the same thread). */
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        uint64_t gen;
        char rest[16];
        if (sscanf(e->d_name, ".gen%" SCNu64 ".sql.zst%15s", &gen, rest) == 2 &&
            !strcmp(rest, ".tmp"))
            (void)unlinkat(dirfd(d), e->d_name, 0);
    }
    if (d)
        closedir(d);
    return removed;
}

int cmd_dumps(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    cfg_t *cfg;
    dump_file_t *v;
    size_t n;
    char dir[4096];
    int opt, r;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (opt == 'c') {
            config = optarg;
        } else {
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: understudy-controller dumps --config FILE\n"
                    "Lists the retained database dumps, newest first. Restore one with:\n"
                    "  zstd -dc FILE | mariadb DATABASE\n");
            return opt == 'h' ? 0 : err_exit_code(ERR_USAGE);
        }
    }
    if (!config || optind != argc) {
        log_error("needs --config FILE; see --help");
        return err_exit_code(ERR_USAGE);
    }
    r = controller_load_config(config, &cfg);
    if (r < 0)
        return err_exit_code(r);
    snprintf(dir, sizeof(dir), "%s/dumps", cfg_get(cfg, "site", "data"));
    unsigned days = (unsigned)cfg_get_uint(cfg, "retention", "days", 5);
    cfg_free(cfg);
    r = list_dumps(dir, &v, &n);
    if (r < 0) {
        log_error("cannot list %s: %s", dir, err_str(r));
        return err_exit_code(r);
    }
    printf("%-12s %-20s %12s  %s\n", "GENERATION", "WRITTEN (UTC)", "BYTES", "FILE");
    for (size_t i = 0; i < n; i++) {
        char when[32];
        struct tm tm;
        gmtime_r(&v[i].mtime, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        printf("%-12" PRIu64 " %-20s %12lld  %s/gen%" PRIu64 ".sql.zst\n", v[i].gen, when,
               (long long)v[i].size, dir, v[i].gen);
    }
    if (n == 0)
        printf("(no dumps in %s; kept for %u days after each applied sync)\n", dir, days);
    free(v);
    return 0;
}
