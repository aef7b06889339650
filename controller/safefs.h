/* File-system helpers for building generations from a hostile sender's listing: every path is
 * resolved beneath a directory fd without following any symlink (openat2 with RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS, or a component-by-component O_NOFOLLOW walk where openat2 is missing),
 * so no name the sender chose can lead outside the tree, whatever is on disk. */
#ifndef UNDERSTUDY_SAFEFS_H
#define UNDERSTUDY_SAFEFS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Opens path (relative, '/'-separated) beneath dirfd, never following a symlink in any
 * component (the last one included) and never leaving dirfd. flags as for openat (O_CLOEXEC and
 * O_NOFOLLOW are added); mode only with O_CREAT. Returns the fd or a negative errno (ELOOP or
 * EXDEV for a symlink or an escape). An empty path opens dirfd itself again. */
int safefs_open(int dirfd, const char *path, int flags, mode_t mode);

/* Opens the directory that holds path beneath dirfd (as safefs_open) and points *ret_name at
 * path's last component (inside path). Returns the fd or a negative errno. */
int safefs_open_parent(int dirfd, const char *path, const char **ret_name);

/* Removes name (file, symlink or whole directory tree) in dirfd without following symlinks;
 * directories are made writable first so read-only trees go too. A missing name is success.
 * Returns 0 or the first negative errno. */
int safefs_rm_tree(int dirfd, const char *name);
/* The same, stopping with -ECANCELED (the tree partly removed) once *stop is true. */
int safefs_rm_tree_until(int dirfd, const char *name, const atomic_bool *stop);

/* Writes data to name in dirfd (mode `mode`) through a temp file, fsync and rename, then fsyncs
 * dirfd: a reader sees the old or the new content, never a mix. Returns 0 or a negative errno. */
int safefs_write_atomic(int dirfd, const char *name, const void *data, size_t len, mode_t mode);

/* Reads a small text file (up to max - 1 bytes) into buf, NUL-terminated. Returns the length
 * or a negative errno. */
ssize_t safefs_read_small(int dirfd, const char *name, char *buf, size_t max);

/* Copies path for a log line or an error message: non-printable bytes, backslash and quote as
 * \xNN, truncated with "..." to fit out (size >= 8). Returns out. */
char *safefs_quote(const char *path, size_t len, char *out, size_t size);

#endif
