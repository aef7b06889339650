/* The files phase, first half: scanning the site into a new manifest and keeping the sync state.
 * See files.h for the contract and exclude.h for the exclude rules; agent/send.c talks to the
 * controller.
 *
 * The walk: rsync -rlptD without -D. Each directory's names are read, sorted bytewise and visited
 * depth-first, which is exactly walk order (common/manifest.h), so the saved manifest is read
 * alongside in one forward pass (a merge join). Regular files, directories and symlinks (as
 * symlinks, target kept verbatim) are entries; devices, FIFOs and sockets are skipped, with a
 * warning when a person is watching. Directories are opened with O_NOFOLLOW relative to their
 * parent, so a directory swapped for a symlink mid-scan is not followed.
 *
 * Reading ahead: most of a scan is the kernel's lstat of every name, so on a machine with several
 * CPUs, directories are read (opened, listed, sorted, each name fstatat'ed) by as many threads as
 * there are online CPUs, at most SCAN_MAX_THREADS: worker threads and the walk (the calling
 * thread) itself. Directories to read wait in a stack where a listing's subdirectories are pushed
 * first child on top, so they are read roughly in walk order. The walk takes each listing in
 * exactly walk order, reads it itself when nobody has started it, reads ahead itself while a
 * worker finishes the one it needs, and does everything else: excludes, the merge join, hashing,
 * warnings, errors (a reader only records a failure, which the walk reports when it reaches that
 * entry, with the message and code it would have had without threads). Readers stop
 * READ_AHEAD_DIRS directories or READ_AHEAD_ENTRIES names ahead of the walk, so memory holds a
 * bounded read-ahead plus one listing per open directory level, never the whole tree; a
 * directory's fd stays open until the walk has left it. UNDERSTUDY_SCAN_THREADS=N (tests, tuning)
 * sets the number of reading threads; 1 = the walk alone, no threads.
 *
 * The new manifest: written as the walk goes, except that while every entry equals the saved
 * manifest's next one nothing is written. At the first difference the saved entries the walk
 * has matched are copied into manifest.new (a second pass over the saved manifest) and writing
 * goes on from there. A walk that differs nowhere, when the generation file holds the saved
 * manifest's digest, writes nothing: the saved manifest is this scan's (new_is_saved), and a
 * commit for another generation copies it to manifest.new (keeping its mtime, the racy rule's
 * reference) to save it as any other.
 *
 * The quick check: a regular file's hash is taken from the saved manifest when its size, mtime,
 * ctime, mode, device and inode all match, unless it is racily clean: its mtime is in the same
 * second as, or later than, the saved manifest file's own mtime (written after every hash in it
 * was taken), so a write in the same timestamp tick as the hashing could hide behind equal stat
 * data (git's racy-git rule at whole-second granularity, which also covers filesystems with
 * coarse timestamps). A file whose stat data changes while it is hashed is hashed again (three
 * tries); if it never holds still, its cache fields are smudged so the next scan hashes it again.
 *
 * The changes: with a saved manifest, the walk also spools what differs from it, as two small
 * manifests (files-internal.h): changes.old, the saved entries it drops or changes, and
 * changes.new, its entries the saved one does not hold as they are. An incremental listing
 * merges those instead of the two whole manifests (send.c); a spool that cannot be written is
 * given up, and the listing merges the whole manifests as before.
 *
 * State files in state_dir: manifest (the last applied tree), generation (its number and the
 * manifest's tree digest in hex, one per line), manifest.new (this scan's, until commit, when
 * it differs), changes.old and changes.new (this scan's, removed with it), lock (flock: one sync
 * at a time).
 */
#include "files-internal.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
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

#define SCAN_MAX_THREADS   4
#define READ_AHEAD_DIRS    64
#define READ_AHEAD_ENTRIES 16384

typedef struct scan_dir scan_dir_t;

/* One name of a listed directory, with what fstatat said about it. */
typedef struct scan_ent {
    const char *name; /* in the directory's name block */
    int stat_errno;   /* fstatat's errno; 0 when st holds the entry's stat data */
    struct stat st;
    scan_dir_t *sub; /* this directory's own listing, when the walk will go into it */
} scan_ent_t;

enum dir_state { DIR_QUEUED, DIR_READING, DIR_READ };

/* A directory to read, being read, or read and waiting for the walk (or in it). */
struct scan_dir {
    scan_dir_t *parent;      /* opened relative to parent->fd; NULL for the root */
    scan_dir_t *prev, *next; /* in the pool's queue while DIR_QUEUED */
    enum dir_state state;
    bool ahead;       /* read ahead, not yet taken by the walk: counts toward the cap */
    int depth;        /* the walk's depth at its entries */
    int fd;           /* -1 until opened */
    int open_errno;   /* openat's errno when it could not be opened */
    int list_err;     /* a negative code when it could not be listed */
    const char *name; /* in the parent's name block */
    char *names;      /* the name block */
    scan_ent_t *ents; /* sorted bytewise */
    size_t n, plen;
    char path[]; /* relative to the root; "" for the root */
};

/* The readers: worker threads and the queue they share with the walk. Everything but the
 * listings' contents is guarded by mu; a listing belongs to its reader until DIR_READ, then to
 * the walk. */
typedef struct scan_pool {
    pthread_mutex_t mu;
    pthread_cond_t work; /* for workers: a directory queued, room under the cap, or stop */
    pthread_cond_t done; /* for the walk: a directory was read */
    scan_dir_t *queue;   /* a stack: the next directory in walk order (roughly) on top */
    size_t ahead_dirs, ahead_ents;
    bool stop;
    const excl_t *ex;
    pthread_t threads[SCAN_MAX_THREADS];
    unsigned n_threads;
} scan_pool_t;

typedef struct walker {
    files_scan_t *s;
    excl_t *ex;
    scan_pool_t *pool;
    mf_reader_t *old; /* NULL when there is none or it turned out corrupt */
    mf_entry_t oe;    /* the old manifest's current entry when old_valid */
    bool old_valid;
    bool old_seen;    /* an entry was written at oe's path */
    int64_t racy_sec; /* INT64_MIN when there is no saved manifest */
    mf_writer_t *w;   /* NULL until the first difference, when lazy (see the header) */
    mf_writer_t *chg_old, *chg_new; /* the change spools (files-internal.h), while they hold */
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

static void spools_drop(walker_t *w)
{
    mf_writer_abort(w->chg_old);
    mf_writer_abort(w->chg_new);
    w->chg_old = w->chg_new = NULL;
}

/* Adds e to a change spool; a spool that cannot be written is given up (send.c then merges the
 * two manifests whole, as without spools). */
static void spool_change(walker_t *w, mf_writer_t **spool, const mf_entry_t *e)
{
    if (*spool && mf_writer_add(*spool, e) < 0)
        spools_drop(w);
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
        if (!w->old_seen) {
            w->differs = true; /* a saved entry the walk no longer has */
            spool_change(w, &w->chg_old, &w->oe);
        }
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

/* A directory to read: name in parent (NULL for the root, whose fd the caller sets). Returns
 * NULL when out of memory. */
static scan_dir_t *dir_new(scan_dir_t *parent, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    size_t plen = parent && parent->plen ? parent->plen + 1 + n : n;
    scan_dir_t *d = calloc(1, sizeof(*d) + plen + 1);

    if (!d)
        return NULL;
    d->parent = parent;
    d->depth = parent ? parent->depth + 1 : 0;
    d->fd = -1;
    d->name = name;
    d->plen = plen;
    if (parent && parent->plen) {
        memcpy(d->path, parent->path, parent->plen);
        d->path[parent->plen] = '/';
        memcpy(d->path + parent->plen + 1, name, n + 1);
    } else if (n) {
        memcpy(d->path, name, n + 1);
    }
    return d;
}

/* Frees what a failed read left in d (subdirectories not queued yet). */
static void dir_forget_names(scan_dir_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->ents[i].sub);
    free(d->ents);
    free(d->names);
    d->ents = NULL;
    d->names = NULL;
    d->n = 0;
}

/* Lists d->fd (without "." and ".."), sorted bytewise, into d->names and d->ents. */
static int read_names(scan_dir_t *d)
{
    union {
        struct dirent64 de;
        char b[32768];
    } buf;
    char *blk = NULL, **v = NULL;
    size_t used = 0, cap = 0, n = 0, ncap = 0, *off = NULL;
    int r = 0;

    for (;;) {
        ssize_t got = getdents64(d->fd, buf.b, sizeof(buf.b));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            r = got < 0 ? -errno : 0;
            break;
        }
        for (ssize_t pos = 0; pos < got && r == 0;) {
            const struct dirent64 *de = (const struct dirent64 *)(buf.b + pos);
            const char *name = de->d_name;
            size_t len = strlen(name) + 1;
            pos += de->d_reclen;
            if (!strcmp(name, ".") || !strcmp(name, ".."))
                continue;
            if (used + len > cap) {
                size_t nc = cap ? cap * 2 : 4096;
                while (nc < used + len)
                    nc *= 2;
                char *p = realloc(blk, nc);
                if (!p) {
                    r = UV_ENOMEM;
                    break;
                }
                blk = p;
                cap = nc;
            }
            if (n == ncap) {
                size_t nc = ncap ? ncap * 2 : 64;
                size_t *p = realloc(off, nc * sizeof(*off));
                if (!p) {
                    r = UV_ENOMEM;
                    break;
                }
                off = p;
                ncap = nc;
            }
            memcpy(blk + used, name, len);
            off[n++] = used;
            used += len;
        }
        if (r < 0)
            break;
    }
    if (r == 0 && n) {
        v = malloc(n * sizeof(*v));
        d->ents = calloc(n, sizeof(*d->ents));
        if (!v || !d->ents)
            r = UV_ENOMEM;
    }
    if (r < 0) {
        free(d->ents);
        d->ents = NULL;
        free(v);
        free(off);
        free(blk);
        return r;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = blk + off[i];
    if (n)
        qsort(v, n, sizeof(*v), name_cmp);
    for (size_t i = 0; i < n; i++)
        d->ents[i].name = v[i];
    free(v);
    free(off);
    d->names = blk;
    d->n = n;
    return 0;
}

/* Stats d's names and makes a listing-to-be for each subdirectory the walk will go into: the
 * walk's own tests (visit), so that it finds one exactly where it needs one. */
static int stat_names(scan_pool_t *p, scan_dir_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        scan_ent_t *e = &d->ents[i];
        if (fstatat(d->fd, e->name, &e->st, AT_SYMLINK_NOFOLLOW) != 0) {
            e->stat_errno = errno;
            continue;
        }
        if (!S_ISDIR(e->st.st_mode) || d->depth >= SCAN_MAX_DEPTH ||
            d->plen + (d->plen ? 1 : 0) + strlen(e->name) >= MF_PATH_MAX)
            continue; /* the walk stops there with an error, or never descends */
        if (!(e->sub = dir_new(d, e->name)))
            return UV_ENOMEM;
        if (excl_match(p->ex, e->sub->path, true)) {
            free(e->sub);
            e->sub = NULL;
        }
    }
    return 0;
}

/* Opens (unless it is the root), lists and stats d; failures are recorded in d for the walk.
 * Called without the lock by whoever set d DIR_READING. */
static void dir_read(scan_pool_t *p, scan_dir_t *d)
{
    int r;
    if (d->fd < 0) {
        d->fd = openat(d->parent->fd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (d->fd < 0) {
            d->open_errno = errno;
            return;
        }
    }
    r = read_names(d);
    if (r == 0)
        r = stat_names(p, d);
    if (r < 0) {
        dir_forget_names(d);
        d->list_err = r;
    }
}

static void queue_push(scan_pool_t *p, scan_dir_t *d)
{
    d->prev = NULL;
    d->next = p->queue;
    if (p->queue)
        p->queue->prev = d;
    p->queue = d;
}

static void queue_remove(scan_pool_t *p, scan_dir_t *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        p->queue = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
}

/* With the lock: d is read; its subdirectories are queued, the first on top. */
static void dir_finish(scan_pool_t *p, scan_dir_t *d)
{
    bool queued = false;
    d->state = DIR_READ;
    if (d->ahead)
        p->ahead_ents += d->n;
    for (size_t i = d->n; i-- > 0;)
        if (d->ents[i].sub) {
            queue_push(p, d->ents[i].sub);
            queued = true;
        }
    pthread_cond_broadcast(&p->done);
    if (queued && p->n_threads)
        pthread_cond_broadcast(&p->work);
}

/* With the lock: d no longer counts toward the read-ahead. */
static void dir_unahead(scan_pool_t *p, scan_dir_t *d)
{
    if (!d->ahead)
        return;
    d->ahead = false;
    p->ahead_dirs--;
    p->ahead_ents -= d->n;
    pthread_cond_broadcast(&p->work);
}

/* With the lock: whether a reader may start on the next queued directory. */
static bool may_read_ahead(const scan_pool_t *p)
{
    return p->queue && p->ahead_dirs < READ_AHEAD_DIRS && p->ahead_ents < READ_AHEAD_ENTRIES;
}

/* With the lock, which it drops while reading: d is read (by the caller, a reader). */
static void read_locked(scan_pool_t *p, scan_dir_t *d, bool ahead)
{
    queue_remove(p, d);
    d->state = DIR_READING;
    if ((d->ahead = ahead))
        p->ahead_dirs++;
    pthread_mutex_unlock(&p->mu);
    dir_read(p, d);
    pthread_mutex_lock(&p->mu);
    dir_finish(p, d);
}

static void *on_reader(void *arg)
{
    scan_pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !may_read_ahead(p))
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        read_locked(p, p->queue, true);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The walk takes d: reads it now if no worker has started it, else reads ahead itself (or
 * waits) until d's reader is done. */
static void dir_take(scan_pool_t *p, scan_dir_t *d)
{
    pthread_mutex_lock(&p->mu);
    if (d->state == DIR_QUEUED)
        read_locked(p, d, false);
    while (d->state != DIR_READ) {
        if (may_read_ahead(p))
            read_locked(p, p->queue, true);
        else
            pthread_cond_wait(&p->done, &p->mu);
    }
    dir_unahead(p, d);
    pthread_mutex_unlock(&p->mu);
}

static void dir_drop(scan_pool_t *p, scan_dir_t *d);

/* Frees d, which the walk took or which nobody reads any more, and every listing below it that
 * the walk did not take (an error stopped it). */
static void dir_release(scan_pool_t *p, scan_dir_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->ents[i].sub)
            dir_drop(p, d->ents[i].sub);
    if (d->fd >= 0)
        close(d->fd);
    free(d->ents);
    free(d->names);
    free(d);
}

/* Releases d, which the walk never took: out of the queue, or once its reader is done. */
static void dir_drop(scan_pool_t *p, scan_dir_t *d)
{
    pthread_mutex_lock(&p->mu);
    if (d->state == DIR_QUEUED)
        queue_remove(p, d);
    while (d->state == DIR_READING)
        pthread_cond_wait(&p->done, &p->mu);
    dir_unahead(p, d);
    pthread_mutex_unlock(&p->mu);
    dir_release(p, d);
}

/* How many threads read directories, the walk's own included. */
static unsigned scan_threads(void)
{
    const char *v = getenv("UNDERSTUDY_SCAN_THREADS");
    long n = v && *v ? strtol(v, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > SCAN_MAX_THREADS ? SCAN_MAX_THREADS : (unsigned)n;
}

/* Starts threads - 1 workers (fewer if the system refuses some); the walk is the other reader.
 * Workers never receive signals. */
static void pool_start(scan_pool_t *p, const excl_t *ex, unsigned threads)
{
    sigset_t all, old;
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->ex = ex;
    if (threads <= 1)
        return;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i + 1 < threads; i++)
        if (pthread_create(&p->threads[p->n_threads], NULL, on_reader, p) == 0)
            p->n_threads++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Stops and joins the workers; each finishes the directory it is reading. */
static void pool_stop(scan_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    p->n_threads = 0;
}

static void pool_free(scan_pool_t *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
}

static void pool_push(scan_pool_t *p, scan_dir_t *d)
{
    pthread_mutex_lock(&p->mu);
    queue_push(p, d);
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
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

/* Opens manifest.new and copies into it the first w->entries entries of the saved manifest:
 * the walk found them all equal to the saved ones, which it has not written (lazy). */
static int writer_start(walker_t *w)
{
    mf_reader_t *rd = NULL;
    mf_entry_t e;
    int r = mf_writer_open(w->s->new_path, &w->w);

    if (r < 0) {
        snprintf(w->err, w->err_size, "cannot write %s: %s", w->s->new_path, err_str(r));
        return r;
    }
    r = mf_reader_open(w->s->manifest_path, &rd, NULL);
    for (uint64_t i = 0; r >= 0 && i < w->entries; i++) {
        r = mf_reader_next(rd, &e);
        if (r == 0)
            r = ERR_PROTOCOL; /* shorter than it was a moment ago */
        if (r > 0 && (r = mf_writer_add(w->w, &e)) < 0) {
            mf_reader_close(rd);
            snprintf(w->err, w->err_size, "cannot write %s: %s", w->s->new_path, err_str(r));
            return r;
        }
    }
    mf_reader_close(rd);
    if (r < 0) {
        snprintf(w->err, w->err_size, "cannot read %s: %s", w->s->manifest_path, err_str(r));
        return r;
    }
    return 0;
}

static int add_entry(walker_t *w, const mf_entry_t *e)
{
    int r;
    /* Entries the walk drops (vanished, excluded, skipped) are never seen, so they count as
     * differences when old_find moves past them. */
    bool at_old = w->old && w->old_valid && !strcmp(w->oe.path, e->path);
    if (at_old)
        w->old_seen = true;
    if (!same_as_old(w, e)) {
        w->differs = true;
        if (at_old)
            spool_change(w, &w->chg_old, &w->oe);
        spool_change(w, &w->chg_new, e);
    }
    if (!w->w && w->differs && (r = writer_start(w)) < 0)
        return r;
    if (w->w && (r = mf_writer_add(w->w, e)) < 0) {
        snprintf(w->err, w->err_size, "cannot write %s: %s", w->s->new_path, err_str(r));
        return r;
    }
    w->entries++;
    if (e->kind == MF_REGULAR)
        w->s->total_bytes += e->size;
    scan_draw(w, false);
    return 0;
}

static int walk_dir(walker_t *w, scan_dir_t *d);

static int visit(walker_t *w, scan_dir_t *dir, scan_ent_t *ent)
{
    const struct stat *st = &ent->st;
    mf_entry_t e = {.path = w->path};
    char target[MF_PATH_MAX];
    int r;

    fault_point("agent.scan.entry");
    if (ent->stat_errno) {
        if (ent->stat_errno == ENOENT)
            return 0; /* vanished since the listing: as if it never was */
        snprintf(w->err, w->err_size, "cannot stat %s/%s: %s", w->s->root, w->path,
                 strerror(ent->stat_errno));
        return -ent->stat_errno;
    }
    if (S_ISDIR(st->st_mode))
        e.kind = MF_DIRECTORY;
    else if (S_ISREG(st->st_mode))
        e.kind = MF_REGULAR;
    else if (S_ISLNK(st->st_mode))
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
    entry_from_stat(&e, st);
    const mf_entry_t *old = old_find(w, w->path);

    switch (e.kind) {
    case MF_DIRECTORY: {
        if (dir->depth >= SCAN_MAX_DEPTH) {
            snprintf(w->err, w->err_size, "directories nested deeper than %d levels at %s/%s",
                     SCAN_MAX_DEPTH, w->s->root, w->path);
            return UV_ELOOP;
        }
        scan_dir_t *sub = ent->sub;
        assert(sub); /* stat_names made one for every directory that gets here */
        ent->sub = NULL;
        dir_take(w->pool, sub);
        if (sub->open_errno) {
            int en = sub->open_errno;
            dir_release(w->pool, sub);
            if (en == ENOENT || en == ELOOP || en == ENOTDIR)
                return 0; /* replaced while we looked: the next scan sees what it became */
            snprintf(w->err, w->err_size,
                     "cannot open %s/%s: %s; fix its permissions or add it to [site] exclude",
                     w->s->root, w->path, strerror(en));
            return -en;
        }
        r = add_entry(w, &e);
        if (r == 0)
            r = walk_dir(w, sub);
        dir_release(w->pool, sub);
        return r;
    }
    case MF_SYMLINK: {
        ssize_t n = readlinkat(dir->fd, ent->name, target, sizeof(target));
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
    case MF_REGULAR: {
        bool same_stat = old && old->kind == MF_REGULAR && old->size == e.size &&
                         old->mtime_ns == e.mtime_ns && old->ctime_ns == e.ctime_ns &&
                         old->ino == e.ino && old->dev == e.dev && old->mode == e.mode;
        if (same_stat && floor_sec(old->mtime_ns) < w->racy_sec) {
            memcpy(e.hash, old->hash, MF_HASH_LEN);
            return add_entry(w, &e);
        }
        r = hash_file(w, dir->fd, ent->name, &e);
        if (r <= 0)
            return r;
        /* Racily clean, hashed again: the saved manifest must be written anew even when nothing
         * changed, so that its newer mtime clears the doubt (git refreshes its index the same
         * way). Kept as it was, the file would be read again by every sync. */
        if (same_stat)
            w->differs = true;
        return add_entry(w, &e);
    }
    }
    return 0;
}

/* Visits the entries of d, which the walk has taken. */
static int walk_dir(walker_t *w, scan_dir_t *d)
{
    size_t saved;
    int r = 0;

    if (d->list_err) {
        snprintf(w->err, w->err_size, "cannot list %s/%s: %s", w->s->root, w->path,
                 err_str(d->list_err));
        return d->list_err;
    }
    for (size_t i = 0; i < d->n && r == 0; i++) {
        r = path_push(w, d->ents[i].name, &saved);
        if (r == 0) {
            r = visit(w, d, &d->ents[i]);
            path_pop(w, saved);
        }
    }
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
            !strncmp(de->d_name, "generation.tmp", 14) || !strncmp(de->d_name, "changes.", 8))
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
    scan_pool_t pool;
    scan_dir_t *root = NULL;
    struct stat st;
    bool missing = true, pooled = false;
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
        !(s->chg_old_path = path_join(opts->state_dir, "changes.old")) ||
        !(s->chg_new_path = path_join(opts->state_dir, "changes.new")) ||
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
    /* The change spools, with a saved manifest to differ from. */
    if (w.old && (mf_writer_open(s->chg_old_path, &w.chg_old) < 0 ||
                  mf_writer_open(s->chg_new_path, &w.chg_new) < 0))
        spools_drop(&w);
    /* Lazy only when an unchanged tree can take its digest from the generation file. */
    bool lazy = w.old && s->have_base_digest;
    if (!lazy && (r = mf_writer_open(s->new_path, &w.w)) < 0) {
        snprintf(err, err_size, "cannot write %s: %s", s->new_path, err_str(r));
        goto fail;
    }
    fault_point("agent.scan.start");
    pool_start(&pool, w.ex, scan_threads());
    pooled = true;
    w.pool = &pool;
    if (!(root = dir_new(NULL, NULL))) {
        r = UV_ENOMEM;
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    root->fd = rootfd;
    rootfd = -1;
    pool_push(&pool, root);
    dir_take(&pool, root);
    r = walk_dir(&w, root);
    pool_stop(&pool);
    dir_release(&pool, root);
    root = NULL;
    if (r < 0)
        goto fail;
    /* Read the old manifest to its end, so a damaged tail is noticed too. */
    if (w.old && w.old_valid && !w.old_seen) {
        w.differs = true; /* the entry old_find stopped at was not walked */
        spool_change(&w, &w.chg_old, &w.oe);
    }
    while (w.old) {
        int rr = mf_reader_next(w.old, &w.oe);
        if (rr > 0) {
            w.differs = true;
            spool_change(&w, &w.chg_old, &w.oe);
        }
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
    if (!w.w && (w.differs || !s->have_old) && (r = writer_start(&w)) < 0)
        goto fail;
    if (w.w) {
        /* No fsync yet: manifest.new becomes state only in files_scan_commit, which fsyncs it
         * first, and not at all when it is the saved manifest again. */
        mf_writer_skip_fsync(w.w);
        r = mf_writer_commit(w.w, s->digest, &s->count);
        w.w = NULL;
        if (r < 0) {
            snprintf(err, err_size, "cannot write %s: %s", s->new_path, err_str(r));
            goto fail;
        }
    } else {
        /* Nothing differs: the saved manifest is this scan's, and readers of new_path read it. */
        char *p = strdup(s->manifest_path);
        if (!p) {
            r = UV_ENOMEM;
            snprintf(err, err_size, "out of memory");
            goto fail;
        }
        free(s->new_path);
        s->new_path = p;
        s->new_is_saved = true;
        memcpy(s->digest, s->base_digest, MF_HASH_LEN);
        s->count = w.entries;
    }
    s->have_new = true;
    if (w.chg_old && s->have_old) {
        mf_writer_skip_fsync(w.chg_old);
        mf_writer_skip_fsync(w.chg_new);
        uint8_t ignored[MF_HASH_LEN];
        bool ok = mf_writer_commit(w.chg_old, ignored, NULL) == 0;
        w.chg_old = NULL;
        ok = mf_writer_commit(w.chg_new, ignored, NULL) == 0 && ok;
        w.chg_new = NULL;
        s->have_changes = ok;
    }
    scan_draw(&w, true);
    if (!s->have_old)
        s->base_generation = 0;
    s->same_as_saved = s->have_old && !w.differs;
    r = 0;
    *ret = s;
fail:
    if (r < 0)
        scan_draw(&w, true);
    if (pooled) {
        pool_stop(&pool);
        if (root)
            dir_drop(&pool, root);
        pool_free(&pool);
    }
    mf_writer_abort(w.w);
    spools_drop(&w);
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

/* For a commit of the saved manifest under another generation: copies it to manifest.new,
 * which becomes new_path, with the saved manifest's mtime (the racy rule's reference stays the
 * time its hashes were taken). */
static int copy_saved(files_scan_t *s)
{
    char *np = path_join(s->state_dir, "manifest.new");
    char *buf = malloc(HASH_BUF_SIZE);
    struct stat st;
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}};
    int in = -1, out = -1, r = 0;

    if (!np || !buf) {
        r = UV_ENOMEM;
        goto out;
    }
    in = open(s->manifest_path, O_RDONLY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) != 0) {
        r = -errno;
        goto out;
    }
    out = open(np, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        r = -errno;
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, buf, HASH_BUF_SIZE), done = 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : 0;
            break;
        }
        while (done < n) {
            ssize_t m = write(out, buf + done, (size_t)(n - done));
            if (m < 0 && errno == EINTR)
                continue;
            if (m < 0) {
                r = -errno;
                goto out;
            }
            done += m;
        }
    }
    times[1] = st.st_mtim;
    if (r == 0 && futimens(out, times) != 0)
        r = -errno;
out:
    if (out >= 0 && close(out) != 0 && r == 0)
        r = -errno;
    if (in >= 0)
        close(in);
    free(buf);
    if (r < 0) {
        if (out >= 0)
            unlink(np);
        free(np);
        return r;
    }
    free(s->new_path);
    s->new_path = np;
    s->new_is_saved = false;
    return 0;
}

void files_scan_sync_new(files_scan_t *s)
{
    if (s->have_new && !s->new_is_saved && !s->committed && fsync_file(s->new_path) == 0)
        s->new_synced = true;
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
        if (!s->new_is_saved)
            unlink(s->new_path);
        s->have_new = false;
        s->committed = true;
        return 0;
    }
    /* Order matters: without a generation file the next sync lists everything, so a crash
     * between these steps can never pair a manifest with the wrong generation. */
    fault_point("agent.state.saved");
    if (s->new_is_saved && (r = copy_saved(s)) < 0)
        return r;
    if (!s->new_synced && (r = fsync_file(s->new_path)) < 0)
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
    if (s->have_new && !s->new_is_saved)
        unlink(s->new_path);
    if (s->have_changes) {
        unlink(s->chg_old_path);
        unlink(s->chg_new_path);
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->root);
    free(s->state_dir);
    free(s->manifest_path);
    free(s->new_path);
    free(s->chg_old_path);
    free(s->chg_new_path);
    free(s->gen_path);
    free(s);
}
