/* The agent's side of the files phase: scan the site, list what changed, send what the
 * controller needs.
 *
 * Scanning walks [site] root in walk order (common/manifest.h) minus the exclude patterns,
 * merge-joined with the manifest saved after the last applied sync (state_dir/manifest), so
 * memory does not grow with the number of files, and a file's content is read and hashed only
 * when its size, mtime, ctime or inode changed, or when it is "racily clean" (its mtime is not
 * older than the saved manifest, git's rule). The new manifest is written to
 * state_dir/manifest.new and becomes state_dir/manifest only when the controller applied it.
 * A directory is not listed again (getdents64) when its stat data shows no change since the
 * listing kept for it in state_dir/dirs, which every scan that goes through updates, whatever
 * the sync does next; every name is still lstat'ed.
 */
#ifndef UNDERSTUDY_AGENT_FILES_H
#define UNDERSTUDY_AGENT_FILES_H

#include <stdbool.h>
#include <stdint.h>

#include "manifest.h"
#include "msgio.h"

typedef struct files_opts {
    const char *root;            /* absolute */
    const char *state_dir;       /* absolute, created 0700 if missing */
    const char *const *excludes; /* gitignore-like patterns, see exclude.h */
    size_t n_excludes;
    bool dry_run;             /* list needs, send no content */
    bool progress;            /* draw a progress bar on stderr */
    uint64_t bandwidth_limit; /* bytes per second, 0 = none */
} files_opts_t;

typedef struct files_stats {
    uint64_t entries_sent, needs, bytes_content, bytes_delta, files_hashed;
} files_stats_t;

typedef struct files_scan files_scan_t;

/* Scans the tree. Returns 0 and *ret, or a negative code with a one-line reason in err. */
int files_scan(const files_opts_t *opts, files_scan_t **ret, char *err, size_t err_size);

/* The new tree's digest and entry count, and the generation the saved manifest belongs to
 * (0 when there is none: the controller will ask for a full listing). */
const uint8_t *files_scan_digest(const files_scan_t *s);
uint64_t files_scan_count(const files_scan_t *s);
uint64_t files_scan_base_generation(const files_scan_t *s);
/* How many regular files this scan read and hashed (the rest took their hash from the saved
 * manifest); for the summary and the tests. */
uint64_t files_scan_hashed(const files_scan_t *s);
/* How many directories the walk went through whose names it listed with getdents64, and how
 * many it took from a trusted record of the directory cache instead; for the tests. */
uint64_t files_scan_dirs_listed(const files_scan_t *s);
uint64_t files_scan_dirs_cached(const files_scan_t *s);
/* How many files the directory readers read when the scan had no saved manifest (each then
 * counts in files_scan_hashed too, unless it changed while being read); for the tests. */
uint64_t files_scan_pre_hashed(const files_scan_t *s);

/* After SyncReady: sends FileEntry messages (every entry when ready->full_listing, else only
 * what differs from the saved manifest, deletions included) and FilesEnd; receives FileNeed
 * messages up to FilesNeedEnd; then sends FileData/FileDelta for each need in order (or, in a
 * dry run, prints them on stdout and sends nothing). Returns 0 or a negative code with err. */
int files_send(files_scan_t *s, const msgio_t *io, const wire_sync_ready_t *ready,
               files_stats_t *stats, char *err, size_t err_size);

/* Makes this scan's new manifest durable ahead of the commit (which then does not), so the
 * fsync can run while the session does; the session may read the manifest meanwhile. */
void files_scan_sync_new(files_scan_t *s);

/* After a Result of APPLIED (or UNCHANGED) for generation: the new manifest becomes the saved
 * state, tagged with generation. */
int files_scan_commit(files_scan_t *s, uint64_t generation);

/* Frees the scan, removing an uncommitted manifest.new. Accepts NULL. */
void files_scan_free(files_scan_t *s);

#endif
