/* Placeholder: the database phase is being written (Database sync issue). */
#include "dbrecv.h"

#include <stddef.h>

#include "err.h"

int dbrecv_open(const cfg_t *cfg, dbrecv_t **ret, char *err, size_t err_size)
{
    *ret = NULL;
    return 0;
}
void dbrecv_close(dbrecv_t *d) {}
gen_hooks_t dbrecv_hooks(dbrecv_t *d)
{
    gen_hooks_t h = {0};
    return h;
}
int dbrecv_run(dbrecv_t *d, const msgio_t *io, const wire_db_begin_t *db_begin,
               uint64_t generation, bool dry_run, dbrecv_stats_t *stats, char *err,
               size_t err_size) { return ERR_INTERNAL; }
void dbrecv_abort(dbrecv_t *d) {}
