/* File drift of the live generation. See drift.h. */
#include "drift.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "err.h"
#include "manifest.h"

#define WALK_MAX_DEPTH 256

static const char *const builtin_ignore[] = {"wp-content/cache/", "wp-content/upgrade/",
                                             "wp-config.php"};

/* ---- the walk ---------------------------------------------------------------------------- */

typedef struct frame {
    int fd;
    char **names;
    size_t n, next;
    size_t prefix_len; /* length of the path up to and including this directory's '/' */
} frame_t;

typedef struct walker {
    frame_t stack[WALK_MAX_DEPTH];
    size_t depth;
    char path[MF_PATH_MAX];
    struct stat st;
    char link[MF_PATH_MAX];
    bool pending_dir; /* the last entry is a directory to descend into, unless skipped */
    int error;
    char what[256];
} walker_t;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void frame_free(frame_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->names[i]);
    free(f->names);
    if (f->fd >= 0)
        close(f->fd);
}

/* Pushes directory fd (owned) with its sorted names. */
static int walker_push(walker_t *w, int fd, size_t prefix_len)
{
    frame_t *f;
    DIR *d;
    struct dirent *de;
    size_t cap = 0;

    if (w->depth == WALK_MAX_DEPTH) {
        close(fd);
        return -ELOOP;
    }
    f = &w->stack[w->depth];
    *f = (frame_t){.fd = fd, .prefix_len = prefix_len};
    int dfd = dup(fd);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        int e = -errno;
        if (dfd >= 0)
            close(dfd);
        close(fd);
        return e;
    }
    while ((errno = 0, de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (f->n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(f->names, cap * sizeof(*nn));
            if (!nn)
                break;
            f->names = nn;
        }
        if (!(f->names[f->n] = strdup(de->d_name)))
            break;
        f->n++;
    }
    int e = errno ? -errno : 0;
    closedir(d);
    if (e < 0) {
        frame_free(f);
        return e;
    }
    if (f->n > 1)
        qsort(f->names, f->n, sizeof(*f->names), cmp_names);
    w->depth++;
    return 0;
}

static void walker_pop(walker_t *w)
{
    frame_free(&w->stack[--w->depth]);
}

static int walker_open(walker_t *w, const char *root)
{
    memset(w, 0, sizeof(*w));
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    return walker_push(w, fd, 0);
}

static void walker_close(walker_t *w)
{
    while (w->depth)
        walker_pop(w);
}

/* Advances to the next entry: 1 (w->path, w->st, w->link set), 0 at the end, or a negative
 * errno (w->what names the path). With skip, the last entry (a directory) is not descended. */
static int walker_next(walker_t *w, bool skip)
{
    if (w->pending_dir) {
        w->pending_dir = false;
        if (!skip) {
            frame_t *top = &w->stack[w->depth - 1];
            const char *name = top->names[top->next - 1];
            int fd = openat(top->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            size_t len = strlen(w->path);
            int r = fd < 0 ? -errno : walker_push(w, fd, len + 1);
            if (r < 0) {
                snprintf(w->what, sizeof(w->what), "%.200s", w->path);
                return r;
            }
        }
    }
    while (w->depth) {
        frame_t *top = &w->stack[w->depth - 1];
        if (top->next == top->n) {
            walker_pop(w);
            continue;
        }
        const char *name = top->names[top->next++];
        size_t nlen = strlen(name);
        if (top->prefix_len + nlen + 1 > sizeof(w->path)) {
            snprintf(w->what, sizeof(w->what), "a path below %.200s", w->path);
            return -ENAMETOOLONG;
        }
        if (top->prefix_len)
            w->path[top->prefix_len - 1] = '/';
        memcpy(w->path + top->prefix_len, name, nlen + 1);
        if (fstatat(top->fd, name, &w->st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue; /* vanished while we looked */
            snprintf(w->what, sizeof(w->what), "%.200s", w->path);
            return -errno;
        }
        w->link[0] = '\0';
        if (S_ISLNK(w->st.st_mode)) {
            ssize_t n = readlinkat(top->fd, name, w->link, sizeof(w->link) - 1);
            w->link[n < 0 ? 0 : n] = '\0';
        }
        w->pending_dir = S_ISDIR(w->st.st_mode);
        return 1;
    }
    return 0;
}

/* ---- comparing --------------------------------------------------------------------------- */

static bool excluded(const drift_opts_t *opts, const char *path)
{
    size_t n_all = sizeof(builtin_ignore) / sizeof(builtin_ignore[0]) + opts->n_ignore;
    for (size_t i = 0; i < n_all; i++) {
        const char *p = i < sizeof(builtin_ignore) / sizeof(builtin_ignore[0])
                            ? builtin_ignore[i]
                            : opts->ignore[i - sizeof(builtin_ignore) / sizeof(builtin_ignore[0])];
        size_t n = strlen(p);
        if (n && p[n - 1] == '/') {
            /* "dir/": the directory itself and everything below. */
            if (!strncmp(path, p, n) || (strlen(path) == n - 1 && !strncmp(path, p, n - 1)))
                return true;
        } else if (!strncmp(path, p, n) && (path[n] == '\0' || path[n] == '/')) {
            return true;
        }
    }
    return false;
}

static void note(drift_report_t *rep, const char *what, const char *path, const char *why)
{
    if (rep->n_examples < DRIFT_MAX_EXAMPLES)
        snprintf(rep->examples[rep->n_examples++], DRIFT_EXAMPLE_LEN, "%s %.200s%s%s", what, path,
                 why ? " " : "", why ? why : "");
}

static int hash_file(int dirfd, const char *path, uint8_t out[MF_HASH_LEN])
{
    int fd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char buf[65536];
    ssize_t n;
    int r = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ? 0 : UV_ENOMEM;
    while (r == 0 && (n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            r = -errno;
        else
            EVP_DigestUpdate(ctx, buf, (size_t)n);
    }
    if (r == 0)
        EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    close(fd);
    return r;
}

/* The ctime of path's nearest existing ancestor directory (below root), or of root. */
static time_t ancestor_ctime(int rootfd, const char *path)
{
    char p[MF_PATH_MAX];
    struct stat st;
    snprintf(p, sizeof(p), "%s", path);
    for (char *slash; (slash = strrchr(p, '/'));) {
        *slash = '\0';
        if (fstatat(rootfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0)
            return st.st_ctim.tv_sec;
    }
    return fstat(rootfd, &st) == 0 ? st.st_ctim.tv_sec : 0;
}

static mf_kind_t kind_of(const struct stat *st)
{
    return S_ISDIR(st->st_mode) ? MF_DIRECTORY : S_ISLNK(st->st_mode) ? MF_SYMLINK : MF_REGULAR;
}

/* Why an entry present on both sides differs, or NULL. */
static const char *differs(const drift_opts_t *opts, int rootfd, const mf_entry_t *m,
                           const walker_t *w)
{
    const struct stat *st = &w->st;
    if (!S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode) && !S_ISREG(st->st_mode))
        return "(not a regular file, directory or symlink)";
    if (kind_of(st) != m->kind)
        return "(kind)";
    if (m->kind == MF_SYMLINK)
        return strcmp(w->link, m->link_target ? m->link_target : "") ? "(link target)" : NULL;
    if ((st->st_mode & 07777) != (m->mode & 07777))
        return "(mode)";
    if (m->kind == MF_DIRECTORY)
        return NULL;
    if ((uint64_t)st->st_size != m->size)
        return "(size)";
    if ((int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec != m->mtime_ns)
        return "(mtime)";
    if (opts->hash) {
        uint8_t h[MF_HASH_LEN];
        if (hash_file(rootfd, w->path, h) < 0 || memcmp(h, m->hash, MF_HASH_LEN))
            return "(content)";
    }
    return NULL;
}

int drift_scan(const char *root, const char *manifest_path, const drift_opts_t *opts,
               drift_report_t *ret, char *err, size_t err_size)
{
    static const drift_opts_t none = {0};
    walker_t *w = malloc(sizeof(*w));
    mf_reader_t *mr = NULL;
    mf_entry_t m;
    int have_m, have_w, r, rootfd = -1;

    if (!opts)
        opts = &none;
    memset(ret, 0, sizeof(*ret));
    if (!w) {
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    r = walker_open(w, root);
    if (r < 0) {
        snprintf(err, err_size, "cannot read %s: %s", root, strerror(-r));
        free(w);
        return r;
    }
    rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot read %s: %s", root, strerror(-r));
        goto out;
    }
    r = mf_reader_open(manifest_path, &mr, NULL);
    if (r < 0) {
        snprintf(err, err_size, "cannot read the manifest %s: %s", manifest_path, err_str(r));
        goto out;
    }
    have_m = mf_reader_next(mr, &m);
    have_w = walker_next(w, false);
    for (;;) {
        if (have_m < 0) {
            r = have_m;
            snprintf(err, err_size, "the manifest %s is corrupt", manifest_path);
            goto out;
        }
        if (have_w < 0) {
            r = have_w;
            snprintf(err, err_size, "cannot read %s/%s: %s", root, w->what, strerror(-r));
            goto out;
        }
        if (have_m == 0 && have_w == 0)
            break;
        if (have_m == 1 && excluded(opts, m.path)) {
            have_m = mf_reader_next(mr, &m);
            continue;
        }
        if (have_w == 1 && excluded(opts, w->path)) {
            have_w = walker_next(w, true);
            continue;
        }
        int c = have_m == 0 ? 1 : have_w == 0 ? -1 : mf_path_cmp(m.path, w->path);
        if (c < 0) {
            if (!opts->since || ancestor_ctime(rootfd, m.path) >= opts->since) {
                ret->deleted++;
                note(ret, "deleted", m.path, NULL);
            }
            have_m = mf_reader_next(mr, &m);
            continue;
        }
        ret->examined++;
        bool recent = !opts->since || w->st.st_ctim.tv_sec >= opts->since;
        if (c > 0) {
            if (recent) {
                ret->created++;
                note(ret, "created", w->path, NULL);
            }
        } else {
            const char *why = recent ? differs(opts, rootfd, &m, w) : NULL;
            if (why) {
                ret->changed++;
                note(ret, "changed", w->path, why);
                /* A directory replaced by a file (or the reverse): the other side's entries
                 * below it are reported as created or deleted by the merge. */
            }
            have_m = mf_reader_next(mr, &m);
        }
        have_w = walker_next(w, false);
    }
    r = 0;
out:
    if (rootfd >= 0)
        close(rootfd);
    mf_reader_close(mr);
    walker_close(w);
    free(w);
    return r;
}
