/* The statements the controller runs for the database phase, built from the agent's typed
 * definitions and checked strictly: the controller trusts no SQL text from the agent.
 *
 * Pure functions (no server), so every rule is unit-tested (tests/unit/test-dbsync.c).
 * Every function appends to out and, on refusal, writes one line naming the object and the
 * reason into err and returns ERR_REFUSED (UV_ENOMEM when out cannot grow).
 */
#ifndef UNDERSTUDY_DBDDL_H
#define UNDERSTUDY_DBDDL_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "wire.h"

/* Chunk c of a table with a one-column integer key holds keys [c * W, (c + 1) * W): W is
 * DBDDL_CHUNK_WIDTH unless the agent's definition line names another ("d:<hex>/<W>", a power
 * of two from DBDDL_CHUNK_WIDTH_MIN to DBDDL_CHUNK_WIDTH; agent/dbsend.c). */
#define DBDDL_CHUNK_WIDTH     4096
#define DBDDL_CHUNK_WIDTH_MIN 16

/* Names of the controller's own objects: site objects may not use them. */
#define DBDDL_MARKER_PREFIX "understudy~gen"

/* Appends name as a backtick-quoted identifier. */
int dbddl_ident(buf_t *out, const char *name);

/* Appends s as a single-quoted string literal (backslash escapes; sessions run without
 * NO_BACKSLASH_ESCAPES). */
int dbddl_literal(buf_t *out, const char *s);

/* Checks a table, view or trigger name: 1..64 bytes, no NUL or '/', '\\', '.', no trailing
 * blank, not the controller's marker prefix. */
int dbddl_check_name(const char *name, char *err, size_t err_size);

/* Builds CREATE TABLE schema.name from a TableDef (kind TABLE_BASE): column types from an
 * allow-list with their arguments checked, defaults limited to literals and
 * current_timestamp(), generated expressions checked like view bodies, engine from an
 * allow-list (InnoDB, MyISAM, Aria, MEMORY; never CONNECT, FEDERATED, SPIDER...), no table
 * options that name a path. */
int dbddl_create_table(const wire_table_def_t *t, const char *schema, buf_t *out, char *err,
                       size_t err_size);

/* Checks the create_sql of a view, trigger, procedure, function or event TableDef and builds
 * the statement to run in the target schema (the session's current database): exactly one
 * CREATE VIEW / TRIGGER / PROCEDURE / FUNCTION / EVENT statement for t->name, without DEFINER
 * or comments, whose qualified names refer only to src_schema (the qualifier becomes
 * dst_schema, or is removed when dst_schema is NULL: the server keeps a routine's or a view's
 * function calls as written, so mariadb-dump of both sides agree only with the qualifier
 * rewritten), to the site's own objects (site_names) or to aliases the statement declares; a
 * trigger must be ON one of site_tables. Views, routines and events are emitted as CREATE OR
 * REPLACE. */
int dbddl_check_object(const wire_table_def_t *t, const char *src_schema, const char *dst_schema,
                       const char *const *site_names, size_t n_site_names,
                       const char *const *site_tables, size_t n_site_tables, buf_t *out, char *err,
                       size_t err_size);

/* Checks an sql_mode value (comma-separated words of A-Z and '_'). */
bool dbddl_sql_mode_ok(const char *mode);

/* Checks a character set or collation name ([A-Za-z0-9_]+). */
bool dbddl_charset_ok(const char *name);

/* The row digest query for a table, identical to the agent's (agent/dbsend.c). schema may be
 * NULL (the current database). */
int dbddl_digest_sql(const wire_table_def_t *t, const char *schema, buf_t *out);

/* The connection settings written into the backup's wp-config.php. */
typedef struct dbddl_wp {
    const char *name, *user, *password, *host;
    bool disable_wp_cron; /* [site] wp_cron = no */
} dbddl_wp_t;

/* Rewrites the text of a wp-config.php: the value of every define() of DB_NAME, DB_USER,
 * DB_PASSWORD and DB_HOST (outside comments) becomes a single-quoted PHP literal of vals';
 * with disable_wp_cron, DISABLE_WP_CRON's becomes true (a define is added after the opening
 * "<?php" when there is none); everything else is copied byte for byte. Refuses (ERR_REFUSED) a
 * file that does not define all four DB_ constants. */
int dbddl_rewrite_wpconfig(const char *text, size_t len, const dbddl_wp_t *vals, buf_t *out,
                           char *err, size_t err_size);

#endif
