/* File drift: what changed in the live generation's tree since it went live — the file signal of
 * the write guard (media uploads, plugin installs, edited themes).
 *
 * The tree (the docroot's target, data/generations/N/root) is walked in walk order
 * (common/manifest.h: each directory's names sorted bytewise, depth first) and merge-joined with
 * the generation's manifest, which is in the same order, so memory stays bounded by one
 * directory listing per level, whatever the tree's size. Symlinks are never followed.
 *
 * An entry is
 *   created  on disk, not in the manifest;
 *   deleted  in the manifest, not on disk;
 *   changed  in both, but of another kind, with other permission bits, or (regular files)
 *            another size or mtime, or (with opts.hash) another SHA-256; symlinks: another
 *            target. A directory's mtime and size are not compared (they change with entries).
 * Excluded, with everything below them: the built-in paths wp-content/cache/,
 * wp-content/upgrade/ and wp-config.php (the controller rewrites wp-config.php after verifying
 * the generation, with the backup's database settings, so it never matches the manifest), and
 * the extra opts.ignore paths ([guard] ignore_path). A path ending in '/' excludes that directory
 * and everything below; otherwise the exact path and, if it is a directory, everything below.
 *
 * Blocking (reads the whole tree): run it on a worker thread (uv_queue_work).
 */
#ifndef UNDERSTUDY_DRIFT_H
#define UNDERSTUDY_DRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DRIFT_MAX_EXAMPLES 10
#define DRIFT_EXAMPLE_LEN  256
#define DRIFT_MAX_IGNORE   64

typedef struct drift_opts {
    const char *const *ignore; /* extra excluded paths, relative ("wp-content/w3tc/") */
    size_t n_ignore;
    bool hash; /* also compare content hashes of regular files of equal size */
    /* 0, or the last guard_clear: changes from before it were dealt with by the operator and do
     * not count. Created and changed entries count only with a ctime at or after it, deleted
     * ones only when their nearest existing ancestor directory's ctime is at or after it. */
    time_t since;
} drift_opts_t;

typedef struct drift_report {
    uint64_t created, changed, deleted;
    uint64_t examined; /* entries on disk looked at */
    size_t n_examples;
    char examples[DRIFT_MAX_EXAMPLES][DRIFT_EXAMPLE_LEN]; /* "created wp-content/uploads/a.jpg" */
} drift_report_t;

/* Compares the tree at root with the manifest file and fills *ret (zeroed first). Returns 0
 * (drift or not: check the counts), or a negative code with a one-line explanation in err:
 * ERR_PROTOCOL for a corrupt manifest, a negative errno for an unreadable tree. A missing
 * manifest reads as empty (everything is "created"). */
int drift_scan(const char *root, const char *manifest_path, const drift_opts_t *opts,
               drift_report_t *ret, char *err, size_t err_size);

/* True if something drifted. */
static inline bool drift_found(const drift_report_t *r)
{
    return r->created || r->changed || r->deleted;
}

#endif
