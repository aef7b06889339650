/* The files phase, first half: scanning the site into a new manifest and keeping the sync state.
 * See files.h for the contract and exclude.h for the exclude rules; agent/send.c talks to the
 * controller.
 *
 * The walk: rsync -rlptD without -D. Each directory's names are read, sorted bytewise and visited
 * depth-first, which is exactly walk order (common/manifest.h), so the saved manifest is read
 * alongside in one forward pass (a merge join) and the new manifest is written as the walk goes:
 * memory holds one name list per open directory level, never the whole tree. Regular files,
 * directories and symlinks (as symlinks, target kept verbatim) are entries; devices, FIFOs and
 * sockets are skipped, with a warning when a person is watching. Directories are opened with
 * O_NOFOLLOW relative to their parent, so a directory swapped for a symlink mid-scan is not
 * followed.
 *
 * The quick check: a regular file's hash is taken from the saved manifest when its size, mtime,
 * ctime, mode, device and inode all match, unless it is racily clean: its mtime is in the same
 * second as, or later than, the saved manifest file's own mtime (written after every hash in it
 * was taken), so a write in the same timestamp tick as the hashing could hide behind equal stat
 * data (git's racy-git rule at whole-second granularity, which also covers filesystems with
 * coarse timestamps). A file whose stat data changes while it is hashed is hashed again (three
 * tries); if it never holds still, its cache fields are smudged so the next scan hashes it again.
 *
 * State files in state_dir: manifest (the last applied tree), generation (its number and the
 * manifest's tree digest in hex, one per line),
 * manifest.new (this scan's, until commit), lock (flock: one sync at a time).
 */
#include "files-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "err.h"
#include "exclude.h"
#include "fault.h"
#include "log.h"

#define SCAN_MAX_DEPTH 256
#define HASH_BUF_SIZE  (256u * 1024)
#define HASH_TRIES     3

typedef struct walker {
    files_scan_t *s;
    excl_t *ex;
    mf_reader_t *old; /* NULL when there is none or it turned out corrupt */
    mf_entry_t oe;    /* the old manifest's current entry when old_valid */
    bool old_valid;
    bool old_seen;    /* an entry was written at oe's path */
    int64_t racy_sec; /* INT64_MIN when there is no saved manifest */
    mf_writer_t *w;
    char path[MF_PATH_MAX];
    size_t plen;
    uint8_t *buf;
    EVP_MD_CTX *md;
    char *err;
    size_t err_size;
    bool tty, warn; /* draw progress; print warnings (a terminal or --verbose) */
    bool differs;   /* an entry was written that the saved manifest does not hold as is */
    uint64_t entries;
    struct timespec last_draw;
} walker_t;

static int64_t ts_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t floor_sec(int64_t ns)
{
    return ns >= 0 ? ns / 1000000000 : -((-ns + 999999999) / 1000000000);
}

static void scan_draw(walker_t *w, bool final)
{
    struct timespec now;
    if (!w->tty)
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!final && ts_ns(now) - ts_ns(w->last_draw) < 100000000)
        return;
    w->last_draw = now;
    fprintf(stderr, "\rscanning: %" PRIu64 " entries, %" PRIu64 " files read\033[K%s", w->entries,
            w->s->hashed, final ? "\r\033[K" : "");
    fflush(stderr);
}

/* Advances the old manifest to path; returns it when it holds an entry there. A corrupt
 * manifest is dropped: everything after is hashed and the controller gets a full listing. */
static const mf_entry_t *old_find(walker_t *w, const char *path)
{
    while (w->old) {
        if (!w->old_valid) {
            int r = mf_reader_next(w->old, &w->oe);
            if (r <= 0) {
                if (r < 0) {
                    if (w->warn)
                        log_warn("the saved manifest is damaged (%s); comparing everything",
                                 err_str(r));
                    w->s->have_old = false;
                    w->s->base_generation = 0;
                }
                mf_reader_close(w->old);
                w->old = NULL;
                return NULL;
            }
            w->old_valid = true;
        }
        int c = mf_path_cmp(w->oe.path, path);
        if (c > 0)
            return NULL;
        if (c == 0)
            return &w->oe;
        if (!w->old_seen)
            w->differs = true; /* a saved entry the walk no longer has */
        w->old_valid = false;
        w->old_seen = false;
    }
    return NULL;
}

static bool stat_same(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_ino == b->st_ino && a->st_dev == b->st_dev &&
           a->st_mode == b->st_mode && ts_ns(a->st_mtim) == ts_ns(b->st_mtim) &&
           ts_ns(a->st_ctim) == ts_ns(b->st_ctim);
}

static void entry_from_stat(mf_entry_t *e, const struct stat *st)
{
    e->mode = S_ISLNK(st->st_mode) ? 0 : st->st_mode & 07777;
    e->mtime_ns = ts_ns(st->st_mtim);
    e->size = S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
    e->dev = (uint64_t)st->st_dev;
    e->ino = (uint64_t)st->st_ino;
    e->ctime_ns = ts_ns(st->st_ctim);
}

/* Hashes the regular file name in dirfd into e (stat fields included). Returns 1, 0 when it
 * vanished or stopped being a regular file, or a negative code with err set. */
static int hash_file(walker_t *w, int dirfd, const char *name, mf_entry_t *e)
{
    for (int attempt = 1;; attempt++) {
        struct stat before, after;
        int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        int r = 0;

        if (fd < 0) {
            if (errno == ENOENT || errno == ELOOP)
                return 0;
            r = -errno;
            snprintf(w->err, w->err_size,
                     "cannot read %s/%s: %s; fix its permissions or add it to [site] exclude",
                     w->s->root, w->path, strerror(errno));
            return r;
        }
        if (fstat(fd, &before) != 0 || !S_ISREG(before.st_mode)) {
            close(fd);
            return 0;
        }
        if (EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
            close(fd);
            snprintf(w->err, w->err_size, "SHA-256 is not available");
            return ERR_INTERNAL;
        }
        for (;;) {
            ssize_t n = read(fd, w->buf, HASH_BUF_SIZE);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = -errno;
                snprintf(w->err, w->err_size, "cannot read %s/%s: %s", w->s->root, w->path,
                         strerror(errno));
                close(fd);
                return r;
            }
            if (n == 0)
                break;
            EVP_DigestUpdate(w->md, w->buf, (size_t)n);
            w->s->hashed_bytes += (uint64_t)n;
        }
        unsigned int hl = 0;
        EVP_DigestFinal_ex(w->md, e->hash, &hl);
        r = fstat(fd, &after);
        close(fd);
        w->s->hashed++;
        if (r != 0)
            return 0;
        entry_from_stat(e, &before);
        if (stat_same(&before, &after))
            return 1;
        if (attempt == HASH_TRIES) {
            /* Keep a hash, but make sure the next scan does not trust it. */
            entry_from_stat(e, &after);
            e->ctime_ns = 0;
            return 1;
        }
    }
}

static int path_push(walker_t *w, const char *name, size_t *ret_saved)
{
    size_t n = strlen(name), need = w->plen + (w->plen ? 1 : 0) + n;
    if (need >= MF_PATH_MAX) {
        snprintf(w->err, w->err_size, "path too long under %s: %.200s/%s...", w->s->root, w->path,
                 name);
        return UV_ENAMETOOLONG;
    }
    *ret_saved = w->plen;
    if (w->plen)
        w->path[w->plen++] = '/';
    memcpy(w->path + w->plen, name, n + 1);
    w->plen += n;
    return 0;
}

static void path_pop(walker_t *w, size_t saved)
{
    w->plen = saved;
    w->path[saved] = '\0';
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads dirfd's names (without "." and ".."), sorted bytewise. */
static int read_names(walker_t *w, int dirfd, char ***ret, size_t *ret_n)
{
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int r = 0;

    if (!d) {
        r = -errno;
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (!de) {
            r = -errno;
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 32;
            char **p = realloc(names, nc * sizeof(*names));
            if (!p) {
                r = UV_ENOMEM;
                break;
            }
            names = p;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name))) {
            r = UV_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        goto fail;
    }
    if (n)
        qsort(names, n, sizeof(*names), name_cmp);
    *ret = names;
    *ret_n = n;
    return 0;
fail:
    snprintf(w->err, w->err_size, "cannot list %s/%s: %s", w->s->root, w->path, err_str(r));
    return r;
}

/* Whether e is exactly the saved entry old_find stopped at (what mf_writer_add would write). */
static bool same_as_old(const walker_t *w, const mf_entry_t *e)
{
    const mf_entry_t *o = &w->oe;
    if (!w->old || !w->old_valid || strcmp(o->path, e->path) != 0)
        return false;
    if (o->kind != e->kind || o->mode != e->mode || o->mtime_ns != e->mtime_ns ||
        o->size != e->size || memcmp(o->hash, e->hash, MF_HASH_LEN) != 0 || o->dev != e->dev ||
        o->ino != e->ino || o->ctime_ns != e->ctime_ns)
        return false;
    return e->kind != MF_SYMLINK ||
           !strcmp(o->link_target ? o->link_target : "", e->link_target ? e->link_target : "");
}

static int add_entry(walker_t *w, const mf_entry_t *e)
{
    /* Entries the walk drops (vanished, excluded, skipped) are never seen, so they count as
     * differences when old_find moves past them. */
    if (w->old && w->old_valid && !strcmp(w->oe.path, e->path))
        w->old_seen = true;
    if (!w->differs && !same_as_old(w, e))
        w->differs = true;
    int r = mf_writer_add(w->w, e);
    if (r < 0) {
        snprintf(w->err, w->err_size, "cannot write %s: %s", w->s->new_path, err_str(r));
        return r;
    }
    w->entries++;
    if (e->kind == MF_REGULAR)
        w->s->total_bytes += e->size;
    scan_draw(w, false);
    return 0;
}

static int walk_dir(walker_t *w, int dirfd, int depth);

static int visit(walker_t *w, int dirfd, const char *name, int depth)
{
    struct stat st;
    mf_entry_t e = {.path = w->path};
    char target[MF_PATH_MAX];
    int r;

    fault_point("agent.scan.entry");
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return 0; /* vanished since the listing: as if it never was */
        r = -errno;
        snprintf(w->err, w->err_size, "cannot stat %s/%s: %s", w->s->root, w->path,
                 strerror(errno));
        return r;
    }
    if (S_ISDIR(st.st_mode))
        e.kind = MF_DIRECTORY;
    else if (S_ISREG(st.st_mode))
        e.kind = MF_REGULAR;
    else if (S_ISLNK(st.st_mode))
        e.kind = MF_SYMLINK;
    else {
        w->s->skipped_special++;
        if (w->tty)
            fputs("\r\033[K", stderr); /* the warning goes on a line of its own */
        if (w->warn)
            log_warn("skipping %s/%s: not a regular file, directory or symlink", w->s->root,
                     w->path);
        return 0;
    }
    if (excl_match(w->ex, w->path, e.kind == MF_DIRECTORY))
        return 0;
    entry_from_stat(&e, &st);
    const mf_entry_t *old = old_find(w, w->path);

    switch (e.kind) {
    case MF_DIRECTORY: {
        if (depth >= SCAN_MAX_DEPTH) {
            snprintf(w->err, w->err_size, "directories nested deeper than %d levels at %s/%s",
                     SCAN_MAX_DEPTH, w->s->root, w->path);
            return UV_ELOOP;
        }
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
                return 0; /* replaced while we looked: the next scan sees what it became */
            r = -errno;
            snprintf(w->err, w->err_size,
                     "cannot open %s/%s: %s; fix its permissions or add it to [site] exclude",
                     w->s->root, w->path, strerror(errno));
            return r;
        }
        r = add_entry(w, &e);
        if (r == 0)
            r = walk_dir(w, fd, depth + 1);
        close(fd);
        return r;
    }
    case MF_SYMLINK: {
        ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
        if (n < 0) {
            if (errno == ENOENT || errno == EINVAL)
                return 0;
            r = -errno;
            snprintf(w->err, w->err_size, "cannot read the symlink %s/%s: %s", w->s->root, w->path,
                     strerror(errno));
            return r;
        }
        if ((size_t)n >= sizeof(target)) {
            snprintf(w->err, w->err_size, "symlink target too long: %s/%s", w->s->root, w->path);
            return UV_ENAMETOOLONG;
        }
        target[n] = '\0';
        if (mf_link_escapes(w->path, target)) {
            /* The controller refuses such links; skip them as rsync --safe-links does. */
            w->s->skipped_special++;
            if (w->tty)
                fputs("\r\033[K", stderr);
            if (w->warn)
                log_warn("skipping %s/%s: a symlink to %s, outside the site", w->s->root, w->path,
                         target);
            return 0;
        }
        e.link_target = target;
        return add_entry(w, &e);
    }
    case MF_REGULAR:
        if (old && old->kind == MF_REGULAR && old->size == e.size && old->mtime_ns == e.mtime_ns &&
            old->ctime_ns == e.ctime_ns && old->ino == e.ino && old->dev == e.dev &&
            old->mode == e.mode && floor_sec(old->mtime_ns) < w->racy_sec) {
            memcpy(e.hash, old->hash, MF_HASH_LEN);
            return add_entry(w, &e);
        }
        r = hash_file(w, dirfd, name, &e);
        if (r <= 0)
            return r;
        return add_entry(w, &e);
    }
    return 0;
}

static int walk_dir(walker_t *w, int dirfd, int depth)
{
    char **names = NULL;
    size_t n = 0, i, saved;
    int r;

    r = read_names(w, dirfd, &names, &n);
    if (r < 0)
        return r;
    for (i = 0; i < n && r == 0; i++) {
        r = path_push(w, names[i], &saved);
        if (r == 0) {
            r = visit(w, dirfd, names[i], depth);
            path_pop(w, saved);
        }
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return r;
}

static char *path_join(const char *dir, const char *name)
{
    char *p;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Removes what an interrupted run left: manifest.new and the writer's temp files. */
static void remove_leftovers(const char *state_dir)
{
    DIR *d = opendir(state_dir);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, "manifest.new") || !strncmp(de->d_name, "manifest.new.tmp.", 17) ||
            !strncmp(de->d_name, "generation.tmp", 14))
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

static int hex_nibble(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Reads state_dir/generation: the generation number on the first line, and (since the digest
 * check) the saved manifest's tree digest in hex on the second. Returns 0 when unreadable. */
static uint64_t read_generation(files_scan_t *s)
{
    char text[128] = "";
    FILE *f = fopen(s->gen_path, "re");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *end;
    errno = 0;
    unsigned long long g = strtoull(text, &end, 10);
    if (errno || end == text || (*end && *end != '\n'))
        return 0;
    if (*end == '\n' && strlen(end + 1) >= 2 * MF_HASH_LEN) {
        const char *h = end + 1;
        bool ok = true;
        for (int i = 0; i < MF_HASH_LEN && ok; i++) {
            int hi = hex_nibble(h[2 * i]), lo = hex_nibble(h[2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            s->base_digest[i] = (uint8_t)(hi << 4 | (lo & 15));
        }
        s->have_base_digest = ok;
    }
    return g;
}

int files_scan(const files_opts_t *opts, files_scan_t **ret, char *err, size_t err_size)
{
    files_scan_t *s = calloc(1, sizeof(*s));
    walker_t w = {.s = s, .err = err, .err_size = err_size, .racy_sec = INT64_MIN};
    struct stat st;
    bool missing = true;
    int rootfd = -1, r;

    if (!s)
        return UV_ENOMEM;
    s->lock_fd = -1;
    s->dry_run = opts->dry_run;
    s->progress = opts->progress;
    s->bandwidth_limit = opts->bandwidth_limit;
    s->root = strdup(opts->root);
    s->state_dir = strdup(opts->state_dir);
    if (!s->root || !s->state_dir || !(s->manifest_path = path_join(opts->state_dir, "manifest")) ||
        !(s->new_path = path_join(opts->state_dir, "manifest.new")) ||
        !(s->gen_path = path_join(opts->state_dir, "generation"))) {
        r = UV_ENOMEM;
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    w.tty = opts->progress && isatty(STDERR_FILENO);
    w.warn = opts->progress;

    if (mkdir(s->state_dir, 0700) != 0 && errno != EEXIST) {
        r = -errno;
        snprintf(err, err_size, "cannot create the state directory %s: %s", s->state_dir,
                 strerror(errno));
        goto fail;
    }
    char *lock_path = path_join(s->state_dir, "lock");
    s->lock_fd = lock_path ? open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    free(lock_path);
    if (s->lock_fd < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot open %s/lock: %s", s->state_dir, strerror(errno));
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        r = errno == EWOULDBLOCK ? UV_EBUSY : -errno;
        snprintf(err, err_size, "another sync of this site is running (%s/lock is locked)",
                 s->state_dir);
        goto fail;
    }
    remove_leftovers(s->state_dir);

    rootfd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot open the site root %s: %s", s->root, strerror(errno));
        goto fail;
    }
    r = mf_reader_open(s->manifest_path, &w.old, &missing);
    if (r < 0) {
        if (w.warn)
            log_warn("cannot read %s (%s); comparing everything", s->manifest_path, err_str(r));
        w.old = NULL;
    } else if (!missing && stat(s->manifest_path, &st) == 0) {
        s->have_old = true;
        w.racy_sec = floor_sec(ts_ns(st.st_mtim));
        s->base_generation = read_generation(s);
    } else {
        mf_reader_close(w.old);
        w.old = NULL;
    }
    r = excl_new(opts->excludes, opts->n_excludes, &w.ex);
    if (r == 0)
        r = (w.buf = malloc(HASH_BUF_SIZE)) && (w.md = EVP_MD_CTX_new()) ? 0 : UV_ENOMEM;
    if (r < 0) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    r = mf_writer_open(s->new_path, &w.w);
    if (r < 0) {
        snprintf(err, err_size, "cannot write %s: %s", s->new_path, err_str(r));
        goto fail;
    }
    fault_point("agent.scan.start");
    r = walk_dir(&w, rootfd, 0);
    if (r < 0)
        goto fail;
    /* Read the old manifest to its end, so a damaged tail is noticed too. */
    if (w.old && w.old_valid && !w.old_seen)
        w.differs = true; /* the entry old_find stopped at was not walked */
    while (w.old) {
        int rr = mf_reader_next(w.old, &w.oe);
        if (rr > 0)
            w.differs = true;
        if (rr < 0) {
            s->have_old = false;
            if (w.warn)
                log_warn("the saved manifest is damaged (%s); comparing everything", err_str(rr));
        }
        if (rr <= 0) {
            mf_reader_close(w.old);
            w.old = NULL;
        }
    }
    /* No fsync yet: manifest.new becomes state only in files_scan_commit, which fsyncs it
     * first, and not at all when it is the saved manifest again. */
    mf_writer_skip_fsync(w.w);
    r = mf_writer_commit(w.w, s->digest, &s->count);
    w.w = NULL;
    if (r < 0) {
        snprintf(err, err_size, "cannot write %s: %s", s->new_path, err_str(r));
        goto fail;
    }
    s->have_new = true;
    scan_draw(&w, true);
    if (!s->have_old)
        s->base_generation = 0;
    s->same_as_saved = s->have_old && !w.differs;
    r = 0;
    *ret = s;
fail:
    if (r < 0)
        scan_draw(&w, true);
    mf_writer_abort(w.w);
    mf_reader_close(w.old);
    excl_free(w.ex);
    EVP_MD_CTX_free(w.md);
    free(w.buf);
    if (rootfd >= 0)
        close(rootfd);
    if (r < 0)
        files_scan_free(s);
    return r;
}

const uint8_t *files_scan_digest(const files_scan_t *s)
{
    return s->digest;
}

uint64_t files_scan_count(const files_scan_t *s)
{
    return s->count;
}

uint64_t files_scan_base_generation(const files_scan_t *s)
{
    return s->base_generation;
}

uint64_t files_scan_hashed(const files_scan_t *s)
{
    return s->hashed;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return r;
}

static int fsync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return r;
}

int files_scan_commit(files_scan_t *s, uint64_t generation)
{
    char tmp[64 + 4096], text[32 + 2 * MF_HASH_LEN + 2], hex[2 * MF_HASH_LEN + 1];
    int fd, r, n;

    if (!s->have_new || s->committed)
        return ERR_INTERNAL;
    /* Nothing to save: the saved state is this scan's, for this generation (the common case of
     * a sync that found no change). The racy-clean rule stays right: the saved manifest keeps
     * its mtime, so a file as new as it is still hashed again by the next scan. */
    if (s->same_as_saved && generation == s->base_generation && s->have_base_digest &&
        !memcmp(s->base_digest, s->digest, MF_HASH_LEN)) {
        fault_point("agent.state.saved");
        unlink(s->new_path);
        s->have_new = false;
        s->committed = true;
        return 0;
    }
    /* Order matters: without a generation file the next sync lists everything, so a crash
     * between these steps can never pair a manifest with the wrong generation. */
    fault_point("agent.state.saved");
    if ((r = fsync_file(s->new_path)) < 0)
        return r;
    if (unlink(s->gen_path) != 0 && errno != ENOENT)
        return -errno;
    if ((r = fsync_dir(s->state_dir)) < 0)
        return r;
    if (rename(s->new_path, s->manifest_path) != 0)
        return -errno;
    s->have_new = false;
    s->committed = true;
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->gen_path);
    mf_hash_hex(s->digest, hex);
    n = snprintf(text, sizeof(text), "%" PRIu64 "\n%s\n", generation, hex);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
        r = errno ? -errno : UV_EIO;
        close(fd);
        unlink(tmp);
        return r;
    }
    close(fd);
    if (rename(tmp, s->gen_path) != 0) {
        r = -errno;
        unlink(tmp);
        return r;
    }
    s->base_generation = generation;
    return fsync_dir(s->state_dir);
}

void files_scan_free(files_scan_t *s)
{
    if (!s)
        return;
    if (s->have_new)
        unlink(s->new_path);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->root);
    free(s->state_dir);
    free(s->manifest_path);
    free(s->new_path);
    free(s->gen_path);
    free(s);
}
