/* The controller's side of the database phase: receive typed rows into a schema of its own,
 * verify them against the digests the agent computed in its snapshot, and switch them in
 * together with the files (gen_hooks_t). It trusts no SQL from the agent: statements are built
 * from the typed definitions, or validated strictly. */
#ifndef UNDERSTUDY_DBRECV_H
#define UNDERSTUDY_DBRECV_H

#include "cfg.h"
#include "generation.h"
#include "msgio.h"

typedef struct dbrecv dbrecv_t;

typedef struct dbrecv_stats {
    uint64_t tables, tables_received, rows_received;
} dbrecv_stats_t;

/* Connects to the backup's MariaDB from [database]; NULL *ret when the config has no
 * [database] section (files only). */
int dbrecv_open(const cfg_t *cfg, dbrecv_t **ret, char *err, size_t err_size);
void dbrecv_close(dbrecv_t *d);

/* The hooks to give gen_store_open (ctx = d). */
gen_hooks_t dbrecv_hooks(dbrecv_t *d);

/* Runs the database phase: db_begin is the agent's DbBegin (owned by the caller); answers
 * DbNeed, receives and verifies the needed tables into the staging schema for generation. */
int dbrecv_run(dbrecv_t *d, const msgio_t *io, const wire_db_begin_t *db_begin, uint64_t generation,
               bool dry_run, dbrecv_stats_t *stats, char *err, size_t err_size);

/* After `resolve --discard-local`: the next dbrecv_run takes every table from the agent,
 * whatever its digest, replacing rows written on the backup. */
void dbrecv_set_resync(dbrecv_t *d, bool on);

/* Drops what dbrecv_run staged (the sync failed). */
void dbrecv_abort(dbrecv_t *d);

/* Rewrites root_fd/wp-config.php (the prepare hook): DB_NAME, DB_USER, DB_PASSWORD and DB_HOST
 * become the controller's [database] settings; written as a temp file renamed over it, opened
 * without following symlinks. No wp-config.php: nothing to do. Returns 0 or ERR_WPCONFIG. */
int dbrecv_prepare_wpconfig(dbrecv_t *d, int root_fd, char *err, size_t err_size);

#endif
