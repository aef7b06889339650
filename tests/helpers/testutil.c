/* See testutil.h. */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 ? 0 : -1;
}

int tu_rm_tree(const char *path)
{
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int tu_identities(const char *dir, tu_pair_t *p)
{
    char *error = NULL;
    snprintf(p->skey, sizeof(p->skey), "%s/s.key", dir);
    snprintf(p->scert, sizeof(p->scert), "%s/s.crt", dir);
    snprintf(p->ckey, sizeof(p->ckey), "%s/c.key", dir);
    snprintf(p->ccert, sizeof(p->ccert), "%s/c.crt", dir);
    if (tls_identity_create(p->skey, p->scert, "s", 1, 10, false, p->sfp, &error) < 0 ||
        tls_identity_create(p->ckey, p->ccert, "c", 1, 10, false, p->cfp, &error) < 0) {
        fprintf(stderr, "tu_identities: %s\n", error ? error : "failed");
        free(error);
        return -1;
    }
    return 0;
}
