/* Generations: complete copies of the site's files under [site] data, built beside the live one
 * and made live with one atomic rename of the [site] docroot symlink.
 *
 * Layout under data/:
 *   generations/<N>/root       the tree (docroot -> data/generations/<N>/root)
 *   generations/<N>/manifest   its manifest (common/manifest.h), with the agent's hashes
 *   generations/<N>/meta       tree digest, time applied, agent fingerprint (text)
 *   staging/                   the generation being built, and content received by hash
 *                              (kept across interrupted syncs, so a resumed sync reuses it)
 *   journal                    the switch in progress, for crash recovery
 * Unchanged files are hard links to the previous generation's; new content is written as temp
 * + fsync + rename. Every path is opened beneath the generation root with openat2
 * (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a hostile sender cannot write outside it.
 */
#ifndef UNDERSTUDY_GENERATION_H
#define UNDERSTUDY_GENERATION_H

#include <stdbool.h>
#include <stdint.h>

#include "manifest.h"

typedef struct gen_opts {
    const char *data;    /* [site] data, absolute */
    const char *docroot; /* [site] docroot, absolute: the symlink */
    const char *owner;   /* [site] owner, USER:GROUP ("" or NULL: leave as is) */
    unsigned keep;       /* [retention] generations */
    uint64_t max_files, max_file_size, max_total_size; /* [limits] */
} gen_opts_t;

/* What the database side contributes to a switch (controller/dbrecv.c). All optional. */
typedef struct gen_hooks {
    /* Before the switch, with the staged tree's root fd: e.g. rewrite wp-config.php. */
    int (*prepare)(void *ctx, uint64_t generation, int root_fd, char *err, size_t err_size);
    /* The database half of the switch, journaled: runs right before the symlink flip. */
    int (*switch_db)(void *ctx, uint64_t generation, char *err, size_t err_size);
    /* Crash recovery: is generation's database the live one? 1 yes, 0 no, <0 error. */
    int (*db_is_live)(void *ctx, uint64_t generation);
    /* After a switch: drop database copies of generations no longer kept. */
    void (*prune)(void *ctx, uint64_t oldest_kept);
    void *ctx;
} gen_hooks_t;

typedef struct gen_store gen_store_t;
typedef struct stage stage_t;

/* Opens the store, creating the layout if needed, and finishes or undoes a switch a crash
 * interrupted (journal + hooks->db_is_live). Returns 0 or a negative code with err. */
int gen_store_open(const gen_opts_t *opts, const gen_hooks_t *hooks, gen_store_t **ret, char *err,
                   size_t err_size);
void gen_store_close(gen_store_t *g);

/* The live generation (0: none yet), its tree digest and manifest path. */
uint64_t gen_store_live(const gen_store_t *g);

/* The generation the docroot symlink points at (its target .../generations/<N>/root), read
 * without opening the store (status, the drift checks); 0 when none or not of that shape. */
uint64_t gen_docroot_generation(const char *docroot);
/* The same for a path already resolved (realpath) to a generation's root; 0 when not one. */
uint64_t gen_root_generation(const char *root);
const uint8_t *gen_store_live_digest(const gen_store_t *g);
const char *gen_store_live_manifest(const gen_store_t *g);

/* Generations on disk, newest first; returns the count. */
size_t gen_store_list(const gen_store_t *g, uint64_t *ret, size_t max);

/* Re-reads which generation the docroot points at (another process may have rolled back).
 * Returns 0 or a negative code with err. */
int gen_store_refresh(gen_store_t *g, char *err, size_t err_size);

/* Takes the store's lock (data/lock, flock) for a sync or a rollback; ERR_OVERLOADED when
 * another process or stage holds it. gen_store_unlock releases it. */
int gen_store_lock(gen_store_t *g, char *err, size_t err_size);
void gen_store_unlock(gen_store_t *g);

/* Switches the docroot to another kept generation at once (and its database through
 * hooks->switch_db), journaled like a sync's switch. The caller holds the lock. Returns 0 or a
 * negative code with err (ERR_USAGE for a generation that is live or not kept). */
int gen_rollback(gen_store_t *g, uint64_t generation, char *err, size_t err_size);

#endif
