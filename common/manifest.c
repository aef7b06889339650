/* Manifest files and the tree digest. See manifest.h.
 *
 * File format: the line "understudy-manifest 1\n", then one record per entry, little-endian:
 *   u32 path_len, path, u8 kind, u32 mode, i64 mtime_ns, u64 size, 32-byte hash,
 *   u32 link_len, link, u64 dev, u64 ino, i64 ctime_ns
 * Records are parsed from a 64 KiB read buffer: memory does not depend on the number of
 * entries.
 */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "err.h"

#define MF_MAGIC    "understudy-manifest 1\n"
#define MF_READ_BUF (64u * 1024)

int mf_path_cmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    while (*x && *x == *y) {
        x++;
        y++;
    }
    /* '/' ranks below every other byte (but above the end of the string). */
    int cx = *x == '/' ? 1 : *x == 0 ? 0 : *x + 1;
    int cy = *y == '/' ? 1 : *y == 0 ? 0 : *y + 1;
    return cx - cy;
}

/* mf_path_cmp for paths of known length (no NUL inside): a word at a time to the first
 * difference, which is where walk order and bytewise order can part ('/'). */
int mf_path_cmp_n(const char *a, size_t la, const char *b, size_t lb)
{
    size_t n = la < lb ? la : lb, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            i += (size_t)__builtin_ctzll(x ^ y) / 8;
#else
            i += (size_t)__builtin_clzll(x ^ y) / 8;
#endif
            break;
        }
    }
    while (i < n && a[i] == b[i])
        i++;
    unsigned char x = i < la ? (unsigned char)a[i] : 0, y = i < lb ? (unsigned char)b[i] : 0;
    int cx = x == '/' ? 1 : x == 0 ? 0 : x + 1;
    int cy = y == '/' ? 1 : y == 0 ? 0 : y + 1;
    return cx - cy;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The fixed part of a record between path and link: kind, mode, mtime, size, hash. */
#define MF_FIXED (1 + 4 + 8 + 8 + MF_HASH_LEN)

static void encode_fixed(const mf_entry_t *e, uint8_t out[MF_FIXED], bool for_digest)
{
    out[0] = (uint8_t)e->kind;
    put_u32(out + 1, e->kind == MF_SYMLINK && for_digest ? 0 : e->mode & 07777);
    put_u64(out + 5, (uint64_t)e->mtime_ns);
    put_u64(out + 13, e->kind == MF_REGULAR ? e->size : 0);
    if (e->kind == MF_REGULAR)
        memcpy(out + 21, e->hash, MF_HASH_LEN);
    else
        memset(out + 21, 0, MF_HASH_LEN);
}

int mf_digest_init(mf_digest_t *d)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        d->ctx = NULL;
        return UV_ENOMEM;
    }
    d->ctx = ctx;
    return 0;
}

/* The digest's record of e in buf (at least MF_DIGEST_MAX); returns its length. */
#define MF_DIGEST_MAX (4 + MF_PATH_MAX + MF_FIXED + 4 + MF_PATH_MAX)

static size_t digest_record(const mf_entry_t *e, size_t plen, size_t llen, uint8_t *buf)
{
    uint8_t *p = buf;
    put_u32(p, (uint32_t)plen);
    memcpy(p + 4, e->path, plen);
    p += 4 + plen;
    encode_fixed(e, p, true);
    p += MF_FIXED;
    put_u32(p, (uint32_t)llen);
    if (llen)
        memcpy(p + 4, e->link_target, llen);
    return (size_t)(p + 4 + llen - buf);
}

void mf_digest_add(mf_digest_t *d, const mf_entry_t *e)
{
    uint8_t buf[MF_DIGEST_MAX];
    size_t plen = strnlen(e->path, MF_PATH_MAX);
    size_t llen =
        e->kind == MF_SYMLINK && e->link_target ? strnlen(e->link_target, MF_PATH_MAX) : 0;
    /* One update per entry: the same bytes as field by field, at a fraction of the calls. */
    EVP_DigestUpdate(d->ctx, buf, digest_record(e, plen, llen, buf));
}

void mf_digest_final(mf_digest_t *d, uint8_t ret[MF_HASH_LEN])
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(d->ctx, ret, &n);
    mf_digest_free(d);
}

void mf_digest_free(mf_digest_t *d)
{
    EVP_MD_CTX_free(d->ctx);
    d->ctx = NULL;
}

bool mf_link_escapes(const char *path, const char *target)
{
    long depth = 0;
    bool named = false;

    if (target[0] == '/' || target[0] == '\0')
        return true;
    for (const char *p = path; *p; p++) /* components of the link's directory */
        if (*p == '/')
            depth++;
    for (const char *p = target; *p;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            /* ".." after a name is not judged safe: an in-tree symlink earlier in the path
             * (self -> .) could turn "self/self/../.." into a climb a lexical check misses. */
            if (named || --depth < 0)
                return true;
        } else if (!(len == 0 || (len == 1 && p[0] == '.'))) {
            named = true;
        }
        p += len;
        if (*p == '/')
            p++;
    }
    return false;
}

void mf_hash_hex(const uint8_t hash[MF_HASH_LEN], char ret[2 * MF_HASH_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < MF_HASH_LEN; i++) {
        ret[2 * i] = hex[hash[i] >> 4];
        ret[2 * i + 1] = hex[hash[i] & 15];
    }
    ret[2 * MF_HASH_LEN] = '\0';
}

/* ---- writer ---- */

/* Digest input is gathered into a buffer and hashed in large pieces: one EVP call per entry
 * cost more than the hashing itself. The digest is the same over the same byte stream. */
#define MF_DIGEST_BATCH (64u * 1024)
_Static_assert(MF_DIGEST_MAX <= MF_DIGEST_BATCH, "a record fits in the digest batch");

struct mf_writer {
    FILE *f;
    char *path, *tmp;
    char *last; /* previous path (MF_PATH_MAX bytes), for the order check */
    bool have_last;
    mf_digest_t digest;
    uint8_t *dbuf; /* MF_DIGEST_BATCH bytes of digest input not hashed yet */
    size_t dlen;
    uint64_t count;
    bool no_fsync;
};

static void writer_digest_flush(mf_writer_t *w)
{
    if (w->dlen)
        EVP_DigestUpdate(w->digest.ctx, w->dbuf, w->dlen);
    w->dlen = 0;
}

int mf_writer_open(const char *path, mf_writer_t **ret)
{
    mf_writer_t *w = calloc(1, sizeof(*w));
    int r;

    if (!w)
        return UV_ENOMEM;
    w->path = strdup(path);
    if (w->path && asprintf(&w->tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
        w->tmp = NULL;
    w->last = malloc(MF_PATH_MAX);
    w->dbuf = malloc(MF_DIGEST_BATCH);
    if (!w->path || !w->tmp || !w->last || !w->dbuf || mf_digest_init(&w->digest) < 0) {
        r = UV_ENOMEM;
        goto fail;
    }
    int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !(w->f = fdopen(fd, "w"))) {
        r = -errno;
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    if (fputs(MF_MAGIC, w->f) == EOF) {
        r = UV_EIO;
        goto fail;
    }
    *ret = w;
    return 0;
fail:
    mf_writer_abort(w);
    return r;
}

int mf_writer_add(mf_writer_t *w, const mf_entry_t *e)
{
    size_t plen = strlen(e->path);
    size_t llen = e->kind == MF_SYMLINK && e->link_target ? strlen(e->link_target) : 0;

    if (plen == 0 || plen >= MF_PATH_MAX || llen >= MF_PATH_MAX)
        return ERR_PROTOCOL;
    if (w->have_last && mf_path_cmp(w->last, e->path) >= 0)
        return ERR_PROTOCOL;
    memcpy(w->last, e->path, plen + 1);
    w->have_last = true;

    /* The file's record is the digest's record (with the mode of a symlink) plus the cache
     * fields: built once, written with one call, digested in batches. */
    uint8_t buf[MF_DIGEST_MAX + 24];
    size_t n = digest_record(e, plen, llen, buf);
    if (w->dlen + n > MF_DIGEST_BATCH)
        writer_digest_flush(w);
    memcpy(w->dbuf + w->dlen, buf, n);
    w->dlen += n;
    if (e->kind == MF_SYMLINK)
        put_u32(buf + 4 + plen + 1, e->mode & 07777);
    put_u64(buf + n, e->dev);
    put_u64(buf + n + 8, e->ino);
    put_u64(buf + n + 16, (uint64_t)e->ctime_ns);
    if (fwrite_unlocked(buf, 1, n + 24, w->f) != n + 24)
        return UV_EIO;
    w->count++;
    return 0;
}

void mf_writer_skip_fsync(mf_writer_t *w)
{
    w->no_fsync = true;
}

int mf_writer_commit(mf_writer_t *w, uint8_t ret_digest[MF_HASH_LEN], uint64_t *ret_count)
{
    int r = 0;
    if (fflush(w->f) != 0 || (!w->no_fsync && fsync(fileno(w->f)) != 0))
        r = -errno;
    if (fclose(w->f) != 0 && r == 0)
        r = -errno;
    w->f = NULL;
    if (r == 0 && rename(w->tmp, w->path) != 0)
        r = -errno;
    if (r < 0) {
        mf_writer_abort(w);
        return r;
    }
    writer_digest_flush(w);
    mf_digest_final(&w->digest, ret_digest);
    if (ret_count)
        *ret_count = w->count;
    free(w->tmp);
    w->tmp = NULL;
    mf_writer_abort(w);
    return 0;
}

void mf_writer_abort(mf_writer_t *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    if (w->tmp)
        unlink(w->tmp);
    mf_digest_free(&w->digest);
    free(w->tmp);
    free(w->path);
    free(w->last);
    free(w->dbuf);
    free(w);
}

/* ---- reader ---- */

/* Records are parsed in place from a buffer filled by read(2), MF_READ_BUF at a time: no stdio
 * call per field, and memory does not depend on the number of entries. A record is at most
 * MF_RECORD_MAX bytes, so one always fits. */
#define MF_RECORD_MAX (4 + MF_PATH_MAX + MF_FIXED + 4 + MF_PATH_MAX + 24)
_Static_assert(MF_READ_BUF >= 2 * MF_RECORD_MAX, "a record fits in the read buffer");

struct mf_reader {
    int fd;       /* -1: a missing file, read as empty */
    uint8_t *buf; /* MF_READ_BUF bytes; [pos, end) not parsed yet */
    size_t pos, end;
    bool eof;          /* read(2) returned 0 */
    char *path, *last; /* this entry's path and the previous one's (order check) */
    size_t path_len, last_len;
    char *link; /* this entry's link target */
    bool have_last;
};

/* Makes n bytes available at buf + pos; returns 1, 0 at the end of the file with no byte
 * left, ERR_PROTOCOL when it ends inside them, or a read error. */
static int fill(mf_reader_t *r, size_t n)
{
    while (r->end - r->pos < n) {
        if (r->eof)
            return r->end == r->pos ? 0 : ERR_PROTOCOL;
        if (r->pos > 0) {
            memmove(r->buf, r->buf + r->pos, r->end - r->pos);
            r->end -= r->pos;
            r->pos = 0;
        }
        ssize_t k = read(r->fd, r->buf + r->end, MF_READ_BUF - r->end);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            r->eof = true;
        r->end += (size_t)k;
    }
    return 1;
}

int mf_reader_open(const char *path, mf_reader_t **ret, bool *ret_missing)
{
    mf_reader_t *r = calloc(1, sizeof(*r));

    if (!r)
        return UV_ENOMEM;
    if (ret_missing)
        *ret_missing = false;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = -errno;
        if (e != UV_ENOENT) {
            free(r);
            return e;
        }
        if (ret_missing)
            *ret_missing = true;
        *ret = r; /* empty */
        return 0;
    }
    if (!(r->buf = malloc(MF_READ_BUF)) || !(r->path = malloc(MF_PATH_MAX)) ||
        !(r->last = malloc(MF_PATH_MAX)) || !(r->link = malloc(MF_PATH_MAX))) {
        mf_reader_close(r);
        return UV_ENOMEM;
    }
    size_t ml = strlen(MF_MAGIC);
    int rc = fill(r, ml);
    if (rc <= 0 || memcmp(r->buf, MF_MAGIC, ml) != 0) {
        mf_reader_close(r);
        return rc < 0 && rc != ERR_PROTOCOL ? rc : ERR_PROTOCOL;
    }
    r->pos = ml;
    *ret = r;
    return 0;
}

int mf_reader_next(mf_reader_t *r, mf_entry_t *e)
{
    if (r->fd < 0)
        return 0;
    int rc = fill(r, 4);
    if (rc <= 0)
        return rc;
    size_t len = get_u32(r->buf + r->pos);
    if (len == 0 || len >= MF_PATH_MAX)
        return ERR_PROTOCOL;
    if ((rc = fill(r, 4 + len + MF_FIXED + 4)) <= 0)
        return rc < 0 ? rc : ERR_PROTOCOL;
    const uint8_t *p = r->buf + r->pos + 4;
    size_t link_len = get_u32(p + len + MF_FIXED);
    if (link_len >= MF_PATH_MAX)
        return ERR_PROTOCOL;
    size_t rec = 4 + len + MF_FIXED + 4 + link_len + 24;
    if ((rc = fill(r, rec)) <= 0)
        return rc < 0 ? rc : ERR_PROTOCOL;
    p = r->buf + r->pos + 4; /* fill may have moved the bytes */

    /* The previous path stays for the order check: the two buffers swap. */
    char *t = r->last;
    r->last = r->path;
    r->last_len = r->path_len;
    r->path = t;
    memcpy(r->path, p, len);
    r->path[len] = '\0';
    r->path_len = len;
    if (memchr(r->path, '\0', len) ||
        (r->have_last && mf_path_cmp_n(r->last, r->last_len, r->path, len) >= 0))
        return ERR_PROTOCOL;
    r->have_last = true;

    const uint8_t *fixed = p + len, *tail = fixed + MF_FIXED + 4 + link_len;
    memset(e, 0, sizeof(*e));
    e->path = r->path;
    e->kind = (mf_kind_t)fixed[0];
    if (e->kind > MF_SYMLINK)
        return ERR_PROTOCOL;
    e->mode = get_u32(fixed + 1);
    e->mtime_ns = (int64_t)get_u64(fixed + 5);
    e->size = get_u64(fixed + 13);
    memcpy(e->hash, fixed + 21, MF_HASH_LEN);
    if (e->kind == MF_SYMLINK) {
        memcpy(r->link, fixed + MF_FIXED + 4, link_len);
        r->link[link_len] = '\0';
        e->link_target = r->link;
    }
    e->dev = get_u64(tail);
    e->ino = get_u64(tail + 8);
    e->ctime_ns = (int64_t)get_u64(tail + 16);
    r->pos += rec;
    return 1;
}

void mf_reader_close(mf_reader_t *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->buf);
    free(r->path);
    free(r->link);
    free(r->last);
    free(r);
}
