#include "fsutil.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

int fs_mkdirs(const char *path, size_t len, mode_t mode)
{
    char p[PATH_MAX];
    if (len >= sizeof(p))
        return -ENAMETOOLONG;
    memcpy(p, path, len);
    p[len] = '\0';
    for (size_t i = 1; i <= len; i++) {
        if (i < len && p[i] != '/')
            continue;
        p[i] = '\0';
        int r = mkdir(p, mode) < 0 && errno != EEXIST ? -errno : 0;
        if (i < len)
            p[i] = '/';
        if (r < 0)
            return r;
    }
    return 0;
}
