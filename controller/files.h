/* The controller's side of the files phase: compare the agent's listing with the live
 * generation, ask for what is missing, receive it into the stage, and commit the stage as a new
 * generation. See proto/understudy.proto for the message sequence. */
#ifndef UNDERSTUDY_CONTROLLER_FILES_H
#define UNDERSTUDY_CONTROLLER_FILES_H

#include "generation.h"
#include "msgio.h"

typedef struct files_rx_stats {
    uint64_t entries, needs, bytes_received, reused_by_hash;
    bool tab_prepared; /* the live content table came ready from the background job (tests) */
} files_rx_stats_t;

/* Starts a stage for the next generation. */
int stage_begin(gen_store_t *g, stage_t **ret, char *err, size_t err_size);

/* The number the stage's generation will get (for the database side's staging). */
uint64_t stage_generation(const stage_t *st);

/* Runs the files phase after SyncReady was sent: receives FileEntry* + FilesEnd (a full listing
 * when full_listing, else changes against the live generation), sends FileNeed* +
 * FilesNeedEnd, receives the contents, verifying every file's hash. Refuses unsafe paths,
 * escaping symlinks and anything over the limits (ERR_PROTOCOL / a refusal naming the path).
 * With dry_run, stops after FilesNeedEnd. */
int stage_receive_files(stage_t *st, const msgio_t *io, bool full_listing, bool dry_run,
                        files_rx_stats_t *stats, char *err, size_t err_size);

/* Builds the new tree from the live one and what was received, checks its digest against
 * expected_digest, runs the hooks and makes it live. Sets *ret_generation (the live one again
 * and UNCHANGED when nothing differs: returns 1 then, 0 after a switch). */
int stage_commit(stage_t *st, const uint8_t expected_digest[MF_HASH_LEN], uint64_t *ret_generation,
                 char *err, size_t err_size);

/* After `resolve --discard-local`: trust no live file whose metadata no longer matches its
 * manifest entry (it may have been changed on the backup): ask the agent for it instead. */
void stage_set_verify_live(stage_t *st, bool on);

/* Prepares the next generation's tree in the background (a link copy of the live one, under
 * [site] data/staging), unless it is ready or being prepared: a later sync then only patches it
 * (see controller/files.c). Called when the controller starts and after each sync; a sync that
 * comes meanwhile waits for it. Nothing to report: a sync without it builds the tree whole. */
void stage_prepare_next(gen_store_t *g);

/* Discards the stage (content received by hash is kept for a resumed sync). Accepts NULL. */
void stage_abort(stage_t *st);

#endif
