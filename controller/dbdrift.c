/* Database drift (see dbdrift.h). */
#include "dbdrift.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "db.h"
#include "err.h"
#include "generation.h"

#define DBDRIFT_MAX_TABLES 20000
#define DBDRIFT_MAX_NAME   64

static const char *const builtin_rules[][3] = {
    {"options", "option_name", "\\_transient\\_%"},
    {"options", "option_name", "\\_site\\_transient\\_%"},
    {"options", "option_name", "cron"},
    {"options", "option_name", "%\\_children"},
    /* WordPress core's own housekeeping, run by WP-Cron on page views when its event is due
     * (the synced schedule can hold overdue events): HTTPS detection, recovery-mode keys, the
     * weekly Site Health check, rewrite rules rebuilt on demand, the updaters' locks. */
    {"options", "option_name", "https\\_detection\\_errors"},
    {"options", "option_name", "recovery\\_keys"},
    {"options", "option_name", "health-check-site-status-result"},
    {"options", "option_name", "rewrite\\_rules"},
    {"options", "option_name", "auto\\_updater.lock"},
    {"options", "option_name", "core\\_updater.lock"},
    {"postmeta", "meta_key", "\\_edit\\_lock"},
};

static bool plain_name(const char *s)
{
    if (!*s || strlen(s) >= DBDRIFT_MAX_NAME)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '$')
            return false;
    return true;
}

static int add_rule(dbdrift_rules_t *r, const char *t, const char *c, const char *p)
{
    if (r->n >= DBDRIFT_MAX_RULES || !plain_name(t) || !plain_name(c) ||
        strlen(p) >= sizeof(r->v[0].pattern) || !*p)
        return ERR_CONFIG;
    dbdrift_rule_t *x = &r->v[r->n++];
    snprintf(x->table, sizeof(x->table), "%s", t);
    snprintf(x->column, sizeof(x->column), "%s", c);
    snprintf(x->pattern, sizeof(x->pattern), "%s", p);
    return 0;
}

int dbdrift_rules_from_cfg(const cfg_t *cfg, dbdrift_rules_t *ret, char *err, size_t err_size)
{
    const char *const *v;
    size_t n = cfg_get_all(cfg, "guard", "db_ignore", &v);

    ret->n = 0;
    for (size_t i = 0; i < sizeof(builtin_rules) / sizeof(builtin_rules[0]); i++)
        add_rule(ret, builtin_rules[i][0], builtin_rules[i][1], builtin_rules[i][2]);
    for (size_t i = 0; i < n; i++) {
        char t[DBDRIFT_MAX_NAME], c[DBDRIFT_MAX_NAME], p[192];
        int used = 0;
        if (sscanf(v[i], "%63s %63s %191s%n", t, c, p, &used) != 3 || v[i][used] != '\0' ||
            add_rule(ret, t, c, p) < 0) {
            snprintf(err, err_size,
                     "[guard] db_ignore \"%s\": expected TABLE_SUFFIX COLUMN LIKE-PATTERN (plain "
                     "names, no blanks in the pattern, at most %d rules)",
                     v[i], DBDRIFT_MAX_RULES);
            return ERR_CONFIG;
        }
    }
    return 0;
}

/* Appends s as a quoted SQL string literal. */
static int append_literal(buf_t *b, const char *s)
{
    int r = buf_append_str(b, "'");
    for (; r == 0 && *s; s++) {
        if (*s == '\'' || *s == '\\')
            r = buf_append(b, *s == '\'' ? "''" : "\\\\", 2);
        else
            r = buf_append(b, s, 1);
    }
    return r ? r : buf_append_str(b, "'");
}

/* Appends name as a quoted identifier. */
static int append_ident(buf_t *b, const char *s)
{
    int r = buf_append_str(b, "`");
    for (; r == 0 && *s; s++)
        r = buf_append(b, s, 1) || (*s == '`' && buf_append(b, s, 1)) ? UV_ENOMEM : 0;
    return r ? r : buf_append_str(b, "`");
}

static int keep_clause(const dbdrift_rules_t *rules, const char *prefix, const char *table,
                       const char *alias, buf_t *b)
{
    size_t plen = strlen(prefix);
    bool any = false;
    int r = 0;

    if (strncmp(table, prefix, plen) != 0)
        return buf_append_str(b, "1");
    for (size_t i = 0; i < rules->n && r == 0; i++) {
        if (strcmp(table + plen, rules->v[i].table) != 0)
            continue;
        r = buf_append_str(b, any ? " OR IFNULL(" : "NOT (IFNULL(");
        if (r == 0 && alias)
            r = buf_printf(b, "%s.", alias);
        if (r == 0)
            r = append_ident(b, rules->v[i].column);
        if (r == 0)
            r = buf_append_str(b, ",'') LIKE ");
        if (r == 0)
            r = append_literal(b, rules->v[i].pattern);
        any = true;
    }
    if (r == 0)
        r = buf_append_str(b, any ? ")" : "1");
    return r;
}

int dbdrift_keep_clause(const dbdrift_rules_t *rules, const char *prefix, const char *table,
                        const char *alias, char *out, size_t size)
{
    buf_t b;
    buf_init(&b, 0);
    int r = keep_clause(rules, prefix, table, alias, &b);
    if (r == 0 && b.len >= size)
        r = UV_ENOBUFS;
    if (r == 0) {
        memcpy(out, buf_data(&b), b.len);
        out[b.len] = '\0';
    }
    buf_free(&b);
    return r;
}

void dbdrift_table_prefix(const char *docroot, char *out, size_t size)
{
    char path[PATH_MAX], text[1 << 16];
    snprintf(out, size, "wp_");
    snprintf(path, sizeof(path), "%s/wp-config.php", docroot);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    /* $table_prefix = 'xx_'; (single or double quotes; the agent refuses anything fancier) */
    for (char *p = strstr(text, "$table_prefix"); p; p = strstr(p + 1, "$table_prefix")) {
        char *q = p + strlen("$table_prefix");
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q != '=')
            continue;
        q++;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q != '\'' && *q != '"')
            continue;
        char quote = *q++;
        size_t len = 0;
        while (q[len] && q[len] != quote && (isalnum((unsigned char)q[len]) || q[len] == '_'))
            len++;
        if (q[len] != quote || len >= size || len > 64)
            continue;
        memcpy(out, q, len);
        out[len] = '\0';
        return;
    }
}

int dbdrift_connect(const cfg_t *cfg, MYSQL **ret, char *err, size_t err_size)
{
    const char *pwfile = cfg_get(cfg, "database", "password_file");
    const char *socket = cfg_get(cfg, "database", "socket");
    const char *host = cfg_get(cfg, "database", "host");
    const char *user = cfg_get(cfg, "database", "user");

    if (!cfg_get(cfg, "database", "name"))
        return 1;
    char *pw = pwfile ? cfg_read_secret(pwfile, err, err_size) : strdup("");
    if (!pw)
        return pwfile ? ERR_CONFIG : UV_ENOMEM;
    ctldb_opts_t o = {
        .socket = socket,
        .host = socket ? NULL : (host ? host : "127.0.0.1"),
        .port = (unsigned)cfg_get_uint(cfg, "database", "port", 3306),
        .user = user,
        .password = pw,
    };
    int r = ctldb_connect(&o, ret, err, err_size);
    free(pw);
    return r;
}

/* ---- figures ----------------------------------------------------------------------------- */

typedef struct tfig {
    char *name;
    uint64_t rows;
    uint64_t digest;
} tfig_t;

typedef struct figs {
    tfig_t *v;
    size_t n;
} figs_t;

static void figs_clear(figs_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].name);
    free(f->v);
    f->v = NULL;
    f->n = 0;
}

static int figs_add(figs_t *f, const char *name, uint64_t rows, uint64_t digest)
{
    if (f->n >= DBDRIFT_MAX_TABLES)
        return UV_E2BIG;
    if ((f->n & (f->n - 1)) == 0 || f->n == 0) {
        tfig_t *v = realloc(f->v, (f->n ? f->n * 2 : 16) * sizeof(*v));
        if (!v)
            return UV_ENOMEM;
        f->v = v;
    }
    char *n = strdup(name);
    if (!n)
        return UV_ENOMEM;
    f->v[f->n++] = (tfig_t){n, rows, digest};
    return 0;
}

/* The figures of every base table of schema, sorted by name (the server's order). */
static int compute(MYSQL *db, const char *schema, const dbdrift_rules_t *rules, const char *prefix,
                   figs_t *ret, char *err, size_t err_size)
{
    buf_t q, cols;
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *lens;
    int r;

    buf_init(&q, 0);
    buf_init(&cols, 0);
    r = buf_append_str(&q, "SELECT c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c "
                           "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA "
                           "AND t.TABLE_NAME = c.TABLE_NAME AND t.TABLE_TYPE = 'BASE TABLE' "
                           "WHERE c.TABLE_SCHEMA = ");
    if (r == 0)
        r = append_literal(&q, schema);
    if (r == 0)
        r = buf_append_str(&q, " ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION");
    if (r == 0)
        r = ctldb_query(db, (const char *)buf_data(&q), q.len, &res, err, err_size);
    if (r < 0)
        goto out;

    /* Group the columns by table; run one digest query per table. */
    char current[256] = "";
    bool have = false, more = true;
    while (more) {
        int k = ctldb_res_next(res, &v, &lens);
        more = k == 1;
        if (more && (!v[0] || !v[1] || lens[0] >= sizeof(current) || strchr(v[0], '\n')))
            continue;
        if (have && (!more || strcmp(v[0], current) != 0)) {
            buf_t d;
            ctldb_res_t *dr = NULL;
            char **dv;
            unsigned long *dl;
            buf_init(&d, 0);
            r = buf_append_str(&d, "SELECT COUNT(*), IFNULL(BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT_WS("
                                   "','");
            if (r == 0)
                r = buf_append(&d, buf_data(&cols), cols.len);
            if (r == 0)
                r = buf_append_str(&d, ")), 16), 16, 10) AS UNSIGNED)), 0) FROM ");
            if (r == 0)
                r = append_ident(&d, schema);
            if (r == 0)
                r = buf_append_str(&d, ".");
            if (r == 0)
                r = append_ident(&d, current);
            if (r == 0)
                r = buf_append_str(&d, " WHERE ");
            if (r == 0)
                r = keep_clause(rules, prefix, current, NULL, &d);
            if (r == 0)
                r = ctldb_query(db, (const char *)buf_data(&d), d.len, &dr, err, err_size);
            buf_free(&d);
            if (r < 0)
                goto out;
            if (ctldb_res_next(dr, &dv, &dl) == 1 && dv[0] && dv[1])
                r = figs_add(ret, current, strtoull(dv[0], NULL, 10), strtoull(dv[1], NULL, 10));
            ctldb_res_free(dr);
            if (r < 0) {
                snprintf(err, err_size, "cannot hold the figures of %s: %s", schema, err_str(r));
                goto out;
            }
            buf_reset(&cols);
            have = false;
        }
        if (!more)
            break;
        if (!have) {
            memcpy(current, v[0], lens[0]);
            current[lens[0]] = '\0';
            have = true;
        }
        r = buf_append_str(&cols, ", IFNULL(HEX(CONCAT(");
        if (r == 0)
            r = append_ident(&cols, v[1]);
        if (r == 0)
            r = buf_append_str(&cols, ")),'-')");
        if (r < 0) {
            snprintf(err, err_size, "out of memory");
            goto out;
        }
    }
out:
    ctldb_res_free(res);
    buf_free(&q);
    buf_free(&cols);
    if (r < 0)
        figs_clear(ret);
    return r;
}

/* ---- the baseline file ------------------------------------------------------------------- */

static int baseline_path(const cfg_t *cfg, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/guard/db-baseline", cfg_get(cfg, "site", "data"));
    return n < 0 || (size_t)n >= size ? UV_ENAMETOOLONG : 0;
}

static int baseline_load(const char *path, uint64_t *gen, long long *cleared, figs_t *f)
{
    char line[512];
    FILE *in = fopen(path, "re");
    if (!in)
        return -errno;
    *gen = 0;
    *cleared = 0;
    int r = 0;
    while (r == 0 && fgets(line, sizeof(line), in)) {
        unsigned long long a, b;
        int used = 0;
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "generation %llu", &a) == 1)
            *gen = a;
        else if (sscanf(line, "cleared %lld", cleared) == 1)
            ;
        else if (sscanf(line, "table %llu %llu %n", &a, &b, &used) == 2 && used)
            r = figs_add(f, line + used, a, b);
    }
    fclose(in);
    if (r < 0)
        figs_clear(f);
    return r;
}

static int baseline_save(const char *path, uint64_t gen, time_t cleared, const figs_t *f)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *out = fopen(tmp, "we");
    if (!out)
        return -errno;
    fprintf(out, "generation %" PRIu64 "\ncleared %lld\n", gen, (long long)cleared);
    for (size_t i = 0; i < f->n; i++)
        fprintf(out, "table %" PRIu64 " %" PRIu64 " %s\n", f->v[i].rows, f->v[i].digest,
                f->v[i].name);
    int r = fflush(out) == 0 && fsync(fileno(out)) == 0 ? 0 : -errno;
    if (fclose(out) != 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) != 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

/* ---- the check --------------------------------------------------------------------------- */

/* The generation whose manifest is in L_meta (the database half of the switch), or 0. */
static uint64_t meta_generation(MYSQL *db, const char *schema)
{
    char q[512], err[256];
    ctldb_res_t *res = NULL;
    char **v;
    unsigned long *lens;
    uint64_t gen = 0;
    int n = snprintf(q, sizeof(q),
                     "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                     "'%s_meta' AND TABLE_NAME LIKE 'understudy~gen%%'",
                     schema);
    if (n < 0 || (size_t)n >= sizeof(q) || ctldb_query(db, q, (size_t)n, &res, err, sizeof(err)))
        return 0;
    if (ctldb_res_next(res, &v, &lens) == 1 && v[0] && !strncmp(v[0], "understudy~gen", 14))
        gen = strtoull(v[0] + 14, NULL, 10);
    ctldb_res_free(res);
    return gen;
}

static void example(dbdrift_report_t *rep, const char *text)
{
    rep->differing++;
    if (rep->n_examples < DBDRIFT_MAX_EXAMPLES)
        snprintf(rep->examples[rep->n_examples++], DBDRIFT_EXAMPLE_LEN, "%s", text);
}

static void compare(const figs_t *base, const figs_t *now, dbdrift_report_t *rep)
{
    char text[DBDRIFT_EXAMPLE_LEN];
    size_t i = 0, j = 0;
    rep->tables = now->n;
    while (i < base->n || j < now->n) {
        int c = i == base->n ? 1 : j == now->n ? -1 : strcmp(base->v[i].name, now->v[j].name);
        text[0] = '\0';
        if (c < 0) {
            snprintf(text, sizeof(text), "table %.150s dropped (had %" PRIu64 " rows)",
                     base->v[i].name, base->v[i].rows);
            i++;
        } else if (c > 0) {
            snprintf(text, sizeof(text), "new table %.150s (%" PRIu64 " rows)", now->v[j].name,
                     now->v[j].rows);
            j++;
        } else {
            const tfig_t *x = &base->v[i++], *y = &now->v[j++];
            if (x->rows != y->rows)
                snprintf(text, sizeof(text), "%.150s: %" PRIu64 " -> %" PRIu64 " rows", x->name,
                         x->rows, y->rows);
            else if (x->digest != y->digest)
                snprintf(text, sizeof(text), "%.150s: rows changed (%" PRIu64 " rows)", x->name,
                         x->rows);
        }
        if (text[0])
            example(rep, text);
    }
}

int dbdrift_check(const cfg_t *cfg, time_t cleared_at, dbdrift_report_t *ret, char *err,
                  size_t err_size)
{
    const char *docroot = cfg_get(cfg, "site", "docroot");
    const char *schema = cfg_get(cfg, "database", "name");
    dbdrift_rules_t *rules = malloc(sizeof(*rules));
    figs_t base = {0}, now = {0};
    MYSQL *db = NULL;
    char path[PATH_MAX], prefix[72];
    uint64_t gen, base_gen = 0;
    long long base_cleared = 0;
    int r;

    memset(ret, 0, sizeof(*ret));
    if (!rules) {
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    if (schema && !plain_name(schema)) {
        snprintf(err, err_size, "[database] name \"%s\" is not a plain name", schema);
        free(rules);
        return ERR_CONFIG;
    }
    gen = schema ? gen_docroot_generation(docroot) : 0;
    r = gen ? dbdrift_rules_from_cfg(cfg, rules, err, err_size) : 1;
    if (r == 0)
        r = baseline_path(cfg, path, sizeof(path));
    if (r == 0)
        r = dbdrift_connect(cfg, &db, err, err_size);
    if (r != 0)
        goto out;
    ret->live = gen;
    dbdrift_table_prefix(docroot, prefix, sizeof(prefix));
    /* A sync switches the database right before the docroot: figures taken while the two
     * disagree, or while either moved, belong to no generation. Try again next time. */
    if (meta_generation(db, schema) != gen) {
        r = 1;
        goto out;
    }
    r = compute(db, schema, rules, prefix, &now, err, err_size);
    if (r < 0)
        goto out;
    if (meta_generation(db, schema) != gen || gen_docroot_generation(docroot) != gen) {
        r = 1;
        goto out;
    }
    int lr = baseline_load(path, &base_gen, &base_cleared, &base);
    if (lr < 0 || base_gen != gen || base_cleared < (long long)cleared_at) {
        r = baseline_save(path, gen, cleared_at, &now);
        if (r < 0)
            snprintf(err, err_size, "cannot write %s: %s", path, err_str(r));
        ret->baseline_written = true;
        ret->tables = now.n;
        goto out;
    }
    compare(&base, &now, ret);
out:
    figs_clear(&base);
    figs_clear(&now);
    ctldb_close(db);
    free(rules);
    return r;
}
