/* Tests for the agent's files phase (agent/files.c, agent/send.c, agent/exclude.c): walk order and
 * excludes on a generated tree, the quick check (an unchanged rescan reads no file), git's racy
 * clean rule, incremental against full listings, the threaded walk against the single-threaded
 * one, manifest.new written only when something changed, the directory cache (state_dir/dirs:
 * unchanged directories are not listed again, changed, damaged or racy ones are, and the
 * manifest is the same either way), and whole sessions over an in-memory
 * pipe with a fake controller thread written here (independently of controller/files.c) that
 * asks for whole files and librsync deltas, rebuilds every file and compares it with the bytes
 * on disk. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librsync.h>
#include <openssl/evp.h>
#include <uv.h>
#include <zstd.h>

#include "err.h"
#include "exclude.h"
#include "files-internal.h" /* have_changes */
#include "files.h"
#include "manifest.h"
#include "msgpipe.h"

static char tmp[PATH_MAX], root[PATH_MAX + 8], state[PATH_MAX + 8], oldroot[PATH_MAX + 8];

static const char *const default_excludes[] = {"wp-content/cache/", "wp-content/upgrade/"};

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int setup(void **state_)
{
    (void)state_;
    snprintf(tmp, sizeof(tmp), "/tmp/test-files-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(root, sizeof(root), "%s/site", tmp);
    snprintf(state, sizeof(state), "%s/state", tmp);
    snprintf(oldroot, sizeof(oldroot), "%s/old", tmp);
    mkdir(root, 0755);
    mkdir(oldroot, 0755);
    return 0;
}

static int teardown(void **state_)
{
    (void)state_;
    nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void at(char *out, size_t size, const char *base, const char *rel)
{
    snprintf(out, size, "%s/%s", base, rel);
}

static void write_bytes(const char *base, const char *rel, const void *data, size_t len,
                        mode_t mode)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), base, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void write_str(const char *rel, const char *text, mode_t mode)
{
    write_bytes(root, rel, text, strlen(text), mode);
}

static void make_dir(const char *rel, mode_t mode)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), root, rel);
    assert_int_equal(mkdir(p, mode), 0);
    assert_int_equal(chmod(p, mode), 0);
}

static void make_link(const char *target, const char *rel)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), root, rel);
    assert_int_equal(symlink(target, p), 0);
}

static uint8_t *read_all(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (len == cap)
            b = realloc(b, cap *= 2);
        size_t n = fread(b + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    *ret_len = len;
    return b;
}

static void random_bytes(uint8_t *p, size_t n, uint32_t seed)
{
    uint64_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static int set_old_time(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    struct timespec ts[2] = {{1600000000, 0}, {1600000000, 123456789}};
    utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
    return 0;
}

/* Moves every mtime in the site well into the past (out of the racy window). */
static void age_tree(void)
{
    nftw(root, set_old_time, 16, FTW_PHYS);
}

static files_scan_t *scan_with(const char *const *ex, size_t n_ex)
{
    files_opts_t o = {.root = root, .state_dir = state, .excludes = ex, .n_excludes = n_ex};
    files_scan_t *s = NULL;
    char err[1024] = "";
    int r = files_scan(&o, &s, err, sizeof(err));
    if (r < 0)
        fail_msg("files_scan: %s (%s)", err, err_name(r));
    return s;
}

static files_scan_t *scan(void)
{
    return scan_with(default_excludes, 2);
}

typedef struct ent {
    char *path, *link;
    int kind;
    uint32_t mode;
    uint64_t size;
    int64_t mtime_ns;
    uint8_t hash[MF_HASH_LEN];
    bool deleted;
} ent_t;

typedef struct entlist {
    ent_t *v;
    size_t n, cap;
} entlist_t;

static void list_push(entlist_t *l, const ent_t *e)
{
    if (l->n == l->cap)
        l->v = realloc(l->v, (l->cap = l->cap ? l->cap * 2 : 64) * sizeof(*l->v));
    l->v[l->n++] = *e;
}

static void list_free(entlist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].link);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static const ent_t *list_find(const entlist_t *l, const char *path)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].path, path))
            return &l->v[i];
    return NULL;
}

static void read_manifest(const char *name, entlist_t *out)
{
    char p[PATH_MAX * 2];
    mf_reader_t *r;
    mf_entry_t e;
    bool missing;
    at(p, sizeof(p), state, name);
    assert_int_equal(mf_reader_open(p, &r, &missing), 0);
    assert_false(missing);
    int rc;
    while ((rc = mf_reader_next(r, &e)) == 1) {
        ent_t x = {.path = strdup(e.path),
                   .kind = e.kind,
                   .mode = e.mode,
                   .size = e.size,
                   .mtime_ns = e.mtime_ns};
        memcpy(x.hash, e.hash, MF_HASH_LEN);
        x.link = e.link_target ? strdup(e.link_target) : NULL;
        list_push(out, &x);
    }
    assert_int_equal(rc, 0);
    mf_reader_close(r);
}

/* ---- the fake controller ---- */

typedef struct fake {
    msgio_t io;
    bool dry_run;
    bool use_delta; /* ask DELTA for files present in oldroot */
    entlist_t entries;
    bool got_end;
    uint8_t digest[MF_HASH_LEN];
    uint64_t count, data_bytes, delta_bytes, needs, rebuilt, zstd_chunks, raw_chunks;
    uint64_t max_chunk;
    char fail[1024];
} fake_t;

static void fake_fail(fake_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fake_fail(fake_t *f, const char *fmt, ...)
{
    va_list ap;
    if (f->fail[0])
        return;
    va_start(ap, fmt);
    vsnprintf(f->fail, sizeof(f->fail), fmt, ap);
    va_end(ap);
}

static uint8_t *make_signature(const uint8_t *old, size_t len, size_t *ret_len)
{
    rs_magic_number magic = RS_RK_BLAKE2_SIG_MAGIC;
    size_t block_len = 0, strong_len = 0;
    rs_sig_args((rs_long_t)len, &magic, &block_len, &strong_len);
    rs_job_t *job = rs_sig_begin(block_len, strong_len, magic);
    size_t cap = (len / block_len + 2) * (4 + strong_len) + 64;
    uint8_t *out = malloc(cap);
    rs_buffers_t b = {.next_in = (char *)old,
                      .avail_in = len,
                      .eof_in = 1,
                      .next_out = (char *)out,
                      .avail_out = cap};
    rs_result r = rs_job_iter(job, &b);
    rs_job_free(job);
    if (r != RS_DONE) {
        free(out);
        return NULL;
    }
    *ret_len = cap - b.avail_out;
    return out;
}

typedef struct basis {
    const uint8_t *data;
    size_t len;
} basis_t;

static rs_result basis_copy(void *opaque, rs_long_t pos, size_t *len, void **buf)
{
    basis_t *b = opaque;
    if (pos < 0 || (size_t)pos > b->len)
        return RS_INPUT_ENDED;
    if (*len > b->len - (size_t)pos)
        *len = b->len - (size_t)pos;
    memcpy(*buf, b->data + pos, *len);
    return RS_DONE;
}

static uint8_t *apply_delta(const uint8_t *old, size_t old_len, const uint8_t *delta,
                            size_t delta_len, size_t *ret_len)
{
    basis_t bs = {old, old_len};
    rs_job_t *job = rs_patch_begin(basis_copy, &bs);
    size_t cap = old_len + delta_len + 1024, len = 0;
    uint8_t *out = malloc(cap);
    rs_buffers_t b = {.next_in = (char *)delta, .avail_in = delta_len, .eof_in = 1};
    rs_result r;
    for (;;) {
        if (len == cap)
            out = realloc(out, cap *= 2);
        b.next_out = (char *)out + len;
        b.avail_out = cap - len;
        r = rs_job_iter(job, &b);
        len = cap - b.avail_out;
        if (r != RS_BLOCKED)
            break;
    }
    rs_job_free(job);
    if (r != RS_DONE) {
        free(out);
        return NULL;
    }
    *ret_len = len;
    return out;
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[MF_HASH_LEN])
{
    unsigned int l = 0;
    EVP_Digest(p, n, out, &l, EVP_sha256(), NULL);
}

typedef struct fneed {
    const ent_t *e;
    bool delta;
    uint8_t *basis;
    size_t basis_len;
} fneed_t;

/* Receives one file's FileData or FileDelta messages and checks the rebuilt bytes. */
static void fake_receive_one(fake_t *f, const fneed_t *nd)
{
    size_t cap = 1024, len = 0;
    uint8_t *buf = malloc(cap);
    bool last = false;

    while (!last && !f->fail[0]) {
        wire_msg_t *m;
        int r = msgio_recv(&f->io, &m, 30000);
        if (r < 0) {
            fake_fail(f, "recv content of %s: %s", nd->e->path, err_name(r));
            break;
        }
        wire_bytes_t path = m->type == WIRE_FILE_DATA    ? m->u.file_data.path
                            : m->type == WIRE_FILE_DELTA ? m->u.file_delta.path
                                                         : (wire_bytes_t){0};
        if (path.len != strlen(nd->e->path) || memcmp(path.data, nd->e->path, path.len)) {
            fake_fail(f, "expected content of %s, got %s", nd->e->path, wire_type_name(m->type));
            wire_msg_free(m);
            break;
        }
        if (m->type == WIRE_FILE_DATA && !nd->delta) {
            const wire_file_data_t *d = &m->u.file_data;
            size_t n = d->data.len;
            const uint8_t *src = d->data.data;
            uint8_t *dec = NULL;
            if (d->zstd) {
                unsigned long long sz = ZSTD_getFrameContentSize(src, n);
                if (sz == ZSTD_CONTENTSIZE_ERROR || sz == ZSTD_CONTENTSIZE_UNKNOWN)
                    fake_fail(f, "bad zstd frame in %s", nd->e->path);
                dec = malloc(sz ? sz : 1);
                size_t got = ZSTD_decompress(dec, sz, src, n);
                if (ZSTD_isError(got) || got != sz)
                    fake_fail(f, "zstd decompress failed in %s", nd->e->path);
                src = dec;
                n = (size_t)sz;
                f->zstd_chunks++;
            } else if (n) {
                f->raw_chunks++;
            }
            if (n > f->max_chunk)
                f->max_chunk = n;
            if (d->offset != len)
                fake_fail(f, "%s: chunk at %llu, expected %zu", nd->e->path,
                          (unsigned long long)d->offset, len);
            while (len + n > cap)
                buf = realloc(buf, cap *= 2);
            if (n)
                memcpy(buf + len, src, n);
            len += n;
            f->data_bytes += d->data.len;
            last = d->last;
            free(dec);
        } else if (m->type == WIRE_FILE_DELTA && nd->delta) {
            const wire_file_delta_t *d = &m->u.file_delta;
            while (len + d->delta.len > cap)
                buf = realloc(buf, cap *= 2);
            if (d->delta.len)
                memcpy(buf + len, d->delta.data, d->delta.len);
            len += d->delta.len;
            f->delta_bytes += d->delta.len;
            last = d->last;
        } else {
            fake_fail(f, "unexpected %s for %s", wire_type_name(m->type), nd->e->path);
        }
        wire_msg_free(m);
    }
    if (nd->delta && !f->fail[0]) {
        size_t out_len = 0;
        uint8_t *out = apply_delta(nd->basis, nd->basis_len, buf, len, &out_len);
        if (!out)
            fake_fail(f, "patching %s failed", nd->e->path);
        free(buf);
        buf = out;
        len = out_len;
    }
    if (!f->fail[0]) {
        char p[PATH_MAX * 2];
        size_t disk_len;
        uint8_t h[MF_HASH_LEN];
        at(p, sizeof(p), root, nd->e->path);
        uint8_t *disk = read_all(p, &disk_len);
        sha256(buf, len, h);
        if (disk_len != len || memcmp(disk, buf, len))
            fake_fail(f, "%s: rebuilt %zu bytes differ from the %zu on disk", nd->e->path, len,
                      disk_len);
        else if (memcmp(h, nd->e->hash, MF_HASH_LEN))
            fake_fail(f, "%s: listed hash does not match the content", nd->e->path);
        else
            f->rebuilt++;
        free(disk);
    }
    free(buf);
}

static void *fake_run(void *arg)
{
    fake_t *f = arg;
    fneed_t *needs = NULL;
    size_t n_needs = 0;

    for (;;) {
        wire_msg_t *m;
        int r = msgio_recv(&f->io, &m, 30000);
        if (r < 0) {
            fake_fail(f, "recv listing: %s", err_name(r));
            return NULL;
        }
        if (m->type == WIRE_FILES_END) {
            f->got_end = true;
            memcpy(f->digest, m->u.files_end.tree_digest.data, MF_HASH_LEN);
            f->count = m->u.files_end.file_count;
            wire_msg_free(m);
            break;
        }
        if (m->type != WIRE_FILE_ENTRY) {
            fake_fail(f, "unexpected %s in the listing", wire_type_name(m->type));
            wire_msg_free(m);
            return NULL;
        }
        const wire_file_entry_t *fe = &m->u.file_entry;
        ent_t e = {.path = strndup((const char *)fe->path.data, fe->path.len),
                   .kind = fe->kind,
                   .mode = fe->mode,
                   .size = fe->size,
                   .mtime_ns = fe->mtime_ns,
                   .deleted = fe->deleted};
        if (fe->hash.len == MF_HASH_LEN)
            memcpy(e.hash, fe->hash.data, MF_HASH_LEN);
        if (fe->kind == WIRE_FILE_SYMLINK)
            e.link = strndup((const char *)fe->link_target.data, fe->link_target.len);
        list_push(&f->entries, &e);
        wire_msg_free(m);
    }

    /* Ask for every regular file: DELTA against oldroot's copy when there is one. */
    needs = calloc(f->entries.n + 1, sizeof(*needs));
    uint64_t need_bytes = 0;
    for (size_t i = 0; i < f->entries.n; i++) {
        const ent_t *e = &f->entries.v[i];
        if (e->deleted || e->kind != MF_REGULAR)
            continue;
        fneed_t *nd = &needs[n_needs++];
        wire_msg_t m = {.type = WIRE_FILE_NEED};
        uint8_t *sig = NULL;
        size_t sig_len = 0;
        char p[PATH_MAX * 2];
        nd->e = e;
        at(p, sizeof(p), oldroot, e->path);
        if (f->use_delta && access(p, F_OK) == 0) {
            nd->basis = read_all(p, &nd->basis_len);
            sig = make_signature(nd->basis, nd->basis_len, &sig_len);
            nd->delta = sig != NULL;
        }
        m.u.file_need.path = (wire_bytes_t){(const uint8_t *)e->path, strlen(e->path)};
        m.u.file_need.transfer = nd->delta ? WIRE_TRANSFER_DELTA : WIRE_TRANSFER_WHOLE;
        m.u.file_need.signature = (wire_bytes_t){sig, sig_len};
        need_bytes += e->size;
        if (msgio_send(&f->io, &m) < 0)
            fake_fail(f, "send FileNeed");
        free(sig);
    }
    f->needs = n_needs;
    wire_msg_t end = {.type = WIRE_FILES_NEED_END};
    end.u.files_need_end.need_count = n_needs;
    end.u.files_need_end.need_bytes = need_bytes;
    if (msgio_send(&f->io, &end) < 0)
        fake_fail(f, "send FilesNeedEnd");
    if (!f->dry_run)
        for (size_t i = 0; i < n_needs && !f->fail[0]; i++)
            fake_receive_one(f, &needs[i]);
    for (size_t i = 0; i < n_needs; i++)
        free(needs[i].basis);
    free(needs);
    return NULL;
}

typedef struct session {
    int rc;
    char err[1024];
    files_stats_t stats;
    uint64_t agent_bytes; /* bytes of frames the agent sent */
} session_t;

/* Runs files_send against the fake controller; f is filled in. */
static const uint8_t *ready_digest; /* SyncReady.live_tree_digest, when set */

static session_t run_session(files_scan_t *s, fake_t *f, bool full, uint64_t live)
{
    session_t out = {0};
    msgpipe_t *p = msgpipe_new(1u << 20);
    pthread_t th;
    wire_sync_ready_t ready = {.live_generation = live, .full_listing = full};
    if (ready_digest)
        ready.live_tree_digest = (wire_bytes_t){ready_digest, MF_HASH_LEN};

    f->io = msgpipe_end(p, 1);
    msgio_t io = msgpipe_end(p, 0);
    assert_int_equal(pthread_create(&th, NULL, fake_run, f), 0);
    out.rc = files_send(s, &io, &ready, &out.stats, out.err, sizeof(out.err));
    if (out.rc < 0)
        msgpipe_close(p, 0);
    pthread_join(th, NULL);
    out.agent_bytes = msgpipe_bytes(p, 0);
    msgpipe_free(p);
    return out;
}

/* ---- tests ---- */

static void test_exclude_rules(void **st)
{
    (void)st;
    const char *const pats[] = {"# comment",   "",          "wp-content/cache/", "*.log",
                                "!keep.log",   "/top-only", "node_modules/",     "a/**/z",
                                "**/deep.tmp", "x/**",      "[abc]?.bak",        "\\#literal"};
    excl_t *x;
    assert_int_equal(excl_new(pats, sizeof(pats) / sizeof(pats[0]), &x), 0);
    assert_true(excl_match(x, "wp-content/cache", true));
    assert_false(excl_match(x, "wp-content/cache", false));    /* a file of that name stays */
    assert_false(excl_match(x, "sub/wp-content/cache", true)); /* anchored */
    assert_true(excl_match(x, "debug.log", false));
    assert_true(excl_match(x, "wp-content/debug.log", false));
    assert_false(excl_match(x, "wp-content/keep.log", false));
    assert_true(excl_match(x, "top-only", false));
    assert_false(excl_match(x, "sub/top-only", false));
    assert_true(excl_match(x, "a/b/node_modules", true));
    assert_true(excl_match(x, "a/z", false));
    assert_true(excl_match(x, "a/b/c/z", false));
    assert_false(excl_match(x, "b/a/z", false));
    assert_true(excl_match(x, "deep.tmp", false));
    assert_true(excl_match(x, "q/r/deep.tmp", false));
    assert_true(excl_match(x, "x/anything/below", false));
    assert_false(excl_match(x, "x", true));
    assert_true(excl_match(x, "a1.bak", false));
    assert_false(excl_match(x, "d1.bak", false));
    assert_true(excl_match(x, "#literal", false));
    assert_false(excl_match(x, "comment", false));
    excl_free(x);
}

/* The generated tree of the walk-order test, as the scan must list it. */
static const char *const walk_expected[] = {
    "-leading-dash",
    "a",
    "a/z.txt",
    "a-b",
    "a.b",
    "empty",
    "hard1",
    "hard2",
    "link-dangling",
    "link-in",
    /* "link-out" -> /etc/passwd is skipped: outside the site (rsync --safe-links) */
    "nested",
    "nested/x",
    "nested/x/y",
    "nested/x/y/deep.txt",
    "new\nline",
    "sub",
    "sub/wp-content",
    "sub/wp-content/cache",
    "sub/wp-content/cache/f",
    "with space.txt",
    "wp-content",
    "wp-content/keep.log",
    "wp-content/uploads",
    "wp-content/uploads/2024",
    "wp-content/uploads/2024/img.jpg",
    "\xc3\xbc"
    "n\xc3\xaf"
    "c\xc3\xb6"
    "d\xc3\xa9.txt",
};

static void make_walk_tree(void)
{
    char p[PATH_MAX * 2], q[PATH_MAX * 2];
    write_str("-leading-dash", "dash\n", 0644);
    make_dir("a", 0755);
    write_str("a/z.txt", "zed\n", 0644);
    write_str("a-b", "secret\n", 0600);
    write_str("a.b", "#!/bin/sh\n", 0755);
    make_dir("empty", 0700);
    write_str("hard1", "same inode\n", 0644);
    at(p, sizeof(p), root, "hard1");
    at(q, sizeof(q), root, "hard2");
    assert_int_equal(link(p, q), 0);
    make_link("nowhere", "link-dangling");
    make_link("a/z.txt", "link-in");
    make_link("/etc/passwd", "link-out");
    make_dir("nested", 0755);
    make_dir("nested/x", 0755);
    make_dir("nested/x/y", 0755);
    write_str("nested/x/y/deep.txt", "deep\n", 0644);
    write_str("new\nline", "newline in the name\n", 0644);
    make_dir("sub", 0755);
    make_dir("sub/wp-content", 0755);
    make_dir("sub/wp-content/cache", 0755);
    write_str("sub/wp-content/cache/f", "kept: the default exclude is anchored\n", 0644);
    write_str("with space.txt", "space\n", 0644);
    make_dir("wp-content", 0755);
    make_dir("wp-content/cache", 0755);
    write_str("wp-content/cache/page.html", "cached\n", 0644);
    make_dir("wp-content/upgrade", 0755);
    write_str("wp-content/upgrade/tmp.zip", "upgrade\n", 0644);
    write_str("wp-content/debug.log", "log\n", 0644);
    write_str("wp-content/keep.log", "keep\n", 0644);
    make_dir("wp-content/uploads", 0755);
    make_dir("wp-content/uploads/2024", 0755);
    write_str("wp-content/uploads/2024/img.jpg", "\xff\xd8\xff not really a jpeg", 0644);
    write_str("\xc3\xbc"
              "n\xc3\xaf"
              "c\xc3\xb6"
              "d\xc3\xa9.txt",
              "unicode\n", 0644);
    at(p, sizeof(p), root, "fifo");
    assert_int_equal(mkfifo(p, 0644), 0);
}

static void test_walk_order_excludes(void **st)
{
    (void)st;
    const char *const ex[] = {"wp-content/cache/", "wp-content/upgrade/", "*.log", "!keep.log"};
    entlist_t l = {0};
    make_walk_tree();
    age_tree(); /* not racily clean for the rescan at the end */
    files_scan_t *s = scan_with(ex, 4);
    read_manifest("manifest.new", &l);
    size_t n_exp = sizeof(walk_expected) / sizeof(walk_expected[0]);
    for (size_t i = 0; i < l.n && i < n_exp; i++)
        if (strcmp(l.v[i].path, walk_expected[i]))
            fail_msg("entry %zu: got '%s', expected '%s'", i, l.v[i].path, walk_expected[i]);
    assert_int_equal(l.n, n_exp);
    assert_int_equal(files_scan_count(s), n_exp);
    for (size_t i = 1; i < l.n; i++)
        assert_true(mf_path_cmp(l.v[i - 1].path, l.v[i].path) < 0);

    assert_int_equal(list_find(&l, "a-b")->mode, 0600);
    assert_int_equal(list_find(&l, "a.b")->mode, 0755);
    assert_int_equal(list_find(&l, "a/z.txt")->mode, 0644);
    assert_int_equal(list_find(&l, "empty")->kind, MF_DIRECTORY);
    assert_int_equal(list_find(&l, "empty")->mode, 0700);
    assert_null(list_find(&l, "link-out"));
    assert_string_equal(list_find(&l, "link-in")->link, "a/z.txt");
    assert_string_equal(list_find(&l, "link-dangling")->link, "nowhere");
    const ent_t *h1 = list_find(&l, "hard1"), *h2 = list_find(&l, "hard2");
    assert_int_equal(h1->kind, MF_REGULAR);
    assert_int_equal(h2->kind, MF_REGULAR);
    assert_memory_equal(h1->hash, h2->hash, MF_HASH_LEN);
    uint8_t h[MF_HASH_LEN];
    sha256((const uint8_t *)"zed\n", 4, h);
    assert_memory_equal(list_find(&l, "a/z.txt")->hash, h, MF_HASH_LEN);
    assert_int_equal(list_find(&l, "a/z.txt")->size, 4);
    assert_null(list_find(&l, "fifo"));
    /* Every regular file was read once (hard links twice), by the directory readers of this
     * first scan, and no excluded one was. */
    assert_int_equal(files_scan_hashed(s), 13);
    assert_int_equal(files_scan_pre_hashed(s), 13);
    list_free(&l);
    assert_int_equal(files_scan_commit(s, 1), 0);
    files_scan_free(s);
    /* With a saved manifest, the walk hashes what changed, the readers nothing. */
    write_str("a/z.txt", "zed, edited\n", 0644);
    s = scan_with(ex, 4);
    assert_int_equal(files_scan_hashed(s), 1);
    assert_int_equal(files_scan_pre_hashed(s), 0);
    files_scan_free(s);
}

static void make_site(void)
{
    static uint8_t big[300000];
    random_bytes(big, sizeof(big), 7);
    make_dir("wp-admin", 0755);
    write_str("wp-admin/index.php", "<?php require 'admin.php';\n", 0644);
    write_str("index.php", "<?php define('WP_USE_THEMES', true);\n", 0644);
    write_str("wp-config.php", "<?php $table_prefix = 'wp_';\n", 0640);
    make_dir("wp-content", 0755);
    make_dir("wp-content/plugins", 0755);
    make_dir("wp-content/plugins/hello", 0755);
    write_str("wp-content/plugins/hello/hello.php", "<?php /* Hello Dolly */\n", 0644);
    make_dir("wp-content/uploads", 0755);
    write_bytes(root, "wp-content/uploads/photo.jpg", big, sizeof(big), 0644);
    make_link("wp-content/uploads", "uploads");
}

static void test_unchanged_scan_reads_nothing(void **st)
{
    (void)st;
    fake_t f = {0};
    make_site();
    age_tree();
    files_scan_t *s1 = scan();
    assert_int_equal(files_scan_hashed(s1), 5);
    assert_int_equal(files_scan_base_generation(s1), 0);
    uint8_t d1[MF_HASH_LEN];
    memcpy(d1, files_scan_digest(s1), MF_HASH_LEN);
    session_t r = run_session(s1, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    assert_int_equal(f.rebuilt, 5);
    assert_memory_equal(f.digest, d1, MF_HASH_LEN);
    assert_int_equal(files_scan_commit(s1, 5), 0);
    files_scan_free(s1);
    list_free(&f.entries);

    /* Nothing changed: nothing is read, and only FilesEnd crosses the wire. */
    files_scan_t *s2 = scan();
    assert_int_equal(files_scan_hashed(s2), 0);
    assert_int_equal(files_scan_base_generation(s2), 5);
    assert_memory_equal(files_scan_digest(s2), d1, MF_HASH_LEN);
    memset(&f, 0, sizeof(f));
    r = run_session(s2, &f, false, 5);
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    assert_int_equal(f.entries.n, 0);
    assert_int_equal(r.stats.entries_sent, 0);
    assert_int_equal(r.stats.files_hashed, 0);
    print_message("no-change incremental sync: the agent sent %llu bytes\n",
                  (unsigned long long)r.agent_bytes);
    assert_true(r.agent_bytes < 200);
    /* The same with the controller's live digest, which matches. */
    ready_digest = d1;
    memset(&f, 0, sizeof(f));
    r = run_session(s2, &f, false, 5);
    assert_int_equal(r.rc, 0);
    /* A controller whose live tree is another (restored, rolled back): the agent resets its
     * base instead of sending changes against the wrong tree. */
    uint8_t other[MF_HASH_LEN] = {1};
    ready_digest = other;
    memset(&f, 0, sizeof(f));
    r = run_session(s2, &f, false, 5);
    ready_digest = NULL;
    assert_int_equal(r.rc, UV_EAGAIN);
    assert_non_null(strstr(r.err, "full listing"));
    files_scan_free(s2);
    s2 = scan();
    assert_int_equal(files_scan_base_generation(s2), 0);
    assert_int_equal(files_scan_hashed(s2), 0);
    assert_int_equal(files_scan_commit(s2, 5), 0);
    files_scan_free(s2);

    /* A lost generation file means base generation 0 (the controller will ask for a full
     * listing), but the manifest still serves as the hash cache. */
    char p[PATH_MAX * 2];
    at(p, sizeof(p), state, "generation");
    assert_int_equal(unlink(p), 0);
    files_scan_t *s3 = scan();
    assert_int_equal(files_scan_base_generation(s3), 0);
    assert_int_equal(files_scan_hashed(s3), 0); /* the manifest still serves as a cache */
    memset(&f, 0, sizeof(f));
    r = run_session(s3, &f, false, 5);
    assert_int_equal(r.rc, ERR_PROTOCOL); /* incremental against no base is refused */
    files_scan_free(s3);
}

/* Rewrites the saved manifest, replacing path's stat fields with the file's current ones (as if
 * it had been scanned after its last write) while keeping the old hash, and sets the manifest's
 * own mtime to mtime_sec. */
static void forge_manifest(const char *path, time_t mtime_sec)
{
    char mp[PATH_MAX * 2], fp[PATH_MAX * 2];
    mf_reader_t *r;
    mf_writer_t *w;
    mf_entry_t e;
    struct stat st;
    uint8_t d[MF_HASH_LEN];
    at(mp, sizeof(mp), state, "manifest");
    at(fp, sizeof(fp), root, path);
    assert_int_equal(lstat(fp, &st), 0);
    assert_int_equal(mf_reader_open(mp, &r, NULL), 0);
    char np[PATH_MAX * 2 + 8];
    snprintf(np, sizeof(np), "%s.forged", mp);
    assert_int_equal(mf_writer_open(np, &w), 0);
    while (mf_reader_next(r, &e) == 1) {
        if (!strcmp(e.path, path)) {
            e.size = (uint64_t)st.st_size;
            e.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            e.ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
            e.ino = st.st_ino;
            e.dev = st.st_dev;
        }
        assert_int_equal(mf_writer_add(w, &e), 0);
    }
    mf_reader_close(r);
    assert_int_equal(mf_writer_commit(w, d, NULL), 0);
    assert_int_equal(rename(np, mp), 0);
    struct timespec ts[2] = {{mtime_sec, 0}, {mtime_sec, 500000000}};
    assert_int_equal(utimensat(AT_FDCWD, mp, ts, 0), 0);
}

/* A sync that changed nothing leaves the saved state as it was (no write, no fsync); any
 * difference, a cache field or a dropped entry included, saves it again. */
static void test_unchanged_commit_writes_nothing(void **st)
{
    (void)st;
    fake_t f = {0};
    entlist_t l = {0};
    char mp[PATH_MAX * 2], p[PATH_MAX * 2];
    struct stat a, b;

    make_site();
    age_tree();
    files_scan_t *s = scan();
    session_t r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(files_scan_commit(s, 4), 0);
    files_scan_free(s);
    list_free(&f.entries);
    at(mp, sizeof(mp), state, "manifest");
    assert_int_equal(stat(mp, &a), 0);

    s = scan();
    assert_int_equal(files_scan_base_generation(s), 4);
    assert_int_equal(files_scan_commit(s, 4), 0);
    files_scan_free(s);
    assert_int_equal(stat(mp, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    at(p, sizeof(p), state, "manifest.new");
    assert_int_equal(access(p, F_OK), -1);

    /* The same tree applied as another generation: saved, with the new number. */
    s = scan();
    assert_int_equal(files_scan_commit(s, 5), 0);
    files_scan_free(s);
    assert_int_equal(stat(mp, &a), 0);
    assert_int_not_equal(a.st_ino, b.st_ino);
    s = scan();
    assert_int_equal(files_scan_base_generation(s), 5);
    files_scan_free(s);

    /* Only a cache field (the ctime of a chmod to the same mode): saved again. */
    at(p, sizeof(p), root, "index.php");
    assert_int_equal(chmod(p, 0644), 0);
    s = scan();
    assert_int_equal(files_scan_commit(s, 5), 0);
    files_scan_free(s);
    assert_int_equal(stat(mp, &b), 0);
    assert_int_not_equal(a.st_ino, b.st_ino);

    /* A removed file, and the last entry of the walk removed: saved without them. */
    at(p, sizeof(p), root, "wp-admin/index.php");
    assert_int_equal(unlink(p), 0);
    s = scan();
    assert_int_equal(files_scan_commit(s, 5), 0);
    files_scan_free(s);
    read_manifest("manifest", &l);
    assert_null(list_find(&l, "wp-admin/index.php"));
    list_free(&l);
    at(p, sizeof(p), root, "wp-content/uploads/photo.jpg");
    assert_int_equal(unlink(p), 0);
    s = scan();
    assert_int_equal(files_scan_commit(s, 5), 0);
    files_scan_free(s);
    read_manifest("manifest", &l);
    assert_null(list_find(&l, "wp-content/uploads/photo.jpg"));
    assert_non_null(list_find(&l, "wp-content/uploads"));
    list_free(&l);
}

static void test_racy_clean(void **st)
{
    (void)st;
    char p[PATH_MAX * 2];
    struct timespec ts[2] = {{1700000000, 0}, {1700000000, 250000000}};
    fake_t f = {0};
    entlist_t l = {0};

    make_site();
    age_tree();
    at(p, sizeof(p), root, "index.php");
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    files_scan_t *s = scan();
    session_t r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(files_scan_commit(s, 1), 0);
    files_scan_free(s);
    list_free(&f.entries);

    /* Same size, same mtime: a write the clock did not see. The forged manifest's stat data
     * matches the file exactly, so only the racy rule can notice. */
    write_str("index.php", "<?php define('WP_USE_THEMES', fals);\n", 0644);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    forge_manifest("index.php", 1700000000); /* same second as the file: racily clean */
    s = scan();
    assert_int_equal(files_scan_hashed(s), 1);
    read_manifest("manifest.new", &l);
    uint8_t h[MF_HASH_LEN];
    const char *text = "<?php define('WP_USE_THEMES', fals);\n";
    sha256((const uint8_t *)text, strlen(text), h);
    assert_memory_equal(list_find(&l, "index.php")->hash, h, MF_HASH_LEN);
    list_free(&l);
    files_scan_free(s);

    /* The same forgery with a manifest written two seconds later is trusted: the rule, not
     * luck, is what caught it above. */
    forge_manifest("index.php", 1700000002);
    s = scan();
    assert_int_equal(files_scan_hashed(s), 0);
    files_scan_free(s);
}

static void test_incremental_vs_full(void **st)
{
    (void)st;
    fake_t f = {0};
    entlist_t old = {0}, full = {0};
    char p[PATH_MAX * 2];

    make_site();
    make_dir("gone", 0755);
    make_dir("gone/sub", 0755);
    write_str("gone/sub/file", "bye\n", 0644);
    make_dir("becomes-file", 0755);
    write_str("becomes-file/child", "child\n", 0644);
    write_str("becomes-dir", "file\n", 0644);
    age_tree();
    files_scan_t *s = scan();
    session_t r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(files_scan_commit(s, 3), 0);
    files_scan_free(s);
    list_free(&f.entries);
    read_manifest("manifest", &old);

    /* Changes: content, mode, new file, deleted file, deleted tree, kind changes both ways,
     * a new symlink. */
    write_str("index.php", "<?php /* changed */\n", 0644);
    at(p, sizeof(p), root, "wp-admin/index.php");
    assert_int_equal(chmod(p, 0600), 0);
    write_str("wp-content/new.php", "<?php /* new */\n", 0644);
    at(p, sizeof(p), root, "wp-config.php");
    assert_int_equal(unlink(p), 0);
    at(p, sizeof(p), root, "gone/sub/file");
    assert_int_equal(unlink(p), 0);
    at(p, sizeof(p), root, "gone/sub");
    assert_int_equal(rmdir(p), 0);
    at(p, sizeof(p), root, "gone");
    assert_int_equal(rmdir(p), 0);
    at(p, sizeof(p), root, "becomes-file/child");
    assert_int_equal(unlink(p), 0);
    at(p, sizeof(p), root, "becomes-file");
    assert_int_equal(rmdir(p), 0);
    write_str("becomes-file", "now a file\n", 0644);
    at(p, sizeof(p), root, "becomes-dir");
    assert_int_equal(unlink(p), 0);
    make_dir("becomes-dir", 0755);
    write_str("becomes-dir/inside", "inside\n", 0644);
    make_link("index.php", "wp-content/link");

    s = scan();
    read_manifest("manifest.new", &full);
    memset(&f, 0, sizeof(f));
    r = run_session(s, &f, false, 3);
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    entlist_t *inc = &f.entries;

    /* Deletions: the tree root once, its children never. */
    assert_true(list_find(inc, "gone")->deleted);
    assert_int_equal(list_find(inc, "gone")->kind, MF_DIRECTORY);
    assert_null(list_find(inc, "gone/sub"));
    assert_null(list_find(inc, "gone/sub/file"));
    assert_true(list_find(inc, "wp-config.php")->deleted);
    assert_false(list_find(inc, "becomes-file")->deleted);
    assert_int_equal(list_find(inc, "becomes-file")->kind, MF_REGULAR);
    assert_null(list_find(inc, "becomes-file/child"));
    assert_int_equal(list_find(inc, "becomes-dir")->kind, MF_DIRECTORY);
    assert_non_null(list_find(inc, "becomes-dir/inside"));
    assert_int_equal(list_find(inc, "wp-admin/index.php")->mode, 0600);
    assert_non_null(list_find(inc, "index.php"));
    assert_non_null(list_find(inc, "wp-content/new.php"));
    assert_string_equal(list_find(inc, "wp-content/link")->link, "index.php");
    assert_null(list_find(inc, "wp-content/uploads/photo.jpg")); /* unchanged */
    assert_null(list_find(inc, "uploads"));
    for (size_t i = 1; i < inc->n; i++)
        assert_true(mf_path_cmp(inc->v[i - 1].path, inc->v[i].path) < 0);
    /* Only the changed files were asked for, and they were rebuilt. */
    assert_int_equal(f.rebuilt, 5);

    /* Model check: old listing + incremental changes == the full listing. */
    entlist_t model = {0};
    for (size_t i = 0; i < old.n; i++) {
        const ent_t *o = &old.v[i];
        bool drop = false;
        for (size_t j = 0; j < inc->n && !drop; j++) {
            const ent_t *c = &inc->v[j];
            size_t cl = strlen(c->path);
            if (!strcmp(c->path, o->path))
                drop = true; /* replaced or deleted */
            else if (!strncmp(o->path, c->path, cl) && o->path[cl] == '/' &&
                     (c->deleted || c->kind != MF_DIRECTORY))
                drop = true; /* below a deleted directory or one that is no longer one */
        }
        if (!drop) {
            ent_t x = *o;
            x.path = strdup(o->path);
            x.link = o->link ? strdup(o->link) : NULL;
            list_push(&model, &x);
        }
    }
    for (size_t j = 0; j < inc->n; j++)
        if (!inc->v[j].deleted) {
            ent_t x = inc->v[j];
            x.path = strdup(x.path);
            x.link = x.link ? strdup(x.link) : NULL;
            list_push(&model, &x);
        }
    assert_int_equal(model.n, full.n);
    for (size_t i = 0; i < full.n; i++) {
        const ent_t *m = list_find(&model, full.v[i].path);
        if (!m)
            fail_msg("%s missing from old + changes", full.v[i].path);
        assert_int_equal(m->kind, full.v[i].kind);
        assert_int_equal(m->mode, full.v[i].mode);
        assert_int_equal(m->mtime_ns, full.v[i].mtime_ns);
        assert_memory_equal(m->hash, full.v[i].hash, full.v[i].kind == MF_REGULAR ? 32 : 0);
    }
    list_free(&model);

    /* That listing came from the scan's change spools; without them (one could not be
     * written) the two manifests merged whole give the same entries. */
    assert_true(s->have_changes);
    entlist_t spooled = f.entries;
    memset(&f, 0, sizeof(f));
    s->have_changes = false;
    r = run_session(s, &f, false, 3);
    s->have_changes = true;
    assert_int_equal(r.rc, 0);
    assert_int_equal(f.entries.n, spooled.n);
    for (size_t i = 0; i < spooled.n; i++) {
        assert_string_equal(f.entries.v[i].path, spooled.v[i].path);
        assert_int_equal(f.entries.v[i].deleted, spooled.v[i].deleted);
        assert_int_equal(f.entries.v[i].kind, spooled.v[i].kind);
    }
    list_free(&spooled);
    list_free(&f.entries);

    /* The full listing of the same scan is the new manifest, entry for entry, and its digest
     * is the scan's. */
    memset(&f, 0, sizeof(f));
    r = run_session(s, &f, true, 99);
    assert_int_equal(r.rc, 0);
    assert_int_equal(f.entries.n, full.n);
    mf_digest_t dg;
    uint8_t d[MF_HASH_LEN];
    assert_int_equal(mf_digest_init(&dg), 0);
    for (size_t i = 0; i < f.entries.n; i++) {
        const ent_t *e = &f.entries.v[i];
        assert_string_equal(e->path, full.v[i].path);
        assert_false(e->deleted);
        mf_entry_t me = {.path = e->path,
                         .kind = (mf_kind_t)e->kind,
                         .mode = e->mode,
                         .mtime_ns = e->mtime_ns,
                         .size = e->size,
                         .link_target = e->link};
        memcpy(me.hash, e->hash, MF_HASH_LEN);
        mf_digest_add(&dg, &me);
    }
    mf_digest_final(&dg, d);
    assert_memory_equal(d, files_scan_digest(s), MF_HASH_LEN);
    assert_memory_equal(f.digest, files_scan_digest(s), MF_HASH_LEN);
    assert_int_equal(f.count, full.n);
    list_free(&f.entries);
    list_free(&old);
    list_free(&full);
    files_scan_free(s);
}

static void test_whole_session(void **st)
{
    (void)st;
    fake_t f = {0};
    size_t big_len = 3 * 1024 * 1024 + 12345;
    uint8_t *big = malloc(big_len);
    /* Compressible: repeated text with some noise. */
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)("<?php echo 'hello world'; ?>\n"[i % 29] ^ (i % 4096 == 0));
    write_bytes(root, "big.php", big, big_len, 0644);
    random_bytes(big, 500000, 3);
    write_bytes(root, "random.jpg", big, 500000, 0644);
    write_bytes(root, "random.bin", big, 400000, 0644);
    write_str("empty.txt", "", 0644);
    make_walk_tree();
    free(big);

    files_scan_t *s = scan();
    session_t r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    assert_int_equal(f.rebuilt, f.needs);
    assert_int_equal(f.rebuilt, 18);
    assert_true(f.max_chunk <= 1024 * 1024);
    assert_true(f.zstd_chunks >= 13); /* big.php's chunks shrink */
    print_message("whole: %llu files, %llu bytes of content sent for %llu bytes "
                  "(%llu zstd chunks, %llu raw)\n",
                  (unsigned long long)f.rebuilt, (unsigned long long)r.stats.bytes_content,
                  (unsigned long long)(3 * 1024 * 1024 + 12345 + 900000),
                  (unsigned long long)f.zstd_chunks, (unsigned long long)f.raw_chunks);
    assert_true(r.stats.bytes_content < 1200000);
    list_free(&f.entries);
    files_scan_free(s);
}

static void test_delta_session(void **st)
{
    (void)st;
    fake_t f = {.use_delta = true};
    size_t len = 8u * 1024 * 1024;
    uint8_t *data = malloc(len + 1024);
    random_bytes(data, len + 1024, 11);
    write_bytes(oldroot, "db.sql", data, len, 0644);     /* the controller's copy */
    write_bytes(root, "db.sql", data, len + 1024, 0644); /* 1 KiB appended */
    /* A change in the middle too, in a second file. */
    write_bytes(oldroot, "mid.bin", data, 2u << 20, 0644);
    data[1u << 20] ^= 0xff;
    write_bytes(root, "mid.bin", data, 2u << 20, 0644);
    free(data);

    files_scan_t *s = scan();
    session_t r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    assert_int_equal(f.rebuilt, 2);
    print_message("delta: append 1 KiB to 8 MiB + flip one byte in 2 MiB: %llu delta bytes, "
                  "%llu bytes sent by the agent in all\n",
                  (unsigned long long)r.stats.bytes_delta, (unsigned long long)r.agent_bytes);
    assert_true(r.stats.bytes_delta < 64 * 1024);
    assert_true(r.agent_bytes < 64 * 1024);
    list_free(&f.entries);
    files_scan_free(s);
}

static void test_dry_run_and_changed_file(void **st)
{
    (void)st;
    fake_t f = {.dry_run = true};
    make_site();
    files_opts_t o = {.root = root,
                      .state_dir = state,
                      .excludes = default_excludes,
                      .n_excludes = 2,
                      .dry_run = true};
    files_scan_t *s = NULL;
    char err[1024];
    assert_int_equal(files_scan(&o, &s, err, sizeof(err)), 0);
    fflush(stdout);
    session_t r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.stats.needs, 5);
    assert_int_equal(r.stats.bytes_content, 0);
    files_scan_free(s);
    list_free(&f.entries);

    /* A file that changes between the scan and the send fails the sync, naming it. */
    s = scan();
    write_str("index.php", "<?php /* edited during the sync, longer */\n", 0644);
    memset(&f, 0, sizeof(f));
    r = run_session(s, &f, true, 0);
    assert_int_equal(r.rc, UV_EAGAIN);
    assert_non_null(strstr(r.err, "index.php changed"));
    list_free(&f.entries);
    files_scan_free(s);
}

static double mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_bandwidth_limit(void **st)
{
    (void)st;
    fake_t f = {0};
    uint8_t *data = malloc(1u << 20);
    random_bytes(data, 1u << 20, 5);
    write_bytes(root, "random.zip", data, 1u << 20, 0644);
    free(data);
    files_opts_t o = {.root = root, .state_dir = state, .bandwidth_limit = 4u << 20};
    files_scan_t *s = NULL;
    char err[1024];
    assert_int_equal(files_scan(&o, &s, err, sizeof(err)), 0);
    double t0 = mono_now();
    session_t r = run_session(s, &f, true, 0);
    double dt = mono_now() - t0;
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    /* 1 MiB at 4 MiB/s: a quarter of a second at least. */
    print_message("1 MiB with bandwidth_limit 4 MiB/s took %.2f s\n", dt);
    assert_true(dt >= 0.2);
    assert_true(dt < 2.0);
    list_free(&f.entries);
    files_scan_free(s);
}

static void test_state_lock(void **st)
{
    (void)st;
    make_site();
    files_scan_t *s = scan();
    files_opts_t o = {.root = root, .state_dir = state};
    files_scan_t *s2 = NULL;
    char err[1024];
    assert_int_equal(files_scan(&o, &s2, err, sizeof(err)), UV_EBUSY);
    assert_non_null(strstr(err, "another sync"));
    files_scan_free(s);
}

/* ---- the parallel walk and the lazy manifest ---- */

/* A tree of a few hundred directories, more than the read-ahead holds at once: names that sort
 * differently bytewise and in walk order ("d", "d-x", "d.x", "d/..."), empty directories, files,
 * symlinks. */
static void make_wide_tree(void)
{
    char rel[256], text[64];
    for (int i = 0; i < 24; i++) {
        snprintf(rel, sizeof(rel), "d%02d", i);
        make_dir(rel, 0755);
        snprintf(rel, sizeof(rel), "d%02d-x", i);
        write_str(rel, "dash\n", 0644);
        snprintf(rel, sizeof(rel), "d%02d.x", i);
        make_dir(rel, 0700);
        for (int j = 0; j < 12; j++) {
            snprintf(rel, sizeof(rel), "d%02d/s%02d", i, j);
            make_dir(rel, 0755);
            for (int k = 0; k < 3; k++) {
                snprintf(rel, sizeof(rel), "d%02d/s%02d/f%d.php", i, j, k);
                snprintf(text, sizeof(text), "<?php /* %d %d %d */\n", i, j, k);
                write_str(rel, text, 0644);
            }
            if (j % 4 == 0) {
                snprintf(rel, sizeof(rel), "d%02d/s%02d/deep", i, j);
                make_dir(rel, 0755);
                snprintf(rel, sizeof(rel), "d%02d/s%02d/deep/x", i, j);
                write_str(rel, "x\n", 0600);
                snprintf(rel, sizeof(rel), "d%02d/s%02d/link", i, j);
                make_link("f0.php", rel);
            }
        }
    }
    write_str("index.php", "<?php\n", 0644);
}

static void set_threads(const char *n)
{
    if (n)
        assert_int_equal(setenv("UNDERSTUDY_SCAN_THREADS", n, 1), 0);
    else
        assert_int_equal(unsetenv("UNDERSTUDY_SCAN_THREADS"), 0);
}

static uint8_t *read_state(const char *name, size_t *ret_len)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), state, name);
    return read_all(p, ret_len);
}

static bool state_has(const char *name)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), state, name);
    return access(p, F_OK) == 0;
}

/* Scans with threads readers and returns manifest.new's bytes (a first scan writes it). */
static uint8_t *scan_bytes(const char *threads, size_t *ret_len, uint8_t digest[MF_HASH_LEN],
                           uint64_t *ret_count)
{
    set_threads(threads);
    files_scan_t *s = scan();
    set_threads(NULL);
    uint8_t *b = read_state("manifest.new", ret_len);
    memcpy(digest, files_scan_digest(s), MF_HASH_LEN);
    *ret_count = files_scan_count(s);
    files_scan_free(s);
    assert_false(state_has("manifest.new"));
    return b;
}

static void test_threads_same_manifest(void **st)
{
    (void)st;
    uint8_t d1[MF_HASH_LEN], d[MF_HASH_LEN];
    size_t n1, n;
    uint64_t c1, c;

    make_wide_tree();
    uint8_t *one = scan_bytes("1", &n1, d1, &c1);
    assert_true(c1 > 1000);
    const char *const counts[] = {"2", "3", "4", NULL};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        uint8_t *b = scan_bytes(counts[i], &n, d, &c);
        assert_int_equal(n, n1);
        assert_memory_equal(b, one, n1);
        assert_memory_equal(d, d1, MF_HASH_LEN);
        assert_int_equal(c, c1);
        free(b);
    }
    free(one);
}

/* An unchanged rescan writes nothing: the saved manifest serves as this scan's, for the
 * listing and for commits, and nothing removes or renames it. */
static void test_unchanged_rescan_writes_no_manifest(void **st)
{
    (void)st;
    fake_t f = {0};
    char mp[PATH_MAX * 2];
    struct stat a, b;
    size_t n1, n2;

    make_wide_tree();
    age_tree();
    files_scan_t *s = scan();
    uint8_t d1[MF_HASH_LEN];
    memcpy(d1, files_scan_digest(s), MF_HASH_LEN);
    uint64_t c1 = files_scan_count(s);
    assert_int_equal(files_scan_commit(s, 7), 0);
    files_scan_free(s);
    at(mp, sizeof(mp), state, "manifest");
    assert_int_equal(stat(mp, &a), 0);
    uint8_t *saved = read_state("manifest", &n1);

    /* Unchanged, then freed without a commit (a failed session): the manifest stays. */
    s = scan();
    assert_false(state_has("manifest.new"));
    assert_int_equal(files_scan_hashed(s), 0);
    assert_int_equal(files_scan_base_generation(s), 7);
    assert_int_equal(files_scan_count(s), c1);
    assert_memory_equal(files_scan_digest(s), d1, MF_HASH_LEN);
    files_scan_free(s);
    assert_true(state_has("manifest"));

    /* Unchanged: incremental and full listings both work from the saved manifest. The scan
     * opened no change spools, and the incremental listing reads no manifest, whether it goes
     * by the digests or by the scan having found no difference. */
    s = scan();
    assert_false(s->have_changes);
    assert_false(state_has("changes.old"));
    assert_false(state_has("changes.new"));
    session_t r = run_session(s, &f, false, 7);
    assert_int_equal(r.rc, 0);
    assert_int_equal(f.entries.n, 0);
    list_free(&f.entries);
    memset(&f, 0, sizeof(f));
    s->have_base_digest = false;
    r = run_session(s, &f, false, 7);
    s->have_base_digest = true;
    assert_int_equal(r.rc, 0);
    assert_int_equal(f.entries.n, 0);
    list_free(&f.entries);
    memset(&f, 0, sizeof(f));
    f.dry_run = true;
    r = run_session(s, &f, true, 7);
    assert_int_equal(r.rc, 0);
    assert_string_equal(f.fail, "");
    assert_int_equal(f.entries.n, c1);
    assert_int_equal(f.count, c1);
    assert_memory_equal(f.digest, d1, MF_HASH_LEN);
    list_free(&f.entries);
    /* Committed for the same generation: nothing is written. */
    assert_int_equal(files_scan_commit(s, 7), 0);
    files_scan_free(s);
    assert_int_equal(stat(mp, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    assert_false(state_has("manifest.new"));

    /* Committed for another generation: saved again, the same bytes, with the new number. */
    s = scan();
    assert_false(state_has("manifest.new"));
    assert_int_equal(files_scan_commit(s, 8), 0);
    files_scan_free(s);
    assert_int_equal(stat(mp, &b), 0);
    assert_int_not_equal(a.st_ino, b.st_ino);
    /* with the saved manifest's mtime: the racy rule's reference is unchanged */
    assert_int_equal(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
    assert_int_equal(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
    uint8_t *again = read_state("manifest", &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(saved, again, n1);
    free(again);
    assert_false(state_has("manifest.new"));
    s = scan();
    assert_int_equal(files_scan_base_generation(s), 8);
    assert_int_equal(files_scan_hashed(s), 0);
    assert_memory_equal(files_scan_digest(s), d1, MF_HASH_LEN);
    files_scan_free(s);
    free(saved);
}

/* Scans into a fresh state directory and returns the manifest's bytes. */
static uint8_t *fresh_scan_bytes(size_t *ret_len, uint8_t digest[MF_HASH_LEN])
{
    char saved_state[sizeof(state)], p[PATH_MAX * 2];
    memcpy(saved_state, state, sizeof(state));
    if (snprintf(state, sizeof(state), "%s/fresh-state", tmp) >= (int)sizeof(state))
        fail_msg("path too long");
    files_scan_t *s = scan();
    uint8_t *b = read_state("manifest.new", ret_len);
    memcpy(digest, files_scan_digest(s), MF_HASH_LEN);
    files_scan_free(s);
    at(p, sizeof(p), state, "lock");
    unlink(p);
    at(p, sizeof(p), state, "dirs");
    unlink(p);
    assert_int_equal(rmdir(state), 0);
    memcpy(state, saved_state, sizeof(state));
    return b;
}

/* After a change the lazily started manifest.new is what a full scan writes, whatever the
 * place of the first difference. */
static void check_rescan_like_fresh(uint64_t generation)
{
    size_t n, nf;
    uint8_t d[MF_HASH_LEN], df[MF_HASH_LEN];
    files_scan_t *s = scan();
    uint8_t *b = read_state("manifest.new", &n);
    memcpy(d, files_scan_digest(s), MF_HASH_LEN);
    uint8_t *fresh = fresh_scan_bytes(&nf, df);
    assert_int_equal(n, nf);
    assert_memory_equal(b, fresh, n);
    assert_memory_equal(d, df, MF_HASH_LEN);
    assert_int_equal(files_scan_commit(s, generation), 0);
    files_scan_free(s);
    assert_false(state_has("manifest.new"));
    free(b);
    free(fresh);
}

static void test_changed_rescan_like_fresh(void **st)
{
    (void)st;
    char p[PATH_MAX * 2];
    make_wide_tree();
    age_tree();
    files_scan_t *s = scan();
    assert_int_equal(files_scan_commit(s, 1), 0);
    files_scan_free(s);

    write_str("d11/s05/f1.php", "<?php /* changed in the middle */\n", 0644);
    check_rescan_like_fresh(2);
    write_str("-first", "a new first entry\n", 0644);
    check_rescan_like_fresh(3);
    at(p, sizeof(p), root, "index.php"); /* the last entry of the walk */
    assert_int_equal(unlink(p), 0);
    check_rescan_like_fresh(4);
    at(p, sizeof(p), root, "d23/s11/f2.php"); /* the last entry again */
    assert_int_equal(chmod(p, 0600), 0);
    check_rescan_like_fresh(5);
    /* Unchanged after all that, the files just written are still racily clean: hashed again,
     * and the manifest written anew so that its newer mtime settles them. (The saved manifest
     * gets the mtime of the last file written, in case a second began since.) */
    struct stat fs;
    at(p, sizeof(p), root, "-first");
    assert_int_equal(stat(p, &fs), 0);
    at(p, sizeof(p), state, "manifest");
    struct timespec same[2] = {fs.st_mtim, fs.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, same, 0), 0);
    s = scan();
    assert_true(state_has("manifest.new"));
    assert_int_equal(files_scan_commit(s, 5), 0);
    files_scan_free(s);
    /* Settled (the saved manifest is seconds newer than every file): nothing written. */
    at(p, sizeof(p), state, "manifest");
    struct timespec later[2] = {{.tv_sec = time(NULL) + 10}, {.tv_sec = time(NULL) + 10}};
    assert_int_equal(utimensat(AT_FDCWD, p, later, 0), 0);
    s = scan();
    assert_false(state_has("manifest.new"));
    assert_int_equal(files_scan_base_generation(s), 5);
    files_scan_free(s);
}

/* Runs a scan of root as the user nobody when this test runs as root (root reads everything),
 * for the permission checks; returns the code and the error text. */
static int scan_unprivileged(const char *threads, char *err, size_t err_size)
{
    files_opts_t o = {
        .root = root, .state_dir = state, .excludes = default_excludes, .n_excludes = 2};
    files_scan_t *s = NULL;
    int r;

    set_threads(threads);
    if (geteuid() != 0) {
        r = files_scan(&o, &s, err, err_size);
        files_scan_free(s);
        set_threads(NULL);
        return r;
    }
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(100);
        r = files_scan(&o, &s, err, err_size);
        files_scan_free(s);
        (void)!write(pfd[1], &r, sizeof(r));
        (void)!write(pfd[1], err, strlen(err) + 1);
        _exit(0);
    }
    close(pfd[1]);
    set_threads(NULL);
    size_t got = 0;
    char buf[sizeof(int) + 1100];
    ssize_t n;
    while (got < sizeof(buf) && (n = read(pfd[0], buf + got, sizeof(buf) - got)) > 0)
        got += (size_t)n;
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 100)
        return INT_MIN; /* cannot become nobody here */
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(got > sizeof(int));
    memcpy(&r, buf, sizeof(int));
    buf[sizeof(buf) - 1] = '\0';
    size_t len = strnlen(buf + sizeof(int), err_size - 1);
    memcpy(err, buf + sizeof(int), len);
    err[len] = '\0';
    return r;
}

static int chmod_all(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_SL)
        return 0;
    chmod(path, S_ISDIR(sb->st_mode) ? 0755 : 0644);
    return 0;
}

static void test_unreadable_dir(void **st)
{
    (void)st;
    char p[PATH_MAX * 2], err[1024], want[PATH_MAX * 3];
    make_wide_tree();
    make_dir("d07/s03/locked", 0755);
    write_str("d07/s03/locked/secret", "secret\n", 0644);
    /* Everything readable by nobody, the state directory writable. */
    nftw(root, chmod_all, 16, FTW_PHYS);
    assert_int_equal(chmod(tmp, 0755), 0);
    assert_int_equal(mkdir(state, 0700), 0);
    if (geteuid() == 0)
        assert_int_equal(chown(state, 65534, 65534), 0);
    at(p, sizeof(p), root, "d07/s03/locked");
    assert_int_equal(chmod(p, 0), 0);
    snprintf(want, sizeof(want),
             "cannot open %s/d07/s03/locked: Permission denied; fix its permissions or add it to "
             "[site] exclude",
             root);
    const char *const counts[] = {"1", "2", "4"};
    for (size_t i = 0; i < 3; i++) {
        int r = scan_unprivileged(counts[i], err, sizeof(err));
        if (r == INT_MIN)
            skip();
        assert_int_equal(r, UV_EACCES);
        assert_string_equal(err, want);
    }
    /* Its file unreadable instead: the error names the file. */
    assert_int_equal(chmod(p, 0755), 0);
    at(p, sizeof(p), root, "d07/s03/locked/secret");
    assert_int_equal(chmod(p, 0), 0);
    snprintf(want, sizeof(want),
             "cannot read %s/d07/s03/locked/secret: Permission denied; fix its permissions or "
             "add it to [site] exclude",
             root);
    for (size_t i = 0; i < 3; i++) {
        int r = scan_unprivileged(counts[i], err, sizeof(err));
        assert_int_equal(r, UV_EACCES);
        assert_string_equal(err, want);
    }
    assert_int_equal(chmod(p, 0644), 0);
}

/* An error deep in the walk, with workers busy reading ahead, ends the scan cleanly (the ASan
 * build checks for leaks) and as before. */
static void test_too_deep(void **st)
{
    (void)st;
    char rel[4096] = "deep", err[1024];
    size_t len = 4;
    make_wide_tree();
    make_dir(rel, 0755);
    for (int i = 0; i < 257; i++) {
        memcpy(rel + len, "/n", 3);
        len += 2;
        make_dir(rel, 0755);
    }
    const char *const counts[] = {"1", "2", "4"};
    for (size_t i = 0; i < 3; i++) {
        files_opts_t o = {.root = root, .state_dir = state};
        files_scan_t *s = NULL;
        set_threads(counts[i]);
        int r = files_scan(&o, &s, err, sizeof(err));
        set_threads(NULL);
        assert_int_equal(r, UV_ELOOP);
        assert_null(s);
        assert_non_null(strstr(err, "directories nested deeper than 256 levels at"));
        assert_false(state_has("manifest.new"));
        assert_false(state_has("dirs.new"));
    }
}

/* ---- the directory cache ---- */

/* A directory's entries change its mtime and ctime; a listing is trusted only when both are
 * more than a second older than the listing. */
static void sleep_past_racy_margin(void)
{
    struct timespec t = {1, 100000000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

static size_t n_dirs_found;

static int count_dir(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)st;
    (void)ftw;
    if (flag == FTW_D)
        n_dirs_found++;
    return 0;
}

/* The directories in the site, the root included. */
static size_t count_dirs(void)
{
    n_dirs_found = 0;
    nftw(root, count_dir, 16, FTW_PHYS);
    return n_dirs_found;
}

typedef struct dc_result {
    uint8_t *manifest; /* manifest.new's bytes */
    size_t len;
    uint64_t listed, cached;
} dc_result_t;

/* Scans with threads readers (NULL: the default), reading the directory cache unless no_cache,
 * with the excludes ex; nothing is committed, so manifest.new holds the whole manifest. */
static dc_result_t dc_scan(const char *threads, bool no_cache, const char *const *ex, size_t n_ex)
{
    dc_result_t out;
    set_threads(threads);
    if (no_cache)
        assert_int_equal(setenv("UNDERSTUDY_SCAN_NO_DIRCACHE", "1", 1), 0);
    files_scan_t *s = scan_with(ex, n_ex);
    assert_int_equal(unsetenv("UNDERSTUDY_SCAN_NO_DIRCACHE"), 0);
    set_threads(NULL);
    out.manifest = read_state("manifest.new", &out.len);
    out.listed = files_scan_dirs_listed(s);
    out.cached = files_scan_dirs_cached(s);
    files_scan_free(s);
    assert_false(state_has("manifest.new"));
    assert_false(state_has("dirs.new"));
    return out;
}

static void same_manifest(const dc_result_t *a, const dc_result_t *b)
{
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->manifest, b->manifest, a->len);
}

static void dirs_stat(struct stat *st)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), state, "dirs");
    assert_int_equal(stat(p, st), 0);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Tests on a tree that none of them changes share one, built once and then left older than the
 * racy margin (one sleep for them all); each has its own state directory. */
static char aged_tmp[PATH_MAX], aged_root[PATH_MAX + 8];

static int aged_group_setup(void **st)
{
    if (setup(st) != 0)
        return -1;
    make_wide_tree();
    /* For the excludes: a directory and a file the default excludes and *.log leave out. */
    make_dir("wp-content", 0755);
    make_dir("wp-content/cache", 0755);
    write_str("wp-content/cache/page.html", "cached\n", 0644);
    write_str("wp-content/debug.log", "log\n", 0644);
    age_tree();
    memcpy(aged_tmp, tmp, sizeof(tmp));
    memcpy(aged_root, root, sizeof(root));
    sleep_past_racy_margin();
    return 0;
}

static int aged_group_teardown(void **st)
{
    memcpy(tmp, aged_tmp, sizeof(tmp));
    return teardown(st);
}

static int aged_setup(void **st)
{
    if (setup(st) != 0)
        return -1;
    memcpy(root, aged_root, sizeof(root));
    return 0;
}

/* The walk's directories in the shared tree with the default excludes. */
static size_t aged_walked_dirs(void)
{
    return count_dirs() - 1; /* wp-content/cache */
}

/* An unchanged rescan lists no directory, writes the same manifest as a scan that does not read
 * the cache, and leaves the cache file alone; every number of reading threads agrees. */
static void test_dircache_unchanged(void **st)
{
    (void)st;
    size_t ndirs = aged_walked_dirs();
    struct stat a, b;

    assert_true(ndirs > 400);
    dc_result_t first = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(first.listed, ndirs); /* no cache yet */
    assert_int_equal(first.cached, 0);
    dirs_stat(&a);

    dc_result_t again = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(again.listed, 0);
    assert_int_equal(again.cached, ndirs);
    same_manifest(&again, &first);
    dirs_stat(&b);
    assert_true(same_file(&a, &b));

    dc_result_t plain = dc_scan(NULL, true, default_excludes, 2);
    assert_int_equal(plain.listed, ndirs);
    assert_int_equal(plain.cached, 0);
    same_manifest(&again, &plain);

    const char *const counts[] = {"1", "2", "3", "4"};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        dc_result_t t = dc_scan(counts[i], false, default_excludes, 2);
        assert_int_equal(t.listed, 0);
        assert_int_equal(t.cached, ndirs);
        same_manifest(&t, &first);
        free(t.manifest);
        dc_result_t u = dc_scan(counts[i], true, default_excludes, 2);
        assert_int_equal(u.listed, ndirs);
        same_manifest(&u, &first);
        free(u.manifest);
    }
    /* The last scan above did not read the cache, so it wrote it; the ones reading it do not. */
    dirs_stat(&a);
    free(dc_scan("1", false, default_excludes, 2).manifest);
    free(dc_scan("4", false, default_excludes, 2).manifest);
    dirs_stat(&b);
    assert_true(same_file(&a, &b));

    /* A cache not written for over a day is not read: every directory is listed, and the cache
     * written anew is read by the next scan. */
    char p[PATH_MAX * 2];
    at(p, sizeof(p), state, "dirs");
    struct timespec old[2] = {{.tv_sec = time(NULL) - 25 * 3600},
                              {.tv_sec = time(NULL) - 25 * 3600}};
    assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
    dc_result_t stale = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(stale.listed, ndirs);
    same_manifest(&stale, &first);
    dc_result_t fresh = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(fresh.listed, 0);
    assert_int_equal(fresh.cached, ndirs);
    free(stale.manifest);
    free(fresh.manifest);
    free(first.manifest);
    free(again.manifest);
    free(plain.manifest);
}

/* Writes bytes over the cache file at off (or replaces it with them when off < 0). */
static void damage_dirs(long off, const void *bytes, size_t n)
{
    char p[PATH_MAX * 2];
    at(p, sizeof(p), state, "dirs");
    int fd = open(p, off < 0 ? O_WRONLY | O_TRUNC : O_WRONLY);
    assert_true(fd >= 0);
    if (n)
        assert_int_equal(pwrite(fd, bytes, n, off < 0 ? 0 : off), (ssize_t)n);
    assert_int_equal(close(fd), 0);
}

/* A damaged cache is no cache: the directories are listed, the manifest is the same, no error;
 * the scan then writes a good cache again. A dirs.new left by an interrupted run goes. */
static void test_dircache_damaged(void **st)
{
    (void)st;
    size_t ndirs = aged_walked_dirs(), len;
    char p[PATH_MAX * 2];
    struct stat sb;

    dc_result_t ref = dc_scan(NULL, true, default_excludes, 2);
    dc_result_t ok = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(ok.cached, ndirs);
    free(ok.manifest);
    dirs_stat(&sb);
    size_t size = (size_t)sb.st_size;

    for (int kind = 0; kind < 6; kind++) {
        uint8_t *saved = read_state("dirs", &len), *junk;
        uint64_t want_listed = ndirs;
        switch (kind) {
        case 0: /* a byte flipped in the first record (offset 16, after the header) */
            saved[16 + 20] ^= 0x40;
            damage_dirs(0, saved, len);
            want_listed = 1;
            break;
        case 1: /* a byte flipped in the middle: one record or another, never none */
            saved[len / 2] ^= 0x01;
            damage_dirs(0, saved, len);
            want_listed = 0; /* checked below: at least one */
            break;
        case 2: /* truncated: the trailer with the root's record is gone */
            damage_dirs(-1, saved, len / 2);
            break;
        case 3: /* garbage of the same size */
            junk = malloc(len);
            random_bytes(junk, len, 99);
            damage_dirs(-1, junk, len);
            free(junk);
            break;
        case 4: /* empty */
            damage_dirs(-1, NULL, 0);
            break;
        case 5: /* the trailer's root offset points into the middle of a record */
            memcpy(saved + len - 16, &(uint64_t){len / 2 + 3}, 8);
            damage_dirs(0, saved, len);
            break;
        }
        free(saved);
        dc_result_t d = dc_scan(NULL, false, default_excludes, 2);
        same_manifest(&d, &ref);
        if (kind == 1)
            assert_true(d.listed >= 1 && d.listed < ndirs);
        else
            assert_int_equal(d.listed, want_listed);
        assert_int_equal(d.listed + d.cached, ndirs);
        free(d.manifest);
        /* Rewritten whole and good. */
        dirs_stat(&sb);
        assert_int_equal((size_t)sb.st_size, size);
        d = dc_scan(NULL, false, default_excludes, 2);
        assert_int_equal(d.cached, ndirs);
        free(d.manifest);
    }

    at(p, sizeof(p), state, "dirs.new");
    write_bytes(state, "dirs.new", "stale", 5, 0600);
    dc_result_t d = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(d.cached, ndirs);
    assert_int_equal(access(p, F_OK), -1);
    free(d.manifest);
    free(ref.manifest);
}

/* The cache holds whole listings: names an exclude pattern dropped appear when it is removed,
 * although their directory is not listed again. */
static void test_dircache_exclude_removed(void **st)
{
    (void)st;
    const char *const ex[] = {"wp-content/cache/", "*.log"};
    size_t ndirs = count_dirs();
    entlist_t l = {0};

    dc_result_t d = dc_scan(NULL, false, ex, 2);
    assert_int_equal(d.listed, ndirs - 1);
    free(d.manifest);
    d = dc_scan(NULL, false, ex, 2);
    assert_int_equal(d.listed, 0);
    assert_int_equal(d.cached, ndirs - 1);
    free(d.manifest);

    dc_result_t all = dc_scan(NULL, false, NULL, 0);
    assert_int_equal(all.listed, 1); /* wp-content/cache, which has no record */
    assert_int_equal(all.cached, ndirs - 1);
    dc_result_t ref = dc_scan(NULL, true, NULL, 0);
    same_manifest(&all, &ref);
    /* manifest.new is gone; read the same bytes from a copy. */
    write_bytes(state, "check", all.manifest, all.len, 0600);
    read_manifest("check", &l);
    assert_non_null(list_find(&l, "wp-content/debug.log"));
    assert_non_null(list_find(&l, "wp-content/cache/page.html"));
    list_free(&l);
    free(all.manifest);
    free(ref.manifest);
}

/* Creations, removals, renames, kind changes and a directory removed and made again under the
 * same name are all seen; only the directories they touched are listed, and listed again by a
 * scan right after (their records are within the racy margin). */
static void test_dircache_changes(void **st)
{
    (void)st;
    char p[PATH_MAX * 2], q[PATH_MAX * 2];
    struct stat a, b;

    make_wide_tree();
    age_tree();
    sleep_past_racy_margin();
    free(dc_scan(NULL, false, default_excludes, 2).manifest);
    dc_result_t d = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(d.listed, 0);
    free(d.manifest);

    /* Touched: d01/s01, d02/s02, d03/s03, d04/s04, d05/s05 and its new f2.php, d06 and its
     * new s08 and s08/deep, d07/s01 and d07/s02 -- 11 directories. */
    write_str("d01/s01/new.php", "<?php /* new */\n", 0644);
    at(p, sizeof(p), root, "d02/s02/f1.php");
    assert_int_equal(unlink(p), 0);
    at(p, sizeof(p), root, "d03/s03/f0.php");
    at(q, sizeof(q), root, "d03/s03/renamed.php");
    assert_int_equal(rename(p, q), 0);
    at(p, sizeof(p), root, "d04/s04/deep/x"); /* a directory becomes a file */
    assert_int_equal(unlink(p), 0);
    at(p, sizeof(p), root, "d04/s04/deep");
    assert_int_equal(rmdir(p), 0);
    write_str("d04/s04/deep", "now a file\n", 0644);
    at(p, sizeof(p), root, "d05/s05/f2.php"); /* a file becomes a directory */
    assert_int_equal(unlink(p), 0);
    make_dir("d05/s05/f2.php", 0755);
    write_str("d05/s05/f2.php/inside", "inside\n", 0644);
    at(p, sizeof(p), root, "d06/s08"); /* rm -r, then the same names again */
    nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    make_dir("d06/s08", 0755);
    make_dir("d06/s08/deep", 0755);
    write_str("d06/s08/deep/x", "again\n", 0600);
    write_str("d06/s08/f0.php", "<?php /* again */\n", 0644);
    at(p, sizeof(p), root, "d07/s01/f0.php"); /* moved to another directory */
    at(q, sizeof(q), root, "d07/s02/moved.php");
    assert_int_equal(rename(p, q), 0);

    size_t ndirs = count_dirs(), nf;
    uint8_t df[MF_HASH_LEN];
    dirs_stat(&a);
    d = dc_scan(NULL, false, default_excludes, 2);
    uint8_t *fresh = fresh_scan_bytes(&nf, df); /* no cache at all */
    assert_int_equal(d.len, nf);
    assert_memory_equal(d.manifest, fresh, nf);
    assert_int_equal(d.listed, 11);
    assert_int_equal(d.cached, ndirs - 11);
    free(d.manifest);
    free(fresh);
    dirs_stat(&b);
    assert_int_not_equal(a.st_ino, b.st_ino);

    /* Right away again: nothing changed, but the 11 new records were made in the same second
     * as the changes, so they are not trusted. */
    dc_result_t racy = dc_scan(NULL, false, default_excludes, 2);
    assert_int_equal(racy.listed, 11);
    assert_int_equal(racy.cached, ndirs - 11);
    dc_result_t plain = dc_scan(NULL, true, default_excludes, 2);
    same_manifest(&racy, &plain);
    free(racy.manifest);
    free(plain.manifest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exclude_rules),
        cmocka_unit_test_setup_teardown(test_walk_order_excludes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unchanged_scan_reads_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unchanged_commit_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racy_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incremental_vs_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delta_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dry_run_and_changed_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bandwidth_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_same_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unchanged_rescan_writes_no_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_rescan_like_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_deep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dircache_changes, setup, teardown),
    };
    const struct CMUnitTest aged_tests[] = {
        cmocka_unit_test_setup_teardown(test_dircache_unchanged, aged_setup, teardown),
        cmocka_unit_test_setup_teardown(test_dircache_damaged, aged_setup, teardown),
        cmocka_unit_test_setup_teardown(test_dircache_exclude_removed, aged_setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("aged tree", aged_tests, aged_group_setup, aged_group_teardown);
    return failed;
}
