/* The agent's side of the database phase (see dbsend.h).
 *
 * Consistency with only a shared host's grants (no RELOAD, PROCESS or SUPER):
 *   - connection B (only when the database has non-transactional tables: MyISAM, Aria, ...)
 *     takes LOCK TABLES ... READ on exactly those tables;
 *   - while B holds the lock, connection A opens REPEATABLE READ + START TRANSACTION WITH
 *     CONSISTENT SNAPSHOT, READ ONLY; every InnoDB table is read from that one snapshot;
 *   - the non-transactional tables are digested and read on B under the lock, which is released
 *     as soon as they are sent (before the InnoDB tables), so MyISAM writers wait only for them.
 * Both sessions raise net_read_timeout/net_write_timeout: a slow link back-pressures the stream
 * (mysql_use_result) and the server's default of 60 s would kill it.
 *
 * Digests are computed by the server with SELECT-only SQL inside the snapshot (no rows cross the
 * network for them): per row the first 64 bits of an MD5 over every non-generated column as
 * length-prefixed bytes (so NULL, '' and value boundaries are distinct), summed into an exact
 * DECIMAL with the row count (order-independent, and unlike BIT_XOR duplicate rows do not
 * cancel; one MD5 per row, one scan: ~1 s per million wp_postmeta rows); controller/dbddl.c
 * dbddl_digest_sql builds the very same query. The same value is also computed in C from a row
 * stream (wire_rowsum_t): by the controller over what it hands to LOAD DATA (its check of every
 * import), and here over the rows of a deferred table as they are sent (digest_obj), which
 * spares a first sync the separate read of every table. A table's summary digest is SHA-256 over
 * its canonical definition and that row digest: the controller asks only for tables whose summary
 * changed.
 *
 * Rows go out in the MySQL text form with character_set_results=binary: every column arrives
 * in its own character set, byte for byte (4-byte UTF-8, invalid UTF-8 in latin1 or binary
 * columns, NUL bytes), and the controller loads them with CHARACTER SET binary. Memory is bounded
 * by one RowBatch (DBSEND_BATCH_ROWS rows or DBSEND_BATCH_BYTES of values, whichever first).
 */
#include "dbsend.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "db.h"
#include "err.h"
#include "fault.h"

#define DBSEND_BATCH_ROWS   1000
#define DBSEND_BATCH_BYTES  (1u << 20)
#define DBSEND_NEED_TIMEOUT (30u * 60 * 1000) /* the controller compares digests only */
#define DBSEND_MAX_OBJECTS  100000
#define DBSEND_NET_TIMEOUT  "3600"
/* Chunks of a table with a single-column integer primary key: chunk c holds the keys
 * [c * W, (c + 1) * W). Fixed key ranges, so an insert or update changes only its own chunk's
 * digest. W is DBSEND_CHUNK_WIDTH, or DBSEND_CHUNK_WIDTH_WIDE for a table with a TEXT, BLOB or
 * JSON column (wp_posts, wp_postmeta, wp_options, wp_comments): such rows are often kilobytes
 * each, and a chunk is what one changed row costs on the wire (a new comment moves its post's
 * comment_count: 4,096 posts were ~6.6 MB). W follows from the definition only, so it stays the
 * same from sync to sync (row statistics would move it, and every chunk with it); a width other
 * than 4,096 is written into the definition line ("d:<hex>/<W>"), which the controller reads
 * (controller/dbrecv.c chunk_width) and compares. Tables under 4 * W rows go whole. */
#define DBSEND_CHUNK_WIDTH      4096
#define DBSEND_CHUNK_WIDTH_WIDE 256

/* One table, view or trigger of the site's database. */
typedef struct obj {
    wire_table_def_t def; /* strings and arrays owned (freed by obj_clear) */
    bool nontx;           /* read on the locked connection */
    bool deferred; /* not digested yet (see digest_obj): digested while sent, or on request */
    bool needed;
    uint64_t rows;
    char rowsum[128]; /* "count:sum" (base tables) */
    uint8_t digest[32];
    const char *pk;       /* the single integer primary key column, or NULL: no chunks */
    uint32_t width;       /* keys per chunk */
    wire_bytes_t *chunks; /* "d:<def hex>" then "c:<chunk>:count:sum" per non-empty chunk */
    size_t n_chunks;
    uint32_t *want; /* chunks DbNeed asked for (partial) */
    size_t n_want;
    bool partial;
    uint64_t sent;       /* rows sent */
    int64_t update_time; /* information_schema UPDATE_TIME (unix), -1: NULL */
    char stamp[64];      /* CREATE_TIME and TABLE_ROWS: TRUNCATE moves neither UPDATE_TIME nor
                          * CREATE_TIME, but empties TABLE_ROWS */
    char defhash[65];    /* SHA-256 of the definition without AUTO_INCREMENT (hex) */
} obj_t;

typedef struct dbsend {
    MYSQL *a, *b; /* a: the snapshot; b: LOCK TABLES on non-transactional tables */
    const msgio_t *io;
    obj_t *objs;
    size_t n_objs, cap_objs;
    dbsend_stats_t *stats;
    char *err;
    size_t err_size;
    int64_t snap_time; /* server clock when the snapshot opened (unix seconds) */
    char *cache;       /* the digest cache's text (NULL: none) */
    bool routines;     /* also stored procedures, functions and events */
} dbsend_t;

/* ---- small helpers ---- */

static char *dup_or_empty(const char *s, unsigned long len)
{
    char *r = malloc(len + 1);
    if (!r)
        return NULL;
    if (s)
        memcpy(r, s, len);
    r[s ? len : 0] = '\0';
    return r;
}

/* Appends name as a backtick-quoted identifier. */
static int sql_ident(buf_t *b, const char *name)
{
    int r = buf_append(b, "`", 1);
    for (const char *p = name; r == 0 && *p; p++)
        r = *p == '`' ? buf_append(b, "``", 2) : buf_append(b, p, 1);
    return r < 0 ? r : buf_append(b, "`", 1);
}

/* Appends s as a quoted string literal (backslash escapes; the session's sql_mode is ''). */
static int sql_literal(buf_t *b, const char *s)
{
    int r = buf_append(b, "'", 1);
    for (const char *p = s; r == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            r = buf_append(b, "\\", 1);
        if (r == 0)
            r = buf_append(b, p, 1);
    }
    return r < 0 ? r : buf_append(b, "'", 1);
}

/* NUL-terminates b's text (without counting the NUL) and returns it. */
static const char *buf_cstr(buf_t *b)
{
    if (buf_append(b, "", 1) < 0)
        return NULL;
    b->len--;
    return (const char *)buf_data(b);
}

static void obj_clear(obj_t *o)
{
    wire_table_def_t *d = &o->def;
    for (size_t i = 0; i < o->n_chunks; i++)
        free((void *)o->chunks[i].data);
    free(o->chunks);
    free(o->want);
    free((char *)d->name);
    free((char *)d->engine);
    free((char *)d->charset);
    free((char *)d->collation);
    free((char *)d->create_sql);
    free((char *)d->comment);
    free((char *)d->sql_mode);
    free((char *)d->time_zone);
    for (size_t i = 0; i < d->n_columns; i++) {
        const wire_column_def_t *c = &d->columns[i];
        free((char *)c->name);
        free((char *)c->column_type);
        free((char *)c->charset);
        free((char *)c->collation);
        free((char *)c->default_value);
        free((char *)c->extra);
        free((char *)c->generation_expression);
    }
    free((void *)d->columns);
    for (size_t i = 0; i < d->n_indexes; i++) {
        const wire_index_def_t *x = &d->indexes[i];
        free((char *)x->name);
        free((char *)x->index_type);
        for (size_t j = 0; j < x->n_columns; j++)
            free((char *)x->columns[j]);
        free((void *)x->columns);
        free((void *)x->prefix_lengths);
    }
    free((void *)d->indexes);
    for (size_t i = 0; i < d->n_checks; i++) {
        free((char *)d->checks[i].name);
        free((char *)d->checks[i].clause);
        free((char *)d->checks[i].column);
    }
    free((void *)d->checks);
}

static obj_t *add_obj(dbsend_t *s, const char *name, unsigned long len, wire_table_kind_t kind)
{
    if (s->n_objs == s->cap_objs) {
        size_t cap = s->cap_objs ? s->cap_objs * 2 : 64;
        obj_t *n = cap > DBSEND_MAX_OBJECTS ? NULL : realloc(s->objs, cap * sizeof(*n));
        if (!n)
            return NULL;
        s->objs = n;
        s->cap_objs = cap;
    }
    obj_t *o = &s->objs[s->n_objs];
    memset(o, 0, sizeof(*o));
    o->def.kind = kind;
    o->def.name = dup_or_empty(name, len);
    if (!o->def.name)
        return NULL;
    s->n_objs++;
    return o;
}

/* Runs a buffered query; for each row calls fn. */
typedef int (*row_fn)(dbsend_t *s, void *ctx, char **v, unsigned long *len);

static int each_row(dbsend_t *s, MYSQL *db, const char *sql, unsigned min_fields, row_fn fn,
                    void *ctx)
{
    agentdb_res_t *res;
    char **v;
    unsigned long *len;
    int r = agentdb_query(db, sql, false, &res, s->err, s->err_size);

    if (r < 0)
        return r;
    if (agentdb_res_fields(res) < min_fields) {
        agentdb_res_free(res);
        snprintf(s->err, s->err_size, "unexpected result shape for: %.60s", sql);
        return ERR_DB;
    }
    while ((r = agentdb_res_next(res, &v, &len, s->err, s->err_size)) == 1) {
        r = fn(s, ctx, v, len);
        if (r < 0)
            break;
    }
    agentdb_res_free(res);
    if (r == UV_ENOMEM)
        snprintf(s->err, s->err_size, "out of memory reading the catalogue");
    return r < 0 ? r : 0;
}

/* ---- catalogue ---- */

static int on_table(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_COLLATION, AUTO_INCREMENT, TABLE_COMMENT, charset */
    if (!v[0] || !v[1] || strcmp(v[1], "BASE TABLE") != 0)
        return 0; /* views come from information_schema.VIEWS */
    obj_t *o = add_obj(s, v[0], len[0], WIRE_TABLE_BASE);
    if (!o)
        return UV_ENOMEM;
    o->def.engine = dup_or_empty(v[2], v[2] ? len[2] : 0);
    o->def.collation = dup_or_empty(v[3], v[3] ? len[3] : 0);
    o->def.auto_increment = v[4] ? strtoull(v[4], NULL, 10) : 0;
    o->def.comment = dup_or_empty(v[5], v[5] ? len[5] : 0);
    o->def.charset = dup_or_empty(v[6], v[6] ? len[6] : 0);
    if (!o->def.engine || !o->def.collation || !o->def.comment || !o->def.charset)
        return UV_ENOMEM;
    o->nontx = strcasecmp(o->def.engine, "InnoDB") != 0;
    return 0;
}

typedef struct cols_ctx {
    obj_t *o;
    size_t cap;
} cols_ctx_t;

static int on_column(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, COLLATION_NAME,
     * COLUMN_DEFAULT, EXTRA, GENERATION_EXPRESSION, IS_GENERATED */
    cols_ctx_t *c = ctx;
    wire_table_def_t *d = &c->o->def;
    if (d->n_columns == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        wire_column_def_t *n = realloc((void *)d->columns, cap * sizeof(*n));
        if (!n)
            return UV_ENOMEM;
        d->columns = n;
        c->cap = cap;
    }
    wire_column_def_t *col = (wire_column_def_t *)&d->columns[d->n_columns];
    memset(col, 0, sizeof(*col));
    d->n_columns++;
    col->name = dup_or_empty(v[0], len[0]);
    col->column_type = dup_or_empty(v[1], len[1]);
    col->sql_type = v[2] ? agentdb_type_code(v[2]) : 0;
    col->nullable = v[3] && !strcmp(v[3], "YES");
    col->charset = dup_or_empty(v[4], v[4] ? len[4] : 0);
    col->collation = dup_or_empty(v[5], v[5] ? len[5] : 0);
    col->has_default = v[6] != NULL;
    col->default_value = dup_or_empty(v[6], v[6] ? len[6] : 0);
    col->extra = dup_or_empty(v[7], v[7] ? len[7] : 0);
    col->generated = v[9] && strcmp(v[9], "NEVER") != 0;
    col->generation_expression =
        dup_or_empty(col->generated ? v[8] : NULL, col->generated && v[8] ? len[8] : 0);
    col->stored = col->generated && col->extra && strstr(col->extra, "STORED") != NULL;
    if (!col->name || !col->column_type || !col->charset || !col->collation ||
        !col->default_value || !col->extra || !col->generation_expression)
        return UV_ENOMEM;
    /* Bytes, not text: no character set (binary, varbinary, blobs) or BIT. */
    col->binary = !v[4] || (v[2] && !strcasecmp(v[2], "bit"));
    if (col->generated) {
        /* EXTRA says "VIRTUAL GENERATED"/"STORED GENERATED": the controller rebuilds it. */
        ((char *)col->extra)[0] = '\0';
    }
    return 0;
}

static int on_index(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE, SEQ_IN_INDEX */
    wire_table_def_t *d = ctx;
    wire_index_def_t *x = d->n_indexes ? (wire_index_def_t *)&d->indexes[d->n_indexes - 1] : NULL;

    if (!v[0] || !v[2] || !v[5])
        return 0; /* expression indexes: not supported by MariaDB 10.11 anyway */
    if (!x || strcmp(x->name, v[0]) != 0 || strcmp(v[5], "1") == 0) {
        wire_index_def_t *n = realloc((void *)d->indexes, (d->n_indexes + 1) * sizeof(*n));
        if (!n)
            return UV_ENOMEM;
        d->indexes = n;
        x = &n[d->n_indexes++];
        memset(x, 0, sizeof(*x));
        x->name = dup_or_empty(v[0], len[0]);
        x->unique = v[1] && !strcmp(v[1], "0");
        x->index_type = dup_or_empty(v[4], v[4] ? len[4] : 0);
        if (!x->name || !x->index_type)
            return UV_ENOMEM;
    }
    const char **cols = realloc((void *)x->columns, (x->n_columns + 1) * sizeof(*cols));
    if (!cols)
        return UV_ENOMEM;
    x->columns = cols;
    uint32_t *pl = realloc((void *)x->prefix_lengths, (x->n_columns + 1) * sizeof(*pl));
    if (!pl)
        return UV_ENOMEM;
    x->prefix_lengths = pl;
    pl[x->n_columns] = v[3] ? (uint32_t)strtoul(v[3], NULL, 10) : 0;
    cols[x->n_columns] = dup_or_empty(v[2], len[2]);
    if (!cols[x->n_columns])
        return UV_ENOMEM;
    x->n_columns++;
    x->n_prefix_lengths = x->n_columns;
    return 0;
}

static int on_view(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE, ALGORITHM,
     * CHARACTER_SET_CLIENT, COLLATION_CONNECTION */
    buf_t sql = BUF_INIT;
    obj_t *o = add_obj(s, v[0], len[0], WIRE_TABLE_VIEW);
    int r;

    if (!o)
        return UV_ENOMEM;
    /* No DEFINER: the controller refuses it, the view is created as its own account. */
    r = buf_printf(&sql, "CREATE ALGORITHM=%s SQL SECURITY %s VIEW ", v[4] ? v[4] : "UNDEFINED",
                   v[3] ? v[3] : "DEFINER");
    if (r == 0)
        r = sql_ident(&sql, o->def.name);
    if (r == 0)
        r = buf_append_str(&sql, " AS ");
    if (r == 0 && v[1])
        r = buf_append(&sql, v[1], len[1]);
    if (r == 0 && v[2] && strcmp(v[2], "NONE") != 0)
        r = buf_printf(&sql, " WITH %s CHECK OPTION", v[2]);
    if (r == 0 && !buf_cstr(&sql))
        r = UV_ENOMEM;
    if (r == 0) {
        o->def.create_sql = dup_or_empty((const char *)buf_data(&sql), sql.len);
        o->def.charset = dup_or_empty(v[5], v[5] ? len[5] : 0);
        o->def.collation = dup_or_empty(v[6], v[6] ? len[6] : 0);
        if (!o->def.create_sql || !o->def.charset || !o->def.collation)
            r = UV_ENOMEM;
    }
    buf_free(&sql);
    return r;
}

/* SHOW CREATE TRIGGER: the statement as written on the primary (what mariadb-dump prints),
 * without its DEFINER clause; kept only when it plainly starts CREATE TRIGGER <name>. */
static int on_show_trigger(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    obj_t *o = ctx;
    buf_t name = BUF_INIT, out = BUF_INIT;
    const char *p = v[2], *t;
    int r = 0;

    if (!p || strncasecmp(p, "CREATE ", 7) != 0)
        return 0;
    p += 7;
    if (!strncasecmp(p, "DEFINER", 7)) {
        /* DEFINER=`user`@`host` TRIGGER ...: skip to the first " TRIGGER " after it. */
        t = strcasestr(p, " TRIGGER ");
        if (!t)
            return 0;
        p = t + 1;
    }
    if (strncasecmp(p, "TRIGGER ", 8) != 0)
        return 0;
    r = sql_ident(&name, o->def.name);
    if (r == 0 && buf_cstr(&name)) {
        const char *n = p + 8, *q = buf_cstr(&name);
        bool quoted = !strncmp(n, q, name.len) && n[name.len] == ' ';
        bool bare = !strncmp(n, o->def.name, strlen(o->def.name)) && n[strlen(o->def.name)] == ' ';
        if (quoted || bare) {
            r = buf_append_str(&out, "CREATE ");
            if (r == 0)
                r = buf_append(&out, p, strlen(p));
            if (r == 0 && buf_cstr(&out)) {
                char *sql = dup_or_empty((const char *)buf_data(&out), out.len);
                if (!sql) {
                    r = UV_ENOMEM;
                } else {
                    free((char *)o->def.create_sql);
                    o->def.create_sql = sql;
                }
            }
        }
    }
    buf_free(&name);
    buf_free(&out);
    return r;
}

static int on_trigger(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_STATEMENT,
     * SQL_MODE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION */
    buf_t sql = BUF_INIT;
    obj_t *o = add_obj(s, v[0], len[0], WIRE_TABLE_TRIGGER);
    int r;

    if (!o)
        return UV_ENOMEM;
    r = buf_append_str(&sql, "CREATE TRIGGER ");
    if (r == 0)
        r = sql_ident(&sql, o->def.name);
    if (r == 0)
        r = buf_printf(&sql, " %s %s ON ", v[1] ? v[1] : "", v[2] ? v[2] : "");
    if (r == 0)
        r = sql_ident(&sql, v[3] ? v[3] : "");
    if (r == 0)
        r = buf_append_str(&sql, " FOR EACH ROW ");
    if (r == 0 && v[4])
        r = buf_append(&sql, v[4], len[4]);
    if (r == 0 && !buf_cstr(&sql))
        r = UV_ENOMEM;
    if (r == 0) {
        o->def.create_sql = dup_or_empty((const char *)buf_data(&sql), sql.len);
        o->def.sql_mode = dup_or_empty(v[5], v[5] ? len[5] : 0);
        o->def.charset = dup_or_empty(v[6], v[6] ? len[6] : 0);
        o->def.collation = dup_or_empty(v[7], v[7] ? len[7] : 0);
        if (!o->def.create_sql || !o->def.sql_mode || !o->def.charset || !o->def.collation)
            r = UV_ENOMEM;
    }
    buf_reset(&sql);
    if (r == 0)
        r = buf_append_str(&sql, "SHOW CREATE TRIGGER ");
    if (r == 0)
        r = sql_ident(&sql, o->def.name);
    if (r == 0)
        r = buf_cstr(&sql) ? each_row(s, s->a, buf_cstr(&sql), 3, on_show_trigger, o) : UV_ENOMEM;
    buf_free(&sql);
    return r;
}

static int on_check(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* CONSTRAINT_NAME, CHECK_CLAUSE, LEVEL */
    wire_table_def_t *d = ctx;
    buf_t want = BUF_INIT;
    bool column = v[2] && !strcmp(v[2], "Column"), json = false;
    int r = 0;

    if (!v[0] || !v[1])
        return 0;
    for (size_t i = 0; r == 0 && column && i < d->n_columns; i++) {
        wire_column_def_t *c = (wire_column_def_t *)&d->columns[i];
        if (strcmp(c->name, v[0]) != 0)
            continue;
        buf_reset(&want);
        r = buf_append_str(&want, "json_valid(");
        if (r == 0)
            r = sql_ident(&want, c->name);
        if (r == 0)
            r = buf_append(&want, ")", 1);
        if (r == 0 && want.len == len[1] && !memcmp(buf_data(&want), v[1], len[1])) {
            c->sql_type = 245; /* MYSQL_TYPE_JSON: MariaDB's JSON is this CHECK */
            json = true;
        }
    }
    buf_free(&want);
    if (r < 0 || json)
        return r;
    /* Any other CHECK constraint, carried as written (the controller checks the clause). */
    wire_check_def_t *n = realloc((void *)d->checks, (d->n_checks + 1) * sizeof(*n));
    if (!n)
        return UV_ENOMEM;
    d->checks = n;
    wire_check_def_t *k = &n[d->n_checks++];
    k->name = dup_or_empty(v[0], len[0]);
    k->clause = dup_or_empty(v[1], len[1]);
    k->column = dup_or_empty(column ? v[0] : NULL, column ? len[0] : 0);
    return k->name && k->clause && k->column ? 0 : UV_ENOMEM;
}

/* ---- stored routines and events ([database] routines = yes) ----
 *
 * With a shared host's grants (CREATE ROUTINE, ALTER ROUTINE, EXECUTE, EVENT) the site's user
 * lists its routines and events in information_schema and reads their statements with SHOW
 * CREATE PROCEDURE / FUNCTION / EVENT. MariaDB shows a routine's body only to its definer (or
 * with SELECT on mysql.proc): a routine another account defined is reported by name, with what
 * to do, rather than silently left out. The DEFINER clause is removed here (the controller
 * refuses it and creates every object as its own account). */

/* Skips DEFINER=`user`@`host` (or a role, or unquoted parts) at p; returns what follows the
 * blank after it, or NULL when p does not hold that shape. */
static const char *skip_definer(const char *p)
{
    if (strncasecmp(p, "DEFINER", 7) != 0)
        return p;
    p += 7;
    while (*p == ' ')
        p++;
    if (*p++ != '=')
        return NULL;
    while (*p == ' ')
        p++;
    for (int part = 0; part < 2; part++) {
        if (*p == '`' || *p == '\'' || *p == '"') {
            char q = *p++;
            for (; *p && !(*p == q && p[1] != q); p++)
                if (*p == q)
                    p++;
            if (*p++ != q)
                return NULL;
        } else {
            while (*p && *p != '@' && *p != ' ')
                p++;
        }
        if (part == 0 && *p != '@')
            break; /* a role: no host */
        if (part == 0)
            p++;
    }
    if (*p != ' ' && *p != '\n')
        return NULL;
    while (*p == ' ' || *p == '\n')
        p++;
    return p;
}

typedef struct routine_ctx {
    obj_t *o;
    const char *what; /* "procedure", "function", "event" */
    unsigned sql_col, tz_col, cs_col;
} routine_ctx_t;

/* One row of SHOW CREATE PROCEDURE / FUNCTION / EVENT. */
static int on_show_routine(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    routine_ctx_t *c = ctx;
    obj_t *o = c->o;
    const char *p = v[c->sql_col], *rest;

    if (!p) {
        snprintf(s->err, s->err_size,
                 "%s %s: the site's database user cannot read its body (another account "
                 "defined it); recreate it as that user, or set [database] routines = no",
                 c->what, o->def.name);
        return ERR_DB_PRIVILEGE;
    }
    if (strncasecmp(p, "CREATE ", 7) != 0 || !(rest = skip_definer(p + 7))) {
        snprintf(s->err, s->err_size, "%s %s: SHOW CREATE returned an unexpected statement",
                 c->what, o->def.name);
        return ERR_DB;
    }
    buf_t sql = BUF_INIT;
    int r = buf_append_str(&sql, "CREATE ");
    if (r == 0)
        r = buf_append(&sql, rest, len[c->sql_col] - (size_t)(rest - p));
    if (r == 0 && !buf_cstr(&sql))
        r = UV_ENOMEM;
    if (r == 0) {
        o->def.create_sql = dup_or_empty((const char *)buf_data(&sql), sql.len);
        o->def.sql_mode = dup_or_empty(v[1], v[1] ? len[1] : 0);
        o->def.charset = dup_or_empty(v[c->cs_col], v[c->cs_col] ? len[c->cs_col] : 0);
        o->def.collation =
            dup_or_empty(v[c->cs_col + 1], v[c->cs_col + 1] ? len[c->cs_col + 1] : 0);
        o->def.time_zone = c->tz_col ? dup_or_empty(v[c->tz_col], v[c->tz_col] ? len[c->tz_col] : 0)
                                     : dup_or_empty(NULL, 0);
        if (!o->def.create_sql || !o->def.sql_mode || !o->def.charset || !o->def.collation ||
            !o->def.time_zone)
            r = UV_ENOMEM;
    }
    buf_free(&sql);
    return r;
}

static int on_routine(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* ROUTINE_NAME, ROUTINE_TYPE ("PROCEDURE", "FUNCTION") or EVENT_NAME, "EVENT" */
    bool event = v[1] && !strcmp(v[1], "EVENT"), func = v[1] && !strcmp(v[1], "FUNCTION");
    obj_t *o;
    buf_t q = BUF_INIT;
    int r;

    if (!v[0] || !v[1] || (!event && !func && strcmp(v[1], "PROCEDURE") != 0))
        return 0; /* PACKAGE (Oracle mode): not a thing WordPress has */
    o = add_obj(s, v[0], len[0],
                event  ? WIRE_TABLE_EVENT
                : func ? WIRE_TABLE_FUNCTION
                       : WIRE_TABLE_ROUTINE);
    if (!o)
        return UV_ENOMEM;
    /* SHOW CREATE PROCEDURE/FUNCTION: name, sql_mode, Create, character_set_client,
     * collation_connection, Database Collation; SHOW CREATE EVENT has time_zone third. */
    routine_ctx_t c = {.o = o,
                       .what = event  ? "event"
                               : func ? "function"
                                      : "procedure",
                       .sql_col = event ? 3 : 2,
                       .tz_col = event ? 2 : 0,
                       .cs_col = event ? 4 : 3};
    r = buf_printf(&q, "SHOW CREATE %s ", v[1]);
    if (r == 0)
        r = sql_ident(&q, o->def.name);
    if (r == 0)
        r = buf_cstr(&q) ? each_row(s, s->a, buf_cstr(&q), event ? 6 : 5, on_show_routine, &c)
                         : UV_ENOMEM;
    if (r == 0 && !o->def.create_sql) {
        snprintf(s->err, s->err_size, "%s %s: SHOW CREATE returned nothing", c.what, o->def.name);
        r = ERR_DB;
    }
    buf_free(&q);
    return r;
}

static int load_routines(dbsend_t *s)
{
    int r = each_row(s, s->a,
                     "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE "
                     "ROUTINE_SCHEMA = DATABASE() ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
                     2, on_routine, NULL);
    if (r == 0)
        r = each_row(s, s->a,
                     "SELECT EVENT_NAME, 'EVENT' FROM information_schema.EVENTS WHERE "
                     "EVENT_SCHEMA = DATABASE() ORDER BY EVENT_NAME",
                     2, on_routine, NULL);
    return r;
}

/* Reads columns and indexes of one base table. */
static int load_table_def(dbsend_t *s, obj_t *o)
{
    buf_t q = BUF_INIT;
    cols_ctx_t cc = {.o = o};
    int r =
        buf_append_str(&q, "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, "
                           "CHARACTER_SET_NAME, COLLATION_NAME, COLUMN_DEFAULT, EXTRA, "
                           "GENERATION_EXPRESSION, IS_GENERATED FROM information_schema.COLUMNS "
                           "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ");
    if (r == 0)
        r = sql_literal(&q, o->def.name);
    if (r == 0)
        r = buf_append_str(&q, " ORDER BY ORDINAL_POSITION");
    if (r == 0)
        r = buf_cstr(&q) ? each_row(s, s->a, buf_cstr(&q), 10, on_column, &cc) : UV_ENOMEM;
    buf_reset(&q);
    /* No ORDER BY: the natural order is the table's key order, which SHOW CREATE TABLE keeps. */
    if (r == 0)
        r = buf_append_str(&q, "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE, "
                               "SEQ_IN_INDEX FROM information_schema.STATISTICS WHERE "
                               "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ");
    if (r == 0)
        r = sql_literal(&q, o->def.name);
    if (r == 0)
        r = buf_cstr(&q) ? each_row(s, s->a, buf_cstr(&q), 6, on_index, &o->def) : UV_ENOMEM;
    buf_reset(&q);
    /* MariaDB's JSON is LONGTEXT plus a column CHECK (json_valid(`c`)): sent as MYSQL_TYPE_JSON.
     * Other CHECK constraints are sent as they are, in their natural (creation) order, which
     * SHOW CREATE TABLE keeps. */
    if (r == 0)
        r = buf_append_str(&q, "SELECT CONSTRAINT_NAME, CHECK_CLAUSE, LEVEL FROM "
                               "information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = "
                               "DATABASE() AND TABLE_NAME = ");
    if (r == 0)
        r = sql_literal(&q, o->def.name);
    if (r == 0)
        r = buf_cstr(&q) ? each_row(s, s->a, buf_cstr(&q), 3, on_check, &o->def) : UV_ENOMEM;
    buf_free(&q);
    if (r == 0 && o->def.n_columns == 0) {
        snprintf(s->err, s->err_size, "table %s: no columns in information_schema", o->def.name);
        r = ERR_DB;
    }
    return r;
}

static int load_catalogue(dbsend_t *s, bool *ret_any_nontx)
{
    int r = each_row(s, s->a,
                     "SELECT t.TABLE_NAME, t.TABLE_TYPE, t.ENGINE, t.TABLE_COLLATION, "
                     "t.AUTO_INCREMENT, t.TABLE_COMMENT, c.CHARACTER_SET_NAME FROM "
                     "information_schema.TABLES t LEFT JOIN "
                     "information_schema.COLLATION_CHARACTER_SET_APPLICABILITY c ON "
                     "c.COLLATION_NAME = t.TABLE_COLLATION WHERE t.TABLE_SCHEMA = DATABASE() "
                     "ORDER BY t.TABLE_NAME",
                     7, on_table, NULL);
    *ret_any_nontx = false;
    for (size_t i = 0; r == 0 && i < s->n_objs; i++) {
        r = load_table_def(s, &s->objs[i]);
        *ret_any_nontx |= s->objs[i].nontx;
    }
    if (r == 0)
        r = each_row(s, s->a,
                     "SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE, ALGORITHM, "
                     "CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.VIEWS "
                     "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
                     7, on_view, NULL);
    if (r == 0)
        r = each_row(s, s->a,
                     "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, "
                     "ACTION_STATEMENT, SQL_MODE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION "
                     "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY "
                     "EVENT_OBJECT_TABLE, EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER",
                     8, on_trigger, NULL);
    if (r == 0 && s->routines)
        r = load_routines(s);
    return r;
}

/* ---- digests ---- */

/* Appends the column list (non-generated columns) for SELECT and for the digest. */
static int select_list(buf_t *q, const wire_table_def_t *d, bool digest)
{
    bool first = true;
    int r = 0;

    for (size_t i = 0; r == 0 && i < d->n_columns; i++) {
        const wire_column_def_t *c = &d->columns[i];
        if (c->generated)
            continue;
        if (!digest) {
            r = first ? 0 : buf_append(q, ",", 1);
            if (r == 0)
                r = sql_ident(q, c->name);
        } else {
            r = buf_append_str(q, first ? "IFNULL(CONCAT(LENGTH(" : ",IFNULL(CONCAT(LENGTH(");
            if (r == 0)
                r = sql_ident(q, c->name);
            if (r == 0)
                r = buf_append_str(q, "),':',CAST(");
            if (r == 0)
                r = sql_ident(q, c->name);
            if (r == 0)
                r = buf_append_str(q, " AS BINARY)),'-')");
        }
        first = false;
    }
    if (r == 0 && first)
        r = buf_append_str(q, digest ? "''" : "1");
    return r;
}

/* The row digest query: the controller's digest_sql (controller/dbrecv.c) must build the very
 * same text for the same columns. */
static int digest_sql(buf_t *q, const wire_table_def_t *d)
{
    int r = buf_append_str(q, "SELECT COUNT(*), IFNULL(SUM(CAST(CONV(LEFT(MD5(CONCAT(");
    if (r == 0)
        r = select_list(q, d, true);
    if (r == 0)
        r = buf_append_str(q, ")),16),16,10) AS UNSIGNED)),0) FROM ");
    if (r == 0)
        r = sql_ident(q, d->name);
    return r;
}

/* Canonical text of a definition, for the summary digest. */
static int canon_def(buf_t *b, const wire_table_def_t *d)
{
    int r = buf_printf(b,
                       "kind=%d\nname=%s\nengine=%s\ncharset=%s\ncollation=%s\nai=%llu\n"
                       "comment=%s\nsql_mode=%s\nsql=%s\n",
                       (int)d->kind, d->name, d->engine ? d->engine : "",
                       d->charset ? d->charset : "", d->collation ? d->collation : "",
                       (unsigned long long)d->auto_increment, d->comment ? d->comment : "",
                       d->sql_mode ? d->sql_mode : "", d->create_sql ? d->create_sql : "");
    if (r == 0 && d->time_zone && d->time_zone[0])
        r = buf_printf(b, "time_zone=%s\n", d->time_zone);
    for (size_t i = 0; r == 0 && i < d->n_columns; i++) {
        const wire_column_def_t *c = &d->columns[i];
        r = buf_printf(b, "col\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%d\n", c->name,
                       c->column_type, c->nullable, c->charset, c->collation, c->has_default,
                       c->default_value, c->extra, c->generated, c->generation_expression,
                       c->stored);
    }
    for (size_t i = 0; r == 0 && i < d->n_indexes; i++) {
        const wire_index_def_t *x = &d->indexes[i];
        r = buf_printf(b, "idx\t%s\t%d\t%s", x->name, x->unique, x->index_type);
        for (size_t j = 0; r == 0 && j < x->n_columns; j++)
            r = buf_printf(b, "\t%s/%u", x->columns[j],
                           x->n_prefix_lengths ? x->prefix_lengths[j] : 0);
        if (r == 0)
            r = buf_append(b, "\n", 1);
    }
    for (size_t i = 0; r == 0 && i < d->n_checks; i++)
        r = buf_printf(b, "check\t%s\t%s\t%s\n", d->checks[i].name, d->checks[i].column,
                       d->checks[i].clause);
    return r;
}

/* acc += b, both non-negative decimal integers (acc has room for size bytes). */
static bool dec_add(char *acc, size_t size, const char *b)
{
    size_t la = strlen(acc), lb = strlen(b), n = (la > lb ? la : lb) + 1;
    char tmp[128];
    int carry = 0;

    if (n + 1 > sizeof(tmp) || n + 1 > size)
        return false;
    for (size_t i = 0; i < n; i++) {
        int da = i < la ? acc[la - 1 - i] - '0' : 0, db = i < lb ? b[lb - 1 - i] - '0' : 0;
        int v = da + db + carry;
        tmp[n - 1 - i] = (char)('0' + v % 10);
        carry = v / 10;
    }
    tmp[n] = '\0';
    const char *p = tmp;
    while (p[0] == '0' && p[1])
        p++;
    memmove(acc, p, strlen(p) + 1);
    return true;
}

/* The single integer primary key column of a table, or NULL. */
static const char *chunk_key(const wire_table_def_t *d)
{
    for (size_t i = 0; i < d->n_indexes; i++) {
        const wire_index_def_t *x = &d->indexes[i];
        if (strcmp(x->name, "PRIMARY") != 0)
            continue;
        if (x->n_columns != 1 || (x->n_prefix_lengths && x->prefix_lengths[0]))
            return NULL;
        for (size_t j = 0; j < d->n_columns; j++) {
            unsigned t = d->columns[j].sql_type;
            if (!strcmp(d->columns[j].name, x->columns[0]) && !d->columns[j].generated &&
                (t == 1 || t == 2 || t == 3 || t == 8 || t == 9)) /* TINY..LONG, LONGLONG, INT24 */
                return d->columns[j].name;
        }
    }
    return NULL;
}

/* Keys per chunk (see DBSEND_CHUNK_WIDTH). */
static uint32_t chunk_width(const wire_table_def_t *d)
{
    for (size_t j = 0; j < d->n_columns; j++) {
        unsigned t = d->columns[j].sql_type;
        if (!d->columns[j].generated && (t == 245 || t == 252 || t == 255)) /* JSON, BLOB, GEO */
            return DBSEND_CHUNK_WIDTH_WIDE;
    }
    return DBSEND_CHUNK_WIDTH;
}

static int add_chunk(obj_t *o, const char *text, size_t len)
{
    wire_bytes_t *n = realloc(o->chunks, (o->n_chunks + 1) * sizeof(*n));
    if (!n)
        return UV_ENOMEM;
    o->chunks = n;
    n[o->n_chunks].data = (const uint8_t *)dup_or_empty(text, (unsigned long)len);
    n[o->n_chunks].len = len;
    if (!n[o->n_chunks].data)
        return UV_ENOMEM;
    o->n_chunks++;
    return 0;
}

/* The definition part of the chunk digests, so the controller copies unchanged chunks only
 * into a table of the same shape: "d:" + SHA-256 of the definition without its AUTO_INCREMENT
 * counter (canon), and "/<width>" unless DBSEND_CHUNK_WIDTH. Returns its length. */
static size_t def_line(const obj_t *o, const char *canon, size_t canon_len, char *line, size_t size)
{
    uint8_t dd[32];
    EVP_Digest(canon, canon_len, dd, NULL, EVP_sha256(), NULL);
    size_t n = (size_t)snprintf(line, size, "d:");
    for (size_t i = 0; i < sizeof(dd); i++)
        n += (size_t)snprintf(line + n, size - n, "%02x", dd[i]);
    if (o->width != DBSEND_CHUNK_WIDTH)
        n += (size_t)snprintf(line + n, size - n, "/%u", o->width);
    return n;
}

/* Per-chunk digests of a table with an integer key, and the whole table's from their sums (one
 * scan). Returns 1 when the table cannot be chunked (negative or huge keys): use digest_sql. */
static int digest_chunks(dbsend_t *s, obj_t *o, const char *canon, size_t canon_len)
{
    agentdb_res_t *res = NULL;
    buf_t q = BUF_INIT;
    char **v, s1[128] = "0", line[400];
    unsigned long *len;
    uint64_t rows = 0;
    int r;

    r = add_chunk(o, line, def_line(o, canon, canon_len, line, sizeof(line)));
    if (r == 0)
        r = buf_append_str(&q, "SELECT ");
    if (r == 0)
        r = sql_ident(&q, o->pk);
    if (r == 0)
        r = buf_printf(&q, " DIV %u, COUNT(*), SUM(CAST(CONV(LEFT(MD5(CONCAT(", o->width);
    if (r == 0)
        r = select_list(&q, &o->def, true);
    if (r == 0)
        r = buf_append_str(&q, ")),16),16,10) AS UNSIGNED)) FROM ");
    if (r == 0)
        r = sql_ident(&q, o->def.name);
    if (r == 0)
        r = buf_append_str(&q, " GROUP BY 1 ORDER BY 1");
    if (r == 0)
        r = buf_cstr(&q) ? agentdb_query(o->nontx ? s->b : s->a, buf_cstr(&q), true, &res, s->err,
                                         s->err_size)
                         : UV_ENOMEM;
    while (r == 0 && (r = agentdb_res_next(res, &v, &len, s->err, s->err_size)) == 1) {
        r = 0;
        if (!v[0] || !v[1] || !v[2] || v[0][0] == '-' || strtoull(v[0], NULL, 10) > UINT32_MAX) {
            r = 1; /* keys outside what chunk numbers can say */
            break;
        }
        rows += strtoull(v[1], NULL, 10);
        if (!dec_add(s1, sizeof(s1), v[2])) {
            r = 1;
            break;
        }
        int n = snprintf(line, sizeof(line), "c:%s:%s:%s", v[0], v[1], v[2]);
        r = n > 0 && (size_t)n < sizeof(line) ? add_chunk(o, line, (size_t)n) : 1;
    }
    agentdb_res_free(res);
    buf_free(&q);
    if (r == 0) {
        o->rows = rows;
        snprintf(o->rowsum, sizeof(o->rowsum), "%llu:%s", (unsigned long long)rows, s1);
    }
    if (r != 0 || rows < 4 * (uint64_t)o->width) { /* small tables go whole */
        for (size_t i = 0; i < o->n_chunks; i++)
            free((void *)o->chunks[i].data);
        free(o->chunks);
        o->chunks = NULL;
        o->n_chunks = 0;
    }
    return r;
}

/* ---- the digest cache ----
 *
 * One line per table: hex(name) defhash update_time snapshot_time create_time,table_rows rowsum
 * chunk... A table's row digest is reused when its definition is the same, its UPDATE_TIME
 * (read after the snapshot opened) is not NULL and equal to the cached one, that UPDATE_TIME
 * is older than the second the cached digest's snapshot opened (any later commit would have
 * moved it to that second or after), and CREATE_TIME and TABLE_ROWS are unchanged (MariaDB's
 * TRUNCATE moves neither UPDATE_TIME nor CREATE_TIME). UPDATE_TIME is NULL after a server
 * restart or when InnoDB evicted the table (then the table is scanned); MySQL 8 caches it unless
 * information_schema_stats_expiry = 0, which the session sets. This trusts the server's
 * bookkeeping, which SQL cannot verify cheaply: it is off unless the caller gives a cache file. */

static void hexname(const char *name, char *out, size_t size)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 3 < size; p++)
        o += (size_t)snprintf(out + o, size - o, "%02x", *p);
    out[o] = '\0';
}

static void cache_load(dbsend_t *s, const char *path)
{
    FILE *f = path ? fopen(path, "re") : NULL;
    buf_t b = BUF_INIT;
    char chunk[4096];
    size_t n;

    if (!f)
        return;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < (64u << 20))
        if (buf_append(&b, chunk, n) < 0)
            break;
    fclose(f);
    if (buf_cstr(&b))
        s->cache = strdup((const char *)buf_data(&b));
    buf_free(&b);
}

/* Takes o's row digest from the cache when it is still valid. Returns true on a hit. */
static bool cache_lookup(dbsend_t *s, obj_t *o)
{
    char key[160], *line, *save = NULL;
    bool hit = false;

    if (!s->cache || o->update_time < 0)
        return false;
    hexname(o->def.name, key, sizeof(key));
    char *copy = strdup(s->cache);
    for (line = copy ? strtok_r(copy, "\n", &save) : NULL; line && !hit;
         line = strtok_r(NULL, "\n", &save)) {
        char *f[6], *p = line, *rest;
        for (int i = 0; i < 6; i++)
            f[i] = strsep(&p, " ");
        rest = p;
        if (!f[5] || strcmp(f[0], key) != 0 || strcmp(f[1], o->defhash) != 0 ||
            strcmp(f[4], o->stamp) != 0)
            continue;
        int64_t upd = strtoll(f[2], NULL, 10), snap = strtoll(f[3], NULL, 10);
        if (upd != o->update_time || upd >= snap)
            continue;
        snprintf(o->rowsum, sizeof(o->rowsum), "%s", f[5]);
        o->rows = strtoull(f[5], NULL, 10);
        for (char *c = rest ? strsep(&rest, " ") : NULL; c; c = rest ? strsep(&rest, " ") : NULL)
            if (*c && add_chunk(o, c, strlen(c)) < 0)
                break;
        hit = true;
    }
    free(copy);
    return hit;
}

/* Writes the cache anew (temp file + rename) with this sync's digests. */
static void cache_save(dbsend_t *s, const char *path)
{
    char tmp[4200], key[160];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "we");
    if (!f)
        return;
    for (size_t i = 0; i < s->n_objs; i++) {
        obj_t *o = &s->objs[i];
        if (o->def.kind != WIRE_TABLE_BASE || o->update_time < 0 || !o->rowsum[0])
            continue; /* not digested (a deferred table not sent) */
        hexname(o->def.name, key, sizeof(key));
        fprintf(f, "%s %s %lld %lld %s %s", key, o->defhash, (long long)o->update_time,
                (long long)s->snap_time, o->stamp, o->rowsum);
        for (size_t j = 0; j < o->n_chunks; j++)
            fprintf(f, " %.*s", (int)o->chunks[j].len, (const char *)o->chunks[j].data);
        fputc('\n', f);
    }
    if (fclose(f) == 0)
        rename(tmp, path);
    else
        unlink(tmp);
}

static int on_update_time(dbsend_t *s, void *ctx, char **v, unsigned long *len)
{
    /* TABLE_NAME, UNIX_TIMESTAMP(UPDATE_TIME), UNIX_TIMESTAMP(CREATE_TIME), TABLE_ROWS */
    for (size_t i = 0; v[0] && i < s->n_objs; i++) {
        obj_t *o = &s->objs[i];
        if (strcmp(o->def.name, v[0]) != 0)
            continue;
        o->update_time = v[1] && v[2] && v[3] ? strtoll(v[1], NULL, 10) : -1;
        snprintf(o->stamp, sizeof(o->stamp), "%s,%s", v[2] ? v[2] : "-", v[3] ? v[3] : "-");
    }
    return 0;
}

/* o->digest: SHA-256 over the canonical definition and the row digest o->rowsum. */
static int summary_digest(dbsend_t *s, obj_t *o)
{
    buf_t b = BUF_INIT;
    int r = canon_def(&b, &o->def);
    if (r == 0)
        r = buf_printf(&b, "rows=%s\n", o->rowsum);
    if (r == 0 && !EVP_Digest(buf_data(&b), b.len, o->digest, NULL, EVP_sha256(), NULL))
        r = UV_ENOMEM;
    if (r == UV_ENOMEM)
        snprintf(s->err, s->err_size, "out of memory computing digests");
    buf_free(&b);
    return r;
}

/* The digests of o: from the cache, or computed by the server in the snapshot. With defer, a
 * base table the cache cannot answer for is only marked deferred: DbBegin says so, and the
 * controller asks for its digest (a table it has, to compare) or takes it whole (a table it
 * does not have, e.g. every table of a first sync); then the digest is computed here from the
 * rows as they are sent (send_rows, wire_rowsum_t: the same value as digest_sql over the same
 * snapshot), which spares a full read of the table inside the snapshot. */
static int digest_obj(dbsend_t *s, obj_t *o, bool defer)
{
    buf_t b = BUF_INIT;
    int r = 0;

    o->deferred = false;

    if (o->def.kind == WIRE_TABLE_BASE) {
        uint8_t dh[32];
        uint64_t ai = o->def.auto_increment;
        o->def.auto_increment = 0;
        r = canon_def(&b, &o->def);
        o->def.auto_increment = ai;
        if (r == 0 && EVP_Digest(buf_data(&b), b.len, dh, NULL, EVP_sha256(), NULL))
            for (size_t i = 0; i < sizeof(dh); i++)
                snprintf(o->defhash + 2 * i, 3, "%02x", dh[i]);
        buf_reset(&b);
        o->pk = chunk_key(&o->def);
        o->width = chunk_width(&o->def);
        if (r == 0 && cache_lookup(s, o)) {
            s->stats->digests_cached++;
            if (o->n_chunks == 0)
                o->pk = NULL; /* computed whole last time */
            goto summary;
        }
        if (r == 0 && defer) {
            o->deferred = true;
            buf_free(&b);
            return 0;
        }
    }
    if (r == 0 && o->def.kind == WIRE_TABLE_BASE && o->pk) {
        uint64_t ai = o->def.auto_increment;
        o->def.auto_increment = 0;
        r = canon_def(&b, &o->def);
        o->def.auto_increment = ai;
        if (r == 0)
            r = digest_chunks(s, o, (const char *)buf_data(&b), b.len);
        if (r == 1)
            o->pk = NULL; /* not chunkable after all: the whole-table query below */
        buf_reset(&b);
        if (r == 1)
            r = 0;
        else if (r == 0 && o->rowsum[0])
            goto summary;
    }
    if (r == 0 && o->def.kind == WIRE_TABLE_BASE) {
        agentdb_res_t *res;
        char **v;
        unsigned long *len;
        r = digest_sql(&b, &o->def);
        if (r == 0)
            r = buf_cstr(&b) ? agentdb_query(o->nontx ? s->b : s->a, buf_cstr(&b), false, &res,
                                             s->err, s->err_size)
                             : UV_ENOMEM;
        if (r == 0) {
            r = agentdb_res_next(res, &v, &len, s->err, s->err_size);
            if (r == 1 && v[0] && v[1]) {
                o->rows = strtoull(v[0], NULL, 10);
                snprintf(o->rowsum, sizeof(o->rowsum), "%s:%s", v[0], v[1]);
                r = 0;
            } else if (r >= 0) {
                snprintf(s->err, s->err_size, "table %s: digest query returned nothing",
                         o->def.name);
                r = ERR_DB;
            }
            agentdb_res_free(res);
        }
        buf_reset(&b);
    }
summary:
    buf_free(&b);
    return r == 0 ? summary_digest(s, o) : r;
}

/* ---- sending ---- */

typedef struct batch {
    wire_row_t rows[DBSEND_BATCH_ROWS];
    wire_bytes_t *values; /* DBSEND_BATCH_ROWS * ncols */
    size_t *offsets;      /* value offsets into data, fixed up into pointers before sending */
    uint8_t *nulls;       /* DBSEND_BATCH_ROWS * nbytes */
    size_t n, ncols, nbytes;
    buf_t data;
} batch_t;

/* A deferred table's digests, computed from its rows as they are sent: the row digest, and
 * per chunk (digest_chunks' "c:" lines) as long as the rows come in key order, which a full
 * read of an InnoDB table (its clustered index) does; otherwise the table has no chunk
 * digests until its next digest by the server. */
typedef struct chunk_acc {
    uint64_t id;
    wire_rowsum_t s; /* rows, hi, lo (md unused) */
} chunk_acc_t;

typedef struct stream {
    wire_rowsum_t sum;
    size_t key; /* the chunk key's index among the values; SIZE_MAX: no chunks */
    uint32_t width;
    chunk_acc_t *ck;
    size_t n, cap;
} stream_t;

static int stream_add(stream_t *st, const wire_row_t *row)
{
    uint64_t h, key = 0;
    int r = wire_rowsum_add(&st->sum, row, &h);
    if (r < 0 || st->key == SIZE_MAX)
        return r;
    const wire_bytes_t *v = &row->values[st->key];
    bool ok = !wire_row_is_null(row, st->key) && v->len > 0 && v->len <= 19;
    for (size_t i = 0; ok && i < v->len; i++) {
        ok = v->data[i] >= '0' && v->data[i] <= '9';
        key = key * 10 + (uint64_t)(v->data[i] - '0');
    }
    uint64_t id = key / st->width;
    if (!ok || id > UINT32_MAX || (st->n && id < st->ck[st->n - 1].id)) {
        st->key = SIZE_MAX; /* out of order or out of range: no chunk digests */
        return 0;
    }
    if (!st->n || st->ck[st->n - 1].id != id) {
        if (st->n == st->cap) {
            size_t cap = st->cap ? 2 * st->cap : 64;
            chunk_acc_t *n = realloc(st->ck, cap * sizeof(*n));
            if (!n)
                return UV_ENOMEM;
            st->ck = n;
            st->cap = cap;
        }
        memset(&st->ck[st->n], 0, sizeof(st->ck[st->n]));
        st->ck[st->n++].id = id;
    }
    wire_rowsum_t *c = &st->ck[st->n - 1].s;
    c->lo += h;
    c->hi += c->lo < h;
    c->rows++;
    return 0;
}

/* o's chunk lines from the stream, as digest_chunks would write them. */
static int stream_chunks(const stream_t *st, obj_t *o)
{
    buf_t b = BUF_INIT;
    char line[400], sum[96];
    uint64_t ai = o->def.auto_increment;
    int r;

    if (st->key == SIZE_MAX || st->sum.rows < 4 * (uint64_t)o->width)
        return 0; /* small tables go whole */
    o->def.auto_increment = 0;
    r = canon_def(&b, &o->def);
    o->def.auto_increment = ai;
    if (r == 0)
        r = add_chunk(o, line, def_line(o, (const char *)buf_data(&b), b.len, line, sizeof(line)));
    for (size_t i = 0; r == 0 && i < st->n; i++) {
        wire_rowsum_text(&st->ck[i].s, sum, sizeof(sum));
        int n = snprintf(line, sizeof(line), "c:%llu:%s", (unsigned long long)st->ck[i].id, sum);
        r = add_chunk(o, line, (size_t)n);
    }
    buf_free(&b);
    return r;
}

static int flush_batch(dbsend_t *s, batch_t *bt, const char *table, stream_t *st)
{
    wire_msg_t m = {.type = WIRE_ROW_BATCH};
    int r;

    if (bt->n == 0)
        return 0;
    for (size_t i = 0; i < bt->n * bt->ncols; i++)
        bt->values[i].data = bt->values[i].len ? buf_data(&bt->data) + bt->offsets[i] : NULL;
    for (size_t i = 0; st && i < bt->n; i++)
        if (stream_add(st, &bt->rows[i]) < 0)
            return UV_ENOMEM;
    m.u.row_batch.table = table;
    m.u.row_batch.rows = bt->rows;
    m.u.row_batch.n_rows = bt->n;
    r = msgio_send(s->io, &m);
    if (r < 0)
        snprintf(s->err, s->err_size, "sending rows of %s: %s", table, err_str(r));
    s->stats->bytes_sent += bt->data.len;
    if (r == 0)
        fault_point("agent.db.batch");
    bt->n = 0;
    buf_reset(&bt->data);
    return r;
}

static int send_rows(dbsend_t *s, obj_t *o)
{
    batch_t *bt = calloc(1, sizeof(*bt));
    agentdb_res_t *res = NULL;
    buf_t q = BUF_INIT;
    uint64_t rows = 0;
    char **v;
    unsigned long *len;
    int r;

    stream_t st = {.key = SIZE_MAX, .width = o->width};
    if (!bt || (o->deferred && wire_rowsum_init(&st.sum) < 0)) {
        free(bt);
        wire_rowsum_free(&st.sum);
        return UV_ENOMEM;
    }
    for (size_t i = 0, k = 0; o->deferred && o->pk && i < o->def.n_columns; i++) {
        if (o->def.columns[i].generated)
            continue;
        if (!strcmp(o->def.columns[i].name, o->pk))
            st.key = k;
        k++;
    }
    for (size_t i = 0; i < o->def.n_columns; i++)
        bt->ncols += !o->def.columns[i].generated;
    bt->nbytes = (bt->ncols + 7) / 8;
    bt->values = calloc(DBSEND_BATCH_ROWS * (bt->ncols ? bt->ncols : 1), sizeof(*bt->values));
    bt->offsets = calloc(DBSEND_BATCH_ROWS * (bt->ncols ? bt->ncols : 1), sizeof(*bt->offsets));
    bt->nulls = calloc(DBSEND_BATCH_ROWS, bt->nbytes ? bt->nbytes : 1);
    buf_init(&bt->data, 0);
    r = bt->values && bt->offsets && bt->nulls ? 0 : UV_ENOMEM;
    if (r == 0)
        r = buf_append_str(&q, "SELECT /*!40001 SQL_NO_CACHE */ ");
    if (r == 0)
        r = select_list(&q, &o->def, false);
    if (r == 0)
        r = buf_append_str(&q, " FROM ");
    if (r == 0)
        r = sql_ident(&q, o->def.name);
    /* Only some chunks: their key ranges (an index range scan each). */
    uint64_t expect = o->rows;
    if (o->partial) {
        expect = 0;
        r = buf_append_str(&q, o->n_want ? " WHERE " : " WHERE FALSE");
        for (size_t i = 0; r == 0 && i < o->n_want; i++) {
            uint64_t lo = (uint64_t)o->want[i] * o->width;
            r = buf_append_str(&q, i ? " OR (" : "(");
            if (r == 0)
                r = sql_ident(&q, o->pk);
            if (r == 0)
                r = buf_printf(&q, " >= %llu AND ", (unsigned long long)lo);
            if (r == 0)
                r = sql_ident(&q, o->pk);
            if (r == 0)
                r = buf_printf(&q, " < %llu)", (unsigned long long)(lo + o->width));
            char id[32];
            int n = snprintf(id, sizeof(id), "c:%u:", o->want[i]);
            for (size_t j = 1; j < o->n_chunks; j++)
                if (o->chunks[j].len > (size_t)n && !memcmp(o->chunks[j].data, id, (size_t)n))
                    expect += strtoull((const char *)o->chunks[j].data + n, NULL, 10);
        }
    }
    if (r == 0)
        r = buf_cstr(&q) ? agentdb_query(o->nontx ? s->b : s->a, buf_cstr(&q), true, &res, s->err,
                                         s->err_size)
                         : UV_ENOMEM;
    while (r == 0 && (r = agentdb_res_next(res, &v, &len, s->err, s->err_size)) == 1) {
        wire_row_t *row = &bt->rows[bt->n];
        wire_bytes_t *vals = &bt->values[bt->n * bt->ncols];
        size_t *offs = &bt->offsets[bt->n * bt->ncols];
        uint8_t *nulls = &bt->nulls[bt->n * bt->nbytes];
        memset(nulls, 0, bt->nbytes);
        for (size_t i = 0; r >= 0 && i < bt->ncols; i++) {
            offs[i] = bt->data.len;
            vals[i].len = v[i] ? len[i] : 0;
            if (!v[i])
                nulls[i / 8] |= (uint8_t)(1u << (i % 8));
            else if (len[i])
                r = buf_append(&bt->data, v[i], len[i]);
        }
        row->values = vals;
        row->n_values = bt->ncols;
        row->nulls.data = nulls;
        row->nulls.len = bt->nbytes;
        bt->n++;
        rows++;
        if (r >= 0 && (bt->n == DBSEND_BATCH_ROWS || bt->data.len >= DBSEND_BATCH_BYTES))
            r = flush_batch(s, bt, o->def.name, o->deferred ? &st : NULL);
        if (r >= 0)
            r = 0;
    }
    if (r == 0)
        r = flush_batch(s, bt, o->def.name, o->deferred ? &st : NULL);
    if (r == 0 && o->deferred) { /* its digests, from the rows just sent */
        wire_rowsum_text(&st.sum, o->rowsum, sizeof(o->rowsum));
        o->rows = rows;
        expect = rows;
        r = summary_digest(s, o);
        if (r == 0)
            r = stream_chunks(&st, o);
    }
    wire_rowsum_free(&st.sum);
    free(st.ck);
    if (r == 0 && rows != expect) {
        snprintf(s->err, s->err_size,
                 "table %s: read %llu rows but counted %llu in the same snapshot (was the table "
                 "changed during the dump?)",
                 o->def.name, (unsigned long long)rows, (unsigned long long)expect);
        r = ERR_DB;
    }
    o->sent = rows;
    if (r == UV_ENOMEM)
        snprintf(s->err, s->err_size, "out of memory sending %s", o->def.name);
    s->stats->rows_sent += rows;
    agentdb_res_free(res);
    buf_free(&q);
    buf_free(&bt->data);
    free(bt->values);
    free(bt->offsets);
    free(bt->nulls);
    free(bt);
    return r;
}

static int send_obj(dbsend_t *s, obj_t *o)
{
    wire_msg_t m = {.type = WIRE_TABLE_DEF};
    int r;

    m.u.table_def = o->def;
    r = msgio_send(s->io, &m);
    if (r == 0 && o->def.kind == WIRE_TABLE_BASE)
        r = send_rows(s, o);
    if (r == 0) {
        wire_msg_t e = {.type = WIRE_TABLE_END};
        e.u.table_end.table = o->def.name;
        e.u.table_end.row_count = o->sent; /* all rows, or those of the chunks asked for */
        e.u.table_end.digest.data = (const uint8_t *)o->rowsum;
        e.u.table_end.digest.len = strlen(o->rowsum);
        if (o->deferred) {
            e.u.table_end.table_digest.data = o->digest;
            e.u.table_end.table_digest.len = sizeof(o->digest);
            e.u.table_end.chunk_digests = o->chunks;
            e.u.table_end.n_chunk_digests = o->n_chunks;
        }
        r = msgio_send(s->io, &e);
    } else if (r < 0 && !s->err[0]) {
        snprintf(s->err, s->err_size, "sending %s: %s", o->def.name, err_str(r));
    }
    if (r == 0)
        s->stats->tables_sent++;
    return r;
}

/* ---- the phase ---- */

static int session_setup(dbsend_t *s, MYSQL *db)
{
    return agentdb_exec(
        db,
        "SET SESSION sql_mode = '', time_zone = '+00:00', net_read_timeout = " DBSEND_NET_TIMEOUT
        ", net_write_timeout = " DBSEND_NET_TIMEOUT ", character_set_results = binary",
        s->err, s->err_size);
}

static int check_grants(dbsend_t *s, const wpconfig_t *wp)
{
    char **lines = NULL, missing[256];
    size_t n = 0;
    int r = agentdb_grants(s->a, &lines, &n, s->err, s->err_size);

    if (r < 0)
        return r;
    r = agentdb_check_privileges(lines, n, wp->db_name, missing, sizeof(missing));
    agentdb_free_lines(lines, n);
    if (r < 0)
        snprintf(s->err, s->err_size,
                 "database user %s lacks %s on %s (needed for a consistent dump)", wp->db_user,
                 missing, wp->db_name);
    return r;
}

static int lock_nontx(dbsend_t *s, const wpconfig_t *wp)
{
    buf_t q = BUF_INIT;
    bool first = true;
    size_t o = 0;
    int r = agentdb_connect(wp, &s->b, s->err, s->err_size);

    if (r == 0)
        r = session_setup(s, s->b);
    if (r == 0)
        r = buf_append_str(&q, "LOCK TABLES ");
    for (size_t i = 0; r == 0 && i < s->n_objs; i++) {
        if (!s->objs[i].nontx)
            continue;
        r = first ? 0 : buf_append(&q, ",", 1);
        if (r == 0)
            r = sql_ident(&q, s->objs[i].def.name);
        if (r == 0)
            r = buf_append_str(&q, " READ");
        if (o < sizeof(s->stats->non_transactional))
            o += (size_t)snprintf(s->stats->non_transactional + o,
                                  sizeof(s->stats->non_transactional) - o, "%s%s",
                                  first ? "" : ", ", s->objs[i].def.name);
        first = false;
    }
    if (r == 0)
        r = buf_cstr(&q) ? agentdb_exec(s->b, buf_cstr(&q), s->err, s->err_size) : UV_ENOMEM;
    buf_free(&q);
    return r;
}

/* Marks what DbNeed asks for. */
static int mark_needed(dbsend_t *s, const wire_db_need_t *need)
{
    for (size_t i = 0; i < need->n_tables; i++) {
        bool found = false;
        for (size_t j = 0; j < s->n_objs; j++) {
            obj_t *o = &s->objs[j];
            if (strcmp(o->def.name, need->tables[i]) != 0)
                continue;
            found = o->needed = true;
            if (need->n_chunks && o->def.kind == WIRE_TABLE_BASE) {
                if (!o->pk || o->n_chunks == 0 || o->partial) {
                    snprintf(s->err, s->err_size,
                             "the controller asks for chunks of %s, which "
                             "has none",
                             o->def.name);
                    return ERR_PROTOCOL;
                }
                o->want = malloc(need->n_chunks * sizeof(*o->want));
                if (!o->want)
                    return UV_ENOMEM;
                memcpy(o->want, need->chunks, need->n_chunks * sizeof(*o->want));
                o->n_want = need->n_chunks;
                o->partial = true;
            }
        }
        if (!found) {
            snprintf(s->err, s->err_size, "the controller asks for %s, which is not in DbBegin",
                     need->tables[i]);
            return ERR_PROTOCOL;
        }
    }
    return 0;
}

/* A summary for DbBegin. withhold: without its chunk digests, which only a table that changed
 * needs (the controller asks for them, DbNeed.digests): a no-change sync of a large site would
 * otherwise carry every chunk digest of every table each time (some 140 KB per million rows of
 * a table with TEXT columns). */
static void fill_summary(const obj_t *o, wire_table_summary_t *sum, bool withhold)
{
    sum->name = o->def.name;
    sum->kind = o->def.kind;
    sum->row_count = o->rows;
    sum->digest.data = o->deferred ? NULL : o->digest;
    sum->digest.len = o->deferred ? 0 : sizeof(o->digest);
    sum->chunks_withheld = withhold && o->n_chunks > 0;
    sum->chunk_digests = sum->chunks_withheld ? NULL : o->chunks;
    sum->n_chunk_digests = sum->chunks_withheld ? 0 : o->n_chunks;
}

/* DbNeed.digests: digests the deferred tables named (the others named have theirs, with chunk
 * digests withheld), sends their whole summaries in a DbBegin. */
static int send_digests(dbsend_t *s, const wpconfig_t *wp, const wire_db_need_t *need)
{
    wire_table_summary_t *sum = calloc(need->n_digests + 1, sizeof(*sum));
    wire_msg_t m = {.type = WIRE_DB_BEGIN};
    int r = sum ? 0 : UV_ENOMEM;

    for (size_t i = 0; r == 0 && i < need->n_digests; i++) {
        obj_t *o = NULL;
        for (size_t j = 0; j < s->n_objs && !o; j++)
            if (s->objs[j].def.kind == WIRE_TABLE_BASE &&
                !strcmp(s->objs[j].def.name, need->digests[i]))
                o = &s->objs[j];
        if (!o) {
            snprintf(s->err, s->err_size,
                     "the controller asks for the digests of %s, which is not a table",
                     need->digests[i]);
            r = ERR_PROTOCOL;
            break;
        }
        if (o->deferred)
            r = digest_obj(s, o, false);
        if (r == 0)
            fill_summary(o, &sum[i], false);
    }
    m.u.db_begin.charset = wp->db_charset ? wp->db_charset : "";
    m.u.db_begin.table_prefix = wp->table_prefix ? wp->table_prefix : "";
    m.u.db_begin.schema = wp->db_name;
    m.u.db_begin.tables = sum;
    m.u.db_begin.n_tables = need->n_digests;
    if (r == 0)
        r = msgio_send(s->io, &m);
    free(sum);
    return r;
}

static int exchange(dbsend_t *s, const wpconfig_t *wp)
{
    wire_table_summary_t *sum = calloc(s->n_objs ? s->n_objs : 1, sizeof(*sum));
    const char **nontx = calloc(s->n_objs ? s->n_objs : 1, sizeof(*nontx));
    wire_msg_t m = {.type = WIRE_DB_BEGIN}, *reply = NULL;
    size_t n_nontx = 0;
    int r = sum && nontx ? 0 : UV_ENOMEM;

    for (size_t i = 0; r == 0 && i < s->n_objs; i++) {
        obj_t *o = &s->objs[i];
        fill_summary(o, &sum[i], true);
        m.u.db_begin.deferred |= o->deferred;
        if (o->nontx)
            nontx[n_nontx++] = o->def.name;
    }
    m.u.db_begin.charset = wp->db_charset ? wp->db_charset : "";
    m.u.db_begin.table_prefix = wp->table_prefix ? wp->table_prefix : "";
    m.u.db_begin.schema = wp->db_name;
    m.u.db_begin.tables = sum;
    m.u.db_begin.n_tables = s->n_objs;
    m.u.db_begin.non_transactional = nontx;
    m.u.db_begin.n_non_transactional = n_nontx;
    if (r == 0)
        r = msgio_send(s->io, &m);
    for (bool more = true; r == 0 && more;) {
        r = msgio_recv(s->io, &reply, DBSEND_NEED_TIMEOUT) < 0 ? ERR_PEER_CLOSED : 0;
        if (r == 0 && reply->type == WIRE_ERROR) {
            snprintf(s->err, s->err_size, "the controller refused the database: %s",
                     reply->u.error.text);
            r = ERR_REFUSED;
        } else if (r == 0 && reply->type == WIRE_RESULT) {
            /* The controller gave up on this sync (its database unreachable, a refusal). */
            const wire_result_t *res = &reply->u.result;
            snprintf(s->err, s->err_size, "the controller %s the sync: %s",
                     res->status == WIRE_STATUS_REFUSED ? "refused" : "could not apply",
                     res->reason[0] ? res->reason : "no reason given");
            r = res->status == WIRE_STATUS_REFUSED ? ERR_REFUSED : ERR_DB;
        } else if (r == 0 && reply->type != WIRE_DB_NEED) {
            snprintf(s->err, s->err_size, "expected DbNeed, got %s", wire_type_name(reply->type));
            r = ERR_PROTOCOL;
        } else if (r == 0 && reply->u.db_need.n_digests) {
            r = send_digests(s, wp, &reply->u.db_need);
            more = true;
        } else if (r == 0) {
            r = mark_needed(s, &reply->u.db_need);
            more = reply->u.db_need.more;
        } else if (!s->err[0]) {
            snprintf(s->err, s->err_size, "the controller did not answer DbBegin: %s", err_str(r));
        }
        wire_msg_free(reply);
        reply = NULL;
    }
    free(sum);
    free(nontx);
    return r;
}

int dbsend_run(const wpconfig_t *wp, const msgio_t *io, const dbsend_opts_t *opts,
               dbsend_stats_t *stats, char *err, size_t err_size)
{
    dbsend_t s = {
        .io = io, .stats = stats, .err = err, .err_size = err_size, .routines = opts->routines};
    bool any_nontx = false;
    int r;

    memset(stats, 0, sizeof(*stats));
    err[0] = '\0';
    r = agentdb_connect(wp, &s.a, err, err_size);
    if (r == 0)
        r = check_grants(&s, wp);
    if (r == 0)
        r = session_setup(&s, s.a);
    if (r == 0)
        r = load_catalogue(&s, &any_nontx);
    /* The lock on the non-transactional tables is held while the snapshot opens. */
    if (r == 0 && any_nontx)
        r = lock_nontx(&s, wp);
    if (r == 0)
        r = agentdb_exec(s.a, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", err,
                         err_size);
    if (r == 0)
        r = agentdb_exec(s.a, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", err,
                         err_size);
    /* Tests only: widen the window between the snapshot and the first read, so that DDL on
     * the primary lands in it (tests/integration/dbsync.sh). */
    if (r == 0)
        fault_point("agent.db.snapshot");
    if (r == 0 && getenv("UNDERSTUDY_TEST_DBSEND_PAUSE_MS"))
        usleep((useconds_t)atoi(getenv("UNDERSTUDY_TEST_DBSEND_PAUSE_MS")) * 1000);
    if (r == 0 && opts->digest_cache) {
        char ignored[256];
        agentdb_res_t *res;
        char **v;
        unsigned long *len;
        for (size_t i = 0; i < s.n_objs; i++)
            s.objs[i].update_time = -1;
        /* MySQL 8 caches UPDATE_TIME for a day unless told otherwise; MariaDB has no cache. */
        agentdb_exec(s.a, "SET SESSION information_schema_stats_expiry = 0", ignored,
                     sizeof(ignored));
        r = agentdb_query(s.a, "SELECT UNIX_TIMESTAMP()", false, &res, err, err_size);
        if (r == 0) {
            if (agentdb_res_next(res, &v, &len, err, err_size) == 1 && v[0])
                s.snap_time = strtoll(v[0], NULL, 10);
            agentdb_res_free(res);
        }
        if (r == 0)
            r = each_row(&s, s.a,
                         "SELECT TABLE_NAME, UNIX_TIMESTAMP(UPDATE_TIME), "
                         "UNIX_TIMESTAMP(CREATE_TIME), TABLE_ROWS FROM information_schema.TABLES "
                         "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
                         4, on_update_time, NULL);
        if (r == 0 && s.snap_time > 0)
            cache_load(&s, opts->digest_cache);
    }
    for (size_t i = 0; r == 0 && i < s.n_objs; i++)
        r = digest_obj(&s, &s.objs[i], true);
    stats->tables = s.n_objs;
    if (r == 0)
        r = exchange(&s, wp);
    /* Non-transactional tables first, then release their lock; then the snapshot's. */
    for (size_t i = 0; r == 0 && i < s.n_objs; i++)
        if (s.objs[i].needed && s.objs[i].nontx)
            r = send_obj(&s, &s.objs[i]);
    if (r == 0 && s.b)
        r = agentdb_exec(s.b, "UNLOCK TABLES", err, err_size);
    agentdb_close(s.b);
    s.b = NULL;
    for (size_t i = 0; r == 0 && i < s.n_objs; i++)
        if (s.objs[i].needed && !s.objs[i].nontx)
            r = send_obj(&s, &s.objs[i]);
    if (r == 0)
        r = agentdb_exec(s.a, "COMMIT", err, err_size);
    /* After sending: a deferred table's digest comes from its rows as sent. */
    if (r == 0 && opts->digest_cache && s.snap_time > 0)
        cache_save(&s, opts->digest_cache);
    agentdb_close(s.a);
    for (size_t i = 0; i < s.n_objs; i++)
        obj_clear(&s.objs[i]);
    free(s.objs);
    free(s.cache);
    if (r < 0 && !err[0])
        snprintf(err, err_size, "%s", err_str(r));
    return r;
}
