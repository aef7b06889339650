/* The controller's MariaDB access: the only controller file that includes <mysql.h>.
 *
 * Blocking calls: run them on a worker thread (controller/sync.c runs a sync on one). Errors
 * are ERR_DB with the server's message in err; ctldb_errno() gives the server's code.
 */
#ifndef UNDERSTUDY_CONTROLLER_DB_H
#define UNDERSTUDY_CONTROLLER_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_mysql MYSQL;
typedef struct ctldb_res ctldb_res_t;

typedef struct ctldb_opts {
    const char *socket, *host, *user, *password, *database;
    unsigned port;
} ctldb_opts_t;

/* Connects with utf8mb4 and local infile enabled (for the bulk load, fed from memory only:
 * ctldb_load installs a handler that never opens a file). Returns 0 and *ret or ERR_DB_CONNECT
 * with err. */
int ctldb_connect(const ctldb_opts_t *opts, MYSQL **ret, char *err, size_t err_size);
void ctldb_close(MYSQL *db);

/* Makes *db usable: pings it and, when the server went away (a restart), connects again with
 * opts. Returns 0, or ERR_DB_CONNECT with err (then *db is NULL). */
int ctldb_ensure(MYSQL **db, const ctldb_opts_t *opts, char *err, size_t err_size);

/* Runs one statement, discarding any result. Returns 0 or ERR_DB with err. */
int ctldb_exec(MYSQL *db, const char *sql, size_t len, char *err, size_t err_size);

/* Runs a query and buffers its result. Returns 0 and *ret, or ERR_DB with err. */
int ctldb_query(MYSQL *db, const char *sql, size_t len, ctldb_res_t **ret, char *err,
                size_t err_size);
/* Next row: 1 with values (NULL = SQL NULL) and lengths, 0 at the end. */
int ctldb_res_next(ctldb_res_t *res, char ***ret_values, unsigned long **ret_lens);
unsigned ctldb_res_fields(const ctldb_res_t *res);
void ctldb_res_free(ctldb_res_t *res);

unsigned ctldb_errno(MYSQL *db);

/* Runs a query whose rows are read one by one from the server (bounded memory; the connection
 * is busy until the result is freed). Returns 0 and *ret, or ERR_DB with err; read the rows
 * with ctldb_res_next and check ctldb_res_failed at the end. */
int ctldb_stream(MYSQL *db, const char *sql, size_t len, ctldb_res_t **ret, char *err,
                 size_t err_size);
/* After ctldb_res_next returned 0 on a streaming result: whether the server failed mid-way
 * (with its message in err). */
bool ctldb_res_failed(ctldb_res_t *res, char *err, size_t err_size);
/* Column i holds bytes (binary character set: BINARY, VARBINARY, BLOB, BIT, GEOMETRY). */
bool ctldb_res_binary(const ctldb_res_t *res, unsigned i);
/* Column i is a number whose text form needs no quotes (not BIT). */
bool ctldb_res_numeric(const ctldb_res_t *res, unsigned i);

/* Where LOAD DATA LOCAL INFILE reads its bytes from: fills buf with up to size bytes and
 * returns their count, 0 at the end, or -1 on error (the source keeps its own message). */
typedef long (*ctldb_read_fn)(void *ctx, char *buf, unsigned size);

/* Runs sql (a LOAD DATA LOCAL INFILE statement) with read as the file's content. Returns 0 and
 * the affected row count, or ERR_DB with err. */
int ctldb_load(MYSQL *db, const char *sql, ctldb_read_fn read, void *ctx, uint64_t *ret_rows,
               char *err, size_t err_size);

/* The number of warnings (notes included) the last statement on db raised. */
unsigned ctldb_warnings(MYSQL *db);

/* The number of rows the last INSERT, UPDATE, DELETE or LOAD DATA on db changed. */
uint64_t ctldb_affected(MYSQL *db);

#endif
