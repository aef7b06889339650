/* File manifests: the sorted list of a tree's entries, streamed to and from disk, and the tree
 * digest both sides compute the same way.
 *
 * Order: "walk order", the order a depth-first walk produces when each directory's names are
 * sorted bytewise: paths compare bytewise except that '/' sorts before every other byte, so
 * "a", "a/z", "a.b" is sorted. Every manifest file and every entry stream (the agent's FileEntry
 * messages) is in this order, so two of them merge-join in one pass with constant memory.
 *
 * Tree digest: SHA-256 over every entry in order, each contributing its path, kind, permission
 * bits, size, mtime (ns), content hash (regular files) and link target (symlinks), each field
 * length-prefixed or fixed-size, so no two different trees give the same byte stream. Fields
 * that only the agent's cache needs (device, inode, ctime) are not part of it.
 */
#ifndef UNDERSTUDY_MANIFEST_H
#define UNDERSTUDY_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MF_HASH_LEN 32
#define MF_PATH_MAX 4096

/* The same numbers as proto FileKind. */
typedef enum mf_kind { MF_REGULAR = 0, MF_DIRECTORY = 1, MF_SYMLINK = 2 } mf_kind_t;

typedef struct mf_entry {
    const char *path; /* relative, '/'-separated, no leading or trailing '/' */
    mf_kind_t kind;
    uint32_t mode; /* permission bits (07777); 0 for symlinks in the digest */
    int64_t mtime_ns;
    uint64_t size;             /* regular files */
    uint8_t hash[MF_HASH_LEN]; /* SHA-256 of the content (regular files) */
    const char *link_target;   /* symlinks, else NULL */
    /* Agent cache only (not digested): */
    uint64_t dev, ino;
    int64_t ctime_ns;
} mf_entry_t;

/* Compares two paths in walk order; returns <0, 0, >0. */
int mf_path_cmp(const char *a, const char *b);
/* The same for paths of known length without NUL bytes (faster on long common prefixes). */
int mf_path_cmp_n(const char *a, size_t la, const char *b, size_t lb);

/* Incremental tree digest. */
typedef struct mf_digest {
    void *ctx; /* EVP_MD_CTX */
} mf_digest_t;

int mf_digest_init(mf_digest_t *d);
void mf_digest_add(mf_digest_t *d, const mf_entry_t *e);
/* Writes the digest and frees the context. */
void mf_digest_final(mf_digest_t *d, uint8_t ret[MF_HASH_LEN]);
/* Frees without a result (error paths); accepts an initialised or zeroed digest. */
void mf_digest_free(mf_digest_t *d);

/* Writes a manifest file through a temp file renamed into place on commit. Entries must come in
 * walk order (ERR_PROTOCOL otherwise, naming nothing: the caller knows the path). */
typedef struct mf_writer mf_writer_t;

int mf_writer_open(const char *path, mf_writer_t **ret);
int mf_writer_add(mf_writer_t *w, const mf_entry_t *e);
/* Commit without fsync: for spools, and for files made durable another way (syncfs before a
 * switch, an fsync before the rename that makes them state). Call before commit. */
void mf_writer_skip_fsync(mf_writer_t *w);
/* Flushes, fsyncs (unless skipped) and renames into place; fills the tree digest and entry
 * count; frees w. */
int mf_writer_commit(mf_writer_t *w, uint8_t ret_digest[MF_HASH_LEN], uint64_t *ret_count);
/* Removes the temp file and frees w; accepts NULL. */
void mf_writer_abort(mf_writer_t *w);

/* Reads a manifest file in order. */
typedef struct mf_reader mf_reader_t;

/* Opens path; a missing file opens as an empty manifest (ret_missing, if given, says so). */
int mf_reader_open(const char *path, mf_reader_t **ret, bool *ret_missing);
/* Returns 1 and fills *e (its strings valid until the next call), 0 at the end, or ERR_PROTOCOL
 * for a corrupt or out-of-order file. */
int mf_reader_next(mf_reader_t *r, mf_entry_t *e);
void mf_reader_close(mf_reader_t *r);

/* True when a symlink at path (relative to the tree's root) with this target could resolve
 * outside the tree, judged on the text alone: an empty or absolute target, ".." components that
 * climb above the root from the link's directory, or any ".." after a name. The agent skips such
 * links (rsync's --safe-links) and the controller refuses them, by this one rule. */
bool mf_link_escapes(const char *path, const char *target);

/* Hex form of a hash (65 bytes with NUL). */
void mf_hash_hex(const uint8_t hash[MF_HASH_LEN], char ret[2 * MF_HASH_LEN + 1]);

#endif
