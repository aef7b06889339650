#include "identity.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "err.h"

static char *dup_line(const char *what, const char *path, int r)
{
    char line[PATH_MAX + 128];
    snprintf(line, sizeof(line), "cannot %s %s: %s", what, path, err_str(r));
    return strdup(line);
}

static int join(char *out, const char *dir, const char *name, const char *ext)
{
    int n = snprintf(out, PATH_MAX, "%s/%s%s", dir, name, ext);
    return n < 0 || n >= PATH_MAX ? UV_ENAMETOOLONG : 0;
}

int identity_init(const char *dir, const char *name, bool force, identity_paths_t *ret,
                  char **ret_error)
{
    char host[256] = "localhost";
    char cn[512];
    int r;

    *ret_error = NULL;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        r = -errno;
        *ret_error = dup_line("create directory", dir, r);
        return r;
    }
    if (!realpath(dir, ret->dir)) {
        r = -errno;
        *ret_error = dup_line("resolve", dir, r);
        return r;
    }
    if (join(ret->key, ret->dir, name, ".key") < 0 || join(ret->cert, ret->dir, name, ".crt") < 0 ||
        join(ret->conf, ret->dir, name, ".conf") < 0) {
        *ret_error = dup_line("use", dir, UV_ENAMETOOLONG);
        return UV_ENAMETOOLONG;
    }
    gethostname(host, sizeof(host) - 1);
    snprintf(cn, sizeof(cn), "understudy-%s@%s", name, host);
    return tls_identity_create(ret->key, ret->cert, cn, 1, 3650, force, ret->fingerprint,
                               ret_error);
}
