/* Beneath-the-root file-system helpers. See safefs.h. */
#include "safefs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

static int openat2_missing; /* set once the kernel said ENOSYS */

/* Fallback: open each component with O_NOFOLLOW, directories with O_DIRECTORY. '..' and '.' are
 * refused (wire.c already refuses them; this keeps the function safe on its own). */
static int open_walk(int dirfd, const char *path, int flags, mode_t mode)
{
    char comp[NAME_MAX + 1];
    int fd = -1, cur = dirfd;
    const char *p = path;

    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.')) {
            if (cur != dirfd)
                close(cur);
            return -EXDEV;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        if (slash)
            fd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        else
            fd = openat(cur, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        int e = errno;
        if (cur != dirfd)
            close(cur);
        if (fd < 0)
            return -e;
        if (!slash)
            return fd;
        cur = fd;
        p = slash + 1;
    }
}

int safefs_open(int dirfd, const char *path, int flags, mode_t mode)
{
    if (!path[0])
        path = ".";
    if (!openat2_missing) {
        struct open_how how = {
            .flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
            .mode = (flags & O_CREAT) ? mode : 0,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd;
        do
            fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        while (fd < 0 && errno == EAGAIN);
        if (fd >= 0)
            return (int)fd;
        if (errno != ENOSYS)
            return -errno;
        openat2_missing = 1;
    }
    if (!strcmp(path, ".")) {
        int fd = openat(dirfd, ".", flags | O_CLOEXEC, mode);
        return fd < 0 ? -errno : fd;
    }
    return open_walk(dirfd, path, flags, mode);
}

int safefs_open_parent(int dirfd, const char *path, const char **ret_name)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *ret_name = path;
        return safefs_open(dirfd, "", O_RDONLY | O_DIRECTORY, 0);
    }
    size_t n = (size_t)(slash - path);
    char *parent = strndup(path, n);
    if (!parent)
        return -ENOMEM;
    int fd = safefs_open(dirfd, parent, O_RDONLY | O_DIRECTORY, 0);
    free(parent);
    if (fd >= 0)
        *ret_name = slash + 1;
    return fd;
}

static int rm_tree(int dirfd, const char *name, unsigned char type, const atomic_bool *stop);

static int rm_dir_contents(int fd, const atomic_bool *stop)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    int r = 0;

    if (!d) {
        r = -errno;
        close(fd);
        return r;
    }
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (stop && atomic_load(stop)) {
            r = -ECANCELED;
            break;
        }
        int e = rm_tree(dirfd(d), de->d_name, de->d_type, stop);
        if (e < 0 && r == 0)
            r = e;
    }
    closedir(d);
    return r;
}

/* type: the entry's d_type; what it says is not a directory is unlinked without a look. */
static int rm_tree(int dirfd, const char *name, unsigned char type, const atomic_bool *stop)
{
    struct stat st;
    if (type != DT_DIR && type != DT_UNKNOWN) {
        if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
            return 0;
        if (errno != EISDIR && errno != EPERM) /* EISDIR/EPERM: it became a directory */
            return -errno;
    }
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        (void)fchownat(dirfd, name, geteuid(), (gid_t)-1, AT_SYMLINK_NOFOLLOW);
        (void)fchmodat(dirfd, name, 0700, 0);
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    /* A directory of a tree being removed (never a shared inode): take it back from [site]
     * owner (CAP_CHOWN) and make it writable, so its entries can go. */
    if (st.st_uid != geteuid())
        (void)fchown(fd, geteuid(), (gid_t)-1);
    if ((st.st_mode & 0700) != 0700 || st.st_uid != geteuid())
        (void)fchmod(fd, 0700);
    int r = rm_dir_contents(fd, stop);
    if (r == -ECANCELED)
        return r;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
        r = -errno;
    return r;
}

int safefs_rm_tree(int dirfd, const char *name)
{
    return rm_tree(dirfd, name, DT_UNKNOWN, NULL);
}

int safefs_rm_tree_until(int dirfd, const char *name, const atomic_bool *stop)
{
    return rm_tree(dirfd, name, DT_UNKNOWN, stop);
}

int safefs_write_atomic(int dirfd, const char *name, const void *data, size_t len, mode_t mode)
{
    const char *text = data;
    char tmp[NAME_MAX + 1];
    int r = 0;

    if (snprintf(tmp, sizeof(tmp), ".%s.tmp", name) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        off += (size_t)n;
    }
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
        r = -errno;
    if (r < 0) {
        unlinkat(dirfd, tmp, 0);
        return r;
    }
    return fsync(dirfd) < 0 ? -errno : 0;
}

ssize_t safefs_read_small(int dirfd, const char *name, char *buf, size_t max)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0;
    while (len + 1 < max) {
        ssize_t n = read(fd, buf + len, max - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

char *safefs_quote(const char *path, size_t len, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        size_t need = (c < 0x20 || c == 0x7f || c == '\\' || c == '\'') ? 4 : 1;
        if (o + need + 4 > size) {
            memcpy(out + o, "...", 4);
            return out;
        }
        if (need == 4) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return out;
}
