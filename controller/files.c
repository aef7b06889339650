/* The controller's files phase: listing, needs, content, and the new generation. See files.h.
 *
 * Staging (data/staging, genpriv.h): a whole transfer is written straight to objects/<hex>
 * (kept when cut off, so a resumed sync asks only for the rest) and a delta to tmp/, renamed to
 * objects/<hex>; either way its SHA-256 is checked and the listed mode, mtime and owner are set
 * on the open file before it counts as stored (a file that fits in one message is checked by
 * the receiving thread and written by the store pool, below). A later sync that needs content
 * found complete in objects/ (hashed again first) does not ask for it again. The listing is
 * spooled to tmp/ in walk order, so memory holds only the needs and a hash table of the live
 * generation's content (read when the first regular file is listed: a sync that changed nothing
 * never reads it).
 *
 * The new tree is built in staging/gen/root from a merge-join of the live manifest and the
 * listing. A regular file is a hard link to a live file with the same content and the same
 * mode, mtime and owner, or else the received object itself (its metadata set once, before it
 * is linked), or else a fresh copy: a file some generation holds is never changed in place,
 * its metadata neither.
 *
 * The prepared tree (staging/next): linking every unchanged file is most of a sync's time on a
 * big site, so after a generation goes live (and when the controller starts) a background job
 * makes staging/next/root a link copy of the live tree -- directories (mode 0700 until a sync
 * gives them their final metadata) and a hard link per regular file, no symlinks -- and writes
 * staging/next/base (the live generation's number) last. A sync with an incremental listing
 * whose live generation is still that base renames it to staging/gen and only patches it: what
 * the listing changed is replaced, what it deleted is removed, and every file it keeps is checked
 * with one fstatat against the manifest (a link shares its inode with the live file, so a file
 * changed in place on the backup shows here and takes the careful path of place_file, which
 * refuses it as before).
 *
 * The watch: that check is one fstatat per file of the site, as much as the agent's own scan.
 * The job therefore also watches every live directory (inotify, before linking its files) and
 * checks each link once against the manifest as it makes it; when the job ends with nothing
 * seen, the store keeps the watch for the sync (gen_store_put_watch). A sync patching that tree
 * takes the files it keeps unchanged as they are, and just before the switch reads the watch:
 * any event at all (a write, a create, a chmod in any live directory, a queue overflow) and it
 * checks every file after all, refusing a changed one. Writes through another name of a live
 * inode (an older generation's tree, under data/) are not seen by a directory watch; those
 * trees are the controller's own. Without the watch (no inotify, the watch limit, a file that
 * did not match) the sync checks every file as before. Everything else -- a full listing, a resync
 * after resolve, a prepared tree for another generation (rollback, recovery) or without base (the
 * job was cut off, even by SIGKILL) -- builds from scratch as before. The prepared tree is under
 * data/staging, never under the docroot, and no file in it is ever written in place.
 */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librsync.h>
#include <openssl/evp.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "genpriv.h"
#include "log.h"
#include "safefs.h"

#define FILES_RECV_TIMEOUT_MS (10 * 60 * 1000)
/* Files above this size that exist at the same path in the live generation travel as deltas. */
#define DELTA_MIN_SIZE   (256u * 1024)
#define DELTA_STRONG_LEN 12
#define IO_CHUNK         (256u * 1024)
/* Paths of a patched tree fsynced together (finish_dirs): open descriptors at a time. */
#define SYNC_BATCH 64

#define LISTING   GEN_TMP "/listing"
#define DELETIONS GEN_TMP "/deletions"

/* ---- hash table: content hash -> where it is ---- */

enum { H_LIVE = 1, H_OBJECT = 2, H_USED = 4, H_PLACED = 8, H_META = 16 };

typedef struct hslot {
    uint8_t hash[MF_HASH_LEN];
    uint8_t state;      /* 0: empty */
    size_t path;        /* H_LIVE: offset of a live path in the arena */
    size_t placed;      /* H_PLACED: offset of the new tree's path the object was moved to */
    uint32_t meta_mode; /* H_META: the mode and mtime the object got when it was received */
    int64_t meta_mtime_ns;
} hslot_t;

typedef struct htab {
    hslot_t *slots;
    size_t cap, n; /* cap is a power of two */
    char *arena;
    size_t arena_len, arena_cap;
} htab_t;

static uint64_t hkey(const uint8_t *h)
{
    uint64_t k;
    memcpy(&k, h, sizeof(k));
    return k;
}

static int htab_grow(htab_t *t)
{
    size_t cap = t->cap ? 2 * t->cap : 1024;
    hslot_t *s = calloc(cap, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].state)
            continue;
        size_t j = hkey(t->slots[i].hash) & (cap - 1);
        while (s[j].state)
            j = (j + 1) & (cap - 1);
        s[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = s;
    t->cap = cap;
    return 0;
}

static hslot_t *htab_find(const htab_t *t, const uint8_t *hash)
{
    if (!t->cap)
        return NULL;
    for (size_t j = hkey(hash) & (t->cap - 1);; j = (j + 1) & (t->cap - 1)) {
        if (!t->slots[j].state)
            return NULL;
        if (!memcmp(t->slots[j].hash, hash, MF_HASH_LEN))
            return &t->slots[j];
    }
}

/* Finds or adds hash; returns the slot (state 0 when new), NULL without memory. */
static hslot_t *htab_add(htab_t *t, const uint8_t *hash)
{
    hslot_t *s = htab_find(t, hash);
    if (s)
        return s;
    if ((t->n + 1) * 4 > t->cap * 3 && htab_grow(t) < 0)
        return NULL;
    size_t j = hkey(hash) & (t->cap - 1);
    while (t->slots[j].state)
        j = (j + 1) & (t->cap - 1);
    memcpy(t->slots[j].hash, hash, MF_HASH_LEN);
    t->n++;
    return &t->slots[j];
}

/* Copies path into the arena; returns its offset in *ret_off. */
static int arena_add(htab_t *t, const char *path, size_t *ret_off)
{
    size_t len = strlen(path) + 1;
    if (t->arena_len + len > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 65536;
        while (cap < t->arena_len + len)
            cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a)
            return -ENOMEM;
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, path, len);
    *ret_off = t->arena_len;
    t->arena_len += len;
    return 0;
}

static int htab_add_path(htab_t *t, hslot_t *s, const char *path)
{
    int r = arena_add(t, path, &s->path);
    if (r == 0)
        s->state |= H_LIVE;
    return r;
}

static void htab_free(htab_t *t)
{
    free(t->slots);
    free(t->arena);
    memset(t, 0, sizeof(*t));
}

/* Adds a live regular file (the first path of each content is the one kept). */
static int htab_add_live(htab_t *t, const mf_entry_t *e)
{
    hslot_t *s = htab_add(t, e->hash);
    return !s ? -ENOMEM : !(s->state & H_LIVE) ? htab_add_path(t, s, e->path) : 0;
}

/* For gen_store_put_tab. */
static void htab_destroy(void *tab)
{
    htab_free(tab);
    free(tab);
}

/* ---- the stage ---- */

typedef struct need {
    char *path;
    uint8_t hash[MF_HASH_LEN];
    uint64_t size, resume;
    uint32_t mode; /* of the listing entry, given to the object once received */
    int64_t mtime_ns;
    wire_transfer_t transfer;
} need_t;

struct stage {
    gen_store_t *g;
    uint64_t gen;
    int staging_fd, root_fd, live_fd; /* live_fd: -1 without a live generation */
    bool store_empty; /* objects/ and partial/ held nothing at the start: skip probing them */
    bool tab_loaded;  /* tab holds the live generation's content (load_live_tab) */
    bool verify_live; /* resync after resolve: live files are trusted only when unchanged */
    htab_t tab;
    need_t *needs;
    size_t n_needs, cap_needs;
    bool full, received, refused, locked;
    bool flushing; /* flusher runs (stage_flush_start) */
    pthread_t flusher;
    pthread_mutex_t flush_mu;
    pthread_cond_t flush_cond;
    bool flush_last; /* everything is received: the flusher's next syncfs is its last */
    bool chown;      /* atomic while the store pool runs (set_meta) */
    pthread_mutex_t chown_mu;
    uid_t uid;
    gid_t gid;
};

/* A refusal naming the path: fails the whole sync, and the staging area is cleaned. */
static int refuse(stage_t *st, char *err, size_t err_size, const char *path, size_t len,
                  const char *why)
{
    char q[512];
    st->refused = true;
    return set_err(err, err_size, ERR_REFUSED, "refused '%s': %s",
                   safefs_quote(path, len, q, sizeof(q)), why);
}

/* dir/<first two hex digits>/<hex>: the store is spread over 256 directories. */
static void hash_hex_name(char *out, size_t size, const char *dir, const uint8_t *hash)
{
    char hex[2 * MF_HASH_LEN + 1];
    mf_hash_hex(hash, hex);
    snprintf(out, size, "%s/%.2s/%s", dir, hex, hex);
}

/* Creates the directory of a store path made by hash_hex_name (once it is missing). */
static int make_object_dir(int staging_fd, const char *name)
{
    char dir[256];
    const char *slash = strrchr(name, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - name) : 0, name);
    return mkdirat(staging_fd, dir, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

/* Opens (creating) the store path name made by hash_hex_name, and its directory when that is
 * missing. Returns the descriptor, or -1 with errno. */
static int open_object(int staging_fd, const char *name, int flags)
{
    flags |= O_CREAT | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(staging_fd, name, flags, 0600);
    if (fd < 0 && errno == ENOENT && make_object_dir(staging_fd, name) == 0)
        fd = openat(staging_fd, name, flags, 0600);
    return fd;
}

/* Creates objects/ as the top of its own directory hierarchy for ext4's Orlov allocator
 * (FS_TOPDIR_FL, chattr +T): its 256 directories, and so the received files in them, spread
 * over the filesystem's block groups instead of crowding the group of staging/. Without an
 * allocator that cares (or the ioctl), only the mkdir counts. */
static void make_store(int staging_fd)
{
    (void)mkdirat(staging_fd, GEN_OBJECTS, 0700);
    int fd = openat(staging_fd, GEN_OBJECTS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int flags = 0;
    if (fd < 0)
        return;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL)) {
        flags |= FS_TOPDIR_FL;
        (void)ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    close(fd);
}

/* Whether dirfd/name holds no entry (or cannot be read: then it is probed entry by entry). */
static bool dir_is_empty(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    bool empty = d != NULL;
    struct dirent *de;

    if (!d) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    while (empty && (de = readdir(d)))
        empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    closedir(d);
    return empty;
}

/* The early flush. A generation built whole is made durable by a syncfs before the switch
 * (gen_store_install), and most of what it would wait for is the content received. So a sync
 * that is to receive much starts a thread that calls syncfs every FLUSH_PERIOD_MS while the
 * content arrives, and once more when it has all arrived (while the database phase and the
 * build go on): the writeback runs alongside instead of after, and the syncfs before the switch
 * finds little left to write. */
#define FLUSH_MIN_FILES 1000
#define FLUSH_MIN_BYTES (64u << 20)
#define FLUSH_PERIOD_MS 250

static void *flush_main(void *arg)
{
    stage_t *st = arg;
    bool last;

    do {
        struct timespec until = deadline_after_ms(FLUSH_PERIOD_MS);
        pthread_mutex_lock(&st->flush_mu);
        while (!st->flush_last &&
               pthread_cond_timedwait(&st->flush_cond, &st->flush_mu, &until) == 0)
            ;
        last = st->flush_last;
        pthread_mutex_unlock(&st->flush_mu);
        (void)syncfs(st->staging_fd);
    } while (!last);
    return NULL;
}

/* Starts the flusher when the sync is to receive at least FLUSH_MIN_FILES files or
 * FLUSH_MIN_BYTES. */
static void stage_flush_start(stage_t *st, uint64_t files, uint64_t bytes)
{
    if (!st->flushing && (files >= FLUSH_MIN_FILES || bytes >= FLUSH_MIN_BYTES))
        st->flushing = pthread_create(&st->flusher, NULL, flush_main, st) == 0;
}

/* Everything is received: the flusher does its last syncfs now. */
static void stage_flush_last(stage_t *st)
{
    pthread_mutex_lock(&st->flush_mu);
    st->flush_last = true;
    pthread_cond_signal(&st->flush_cond);
    pthread_mutex_unlock(&st->flush_mu);
}

static void stage_flush_join(stage_t *st)
{
    if (!st->flushing)
        return;
    stage_flush_last(st);
    pthread_join(st->flusher, NULL);
    st->flushing = false;
}

int stage_begin(gen_store_t *g, stage_t **ret, char *err, size_t err_size)
{
    stage_t *st = calloc(1, sizeof(*st));
    int r;

    if (!st)
        return set_err(err, err_size, -ENOMEM, "out of memory");
    st->g = g;
    pthread_mutex_init(&st->chown_mu, NULL);
    pthread_mutex_init(&st->flush_mu, NULL);
    pthread_cond_init(&st->flush_cond, NULL);
    st->root_fd = st->live_fd = -1;
    st->staging_fd = gen_store_staging_fd(g);
    r = gen_store_lock(g, err, err_size);
    if (r < 0) {
        free(st);
        return r;
    }
    st->locked = true;
    uint64_t live = gen_store_live(g);
    r = gen_store_refresh(g, err, err_size);
    if (r == 0 && gen_store_live(g) != live)
        r = set_err(err, err_size, ERR_OVERLOADED,
                    "the live generation changed during the sync (a rollback?); sync again");
    if (r < 0)
        goto fail;
    st->gen = gen_store_next(g);
    st->chown = gen_store_owner(g, &st->uid, &st->gid);
    safefs_rm_tree(st->staging_fd, GEN_STAGE_DIR);
    safefs_rm_tree(st->staging_fd, GEN_TMP);
    if (mkdirat(st->staging_fd, GEN_TMP, 0700) < 0 ||
        mkdirat(st->staging_fd, GEN_STAGE_DIR, 0755) < 0 ||
        mkdirat(st->staging_fd, GEN_STAGE_DIR "/root", 0755) < 0) {
        r = set_err(err, err_size, -errno, "cannot create the staging area: %s", strerror(errno));
        goto fail;
    }
    make_store(st->staging_fd);
    (void)mkdirat(st->staging_fd, GEN_PARTIAL, 0700);
    st->store_empty =
        dir_is_empty(st->staging_fd, GEN_OBJECTS) && dir_is_empty(st->staging_fd, GEN_PARTIAL);
    st->root_fd = openat(st->staging_fd, GEN_STAGE_DIR "/root",
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (st->root_fd < 0) {
        r = set_err(err, err_size, -errno, "cannot open the staged root: %s", strerror(errno));
        goto fail;
    }
    r = gen_store_open_live_root(g);
    if (r < 0 && r != -ENOENT) {
        set_err(err, err_size, r, "cannot open the live generation: %s", strerror(-r));
        goto fail;
    }
    st->live_fd = r;
    *ret = st;
    return 0;
fail:
    stage_abort(st);
    return r;
}

/* The live generation's content by hash, on first use: a sync that lists no regular file
 * (nothing changed) never needs it. Taken from the background job when that built it (and then
 * *ret_prepared is set), else read from the live manifest. */
static int load_live_tab(stage_t *st, bool *ret_prepared, char *err, size_t err_size)
{
    const char *mpath = gen_store_live_manifest(st->g);
    mf_reader_t *rd;
    mf_entry_t e;
    int r;

    if (st->tab_loaded || !mpath)
        return 0;
    st->tab_loaded = true;
    /* Built already by the preparation of the next tree, when that read this manifest. */
    htab_t *pre = gen_store_take_tab(st->g, gen_store_live(st->g));
    if (pre) {
        htab_free(&st->tab);
        st->tab = *pre;
        free(pre);
        if (ret_prepared)
            *ret_prepared = true;
        return 0;
    }
    r = mf_reader_open(mpath, &rd, NULL);
    if (r < 0)
        return set_err(err, err_size, r, "cannot read the live manifest %s: %s", mpath, err_str(r));
    while ((r = mf_reader_next(rd, &e)) == 1) {
        if (e.kind == MF_REGULAR && (r = htab_add_live(&st->tab, &e)) < 0)
            break;
    }
    mf_reader_close(rd);
    if (r < 0)
        return set_err(err, err_size, r, "cannot read the live manifest %s: %s", mpath, err_str(r));
    return 0;
}

void stage_set_verify_live(stage_t *st, bool on)
{
    st->verify_live = on;
}

static bool same_meta(const stage_t *st, int fd, const mf_entry_t *e);

/* The size of the live tree's regular file at path; 0 when there is none. */
static uint64_t live_size(const stage_t *st, const char *path)
{
    struct stat s;
    int fd = st->live_fd >= 0 ? safefs_open(st->live_fd, path, O_PATH, 0) : -1;
    bool ok = fd >= 0 && fstat(fd, &s) == 0 && S_ISREG(s.st_mode);
    if (fd >= 0)
        close(fd);
    return ok ? (uint64_t)s.st_size : 0;
}

/* Whether the live copy of le still has the metadata its manifest entry records. */
static bool live_intact(const stage_t *st, const mf_entry_t *le)
{
    if (st->live_fd < 0)
        return false;
    int fd = safefs_open(st->live_fd, le->path, O_RDONLY, 0);
    if (fd < 0)
        return false;
    bool ok = same_meta(st, fd, le);
    close(fd);
    return ok;
}

uint64_t stage_generation(const stage_t *st)
{
    return st->gen;
}

void stage_abort(stage_t *st)
{
    if (!st)
        return;
    stage_flush_join(st);
    if (st->root_fd >= 0)
        close(st->root_fd);
    if (st->live_fd >= 0)
        close(st->live_fd);
    safefs_rm_tree(st->staging_fd, GEN_STAGE_DIR);
    safefs_rm_tree(st->staging_fd, GEN_TMP);
    if (st->refused) {
        /* A hostile or broken sender: keep nothing it sent. */
        safefs_rm_tree(st->staging_fd, GEN_OBJECTS);
        safefs_rm_tree(st->staging_fd, GEN_PARTIAL);
        (void)mkdirat(st->staging_fd, GEN_OBJECTS, 0700);
        (void)mkdirat(st->staging_fd, GEN_PARTIAL, 0700);
    }
    (void)mkdirat(st->staging_fd, GEN_TMP, 0700);
    for (size_t i = 0; i < st->n_needs; i++)
        free(st->needs[i].path);
    free(st->needs);
    htab_free(&st->tab);
    if (st->locked)
        gen_store_unlock(st->g);
    pthread_mutex_destroy(&st->chown_mu);
    pthread_mutex_destroy(&st->flush_mu);
    pthread_cond_destroy(&st->flush_cond);
    free(st);
}

/* ---- checks on the listing ---- */

/* A symlink target must stay inside the site root by the rule the agent applies too
 * (mf_link_escapes), so an honest agent never sends one this refuses. */
static const char *check_link_target(const char *path, const wire_bytes_t *t)
{
    char target[MF_PATH_MAX];
    if (t->len == 0)
        return "symlink with an empty target";
    if (t->len >= MF_PATH_MAX || memchr(t->data, '\0', t->len))
        return "symlink target too long or holding a NUL byte";
    memcpy(target, t->data, t->len);
    target[t->len] = '\0';
    if (mf_link_escapes(path, target))
        return "symlink pointing outside the site (an absolute target, '..' climbing above "
               "the root, or '..' after a name)";
    return NULL;
}

static int copy_bytes(const wire_bytes_t *b, char **out)
{
    *out = malloc(b->len + 1);
    if (!*out)
        return -ENOMEM;
    if (b->len)
        memcpy(*out, b->data, b->len);
    (*out)[b->len] = '\0';
    return 0;
}

static int add_need(stage_t *st, const mf_entry_t *e, wire_transfer_t transfer, uint64_t resume)
{
    const char *path = e->path;
    if (st->n_needs == st->cap_needs) {
        size_t cap = st->cap_needs ? 2 * st->cap_needs : 64;
        need_t *n = realloc(st->needs, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        st->needs = n;
        st->cap_needs = cap;
    }
    need_t *n = &st->needs[st->n_needs];
    n->path = strdup(path);
    if (!n->path)
        return -ENOMEM;
    memcpy(n->hash, e->hash, MF_HASH_LEN);
    n->size = e->size;
    n->mode = e->mode;
    n->mtime_ns = e->mtime_ns;
    n->transfer = transfer;
    n->resume = resume;
    st->n_needs++;
    return 0;
}

/* ---- delta signatures and patching (librsync) ---- */

static size_t delta_block_len(uint64_t size)
{
    /* sqrt(size), at least 16 KiB, and big enough that a signature stays near 2048 blocks
     * (about 32 KiB), rounded up to a power of two. */
    uint64_t want = 16384, s = 1;
    while (s * s < size)
        s++;
    if (s > want)
        want = s;
    if (size / 2048 > want)
        want = size / 2048;
    uint64_t b = 1024;
    while (b < want)
        b <<= 1;
    return (size_t)b;
}

/* Runs job over fd's whole content, appending its output to out (capped). */
static int signature_of(int fd, uint64_t size, buf_t *out)
{
    rs_job_t *job = rs_sig_begin(delta_block_len(size), DELTA_STRONG_LEN, RS_BLAKE2_SIG_MAGIC);
    char *in = malloc(IO_CHUNK);
    char obuf[65536];
    int r = 0;
    bool eof = false;
    rs_buffers_t b = {0};

    if (!job || !in) {
        free(in);
        if (job)
            rs_job_free(job);
        return -ENOMEM;
    }
    for (;;) {
        if (b.avail_in == 0 && !eof) {
            ssize_t n = read(fd, in, IO_CHUNK);
            if (n < 0) {
                r = -errno;
                break;
            }
            b.next_in = in;
            b.avail_in = (size_t)n;
            eof = n == 0;
            b.eof_in = eof;
        }
        b.next_out = obuf;
        b.avail_out = sizeof(obuf);
        rs_result rr = rs_job_iter(job, &b);
        if (sizeof(obuf) - b.avail_out && buf_append(out, obuf, sizeof(obuf) - b.avail_out) < 0) {
            r = -ENOMEM;
            break;
        }
        if (rr == RS_DONE)
            break;
        if (rr != RS_BLOCKED) {
            r = ERR_INTERNAL;
            break;
        }
    }
    free(in);
    rs_job_free(job);
    return r;
}

static rs_result on_patch_copy(void *opaque, rs_long_t pos, size_t *len, void **buf)
{
    int fd = *(int *)opaque;
    if (pos < 0)
        return RS_IO_ERROR;
    ssize_t n = pread(fd, *buf, *len, (off_t)pos);
    if (n < 0)
        return RS_IO_ERROR;
    if (n == 0)
        return RS_INPUT_ENDED;
    *len = (size_t)n;
    return RS_DONE;
}

/* ---- receiving one file ---- */

typedef struct sink {
    int fd;
    uint64_t written, size;
    EVP_MD_CTX *sha;
} sink_t;

static int sink_write(sink_t *k, const void *data, size_t len)
{
    if (len > k->size - k->written)
        return ERR_REFUSED;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(k->fd, (const char *)data + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)n;
    }
    EVP_DigestUpdate(k->sha, data, len);
    k->written += len;
    return 0;
}

/* Hashes the first len bytes of fd (a partial file being resumed). */
static int sink_rehash(sink_t *k, uint64_t len)
{
    char *b = malloc(IO_CHUNK);
    if (!b)
        return -ENOMEM;
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < IO_CHUNK ? (size_t)(len - off) : IO_CHUNK;
        ssize_t n = pread(k->fd, b, want, (off_t)off);
        if (n <= 0) {
            free(b);
            return n < 0 ? -errno : -EIO;
        }
        EVP_DigestUpdate(k->sha, b, (size_t)n);
        off += (size_t)n;
    }
    free(b);
    k->written = len;
    return lseek(k->fd, (off_t)len, SEEK_SET) < 0 ? -errno : 0;
}

/* Whether the stored object still hashes to hash (it was written without fsync by a sync that
 * did not finish; a crash of the machine could have left it short or zeroed). Removes it if
 * not. */
static bool object_intact(int staging_fd, const char *name, const uint8_t hash[MF_HASH_LEN])
{
    sink_t k = {.fd = openat(staging_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
    struct stat st;
    uint8_t got[MF_HASH_LEN];
    unsigned int glen = 0;
    bool ok = false;

    k.sha = EVP_MD_CTX_new();
    if (k.fd >= 0 && k.sha && EVP_DigestInit_ex(k.sha, EVP_sha256(), NULL) == 1 &&
        fstat(k.fd, &st) == 0 && sink_rehash(&k, (uint64_t)st.st_size) == 0 &&
        EVP_DigestFinal_ex(k.sha, got, &glen) == 1)
        ok = !memcmp(got, hash, MF_HASH_LEN);
    if (k.fd >= 0)
        close(k.fd);
    EVP_MD_CTX_free(k.sha);
    if (!ok)
        unlinkat(staging_fd, name, 0);
    return ok;
}

static int set_meta(stage_t *st, int fd, const mf_entry_t *e);

/* ---- storing small files: a pool of threads ----
 *
 * A first sync is mostly small files, each in one FileData message. Creating a file costs the
 * kernel several times what receiving it costs us (an inode, a directory entry, page cache, then
 * owner, mode and mtime), so the receiving thread only checks a small file's content (zstd,
 * size, SHA-256) and hands the verified bytes to STORE_THREADS threads that write
 * objects/<hex>. Their queue holds at most STORE_QUEUE_BYTES; the first error one of them meets
 * fails the sync. A file that takes more than one message (large, resumed, a delta) is written
 * by the receiving thread itself, as before. A generation built whole has its received files
 * linked into the tree by such a pool too (link_later): a job then holds a reference to the
 * directory it links into. */

#define STORE_THREADS     2
#define STORE_QUEUE_BYTES (4u << 20)

/* A directory of the tree being built, open for link jobs: closed by whoever drops the last
 * reference (the builder moving on to another directory, or the last job in it). */
typedef struct dirref {
    int fd;
    int refs; /* atomic */
} dirref_t;

static dirref_t *dirref_get(dirref_t *d)
{
    __atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
    return d;
}

static void dirref_put(dirref_t *d)
{
    if (d && __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        close(d->fd);
        free(d);
    }
}

/* Writes data to objects/<hex> (name) with the listed mode and mtime, or, with dir, links
 * objects/<hex> into the tree being built as dir/leaf (the entry's path is data, leaf an offset
 * into it). */
typedef struct store_job {
    struct store_job *next;
    dirref_t *dir;
    char name[128]; /* objects/xx/<hex> */
    uint32_t mode;
    int64_t mtime_ns;
    size_t len, leaf;
    uint8_t data[];
} store_job_t;

typedef struct store_pool {
    stage_t *st;
    pthread_mutex_t mu;
    pthread_cond_t work, space;
    store_job_t *head, *tail;
    size_t queued;      /* bytes of the jobs queued or being written */
    bool closing, drop; /* no more jobs; drop: free the queued ones unwritten */
    int err;            /* the first error, with msg */
    char msg[400];
    pthread_t threads[STORE_THREADS];
    int n_threads;
} store_pool_t;

static int store_write(stage_t *st, const store_job_t *j)
{
    int fd = open_object(st->staging_fd, j->name, O_WRONLY | O_TRUNC);
    if (fd < 0)
        return -errno;
    int r = 0;
    for (size_t off = 0; off < j->len && r == 0;) {
        ssize_t n = write(fd, j->data + off, j->len - off);
        if (n >= 0)
            off += (size_t)n;
        else if (errno != EINTR)
            r = -errno;
    }
    /* The listed metadata now, as receive_one gives it (see there). */
    mf_entry_t me = {.mode = j->mode, .mtime_ns = j->mtime_ns};
    if (r == 0)
        r = set_meta(st, fd, &me);
    close(fd);
    return r;
}

static void *store_main(void *arg)
{
    store_pool_t *p = arg;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->closing)
            pthread_cond_wait(&p->work, &p->mu);
        store_job_t *j = p->head;
        if (!j)
            break; /* closing, and nothing queued */
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        bool skip = p->drop || p->err;
        pthread_mutex_unlock(&p->mu);
        int r = 0;
        if (skip)
            ;
        else if (j->dir)
            r = linkat(p->st->staging_fd, j->name, j->dir->fd, (char *)j->data + j->leaf, 0) < 0
                    ? -errno
                    : 0;
        else if ((r = store_write(p->st, j)) == 0)
            fault_point("controller.file.stored");
        dirref_put(j->dir);
        pthread_mutex_lock(&p->mu);
        if (r < 0 && !p->err) {
            char q[512];
            p->err = r;
            if (j->dir)
                snprintf(p->msg, sizeof(p->msg), "cannot create '%s' in the new generation: %s",
                         safefs_quote((char *)j->data, j->len, q, sizeof(q)), strerror(-r));
            else
                snprintf(p->msg, sizeof(p->msg), "cannot write %s: %s", j->name, strerror(-r));
        }
        p->queued -= sizeof(*j) + j->len;
        pthread_cond_broadcast(&p->space);
        free(j);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Starts the pool; false when no thread could be started (the caller then stores every file
 * itself). */
static bool store_pool_start(store_pool_t *p, stage_t *st)
{
    *p = (store_pool_t){.st = st};
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->space, NULL);
    while (p->n_threads < STORE_THREADS &&
           pthread_create(&p->threads[p->n_threads], NULL, store_main, p) == 0)
        p->n_threads++;
    if (p->n_threads == 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->space);
    }
    return p->n_threads > 0;
}

/* Queues j (taken over), waiting while the queue is full. Returns 0, or the error a thread met
 * (set in err). */
static int store_pool_put(store_pool_t *p, store_job_t *j, char *err, size_t err_size)
{
    int r;

    pthread_mutex_lock(&p->mu);
    while (!p->err && p->queued > 0 && p->queued + sizeof(*j) + j->len > STORE_QUEUE_BYTES)
        pthread_cond_wait(&p->space, &p->mu);
    r = p->err;
    if (r == 0) {
        j->next = NULL;
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        p->queued += sizeof(*j) + j->len;
        pthread_cond_signal(&p->work);
    } else {
        set_err(err, err_size, r, "%s", p->msg);
    }
    pthread_mutex_unlock(&p->mu);
    if (r < 0) {
        dirref_put(j->dir);
        free(j);
    }
    return r;
}

/* The error a thread met (set in err), or 0. */
static int store_pool_error(store_pool_t *p, char *err, size_t err_size)
{
    pthread_mutex_lock(&p->mu);
    int r = p->err;
    if (r < 0)
        set_err(err, err_size, r, "%s", p->msg);
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* Waits until every queued job is done. Returns 0, or the error a thread met (set in err). */
static int store_pool_drain(store_pool_t *p, char *err, size_t err_size)
{
    pthread_mutex_lock(&p->mu);
    while (!p->err && p->queued > 0)
        pthread_cond_wait(&p->space, &p->mu);
    int r = p->err;
    if (r < 0)
        set_err(err, err_size, r, "%s", p->msg);
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* Stops the pool once every queued file is written (drop: without writing them; the sync has
 * failed anyway). Returns 0, or the first error a thread met (set in err unless drop). */
static int store_pool_finish(store_pool_t *p, bool drop, char *err, size_t err_size)
{
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    p->drop = drop;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    int r = p->err;
    if (r < 0 && !drop)
        set_err(err, err_size, r, "%s", p->msg);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->space);
    return r;
}

static int recv_msg(const msgio_t *io, wire_msg_t **m, char *err, size_t err_size)
{
    int r = msgio_recv(io, m, FILES_RECV_TIMEOUT_MS);
    if (r < 0)
        return set_err(err, err_size, r, "connection lost during the files phase: %s", err_str(r));
    return 0;
}

/* Receives the content of need n (FileData chunks, or FileDelta chunks for a delta need) into
 * objects/<hex>. */
/* The content of need n when it is one FileData message of the whole file (n->size is at most
 * IO_CHUNK): checked here, written by the store pool. */
static int receive_small(stage_t *st, store_pool_t *pool, const need_t *n,
                         const wire_file_data_t *d, ZSTD_DCtx *zd, EVP_MD_CTX *md,
                         files_rx_stats_t *stats, char *err, size_t err_size)
{
    size_t plen = strlen(n->path), len = d->data.len;
    uint8_t got[MF_HASH_LEN];
    unsigned int glen = 0;
    store_job_t *j = malloc(sizeof(*j) + (size_t)n->size);

    if (!j)
        return set_err(err, err_size, -ENOMEM, "out of memory");
    if (d->zstd) {
        ZSTD_DCtx_reset(zd, ZSTD_reset_session_only);
        len = ZSTD_decompressDCtx(zd, j->data, (size_t)n->size, d->data.data, d->data.len);
        if (ZSTD_isError(len)) {
            free(j);
            return refuse(st, err, err_size, n->path, plen,
                          ZSTD_getErrorCode(len) == ZSTD_error_dstSize_tooSmall
                              ? "more content than its listed size"
                              : "a chunk is not one complete zstd frame");
        }
    } else if (len <= n->size) {
        memcpy(j->data, d->data.data, len);
    } else {
        free(j);
        return refuse(st, err, err_size, n->path, plen, "more content than its listed size");
    }
    if (len != n->size) {
        free(j);
        return refuse(st, err, err_size, n->path, plen, "content size differs from the listing");
    }
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(md, j->data, len) != 1 ||
        EVP_DigestFinal_ex(md, got, &glen) != 1) {
        free(j);
        return set_err(err, err_size, ERR_INTERNAL, "SHA-256 is not available");
    }
    if (memcmp(got, n->hash, MF_HASH_LEN) != 0) {
        free(j);
        return refuse(st, err, err_size, n->path, plen, "content does not match its SHA-256");
    }
    stats->bytes_received += d->data.len;
    fault_point("controller.file.received");
    hslot_t *s = htab_add(&st->tab, n->hash);
    if (!s) {
        free(j);
        return set_err(err, err_size, -ENOMEM, "out of memory");
    }
    s->state |= H_OBJECT | H_META;
    s->meta_mode = n->mode & 07777;
    s->meta_mtime_ns = n->mtime_ns;
    hash_hex_name(j->name, sizeof(j->name), GEN_OBJECTS, n->hash);
    j->dir = NULL;
    j->mode = n->mode;
    j->mtime_ns = n->mtime_ns;
    j->len = len;
    return store_pool_put(pool, j, err, err_size);
}

static int receive_one(stage_t *st, const msgio_t *io, need_t *n, ZSTD_DCtx *zd, store_pool_t *pool,
                       EVP_MD_CTX *md, files_rx_stats_t *stats, char *err, size_t err_size)
{
    char name[256], final[256];
    uint8_t got[MF_HASH_LEN];
    unsigned int glen = 0;
    size_t plen = strlen(n->path);
    sink_t k = {.fd = -1, .size = n->size};
    rs_job_t *job = NULL;
    int live_copy = -1, r = 0;
    char *obuf = NULL;
    wire_msg_t *m = NULL;
    bool whole_started = false, done = false;

    r = recv_msg(io, &m, err, err_size);
    if (r < 0)
        return r;
    const wire_file_data_t *first = &m->u.file_data;
    if (pool && m->type == WIRE_FILE_DATA && first->path.len == plen &&
        memcmp(first->path.data, n->path, plen) == 0 && first->offset == 0 && first->last &&
        n->transfer == WIRE_TRANSFER_WHOLE && n->size <= IO_CHUNK) {
        r = receive_small(st, pool, n, first, zd, md, stats, err, err_size);
        wire_msg_free(m);
        return r;
    }
    k.sha = md;
    obuf = malloc(IO_CHUNK);
    if (!obuf || EVP_DigestInit_ex(k.sha, EVP_sha256(), NULL) != 1) {
        r = set_err(err, err_size, -ENOMEM, "out of memory");
        goto out;
    }
    hash_hex_name(final, sizeof(final), GEN_OBJECTS, n->hash);
    while (!done) {
        if (!m && (r = recv_msg(io, &m, err, err_size)) < 0)
            goto out;
        bool data = m->type == WIRE_FILE_DATA, delta = m->type == WIRE_FILE_DELTA;
        const wire_bytes_t *p = data ? &m->u.file_data.path : &m->u.file_delta.path;
        if ((!data && !delta) || p->len != plen || memcmp(p->data, n->path, plen) != 0) {
            char q[512];
            r = set_err(err, err_size, ERR_PROTOCOL, "expected the content of '%s', got %s",
                        safefs_quote(n->path, plen, q, sizeof(q)), wire_type_name(m->type));
            goto out;
        }
        if (data && !whole_started) {
            /* First FileData chunk: a whole transfer straight into objects/<hex> (no rename
             * once it is complete), resumed when the agent starts at our resume offset. */
            if (job) {
                r = set_err(err, err_size, ERR_PROTOCOL, "FileData after FileDelta");
                goto out;
            }
            whole_started = true;
            hash_hex_name(name, sizeof(name), GEN_OBJECTS, n->hash);
            uint64_t off = m->u.file_data.offset;
            if (off != 0 && off != n->resume) {
                r = refuse(st, err, err_size, n->path, plen, "content sent from a wrong offset");
                goto out;
            }
            /* From the start: truncate on open; resuming: keep what the earlier run wrote. */
            k.fd = open_object(st->staging_fd, name, O_RDWR | (off ? 0 : O_TRUNC));
            if (k.fd < 0) {
                r = set_err(err, err_size, -errno, "cannot write %s: %s", name, strerror(errno));
                goto out;
            }
            r = off ? sink_rehash(&k, off) : 0;
            if (r < 0) {
                set_err(err, err_size, r, "cannot resume %s: %s", name, strerror(-r));
                goto out;
            }
        } else if (delta && !job) {
            if (whole_started || n->transfer != WIRE_TRANSFER_DELTA || st->live_fd < 0) {
                r = set_err(err, err_size, ERR_PROTOCOL, "unexpected FileDelta");
                goto out;
            }
            live_copy = safefs_open(st->live_fd, n->path, O_RDONLY, 0);
            snprintf(name, sizeof(name), "%s/delta", GEN_TMP);
            k.fd = openat(st->staging_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                          0600);
            job = live_copy >= 0 && k.fd >= 0 ? rs_patch_begin(on_patch_copy, &live_copy) : NULL;
            if (!job) {
                r = set_err(err, err_size, live_copy < 0 ? live_copy : -errno,
                            "cannot apply a delta to %s", n->path);
                goto out;
            }
        }
        if (data) {
            const wire_file_data_t *d = &m->u.file_data;
            if (d->offset != k.written) {
                r = refuse(st, err, err_size, n->path, plen, "content chunks out of order");
                goto out;
            }
            if (d->zstd) {
                ZSTD_inBuffer in = {d->data.data, d->data.len, 0};
                size_t zr = 1;
                ZSTD_DCtx_reset(zd, ZSTD_reset_session_only);
                while (in.pos < in.size || zr != 0) {
                    ZSTD_outBuffer out = {obuf, IO_CHUNK, 0};
                    zr = ZSTD_decompressStream(zd, &out, &in);
                    if (ZSTD_isError(zr) || (zr != 0 && in.pos == in.size && out.pos == 0)) {
                        r = refuse(st, err, err_size, n->path, plen,
                                   "a chunk is not one complete zstd frame");
                        goto out;
                    }
                    r = sink_write(&k, obuf, out.pos);
                    if (r < 0)
                        goto sink_fail;
                }
            } else {
                r = sink_write(&k, d->data.data, d->data.len);
                if (r < 0)
                    goto sink_fail;
            }
            stats->bytes_received += d->data.len;
            done = d->last;
        } else {
            const wire_file_delta_t *d = &m->u.file_delta;
            rs_buffers_t b = {.next_in = (char *)(uintptr_t)d->delta.data,
                              .avail_in = d->delta.len,
                              .eof_in = d->last};
            stats->bytes_received += d->delta.len;
            for (unsigned idle = 0;;) {
                b.next_out = obuf;
                b.avail_out = IO_CHUNK;
                rs_result rr = rs_job_iter(job, &b);
                size_t produced = IO_CHUNK - b.avail_out;
                r = sink_write(&k, obuf, produced);
                if (r < 0)
                    goto sink_fail;
                if (rr == RS_DONE) {
                    if (!d->last || b.avail_in) {
                        r = refuse(st, err, err_size, n->path, plen, "delta ends too early");
                        goto out;
                    }
                    break;
                }
                if (rr != RS_BLOCKED) {
                    r = refuse(st, err, err_size, n->path, plen, "delta does not apply");
                    goto out;
                }
                idle = produced ? 0 : idle + 1;
                if (!d->last && b.avail_in == 0 && produced == 0)
                    break; /* wants the next chunk */
                if (d->last && idle > 1000) {
                    r = refuse(st, err, err_size, n->path, plen, "delta is truncated");
                    goto out;
                }
            }
            done = d->last;
        }
        wire_msg_free(m);
        m = NULL;
    }
    EVP_DigestFinal_ex(k.sha, got, &glen);
    if (k.written != n->size || memcmp(got, n->hash, MF_HASH_LEN) != 0) {
        unlinkat(st->staging_fd, name, 0);
        r = refuse(st, err, err_size, n->path, plen,
                   k.written != n->size ? "content size differs from the listing"
                                        : "content does not match its SHA-256");
        goto out;
    }
    fault_point("controller.file.received");
    /* The listed metadata now, on the open file: the build then only moves it into the tree
     * (place_file), which saves an open and a close per file of a first sync. */
    mf_entry_t me = {.path = n->path, .mode = n->mode, .mtime_ns = n->mtime_ns};
    bool meta = set_meta(st, k.fd, &me) == 0;
    /* No fsync per file: syncfs before the switch makes the generation durable, and an object
     * a crash may have left half-written is hashed again before a later sync reuses it. */
    if (strcmp(name, final) != 0 && renameat(st->staging_fd, name, st->staging_fd, final) < 0 &&
        (errno != ENOENT || make_object_dir(st->staging_fd, final) < 0 ||
         renameat(st->staging_fd, name, st->staging_fd, final) < 0)) {
        r = set_err(err, err_size, -errno, "cannot store %s: %s", final, strerror(errno));
        goto out;
    }
    hslot_t *s = htab_add(&st->tab, n->hash);
    if (!s) {
        r = set_err(err, err_size, -ENOMEM, "out of memory");
        goto out;
    }
    s->state |= H_OBJECT;
    if (meta) {
        s->state |= H_META;
        s->meta_mode = n->mode & 07777;
        s->meta_mtime_ns = n->mtime_ns;
    }
    fault_point("controller.file.stored");
    r = 0;
    goto out;
sink_fail:
    if (r == ERR_REFUSED)
        r = refuse(st, err, err_size, n->path, plen, "more content than its listed size");
    else
        set_err(err, err_size, r, "cannot write %s: %s", name, strerror(-r));
out:
    wire_msg_free(m);
    if (job)
        rs_job_free(job);
    if (live_copy >= 0)
        close(live_copy);
    if (k.fd >= 0)
        close(k.fd);
    free(obuf);
    return r;
}

/* ---- the files phase ---- */

int stage_receive_files(stage_t *st, const msgio_t *io, bool full_listing, bool dry_run,
                        files_rx_stats_t *stats, char *err, size_t err_size)
{
    const gen_opts_t *o = gen_store_opts(st->g);
    mf_writer_t *lw = NULL, *dw = NULL;
    mf_reader_t *live = NULL;
    mf_entry_t le = {0};
    int lr = 0, r;
    char *prev = NULL, *path = NULL, *target = NULL;
    uint64_t listed = 0, total = 0, need_bytes = 0;
    wire_msg_t *m = NULL;
    ZSTD_DCtx *zd = NULL;
    EVP_MD_CTX *md = NULL;
    store_pool_t pool;
    bool pooled = false;
    buf_t sig = BUF_INIT;
    char lpath[PATH_MAX];

    st->full = full_listing;
    if (!full_listing && !gen_store_live_manifest(st->g))
        return set_err(err, err_size, ERR_INTERNAL,
                       "incremental listing without a live generation");
    snprintf(lpath, sizeof(lpath), "%s/staging/" LISTING, o->data);
    r = mf_writer_open(lpath, &lw);
    if (r == 0) {
        snprintf(lpath, sizeof(lpath), "%s/staging/" DELETIONS, o->data);
        r = mf_writer_open(lpath, &dw);
    }
    /* The live entry at each listed path matters only after a resync, where a live copy counts
     * only while it is intact; otherwise the content table tells what the backup has, and the
     * live file itself whether a changed one is big enough for a delta (live_size). */
    if (r == 0 && st->verify_live && gen_store_live_manifest(st->g))
        r = mf_reader_open(gen_store_live_manifest(st->g), &live, NULL);
    if (r < 0) {
        set_err(err, err_size, r, "cannot spool the listing: %s", err_str(r));
        goto out;
    }
    if (live && (lr = mf_reader_next(live, &le)) < 0)
        goto live_fail;

    /* FileEntry* until FilesEnd. */
    for (;;) {
        r = recv_msg(io, &m, err, err_size);
        if (r < 0)
            goto out;
        if (m->type == WIRE_FILES_END)
            break;
        if (m->type != WIRE_FILE_ENTRY) {
            r = set_err(err, err_size, ERR_PROTOCOL, "expected FileEntry or FilesEnd, got %s",
                        wire_type_name(m->type));
            goto out;
        }
        const wire_file_entry_t *fe = &m->u.file_entry;
        free(path);
        free(target);
        path = target = NULL;
        if (copy_bytes(&fe->path, &path) < 0 || copy_bytes(&fe->link_target, &target) < 0) {
            r = set_err(err, err_size, -ENOMEM, "out of memory");
            goto out;
        }
        size_t plen = fe->path.len;
        if (plen == 0 || plen >= MF_PATH_MAX || strlen(path) != plen) {
            r = refuse(st, err, err_size, path, plen, "bad path");
            goto out;
        }
        if (prev && mf_path_cmp(prev, path) >= 0) {
            r = refuse(st, err, err_size, path, plen, "listing out of order or repeated");
            goto out;
        }
        free(prev);
        prev = strdup(path);
        if (!prev) {
            r = set_err(err, err_size, -ENOMEM, "out of memory");
            goto out;
        }
        stats->entries++;
        if (++listed > o->max_files) {
            r = refuse(st, err, err_size, path, plen, "over [limits] max_files entries");
            goto out;
        }
        mf_entry_t e = {.path = path,
                        .kind = (mf_kind_t)fe->kind,
                        .mode = fe->mode & 07777,
                        .mtime_ns = fe->mtime_ns};
        if (fe->deleted) {
            if (full_listing) {
                r = refuse(st, err, err_size, path, plen, "a deletion in a full listing");
                goto out;
            }
            e.kind = MF_DIRECTORY;
            e.mode = 0;
            r = mf_writer_add(dw, &e);
            if (r < 0)
                goto spool_fail;
            wire_msg_free(m);
            m = NULL;
            continue;
        }
        if (fe->kind == WIRE_FILE_SYMLINK) {
            const char *why = check_link_target(path, &fe->link_target);
            if (why) {
                r = refuse(st, err, err_size, path, plen, why);
                goto out;
            }
            e.link_target = target;
            e.mode = 0777;
        } else if (fe->kind == WIRE_FILE_REGULAR) {
            if (fe->hash.len != MF_HASH_LEN) {
                r = refuse(st, err, err_size, path, plen, "regular file without a SHA-256");
                goto out;
            }
            if (fe->size > o->max_file_size) {
                r = refuse(st, err, err_size, path, plen, "larger than [limits] max_file_size");
                goto out;
            }
            total += fe->size;
            if (total > o->max_total_size) {
                r = refuse(st, err, err_size, path, plen,
                           "the files add up to more than [limits] max_total_size");
                goto out;
            }
            e.size = fe->size;
            memcpy(e.hash, fe->hash.data, MF_HASH_LEN);
        }
        r = mf_writer_add(lw, &e);
        if (r < 0)
            goto spool_fail;
        if (e.kind != MF_REGULAR) {
            wire_msg_free(m);
            m = NULL;
            continue;
        }
        if (!st->tab_loaded) {
            r = load_live_tab(st, &stats->tab_prepared, err, err_size);
            if (r < 0)
                goto out;
        }
        /* Merge-join with the live manifest: the same path's live entry, if any. */
        while (lr == 1 && mf_path_cmp(le.path, path) < 0)
            if ((lr = mf_reader_next(live, &le)) < 0)
                goto live_fail;
        bool same_path = lr == 1 && !strcmp(le.path, path) && le.kind == MF_REGULAR;
        hslot_t *s = htab_find(&st->tab, e.hash);
        char obj[256];
        struct stat ost;
        /* After a resolve, a live copy counts only while it is as it went live. */
        bool have_live = same_path && !memcmp(le.hash, e.hash, MF_HASH_LEN) &&
                         (!st->verify_live || live_intact(st, &le));
        bool have_other = s && (!st->verify_live || (s->state & H_OBJECT));
        if (have_live || have_other) {
            if (s && !(s->state & H_LIVE))
                stats->reused_by_hash++;
        } else {
            hash_hex_name(obj, sizeof(obj), GEN_OBJECTS, e.hash);
            s = htab_add(&st->tab, e.hash);
            if (!s) {
                r = set_err(err, err_size, -ENOMEM, "out of memory");
                goto out;
            }
            /* What an earlier, interrupted sync left of this content: all of it (reused once
             * its hash is checked again) or the start of a whole transfer (resumed). */
            bool stored = !st->store_empty &&
                          fstatat(st->staging_fd, obj, &ost, AT_SYMLINK_NOFOLLOW) == 0 &&
                          S_ISREG(ost.st_mode);
            if (stored && (uint64_t)ost.st_size == e.size &&
                object_intact(st->staging_fd, obj, e.hash)) {
                s->state |= H_OBJECT;
                stats->reused_by_hash++;
            } else {
                uint64_t resume = 0;
                wire_transfer_t tr = WIRE_TRANSFER_WHOLE;
                if (e.size > DELTA_MIN_SIZE &&
                    (live ? same_path && le.size : live_size(st, path)) > DELTA_MIN_SIZE)
                    tr = WIRE_TRANSFER_DELTA;
                else if (stored && (uint64_t)ost.st_size < e.size)
                    resume = (uint64_t)ost.st_size;
                r = add_need(st, &e, tr, resume);
                if (r < 0) {
                    set_err(err, err_size, r, "out of memory");
                    goto out;
                }
                s->state |= H_OBJECT; /* will be */
            }
        }
        wire_msg_free(m);
        m = NULL;
    }
    wire_msg_free(m);
    m = NULL;
    /* Spools: a crash loses the sync anyway. */
    mf_writer_skip_fsync(lw);
    mf_writer_skip_fsync(dw);
    r = mf_writer_commit(lw, (uint8_t[MF_HASH_LEN]){0}, NULL);
    lw = NULL;
    if (r == 0) {
        r = mf_writer_commit(dw, (uint8_t[MF_HASH_LEN]){0}, NULL);
        dw = NULL;
    }
    if (r < 0)
        goto spool_fail;

    /* FileNeed* then FilesNeedEnd. */
    for (size_t i = 0; i < st->n_needs; i++) {
        need_t *n = &st->needs[i];
        wire_msg_t nm = {.type = WIRE_FILE_NEED};
        buf_reset(&sig);
        if (n->transfer == WIRE_TRANSFER_DELTA) {
            int fd = safefs_open(st->live_fd, n->path, O_RDONLY, 0);
            struct stat fst;
            if (fd < 0 || fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode) ||
                signature_of(fd, (uint64_t)fst.st_size, &sig) < 0)
                n->transfer = WIRE_TRANSFER_WHOLE;
            if (fd >= 0)
                close(fd);
        }
        nm.u.file_need.path.data = (const uint8_t *)n->path;
        nm.u.file_need.path.len = strlen(n->path);
        nm.u.file_need.transfer = n->transfer;
        if (n->transfer == WIRE_TRANSFER_DELTA) {
            nm.u.file_need.signature.data = buf_data(&sig);
            nm.u.file_need.signature.len = sig.len;
        } else {
            nm.u.file_need.resume_offset = n->resume;
        }
        need_bytes += n->size - (n->transfer == WIRE_TRANSFER_WHOLE ? n->resume : 0);
        r = msgio_send(io, &nm);
        if (r < 0) {
            set_err(err, err_size, r, "connection lost sending FileNeed: %s", err_str(r));
            goto out;
        }
    }
    stats->needs = st->n_needs;
    wire_msg_t end = {.type = WIRE_FILES_NEED_END};
    end.u.files_need_end.need_count = st->n_needs;
    end.u.files_need_end.need_bytes = need_bytes;
    r = msgio_send(io, &end);
    if (r < 0) {
        set_err(err, err_size, r, "connection lost sending FilesNeedEnd: %s", err_str(r));
        goto out;
    }
    fault_point("controller.listing");
    if (dry_run)
        goto out;

    /* The contents, in the order asked. */
    zd = ZSTD_createDCtx();
    if (!zd || ZSTD_isError(ZSTD_DCtx_setParameter(zd, ZSTD_d_windowLogMax, 25))) {
        r = set_err(err, err_size, -ENOMEM, "out of memory");
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (!md) {
        r = set_err(err, err_size, -ENOMEM, "out of memory");
        goto out;
    }
    pooled = store_pool_start(&pool, st);
    stage_flush_start(st, st->n_needs, need_bytes);
    for (size_t i = 0; i < st->n_needs; i++) {
        r = receive_one(st, io, &st->needs[i], zd, pooled ? &pool : NULL, md, stats, err, err_size);
        if (r < 0)
            goto out;
    }
    pooled = false;
    r = store_pool_finish(&pool, false, err, err_size);
    if (r < 0)
        goto out;
    if (st->flushing)
        stage_flush_last(st);
    st->received = true;
    r = 0;
    goto out;
live_fail:
    r = set_err(err, err_size, lr, "cannot read the live manifest: %s", err_str(lr));
    goto out;
spool_fail:
    set_err(err, err_size, r, "cannot spool the listing: %s", err_str(r));
out:
    /* Cut off: what was received and checked is still written, for the next run to reuse
     * (refused: kept nowhere, see stage_abort). */
    if (pooled)
        store_pool_finish(&pool, st->refused, NULL, 0);
    wire_msg_free(m);
    mf_writer_abort(lw);
    mf_writer_abort(dw);
    mf_reader_close(live);
    ZSTD_freeDCtx(zd);
    EVP_MD_CTX_free(md);
    buf_free(&sig);
    free(prev);
    free(path);
    free(target);
    return r;
}

/* ---- building the new generation ---- */

typedef struct dirmeta {
    char *path;
    uint32_t mode;
    int64_t mtime_ns;
} dirmeta_t;

typedef struct builder {
    stage_t *st;
    bool patch; /* the tree is the prepared one: entries may exist already */
    mf_writer_t *w;
    uint64_t count, total;
    dirmeta_t *dirs;
    size_t n_dirs, cap_dirs;
    char *parent; /* the cached parent directory's path */
    int parent_fd;
    dirref_t *parent_ref; /* parent_fd shared with link jobs (link_later), once it has some */
    store_pool_t *pool;   /* building whole: links are made by the store pool's threads */
    char *live_parent;    /* the same in the live tree, for linking unchanged files by name */
    int live_parent_fd;
    unsigned copy_seq;
    /* Patching: what to fsync before the switch instead of a syncfs (files written, directories
     * changed), paths in the new tree; see finish_dirs. */
    char **sync_paths;
    size_t n_sync, cap_sync;
    /* Patching a watched prepared tree (see "The watch" above): a file the listing keeps as the
     * live manifest has it is taken as prepared, without a look at it. */
    bool trust;
} builder_t;

/* Releases what a builder holds (not its writer). */
static void release_parent(builder_t *b);

static void builder_free(builder_t *b)
{
    release_parent(b);
    free(b->parent);
    if (b->live_parent_fd >= 0)
        close(b->live_parent_fd);
    free(b->live_parent);
    for (size_t i = 0; i < b->n_dirs; i++)
        free(b->dirs[i].path);
    free(b->dirs);
    for (size_t i = 0; i < b->n_sync; i++)
        free(b->sync_paths[i]);
    free(b->sync_paths);
}

/* Notes path (and with parent, its directory) for the fsync pass of a patched tree. */
static int note_sync(builder_t *b, const char *path, bool parent)
{
    const char *slash = strrchr(path, '/');
    size_t n = parent ? (slash ? (size_t)(slash - path) : 0) : strlen(path);
    /* Siblings come together in walk order: skip a repeat of the last one. */
    if (b->n_sync && strlen(b->sync_paths[b->n_sync - 1]) == n &&
        !strncmp(b->sync_paths[b->n_sync - 1], path, n))
        return 0;
    if (b->n_sync == b->cap_sync) {
        size_t cap = b->cap_sync ? 2 * b->cap_sync : 64;
        char **v = realloc(b->sync_paths, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        b->sync_paths = v;
        b->cap_sync = cap;
    }
    if (!(b->sync_paths[b->n_sync] = strndup(path, n)))
        return -ENOMEM;
    b->n_sync++;
    return 0;
}

static struct timespec ts_of(int64_t ns)
{
    struct timespec t = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000;
        t.tv_sec--;
    }
    return t;
}

/* The directory holding path in the new tree, opened beneath the root without symlinks. */
/* Gives up the cached parent directory's descriptor (to the link jobs still using it). */
static void release_parent(builder_t *b)
{
    if (b->parent_ref)
        dirref_put(b->parent_ref);
    else if (b->parent_fd >= 0)
        close(b->parent_fd);
    b->parent_ref = NULL;
    b->parent_fd = -1;
}

static int parent_of(builder_t *b, const char *path, const char **ret_name)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    *ret_name = slash ? slash + 1 : path;
    if (b->parent && strlen(b->parent) == n && !strncmp(b->parent, path, n))
        return b->parent_fd;
    release_parent(b);
    free(b->parent);
    b->parent = strndup(path, n);
    const char *name;
    b->parent_fd = b->parent ? safefs_open_parent(b->st->root_fd, path, &name) : -ENOMEM;
    if (b->parent_fd < 0) {
        free(b->parent);
        b->parent = NULL;
    }
    return b->parent_fd;
}

/* The directory holding path in the live tree (cached like parent_of), or a negative code. */
static int live_parent_of(builder_t *b, const char *path, const char **ret_name)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    *ret_name = slash ? slash + 1 : path;
    if (b->live_parent && strlen(b->live_parent) == n && !strncmp(b->live_parent, path, n))
        return b->live_parent_fd;
    if (b->live_parent_fd >= 0)
        close(b->live_parent_fd);
    free(b->live_parent);
    b->live_parent = strndup(path, n);
    const char *name;
    b->live_parent_fd = b->live_parent ? safefs_open_parent(b->st->live_fd, path, &name) : -ENOMEM;
    if (b->live_parent_fd < 0) {
        free(b->live_parent);
        b->live_parent = NULL;
    }
    return b->live_parent_fd;
}

/* Sets owner, mode and mtime on a file we created (never one a generation holds). */
/* [site] owner cannot be applied (EPERM): said once, and not tried again. Thread-safe, like
 * the reading of st->chown in set_meta: the store pool's threads give files their owner too. */
static void chown_denied(stage_t *st)
{
    pthread_mutex_lock(&st->chown_mu);
    if (st->chown) {
        gen_store_chown_denied(st->g);
        __atomic_store_n(&st->chown, false, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&st->chown_mu);
}

static int set_meta(stage_t *st, int fd, const mf_entry_t *e)
{
    if (__atomic_load_n(&st->chown, __ATOMIC_RELAXED) && fchown(fd, st->uid, st->gid) < 0) {
        if (errno != EPERM)
            return -errno;
        chown_denied(st);
    }
    struct timespec ts[2] = {ts_of(e->mtime_ns), ts_of(e->mtime_ns)};
    if (fchmod(fd, e->mode & 07777) < 0 || futimens(fd, ts) < 0)
        return -errno;
    return 0;
}

/* Whether a live file with this stat can be shared as-is by e. */
static bool same_stat(const stage_t *st, const struct stat *sp, const mf_entry_t *e)
{
    const struct stat s = *sp;
    if (!S_ISREG(s.st_mode) || (uint64_t)s.st_size != e->size)
        return false;
    if ((s.st_mode & 07777) != (e->mode & 07777))
        return false;
    if ((int64_t)s.st_mtim.tv_sec * 1000000000 + s.st_mtim.tv_nsec != e->mtime_ns)
        return false;
    return !st->chown || (s.st_uid == st->uid && s.st_gid == st->gid);
}

/* Whether fd (a live file) can be shared as-is by e. */
static bool same_meta(const stage_t *st, int fd, const mf_entry_t *e)
{
    struct stat s;
    return fstat(fd, &s) == 0 && same_stat(st, &s, e);
}

/* The common case of a sync: e is unchanged at the same path in the live tree. Links it by name
 * through the cached live directory (no open per file), then checks that the link is the inode
 * that was judged, so a file replaced in the live tree meanwhile is never shared. Returns 1 when
 * linked, 0 to fall back to the careful path. */
static int link_unchanged(builder_t *b, const mf_entry_t *e, int dirfd, const char *name)
{
    stage_t *st = b->st;
    struct stat before, after;
    const char *lname;
    int ldir = live_parent_of(b, e->path, &lname);

    if (ldir < 0 || fstatat(ldir, lname, &before, AT_SYMLINK_NOFOLLOW) != 0 ||
        !same_stat(st, &before, e))
        return 0;
    if (linkat(ldir, lname, dirfd, name, 0) != 0)
        return 0;
    if (fstatat(dirfd, name, &after, AT_SYMLINK_NOFOLLOW) == 0 && after.st_ino == before.st_ino &&
        after.st_dev == before.st_dev)
        return 1;
    unlinkat(dirfd, name, 0);
    return 0;
}

static int link_fd(int fd, int dirfd, const char *name)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, p, dirfd, name, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    if (errno == ENOENT && linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
        return 0;
    return -errno;
}

/* The refusal for a live file changed in place on the backup (the write guard's business). */
/* Queues the link of obj as name in the cached parent directory (path is the entry's). */
static int link_later(builder_t *b, const char *obj, const char *path, const char *name)
{
    size_t plen = strlen(path), olen = strlen(obj);
    store_job_t *j;

    if (olen >= sizeof(j->name))
        return -ENAMETOOLONG;
    if (!(j = malloc(sizeof(*j) + plen + 1)))
        return -ENOMEM;
    if (!b->parent_ref) {
        if (!(b->parent_ref = malloc(sizeof(*b->parent_ref)))) {
            free(j);
            return -ENOMEM;
        }
        *b->parent_ref = (dirref_t){.fd = b->parent_fd, .refs = 1};
    }
    *j =
        (store_job_t){.dir = dirref_get(b->parent_ref), .len = plen, .leaf = (size_t)(name - path)};
    memcpy(j->name, obj, olen + 1);
    memcpy(j->data, path, plen + 1);
    return store_pool_put(b->pool, j, NULL, 0);
}

static int refuse_changed_live(char *err, size_t err_size, const char *path)
{
    char q[512];
    return set_err(err, err_size, ERR_REFUSED,
                   "the live copy of '%s' was changed on the backup after it went live; see "
                   "'understudy-controller status'",
                   safefs_quote(path, strlen(path), q, sizeof(q)));
}

/* Places regular file e at dirfd/name: a link to a live file, the received object, or a copy. */
static int place_file(builder_t *b, const mf_entry_t *e, bool live_same_path, int dirfd,
                      const char *name)
{
    stage_t *st = b->st;
    hslot_t *s = htab_find(&st->tab, e->hash);
    int src = -1, r;
    char obj[256];

    /* 1. A live file with this content, shared when its metadata matches. */
    if (live_same_path && st->live_fd >= 0 && link_unchanged(b, e, dirfd, name) == 1)
        return 0;
    const char *cands[2] = {live_same_path ? e->path : NULL,
                            s && (s->state & H_LIVE) ? st->tab.arena + s->path : NULL};
    for (int i = 0; i < 2 && st->live_fd >= 0; i++) {
        if (!cands[i])
            continue;
        int fd = safefs_open(st->live_fd, cands[i], O_RDONLY, 0);
        if (fd < 0)
            continue;
        if (same_meta(st, fd, e)) {
            r = link_fd(fd, dirfd, name);
            close(fd);
            return r;
        }
        if (src < 0)
            src = fd;
        else
            close(fd);
    }
    /* 2. The received object, given its metadata once: when it was received (receive_one,
     * for the listing entry that asked for it, which is normally this one) or now. */
    hash_hex_name(obj, sizeof(obj), GEN_OBJECTS, e->hash);
    if (s && (s->state & H_OBJECT) && !(s->state & H_USED)) {
        bool preset = (s->state & H_META) && s->meta_mode == (e->mode & 07777) &&
                      s->meta_mtime_ns == e->mtime_ns;
        int fd = -1;
        if (!preset)
            fd = openat(st->staging_fd, obj, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (preset || fd >= 0) {
            r = preset ? 0 : set_meta(st, fd, e);
            if (fd >= 0)
                close(fd);
            /* Linked, not moved: the store keeps every received file until the switch has
             * happened (stage_commit empties it then), so a sync that fails or is killed after
             * this point (verification, the switch, its recovery undoing it) leaves the content
             * for the next run instead of making the agent send it again. That costs one unlink
             * per received file after the switch. A later entry with the same content copies it
             * from where it was placed (two paths must not share an inode). */
            if (r == 0 && b->pool)
                r = link_later(b, obj, e->path, name);
            else if (r == 0)
                r = linkat(st->staging_fd, obj, dirfd, name, 0) < 0 ? -errno : 0;
            if (r == 0 && b->patch)
                r = note_sync(b, e->path, false);
            if (r == 0 && arena_add(&st->tab, e->path, &s->placed) == 0)
                s->state |= H_PLACED;
            if (src >= 0)
                close(src);
            s->state |= H_USED;
            return r;
        }
    }
    /* 3. A copy of whatever holds the content (once the link jobs have made every link). */
    if (src < 0 && s && (s->state & H_PLACED)) {
        if (b->pool && (r = store_pool_drain(b->pool, NULL, 0)) < 0)
            return r;
        src = safefs_open(st->root_fd, st->tab.arena + s->placed, O_RDONLY, 0);
    }
    if (src < 0)
        src = openat(st->staging_fd, obj, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0)
        return -ENOENT;
    /* The copy must be of the listed content. The live wp-config.php is the controller's own
     * rewrite of the primary's (dbrecv's prepare hook): copy it whole, and the hook rewrites it
     * again. Any other live copy whose size no longer matches was changed on the backup. */
    struct stat ss;
    uint64_t want = e->size;
    if (fstat(src, &ss) < 0) {
        r = -errno;
        close(src);
        return r;
    }
    if (!strcmp(e->path, GEN_REWRITTEN_FILE)) {
        want = (uint64_t)ss.st_size;
    } else if ((uint64_t)ss.st_size != e->size) {
        close(src);
        return -ESTALE;
    }
    char tmp[64];
    snprintf(tmp, sizeof(tmp), GEN_TMP "/copy.%u", b->copy_seq++);
    int out =
        openat(st->staging_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        r = -errno;
        close(src);
        return r;
    }
    r = 0;
    for (uint64_t left = want; left > 0;) {
        ssize_t n = copy_file_range(src, NULL, out, NULL, left, 0);
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            break;
        }
        left -= (uint64_t)n;
    }
    if (r == 0)
        r = set_meta(st, out, e);
    if (r == 0 && b->patch)
        r = note_sync(b, e->path, false);
    close(src);
    close(out);
    if (r == 0 && renameat(st->staging_fd, tmp, dirfd, name) < 0)
        r = -errno;
    if (r < 0)
        unlinkat(st->staging_fd, tmp, 0);
    return r;
}

/* In a prepared tree, what is at dirfd/name before e is created there: returns 1 when it is e
 * already (an unchanged file whose link still has e's metadata), 2 for a directory that is there
 * already (it stays; finish_dirs gives it e's metadata), 0 when emit must create e (anything
 * else there is removed first), or a negative errno. */
static int patch_entry(builder_t *b, const mf_entry_t *e, bool live_same_path, int dirfd,
                       const char *name)
{
    struct stat s;
    if (fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (e->kind == MF_DIRECTORY && S_ISDIR(s.st_mode))
        return 2;
    if (e->kind == MF_REGULAR && live_same_path && same_stat(b->st, &s, e))
        return 1;
    if (S_ISDIR(s.st_mode))
        return safefs_rm_tree(dirfd, name);
    return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
}

/* A live entry the sync drops: gone from the prepared tree too (a directory with its subtree;
 * entries below a dropped directory went with it). */
static int patch_drop(builder_t *b, const mf_entry_t *e, char *err, size_t err_size)
{
    const char *name;
    int dirfd = parent_of(b, e->path, &name);
    int r = dirfd == -ENOENT ? 0 : dirfd < 0 ? dirfd : safefs_rm_tree(dirfd, name);
    if (r == 0 && dirfd >= 0)
        r = note_sync(b, e->path, true);
    if (r < 0) {
        char q[512];
        return set_err(err, err_size, r, "cannot remove '%s' from the new generation: %s",
                       safefs_quote(e->path, strlen(e->path), q, sizeof(q)), strerror(-r));
    }
    return 0;
}

/* Adds e to the new manifest and creates it in the new tree. */
static int emit(builder_t *b, const mf_entry_t *e, bool live_same_path, bool as_live, char *err,
                size_t err_size)
{
    stage_t *st = b->st;
    const gen_opts_t *o = gen_store_opts(st->g);
    const char *name;
    size_t plen = strlen(e->path);
    int r;

    fault_point("controller.build.entry");
    if (++b->count > o->max_files)
        return refuse(st, err, err_size, e->path, plen, "over [limits] max_files entries");
    if (e->kind == MF_REGULAR && (b->total += e->size) > o->max_total_size)
        return refuse(st, err, err_size, e->path, plen,
                      "the files add up to more than [limits] max_total_size");
    r = mf_writer_add(b->w, e);
    if (r < 0)
        return refuse(st, err, err_size, e->path, plen, "entry out of order");
    /* The prepared link, checked when it was made and watched since. Its directory is the live
     * one's, which the merge emitted before it (build drops what is below a deleted or replaced
     * directory). */
    if (b->trust && as_live && e->kind == MF_REGULAR && strcmp(e->path, GEN_REWRITTEN_FILE) != 0)
        return 0;
    int dirfd = parent_of(b, e->path, &name);
    if (dirfd < 0)
        return refuse(st, err, err_size, e->path, plen,
                      dirfd == -ENOENT ? "its directory is not in the tree"
                                       : "its directory is not a directory of the tree");
    if (b->patch) {
        r = patch_entry(b, e, live_same_path, dirfd, name);
        if (r == 1)
            return 0; /* the prepared link is the file */
        if (r == 0)   /* the directory's entries change: fsynced before the switch */
            r = note_sync(b, e->path, true);
        if (r < 0) {
            char q[512];
            return set_err(err, err_size, r, "cannot replace '%s' in the new generation: %s",
                           safefs_quote(e->path, plen, q, sizeof(q)), strerror(-r));
        }
    }
    switch (e->kind) {
    case MF_DIRECTORY:
        if (mkdirat(dirfd, name, 0700) < 0 && !(b->patch && errno == EEXIST))
            break;
        if (b->n_dirs == b->cap_dirs) {
            size_t cap = b->cap_dirs ? 2 * b->cap_dirs : 64;
            dirmeta_t *d = realloc(b->dirs, cap * sizeof(*d));
            if (!d)
                return set_err(err, err_size, -ENOMEM, "out of memory");
            b->dirs = d;
            b->cap_dirs = cap;
        }
        b->dirs[b->n_dirs].path = strdup(e->path);
        if (!b->dirs[b->n_dirs].path)
            return set_err(err, err_size, -ENOMEM, "out of memory");
        b->dirs[b->n_dirs].mode = e->mode;
        b->dirs[b->n_dirs++].mtime_ns = e->mtime_ns;
        return 0;
    case MF_SYMLINK: {
        struct timespec ts[2] = {ts_of(e->mtime_ns), ts_of(e->mtime_ns)};
        if (symlinkat(e->link_target, dirfd, name) < 0)
            break;
        if (st->chown && fchownat(dirfd, name, st->uid, st->gid, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != EPERM)
                break;
            chown_denied(st);
        }
        if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
            break;
        return 0;
    }
    case MF_REGULAR:
        r = place_file(b, e, live_same_path, dirfd, name);
        if (r == 0)
            return 0;
        if (b->pool && store_pool_error(b->pool, NULL, 0) < 0)
            return store_pool_error(b->pool, err, err_size); /* a link made earlier failed */
        if (r == -ESTALE)
            return refuse_changed_live(err, err_size, e->path);
        errno = -r;
        break;
    }
    char q[512];
    return set_err(err, err_size, -errno, "cannot create '%s' in the new generation: %s",
                   safefs_quote(e->path, plen, q, sizeof(q)), strerror(errno));
}

static bool under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return dir[0] && !strncmp(path, dir, n) && path[n] == '/';
}

/* Merge-joins the live manifest, the listing and the deletions into the new tree. */
static int build(builder_t *b, char *err, size_t err_size)
{
    stage_t *st = b->st;
    const gen_opts_t *o = gen_store_opts(st->g);
    mf_reader_t *L = NULL, *U = NULL, *D = NULL;
    mf_entry_t l, u, d;
    int lr = 0, ur, dr = 0, r;
    char path[PATH_MAX], *skip = NULL;

    snprintf(path, sizeof(path), "%s/staging/" LISTING, o->data);
    r = mf_reader_open(path, &U, NULL);
    if (r == 0 && !st->full) {
        snprintf(path, sizeof(path), "%s/staging/" DELETIONS, o->data);
        r = mf_reader_open(path, &D, NULL);
    }
    /* With a full listing the live tree only lends content: what is not listed is gone. */
    if (r == 0 && gen_store_live_manifest(st->g))
        r = mf_reader_open(gen_store_live_manifest(st->g), &L, NULL);
    if (r < 0)
        return set_err(err, err_size, r, "cannot read the spooled listing: %s", err_str(r));
    ur = mf_reader_next(U, &u);
    if (L)
        lr = mf_reader_next(L, &l);
    if (D)
        dr = mf_reader_next(D, &d);
    while (r == 0 && (ur == 1 || lr == 1)) {
        int c = ur != 1 ? -1 : lr != 1 ? 1 : mf_path_cmp(l.path, u.path);
        if (c < 0) {
            /* Only in the live tree: kept unless deleted. */
            bool below = skip && under(l.path, skip);
            bool drop = st->full || below;
            while (!drop && dr == 1 && mf_path_cmp(d.path, l.path) < 0)
                dr = mf_reader_next(D, &d);
            if (!drop && dr == 1 && !strcmp(d.path, l.path))
                drop = true;
            if (drop && l.kind == MF_DIRECTORY && !below) {
                free(skip);
                skip = strdup(l.path);
                if (!skip)
                    r = -ENOMEM;
            }
            if (!drop && r == 0)
                r = emit(b, &l, true, true, err, err_size);
            else if (r == 0 && b->patch && !below) /* below: went with its directory */
                r = patch_drop(b, &l, err, err_size);
            lr = mf_reader_next(L, &l);
        } else if (c > 0) {
            if (skip && under(u.path, skip))
                r = refuse(st, err, err_size, u.path, strlen(u.path),
                           "listed under a directory that is deleted or replaced");
            else
                r = emit(b, &u, false, false, err, err_size);
            ur = mf_reader_next(U, &u);
        } else {
            /* Changed: a live directory replaced by something else loses its subtree. */
            if (l.kind == MF_DIRECTORY && u.kind != MF_DIRECTORY) {
                free(skip);
                skip = strdup(l.path);
                if (!skip)
                    r = -ENOMEM;
            }
            bool same = l.kind == MF_REGULAR && u.kind == MF_REGULAR &&
                        !memcmp(l.hash, u.hash, MF_HASH_LEN);
            bool as_live = same && l.mode == u.mode && l.mtime_ns == u.mtime_ns && l.size == u.size;
            if (r == 0)
                r = emit(b, &u, same, as_live, err, err_size);
            ur = mf_reader_next(U, &u);
            lr = mf_reader_next(L, &l);
        }
        if (r == 0 && (ur < 0 || lr < 0 || dr < 0))
            r = set_err(err, err_size, ERR_PROTOCOL, "a manifest is corrupt");
        if (r == -ENOMEM)
            set_err(err, err_size, r, "out of memory");
    }
    free(skip);
    mf_reader_close(L);
    mf_reader_close(U);
    mf_reader_close(D);
    return r;
}

/* Whether fd (a directory of a patched tree) already has e's metadata. */
static bool dir_meta_same(const stage_t *st, int fd, const mf_entry_t *e)
{
    struct stat s;
    return fstat(fd, &s) == 0 && (s.st_mode & 07777) == (e->mode & 07777) &&
           (int64_t)s.st_mtim.tv_sec * 1000000000 + s.st_mtim.tv_nsec == e->mtime_ns &&
           (!st->chown || (s.st_uid == st->uid && s.st_gid == st->gid));
}

/* Directory modes, owners and mtimes, deepest first, once nothing more is created in them. A
 * patched tree then gets its fsync pass: every file the patch wrote and every directory it
 * changed, the root last (the prepared tree itself was made durable when it was prepared). Only
 * after all metadata is set, so that the first fsync commits it all and the rest find little
 * to do. */
static int finish_dirs(builder_t *b, char *err, size_t err_size)
{
    stage_t *st = b->st;
    char q[512];
    int r;
    for (size_t i = b->n_dirs; i-- > 0;) {
        dirmeta_t *d = &b->dirs[i];
        mf_entry_t e = {.path = d->path, .mode = d->mode, .mtime_ns = d->mtime_ns};
        int fd = safefs_open(st->root_fd, d->path, O_RDONLY | O_DIRECTORY, 0);
        r = fd;
        if (fd >= 0 && !(b->patch && dir_meta_same(st, fd, &e))) {
            r = set_meta(st, fd, &e);
            if (r == 0 && b->patch)
                r = note_sync(b, d->path, false);
        }
        if (fd >= 0)
            close(fd);
        if (r < 0)
            return set_err(err, err_size, r, "cannot set the metadata of '%s': %s",
                           safefs_quote(d->path, strlen(d->path), q, sizeof(q)), strerror(-r));
    }
    if (st->chown && fchown(st->root_fd, st->uid, st->gid) < 0 && errno == EPERM)
        gen_store_chown_denied(st->g);
    if (fchmod(st->root_fd, 0755) < 0)
        return set_err(err, err_size, -errno, "cannot set the metadata of the new root: %s",
                       strerror(errno));
    /* The fsync pass, a batch of paths at a time: the writeback of each file of a batch starts
     * first, so that its fsyncs wait for writes in flight together, not one after another. */
    for (size_t i = 0; b->patch && i < b->n_sync; i += SYNC_BATCH) {
        size_t n = b->n_sync - i < SYNC_BATCH ? b->n_sync - i : SYNC_BATCH;
        int fds[SYNC_BATCH];
        r = 0;
        for (size_t k = 0; k < n; k++) {
            const char *p = b->sync_paths[i + k];
            fds[k] = p[0] ? safefs_open(st->root_fd, p, O_RDONLY, 0) : -1;
            if (fds[k] >= 0)
                (void)sync_file_range(fds[k], 0, 0, SYNC_FILE_RANGE_WRITE);
        }
        for (size_t k = 0; k < n; k++) {
            const char *p = b->sync_paths[i + k];
            if (r == 0) {
                r = p[0] ? fds[k] : 0;
                if (fds[k] >= 0 && fsync(fds[k]) < 0)
                    r = -errno;
                if (r < 0)
                    set_err(err, err_size, r, "cannot fsync '%s' of the new generation: %s",
                            safefs_quote(p, strlen(p), q, sizeof(q)), strerror(-r));
            }
            if (fds[k] >= 0)
                close(fds[k]);
        }
        if (r < 0)
            return r;
    }
    if (b->patch && fsync(st->root_fd) < 0)
        return set_err(err, err_size, -errno, "cannot fsync the new generation's root: %s",
                       strerror(errno));
    return 0;
}

/* ---- the prepared tree ---- */

#define NEXT_ROOT GEN_NEXT_DIR "/root"
#define NEXT_BASE GEN_NEXT_DIR "/base"

/* What can change a live file or a directory's entries, seen from the directory's watch. */
#define WATCH_MASK                                                                                 \
    (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |              \
     IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* Adds dirfd's directory to the watch; false when it cannot (no /proc, the watch limit). */
static bool watch_dir(int watch_fd, int dirfd)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/self/fd/%d", dirfd);
    return inotify_add_watch(watch_fd, p, WATCH_MASK) >= 0;
}

/* Whether anything happened under the watch since it began (reads it empty). */
static bool watch_fired(int watch_fd)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool fired = false;
    for (;;) {
        ssize_t n = read(watch_fd, buf, sizeof(buf));
        if (n > 0) {
            fired = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return fired || !(n < 0 && errno == EAGAIN);
    }
}

typedef struct prep_job {
    gen_store_t *g;
    uint64_t base;
    char *manifest;  /* the base generation's manifest */
    int staging_fd;  /* the store's */
    int live_fd;     /* the base generation's root, owned */
    bool chown;      /* [site] owner as the store had it when the job began */
    bool clean_only; /* the tree is ready: only remove_set_aside */
    uid_t uid;
    gid_t gid;
} prep_job_t;

/* Gives the prepared directories the live generation's metadata, deepest first, so that a sync
 * sets (and fsyncs) only the directories it changes. Run as root, the mode is the listed one;
 * otherwise the owner keeps rwx so the patch can still write, and finish_dirs corrects those.
 * Errors are left for finish_dirs too. */
static void prep_dirs(const prep_job_t *j, int root_fd, const dirmeta_t *dirs, size_t n)
{
    bool root = geteuid() == 0;
    for (size_t i = n; i-- > 0;) {
        int fd = safefs_open(root_fd, dirs[i].path, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
            continue;
        struct timespec ts[2] = {ts_of(dirs[i].mtime_ns), ts_of(dirs[i].mtime_ns)};
        if (j->chown)
            (void)fchown(fd, j->uid, j->gid);
        (void)fchmod(fd, (dirs[i].mode & 07777) | (root ? 0 : 0700));
        (void)futimens(fd, ts);
        close(fd);
    }
}

/* The name of a generation retention set aside (old.N) in staging, if there is one. */
static bool find_old(int staging_fd, char *name, size_t size)
{
    int fd = openat(staging_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    bool found = false;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    while (!found && (de = readdir(d)))
        if ((found = !strncmp(de->d_name, GEN_OLD_PREFIX, strlen(GEN_OLD_PREFIX))))
            snprintf(name, size, "%s", de->d_name);
    closedir(d);
    return found;
}

/* Whether staging holds what a switch set aside: the store of the generation that went live
 * (objects.used) or generations retention dropped (old.N). */
static bool have_set_aside(int staging_fd)
{
    struct stat s;
    char name[256];
    return fstatat(staging_fd, GEN_OBJECTS_USED, &s, AT_SYMLINK_NOFOLLOW) == 0 ||
           find_old(staging_fd, name, sizeof(name));
}

/* Removes what have_set_aside finds, one tree at a time, until cancelled: the rest of the job,
 * which a sync does not wait for (gen_store_bg_finish). What is left is removed by the next. */
static void remove_set_aside(const prep_job_t *j)
{
    const atomic_bool *stop = gen_store_bg_cancel_flag(j->g);
    char name[256];
    gen_store_bg_interruptible(j->g);
    if (safefs_rm_tree_until(j->staging_fd, GEN_OBJECTS_USED, stop) < 0)
        return;
    while (!gen_store_bg_cancelled(j->g) && find_old(j->staging_fd, name, sizeof(name)))
        if (safefs_rm_tree_until(j->staging_fd, name, stop) < 0)
            return;
}

static void watch_drop(int *watch_fd)
{
    if (*watch_fd >= 0)
        close(*watch_fd);
    *watch_fd = -1;
}

static void prep_job_free(prep_job_t *j)
{
    if (!j)
        return;
    if (j->live_fd >= 0)
        close(j->live_fd);
    free(j->manifest);
    free(j);
}

/* Whether staging/next is a complete link copy of generation base. */
static bool next_ready(int staging_fd, uint64_t base)
{
    char want[32], have[32];
    snprintf(want, sizeof(want), "%" PRIu64 "\n", base);
    return base && safefs_read_small(staging_fd, NEXT_BASE, have, sizeof(have)) > 0 &&
           !strcmp(have, want);
}

/* The background job: staging/next as a link copy of the base generation, driven by its
 * manifest (not by what is on disk, so nothing the backup added to the live tree comes along).
 * Errors only leave entries out: the sync that uses the tree creates what is missing. Only the
 * last step, base, makes the tree usable; cut off before it, the tree is discarded. */
static void prep_main(void *arg)
{
    prep_job_t *j = arg;
    stage_t ps = {.g = j->g, .staging_fd = j->staging_fd, .root_fd = -1, .live_fd = j->live_fd};
    builder_t b = {.st = &ps, .parent_fd = -1, .live_parent_fd = -1};
    mf_reader_t *rd = NULL;
    mf_entry_t e;
    uint64_t linked = 0;
    int r = -1;
    int watch;
    htab_t *tab = NULL;

    if (j->clean_only) {
        remove_set_aside(j);
        prep_job_free(j);
        return;
    }
    /* The watch: every live directory is watched before its files are linked and checked.
     * UNDERSTUDY_TEST_NO_WATCH (tests) makes a job without, as without inotify. */
    watch = getenv("UNDERSTUDY_TEST_NO_WATCH") ? -1 : inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (watch >= 0 && !watch_dir(watch, j->live_fd))
        watch_drop(&watch);
    ps.chown = j->chown;
    ps.uid = j->uid;
    ps.gid = j->gid;
    safefs_rm_tree(j->staging_fd, GEN_NEXT_DIR);
    if (mkdirat(j->staging_fd, GEN_NEXT_DIR, 0700) < 0 ||
        mkdirat(j->staging_fd, NEXT_ROOT, 0700) < 0 ||
        (ps.root_fd = openat(j->staging_fd, NEXT_ROOT,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        r = -errno;
        goto report;
    }
    r = mf_reader_open(j->manifest, &rd, NULL);
    /* The content table the next sync needs (load_live_tab), while the manifest is read. */
    tab = calloc(1, sizeof(*tab));
    while (r == 0 && (r = mf_reader_next(rd, &e)) == 1) {
        const char *name, *lname;
        if (gen_store_bg_cancelled(j->g)) {
            r = -ECANCELED;
            break;
        }
        r = 0;
        if (tab && e.kind == MF_REGULAR && htab_add_live(tab, &e) < 0) {
            htab_destroy(tab);
            tab = NULL;
        }
        if (e.kind == MF_SYMLINK) /* cheap to make at sync time, and rare */
            continue;
        int dirfd = parent_of(&b, e.path, &name);
        if (dirfd < 0) {
            watch_drop(&watch);
            continue;
        }
        if (e.kind == MF_DIRECTORY) {
            if (mkdirat(dirfd, name, 0700) < 0) {
                watch_drop(&watch);
                continue;
            }
            if (watch >= 0) {
                int lfd = safefs_open(j->live_fd, e.path, O_RDONLY | O_DIRECTORY, 0);
                if (lfd < 0 || !watch_dir(watch, lfd))
                    watch_drop(&watch);
                if (lfd >= 0)
                    close(lfd);
            }
            if (b.n_dirs == b.cap_dirs) {
                size_t cap = b.cap_dirs ? 2 * b.cap_dirs : 64;
                dirmeta_t *d = realloc(b.dirs, cap * sizeof(*d));
                if (!d) {
                    r = -ENOMEM;
                    break;
                }
                b.dirs = d;
                b.cap_dirs = cap;
            }
            dirmeta_t *d = &b.dirs[b.n_dirs];
            if (!(d->path = strdup(e.path))) {
                r = -ENOMEM;
                break;
            }
            d->mode = e.mode;
            d->mtime_ns = e.mtime_ns;
            b.n_dirs++;
            continue;
        }
        int ldir = live_parent_of(&b, e.path, &lname);
        if (ldir >= 0 && linkat(ldir, lname, dirfd, name, 0) == 0) {
            linked++;
            /* Checked once here, after its directory's watch began: the patch trusts it. */
            struct stat s;
            if (watch >= 0 && strcmp(e.path, GEN_REWRITTEN_FILE) != 0 &&
                (fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0 || !same_stat(&ps, &s, &e)))
                watch_drop(&watch);
        } else {
            watch_drop(&watch);
        }
    }
    if (r == 0 && tab) {
        gen_store_put_tab(j->g, tab, j->base, htab_destroy);
        tab = NULL;
    }
    /* Durable before it counts as prepared, so that a sync patching it needs to fsync only
     * what it changes. An fsync per directory rather than a syncfs: the tree is only directory
     * entries and metadata, and a syncfs would also wait for every other program's writes. */
    if (r == 0)
        prep_dirs(j, ps.root_fd, b.dirs, b.n_dirs);
    for (size_t i = 0; r == 0 && i <= b.n_dirs; i++) {
        int fd = i < b.n_dirs ? safefs_open(ps.root_fd, b.dirs[i].path, O_RDONLY | O_DIRECTORY, 0)
                              : dup(ps.root_fd);
        r = fd < 0 ? (i < b.n_dirs ? fd : -errno) : fsync(fd) < 0 ? -errno : 0;
        if (fd >= 0)
            close(fd);
    }
    if (r == 0) {
        char text[32];
        int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", j->base);
        int nfd =
            openat(j->staging_fd, GEN_NEXT_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (watch >= 0 && !watch_fired(watch)) {
            gen_store_put_watch(j->g, watch, j->base);
            watch = -1;
        }
        r = nfd < 0 ? -errno : safefs_write_atomic(nfd, "base", text, (size_t)n, 0600);
        if (nfd >= 0)
            close(nfd);
    }
report:
    watch_drop(&watch);
    if (r == 0)
        log_debug("prepared the tree of the next generation (%" PRIu64 " files linked from "
                  "generation %" PRIu64 ")",
                  linked, j->base);
    else if (r != -ECANCELED)
        log_warn("cannot prepare the tree of the next generation under %s/staging/" GEN_NEXT_DIR
                 " (%s): the next sync builds it whole, and the one after it prepares again",
                 gen_store_opts(j->g)->data, err_str(r));
    mf_reader_close(rd);
    if (tab)
        htab_destroy(tab);
    builder_free(&b);
    if (ps.root_fd >= 0)
        close(ps.root_fd);
    if (r != -ECANCELED)
        remove_set_aside(j);
    prep_job_free(j);
}

void stage_prepare_next(gen_store_t *g)
{
    uint64_t live = gen_store_live(g);
    const char *manifest = gen_store_live_manifest(g);
    int staging_fd = gen_store_staging_fd(g);

    bool ready = !live || !manifest || next_ready(staging_fd, live);
    if (ready && !have_set_aside(staging_fd))
        return;
    prep_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->g = g;
    j->live_fd = -1;
    j->clean_only = ready;
    if (ready) {
        j->staging_fd = staging_fd;
        if (!gen_store_bg_start(g, prep_main, j))
            prep_job_free(j);
        return;
    }
    j->base = live;
    j->staging_fd = staging_fd;
    j->chown = gen_store_owner(g, &j->uid, &j->gid);
    j->manifest = strdup(manifest);
    j->live_fd = gen_store_open_live_root(g);
    if (!j->manifest || j->live_fd < 0 || !gen_store_bg_start(g, prep_main, j))
        prep_job_free(j);
}

/* The files of a patched tree that were taken on trust (all regular files but the rewritten one),
 * checked against the new manifest at manifest_path. */
static int check_trusted(builder_t *b, const char *manifest_path, char *err, size_t err_size)
{
    mf_reader_t *rd = NULL;
    mf_entry_t e;
    int r = mf_reader_open(manifest_path, &rd, NULL);
    if (r < 0)
        return set_err(err, err_size, r, "cannot read %s: %s", manifest_path, err_str(r));
    while ((r = mf_reader_next(rd, &e)) == 1) {
        const char *name;
        struct stat s;
        if (e.kind != MF_REGULAR || !strcmp(e.path, GEN_REWRITTEN_FILE))
            continue;
        int dirfd = parent_of(b, e.path, &name);
        if (dirfd < 0 || fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0 ||
            !same_stat(b->st, &s, &e)) {
            r = refuse_changed_live(err, err_size, e.path);
            break;
        }
    }
    mf_reader_close(rd);
    if (r < 0 && r != ERR_REFUSED)
        return set_err(err, err_size, r, "cannot read %s: %s", manifest_path, err_str(r));
    return r < 0 ? r : 0;
}

/* Swaps the stage's empty tree for the prepared one when that is a copy of the live generation
 * and the sync's changes are relative to it; *ret_patch tells which tree the builder has. Returns
 * 0 or a negative code with err. */
static int use_prepared(stage_t *st, bool *ret_patch, char *err, size_t err_size)
{
    *ret_patch = false;
    if (st->full || st->verify_live || !next_ready(st->staging_fd, gen_store_live(st->g)))
        return 0;
    /* base goes first: a tree on its way to staging/gen is never taken for a prepared one. */
    if (unlinkat(st->staging_fd, NEXT_BASE, 0) < 0)
        return 0;
    close(st->root_fd);
    st->root_fd = -1;
    safefs_rm_tree(st->staging_fd, GEN_STAGE_DIR);
    bool moved = renameat(st->staging_fd, GEN_NEXT_DIR, st->staging_fd, GEN_STAGE_DIR) == 0;
    if (!moved && (mkdirat(st->staging_fd, GEN_STAGE_DIR, 0755) < 0 ||
                   mkdirat(st->staging_fd, GEN_STAGE_DIR "/root", 0755) < 0))
        return set_err(err, err_size, -errno, "cannot create the staging area: %s",
                       strerror(errno));
    st->root_fd = openat(st->staging_fd, GEN_STAGE_DIR "/root",
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (st->root_fd < 0)
        return set_err(err, err_size, -errno, "cannot open the staged root: %s", strerror(errno));
    *ret_patch = moved;
    return 0;
}

int stage_commit(stage_t *st, const uint8_t expected_digest[MF_HASH_LEN], uint64_t *ret_generation,
                 char *err, size_t err_size)
{
    const gen_opts_t *o = gen_store_opts(st->g);
    const uint8_t *live_digest = gen_store_live_digest(st->g);
    builder_t b = {.st = st, .parent_fd = -1, .live_parent_fd = -1};
    store_pool_t pool;
    uint8_t digest[MF_HASH_LEN];
    char path[PATH_MAX];
    int watch = -1, mf_fd = -1, r;

    if (!st->received) {
        r = set_err(err, err_size, ERR_INTERNAL, "stage_commit before the files were received");
        goto out;
    }
    if (live_digest && !memcmp(live_digest, expected_digest, MF_HASH_LEN)) {
        *ret_generation = gen_store_live(st->g);
        r = 1;
        goto out;
    }
    /* A sync that comes while the tree is being prepared waits for it: the rest of the job
     * would cost it as much as building whole. Removing what earlier syncs set aside is cut
     * short instead. */
    gen_store_bg_finish(st->g);
    r = use_prepared(st, &b.patch, err, err_size);
    watch = gen_store_take_watch(st->g, gen_store_live(st->g));
    b.trust = b.patch && watch >= 0;
    if (r == 0)
        r = load_live_tab(st, NULL, err, err_size);
    if (r < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/staging/" GEN_STAGE_DIR "/manifest", o->data);
    r = mf_writer_open(path, &b.w);
    if (r < 0) {
        set_err(err, err_size, r, "cannot write %s: %s", path, err_str(r));
        goto out;
    }
    /* Building whole, the links are made by the store pool's threads (link_later). */
    if (!b.patch && store_pool_start(&pool, st))
        b.pool = &pool;
    r = build(&b, err, err_size);
    if (b.pool) {
        int pr = store_pool_finish(&pool, r < 0, err, err_size);
        b.pool = NULL;
        if (r == 0)
            r = pr;
    }
    if (r < 0)
        goto out;
    /* A tree built whole is made durable by gen_store_install's syncfs, the manifest with it; a
     * patched tree by an fsync of everything the patch wrote (place_file, finish_dirs), and of
     * the manifest, whose writeback starts now and is waited for once the rest is done. */
    mf_writer_skip_fsync(b.w);
    r = mf_writer_commit(b.w, digest, NULL);
    b.w = NULL;
    if (r == 0 && b.patch) {
        mf_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (mf_fd < 0)
            r = -errno;
        else
            (void)sync_file_range(mf_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    if (r < 0) {
        set_err(err, err_size, r, "cannot write %s: %s", path, err_str(r));
        goto out;
    }
    if (memcmp(digest, expected_digest, MF_HASH_LEN) != 0) {
        char a[2 * MF_HASH_LEN + 1], x[2 * MF_HASH_LEN + 1];
        mf_hash_hex(digest, a);
        mf_hash_hex(expected_digest, x);
        st->refused = true;
        r = set_err(err, err_size, ERR_REFUSED,
                    "the tree built (digest %.16s...) is not the agent's (digest %.16s...): "
                    "refusing to switch",
                    a, x);
        goto out;
    }
    fault_point("controller.files.verified");
    /* The database side's changes (wp-config.php), then the directories' final owners, modes
     * and mtimes: a directory given to [site] owner may no longer be writable by us. */
    r = gen_store_prepare(st->g, st->gen, st->root_fd, err, err_size);
    if (r == 0)
        r = finish_dirs(&b, err, err_size);
    /* Last, the watch: when anything happened in the live tree since the prepared one was
     * checked, every file taken on trust is looked at after all. */
    if (r == 0 && b.trust && watch_fired(watch))
        r = check_trusted(&b, path, err, err_size);
    if (r == 0 && mf_fd >= 0 && fsync(mf_fd) < 0)
        r = set_err(err, err_size, -errno, "cannot fsync %s: %s", path, strerror(errno));
    if (r < 0)
        goto out;
    close(st->root_fd);
    st->root_fd = -1;
    stage_flush_join(st);
    r = gen_store_install(st->g, st->gen, digest, b.patch, err, err_size);
    if (r < 0)
        goto out;
    *ret_generation = st->gen;
    /* Everything received is linked into the generation now: the store is no longer needed.
     * Removing it is one unlink per received file; set it aside (one rename) and leave that to
     * the preparation of the next tree, which runs in the background. When the previous one is
     * still there, remove this one now. */
    if (renameat(st->staging_fd, GEN_OBJECTS, st->staging_fd, GEN_OBJECTS_USED) < 0)
        safefs_rm_tree(st->staging_fd, GEN_OBJECTS);
    safefs_rm_tree(st->staging_fd, GEN_PARTIAL);
    make_store(st->staging_fd);
    (void)mkdirat(st->staging_fd, GEN_PARTIAL, 0700);
    stage_prepare_next(st->g);
out:
    if (watch >= 0)
        close(watch);
    if (mf_fd >= 0)
        close(mf_fd);
    mf_writer_abort(b.w);
    builder_free(&b);
    stage_abort(st);
    return r;
}
