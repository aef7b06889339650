/* The controller's MariaDB access (see db.h). */
#include "db.h"

#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "err.h"

struct ctldb_res {
    MYSQL *db;
    MYSQL_RES *res;
};

int ctldb_connect(const ctldb_opts_t *o, MYSQL **ret, char *err, size_t err_size)
{
    unsigned timeout = 10, io_timeout = 3600, local_infile = 1;
    MYSQL *db = mysql_init(NULL);

    if (!db) {
        snprintf(err, err_size, "cannot connect to the database: out of memory");
        return UV_ENOMEM;
    }
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_OPT_LOCAL_INFILE, &local_infile);
    if (!mysql_real_connect(db, o->socket ? "localhost" : o->host, o->user, o->password,
                            o->database, o->socket ? 0 : o->port, o->socket, 0)) {
        snprintf(err, err_size, "cannot connect to the backup's database as %s@%s: %s",
                 o->user ? o->user : "(current user)", o->socket ? o->socket : o->host,
                 mysql_error(db));
        mysql_close(db);
        return ERR_DB_CONNECT;
    }
    *ret = db;
    return 0;
}

int ctldb_ensure(MYSQL **db, const ctldb_opts_t *opts, char *err, size_t err_size)
{
    if (*db && mysql_ping(*db) == 0)
        return 0;
    ctldb_close(*db);
    *db = NULL;
    return ctldb_connect(opts, db, err, err_size);
}

void ctldb_close(MYSQL *db)
{
    if (db)
        mysql_close(db);
}

unsigned ctldb_errno(MYSQL *db)
{
    return mysql_errno(db);
}

static void fail(MYSQL *db, const char *sql, size_t len, char *err, size_t err_size)
{
    snprintf(err, err_size, "%s (error %u) in: %.*s", mysql_error(db), mysql_errno(db),
             (int)(len > 120 ? 120 : len), sql);
}

int ctldb_exec(MYSQL *db, const char *sql, size_t len, char *err, size_t err_size)
{
    if (mysql_real_query(db, sql, len) != 0) {
        fail(db, sql, len, err, err_size);
        return ERR_DB;
    }
    MYSQL_RES *res = mysql_store_result(db);
    if (res)
        mysql_free_result(res);
    return 0;
}

int ctldb_query(MYSQL *db, const char *sql, size_t len, ctldb_res_t **ret, char *err,
                size_t err_size)
{
    ctldb_res_t *r;

    if (mysql_real_query(db, sql, len) != 0) {
        fail(db, sql, len, err, err_size);
        return ERR_DB;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return UV_ENOMEM;
    r->res = mysql_store_result(db);
    if (!r->res) {
        fail(db, sql, len, err, err_size);
        free(r);
        return ERR_DB;
    }
    *ret = r;
    return 0;
}

int ctldb_stream(MYSQL *db, const char *sql, size_t len, ctldb_res_t **ret, char *err,
                 size_t err_size)
{
    ctldb_res_t *r;

    if (mysql_real_query(db, sql, len) != 0) {
        fail(db, sql, len, err, err_size);
        return ERR_DB;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return UV_ENOMEM;
    r->db = db;
    r->res = mysql_use_result(db);
    if (!r->res) {
        fail(db, sql, len, err, err_size);
        free(r);
        return ERR_DB;
    }
    *ret = r;
    return 0;
}

bool ctldb_res_failed(ctldb_res_t *res, char *err, size_t err_size)
{
    if (!res->db || !mysql_errno(res->db))
        return false;
    snprintf(err, err_size, "%s (error %u)", mysql_error(res->db), mysql_errno(res->db));
    return true;
}

bool ctldb_res_binary(const ctldb_res_t *res, unsigned i)
{
    const MYSQL_FIELD *f = mysql_fetch_field_direct(res->res, i);
    return f->charsetnr == 63 && f->type != MYSQL_TYPE_NEWDECIMAL && !IS_NUM(f->type) &&
           f->type != MYSQL_TYPE_DATE && f->type != MYSQL_TYPE_DATETIME &&
           f->type != MYSQL_TYPE_TIMESTAMP && f->type != MYSQL_TYPE_TIME &&
           f->type != MYSQL_TYPE_YEAR && f->type != MYSQL_TYPE_NEWDATE;
}

bool ctldb_res_numeric(const ctldb_res_t *res, unsigned i)
{
    const MYSQL_FIELD *f = mysql_fetch_field_direct(res->res, i);
    return f->type != MYSQL_TYPE_BIT && (IS_NUM(f->type) || f->type == MYSQL_TYPE_NEWDECIMAL);
}

int ctldb_res_next(ctldb_res_t *res, char ***ret_values, unsigned long **ret_lens)
{
    MYSQL_ROW row = mysql_fetch_row(res->res);
    if (!row)
        return 0;
    *ret_values = row;
    *ret_lens = mysql_fetch_lengths(res->res);
    return 1;
}

unsigned ctldb_res_fields(const ctldb_res_t *res)
{
    return mysql_num_fields(res->res);
}

void ctldb_res_free(ctldb_res_t *res)
{
    if (!res)
        return;
    mysql_free_result(res->res);
    free(res);
}

typedef struct load_src {
    ctldb_read_fn read;
    void *ctx;
} load_src_t;

static int on_infile_init(void **ptr, const char *filename, void *userdata)
{
    *ptr = userdata; /* the file name is ignored: the content comes from the source */
    return 0;
}

static int on_infile_read(void *ptr, char *buf, unsigned int size)
{
    load_src_t *s = ptr;
    return (int)s->read(s->ctx, buf, size);
}

static void on_infile_end(void *ptr)
{
}

static int on_infile_error(void *ptr, char *msg, unsigned int size)
{
    snprintf(msg, size, "the row stream from the agent failed");
    return 2000;
}

int ctldb_load(MYSQL *db, const char *sql, ctldb_read_fn read, void *ctx, uint64_t *ret_rows,
               char *err, size_t err_size)
{
    load_src_t src = {read, ctx};
    int r = 0;

    mysql_set_local_infile_handler(db, on_infile_init, on_infile_read, on_infile_end,
                                   on_infile_error, &src);
    if (mysql_query(db, sql) != 0) {
        fail(db, sql, strlen(sql), err, err_size);
        r = ERR_DB;
    } else {
        *ret_rows = mysql_affected_rows(db);
    }
    mysql_set_local_infile_default(db);
    return r;
}

unsigned ctldb_warnings(MYSQL *db)
{
    return mysql_warning_count(db);
}

uint64_t ctldb_affected(MYSQL *db)
{
    return mysql_affected_rows(db);
}
