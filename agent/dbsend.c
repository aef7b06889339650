/* Placeholder: the database phase is being written (Database sync issue). */
#include "dbsend.h"

#include <stdio.h>

#include "err.h"

int dbsend_run(const wpconfig_t *wp, const msgio_t *io, const dbsend_opts_t *opts,
               dbsend_stats_t *stats, char *err, size_t err_size)
{
    snprintf(err, err_size, "database sync is not implemented yet");
    return ERR_INTERNAL;
}
