/* The agent's MariaDB/MySQL access: connecting with wp-config.php's credentials and checking the
 * grants a consistent dump needs. The only agent file that includes <mysql.h>. */
#include "db.h"

#include <ctype.h>
#include <limits.h>
#include <mysql.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "err.h"

#define AGENTDB_CONNECT_TIMEOUT 10  /* seconds */
#define AGENTDB_IO_TIMEOUT      600 /* seconds without progress on a read or write */
#define AGENTDB_MAX_GRANTS      10000

enum {
    PRIV_SELECT = 1 << 0,
    PRIV_LOCK_TABLES = 1 << 1,
    PRIV_SHOW_VIEW = 1 << 2,
    PRIV_TRIGGER = 1 << 3,
    PRIV_NEEDED = (1 << 4) - 1,
};

static const struct {
    unsigned bit;
    const char *name;
} agentdb_privs[] = {
    {PRIV_SELECT, "SELECT"},
    {PRIV_LOCK_TABLES, "LOCK TABLES"},
    {PRIV_SHOW_VIEW, "SHOW VIEW"},
    {PRIV_TRIGGER, "TRIGGER"},
};

/* ---- connecting ---- */

/* Describes where we connect, for messages: "host:port", "localhost (socket /x.sock)". */
static void agentdb_where(const wpconfig_t *wp, char *out, size_t size)
{
    const char *host = wp->host ? wp->host : "localhost";
    bool v6 = strchr(host, ':') != NULL;

    if (wp->socket && (!wp->host || !strcmp(wp->host, "localhost")))
        snprintf(out, size, "localhost (socket %s)", wp->socket);
    else if (wp->port)
        snprintf(out, size, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", wp->port);
    else
        snprintf(out, size, "%s", host);
}

int agentdb_connect(const wpconfig_t *wp, MYSQL **ret, char *err, size_t err_size)
{
    unsigned connect_timeout = AGENTDB_CONNECT_TIMEOUT, io_timeout = AGENTDB_IO_TIMEOUT;
    unsigned local_infile = 0;
    char where[512];
    MYSQL *db = mysql_init(NULL);

    if (!db) {
        snprintf(err, err_size, "cannot connect to the database: out of memory");
        return UV_ENOMEM;
    }
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_OPT_LOCAL_INFILE, &local_infile);
    if (!mysql_real_connect(db, wp->host, wp->db_user, wp->db_password, wp->db_name, wp->port,
                            wp->socket, 0)) {
        agentdb_where(wp, where, sizeof(where));
        snprintf(err, err_size, "cannot connect to database '%s' as %s@%s: %s", wp->db_name,
                 wp->db_user, where, mysql_error(db));
        mysql_close(db);
        return ERR_DB_CONNECT;
    }
    *ret = db;
    return 0;
}

void agentdb_close(MYSQL *db)
{
    if (db)
        mysql_close(db);
}

/* ---- queries ---- */

struct agentdb_res {
    MYSQL *db;
    MYSQL_RES *res;
};

/* Writes "what: server message (errno)" for a failed statement; what is the statement's start. */
static void agentdb_fail(MYSQL *db, const char *sql, char *err, size_t err_size)
{
    unsigned code = mysql_errno(db);

    if (code == 1412)
        snprintf(err, err_size,
                 "a table's definition changed during the dump (DDL on the primary: %s); this "
                 "sync is abandoned, nothing was applied, the next one starts afresh",
                 mysql_error(db));
    else
        snprintf(err, err_size, "database query failed (%.60s...): %s (error %u)", sql,
                 mysql_error(db), code);
}

int agentdb_exec(MYSQL *db, const char *sql, char *err, size_t err_size)
{
    if (mysql_query(db, sql) != 0) {
        agentdb_fail(db, sql, err, err_size);
        return ERR_DB;
    }
    /* Discard any result (SET and START TRANSACTION have none). */
    do {
        MYSQL_RES *res = mysql_store_result(db);
        if (res)
            mysql_free_result(res);
    } while (mysql_next_result(db) == 0);
    return 0;
}

int agentdb_query(MYSQL *db, const char *sql, bool stream, agentdb_res_t **ret, char *err,
                  size_t err_size)
{
    agentdb_res_t *r;

    if (mysql_query(db, sql) != 0) {
        agentdb_fail(db, sql, err, err_size);
        return ERR_DB;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    r->db = db;
    r->res = stream ? mysql_use_result(db) : mysql_store_result(db);
    if (!r->res) {
        agentdb_fail(db, sql, err, err_size);
        free(r);
        return ERR_DB;
    }
    *ret = r;
    return 0;
}

unsigned agentdb_res_fields(const agentdb_res_t *res)
{
    return mysql_num_fields(res->res);
}

int agentdb_res_next(agentdb_res_t *res, char ***ret_values, unsigned long **ret_lens, char *err,
                     size_t err_size)
{
    MYSQL_ROW row = mysql_fetch_row(res->res);

    if (!row) {
        if (mysql_errno(res->db)) {
            agentdb_fail(res->db, "reading rows", err, err_size);
            return ERR_DB;
        }
        return 0;
    }
    *ret_values = row;
    *ret_lens = mysql_fetch_lengths(res->res);
    return 1;
}

void agentdb_res_free(agentdb_res_t *res)
{
    if (!res)
        return;
    mysql_free_result(res->res);
    free(res);
}

unsigned agentdb_type_code(const char *t)
{
    static const struct {
        const char *name;
        unsigned code;
    } map[] = {
        {"tinyint", MYSQL_TYPE_TINY},
        {"smallint", MYSQL_TYPE_SHORT},
        {"mediumint", MYSQL_TYPE_INT24},
        {"int", MYSQL_TYPE_LONG},
        {"bigint", MYSQL_TYPE_LONGLONG},
        {"decimal", MYSQL_TYPE_NEWDECIMAL},
        {"float", MYSQL_TYPE_FLOAT},
        {"double", MYSQL_TYPE_DOUBLE},
        {"bit", MYSQL_TYPE_BIT},
        {"date", MYSQL_TYPE_DATE},
        {"datetime", MYSQL_TYPE_DATETIME},
        {"timestamp", MYSQL_TYPE_TIMESTAMP},
        {"time", MYSQL_TYPE_TIME},
        {"year", MYSQL_TYPE_YEAR},
        {"char", MYSQL_TYPE_STRING},
        {"binary", MYSQL_TYPE_STRING},
        {"varchar", MYSQL_TYPE_VAR_STRING},
        {"varbinary", MYSQL_TYPE_VAR_STRING},
        {"tinytext", MYSQL_TYPE_BLOB},
        {"text", MYSQL_TYPE_BLOB},
        {"mediumtext", MYSQL_TYPE_BLOB},
        {"longtext", MYSQL_TYPE_BLOB},
        {"tinyblob", MYSQL_TYPE_BLOB},
        {"blob", MYSQL_TYPE_BLOB},
        {"mediumblob", MYSQL_TYPE_BLOB},
        {"longblob", MYSQL_TYPE_BLOB},
        {"enum", MYSQL_TYPE_ENUM},
        {"set", MYSQL_TYPE_SET},
        {"json", MYSQL_TYPE_JSON},
        {"geometry", MYSQL_TYPE_GEOMETRY},
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcasecmp(map[i].name, t))
            return map[i].code;
    return 0;
}

/* ---- grants ---- */

void agentdb_free_lines(char **lines, size_t n)
{
    if (!lines)
        return;
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

/* Copies every row's first column out of a result. */
static int agentdb_copy_rows(MYSQL_RES *res, char ***ret_lines, size_t *ret_n)
{
    size_t n = (size_t)mysql_num_rows(res), i = 0;
    char **lines;
    MYSQL_ROW row;

    if (n > AGENTDB_MAX_GRANTS)
        return ERR_DB;
    lines = calloc(n ? n : 1, sizeof(*lines));
    if (!lines)
        return UV_ENOMEM;
    while (i < n && (row = mysql_fetch_row(res))) {
        unsigned long *len = mysql_fetch_lengths(res);
        lines[i] = strndup(row[0] ? row[0] : "", row[0] ? len[0] : 0);
        if (!lines[i]) {
            agentdb_free_lines(lines, i);
            return UV_ENOMEM;
        }
        i++;
    }
    *ret_lines = lines;
    *ret_n = i;
    return 0;
}

int agentdb_grants(MYSQL *db, char ***ret_lines, size_t *ret_n, char *err, size_t err_size)
{
    MYSQL_RES *res;
    int r;

    if (mysql_query(db, "SHOW GRANTS FOR CURRENT_USER()") != 0 || !(res = mysql_store_result(db))) {
        snprintf(err, err_size, "SHOW GRANTS FOR CURRENT_USER() failed: %s", mysql_error(db));
        return ERR_DB;
    }
    r = agentdb_copy_rows(res, ret_lines, ret_n);
    mysql_free_result(res);
    if (r == ERR_DB)
        snprintf(err, err_size, "SHOW GRANTS returned more than %d lines", AGENTDB_MAX_GRANTS);
    else if (r < 0)
        snprintf(err, err_size, "SHOW GRANTS: out of memory");
    return r;
}

/* ---- reading GRANT lines ---- */

/* One parsed "GRANT privileges ON object TO ..." line, as far as we need it. */
typedef struct grant {
    unsigned privs;
    bool global;  /* ON *.* */
    char db[256]; /* ON `db`.*: the name pattern, quoting removed, escapes kept */
} grant_t;

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static bool starts_word(const char *p, const char *word)
{
    size_t n = strlen(word);
    return !strncasecmp(p, word, n) && (p[n] == ' ' || p[n] == '\t');
}

/* Finds " ON " outside quotes and parentheses. */
static const char *find_on(const char *p)
{
    char quote = 0;
    int depth = 0;

    for (; *p; p++) {
        if (quote) {
            quote = *p == quote ? 0 : quote;
        } else if (*p == '`' || *p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '(' || *p == ')') {
            depth += *p == '(' ? 1 : -1;
        } else if (depth == 0 && (*p == ' ' || *p == '\t') && starts_word(p + 1, "ON")) {
            return p + 1;
        }
    }
    return NULL;
}

/* Adds the privilege named by [s, e) (blanks trimmed) to *privs. */
static void add_privilege(const char *s, const char *e, unsigned *privs)
{
    size_t n;

    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    n = (size_t)(e - s);
    if ((n == 3 && !strncasecmp(s, "ALL", 3)) || (n == 14 && !strncasecmp(s, "ALL PRIVILEGES", 14)))
        *privs |= PRIV_NEEDED;
    for (size_t i = 0; i < sizeof(agentdb_privs) / sizeof(agentdb_privs[0]); i++)
        if (strlen(agentdb_privs[i].name) == n && !strncasecmp(s, agentdb_privs[i].name, n))
            *privs |= agentdb_privs[i].bit;
}

/* Reads the comma-separated privileges in [p, end); column lists "(a, b)" are skipped. */
static unsigned parse_privileges(const char *p, const char *end)
{
    unsigned privs = 0;
    const char *start = p;
    int depth = 0;

    for (; p <= end; p++) {
        if (p == end || (*p == ',' && depth == 0)) {
            add_privilege(start, p, &privs);
            start = p + 1;
        } else if (*p == '(') {
            if (depth++ == 0)
                add_privilege(start, p, &privs); /* SELECT (col): column-level */
        } else if (*p == ')' && depth > 0 && --depth == 0) {
            start = p + 1;
        }
    }
    return privs;
}

/* Reads one identifier of a grant object: `quoted` ("``" is a backtick), "quoted", bare, or
 * '*'. Writes it to out (truncation makes it fail) and returns the position after it, or NULL. */
static const char *parse_ident(const char *p, char *out, size_t size)
{
    size_t o = 0;

    if (*p == '`' || *p == '"') {
        char q = *p++;
        for (;; p++) {
            if (!*p)
                return NULL;
            if (*p == q && p[1] != q)
                break;
            if (*p == q)
                p++;
            if (o + 1 >= size)
                return NULL;
            out[o++] = *p;
        }
        p++;
    } else {
        while (*p && *p != '.' && !isspace((unsigned char)*p)) {
            if (o + 1 >= size)
                return NULL;
            out[o++] = *p++;
        }
        if (o == 0)
            return NULL;
    }
    out[o] = '\0';
    return p;
}

/* Parses a GRANT line. Returns false for lines that give no global or database-wide privilege
 * (role, proxy, routine, table and column grants). */
static bool parse_grant(const char *line, grant_t *g)
{
    const char *p = skip_blanks(line), *on;
    char db[256];
    bool db_star;

    if (!starts_word(p, "GRANT") || !(on = find_on(p)))
        return false;
    g->privs = parse_privileges(p + 5, on - 1);
    p = skip_blanks(on + 2);
    if (starts_word(p, "FUNCTION") || starts_word(p, "PROCEDURE") || starts_word(p, "PACKAGE"))
        return false;
    if (starts_word(p, "TABLE"))
        p = skip_blanks(p + 5);
    db_star = *p == '*';
    if (!(p = db_star ? p + 1 : parse_ident(p, db, sizeof(db))) || *p != '.')
        return false;
    p++;
    if (*p != '*' || (p[1] && !isspace((unsigned char)p[1])))
        return false; /* one table */
    g->global = db_star;
    if (!db_star)
        memcpy(g->db, db, sizeof(db));
    return true;
}

/* Position of the first unescaped wildcard of a LIKE pattern, or INT_MAX if it has none: the
 * server prefers the matching database grant whose wildcard comes latest (exact names first). */
static int wildcard_pos(const char *pattern)
{
    for (int i = 0; pattern[i]; i++) {
        if (pattern[i] == '\\' && pattern[i + 1])
            i++;
        else if (pattern[i] == '%' || pattern[i] == '_')
            return i;
    }
    return INT_MAX;
}

/* SQL LIKE: '%' any run, '_' any one byte, '\' makes the next byte literal. */
static bool like_match(const char *pat, const char *s)
{
    const char *star_pat = NULL, *star_s = NULL;

    for (;;) {
        if (*pat == '%') {
            star_pat = ++pat;
            star_s = s;
            continue;
        }
        if (!*pat && !*s)
            return true;
        if (*s) {
            const char *lit = pat[0] == '\\' && pat[1] ? pat + 1 : pat;
            if ((*pat == '_' || (*lit && *lit == *s))) {
                pat = lit + 1;
                s++;
                continue;
            }
        }
        if (!star_pat || !*star_s)
            return false;
        pat = star_pat;
        s = ++star_s;
    }
}

int agentdb_check_privileges(char **grant_lines, size_t n, const char *db_name, char *missing,
                             size_t missing_size)
{
    unsigned global = 0, db = 0, have;
    int best = -1;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        grant_t g = {0};
        if (!grant_lines[i] || !parse_grant(grant_lines[i], &g))
            continue;
        if (g.global) {
            global |= g.privs;
        } else if (like_match(g.db, db_name) && wildcard_pos(g.db) > best) {
            best = wildcard_pos(g.db);
            db = g.privs;
        }
    }
    have = global | db;
    if (missing && missing_size)
        missing[0] = '\0';
    for (size_t i = 0; i < sizeof(agentdb_privs) / sizeof(agentdb_privs[0]); i++) {
        if (have & agentdb_privs[i].bit)
            continue;
        if (missing && o < missing_size)
            o += (size_t)snprintf(missing + o, missing_size - o, "%s%s", o ? ", " : "",
                                  agentdb_privs[i].name);
    }
    return (have & PRIV_NEEDED) == PRIV_NEEDED ? 0 : ERR_DB_PRIVILEGE;
}
