/* Placeholder: the files phase is being written (File sync issue). */
#include "files.h"

#include <stdio.h>

#include "err.h"

int files_scan(const files_opts_t *opts, files_scan_t **ret, char *err, size_t err_size)
{
    snprintf(err, err_size, "file sync is not implemented yet");
    return ERR_INTERNAL;
}
const uint8_t *files_scan_digest(const files_scan_t *s) { return NULL; }
uint64_t files_scan_count(const files_scan_t *s) { return 0; }
uint64_t files_scan_base_generation(const files_scan_t *s) { return 0; }
int files_send(files_scan_t *s, const msgio_t *io, const wire_sync_ready_t *ready,
               files_stats_t *stats, char *err, size_t err_size) { return ERR_INTERNAL; }
int files_scan_commit(files_scan_t *s, uint64_t generation) { return ERR_INTERNAL; }
void files_scan_free(files_scan_t *s) {}
