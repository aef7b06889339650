/* The agent's side of the database phase: a consistent snapshot of the site's database, with
 * only the grants a shared host gives, streamed as typed rows.
 *
 * Protocol (after the files phase): agent sends DbBegin (a TableSummary with row count and
 * digest per table, and per-chunk digests for large tables with an integer key, computed inside
 * the snapshot); the controller answers DbNeed (the tables it does not already have; then one
 * DbNeed per table of which it wants only some chunks, while `more` is set); the agent sends, for
 * each needed table, TableDef, RowBatch* (all rows, or those of the chunks asked for), TableEnd.
 */
#ifndef UNDERSTUDY_AGENT_DBSEND_H
#define UNDERSTUDY_AGENT_DBSEND_H

#include <stdbool.h>
#include <stdint.h>

#include "msgio.h"
#include "wpconfig.h"

typedef struct dbsend_opts {
    bool routines; /* also send stored routines and events ([database] routines = yes) */
    bool dry_run;
    /* A file the agent may keep between syncs (its state directory), or NULL: the row digests
     * of tables whose information_schema UPDATE_TIME has not moved since they were computed
     * are taken from it instead of scanning the table again. */
    const char *digest_cache;
} dbsend_opts_t;

typedef struct dbsend_stats {
    uint64_t tables, tables_sent, rows_sent, bytes_sent;
    char non_transactional[512]; /* names of tables read under LOCK TABLES, for the report */
    uint64_t digests_cached;     /* tables whose row digest came from opts->digest_cache */
} dbsend_stats_t;

/* Runs the database phase over io with the credentials in wp. Returns 0, or a negative code
 * (ERR_DB_CONNECT, ERR_DB_PRIVILEGE, ERR_DB, a transport error) with a one-line reason in err. */
int dbsend_run(const wpconfig_t *wp, const msgio_t *io, const dbsend_opts_t *opts,
               dbsend_stats_t *stats, char *err, size_t err_size);

#endif
