/* The agent's access to the site's MariaDB/MySQL database.
 *
 * agent/db.c is the only file on the agent side that includes <mysql.h>; the rest of the agent
 * sees the connection as an opaque MYSQL pointer. All calls block: run them off the loop thread.
 */
#ifndef UNDERSTUDY_AGENT_DB_H
#define UNDERSTUDY_AGENT_DB_H

#include <stdbool.h>
#include <stddef.h>

#include "wpconfig.h"

/* The client library's connection handle (the same typedef <mysql.h> makes). */
typedef struct st_mysql MYSQL;

/* Connects with the credentials and DB_HOST (host, port or socket) of wp-config.php, using
 * utf8mb4, a 10 s connect timeout and generous read/write timeouts (dumps of large tables may
 * pause). Returns 0 and *ret (close with agentdb_close), or ERR_DB_CONNECT (UV_ENOMEM when the
 * client library cannot allocate) with one line in err naming user@host and the server's
 * message; the password never appears in it. */
int agentdb_connect(const wpconfig_t *wp, MYSQL **ret, char *err, size_t err_size);

/* Runs SHOW GRANTS FOR CURRENT_USER(). Returns 0 with *ret_lines (an array of *ret_n
 * malloc'ed strings, freed with agentdb_free_lines) or ERR_DB with the server's message in
 * err. */
int agentdb_grants(MYSQL *db, char ***ret_lines, size_t *ret_n, char *err, size_t err_size);

/* Reads GRANT lines (as SHOW GRANTS prints them) and says which of the privileges a consistent
 * dump needs on db_name (SELECT, LOCK TABLES, SHOW VIEW, TRIGGER) no line gives: global grants
 * (ON *.*) and database grants whose name pattern matches db_name (LIKE wildcards '%' and '_',
 * '\' escapes) count; table, column, routine, proxy and role grants do not. Writes the missing
 * ones, comma-separated, into missing ("" when none; may be NULL). Returns 0 or
 * ERR_DB_PRIVILEGE. */
int agentdb_check_privileges(char **grant_lines, size_t n, const char *db_name, char *missing,
                             size_t missing_size);

/* ---- queries (used by the database phase, agent/dbsend.c) ---- */

/* A result set, read row by row. */
typedef struct agentdb_res agentdb_res_t;

/* Runs a statement that returns no rows (or whose rows are discarded). Returns 0 or ERR_DB with
 * the statement's first words and the server's message in err. */
int agentdb_exec(MYSQL *db, const char *sql, char *err, size_t err_size);

/* Runs a query. stream = false buffers the whole result in the client (small catalogue queries);
 * stream = true reads it row by row from the server (mysql_use_result: bounded memory; the
 * connection is busy until the result is freed). Returns 0 and *ret (free with agentdb_res_free)
 * or ERR_DB with err. */
int agentdb_query(MYSQL *db, const char *sql, bool stream, agentdb_res_t **ret, char *err,
                  size_t err_size);

/* The result's column count. */
unsigned agentdb_res_fields(const agentdb_res_t *res);

/* Fetches the next row: returns 1 with *ret_values (NULL entries are SQL NULL) and *ret_lens
 * (valid until the next call), 0 at the end, ERR_DB with err when the server fails mid-stream
 * (e.g. error 1412 when the table's definition changed during the dump). */
int agentdb_res_next(agentdb_res_t *res, char ***ret_values, unsigned long **ret_lens, char *err,
                     size_t err_size);

/* Frees a result (draining what a streaming result has not read); accepts NULL. */
void agentdb_res_free(agentdb_res_t *res);

/* The MYSQL_TYPE_* code for an information_schema DATA_TYPE ("varchar", "bigint"...); 0 (DECIMAL's
 * legacy code is never returned) for names it does not know. */
unsigned agentdb_type_code(const char *data_type);

/* Closes a connection; accepts NULL. */
void agentdb_close(MYSQL *db);

/* Frees what agentdb_grants returned; accepts NULL. */
void agentdb_free_lines(char **lines, size_t n);

#endif
