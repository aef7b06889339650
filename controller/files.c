/* Placeholder: the files phase is being written (File sync issue). */
#include "files.h"

#include <stdio.h>

#include "err.h"

int stage_begin(gen_store_t *g, stage_t **ret, char *err, size_t err_size)
{
    snprintf(err, err_size, "file sync is not implemented yet");
    return ERR_INTERNAL;
}
int stage_receive_files(stage_t *st, const msgio_t *io, bool full_listing, bool dry_run,
                        files_rx_stats_t *stats, char *err, size_t err_size) { return ERR_INTERNAL; }
int stage_commit(stage_t *st, const uint8_t expected_digest[MF_HASH_LEN], uint64_t *ret_generation,
                 char *err, size_t err_size) { return ERR_INTERNAL; }
void stage_abort(stage_t *st) {}
