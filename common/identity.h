/* Provisioning of a host's identity: the directory, its key and certificate, shared by both
 * programs' `init` commands. */
#ifndef UNDERSTUDY_IDENTITY_H
#define UNDERSTUDY_IDENTITY_H

#include <limits.h>
#include <stdbool.h>

#include "tls.h"

typedef struct identity_paths {
    char dir[PATH_MAX];  /* absolute */
    char key[PATH_MAX];  /* dir/<name>.key */
    char cert[PATH_MAX]; /* dir/<name>.crt */
    char conf[PATH_MAX]; /* dir/<name>.conf */
    char fingerprint[TLS_FP_LEN];
} identity_paths_t;

/* Creates dir (mode 0700 when new) and, inside it, <name>.key and <name>.crt: an Ed25519 key and
 * a self-signed certificate for "understudy-<name>@<hostname>", valid from a day ago (clock skew)
 * for ten years. Refuses to replace an existing key unless force (ERR_EXISTS). Fills *ret with
 * absolute paths and the fingerprint. On failure *ret_error receives a malloc'ed line. */
int identity_init(const char *dir, const char *name, bool force, identity_paths_t *ret,
                  char **ret_error);

#endif
