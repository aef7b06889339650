/* Placeholder: generations are being written (File sync issue). */
#include "generation.h"

#include <stdlib.h>

#include "err.h"

struct gen_store {
    int unused;
};
int gen_store_open(const gen_opts_t *opts, const gen_hooks_t *hooks, gen_store_t **ret,
                   char *err, size_t err_size)
{
    *ret = calloc(1, sizeof(**ret));
    return *ret ? 0 : ERR_INTERNAL;
}
void gen_store_close(gen_store_t *g) { free(g); }
uint64_t gen_store_live(const gen_store_t *g) { return 0; }
const uint8_t *gen_store_live_digest(const gen_store_t *g) { return NULL; }
const char *gen_store_live_manifest(const gen_store_t *g) { return NULL; }
size_t gen_store_list(const gen_store_t *g, uint64_t *ret, size_t max) { return 0; }
int gen_rollback(gen_store_t *g, uint64_t generation, char *err, size_t err_size)
{
    return ERR_INTERNAL;
}
