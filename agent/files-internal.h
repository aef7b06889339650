/* What agent/files.c (scan, state) and agent/send.c (the session part) share. Not for other
 * modules. */
#ifndef UNDERSTUDY_AGENT_FILES_INTERNAL_H
#define UNDERSTUDY_AGENT_FILES_INTERNAL_H

#include "files.h"

struct files_scan {
    char *root, *state_dir;
    char *manifest_path, *gen_path;
    char *new_path; /* this scan's manifest: state_dir/manifest.new, or see new_is_saved */
    int lock_fd;
    bool dry_run, progress;
    uint64_t bandwidth_limit;

    bool have_new;   /* new_path holds this scan's manifest */
    bool new_synced; /* files_scan_sync_new made manifest.new durable already */
    /* Nothing differed from the saved manifest, so the scan wrote nothing and new_path names
     * the saved manifest itself (never to be removed or renamed as manifest.new would be). */
    bool new_is_saved;
    bool have_old;  /* state_dir/manifest was read completely and in order */
    bool committed; /* manifest.new became manifest */
    /* This scan's manifest equals the saved one byte for byte (every entry, cache fields included):
     * committing it for the same generation would rewrite the state with itself. */
    bool same_as_saved;
    uint64_t base_generation;
    bool have_base_digest; /* the generation file also holds the saved manifest's digest */
    uint8_t base_digest[MF_HASH_LEN];
    uint8_t digest[MF_HASH_LEN];
    /* What the scan found different from the saved manifest (have_changes: only with one, and
     * only when something differs): the saved entries it drops or changes (chg_old_path) and
     * its own entries the saved manifest does not hold as they are (chg_new_path), each in walk
     * order -- the two manifests without the entries they share, for an incremental listing
     * (send.c). */
    bool have_changes;
    char *chg_old_path, *chg_new_path;
    uint64_t count, total_bytes;
    uint64_t hashed, hashed_bytes, skipped_special;
    /* Directories the walk went through, listed with getdents64 or taken from a trusted record
     * of the directory cache (state_dir/dirs). */
    uint64_t dirs_listed, dirs_cached;
    uint64_t pre_hashed; /* files the directory readers read (pre_hash), used or not */
};

/* Files whose content does not shrink under zstd (by name). */
bool files_incompressible_name(const char *path);

#endif
