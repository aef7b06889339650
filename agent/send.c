/* The files phase, second half: the listing, the controller's needs and the content.
 *
 * Listing: a full listing streams state_dir/manifest.new as FileEntry messages; an incremental
 * one merge-joins the saved manifest (the controller's live tree) with manifest.new and sends
 * only entries that are new or differ in a digested field (kind, mode, mtime, size, hash, link
 * target), plus deletions: FileEntry{path, kind of the old entry, deleted}. A deleted directory
 * is sent once and its children are not; an entry whose kind changed is sent as the new entry
 * alone (a directory that became a file or symlink implies its subtree is gone). Both readers
 * are streams: memory is constant.
 *
 * Needs: FileNeed messages are checked against manifest.new (a regular file of this listing;
 * anything else is a protocol error, so a controller cannot read files outside the listing or
 * through a symlink) and spooled to an unlinked temp file in state_dir with their signatures,
 * so tens of thousands of needs cost disk, not memory. Needs in walk order are checked in one
 * forward pass; one out of order restarts the lookup from the top.
 *
 * Content: each file is opened beneath the root one component at a time with O_NOFOLLOW and
 * must still have the listed size and mtime; its bytes are hashed as they are sent and the last
 * chunk goes only once the hash matches the listing, so what the controller receives is exactly
 * what was listed. A file that changed since the scan fails the sync (UV_EAGAIN, naming it): the
 * next run picks the change up. WHOLE: chunks of CHUNK bytes of input, each one zstd frame when
 * that is smaller (names of already-compressed formats are not tried, and a file whose first
 * chunk does not shrink is sent raw). DELTA: librsync's delta of the file against the
 * controller's signature, in FileDelta pieces of at most CHUNK bytes.
 */
#include "files-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librsync.h>
#include <openssl/evp.h>
#include <uv.h>
#include <zstd.h>

#include "err.h"
#include "fault.h"
#include "log.h"

#define CHUNK              (256u * 1024)
#define ZSTD_LEVEL         3
#define NEED_RECV_TIMEOUT  (10u * 60 * 1000)
#define PROGRESS_PERIOD_NS 100000000

typedef struct sender {
    files_scan_t *s;
    const msgio_t *io;
    files_stats_t *st;
    char *err;
    size_t err_size;
    bool tty;
    int rootfd;
    int dirfd; /* the directory of the last need opened (open_beneath), path dir[0..dir_len) */
    char dir[MF_PATH_MAX];
    size_t dir_len;
    uint8_t *in, *out;
    size_t out_cap;
    ZSTD_CCtx *cctx;
    EVP_MD_CTX *md;
    uint64_t need_count, need_bytes, done_files, done_bytes;
    int64_t last_draw, bw_start;
    uint64_t bw_bytes;
    /* The manifest the listing came from, which holds every entry the controller may ask for:
     * the change spool of an incremental listing (small), else the whole new manifest. */
    const char *listed_path;
} sender_t;

/* One spooled need. */
typedef struct need {
    char path[MF_PATH_MAX];
    wire_transfer_t transfer;
    uint64_t resume_offset, size;
    int64_t mtime_ns;
    uint8_t hash[MF_HASH_LEN];
    uint8_t *sig;
    uint32_t sig_len;
} need_t;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

bool files_incompressible_name(const char *path)
{
    static const char *const exts[] = {
        "jpg",  "jpeg", "png",  "webp", "gif",  "avif",   "heic",  "heif", "jxl",  "mp4",
        "m4v",  "mov",  "webm", "mkv",  "avi",  "mp3",    "m4a",   "ogg",  "oga",  "ogv",
        "opus", "flac", "aac",  "zip",  "gz",   "tgz",    "bz2",   "xz",   "txz",  "zst",
        "7z",   "rar",  "br",   "lz4",  "lzma", "woff",   "woff2", "jar",  "docx", "xlsx",
        "pptx", "odt",  "ods",  "epub", "apk",  "wpress", "swf",
    };
    const char *base = strrchr(path, '/');
    const char *dot = strrchr(base ? base : path, '.');
    if (!dot)
        return false;
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
        if (!strcasecmp(dot + 1, exts[i]))
            return true;
    return false;
}

static wire_bytes_t str_bytes(const char *s)
{
    return (wire_bytes_t){.data = (const uint8_t *)s, .len = s ? strlen(s) : 0};
}

/* Writes path for a person: control bytes and backslashes escaped, other bytes as they are. */
static void print_path(FILE *f, const char *path)
{
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p == '\\')
            fputs("\\\\", f);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
}

static void draw(sender_t *sd, bool final)
{
    char bar[31];
    int64_t now;
    if (!sd->tty)
        return;
    now = now_ns();
    if (!final && now - sd->last_draw < PROGRESS_PERIOD_NS)
        return;
    sd->last_draw = now;
    if (final) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        return;
    }
    double frac = sd->need_bytes   ? (double)sd->done_bytes / (double)sd->need_bytes
                  : sd->need_count ? (double)sd->done_files / (double)sd->need_count
                                   : 1.0;
    if (frac > 1)
        frac = 1;
    int fill = (int)(frac * 30);
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(30 - fill));
    bar[30] = '\0';
    fprintf(stderr, "\r%3d%% [%s] %" PRIu64 "/%" PRIu64 " files, %.1f MiB sent\033[K",
            (int)(frac * 100), bar, sd->done_files, sd->need_count,
            (double)(sd->st->bytes_content + sd->st->bytes_delta) / (1024.0 * 1024.0));
    fflush(stderr);
}

/* Sleeps as long as needed to keep the average rate at the bandwidth limit. */
static void throttle(sender_t *sd, uint64_t bytes)
{
    uint64_t limit = sd->s->bandwidth_limit;
    if (!limit)
        return;
    sd->bw_bytes += bytes;
    int64_t due = sd->bw_start + (int64_t)((double)sd->bw_bytes * 1e9 / (double)limit);
    int64_t wait = due - now_ns();
    if (wait > 0) {
        struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

static int send_msg(sender_t *sd, const wire_msg_t *m, uint64_t payload)
{
    int r = msgio_send(sd->io, m);
    if (r < 0) {
        snprintf(sd->err, sd->err_size, "connection to the controller lost: %s", err_str(r));
        return r;
    }
    throttle(sd, payload);
    return 0;
}

/* ---- listing ---- */

static int send_entry(sender_t *sd, const mf_entry_t *e, bool deleted)
{
    wire_msg_t m = {.type = WIRE_FILE_ENTRY};
    wire_file_entry_t *fe = &m.u.file_entry;
    fe->path = str_bytes(e->path);
    fe->kind = (wire_file_kind_t)e->kind;
    fe->deleted = deleted;
    if (!deleted) {
        fe->mode = e->mode & 07777;
        fe->mtime_ns = e->mtime_ns;
        if (e->kind == MF_REGULAR) {
            fe->size = e->size;
            fe->hash = (wire_bytes_t){.data = e->hash, .len = MF_HASH_LEN};
        }
        if (e->kind == MF_SYMLINK)
            fe->link_target = str_bytes(e->link_target);
    } else if (sd->s->dry_run) {
        fputs("delete ", stdout);
        print_path(stdout, e->path);
        fputc('\n', stdout);
    }
    sd->st->entries_sent++;
    return send_msg(sd, &m, fe->path.len + fe->link_target.len + fe->hash.len + 24);
}

static bool entry_differs(const mf_entry_t *o, const mf_entry_t *n)
{
    if (o->kind != n->kind || o->mode != n->mode || o->mtime_ns != n->mtime_ns)
        return true;
    if (n->kind == MF_REGULAR)
        return o->size != n->size || memcmp(o->hash, n->hash, MF_HASH_LEN) != 0;
    if (n->kind == MF_SYMLINK)
        return strcmp(o->link_target ? o->link_target : "", n->link_target ? n->link_target : "");
    return false;
}

static bool path_under(const char *path, const char *dir, size_t dir_len)
{
    return !strncmp(path, dir, dir_len) && path[dir_len] == '/';
}

static int reader_fail(sender_t *sd, const char *path, int r)
{
    snprintf(sd->err, sd->err_size, "cannot read %s: %s", path, err_str(r));
    return r;
}

static int send_listing(sender_t *sd, bool full)
{
    mf_reader_t *ro = NULL, *rn = NULL;
    mf_entry_t o, n;
    char skip[MF_PATH_MAX];
    size_t skip_len = 0;
    int ho = 0, hn, r;

    /* No entry differs from the saved manifest (the scan then kept no change spools), or the
     * same tree digest (it covers every field entry_differs compares): neither manifest needs
     * reading. */
    if (!full &&
        (sd->s->same_as_saved ||
         (sd->s->have_base_digest && !memcmp(sd->s->base_digest, sd->s->digest, MF_HASH_LEN))))
        goto end;
    /* Incremental: the scan's own record of what differs (files.c), when it kept one, is the
     * two manifests without the entries they share; the same merge below lists the same. */
    bool changes = !full && sd->s->have_changes;
    const char *new_path = changes ? sd->s->chg_new_path : sd->s->new_path;
    const char *old_path = changes ? sd->s->chg_old_path : sd->s->manifest_path;
    sd->listed_path = new_path;
    r = mf_reader_open(new_path, &rn, NULL);
    if (r < 0)
        return reader_fail(sd, new_path, r);
    if (!full) {
        r = mf_reader_open(old_path, &ro, NULL);
        if (r < 0) {
            mf_reader_close(rn);
            return reader_fail(sd, old_path, r);
        }
        ho = mf_reader_next(ro, &o);
    }
    hn = mf_reader_next(rn, &n);
    for (;;) {
        if (ho < 0 || hn < 0) {
            r = reader_fail(sd, ho < 0 ? old_path : new_path, ho < 0 ? ho : hn);
            break;
        }
        if (ho == 0 && hn == 0)
            break;
        if (ho > 0 && skip_len && path_under(o.path, skip, skip_len)) {
            ho = mf_reader_next(ro, &o);
            continue;
        }
        int c = ho == 0 ? 1 : hn == 0 ? -1 : mf_path_cmp(o.path, n.path);
        bool gone_dir = false;
        if (c < 0) {
            r = send_entry(sd, &o, true);
            gone_dir = o.kind == MF_DIRECTORY;
        } else if (c > 0) {
            r = send_entry(sd, &n, false);
        } else {
            r = entry_differs(&o, &n) ? send_entry(sd, &n, false) : 0;
            gone_dir = o.kind == MF_DIRECTORY && n.kind != MF_DIRECTORY;
        }
        if (r < 0)
            break;
        if (gone_dir) {
            skip_len = strlen(o.path);
            memcpy(skip, o.path, skip_len + 1);
        }
        if (c <= 0)
            ho = mf_reader_next(ro, &o);
        if (c >= 0)
            hn = mf_reader_next(rn, &n);
    }
    mf_reader_close(ro);
    mf_reader_close(rn);
    if (r < 0)
        return r;
end:;
    wire_msg_t end = {.type = WIRE_FILES_END};
    end.u.files_end.tree_digest = (wire_bytes_t){.data = sd->s->digest, .len = MF_HASH_LEN};
    end.u.files_end.file_count = sd->s->count;
    end.u.files_end.total_bytes = sd->s->total_bytes;
    r = send_msg(sd, &end, MF_HASH_LEN + 16);
    if (r == 0)
        fault_point("agent.listing.sent");
    return r;
}

/* ---- needs ---- */

static FILE *spool_open(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        char tmpl[4200];
        snprintf(tmpl, sizeof(tmpl), "%s/needs.XXXXXX", dir);
        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd >= 0)
            unlink(tmpl);
    }
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w+");
    if (!f)
        close(fd);
    return f;
}

static int spool_write(FILE *f, const need_t *nd)
{
    uint32_t plen = (uint32_t)strlen(nd->path);
    uint8_t tr = (uint8_t)nd->transfer;
    if (fwrite(&plen, 4, 1, f) != 1 || fwrite(nd->path, 1, plen, f) != plen ||
        fwrite(&tr, 1, 1, f) != 1 || fwrite(&nd->resume_offset, 8, 1, f) != 1 ||
        fwrite(&nd->size, 8, 1, f) != 1 || fwrite(&nd->mtime_ns, 8, 1, f) != 1 ||
        fwrite(nd->hash, MF_HASH_LEN, 1, f) != 1 || fwrite(&nd->sig_len, 4, 1, f) != 1 ||
        (nd->sig_len && fwrite(nd->sig, 1, nd->sig_len, f) != nd->sig_len))
        return UV_EIO;
    return 0;
}

/* Returns 1 with *nd filled (nd->sig malloc'ed), 0 at the end, or a negative code. */
static int spool_read(FILE *f, need_t *nd)
{
    uint32_t plen;
    uint8_t tr;
    if (fread(&plen, 4, 1, f) != 1)
        return feof(f) ? 0 : UV_EIO;
    if (plen >= MF_PATH_MAX || fread(nd->path, 1, plen, f) != plen)
        return UV_EIO;
    nd->path[plen] = '\0';
    if (fread(&tr, 1, 1, f) != 1 || fread(&nd->resume_offset, 8, 1, f) != 1 ||
        fread(&nd->size, 8, 1, f) != 1 || fread(&nd->mtime_ns, 8, 1, f) != 1 ||
        fread(nd->hash, MF_HASH_LEN, 1, f) != 1 || fread(&nd->sig_len, 4, 1, f) != 1)
        return UV_EIO;
    nd->transfer = (wire_transfer_t)tr;
    nd->sig = NULL;
    if (nd->sig_len) {
        if (!(nd->sig = malloc(nd->sig_len)))
            return UV_ENOMEM;
        if (fread(nd->sig, 1, nd->sig_len, f) != nd->sig_len) {
            free(nd->sig);
            nd->sig = NULL;
            return UV_EIO;
        }
    }
    return 1;
}

/* Finds path in the listed manifest (a forward cursor, restarted for a need out of order). */
typedef struct lookup {
    mf_reader_t *r;
    mf_entry_t e;
    int have; /* mf_reader_next's last result */
    char last[MF_PATH_MAX];
} lookup_t;

static int lookup_find(sender_t *sd, lookup_t *lk, const char *path, const mf_entry_t **ret)
{
    int r;
    if (!lk->r || (lk->last[0] && mf_path_cmp(path, lk->last) <= 0)) {
        mf_reader_close(lk->r);
        lk->r = NULL;
        r = mf_reader_open(sd->listed_path, &lk->r, NULL);
        if (r < 0)
            return reader_fail(sd, sd->listed_path, r);
        lk->have = mf_reader_next(lk->r, &lk->e);
    }
    snprintf(lk->last, sizeof(lk->last), "%s", path);
    while (lk->have > 0 && mf_path_cmp(lk->e.path, path) < 0)
        lk->have = mf_reader_next(lk->r, &lk->e);
    if (lk->have < 0)
        return reader_fail(sd, sd->listed_path, lk->have);
    *ret = lk->have > 0 && !mf_path_cmp(lk->e.path, path) ? &lk->e : NULL;
    return 0;
}

static int protocol_error(sender_t *sd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int protocol_error(sender_t *sd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sd->err, sd->err_size, fmt, ap);
    va_end(ap);
    return ERR_PROTOCOL;
}

static int recv_needs(sender_t *sd, FILE *spool)
{
    lookup_t lk = {0};
    need_t nd;
    int r = 0;

    for (;;) {
        wire_msg_t *m = NULL;
        r = msgio_recv(sd->io, &m, NEED_RECV_TIMEOUT);
        if (r < 0) {
            snprintf(sd->err, sd->err_size, "connection to the controller lost: %s", err_str(r));
            break;
        }
        r = 0;
        if (m->type == WIRE_FILES_NEED_END) {
            sd->need_count = m->u.files_need_end.need_count;
            sd->need_bytes = m->u.files_need_end.need_bytes;
            wire_msg_free(m);
            break;
        }
        if (m->type == WIRE_ERROR) {
            r = protocol_error(sd, "the controller refused: %s", m->u.error.text);
            wire_msg_free(m);
            break;
        }
        if (m->type == WIRE_RESULT) {
            /* The controller stopped the sync at the listing (a path or link it refuses). */
            const wire_result_t *res = &m->u.result;
            snprintf(sd->err, sd->err_size, "the controller %s the sync: %s",
                     res->status == WIRE_STATUS_REFUSED ? "refused" : "could not apply",
                     res->reason[0] ? res->reason : "no reason given");
            r = res->status == WIRE_STATUS_REFUSED ? ERR_REFUSED : ERR_PROTOCOL;
            wire_msg_free(m);
            break;
        }
        if (m->type != WIRE_FILE_NEED) {
            r = protocol_error(sd, "the controller sent %s where FileNeed was expected",
                               wire_type_name(m->type));
            wire_msg_free(m);
            break;
        }
        const wire_file_need_t *fn = &m->u.file_need;
        const mf_entry_t *e = NULL;
        memset(&nd, 0, sizeof(nd));
        if (fn->path.len >= MF_PATH_MAX) {
            r = protocol_error(sd, "the controller asked for a path that is too long");
        } else {
            memcpy(nd.path, fn->path.data, fn->path.len);
            nd.path[fn->path.len] = '\0';
            if (strlen(nd.path) != fn->path.len)
                r = protocol_error(sd, "the controller asked for a path with a NUL byte");
        }
        if (r == 0)
            r = lookup_find(sd, &lk, nd.path, &e);
        if (r == 0 && (!e || e->kind != MF_REGULAR))
            r = protocol_error(sd, "the controller asked for %s, which is not a file of this sync",
                               nd.path);
        if (r == 0 && fn->transfer == WIRE_TRANSFER_DELTA && fn->signature.len == 0)
            r = protocol_error(sd, "the controller asked for a delta of %s without a signature",
                               nd.path);
        if (r == 0 && fn->transfer != WIRE_TRANSFER_NONE) {
            nd.transfer = fn->transfer;
            nd.resume_offset = fn->transfer == WIRE_TRANSFER_WHOLE ? fn->resume_offset : 0;
            nd.size = e->size;
            nd.mtime_ns = e->mtime_ns;
            memcpy(nd.hash, e->hash, MF_HASH_LEN);
            nd.sig = (uint8_t *)fn->signature.data;
            nd.sig_len = (uint32_t)fn->signature.len;
            sd->st->needs++;
            if (sd->s->dry_run) {
                fputs(nd.transfer == WIRE_TRANSFER_DELTA ? "delta " : "send ", stdout);
                print_path(stdout, nd.path);
                fprintf(stdout, " (%" PRIu64 " bytes)\n", nd.size);
            } else if (spool_write(spool, &nd) < 0) {
                snprintf(sd->err, sd->err_size, "cannot write to a temporary file in %s",
                         sd->s->state_dir);
                r = UV_EIO;
            }
        }
        wire_msg_free(m);
        if (r < 0)
            break;
    }
    mf_reader_close(lk.r);
    if (r == 0 && sd->s->dry_run)
        fflush(stdout);
    return r;
}

/* ---- content ---- */

/* Opens path's directory beneath the root, one component at a time, following no symlink.
 * Returns a descriptor (the root's own for a top-level name) or -1 with errno. */
static int open_dir_beneath(sender_t *sd, const char *path, size_t dir_len)
{
    char comp[MF_PATH_MAX];
    int dfd = sd->rootfd;

    for (size_t at = 0; at < dir_len;) {
        const char *slash = memchr(path + at, '/', dir_len - at);
        size_t n = slash ? (size_t)(slash - (path + at)) : dir_len - at;
        memcpy(comp, path + at, n);
        comp[n] = '\0';
        int fd = openat(dfd, comp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_DIRECTORY);
        int e = errno;
        if (dfd != sd->rootfd)
            close(dfd);
        if (fd < 0) {
            errno = e;
            return -1;
        }
        dfd = fd;
        at += n + 1;
    }
    return dfd;
}

/* Opens path beneath the root without following any symlink. Needs come in listing order, so
 * the directory of the last one is kept open (sd->dirfd) for the next. */
static int open_beneath(sender_t *sd, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) : 0;

    if (sd->dirfd < 0 || sd->dir_len != dir_len || memcmp(sd->dir, path, dir_len) != 0) {
        if (sd->dirfd >= 0 && sd->dirfd != sd->rootfd)
            close(sd->dirfd);
        sd->dirfd = open_dir_beneath(sd, path, dir_len);
        if (sd->dirfd < 0)
            return -1;
        memcpy(sd->dir, path, dir_len);
        sd->dir_len = dir_len;
    }
    return openat(sd->dirfd, slash ? slash + 1 : path,
                  O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
}

static int changed(sender_t *sd, const char *path)
{
    snprintf(sd->err, sd->err_size,
             "%s/%s changed while the sync was running; the next sync will send it (add it to "
             "[site] exclude if it changes all the time)",
             sd->s->root, path);
    return UV_EAGAIN;
}

static ssize_t read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Opens the need's file and checks it is still the listed one. Returns the fd or a code. */
static int open_need(sender_t *sd, const need_t *nd)
{
    struct stat st;
    int fd = open_beneath(sd, nd->path);
    if (fd < 0) {
        if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
            return changed(sd, nd->path);
        int r = -errno;
        snprintf(sd->err, sd->err_size, "cannot read %s/%s: %s", sd->s->root, nd->path,
                 strerror(errno));
        return r;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != nd->size ||
        (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec != nd->mtime_ns) {
        close(fd);
        return changed(sd, nd->path);
    }
    if (EVP_DigestInit_ex(sd->md, EVP_sha256(), NULL) != 1) {
        close(fd);
        snprintf(sd->err, sd->err_size, "SHA-256 is not available");
        return ERR_INTERNAL;
    }
    return fd;
}

/* Reads the next min(CHUNK, size - pos) bytes into sd->in and hashes them; on the file's last
 * bytes checks the hash. Returns the byte count or a code. */
static int64_t read_chunk(sender_t *sd, int fd, const need_t *nd, uint64_t pos, size_t max)
{
    size_t want = nd->size - pos < max ? (size_t)(nd->size - pos) : max;
    ssize_t n = read_full(fd, sd->in, want);
    if (n < 0) {
        int r = -errno;
        snprintf(sd->err, sd->err_size, "cannot read %s/%s: %s", sd->s->root, nd->path,
                 strerror(errno));
        return r;
    }
    if ((size_t)n != want)
        return changed(sd, nd->path);
    EVP_DigestUpdate(sd->md, sd->in, want);
    if (pos + want == nd->size) {
        uint8_t h[EVP_MAX_MD_SIZE];
        unsigned int hl = 0;
        EVP_DigestFinal_ex(sd->md, h, &hl);
        if (hl != MF_HASH_LEN || memcmp(h, nd->hash, MF_HASH_LEN) != 0)
            return changed(sd, nd->path);
    }
    return (int64_t)want;
}

static int send_whole(sender_t *sd, const need_t *nd)
{
    uint64_t pos = 0, start = nd->resume_offset <= nd->size ? nd->resume_offset : 0;
    bool try_zstd = !files_incompressible_name(nd->path);
    int fd = open_need(sd, nd), r = 0;

    if (fd < 0)
        return fd;
    while (pos < start) {
        int64_t n = read_chunk(sd, fd, nd, pos, start - pos < CHUNK ? start - pos : CHUNK);
        if (n < 0) {
            close(fd);
            return (int)n;
        }
        pos += (uint64_t)n;
    }
    do {
        wire_msg_t m = {.type = WIRE_FILE_DATA};
        wire_file_data_t *fd_msg = &m.u.file_data;
        int64_t n = 0;
        if (pos < nd->size || nd->size == 0) {
            n = read_chunk(sd, fd, nd, pos, CHUNK);
            if (n < 0) {
                r = (int)n;
                break;
            }
        }
        fd_msg->path = str_bytes(nd->path);
        fd_msg->offset = pos;
        fd_msg->data = (wire_bytes_t){.data = sd->in, .len = (size_t)n};
        fd_msg->last = pos + (uint64_t)n == nd->size;
        if (try_zstd && n > 0) {
            size_t c =
                ZSTD_compressCCtx(sd->cctx, sd->out, sd->out_cap, sd->in, (size_t)n, ZSTD_LEVEL);
            if (!ZSTD_isError(c) && c < (size_t)n - (size_t)n / 32) {
                fd_msg->data = (wire_bytes_t){.data = sd->out, .len = c};
                fd_msg->zstd = true;
            } else if (pos == start) {
                try_zstd = false; /* the first chunk did not shrink: neither will the rest */
            }
        }
        r = send_msg(sd, &m, fd_msg->data.len + fd_msg->path.len + 16);
        if (r < 0)
            break;
        sd->st->bytes_content += fd_msg->data.len;
        sd->done_bytes += (uint64_t)n;
        pos += (uint64_t)n;
        draw(sd, false);
    } while (pos < nd->size);
    close(fd);
    return r;
}

static void rs_quiet(rs_loglevel level, char const *msg)
{
    (void)level;
    (void)msg;
}

static int send_delta(sender_t *sd, const need_t *nd)
{
    rs_signature_t *sig = NULL;
    rs_job_t *job = rs_loadsig_begin(&sig);
    rs_buffers_t b = {.next_in = (char *)nd->sig, .avail_in = nd->sig_len, .eof_in = 1};
    rs_result rr = job ? rs_job_iter(job, &b) : RS_MEM_ERROR;
    uint64_t pos = 0;
    size_t outlen = 0;
    int fd = -1, r = 0;

    if (job)
        rs_job_free(job);
    job = NULL;
    if (rr == RS_DONE)
        rr = rs_build_hash_table(sig);
    if (rr != RS_DONE) {
        snprintf(sd->err, sd->err_size, "the controller sent a bad signature for %s: %s", nd->path,
                 rs_strerror(rr));
        r = ERR_PROTOCOL;
        goto out;
    }
    fd = open_need(sd, nd);
    if (fd < 0) {
        r = fd;
        goto out;
    }
    job = rs_delta_begin(sig);
    if (!job) {
        r = UV_ENOMEM;
        snprintf(sd->err, sd->err_size, "out of memory");
        goto out;
    }
    memset(&b, 0, sizeof(b));
    for (;;) {
        if (b.avail_in == 0 && !b.eof_in) {
            int64_t n = read_chunk(sd, fd, nd, pos, CHUNK);
            if (n < 0) {
                r = (int)n;
                goto out;
            }
            pos += (uint64_t)n;
            sd->done_bytes += (uint64_t)n;
            b.next_in = (char *)sd->in;
            b.avail_in = (size_t)n;
            b.eof_in = pos == nd->size;
        }
        b.next_out = (char *)sd->out + outlen;
        b.avail_out = CHUNK - outlen;
        rr = rs_job_iter(job, &b);
        outlen = CHUNK - b.avail_out;
        if (rr != RS_DONE && rr != RS_BLOCKED) {
            snprintf(sd->err, sd->err_size, "cannot compute the delta of %s/%s: %s", sd->s->root,
                     nd->path, rs_strerror(rr));
            r = ERR_INTERNAL;
            goto out;
        }
        if (rr == RS_DONE || outlen == CHUNK) {
            wire_msg_t m = {.type = WIRE_FILE_DELTA};
            m.u.file_delta.path = str_bytes(nd->path);
            m.u.file_delta.delta = (wire_bytes_t){.data = sd->out, .len = outlen};
            m.u.file_delta.last = rr == RS_DONE;
            r = send_msg(sd, &m, outlen + m.u.file_delta.path.len + 8);
            if (r < 0)
                goto out;
            sd->st->bytes_delta += outlen;
            outlen = 0;
            draw(sd, false);
            if (rr == RS_DONE)
                break;
        }
    }
out:
    if (job)
        rs_job_free(job);
    if (sig)
        rs_free_sumset(sig);
    if (fd >= 0)
        close(fd);
    return r;
}

static int send_content(sender_t *sd, FILE *spool)
{
    need_t *nd = malloc(sizeof(*nd));
    int r;

    if (!nd)
        return UV_ENOMEM;
    rewind(spool);
    while ((r = spool_read(spool, nd)) > 0) {
        r = nd->transfer == WIRE_TRANSFER_DELTA ? send_delta(sd, nd) : send_whole(sd, nd);
        free(nd->sig);
        if (r < 0)
            break;
        sd->done_files++;
        fault_point("agent.file.sent");
    }
    if (r == UV_EIO || r == UV_ENOMEM)
        snprintf(sd->err, sd->err_size, "cannot read back a temporary file in %s: %s",
                 sd->s->state_dir, err_str(r));
    free(nd);
    return r;
}

int files_send(files_scan_t *s, const msgio_t *io, const wire_sync_ready_t *ready,
               files_stats_t *stats, char *err, size_t err_size)
{
    sender_t sd = {
        .s = s, .io = io, .st = stats, .err = err, .err_size = err_size, .rootfd = -1, .dirfd = -1};
    FILE *spool = NULL;
    int r;

    memset(stats, 0, sizeof(*stats));
    stats->files_hashed = s->hashed;
    sd.tty = s->progress && isatty(STDERR_FILENO);
    sd.bw_start = now_ns();
    sd.listed_path = s->new_path; /* an unchanged tree lists nothing: no need is valid */
    if (!s->have_new) {
        snprintf(err, err_size, "files_send needs a scan");
        return ERR_INTERNAL;
    }
    if (!ready->full_listing &&
        (!s->have_old || s->base_generation == 0 || ready->live_generation != s->base_generation)) {
        snprintf(err, err_size,
                 "the controller asked for the changes since generation %" PRIu64
                 ", but this agent's state is for generation %" PRIu64,
                 ready->live_generation, s->base_generation);
        return ERR_PROTOCOL;
    }
    if (!ready->full_listing && s->have_base_digest && ready->live_tree_digest.len == MF_HASH_LEN &&
        memcmp(ready->live_tree_digest.data, s->base_digest, MF_HASH_LEN) != 0) {
        /* The controller's live tree is not the one this agent last saw applied (a restored
         * or rolled back controller): an incremental listing would build a wrong tree. Forget
         * the base; the next sync sends a full listing. */
        unlink(s->gen_path);
        snprintf(err, err_size,
                 "the controller's generation %" PRIu64
                 " is not the tree this agent last synced; its saved state was reset, and the "
                 "next sync sends a full listing",
                 ready->live_generation);
        return UV_EAGAIN;
    }
    r = send_listing(&sd, ready->full_listing);
    if (r < 0)
        return r;
    if (!s->dry_run && !(spool = spool_open(s->state_dir))) {
        r = -errno;
        snprintf(err, err_size, "cannot create a temporary file in %s: %s", s->state_dir,
                 strerror(errno));
        return r;
    }
    r = recv_needs(&sd, spool);
    if (r < 0 || s->dry_run)
        goto out;

    rs_trace_to(rs_quiet);
    sd.out_cap = ZSTD_compressBound(CHUNK);
    if (sd.out_cap < CHUNK)
        sd.out_cap = CHUNK;
    sd.in = malloc(CHUNK);
    sd.out = malloc(sd.out_cap);
    sd.cctx = ZSTD_createCCtx();
    sd.md = EVP_MD_CTX_new();
    if (!sd.in || !sd.out || !sd.cctx || !sd.md) {
        r = UV_ENOMEM;
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    sd.rootfd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sd.rootfd < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot open the site root %s: %s", s->root, strerror(errno));
        goto out;
    }
    r = send_content(&sd, spool);
    if (r == 0)
        fault_point("agent.files.end");
out:
    draw(&sd, true);
    if (spool)
        fclose(spool);
    if (sd.dirfd >= 0 && sd.dirfd != sd.rootfd)
        close(sd.dirfd);
    if (sd.rootfd >= 0)
        close(sd.rootfd);
    free(sd.in);
    free(sd.out);
    ZSTD_freeCCtx(sd.cctx);
    EVP_MD_CTX_free(sd.md);
    return r;
}
