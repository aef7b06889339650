/* What controller/files.c needs from the generation store beyond generation.h: the store's
 * directories, the owner to give files, and the switch itself. Not for other modules. */
#ifndef UNDERSTUDY_GENPRIV_H
#define UNDERSTUDY_GENPRIV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "generation.h"

/* The staging directory's names (under data/staging/). */
#define GEN_STAGE_DIR "gen" /* the generation being built: root/, manifest, meta */
#define GEN_OBJECTS                                                                                \
    "objects" /* content received, by hex SHA-256, kept across syncs: complete                     \
               * (its hash is checked before reuse) or a whole transfer cut                        \
               * off (shorter than listed: resumed) */
#define GEN_PARTIAL                                                                                \
    "partial"         /* no longer written (cut-off transfers stay in objects/); kept              \
                       * in the layout and emptied with objects/ */
#define GEN_TMP "tmp" /* files being written */
#define GEN_OBJECTS_USED                                                                           \
    "objects.used" /* the store of a generation now live, removed in the background by the         \
                    * preparation of the next tree (files.c) */
#define GEN_OLD_PREFIX                                                                             \
    "old." /* old.N: generation N after retention dropped it, removed in the background by the     \
            * preparation of the next tree (files.c) */
#define GEN_NEXT_DIR                                                                               \
    "next" /* the prepared tree: root/, a link copy of the live generation,                        \
            * and base (its number, written last); see files.c */

const gen_opts_t *gen_store_opts(const gen_store_t *g);
/* data/staging, opened by the store (do not close). */
int gen_store_staging_fd(const gen_store_t *g);
/* Opens the live generation's root directory (caller closes); -ENOENT when none is live. */
int gen_store_open_live_root(const gen_store_t *g);
/* The number the next generation gets: one past the newest on disk (after a rollback the newer
 * generations stay, so this is not always live + 1). */
uint64_t gen_store_next(const gen_store_t *g);
/* The owner files get: true and the ids when chowning is on. */
bool gen_store_owner(const gen_store_t *g, uid_t *ret_uid, gid_t *ret_gid);
/* A chown failed with EPERM: warn once and stop chowning. */
void gen_store_chown_denied(gen_store_t *g);

/* Runs hooks->prepare on the staged tree (before its directories get their final owners and
 * modes, so the hook can still create files in them). Returns 0 or the hook's error. */
int gen_store_prepare(gen_store_t *g, uint64_t generation, int root_fd, char *err, size_t err_size);

/* Makes data/staging/gen (complete: root/ and manifest) generation `generation` and live:
 * writes its meta, makes the tree durable (one syncfs, unless `durable` says the caller fsynced
 * everything it wrote), journals, renames it into generations/, runs hooks->switch_db, flips the
 * docroot symlink, ends the journal, prunes. On failure before the flip the live generation is
 * untouched. Returns 0 or a negative code with err. */
int gen_store_install(gen_store_t *g, uint64_t generation, const uint8_t digest[MF_HASH_LEN],
                      bool durable, char *err, size_t err_size);

/* One background job at a time on behalf of the store (files.c prepares the next generation's
 * tree with it). gen_store_bg_start runs fn(arg) on its own thread and returns true, or returns
 * false (fn never runs; the caller still owns arg) while an earlier job is running or when no
 * thread can be made. fn owns arg and should return early once gen_store_bg_cancelled() is true
 * (gen_store_close cancels and waits). gen_store_bg_wait waits until no job runs. The store's
 * users call these from one thread at a time (the sync lock), like the rest of the store. */
bool gen_store_bg_start(gen_store_t *g, void (*fn)(void *arg), void *arg);
void gen_store_bg_wait(gen_store_t *g);
bool gen_store_bg_cancelled(gen_store_t *g);
/* The job says what is left of it may be cut short (cleaning up): gen_store_bg_finish then
 * cancels it before waiting, where gen_store_bg_wait would wait for the whole of it. The flag
 * is what gen_store_bg_cancelled reads, for functions that poll it themselves. */
void gen_store_bg_interruptible(gen_store_t *g);
void gen_store_bg_finish(gen_store_t *g);
const atomic_bool *gen_store_bg_cancel_flag(gen_store_t *g);

/* The watch of the prepared tree (files.c): an inotify descriptor watching the live directories
 * of generation base since the tree was prepared and checked. put takes fd (replacing, and
 * closing, an earlier one; -1 clears); take hands it over when it was put for base and returns
 * -1 otherwise (closing one for another base). Called from the background job (put, which
 * finishes before anyone takes: the sync waits for the job) and from the sync (take). */
void gen_store_put_watch(gen_store_t *g, int fd, uint64_t base);
int gen_store_take_watch(gen_store_t *g, uint64_t base);

/* The content table of generation base (files.c), built by the background job as it reads the
 * manifest, so that a sync does not read the whole live manifest to build it. put hands tab
 * over with its destructor (freeing an earlier one; NULL clears); take returns it when it was
 * put for base and NULL otherwise, and the caller owns it. Thread-safe: the job may still run
 * while a sync takes. */
void gen_store_put_tab(gen_store_t *g, void *tab, uint64_t base, void (*free_fn)(void *tab));
void *gen_store_take_tab(gen_store_t *g, uint64_t base);
/* Formats a one-line reason into err and returns r (for `return set_err(...)`). */
int set_err(char *err, size_t err_size, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The one file the controller changes after verification (its database settings): the live
 * copy differs from the listed content by design. */
#define GEN_REWRITTEN_FILE "wp-config.php"

#endif
