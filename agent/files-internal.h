/* What agent/files.c (scan, state) and agent/send.c (the session part) share. Not for other
 * modules. */
#ifndef UNDERSTUDY_AGENT_FILES_INTERNAL_H
#define UNDERSTUDY_AGENT_FILES_INTERNAL_H

#include "files.h"

struct files_scan {
    char *root, *state_dir;
    char *manifest_path, *new_path, *gen_path;
    int lock_fd;
    bool dry_run, progress;
    uint64_t bandwidth_limit;

    bool have_new;  /* state_dir/manifest.new holds this scan's manifest */
    bool have_old;  /* state_dir/manifest was read completely and in order */
    bool committed; /* manifest.new became manifest */
    /* manifest.new equals the saved manifest byte for byte (every entry, cache fields included):
     * committing it for the same generation would rewrite the state with itself. */
    bool same_as_saved;
    uint64_t base_generation;
    bool have_base_digest; /* the generation file also holds the saved manifest's digest */
    uint8_t base_digest[MF_HASH_LEN];
    uint8_t digest[MF_HASH_LEN];
    uint64_t count, total_bytes;
    uint64_t hashed, hashed_bytes, skipped_special;
};

/* Files whose content does not shrink under zstd (by name). */
bool files_incompressible_name(const char *path);

#endif
