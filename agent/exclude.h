/* Exclude patterns for the file scan: a gitignore-like subset, matched against paths relative to
 * the site root.
 *
 * Rules, in the order gitignore documents them:
 *  - A blank pattern or one starting with '#' is ignored ("\#" is a literal '#').
 *  - A leading '!' re-includes what an earlier pattern excluded ("\!" is a literal '!'). The last
 *    matching pattern decides. As in git, nothing below an excluded directory can be re-included,
 *    because the scan never enters an excluded directory.
 *  - A trailing '/' makes the pattern match directories only (and so everything below them).
 *  - A pattern with a '/' at its start or in its middle is anchored at the site root and matched
 *    against the whole relative path ("wp-content/cache/" is the directory wp-content/cache, not
 *    a/wp-content/cache); a leading '/' is dropped. A pattern without one matches the last path
 *    component at any depth ("*.log", "node_modules/").
 *  - '*' matches any run of bytes other than '/', '?' one byte other than '/', "[a-z]" and
 *    "[!a-z]" a byte class, '\' quotes the next byte. "**" matches across '/': "**" + "/x" is x
 *    at any depth, "x/" + "**" everything inside x, "a/" + "**" + "/b" zero or more directories
 *    between a and b.
 * Matching is bytewise; file names need not be UTF-8.
 */
#ifndef UNDERSTUDY_AGENT_EXCLUDE_H
#define UNDERSTUDY_AGENT_EXCLUDE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct excl excl_t;

/* Compiles the patterns (copied). Returns 0 and *ret, or UV_ENOMEM. */
int excl_new(const char *const *patterns, size_t n, excl_t **ret);

/* Returns whether path (relative, '/'-separated) is excluded; is_dir tells what it is. */
bool excl_match(const excl_t *x, const char *path, bool is_dir);

/* Frees x; accepts NULL. */
void excl_free(excl_t *x);

#endif
