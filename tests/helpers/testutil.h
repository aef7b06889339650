/* Small fixtures shared by the unit tests. */
#pragma once

#include "tls.h"

/* Removes the tree at path (not following symlinks). 0, or -1 with errno set. */
int tu_rm_tree(const char *path);

/* Creates a server and a client identity (s.key/s.crt, c.key/c.crt, valid from a day ago for
 * ten days) in dir, filling the paths and fingerprints. 0 or -1. */
typedef struct tu_pair {
    char skey[256], scert[256], ckey[256], ccert[256];
    char sfp[TLS_FP_LEN], cfp[TLS_FP_LEN];
} tu_pair_t;
int tu_identities(const char *dir, tu_pair_t *p);
