/* The files phase, first half: scanning the site into a new manifest and keeping the sync state.
 * See files.h for the contract and exclude.h for the exclude rules; agent/send.c talks to the
 * controller.
 *
 * The walk: rsync -rlptD without -D. Each directory's names are read (or taken from the
 * directory cache, below), sorted bytewise and visited depth-first, which is exactly walk order
 * (common/manifest.h), so the saved manifest is read alongside in one forward pass (a merge
 * join). Regular files, directories and symlinks (as symlinks, target kept verbatim) are
 * entries; devices, FIFOs and sockets are skipped, with a warning when a person is watching.
 * Directories are opened with O_NOFOLLOW relative to their parent, so a directory swapped for a
 * symlink mid-scan is not followed.
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
 * The directory cache (state_dir/dirs) saves the getdents64 and the sort of a directory that did
 * not change, as git's untracked cache does; its names are still fstatat'ed, since a change of a
 * file's content does not touch its directory. A directory's entries change (create, unlink,
 * rename, link, mkdir, rmdir) only with its mtime and ctime, and user space cannot set a ctime. So
 * a reader fstats the directory it opened and takes the names from its record instead of listing it
 * when the record is trusted: same device, inode, mtime and ctime, and both times more than
 * DC_RACY_NS older than the moment its listing began (listed_ns), as a change in the timestamp
 * tick of the listing could hide behind equal stat data (git's racy rule, which also covers
 * coarse timestamps). Anything else, a record that is missing, damaged or not trusted, means
 * getdents64 as without the cache, never an error.
 *   The file is native-endian (it never leaves the host): a header (DC_MAGIC, version), the
 * records in postorder (a directory's after those of its subdirectories), and a trailer (the
 * root's record offset, DC_END_MAGIC). A record: dev, ino, mtime_ns, ctime_ns, listed_ns, the
 * number of names n, the name block's size, the name block (the whole listing without "." and
 * "..", excluded and special names included, sorted as read_names sorts, each NUL-terminated:
 * a change of [site] exclude needs no invalidation), n u64 offsets of each name's own directory
 * record in the same file (0 = none) and DC_SUM_LEN bytes of SHA-256 over the rest (for torn or
 * damaged files, not for attackers). Sizes are capped and every read is bounds-checked.
 *   Each scan_dir_t carries the offset of its record in the old cache (the root's is in the
 * trailer); its reader preads that record alone, nothing is indexed or loaded whole. When a
 * record was read, trusted or not, the names are matched with it (two sorted lists) to give
 * each subdirectory its own record, so the unchanged subdirectories of a changed directory
 * still use the cache. The walk writes the new cache in postorder as it finishes each directory
 * (walk_dir), with child offsets in the new file, lazily like the manifest: while every record
 * equals the old cache's at the same offset nothing is written; at the first difference the
 * old file's equal prefix is copied into dirs.new and writing goes on. A listing still within
 * the racy margin is written as it is and listed again by the next scan, which writes a trusted
 * record (a difference: the file is rewritten once, as the manifest is for racily clean files).
 * Directories that could not be opened or listed get no record. At the end of a scan that went
 * through, a dirs.new replaces dirs (no fsync: a torn file only fails its checksums), whatever
 * the sync does next: the cache describes the tree, not the sync state.
 * A cache file not written for a day (DC_MAX_AGE) is not read: that scan lists every
 * directory and writes it anew. UNDERSTUDY_SCAN_NO_DIRCACHE=1 (tests, benchmarks) makes the
 * scan list every directory; it still writes the cache.
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
 * given up, and the listing merges the whole manifests as before. The spools are opened at the
 * first difference: a scan that finds none writes neither, and its listing is empty.
 *
 * State files in state_dir: manifest (the last applied tree), generation (its number and the
 * manifest's tree digest in hex, one per line), manifest.new (this scan's, until commit, when
 * it differs), changes.old and changes.new (this scan's when it differs, removed with it), dirs
 * (the directory cache, replaced by dirs.new at the end of a scan that changed it), lock (flock:
 * one sync at a time).
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
#define PRE_HASH_BUF   (64u * 1024) /* a reader's (pre_hash): under malloc's mmap threshold */

#define SCAN_MAX_THREADS   4
#define READ_AHEAD_DIRS    64
#define READ_AHEAD_ENTRIES 16384

/* The directory cache, state_dir/dirs (see the header). */
#define DC_MAGIC       "USDIRS\0\0"
#define DC_END_MAGIC   "USDIREND"
#define DC_VERSION     1
#define DC_HEADER_LEN  16 /* magic, u32 version, u32 zero */
#define DC_TRAILER_LEN 16 /* u64 the root's record, magic */
#define DC_REC_HEAD    48 /* dev, ino, mtime_ns, ctime_ns, listed_ns, u32 n, u32 names_len */
#define DC_SUM_LEN     8  /* the first bytes of SHA-256 over the rest of the record */
#define DC_MAX_NAMES   (16u << 20)
#define DC_MAX_BLOCK   (64u << 20) /* the name block */
#define DC_RACY_NS     1000000000  /* a listing is trusted this long after the last change */
#define DC_MAX_AGE     (24 * 3600) /* seconds: an older cache file is not read (a full listing) */
#define DC_READ_GUESS  8192        /* one pread gets a record up to this size */
#define DC_WBUF_SIZE   (64u * 1024)

typedef struct scan_dir scan_dir_t;

/* One name of a listed directory, with what fstatat said about it. */
typedef struct scan_ent {
    const char *name; /* in the directory's name block */
    int stat_errno;   /* fstatat's errno; 0 when st holds the entry's stat data */
    struct stat st;
    scan_dir_t *sub;  /* this directory's own listing, when the walk will go into it */
    uint64_t old_off; /* its directory record in the old cache, 0 = none */
    uint64_t new_off; /* its directory record in the new cache, once the walk wrote it */
    bool hashed;      /* a reader hashed it (scan_pool_t.hash_all), with st unchanged meanwhile */
    uint8_t hash[MF_HASH_LEN];
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
    char *names;      /* the name block (getdents64's order) */
    scan_ent_t *ents; /* sorted bytewise */
    size_t n, plen;
    /* The directory cache: fstat of fd (have_stat), when its listing began (or the trusted
     * record's time), its record in the old cache and in the new one (0 = none). A trusted
     * record (cached) stays in rec: the names point into it, and the walk compares with it. */
    bool have_stat, cached;
    uint64_t dev, ino;
    int64_t mtime_ns, ctime_ns, listed_ns;
    uint64_t cache_off, new_off;
    uint8_t *rec;
    size_t rec_len;
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
    int dc_fd;           /* the old directory cache, -1 when there is none or it is not read */
    uint64_t dc_size;    /* its size, header and trailer included */
    const EVP_MD *sha;   /* for the records' checksums */
    bool hash_all;       /* no saved manifest: every file is hashed, by the readers (pre_hash) */
    uint64_t pre_hashed; /* files pre_hash read (atomic) */
    pthread_t threads[SCAN_MAX_THREADS];
    unsigned n_threads;
} scan_pool_t;

/* The new directory cache, written by the walk. Lazy like the manifest: while every record
 * equals the old cache's at the same offset, nothing is written (fd < 0). */
typedef struct dc_out {
    char *path, *new_path; /* state_dir/dirs, state_dir/dirs.new */
    EVP_MD *sha;           /* NULL: no cache is read or written */
    int old_fd;            /* the old cache when its header and trailer are right, else -1 */
    uint64_t old_size, old_root;
    int fd;       /* dirs.new once started */
    bool failed;  /* dirs.new could not be written: given up, dirs is kept */
    bool ready;   /* dirs.new is complete, to be renamed over dirs */
    uint64_t pos; /* the offset of the next record in the new cache */
    uint8_t *rec; /* the record being built */
    size_t rec_cap;
    uint8_t *buf; /* what is not written yet */
    size_t blen;
} dc_out_t;

typedef struct walker {
    files_scan_t *s;
    excl_t *ex;
    scan_pool_t *pool;
    mf_reader_t *old; /* NULL when there is none or it turned out corrupt */
    mf_entry_t oe;    /* the old manifest's current entry when old_valid */
    size_t oe_len;    /* strlen(oe.path) */
    bool old_valid;
    bool old_seen;    /* an entry was written at oe's path */
    int64_t racy_sec; /* INT64_MIN when there is no saved manifest */
    mf_writer_t *w;   /* NULL until the first difference, when lazy (see the header) */
    mf_writer_t *chg_old, *chg_new; /* the change spools (files-internal.h), while they hold */
    bool spools_tried;              /* opened (or given up) at the first difference */
    char path[MF_PATH_MAX];
    size_t plen;
    uint8_t *buf;
    EVP_MD_CTX *md;
    char *err;
    size_t err_size;
    bool tty, warn; /* draw progress; print warnings (a terminal or --verbose) */
    bool differs;   /* an entry was written that the saved manifest does not hold as is */
    dc_out_t dc;
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

/* Adds e to a change spool, opening both at the first difference from a saved manifest (an
 * unchanged tree writes none); a spool that cannot be written is given up (send.c then merges
 * the two manifests whole, as without spools). */
static void spool_change(walker_t *w, mf_writer_t **spool, const mf_entry_t *e)
{
    if (!w->spools_tried && w->old) {
        w->spools_tried = true;
        if (mf_writer_open(w->s->chg_old_path, &w->chg_old) < 0 ||
            mf_writer_open(w->s->chg_new_path, &w->chg_new) < 0)
            spools_drop(w);
    }
    if (*spool && mf_writer_add(*spool, e) < 0)
        spools_drop(w);
}

/* Advances the old manifest to the walk's path; returns it when it holds an entry there. A
 * corrupt manifest is dropped: everything after is hashed and the controller gets a full
 * listing. */
static const mf_entry_t *old_find(walker_t *w)
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
            w->oe_len = strlen(w->oe.path);
        }
        int c = mf_path_cmp_n(w->oe.path, w->oe_len, w->path, w->plen);
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

/* SHA-256 of fd's first size bytes (fewer when it ends first), read through buf. Up to the size
 * and no further, without a last read to see the end: the caller's fstat afterwards tells
 * whether the file grew or shrank meanwhile. Returns the bytes read, ERR_INTERNAL without
 * SHA-256, or -errno when a read fails. */
static int64_t digest_fd(int fd, uint64_t size, uint8_t *buf, size_t buf_size, EVP_MD_CTX *md,
                         uint8_t out[MF_HASH_LEN])
{
    uint64_t got = 0;
    unsigned int hl = 0;

    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        return ERR_INTERNAL;
    while (got < size) {
        ssize_t n = read(fd, buf, size - got < buf_size ? (size_t)(size - got) : buf_size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        EVP_DigestUpdate(md, buf, (size_t)n);
        got += (uint64_t)n;
    }
    if (EVP_DigestFinal_ex(md, out, &hl) != 1 || hl != MF_HASH_LEN)
        return ERR_INTERNAL;
    return (int64_t)got;
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
        int64_t n = digest_fd(fd, (uint64_t)before.st_size, w->buf, HASH_BUF_SIZE, w->md, e->hash);
        if (n < 0) {
            close(fd);
            if (n == ERR_INTERNAL)
                snprintf(w->err, w->err_size, "SHA-256 is not available");
            else
                snprintf(w->err, w->err_size, "cannot read %s/%s: %s", w->s->root, w->path,
                         strerror((int)-n));
            return (int)n;
        }
        w->s->hashed_bytes += (uint64_t)n;
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
    free(d->rec);
    d->ents = NULL;
    d->names = NULL;
    d->rec = NULL;
    d->n = 0;
    d->cached = false;
}

/* Lists d->fd (without "." and ".."), sorted bytewise, into d->names and d->ents. */
/* n names' entries. Not calloc'ed: st and hash are written before they are read (stat_names,
 * pre_hash), and clearing ~200 bytes a name was 2% of an unchanged tree's scan. */
static scan_ent_t *ents_new(size_t n)
{
    scan_ent_t *v = n <= SIZE_MAX / sizeof(*v) ? malloc(n * sizeof(*v)) : NULL;
    for (size_t i = 0; v && i < n; i++) {
        v[i].name = NULL;
        v[i].stat_errno = 0;
        v[i].sub = NULL;
        v[i].old_off = v[i].new_off = 0;
        v[i].hashed = false;
    }
    return v;
}

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
        d->ents = ents_new(n);
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

/* A reader's buffer and digest for pre_hash, made on first use. */
typedef struct pre_hasher {
    uint8_t *buf;
    EVP_MD_CTX *md;
} pre_hasher_t;

/* When every file is to be hashed (no saved manifest: a first sync, or lost state), the readers
 * hash the regular files of the directories they read, so that the hashing is spread over the
 * reading threads instead of all falling on the walk. Only a file that did not change while it
 * was read counts (its fstat afterwards equals e->st, which the walk's entry is made from);
 * anything else (an excluded file, an error, a change) is left to the walk, which hashes it, with
 * retries and error messages, as without the readers. */
static void pre_hash(const scan_pool_t *p, const scan_dir_t *d, scan_ent_t *e, pre_hasher_t *h)
{
    char path[MF_PATH_MAX];
    struct stat after;

    if ((size_t)snprintf(path, sizeof(path), "%s%s%s", d->path, d->plen ? "/" : "", e->name) >=
            sizeof(path) ||
        excl_match(p->ex, path, false))
        return;
    if (!h->buf && (!(h->buf = malloc(PRE_HASH_BUF)) || !(h->md = EVP_MD_CTX_new())))
        return;
    int fd = openat(d->fd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    bool ok = digest_fd(fd, (uint64_t)e->st.st_size, h->buf, PRE_HASH_BUF, h->md, e->hash) ==
                  (int64_t)e->st.st_size &&
              fstat(fd, &after) == 0 && stat_same(&e->st, &after);
    close(fd);
    e->hashed = ok;
    __atomic_fetch_add((uint64_t *)&p->pre_hashed, 1, __ATOMIC_RELAXED);
}

/* Stats d's names and makes a listing-to-be for each subdirectory the walk will go into: the
 * walk's own tests (visit), so that it finds one exactly where it needs one. */
static int stat_names(scan_pool_t *p, scan_dir_t *d)
{
    pre_hasher_t h = {0};

    for (size_t i = 0; i < d->n; i++) {
        scan_ent_t *e = &d->ents[i];
        if (fstatat(d->fd, e->name, &e->st, AT_SYMLINK_NOFOLLOW) != 0) {
            e->stat_errno = errno;
            continue;
        }
        if (p->hash_all && S_ISREG(e->st.st_mode))
            pre_hash(p, d, e, &h);
        if (!S_ISDIR(e->st.st_mode) || d->depth >= SCAN_MAX_DEPTH ||
            d->plen + (d->plen ? 1 : 0) + strlen(e->name) >= MF_PATH_MAX)
            continue; /* the walk stops there with an error, or never descends */
        if (!(e->sub = dir_new(d, e->name))) {
            free(h.buf);
            EVP_MD_CTX_free(h.md);
            return UV_ENOMEM;
        }
        e->sub->cache_off = e->old_off;
        if (excl_match(p->ex, e->sub->path, true)) {
            free(e->sub);
            e->sub = NULL;
        }
    }
    free(h.buf);
    EVP_MD_CTX_free(h.md);
    return 0;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}

static void put_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* Reads n bytes at off; false on an error or when the file ends first. */
static bool pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

/* A record's checksum: the first DC_SUM_LEN bytes of SHA-256 over its n bytes before it. */
static bool dc_sum(const EVP_MD *sha, const uint8_t *rec, size_t n, uint8_t out[DC_SUM_LEN])
{
    uint8_t h[EVP_MAX_MD_SIZE];
    if (!EVP_Digest(rec, n, h, NULL, sha, NULL))
        return false;
    memcpy(out, h, DC_SUM_LEN);
    return true;
}

/* A directory record of the old cache, as dc_load read and checked it. */
typedef struct dc_rec {
    uint64_t dev, ino;
    int64_t mtime_ns, ctime_ns, listed_ns;
    uint32_t n;
    const char *names;   /* n names, each NUL-terminated, in strictly increasing bytewise order */
    const uint8_t *offs; /* n child record offsets, u64 each, unaligned */
} dc_rec_t;

/* Reads the record at off in the old cache and checks it: the size caps, the file's bounds, the
 * checksum, the names (as read_names makes them: sorted, distinct, none empty, ".", ".." or with
 * a '/') and the child offsets (before off: postorder). Returns true with the record's bytes in
 * *ret_buf (the caller frees them) and its fields in *v pointing into them; false when there is
 * no usable record, which only means the directory is listed. */
static bool dc_load(const scan_pool_t *p, uint64_t off, uint8_t **ret_buf, size_t *ret_len,
                    dc_rec_t *v)
{
    uint64_t end = p->dc_size - DC_TRAILER_LEN, avail, len;
    uint8_t *b = NULL, sum[DC_SUM_LEN];
    const char *names, *q, *prev = NULL;
    uint32_t n, blen;
    size_t got;

    if (off < DC_HEADER_LEN || off >= end || end - off < DC_REC_HEAD + DC_SUM_LEN)
        return false;
    avail = end - off;
    got = avail < DC_READ_GUESS ? (size_t)avail : DC_READ_GUESS;
    if (!(b = malloc(got)) || !pread_full(p->dc_fd, b, got, off))
        goto bad;
    n = get_u32(b + 40);
    blen = get_u32(b + 44);
    /* Every name takes two bytes at least, its NUL included. */
    if (n > DC_MAX_NAMES || blen > DC_MAX_BLOCK || n > blen / 2 || (blen && !n))
        goto bad;
    len = DC_REC_HEAD + (uint64_t)blen + 8 * (uint64_t)n + DC_SUM_LEN;
    if (len > avail)
        goto bad;
    if (len > got) {
        uint8_t *nb = realloc(b, (size_t)len);
        if (!nb)
            goto bad;
        b = nb;
        if (!pread_full(p->dc_fd, b + got, (size_t)len - got, off + got))
            goto bad;
    }
    if (!dc_sum(p->sha, b, (size_t)len - DC_SUM_LEN, sum) ||
        memcmp(sum, b + len - DC_SUM_LEN, DC_SUM_LEN) != 0)
        goto bad;
    names = (const char *)b + DC_REC_HEAD;
    if (blen && names[blen - 1] != '\0')
        goto bad;
    q = names;
    for (uint32_t i = 0; i < n; i++) {
        if (q >= names + blen)
            goto bad;
        size_t l = strlen(q);
        if (l == 0 || memchr(q, '/', l) || !strcmp(q, ".") || !strcmp(q, "..") ||
            (prev && strcmp(prev, q) >= 0))
            goto bad;
        prev = q;
        q += l + 1;
    }
    if (q != names + blen)
        goto bad;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t c = get_u64(b + DC_REC_HEAD + blen + 8 * (size_t)i);
        if (c && (c < DC_HEADER_LEN || c >= off))
            goto bad;
    }
    v->dev = get_u64(b);
    v->ino = get_u64(b + 8);
    v->mtime_ns = (int64_t)get_u64(b + 16);
    v->ctime_ns = (int64_t)get_u64(b + 24);
    v->listed_ns = (int64_t)get_u64(b + 32);
    v->n = n;
    v->names = names;
    v->offs = b + DC_REC_HEAD + blen;
    *ret_buf = b;
    *ret_len = (size_t)len;
    return true;
bad:
    free(b);
    return false;
}

/* Whether t is older than listed by more than the racy margin. */
static bool dc_settled(int64_t t, int64_t listed)
{
    return t < listed && (uint64_t)listed - (uint64_t)t > DC_RACY_NS;
}

/* Whether d's record can stand for getdents64: d is the directory it was made for, unchanged
 * since (a change of its entries updates its mtime and ctime, and user space cannot set a
 * ctime), and no change can hide in the timestamp tick of its listing. */
static bool dc_trusted(const scan_dir_t *d, const dc_rec_t *v)
{
    return d->have_stat && v->dev == d->dev && v->ino == d->ino && v->mtime_ns == d->mtime_ns &&
           v->ctime_ns == d->ctime_ns && dc_settled(v->mtime_ns, v->listed_ns) &&
           dc_settled(v->ctime_ns, v->listed_ns);
}

/* Takes d's names from its trusted record, which d keeps (the names point into it). */
static int names_from_record(scan_dir_t *d, const dc_rec_t *v, uint8_t *rec, size_t rec_len)
{
    const char *q = v->names;
    if (v->n && !(d->ents = ents_new(v->n)))
        return UV_ENOMEM;
    for (size_t i = 0; i < v->n; i++) {
        d->ents[i].name = q;
        d->ents[i].old_off = get_u64(v->offs + 8 * i);
        q += strlen(q) + 1;
    }
    d->n = v->n;
    d->rec = rec;
    d->rec_len = rec_len;
    d->cached = true;
    d->listed_ns = v->listed_ns;
    return 0;
}

/* Gives the names d just listed the child offsets of the same names in d's record (both lists
 * sorted: a merge), so that unchanged subdirectories of a changed directory use the cache. */
static void map_children(scan_dir_t *d, const dc_rec_t *v)
{
    const char *q = v->names;
    size_t j = 0;
    for (size_t i = 0; i < d->n && j < v->n; i++) {
        int c = strcmp(q, d->ents[i].name);
        while (c < 0 && ++j < v->n) {
            q += strlen(q) + 1;
            c = strcmp(q, d->ents[i].name);
        }
        if (j < v->n && c == 0)
            d->ents[i].old_off = get_u64(v->offs + 8 * j);
    }
}

static int64_t realtime_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ts_ns(t);
}

/* Opens (unless it is the root), lists and stats d; failures are recorded in d for the walk.
 * The listing comes from d's record in the old directory cache when that is trusted, else from
 * getdents64. Called without the lock by whoever set d DIR_READING. */
static void dir_read(scan_pool_t *p, scan_dir_t *d)
{
    uint8_t *rec = NULL;
    size_t rec_len = 0;
    dc_rec_t v;
    struct stat st;
    bool have_rec;
    int r;

    if (d->fd < 0) {
        d->fd = openat(d->parent->fd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (d->fd < 0) {
            d->open_errno = errno;
            return;
        }
    }
    if (fstat(d->fd, &st) == 0) {
        d->have_stat = true;
        d->dev = (uint64_t)st.st_dev;
        d->ino = (uint64_t)st.st_ino;
        d->mtime_ns = ts_ns(st.st_mtim);
        d->ctime_ns = ts_ns(st.st_ctim);
    }
    have_rec = p->dc_fd >= 0 && d->cache_off && dc_load(p, d->cache_off, &rec, &rec_len, &v);
    if (have_rec && dc_trusted(d, &v)) {
        r = names_from_record(d, &v, rec, rec_len);
        if (r < 0)
            free(rec);
    } else {
        d->listed_ns = realtime_ns();
        r = read_names(d);
        if (r == 0 && have_rec)
            map_children(d, &v);
        free(rec);
    }
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
    free(d->rec);
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
 * They read the old directory cache dc (-1: none) of dc_size bytes. Workers never receive
 * signals. */
static void pool_start(scan_pool_t *p, const excl_t *ex, unsigned threads, const dc_out_t *dc,
                       bool hash_all)
{
    sigset_t all, old;
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->ex = ex;
    p->dc_fd = dc->old_fd;
    p->dc_size = dc->old_size;
    p->sha = dc->sha;
    p->hash_all = hash_all;
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

static int write_all(int fd, const void *p, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t m = write(fd, (const uint8_t *)p + done, n - done);
        if (m < 0 && errno == EINTR)
            continue;
        if (m < 0)
            return -errno;
        done += (size_t)m;
    }
    return 0;
}

/* Opens the old directory cache when its header and trailer are right; its records are checked
 * one by one as they are read. A file older than DC_MAX_AGE (or from the future) is not read:
 * the scan lists every directory and writes the cache anew, which bounds what a gap in the
 * filesystem's timestamps could hide to a day, as the database digest cache does. */
static void dc_open_old(dc_out_t *dc)
{
    uint8_t h[DC_HEADER_LEN], t[DC_TRAILER_LEN];
    struct stat st;
    time_t now = time(NULL);
    int fd = open(dc->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || now - st.st_mtime > DC_MAX_AGE ||
        st.st_mtime - now > 60 || st.st_size < DC_HEADER_LEN + DC_TRAILER_LEN ||
        !pread_full(fd, h, sizeof(h), 0) ||
        !pread_full(fd, t, sizeof(t), (uint64_t)st.st_size - DC_TRAILER_LEN) ||
        memcmp(h, DC_MAGIC, 8) != 0 || get_u32(h + 8) != DC_VERSION || get_u32(h + 12) != 0 ||
        memcmp(t + 8, DC_END_MAGIC, 8) != 0) {
        close(fd);
        return;
    }
    dc->old_fd = fd;
    dc->old_size = (uint64_t)st.st_size;
    dc->old_root = get_u64(t);
}

/* Gives up the new directory cache for this scan: dirs.new goes, dirs stays as it is (a stale
 * record only fails to be trusted). */
static void dc_fail(walker_t *w, int r)
{
    dc_out_t *dc = &w->dc;
    if (w->warn)
        log_warn("cannot write %s (%s); the directory cache is not updated", dc->new_path,
                 err_str(r));
    if (dc->fd >= 0)
        close(dc->fd);
    dc->fd = -1;
    unlink(dc->new_path);
    dc->failed = true;
    dc->ready = false;
    dc->blen = 0;
}

static int dc_flush(dc_out_t *dc)
{
    int r = write_all(dc->fd, dc->buf, dc->blen);
    dc->blen = 0;
    return r;
}

static int dc_write(dc_out_t *dc, const void *p, size_t n)
{
    if (dc->blen + n > DC_WBUF_SIZE) {
        int r = dc_flush(dc);
        if (r < 0)
            return r;
        if (n > DC_WBUF_SIZE)
            return write_all(dc->fd, p, n);
    }
    memcpy(dc->buf + dc->blen, p, n);
    dc->blen += n;
    return 0;
}

/* Opens dirs.new and writes into it what the walk found equal so far: the old cache up to pos,
 * or a header when there is no old cache (and so nothing written before). */
static int dc_start(dc_out_t *dc)
{
    uint8_t head[DC_HEADER_LEN] = {0};
    int r;

    if (!(dc->buf = malloc(DC_WBUF_SIZE)))
        return UV_ENOMEM;
    dc->fd = open(dc->new_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (dc->fd < 0)
        return -errno;
    if (dc->old_fd < 0) {
        assert(dc->pos == DC_HEADER_LEN);
        memcpy(head, DC_MAGIC, 8);
        put_u32(head + 8, DC_VERSION);
        return dc_write(dc, head, sizeof(head));
    }
    for (uint64_t at = 0; at < dc->pos;) {
        size_t n = dc->pos - at < DC_WBUF_SIZE ? (size_t)(dc->pos - at) : DC_WBUF_SIZE;
        if (!pread_full(dc->old_fd, dc->buf, n, at))
            return UV_EIO;
        dc->blen = n;
        if ((r = dc_flush(dc)) < 0)
            return r;
        at += n;
    }
    return 0;
}

/* Puts d's record into the new directory cache once the walk has been through d and its
 * subdirectories (postorder), or finds it there already (lazy: the old cache holds the same
 * bytes at the same offset). Returns its offset, or 0 when d gets no record. */
static uint64_t dc_add(walker_t *w, scan_dir_t *d)
{
    dc_out_t *dc = &w->dc;
    size_t blen = 0, len;
    uint64_t off = dc->pos;
    uint8_t *p;
    int r;

    if (!dc->sha || dc->failed || !d->have_stat || d->n > DC_MAX_NAMES)
        return 0;
    /* Nothing written yet, and d's trusted record is at this offset with every subdirectory's
     * record where it was: the record would be built byte for byte as it is (the common case
     * of an unchanged tree), so it is neither built nor compared. */
    if (dc->fd < 0 && d->cached && d->cache_off == off) {
        size_t i = 0;
        while (i < d->n && d->ents[i].new_off == d->ents[i].old_off)
            i++;
        if (i == d->n) {
            dc->pos += d->rec_len;
            return off;
        }
    }
    for (size_t i = 0; i < d->n; i++)
        blen += strlen(d->ents[i].name) + 1;
    if (blen > DC_MAX_BLOCK)
        return 0;
    len = DC_REC_HEAD + blen + 8 * d->n + DC_SUM_LEN;
    if (len > dc->rec_cap) {
        size_t cap = len > 2 * dc->rec_cap ? len : 2 * dc->rec_cap;
        if (!(p = realloc(dc->rec, cap))) {
            dc_fail(w, UV_ENOMEM);
            return 0;
        }
        dc->rec = p;
        dc->rec_cap = cap;
    }
    p = dc->rec;
    put_u64(p, d->dev);
    put_u64(p + 8, d->ino);
    put_u64(p + 16, (uint64_t)d->mtime_ns);
    put_u64(p + 24, (uint64_t)d->ctime_ns);
    put_u64(p + 32, (uint64_t)d->listed_ns);
    put_u32(p + 40, (uint32_t)d->n);
    put_u32(p + 44, (uint32_t)blen);
    p += DC_REC_HEAD;
    for (size_t i = 0; i < d->n; i++) {
        size_t l = strlen(d->ents[i].name) + 1;
        memcpy(p, d->ents[i].name, l);
        p += l;
    }
    for (size_t i = 0; i < d->n; i++, p += 8)
        put_u64(p, d->ents[i].new_off);
    if (dc->fd < 0) {
        /* The old record was checked when read, so equal bytes mean an equal checksum. */
        if (dc->old_fd >= 0 && d->rec && d->cache_off == off && d->rec_len == len &&
            memcmp(d->rec, dc->rec, len - DC_SUM_LEN) == 0) {
            dc->pos += len;
            return off;
        }
        if ((r = dc_start(dc)) < 0) {
            dc_fail(w, r);
            return 0;
        }
    }
    if (!dc_sum(dc->sha, dc->rec, len - DC_SUM_LEN, p)) {
        dc_fail(w, ERR_INTERNAL);
        return 0;
    }
    if ((r = dc_write(dc, dc->rec, len)) < 0) {
        dc_fail(w, r);
        return 0;
    }
    dc->pos += len;
    return off;
}

/* Ends the new directory cache after a walk that went through: the trailer with the root's
 * record. Nothing is written when every record and the trailer equal the old cache's. */
static void dc_finish(walker_t *w, uint64_t root_off)
{
    dc_out_t *dc = &w->dc;
    uint8_t t[DC_TRAILER_LEN];
    int r, fd;

    if (!dc->sha || dc->failed)
        return;
    if (dc->fd < 0) {
        if (dc->old_fd >= 0 && dc->pos + DC_TRAILER_LEN == dc->old_size && root_off == dc->old_root)
            return;
        if ((r = dc_start(dc)) < 0) {
            dc_fail(w, r);
            return;
        }
    }
    put_u64(t, root_off);
    memcpy(t + 8, DC_END_MAGIC, 8);
    r = dc_write(dc, t, sizeof(t));
    if (r == 0)
        r = dc_flush(dc);
    if (r < 0) {
        dc_fail(w, r);
        return;
    }
    fd = dc->fd;
    dc->fd = -1;
    if (close(fd) != 0) {
        dc_fail(w, -errno);
        return;
    }
    dc->ready = true;
}

/* At the end of a scan that went through: dirs.new, when written, becomes dirs. No fsync: a
 * torn cache only fails its checksums. */
static void dc_install(walker_t *w)
{
    if (!w->dc.ready)
        return;
    w->dc.ready = false;
    if (rename(w->dc.new_path, w->dc.path) != 0)
        dc_fail(w, -errno);
}

/* Frees the cache's writer, removing a dirs.new that was not installed. */
static void dc_close(dc_out_t *dc)
{
    if (dc->fd >= 0)
        close(dc->fd);
    if (dc->fd >= 0 || dc->ready)
        unlink(dc->new_path);
    if (dc->old_fd >= 0)
        close(dc->old_fd);
    EVP_MD_free(dc->sha);
    free(dc->rec);
    free(dc->buf);
    free(dc->path);
    free(dc->new_path);
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
    const mf_entry_t *old = old_find(w);

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
        ent->new_off = sub->new_off;
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
        if (ent->hashed) {
            memcpy(e.hash, ent->hash, MF_HASH_LEN);
            w->s->hashed++;
            w->s->hashed_bytes += e.size;
        } else if ((r = hash_file(w, dir->fd, ent->name, &e)) <= 0) {
            return r;
        }
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

/* Visits the entries of d, which the walk has taken, then puts d's record into the new
 * directory cache. */
static int walk_dir(walker_t *w, scan_dir_t *d)
{
    size_t saved;
    int r = 0;

    if (d->list_err) {
        snprintf(w->err, w->err_size, "cannot list %s/%s: %s", w->s->root, w->path,
                 err_str(d->list_err));
        return d->list_err;
    }
    if (d->cached)
        w->s->dirs_cached++;
    else
        w->s->dirs_listed++;
    for (size_t i = 0; i < d->n && r == 0; i++) {
        r = path_push(w, d->ents[i].name, &saved);
        if (r == 0) {
            r = visit(w, d, &d->ents[i]);
            path_pop(w, saved);
        }
    }
    if (r == 0)
        d->new_off = dc_add(w, d);
    return r;
}

static char *path_join(const char *dir, const char *name)
{
    char *p;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Removes what an interrupted run left: manifest.new, dirs.new and the writer's temp files. */
static void remove_leftovers(const char *state_dir)
{
    DIR *d = opendir(state_dir);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, "manifest.new") || !strcmp(de->d_name, "dirs.new") ||
            !strncmp(de->d_name, "manifest.new.tmp.", 17) ||
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
    walker_t w = {.s = s,
                  .err = err,
                  .err_size = err_size,
                  .racy_sec = INT64_MIN,
                  .dc = {.old_fd = -1, .fd = -1, .pos = DC_HEADER_LEN}};
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
        !(s->gen_path = path_join(opts->state_dir, "generation")) ||
        !(w.dc.path = path_join(opts->state_dir, "dirs")) ||
        !(w.dc.new_path = path_join(opts->state_dir, "dirs.new"))) {
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
    /* Lazy only when an unchanged tree can take its digest from the generation file. */
    bool lazy = w.old && s->have_base_digest;
    if (!lazy && (r = mf_writer_open(s->new_path, &w.w)) < 0) {
        snprintf(err, err_size, "cannot write %s: %s", s->new_path, err_str(r));
        goto fail;
    }
    /* The directory cache: without SHA-256 none is read or written. */
    const char *no_dc = getenv("UNDERSTUDY_SCAN_NO_DIRCACHE");
    if ((w.dc.sha = EVP_MD_fetch(NULL, "SHA256", NULL)) && !(no_dc && *no_dc && strcmp(no_dc, "0")))
        dc_open_old(&w.dc);
    fault_point("agent.scan.start");
    pool_start(&pool, w.ex, scan_threads(), &w.dc, !w.old);
    pooled = true;
    w.pool = &pool;
    if (!(root = dir_new(NULL, NULL))) {
        r = UV_ENOMEM;
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    root->fd = rootfd;
    root->cache_off = w.dc.old_fd >= 0 ? w.dc.old_root : 0;
    rootfd = -1;
    pool_push(&pool, root);
    dir_take(&pool, root);
    r = walk_dir(&w, root);
    uint64_t root_off = root->new_off;
    pool_stop(&pool);
    s->pre_hashed = pool.pre_hashed;
    dir_release(&pool, root);
    root = NULL;
    if (r < 0)
        goto fail;
    dc_finish(&w, root_off);
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
    /* The cache describes the tree, not the sync state: it is kept whatever the sync does. */
    dc_install(&w);
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
    dc_close(&w.dc);
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

uint64_t files_scan_dirs_listed(const files_scan_t *s)
{
    return s->dirs_listed;
}

uint64_t files_scan_dirs_cached(const files_scan_t *s)
{
    return s->dirs_cached;
}

uint64_t files_scan_pre_hashed(const files_scan_t *s)
{
    return s->pre_hashed;
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
