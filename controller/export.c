/* understudy-controller export-local-changes DIR: what was written on the backup since the live
 * generation went live, in a form to carry back to the primary (failback). Never modifies the
 * backup: it only creates and drops a scratch schema L_export next to the live one.
 *
 *   DIR/database.sql  rows inserted, updated and deleted per table, found by primary key (whole
 *                     rows for tables without one) against the applied snapshot — the retained
 *                     dump of the live generation (data/dumps/gen<N>.sql.zst) restored into
 *                     L_export — as INSERT / UPDATE ... WHERE pk / DELETE ... WHERE pk in one
 *                     transaction; values as hex literals; the drift signal's ignore rules apply
 *   DIR/files/        new and changed files of the live tree, at their paths
 *   DIR/deleted.txt   files deleted on the backup, one path per line
 *   DIR/README.txt    how to apply it on the primary
 * Files are compared with the live generation's manifest by kind, size and mtime (as the file
 * drift signal does without hash_files); wp-config.php, wp-content/cache/, wp-content/upgrade/
 * and [guard] ignore_path are left out.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "controller.h"
#include "db.h"
#include "dbdrift.h"
#include "err.h"
#include "fsutil.h"
#include "log.h"
#include "manifest.h"

#define EXPORT_MAX_COLS 4096

typedef struct ex {
    const cfg_t *cfg;
    MYSQL *db;
    const char *live, *dir;
    char scratch[96];
    char prefix[72];
    dbdrift_rules_t rules;
    FILE *sql;
    uint64_t inserted, updated, deleted;
    char err[3 * PATH_MAX];
} ex_t;

/* ---- SQL text ---------------------------------------------------------------------------- */

static void put_ident(FILE *f, const char *s)
{
    fputc('`', f);
    for (; *s; s++) {
        if (*s == '`')
            fputc('`', f);
        fputc(*s, f);
    }
    fputc('`', f);
}

static int buf_ident(buf_t *b, const char *s)
{
    int r = buf_append_str(b, "`");
    for (; r == 0 && *s; s++)
        r = buf_append(b, s, 1) || (*s == '`' && buf_append(b, s, 1)) ? UV_ENOMEM : 0;
    return r ? r : buf_append_str(b, "`");
}

/* A value as SQL: NULL, a number as is, bytes as X'..', text as _utf8mb4 X'..'. */
static void put_value(FILE *f, const ctldb_res_t *res, unsigned i, const char *v, unsigned long len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!v) {
        fputs("NULL", f);
        return;
    }
    if (ctldb_res_numeric(res, i)) {
        fwrite(v, 1, len, f);
        return;
    }
    fputs(ctldb_res_binary(res, i) ? "X'" : "_utf8mb4 X'", f);
    for (unsigned long k = 0; k < len; k++) {
        fputc(hex[(unsigned char)v[k] >> 4], f);
        fputc(hex[(unsigned char)v[k] & 15], f);
    }
    fputc('\'', f);
}

/* ---- one table --------------------------------------------------------------------------- */

typedef struct cols {
    char **name;
    bool *pk;
    size_t n, n_pk;
} cols_t;

static void cols_free(cols_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->name[i]);
    free(c->name);
    free(c->pk);
    memset(c, 0, sizeof(*c));
}

static int exec_buf(ex_t *x, buf_t *q, ctldb_res_t **res)
{
    return ctldb_stream(x->db, (const char *)buf_data(q), q->len, res, x->err, sizeof(x->err));
}

/* The stored (not generated) columns of schema.table with their primary key flags. */
static int load_cols(ex_t *x, const char *schema, const char *table, cols_t *c)
{
    buf_t q;
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *l;
    buf_init(&q, 0);
    int r = buf_printf(&q,
                       "SELECT COLUMN_NAME, COLUMN_KEY = 'PRI' FROM information_schema.COLUMNS "
                       "WHERE TABLE_SCHEMA = '%s' AND TABLE_NAME = ",
                       schema);
    /* table names come from the server; quote them as a literal */
    if (r == 0)
        r = buf_append_str(&q, "'");
    for (const char *p = table; r == 0 && *p; p++)
        r = *p == '\''   ? buf_append_str(&q, "''")
            : *p == '\\' ? buf_append_str(&q, "\\\\")
                         : buf_append(&q, p, 1);
    if (r == 0)
        r = buf_append_str(&q, "' AND EXTRA NOT LIKE '%GENERATED%' ORDER BY ORDINAL_POSITION");
    if (r == 0)
        r = ctldb_query(x->db, (const char *)buf_data(&q), q.len, &res, x->err, sizeof(x->err));
    buf_free(&q);
    if (r < 0)
        return r;
    while (ctldb_res_next(res, &v, &l) == 1 && c->n < EXPORT_MAX_COLS) {
        if ((c->n & (c->n - 1)) == 0) {
            size_t cap = c->n ? c->n * 2 : 8;
            char **nn = realloc(c->name, cap * sizeof(*nn));
            bool *pp = nn ? realloc(c->pk, cap * sizeof(*pp)) : NULL;
            if (nn)
                c->name = nn;
            if (pp)
                c->pk = pp;
            if (!nn || !pp) {
                r = UV_ENOMEM;
                break;
            }
        }
        c->name[c->n] = strdup(v[0] ? v[0] : "");
        c->pk[c->n] = v[1] && v[1][0] == '1';
        c->n_pk += c->pk[c->n];
        c->n++;
    }
    ctldb_res_free(res);
    if (r < 0)
        snprintf(x->err, sizeof(x->err), "out of memory");
    return r;
}

/* Appends "a.`c1` <=> b.`c1` AND ..." over the key columns (all columns when binary: compared
 * byte for byte). */
static int match(buf_t *q, const cols_t *c, bool key_only, bool binary)
{
    bool first = true;
    int r = 0;
    for (size_t i = 0; i < c->n && r == 0; i++) {
        if (key_only && !c->pk[i])
            continue;
        r = buf_append_str(q, first ? "" : " AND ");
        first = false;
        if (r == 0)
            r = buf_append_str(q, binary ? "CAST(a." : "a.");
        if (r == 0)
            r = buf_ident(q, c->name[i]);
        if (r == 0)
            r = buf_append_str(q, binary ? " AS BINARY) <=> CAST(b." : " <=> b.");
        if (r == 0)
            r = buf_ident(q, c->name[i]);
        if (r == 0 && binary)
            r = buf_append_str(q, " AS BINARY)");
    }
    if (r == 0 && first)
        r = buf_append_str(q, "1");
    return r;
}

static int select_list(buf_t *q, const cols_t *c, const char *alias)
{
    int r = 0;
    for (size_t i = 0; i < c->n && r == 0; i++) {
        r = buf_printf(q, "%s%s.", i ? ", " : "", alias);
        if (r == 0)
            r = buf_ident(q, c->name[i]);
    }
    return r;
}

static int from(buf_t *q, const char *schema, const char *table, const char *alias)
{
    int r = buf_ident(q, schema);
    if (r == 0)
        r = buf_append_str(q, ".");
    if (r == 0)
        r = buf_ident(q, table);
    if (r == 0)
        r = buf_printf(q, " %s", alias);
    return r;
}

static int keep(ex_t *x, buf_t *q, const char *table, const char *alias)
{
    char clause[16384];
    int r = dbdrift_keep_clause(&x->rules, x->prefix, table, alias, clause, sizeof(clause));
    return r ? r : buf_append_str(q, clause);
}

/* Rows of `in` (alias a) with no matching row in `other` (alias b): inserts (in = live) or
 * deletes (in = snapshot). */
static int missing_rows(ex_t *x, const char *table, const cols_t *c, bool inserts)
{
    const char *in = inserts ? x->live : x->scratch, *other = inserts ? x->scratch : x->live;
    bool by_key = c->n_pk > 0;
    buf_t q;
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *l;
    buf_init(&q, 0);
    int r = buf_append_str(&q, "SELECT ");
    if (r == 0)
        r = select_list(&q, c, "a");
    if (r == 0)
        r = buf_append_str(&q, " FROM ");
    if (r == 0)
        r = from(&q, in, table, "a");
    if (r == 0)
        r = buf_append_str(&q, " WHERE ");
    if (r == 0)
        r = keep(x, &q, table, "a");
    if (r == 0)
        r = buf_append_str(&q, " AND NOT EXISTS (SELECT 1 FROM ");
    if (r == 0)
        r = from(&q, other, table, "b");
    if (r == 0)
        r = buf_append_str(&q, " WHERE ");
    if (r == 0)
        r = match(&q, c, by_key, !by_key);
    if (r == 0)
        r = buf_append_str(&q, ")");
    if (r == 0)
        r = exec_buf(x, &q, &res);
    buf_free(&q);
    if (r < 0)
        return r;
    while (ctldb_res_next(res, &v, &l) == 1) {
        if (inserts) {
            fputs("INSERT INTO ", x->sql);
            put_ident(x->sql, table);
            fputs(" (", x->sql);
            for (size_t i = 0; i < c->n; i++) {
                fputs(i ? ", " : "", x->sql);
                put_ident(x->sql, c->name[i]);
            }
            fputs(") VALUES (", x->sql);
            for (size_t i = 0; i < c->n; i++) {
                fputs(i ? ", " : "", x->sql);
                put_value(x->sql, res, (unsigned)i, v[i], l[i]);
            }
            fputs(");\n", x->sql);
            x->inserted++;
        } else {
            fputs("DELETE FROM ", x->sql);
            put_ident(x->sql, table);
            fputs(" WHERE ", x->sql);
            bool first = true;
            for (size_t i = 0; i < c->n; i++) {
                if (by_key && !c->pk[i])
                    continue;
                fputs(first ? "" : " AND ", x->sql);
                first = false;
                put_ident(x->sql, c->name[i]);
                fputs(" <=> ", x->sql);
                put_value(x->sql, res, (unsigned)i, v[i], l[i]);
            }
            fputs(by_key ? ";\n" : " LIMIT 1;\n", x->sql);
            x->deleted++;
        }
    }
    if (ctldb_res_failed(res, x->err, sizeof(x->err)))
        r = ERR_DB;
    ctldb_res_free(res);
    return r;
}

/* Rows present on both sides (by primary key) whose other columns differ. */
static int updated_rows(ex_t *x, const char *table, const cols_t *c)
{
    buf_t q;
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *l;
    buf_init(&q, 0);
    int r = buf_append_str(&q, "SELECT ");
    if (r == 0)
        r = select_list(&q, c, "a");
    if (r == 0)
        r = buf_append_str(&q, ", ");
    if (r == 0)
        r = select_list(&q, c, "b");
    if (r == 0)
        r = buf_append_str(&q, " FROM ");
    if (r == 0)
        r = from(&q, x->live, table, "a");
    if (r == 0)
        r = buf_append_str(&q, " JOIN ");
    if (r == 0)
        r = from(&q, x->scratch, table, "b");
    if (r == 0)
        r = buf_append_str(&q, " ON ");
    if (r == 0)
        r = match(&q, c, true, false);
    if (r == 0)
        r = buf_append_str(&q, " WHERE ");
    if (r == 0)
        r = keep(x, &q, table, "a");
    if (r == 0)
        r = buf_append_str(&q, " AND NOT (");
    if (r == 0)
        r = match(&q, c, false, true);
    if (r == 0)
        r = buf_append_str(&q, ")");
    if (r == 0)
        r = exec_buf(x, &q, &res);
    buf_free(&q);
    if (r < 0)
        return r;
    while (ctldb_res_next(res, &v, &l) == 1) {
        fputs("UPDATE ", x->sql);
        put_ident(x->sql, table);
        fputs(" SET ", x->sql);
        bool first = true;
        for (size_t i = 0; i < c->n; i++) {
            const char *a = v[i], *b = v[c->n + i];
            bool same = (!a && !b) || (a && b && l[i] == l[c->n + i] && !memcmp(a, b, l[i]));
            if (c->pk[i] || same)
                continue;
            fputs(first ? "" : ", ", x->sql);
            first = false;
            put_ident(x->sql, c->name[i]);
            fputs(" = ", x->sql);
            put_value(x->sql, res, (unsigned)i, a, l[i]);
        }
        fputs(" WHERE ", x->sql);
        first = true;
        for (size_t i = 0; i < c->n; i++) {
            if (!c->pk[i])
                continue;
            fputs(first ? "" : " AND ", x->sql);
            first = false;
            put_ident(x->sql, c->name[i]);
            fputs(" = ", x->sql);
            put_value(x->sql, res, (unsigned)i, v[i], l[i]);
        }
        fputs(";\n", x->sql);
        x->updated++;
    }
    if (ctldb_res_failed(res, x->err, sizeof(x->err)))
        r = ERR_DB;
    ctldb_res_free(res);
    return r;
}

static int table_names(ex_t *x, const char *schema, char ***ret, size_t *ret_n)
{
    char q[512];
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *l;
    size_t n = 0;
    char **names = NULL;
    int len = snprintf(q, sizeof(q),
                       "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                       "'%s' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                       schema);
    int r = ctldb_query(x->db, q, (size_t)len, &res, x->err, sizeof(x->err));
    if (r < 0)
        return r;
    while (ctldb_res_next(res, &v, &l) == 1) {
        char **nn = realloc(names, (n + 1) * sizeof(*nn));
        if (!nn) {
            r = UV_ENOMEM;
            break;
        }
        names = nn;
        names[n++] = strdup(v[0] ? v[0] : "");
    }
    ctldb_res_free(res);
    *ret = names;
    *ret_n = n;
    return r;
}

static bool has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] && !strcmp(v[i], s))
            return true;
    return false;
}

static int export_tables(ex_t *x)
{
    char **live = NULL, **snap = NULL;
    size_t n_live = 0, n_snap = 0;
    int r = table_names(x, x->live, &live, &n_live);
    if (r == 0)
        r = table_names(x, x->scratch, &snap, &n_snap);
    for (size_t i = 0; r == 0 && i < n_live; i++) {
        if (!live[i])
            continue;
        if (!has(snap, n_snap, live[i])) {
            fprintf(x->sql,
                    "-- table %s was created on the backup: not exported (copy it by hand)\n",
                    live[i]);
            continue;
        }
        cols_t c = {0};
        uint64_t before = x->inserted + x->updated + x->deleted;
        fprintf(x->sql, "-- ");
        put_ident(x->sql, live[i]);
        fprintf(x->sql, "\n");
        r = load_cols(x, x->live, live[i], &c);
        if (r == 0)
            r = missing_rows(x, live[i], &c, false);
        if (r == 0 && c.n_pk)
            r = updated_rows(x, live[i], &c);
        if (r == 0)
            r = missing_rows(x, live[i], &c, true);
        if (r == 0 && x->inserted + x->updated + x->deleted > before)
            printf("  %s: %" PRIu64 " rows to carry back\n", live[i],
                   x->inserted + x->updated + x->deleted - before);
        cols_free(&c);
    }
    for (size_t i = 0; r == 0 && i < n_snap; i++)
        if (snap[i] && !has(live, n_live, snap[i]))
            fprintf(x->sql, "-- table %s was dropped on the backup: not exported\n", snap[i]);
    for (size_t i = 0; i < n_live; i++)
        free(live[i]);
    for (size_t i = 0; i < n_snap; i++)
        free(snap[i]);
    free(live);
    free(snap);
    return r;
}

/* Restores the dump into the scratch schema with the stock client (zstd -dc | mariadb). */
static int restore_snapshot(ex_t *x, const char *dump)
{
    const cfg_t *cfg = x->cfg;
    char defaults[PATH_MAX], q[256];
    snprintf(defaults, sizeof(defaults), "%s/export-client.XXXXXX", cfg_get(cfg, "site", "data"));
    int fd = mkstemp(defaults);
    if (fd < 0) {
        snprintf(x->err, sizeof(x->err), "cannot create a client option file in %s: %s",
                 cfg_get(cfg, "site", "data"), strerror(errno));
        return -errno;
    }
    const char *pwfile = cfg_get(cfg, "database", "password_file");
    char pw[1024] = "";
    if (pwfile) {
        FILE *pf = fopen(pwfile, "re");
        if (pf) {
            if (!fgets(pw, sizeof(pw), pf))
                pw[0] = '\0';
            fclose(pf);
        }
        pw[strcspn(pw, "\r\n")] = '\0';
    }
    FILE *f = fdopen(fd, "w");
    fprintf(f, "[client]\n");
    if (cfg_get(cfg, "database", "user"))
        fprintf(f, "user=\"%s\"\n", cfg_get(cfg, "database", "user"));
    if (pwfile)
        fprintf(f, "password=\"%s\"\n", pw);
    if (cfg_get(cfg, "database", "socket"))
        fprintf(f, "socket=\"%s\"\n", cfg_get(cfg, "database", "socket"));
    else
        fprintf(f, "host=\"%s\"\nport=%u\n",
                cfg_get(cfg, "database", "host") ? cfg_get(cfg, "database", "host") : "127.0.0.1",
                (unsigned)cfg_get_uint(cfg, "database", "port", 3306));
    fclose(f);

    int n = snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS `%s`", x->scratch);
    int r = ctldb_exec(x->db, q, (size_t)n, x->err, sizeof(x->err));
    n = snprintf(q, sizeof(q), "CREATE DATABASE `%s`", x->scratch);
    if (r == 0)
        r = ctldb_exec(x->db, q, (size_t)n, x->err, sizeof(x->err));
    if (r < 0) {
        unlink(defaults);
        return r;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        unlink(defaults);
        return -errno;
    }
    char opt[PATH_MAX + 32];
    snprintf(opt, sizeof(opt), "--defaults-extra-file=%s", defaults);
    pid_t z = fork();
    if (z == 0) {
        dup2(p[1], 1);
        execlp("zstd", "zstd", "-dcq", dump, (char *)NULL);
        _exit(127);
    }
    pid_t m = fork();
    if (m == 0) {
        dup2(p[0], 0);
        execlp("mariadb", "mariadb", opt, "--binary-mode", x->scratch, (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    close(p[1]);
    int sz = 1, sm = 1;
    if (z > 0)
        waitpid(z, &sz, 0);
    if (m > 0)
        waitpid(m, &sm, 0);
    unlink(defaults);
    if (z < 0 || m < 0 || !WIFEXITED(sz) || WEXITSTATUS(sz) || !WIFEXITED(sm) || WEXITSTATUS(sm)) {
        snprintf(x->err, sizeof(x->err),
                 "restoring %s into the scratch schema %s failed (zstd -dc | mariadb)", dump,
                 x->scratch);
        return ERR_DB;
    }
    return 0;
}

static void drop_scratch(ex_t *x)
{
    char q[256], err[256];
    int n = snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS `%s`", x->scratch);
    if (ctldb_exec(x->db, q, (size_t)n, err, sizeof(err)) < 0)
        log_warn("cannot drop the scratch schema %s: %s (drop it by hand)", x->scratch, err);
}

static int export_database(ex_t *x, uint64_t gen)
{
    char path[PATH_MAX], dump[PATH_MAX];
    int r = dbdrift_connect(x->cfg, &x->db, x->err, sizeof(x->err));
    if (r != 0)
        return r < 0 ? r : 0; /* no [database]: files only */
    snprintf(dump, sizeof(dump), "%s/dumps/gen%" PRIu64 ".sql.zst", cfg_get(x->cfg, "site", "data"),
             gen);
    if (access(dump, R_OK) != 0) {
        snprintf(x->err, sizeof(x->err),
                 "no retained dump of the live generation %" PRIu64 " (%s): the applied snapshot "
                 "is needed to tell what changed",
                 gen, dump);
        ctldb_close(x->db);
        return ERR_DB;
    }
    snprintf(x->scratch, sizeof(x->scratch), "%s_export", x->live);
    r = dbdrift_rules_from_cfg(x->cfg, &x->rules, x->err, sizeof(x->err));
    snprintf(path, sizeof(path), "%s/database.sql", x->dir);
    if (r == 0 && !(x->sql = fopen(path, "wxe"))) {
        snprintf(x->err, sizeof(x->err), "cannot create %s: %s", path, strerror(errno));
        r = -errno;
    }
    if (r == 0)
        r = restore_snapshot(x, dump);
    if (r == 0) {
        fprintf(x->sql,
                "-- understudy export-local-changes: rows written on the backup since generation "
                "%" PRIu64 " went live,\n"
                "-- compared by primary key with what the controller applied (%s).\n"
                "-- Run it on the PRIMARY's database (mariadb PRIMARY_DB < database.sql). Table "
                "names carry the\n"
                "-- site's table prefix (\"%s\"). Values are hex literals, so any bytes survive. "
                "Rows that\n"
                "-- WordPress writes by itself on page views (transients, cron, ...) are left out, "
                "as by the\n"
                "-- write guard. One transaction: if a statement fails (a row the primary created "
                "meanwhile\n"
                "-- has the same key), nothing is applied; edit the file and run it again.\n"
                "SET NAMES utf8mb4;\nSTART TRANSACTION;\n",
                gen, dump, x->prefix);
        r = export_tables(x);
        fprintf(x->sql,
                "COMMIT;\n-- %" PRIu64 " inserted, %" PRIu64 " updated, %" PRIu64 " deleted\n",
                x->inserted, x->updated, x->deleted);
    }
    if (x->scratch[0])
        drop_scratch(x);
    if (x->sql && (fflush(x->sql) != 0 || fsync(fileno(x->sql)) != 0) && r == 0) {
        snprintf(x->err, sizeof(x->err), "cannot write %s: %s", path, strerror(errno));
        r = -errno;
    }
    if (x->sql)
        fclose(x->sql);
    ctldb_close(x->db);
    return r;
}

/* ---- files ------------------------------------------------------------------------------- */

typedef struct fentry {
    char *path;
    int kind;
    uint64_t size;
    int64_t mtime_ns;
} fentry_t;

static int cmp_fentry(const void *a, const void *b)
{
    return strcmp(((const fentry_t *)a)->path, ((const fentry_t *)b)->path);
}

typedef struct fx {
    ex_t *x;
    const char *root;
    fentry_t *v;
    size_t n;
    const char *const *ignore;
    size_t n_ignore;
    FILE *deleted;
    uint64_t copied, removed;
    int error;
} fx_t;

static bool excluded(const fx_t *f, const char *path)
{
    static const char *const builtin[] = {"wp-config.php", "wp-content/cache",
                                          "wp-content/upgrade"};
    for (size_t i = 0; i < 3 + f->n_ignore; i++) {
        const char *e = i < 3 ? builtin[i] : f->ignore[i - 3];
        size_t len = strlen(e);
        while (len && e[len - 1] == '/')
            len--;
        if (len && !strncmp(path, e, len) && (path[len] == '\0' || path[len] == '/'))
            return true;
    }
    return false;
}

static int copy_out(fx_t *f, const char *rel, const struct stat *st)
{
    char src[2 * PATH_MAX + 2], dst[2 * PATH_MAX + 16];
    snprintf(src, sizeof(src), "%s/%s", f->root, rel);
    snprintf(dst, sizeof(dst), "%s/files/%s", f->x->dir, rel);
    int r = fs_mkdirs(dst, (size_t)(strrchr(dst, '/') - dst), 0755);
    if (r < 0)
        return r;
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof(target) - 1);
        if (n < 0)
            return -errno;
        target[n] = '\0';
        return symlink(target, dst) < 0 ? -errno : 0;
    }
    int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return -errno;
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st->st_mode & 07777);
    if (out < 0) {
        r = -errno;
        close(in);
        return r;
    }
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    r = n < 0 ? -errno : 0;
    if (r == 0 && fsync(out) < 0)
        r = -errno;
    close(in);
    close(out);
    return r;
}

static const fentry_t *find(const fx_t *f, const char *rel)
{
    fentry_t key = {.path = (char *)rel};
    return bsearch(&key, f->v, f->n, sizeof(*f->v), cmp_fentry);
}

/* Walks the live tree: entries not in the manifest or different from it are copied. */
static int walk(fx_t *f, const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s%s%s", f->root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    struct dirent *de;
    int r = 0;
    while (r == 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[PATH_MAX], full[PATH_MAX + 256];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        if (excluded(f, sub))
            continue;
        snprintf(full, sizeof(full), "%s/%s", f->root, sub);
        struct stat st;
        if (lstat(full, &st) < 0)
            continue;
        const fentry_t *m = find(f, sub);
        if (S_ISDIR(st.st_mode)) {
            r = walk(f, sub);
            continue;
        }
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
            continue;
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        bool same = m && ((S_ISREG(st.st_mode) && m->kind == MF_REGULAR &&
                           m->size == (uint64_t)st.st_size && m->mtime_ns == mt) ||
                          (S_ISLNK(st.st_mode) && m->kind == MF_SYMLINK));
        if (same)
            continue;
        r = copy_out(f, sub, &st);
        if (r < 0)
            snprintf(f->x->err, sizeof(f->x->err), "cannot copy %s: %s", sub, err_str(r));
        else
            f->copied++;
    }
    closedir(d);
    return r;
}

static int export_files(ex_t *x, const char *root, const char *manifest)
{
    fx_t f = {.x = x, .root = root};
    mf_reader_t *rd = NULL;
    mf_entry_t e;
    char path[PATH_MAX];
    f.n_ignore = cfg_get_all(x->cfg, "guard", "ignore_path", &f.ignore);
    int r = mf_reader_open(manifest, &rd, NULL);
    size_t cap = 0;
    while (r == 0 && (r = mf_reader_next(rd, &e)) == 1) {
        if (f.n == cap) {
            cap = cap ? cap * 2 : 1024;
            fentry_t *nv = realloc(f.v, cap * sizeof(*nv));
            if (!nv) {
                r = UV_ENOMEM;
                break;
            }
            f.v = nv;
        }
        f.v[f.n++] = (fentry_t){strdup(e.path), e.kind, e.size, e.mtime_ns};
        r = 0;
    }
    mf_reader_close(rd);
    if (r < 0) {
        snprintf(x->err, sizeof(x->err), "cannot read the manifest %s: %s", manifest, err_str(r));
        goto out;
    }
    qsort(f.v, f.n, sizeof(*f.v), cmp_fentry);
    snprintf(path, sizeof(path), "%s/files", x->dir);
    if (mkdir(path, 0755) < 0) {
        r = -errno;
        snprintf(x->err, sizeof(x->err), "cannot create %s: %s", path, err_str(r));
        goto out;
    }
    r = walk(&f, "");
    if (r < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/deleted.txt", x->dir);
    FILE *del = fopen(path, "wxe");
    if (!del) {
        r = -errno;
        snprintf(x->err, sizeof(x->err), "cannot create %s: %s", path, err_str(r));
        goto out;
    }
    for (size_t i = 0; i < f.n; i++) {
        char full[PATH_MAX + 256];
        struct stat st;
        snprintf(full, sizeof(full), "%s/%s", root, f.v[i].path);
        if (f.v[i].kind != MF_DIRECTORY && !excluded(&f, f.v[i].path) && lstat(full, &st) < 0 &&
            errno == ENOENT) {
            fprintf(del, "%s\n", f.v[i].path);
            f.removed++;
        }
    }
    if (fflush(del) != 0 || fsync(fileno(del)) != 0)
        r = -errno;
    fclose(del);
    printf("files: %" PRIu64 " new or changed (in %s/files), %" PRIu64 " deleted (deleted.txt)\n",
           f.copied, x->dir, f.removed);
out:
    for (size_t i = 0; i < f.n; i++)
        free(f.v[i].path);
    free(f.v);
    return r;
}

/* ---- the command ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: understudy-controller export-local-changes --config FILE DIR\n\n"
               "Writes what was written on the backup since the live generation went live into\n"
               "the new directory DIR, to carry it back to the primary before syncs resume:\n"
               "  database.sql  rows inserted, updated and deleted (by primary key against the\n"
               "                applied snapshot), to run on the primary's database\n"
               "  files/        new and changed files, at their paths below the site root\n"
               "  deleted.txt   files deleted on the backup\n"
               "  README.txt    how to apply it\n"
               "The backup is not modified (a scratch schema <name>_export is created and\n"
               "dropped again).\n");
}

static void write_readme(const char *dir, uint64_t gen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/README.txt", dir);
    FILE *f = fopen(path, "wxe");
    if (!f)
        return;
    fprintf(f,
            "Local changes of the understudy backup since generation %" PRIu64 " went live.\n\n"
            "To keep them, apply them on the PRIMARY before letting syncs overwrite the backup:\n\n"
            "1. Database: review database.sql, then run it against the primary's database:\n"
            "     mariadb -u USER -p PRIMARY_DB < database.sql\n"
            "   It is one transaction; if a statement fails (for example an INSERT whose key the\n"
            "   primary has used meanwhile), nothing is applied: edit the file and run it again.\n"
            "2. Files: copy files/ over the primary's site root, keeping the paths, e.g.\n"
            "     rsync -a files/ USER@PRIMARY:/path/to/site/\n"
            "   and remove the files listed in deleted.txt there if they should go.\n"
            "3. Then on the backup: understudy-controller resolve --discard-local --config FILE\n"
            "   (it saves a snapshot of the backup first), and run a sync from the primary.\n\n"
            "Not exported: rows WordPress writes by itself on page views (transients, cron, term\n"
            "caches, edit locks; see [guard] db_ignore), wp-config.php and cache directories.\n",
            gen);
    fsync(fileno(f));
    fclose(f);
}

int cmd_export_local_changes(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (opt == 'c') {
            config = optarg;
        } else {
            usage(opt == 'h' ? stdout : stderr);
            return opt == 'h' ? 0 : err_exit_code(ERR_USAGE);
        }
    }
    if (!config || optind + 1 != argc) {
        log_error("needs --config FILE and the output directory DIR; see --help");
        return err_exit_code(ERR_USAGE);
    }
    const char *dir = argv[optind];
    cfg_t *cfg;
    int r = controller_load_config(config, &cfg);
    if (r < 0)
        return err_exit_code(r);
    ex_t *x = calloc(1, sizeof(*x));
    char real[PATH_MAX], manifest[PATH_MAX + 16];
    if (!x) {
        cfg_free(cfg);
        return err_exit_code(UV_ENOMEM);
    }
    x->cfg = cfg;
    x->dir = dir;
    x->live = cfg_get(cfg, "database", "name");
    if (x->live &&
        (strspn(x->live, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
             strlen(x->live) ||
         strlen(x->live) > 40)) {
        log_error("[database] name \"%s\": use at most 40 letters, digits and '_'", x->live);
        r = ERR_CONFIG;
        goto out;
    }
    uint64_t gen = 0;
    if (realpath(cfg_get(cfg, "site", "docroot"), real)) {
        size_t len = strlen(real);
        if (len > 5 && !strcmp(real + len - 5, "/root")) {
            snprintf(manifest, sizeof(manifest), "%.*s/manifest", (int)(len - 5), real);
            char *slash = memrchr(real, '/', len - 5);
            gen = slash ? strtoull(slash + 1, NULL, 10) : 0;
        }
    }
    if (!gen) {
        log_error("no live generation (%s is not a generation's tree): nothing to export",
                  cfg_get(cfg, "site", "docroot"));
        r = ERR_USAGE;
        goto out;
    }
    if (mkdir(dir, 0700) < 0) {
        r = -errno;
        log_error("cannot create %s: %s (give a new directory)", dir, err_str(r));
        goto out;
    }
    dbdrift_table_prefix(real, x->prefix, sizeof(x->prefix));
    if (x->live) {
        r = export_database(x, gen);
        if (r < 0) {
            log_error("database export failed: %s", x->err[0] ? x->err : err_str(r));
            goto out;
        }
        printf("database: %" PRIu64 " inserted, %" PRIu64 " updated, %" PRIu64
               " deleted rows (%s/database.sql)\n",
               x->inserted, x->updated, x->deleted, dir);
    }
    r = export_files(x, real, manifest);
    if (r < 0) {
        log_error("file export failed: %s", x->err[0] ? x->err : err_str(r));
        goto out;
    }
    write_readme(dir, gen);
    printf("apply it on the primary as %s/README.txt says\n", dir);
out:
    free(x);
    cfg_free(cfg);
    return err_exit_code(r);
}
