/* Tests for the controller's files phase and generations (controller/files.h, generation.h):
 * a fake agent thread on an in-memory msgpipe lists a real directory tree and answers the
 * controller's needs (FileData, zstd or raw, and librsync deltas); the test checks the docroot
 * against the source tree with its own walk (content, kinds, modes, mtimes, link targets),
 * hard-link sharing between generations, retention, rollback, refusals that leave the live
 * generation untouched and staging clean, resume of a cut transfer, and journal recovery. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <librsync.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "err.h"
#include "files.h"
#include "generation.h"
#include "genpriv.h"
#include "manifest.h"
#include "msgpipe.h"

/* snprintf into a PATH_MAX buffer (every path buffer here is one). */
static void fmt(char *out, const char *f, ...) __attribute__((format(printf, 2, 3)));

static void fmt(char *out, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, PATH_MAX, f, ap);
    va_end(ap);
    assert_true(n >= 0 && n < PATH_MAX);
}

/* ---- the source tree, as the agent sees it ---- */

typedef struct fent {
    char *path;
    mf_kind_t kind;
    uint32_t mode;
    int64_t mtime_ns;
    uint64_t size;
    uint8_t hash[MF_HASH_LEN];
    char *target;
    bool deleted;
} fent_t;

typedef struct flist {
    fent_t *v;
    size_t n, cap;
} flist_t;

static void flist_push(flist_t *l, const fent_t *e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        assert_non_null(l->v);
    }
    l->v[l->n] = *e;
    l->v[l->n].path = strdup(e->path);
    l->v[l->n].target = e->target ? strdup(e->target) : NULL;
    l->n++;
}

static void flist_free(flist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].path);
        free(l->v[i].target);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static void sha256_file(const char *path, uint8_t out[MF_HASH_LEN])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    char buf[65536];
    unsigned int n = 0;
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (ssize_t k; (k = read(fd, buf, sizeof(buf))) > 0;)
        EVP_DigestUpdate(c, buf, (size_t)k);
    close(fd);
    EVP_DigestFinal_ex(c, out, &n);
    EVP_MD_CTX_free(c);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks root/rel in walk order (sorted names, depth first). */
static void scan_dir(const char *root, const char *rel, flist_t *out)
{
    char dir[PATH_MAX], full[PATH_MAX], sub[PATH_MAX];
    fmt(dir, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    assert_non_null(d);
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        fmt(sub, "%s%s%s", rel, rel[0] ? "/" : "", names[i]);
        fmt(full, "%s/%s", root, sub);
        assert_int_equal(lstat(full, &st), 0);
        fent_t e = {.path = sub,
                    .mode = st.st_mode & 07777,
                    .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec};
        char target[PATH_MAX];
        if (S_ISDIR(st.st_mode)) {
            e.kind = MF_DIRECTORY;
            flist_push(out, &e);
            scan_dir(root, sub, out);
        } else if (S_ISLNK(st.st_mode)) {
            ssize_t k = readlink(full, target, sizeof(target) - 1);
            assert_true(k > 0);
            target[k] = '\0';
            e.kind = MF_SYMLINK;
            e.mode = 0777;
            e.target = target;
            flist_push(out, &e);
        } else {
            e.kind = MF_REGULAR;
            e.size = (uint64_t)st.st_size;
            sha256_file(full, e.hash);
            flist_push(out, &e);
        }
        free(names[i]);
    }
    free(names);
}

static void to_mf(const fent_t *f, mf_entry_t *e)
{
    memset(e, 0, sizeof(*e));
    e->path = f->path;
    e->kind = f->kind;
    e->mode = f->mode;
    e->mtime_ns = f->mtime_ns;
    e->size = f->size;
    memcpy(e->hash, f->hash, MF_HASH_LEN);
    e->link_target = f->target;
}

static void digest_of(const flist_t *l, uint8_t out[MF_HASH_LEN])
{
    mf_digest_t d;
    assert_int_equal(mf_digest_init(&d), 0);
    for (size_t i = 0; i < l->n; i++) {
        mf_entry_t e;
        to_mf(&l->v[i], &e);
        mf_digest_add(&d, &e);
    }
    mf_digest_final(&d, out);
}

static bool fent_same(const fent_t *a, const fent_t *b)
{
    return a->kind == b->kind && a->mode == b->mode && a->mtime_ns == b->mtime_ns &&
           a->size == b->size && !memcmp(a->hash, b->hash, MF_HASH_LEN) &&
           !strcmp(a->target ? a->target : "", b->target ? b->target : "");
}

static bool is_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && path[n] == '/';
}

/* The incremental listing from old to new: changes, and deletions (only the topmost of a
 * removed subtree, and none under a directory replaced by another kind). */
static void diff(const flist_t *old, const flist_t *new, flist_t *out)
{
    size_t i = 0, j = 0;
    const char *gone = NULL;
    while (i < old->n || j < new->n) {
        int c = i == old->n ? 1 : j == new->n ? -1 : mf_path_cmp(old->v[i].path, new->v[j].path);
        if (c < 0) {
            if (!(gone && is_under(old->v[i].path, gone))) {
                fent_t e = old->v[i];
                e.deleted = true;
                e.target = NULL;
                flist_push(out, &e);
                if (old->v[i].kind == MF_DIRECTORY)
                    gone = old->v[i].path;
            }
            i++;
        } else if (c > 0) {
            flist_push(out, &new->v[j++]);
        } else {
            if (!fent_same(&old->v[i], &new->v[j]))
                flist_push(out, &new->v[j]);
            if (old->v[i].kind == MF_DIRECTORY && new->v[j].kind != MF_DIRECTORY)
                gone = old->v[i].path;
            i++;
            j++;
        }
    }
}

/* ---- the fake agent ---- */

typedef struct agent {
    msgio_t io;
    msgpipe_t *pipe;
    const char *src;
    const flist_t *list;
    uint8_t digest[MF_HASH_LEN];
    bool zstd;
    uint64_t cut_after; /* close the pipe after this many content bytes (0: never) */
    /* what happened */
    size_t needs, deltas;
    uint64_t resume_seen, content_bytes;
} agent_t;

typedef struct aneed {
    char *path;
    wire_transfer_t transfer;
    uint8_t *sig;
    size_t sig_len;
    uint64_t resume;
} aneed_t;

static int send_chunked_delta(agent_t *a, const aneed_t *n, const char *full)
{
    FILE *sigf = fmemopen(n->sig, n->sig_len, "rb");
    rs_signature_t *sums = NULL;
    char *dbuf = NULL;
    size_t dlen = 0;
    assert_non_null(sigf);
    assert_int_equal(rs_loadsig_file(sigf, &sums, NULL), RS_DONE);
    fclose(sigf);
    assert_int_equal(rs_build_hash_table(sums), RS_DONE);
    FILE *nf = fopen(full, "rb");
    FILE *df = open_memstream(&dbuf, &dlen);
    assert_int_equal(rs_delta_file(sums, nf, df, NULL), RS_DONE);
    fclose(nf);
    fclose(df);
    rs_free_sumset(sums);
    size_t off = 0;
    int r = 0;
    do {
        size_t k = dlen - off < 65536 ? dlen - off : 65536;
        wire_msg_t m = {.type = WIRE_FILE_DELTA};
        m.u.file_delta.path.data = (const uint8_t *)n->path;
        m.u.file_delta.path.len = strlen(n->path);
        m.u.file_delta.delta.data = (const uint8_t *)dbuf + off;
        m.u.file_delta.delta.len = k;
        m.u.file_delta.last = off + k == dlen;
        r = msgio_send(&a->io, &m);
        off += k;
        a->content_bytes += k;
    } while (r == 0 && off < dlen);
    free(dbuf);
    a->deltas++;
    return r;
}

static int send_whole(agent_t *a, const aneed_t *n, const char *full)
{
    static char buf[100 * 1024];
    char z[ZSTD_COMPRESSBOUND(sizeof(buf))];
    int fd = open(full, O_RDONLY);
    uint64_t off = n->resume;
    int r = 0;
    bool last;
    assert_true(fd >= 0);
    if (n->resume)
        a->resume_seen += n->resume;
    do {
        ssize_t k = pread(fd, buf, sizeof(buf), (off_t)off);
        assert_true(k >= 0);
        struct stat st;
        fstat(fd, &st);
        last = off + (uint64_t)k >= (uint64_t)st.st_size;
        wire_msg_t m = {.type = WIRE_FILE_DATA};
        m.u.file_data.path.data = (const uint8_t *)n->path;
        m.u.file_data.path.len = strlen(n->path);
        m.u.file_data.offset = off;
        m.u.file_data.last = last;
        if (a->zstd) {
            size_t zl = ZSTD_compress(z, sizeof(z), buf, (size_t)k, 3);
            assert_false(ZSTD_isError(zl));
            m.u.file_data.zstd = true;
            m.u.file_data.data.data = (const uint8_t *)z;
            m.u.file_data.data.len = zl;
        } else {
            m.u.file_data.data.data = (const uint8_t *)buf;
            m.u.file_data.data.len = (size_t)k;
        }
        r = msgio_send(&a->io, &m);
        off += (uint64_t)k;
        a->content_bytes += (uint64_t)k;
        if (a->cut_after && a->content_bytes >= a->cut_after) {
            close(fd);
            return ERR_PEER_CLOSED;
        }
    } while (r == 0 && !last);
    close(fd);
    return r;
}

static void *agent_main(void *arg)
{
    agent_t *a = arg;
    aneed_t *needs = NULL;
    size_t n = 0;
    wire_msg_t *m = NULL;
    int r = 0;

    for (size_t i = 0; i < a->list->n && r == 0; i++) {
        const fent_t *f = &a->list->v[i];
        wire_msg_t e = {.type = WIRE_FILE_ENTRY};
        e.u.file_entry.path.data = (const uint8_t *)f->path;
        e.u.file_entry.path.len = strlen(f->path);
        e.u.file_entry.kind = (wire_file_kind_t)f->kind;
        e.u.file_entry.mode = f->mode;
        e.u.file_entry.mtime_ns = f->mtime_ns;
        e.u.file_entry.size = f->size;
        e.u.file_entry.deleted = f->deleted;
        if (f->kind == MF_REGULAR && !f->deleted) {
            e.u.file_entry.hash.data = f->hash;
            e.u.file_entry.hash.len = MF_HASH_LEN;
        }
        if (f->target) {
            e.u.file_entry.link_target.data = (const uint8_t *)f->target;
            e.u.file_entry.link_target.len = strlen(f->target);
        }
        r = msgio_send(&a->io, &e);
    }
    wire_msg_t end = {.type = WIRE_FILES_END};
    end.u.files_end.tree_digest.data = a->digest;
    end.u.files_end.tree_digest.len = MF_HASH_LEN;
    if (r == 0)
        r = msgio_send(&a->io, &end);
    while (r == 0 && (r = msgio_recv(&a->io, &m, 0)) == 1) {
        if (m->type == WIRE_FILES_NEED_END) {
            wire_msg_free(m);
            r = 0;
            break;
        }
        assert_int_equal(m->type, WIRE_FILE_NEED);
        needs = realloc(needs, (n + 1) * sizeof(*needs));
        aneed_t *x = &needs[n++];
        x->path = strndup((const char *)m->u.file_need.path.data, m->u.file_need.path.len);
        x->transfer = m->u.file_need.transfer;
        x->resume = m->u.file_need.resume_offset;
        x->sig_len = m->u.file_need.signature.len;
        x->sig = malloc(x->sig_len + 1);
        if (x->sig_len)
            memcpy(x->sig, m->u.file_need.signature.data, x->sig_len);
        wire_msg_free(m);
        r = 0;
    }
    a->needs = n;
    for (size_t i = 0; i < n && r == 0; i++) {
        char full[PATH_MAX];
        fmt(full, "%s/%s", a->src, needs[i].path);
        r = needs[i].transfer == WIRE_TRANSFER_DELTA ? send_chunked_delta(a, &needs[i], full)
                                                     : send_whole(a, &needs[i], full);
    }
    for (size_t i = 0; i < n; i++) {
        free(needs[i].path);
        free(needs[i].sig);
    }
    free(needs);
    msgpipe_close(a->pipe, 1);
    return NULL;
}

/* ---- fixture ---- */

typedef struct fx fx_t;
struct fx {
    char dir[PATH_MAX], src[PATH_MAX], data[PATH_MAX], docroot[PATH_MAX];
    gen_opts_t opts;
    gen_store_t *g;
    flist_t last; /* what the live generation holds */
    char err[1024];
    files_rx_stats_t stats;
    uint64_t wire_bytes;      /* agent -> controller */
    const flist_t *forced;    /* a crafted full listing instead of the source tree's */
    bool bad_digest;          /* announce a digest that is not the listing's */
    void (*between)(fx_t *f); /* called after the files are received, before the commit */
};

extern char **environ;

/* Runs argv, no shell, in dir (NULL: here); returns its exit status, -1 when it did not run. */
static int run_argv(const char *dir, const char *const argv[])
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st, r;

    posix_spawn_file_actions_init(&fa);
    if (dir)
        posix_spawn_file_actions_addchdir_np(&fa, dir);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void run_must(const char *dir, const char *const argv[])
{
    if (run_argv(dir, argv) != 0)
        fail_msg("%s %s failed (in %s)", argv[0], argv[1] ? argv[1] : "", dir ? dir : ".");
}

/* RUN(dir, "program", args...): runs it in dir (NULL: here); it must succeed. */
#define RUN(dir, ...) run_must((dir), (const char *const[]){__VA_ARGS__, NULL})

/* The shell's `echo TEXT > dir/rel` (mode "w") and `>>` (mode "a"); rel NULL: dir is the file. */
static void text_at(const char *dir, const char *rel, const char *text, const char *mode)
{
    char p[PATH_MAX];
    fmt(p, "%s%s%s", dir, rel ? "/" : "", rel ? rel : "");
    FILE *o = fopen(p, mode);
    assert_non_null(o);
    fputs(text, o);
    assert_int_equal(fclose(o), 0);
}

static void put(fx_t *f, const char *rel, const char *content, mode_t mode, time_t mtime)
{
    char p[PATH_MAX];
    fmt(p, "%s/%s", f->src, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    fchmod(fd, mode);
    struct timespec ts[2] = {{mtime, 123456789}, {mtime, 123456789}};
    futimens(fd, ts);
    close(fd);
}

static void put_big(fx_t *f, const char *rel, size_t size, unsigned seed)
{
    char p[PATH_MAX];
    fmt(p, "%s/%s", f->src, rel);
    FILE *out = fopen(p, "wb");
    assert_non_null(out);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < size; i++) {
        x = x * 1103515245u + 12345u;
        fputc((int)(x >> 24), out);
    }
    fclose(out);
}

/* cp -p: to within the source tree, with from's content, mode and mtime. */
static void copy_file(fx_t *f, const char *from, const char *to)
{
    char p[PATH_MAX], q[PATH_MAX];
    struct stat st;
    fmt(p, "%s/%s", f->src, from);
    fmt(q, "%s/%s", f->src, to);
    int in = open(p, O_RDONLY);
    assert_true(in >= 0);
    assert_int_equal(fstat(in, &st), 0);
    int out = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(out >= 0);
    for (off_t left = st.st_size; left > 0;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        assert_true(n > 0);
        left -= n;
    }
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(fchmod(out, st.st_mode & 07777), 0);
    assert_int_equal(futimens(out, ts), 0);
    close(in);
    close(out);
}

/* Appends n zero bytes to rel in the source tree. */
static void append_zeros(fx_t *f, const char *rel, size_t n)
{
    char p[PATH_MAX];
    fmt(p, "%s/%s", f->src, rel);
    int fd = open(p, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    void *zeros = calloc(1, n);
    assert_int_equal(write(fd, zeros, n), (ssize_t)n);
    free(zeros);
    close(fd);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    fmt(f->dir, "%s/test-generation.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    fmt(f->src, "%s/src", f->dir);
    fmt(f->data, "%s/data", f->dir);
    fmt(f->docroot, "%s/www", f->dir);
    mkdir(f->src, 0755);
    f->opts = (gen_opts_t){.data = f->data,
                           .docroot = f->docroot,
                           .owner = geteuid() == 0 ? "nobody:nogroup" : "",
                           .keep = 3,
                           .max_files = 1000,
                           .max_file_size = 64u << 20,
                           .max_total_size = 256u << 20};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    gen_store_close(f->g);
    flist_free(&f->last);
    (void)run_argv(NULL, (const char *const[]){"chmod", "-R", "u+rwX", f->dir, NULL});
    RUN(NULL, "rm", "-rf", f->dir);
    free(f);
    return 0;
}

static void open_store(fx_t *f, const gen_hooks_t *hooks)
{
    gen_store_close(f->g);
    f->g = NULL;
    int r = gen_store_open(&f->opts, hooks, &f->g, f->err, sizeof(f->err));
    if (r < 0)
        fail_msg("gen_store_open: %s", f->err);
}

/* One files phase + commit against the current source tree; the listing is full when the store
 * has no live generation or when full is set. Returns stage_*'s code; *gen the generation. */
static int sync_tree(fx_t *f, bool full, bool zstd, uint64_t cut_after, uint64_t *gen,
                     agent_t *ret_agent)
{
    flist_t now = {0}, listing = {0};
    if (f->forced)
        for (size_t i = 0; i < f->forced->n; i++)
            flist_push(&now, &f->forced->v[i]);
    else
        scan_dir(f->src, "", &now);
    full = full || f->forced || gen_store_live(f->g) == 0;
    if (full)
        for (size_t i = 0; i < now.n; i++)
            flist_push(&listing, &now.v[i]);
    else
        diff(&f->last, &now, &listing);

    agent_t a = {.src = f->src, .list = &listing, .zstd = zstd, .cut_after = cut_after};
    digest_of(&now, a.digest);
    if (f->bad_digest)
        a.digest[0] ^= 1;
    a.pipe = msgpipe_new(1u << 20);
    a.io = msgpipe_end(a.pipe, 1);
    msgio_t io = msgpipe_end(a.pipe, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, agent_main, &a), 0);

    stage_t *st = NULL;
    memset(&f->stats, 0, sizeof(f->stats));
    f->err[0] = '\0';
    int r = stage_begin(f->g, &st, f->err, sizeof(f->err));
    if (r == 0) {
        r = stage_receive_files(st, &io, full, false, &f->stats, f->err, sizeof(f->err));
        if (r == 0 && f->between)
            f->between(f);
        if (r == 0)
            r = stage_commit(st, a.digest, gen, f->err, sizeof(f->err));
        else
            stage_abort(st);
    }
    msgpipe_close(a.pipe, 0);
    pthread_join(t, NULL);
    f->wire_bytes = msgpipe_bytes(a.pipe, 1);
    msgpipe_free(a.pipe);
    if (r >= 0) {
        flist_free(&f->last);
        f->last = now;
    } else {
        flist_free(&now);
    }
    flist_free(&listing);
    if (ret_agent)
        *ret_agent = a;
    return r;
}

/* Compares the docroot with the source: same entries, kinds, modes, mtimes, contents and link
 * targets, and the owner when running as root. */
static void compare_tree(fx_t *f)
{
    flist_t a = {0}, b = {0};
    scan_dir(f->src, "", &a);
    scan_dir(f->docroot, "", &b);
    for (size_t i = 0; i < a.n && i < b.n; i++) {
        if (strcmp(a.v[i].path, b.v[i].path))
            fail_msg("entry %zu: source '%s', docroot '%s'", i, a.v[i].path, b.v[i].path);
        if (!fent_same(&a.v[i], &b.v[i]))
            fail_msg("'%s' differs (kind %d/%d mode %o/%o mtime %" PRId64 "/%" PRId64 ")",
                     a.v[i].path, a.v[i].kind, b.v[i].kind, a.v[i].mode, b.v[i].mode,
                     a.v[i].mtime_ns, b.v[i].mtime_ns);
        if (geteuid() == 0) {
            char p[PATH_MAX];
            struct stat st;
            fmt(p, "%s/%s", f->docroot, b.v[i].path);
            assert_int_equal(lstat(p, &st), 0);
            assert_int_equal(st.st_uid, 65534);
        }
    }
    assert_int_equal(a.n, b.n);
    flist_free(&a);
    flist_free(&b);
}

static uint64_t docroot_gen(fx_t *f)
{
    char link[PATH_MAX];
    ssize_t n = readlink(f->docroot, link, sizeof(link) - 1);
    if (n < 0)
        return 0;
    link[n] = '\0';
    char *p = strstr(link, "/generations/");
    assert_non_null(p);
    return strtoull(p + 13, NULL, 10);
}

static size_t count_dir(const char *path)
{
    DIR *d = opendir(path);
    size_t n = 0;
    if (!d)
        return 0;
    for (struct dirent *de; (de = readdir(d));)
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

/* Staging holds nothing of a failed or finished sync (content kept only for resume). */
static void assert_staging_clean(fx_t *f, bool objects_too)
{
    char p[PATH_MAX];
    struct stat st;
    fmt(p, "%s/staging/gen", f->data);
    assert_int_equal(stat(p, &st), -1);
    fmt(p, "%s/staging/tmp", f->data);
    assert_int_equal(count_dir(p), 0);
    if (objects_too) {
        fmt(p, "%s/staging/objects", f->data);
        assert_int_equal(count_dir(p), 0);
        fmt(p, "%s/staging/partial", f->data);
        assert_int_equal(count_dir(p), 0);
    }
}

static void make_tree(fx_t *f)
{
    RUN(f->src, "mkdir", "-p", "wp-content/plugins/akismet", "wp-content/uploads/2024/01", "empty",
        "dir with space", "old/sub/deeper", "todir");
    put(f, "index.php", "<?php require 'wp-blog-header.php';\n", 0644, 1700000000);
    put(f, "wp-config.php", "<?php /* secrets */\n", 0600, 1700000001);
    put(f, "wp-cron.sh", "#!/bin/sh\necho cron\n", 0755, 1700000002);
    put(f, "wp-content/plugins/akismet/akismet.php", "<?php // akismet\n", 0644, 1700000003);
    put(f, "wp-content/uploads/2024/01/same-a.txt", "same content\n", 0644, 1700000004);
    put(f, "wp-content/uploads/2024/01/same-b.txt", "same content\n", 0644, 1700000005);
    put(f, "dir with space/caf\xc3\xa9 \xe2\x98\x95.txt", "unicode\n", 0644, 1700000006);
    put(f, "dir with space/-leading-dash", "dash\n", 0644, 1700000007);
    put(f, "dir with space/new\nline", "newline\n", 0644, 1700000008);
    put(f, "old/sub/deeper/x.txt", "x\n", 0644, 1700000009);
    put(f, "old/y.txt", "y\n", 0644, 1700000010);
    put_big(f, "wp-content/uploads/big.bin", 600 * 1024, 1);
    RUN(f->src, "ln", "wp-config.php", "hardlink-to-config");
    RUN(f->src, "ln", "-s", "wp-content/plugins", "plugins-link");
    RUN(f->src, "ln", "-s", "../../index.php", "wp-content/plugins/up-link");
    RUN(f->src, "mkdir", "-p", "fromdir");
    text_at(f->src, "fromdir/f", "f\n", "w");
    RUN(f->src, "touch", "-h", "-d", "@1700000100", "plugins-link");
    RUN(f->src, "chmod", "0555", "empty");
}

static void fix_dir_times(fx_t *f)
{
    /* Directory mtimes move as entries change; pin them so the comparison is meaningful. */
    RUN(f->src, "find", ".", "-type", "d", "-exec", "touch", "-d", "@1700000200", "{}", "+");
}

/* ---- tests ---- */

static void test_first_and_incremental(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    open_store(f, NULL);
    assert_int_equal(gen_store_live(f->g), 0);
    make_tree(f);
    fix_dir_times(f);

    int r = sync_tree(f, false, true, 0, &gen, NULL);
    if (r < 0)
        fail_msg("first sync: %s", f->err);
    assert_int_equal(r, 0);
    assert_int_equal(gen, 1);
    assert_int_equal(docroot_gen(f), 1);
    assert_int_equal(gen_store_live(f->g), 1);
    compare_tree(f);
    assert_staging_clean(f, true);
    /* The two files with the same content were asked for once. */
    assert_int_equal(f->stats.needs, 12);

    /* Keep a copy of generation 1's index.php inode to check it is never modified. */
    char p1[PATH_MAX], p2[PATH_MAX];
    struct stat s1, s2;
    fmt(p1, "%s/generations/1/root/index.php", f->data);
    assert_int_equal(stat(p1, &s1), 0);

    /* Changes: content, deletion, a deleted subtree, a new directory, dir -> file, file ->
     * dir, a chmod only, an append to the big file (a delta). */
    put(f, "index.php", "<?php /* v2 */ require 'wp-blog-header.php';\n", 0644, 1700001000);
    RUN(f->src, "rm", "wp-cron.sh");
    RUN(f->src, "rm", "-r", "old");
    RUN(f->src, "mkdir", "-p", "newdir/inner");
    text_at(f->src, "newdir/inner/n", "n\n", "w");
    RUN(f->src, "rm", "-r", "todir");
    text_at(f->src, "todir", "nowfile\n", "w");
    RUN(f->src, "rm", "-r", "fromdir");
    RUN(f->src, "mkdir", "fromdir");
    text_at(f->src, "fromdir/g", "g\n", "w");
    RUN(f->src, "chmod", "0640", "wp-content/plugins/akismet/akismet.php");
    static const char zeros[1025]; /* 1024 NUL bytes appended, as head -c 1024 /dev/zero */
    char big[PATH_MAX];
    fmt(big, "%s/wp-content/uploads/big.bin", f->src);
    FILE *bf = fopen(big, "ab");
    assert_non_null(bf);
    assert_int_equal(fwrite(zeros, 1, 1024, bf), 1024);
    assert_int_equal(fclose(bf), 0);
    fix_dir_times(f);
    agent_t a;
    r = sync_tree(f, false, false, 0, &gen, &a);
    if (r < 0)
        fail_msg("second sync: %s", f->err);
    assert_int_equal(gen, 2);
    assert_int_equal(docroot_gen(f), 2);
    compare_tree(f);
    assert_staging_clean(f, true);
    assert_int_equal(a.deltas, 1);
    /* The big file cost a signature and a small delta, not 600 KiB. */
    assert_true(f->wire_bytes < 64 * 1024);

    /* Generation 1 is intact; unchanged files are shared (hard links). */
    assert_int_equal(stat(p1, &s2), 0);
    assert_int_equal(s1.st_ino, s2.st_ino);
    assert_int_equal(s1.st_mtim.tv_sec, s2.st_mtim.tv_sec);
    fmt(p1, "%s/generations/1/root/wp-config.php", f->data);
    fmt(p2, "%s/generations/2/root/wp-config.php", f->data);
    assert_int_equal(stat(p1, &s1), 0);
    assert_int_equal(stat(p2, &s2), 0);
    assert_int_equal(s1.st_ino, s2.st_ino);
    /* The chmod-only file was copied, not chmodded in place. */
    fmt(p1, "%s/generations/1/root/wp-content/plugins/akismet/akismet.php", f->data);
    assert_int_equal(stat(p1, &s1), 0);
    assert_int_equal(s1.st_mode & 07777, 0644);
    fmt(p1, "%s/generations/1/root/old/sub/deeper/x.txt", f->data);
    assert_int_equal(stat(p1, &s1), 0);

    /* Nothing changed: the same generation, no switch. */
    r = sync_tree(f, false, true, 0, &gen, NULL);
    assert_int_equal(r, 1);
    assert_int_equal(gen, 2);

    /* A full listing (agent lost its state) of a changed tree also works. */
    put(f, "index.php", "<?php /* v3 */\n", 0644, 1700002000);
    fix_dir_times(f);
    r = sync_tree(f, true, true, 0, &gen, NULL);
    if (r < 0)
        fail_msg("full sync: %s", f->err);
    assert_int_equal(gen, 3);
    compare_tree(f);
    assert_int_equal(f->stats.needs, 1);

    /* Retention (keep 3): generation 1 goes at the fourth. */
    put(f, "index.php", "<?php /* v4 */\n", 0644, 1700003000);
    fix_dir_times(f);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    assert_int_equal(gen, 4);
    uint64_t v[8];
    assert_int_equal(gen_store_list(f->g, v, 8), 3);
    assert_int_equal(v[0], 4);
    assert_int_equal(v[2], 2);
    /* Its tree left generations/ at once, for staging/old.1, which the background job removes
     * after preparing the next tree. */
    char old[PATH_MAX];
    struct stat ost;
    gen_store_bg_wait(f->g);
    fmt(old, "%s/staging/old.1", f->data);
    assert_int_equal(lstat(old, &ost), -1);
    fmt(old, "%s/generations/1", f->data);
    assert_int_equal(lstat(old, &ost), -1);

    /* Rollback to 2, then a sync makes 5 (not 3 again), with a full listing. */
    assert_int_equal(gen_rollback(f->g, 2, f->err, sizeof(f->err)), 0);
    assert_int_equal(docroot_gen(f), 2);
    assert_int_equal(gen_store_live(f->g), 2);
    assert_true(gen_rollback(f->g, 1, f->err, sizeof(f->err)) < 0);
    put(f, "index.php", "<?php /* v5 */\n", 0644, 1700004000);
    fix_dir_times(f);
    assert_int_equal(sync_tree(f, true, true, 0, &gen, NULL), 0);
    assert_int_equal(gen, 5);
    compare_tree(f);
}

/* A refused sync: error naming the path, live generation untouched, staging clean. */
static void expect_refused(fx_t *f, const char *what, const char *needle)
{
    uint64_t gen = 0, live = gen_store_live(f->g);
    int r = sync_tree(f, false, true, 0, &gen, NULL);
    if (r != ERR_REFUSED)
        fail_msg("%s: expected a refusal, got %d (%s)", what, r, f->err);
    if (getenv("TEST_VERBOSE"))
        printf("%s: %s\n", what, f->err);
    if (!strstr(f->err, needle))
        fail_msg("%s: reason '%s' lacks '%s'", what, f->err, needle);
    assert_int_equal(gen_store_live(f->g), live);
    assert_int_equal(docroot_gen(f), live);
    assert_staging_clean(f, true);
}

static void test_refusals(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    char p[PATH_MAX];
    open_store(f, NULL);
    put(f, "index.php", "<?php\n", 0644, 1700000000);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);

    RUN(f->src, "ln", "-s", "/etc", "abs-link");
    expect_refused(f, "absolute symlink", "'abs-link'");
    RUN(f->src, "rm", "abs-link");
    RUN(f->src, "mkdir", "-p", "a/b");
    RUN(f->src, "ln", "-s", "../../../etc", "a/b/up");
    expect_refused(f, "climbing symlink", "'a/b/up'");
    RUN(f->src, "rm", "a/b/up");
    RUN(f->src, "ln", "-s", "self", "a/self");
    RUN(f->src, "ln", "-s", "self/self/../../..", "a/b/tricky");
    expect_refused(f, "'..' after a name", "'a/b/tricky'");
    RUN(f->src, "rm", "-r", "a");
    put_big(f, "huge.bin", 2u << 20, 3);
    f->opts.max_file_size = 1u << 20;
    open_store(f, NULL);
    expect_refused(f, "over-limit file", "'huge.bin'");
    f->opts.max_file_size = 64u << 20;
    f->opts.max_files = 1;
    open_store(f, NULL);
    expect_refused(f, "too many files", "max_files");
    f->opts.max_files = 1000;
    open_store(f, NULL);
    /* Nothing was written outside: the link did not become /etc. */
    fmt(p, "%s/abs-link", f->docroot);
    struct stat st;
    assert_int_equal(lstat(p, &st), -1);
    /* And a normal sync still works afterwards. */
    RUN(f->src, "rm", "huge.bin");
    assert_true(sync_tree(f, false, true, 0, &gen, NULL) >= 0);
}

static void test_resume(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    agent_t a;
    open_store(f, NULL);
    put(f, "a-small.txt", "small\n", 0644, 1700000000);
    put_big(f, "b-big.bin", 1u << 20, 7);
    /* Cut after the small file and part of the big one. */
    int r = sync_tree(f, false, false, 400 * 1024, &gen, &a);
    assert_true(r < 0);
    assert_int_not_equal(r, ERR_REFUSED);
    assert_int_equal(docroot_gen(f), 0);
    assert_staging_clean(f, false);
    /* The rerun asks only for the rest of the big file. */
    r = sync_tree(f, false, false, 0, &gen, &a);
    if (r < 0)
        fail_msg("resumed sync: %s", f->err);
    assert_int_equal(gen, 1);
    assert_int_equal(a.needs, 1);
    assert_true(a.resume_seen >= 200 * 1024);
    assert_true(a.content_bytes <= (1u << 20) - 200 * 1024);
    compare_tree(f);
    assert_staging_clean(f, true);
}

/* A small file the store pool cannot write (its object's name is taken by a directory): the
 * sync fails naming the object, the live generation stays, and the next run, once the name is
 * free, completes. */
static void test_store_error(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    uint8_t h[MF_HASH_LEN];
    char hex[2 * MF_HASH_LEN + 1], p[PATH_MAX];

    open_store(f, NULL);
    put(f, "index.php", "<?php\n", 0644, 1700000000);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    fmt(p, "%s/many", f->src);
    assert_int_equal(mkdir(p, 0755), 0);
    for (int i = 0; i < 40; i++) {
        char rel[64], text[64];
        snprintf(rel, sizeof(rel), "many/f%02d.php", i);
        snprintf(text, sizeof(text), "<?php /* %d */\n", i);
        put(f, rel, text, 0644, 1700000000 + i);
    }
    fmt(p, "%s/many/f17.php", f->src);
    sha256_file(p, h);
    mf_hash_hex(h, hex);
    fmt(p, "%s/staging/objects/%.2s", f->data, hex);
    (void)mkdir(p, 0700);
    fmt(p, "%s/staging/objects/%.2s/%s", f->data, hex, hex);
    assert_int_equal(mkdir(p, 0700), 0);

    int r = sync_tree(f, false, true, 0, &gen, NULL);
    assert_true(r < 0);
    assert_int_not_equal(r, ERR_REFUSED);
    if (!strstr(f->err, "cannot write objects/") || !strstr(f->err, hex))
        fail_msg("unexpected error: %s", f->err);
    assert_int_equal(docroot_gen(f), 1);
    assert_staging_clean(f, false);

    assert_int_equal(rmdir(p), 0);
    r = sync_tree(f, false, true, 0, &gen, NULL);
    if (r < 0)
        fail_msg("sync after the store error: %s", f->err);
    assert_int_equal(gen, 2);
    compare_tree(f);
    assert_staging_clean(f, true);
}

/* Removes every received object (what a disk error or another hand could do between the
 * transfer and the build). */
static void drop_objects(fx_t *f)
{
    char p[PATH_MAX], q[PATH_MAX];
    fmt(p, "%s/staging/objects", f->data);
    DIR *d = opendir(p);
    assert_non_null(d);
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.')
            continue;
        fmt(q, "%s/%s", p, de->d_name);
        DIR *sub = opendir(q);
        assert_non_null(sub);
        for (struct dirent *o; (o = readdir(sub));)
            if (o->d_name[0] != '.')
                assert_int_equal(unlinkat(dirfd(sub), o->d_name, 0), 0);
        closedir(sub);
    }
    closedir(d);
}

/* A generation built whole links the received files through the store pool's threads: a link
 * that fails fails the sync with the entry's path, and the live generation stays. */
static void test_link_error(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    open_store(f, NULL);
    make_tree(f);
    f->between = drop_objects;
    int r = sync_tree(f, false, true, 0, &gen, NULL);
    f->between = NULL;
    assert_true(r < 0);
    if (!strstr(f->err, "cannot create '") || !strstr(f->err, "in the new generation"))
        fail_msg("unexpected error: %s", f->err);
    assert_int_equal(docroot_gen(f), 0);
    assert_staging_clean(f, false);
    r = sync_tree(f, false, true, 0, &gen, NULL);
    if (r < 0)
        fail_msg("sync after the link error: %s", f->err);
    assert_int_equal(gen, 1);
    compare_tree(f);
}

/* Crafted listings a hostile agent could send. */
static void hostile(fx_t *f, const char *what, const char *needle, fent_t *entries, size_t n)
{
    flist_t l = {0};
    for (size_t i = 0; i < n; i++) {
        if (entries[i].kind == MF_REGULAR && entries[i].size == UINT64_MAX) {
            char p[PATH_MAX];
            struct stat st;
            fmt(p, "%s/%s", f->src, entries[i].path);
            if (stat(p, &st) < 0) /* a name the source cannot have: lend it x's content */
                fmt(p, "%s/x", f->src);
            assert_int_equal(stat(p, &st), 0);
            entries[i].size = (uint64_t)st.st_size;
            sha256_file(p, entries[i].hash);
        }
        flist_push(&l, &entries[i]);
    }
    f->forced = &l;
    expect_refused(f, what, needle);
    f->forced = NULL;
    flist_free(&l);
}

static void test_hostile(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    open_store(f, NULL);
    put(f, "index.php", "<?php\n", 0644, 1700000000);
    put(f, "x", "0123456789", 0644, 1700000000);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    RUN(f->src, "ln", "-s", ".", "a");

    /* Writing through an in-tree symlink: "a" -> "." then "a/x". */
    fent_t through[] = {
        {.path = "a", .kind = MF_SYMLINK, .mode = 0777, .target = "."},
        {.path = "a/x", .kind = MF_REGULAR, .mode = 0644, .size = UINT64_MAX},
    };
    hostile(f, "write through a symlink", "'a/x'", through, 2);

    /* A file under a name that is a file. */
    fent_t under_file[] = {
        {.path = "index.php", .kind = MF_REGULAR, .mode = 0644, .size = UINT64_MAX},
        {.path = "index.php/x", .kind = MF_REGULAR, .mode = 0644, .size = UINT64_MAX},
    };
    hostile(f, "a file under a file", "'index.php/x'", under_file, 2);

    /* Content that does not match its hash, or is longer than listed. */
    fent_t bad_hash[] = {{.path = "x", .kind = MF_REGULAR, .mode = 0644, .size = 10}};
    hostile(f, "hash mismatch", "SHA-256", bad_hash, 1);
    fent_t too_long[] = {{.path = "x", .kind = MF_REGULAR, .mode = 0644, .size = 3}};
    memset(too_long[0].hash, 7, MF_HASH_LEN);
    hostile(f, "longer than listed", "'x'", too_long, 1);

    /* Out of order, repeated. */
    fent_t order[] = {
        {.path = "x", .kind = MF_DIRECTORY, .mode = 0755},
        {.path = "index.php", .kind = MF_DIRECTORY, .mode = 0755},
    };
    hostile(f, "out of order", "out of order", order, 2);
    fent_t twice[] = {
        {.path = "d", .kind = MF_DIRECTORY, .mode = 0755},
        {.path = "d", .kind = MF_DIRECTORY, .mode = 0755},
    };
    hostile(f, "repeated", "'d'", twice, 2);

    /* A deletion in a full listing. */
    fent_t del[] = {{.path = "index.php", .kind = MF_REGULAR, .deleted = true}};
    hostile(f, "deletion in a full listing", "'index.php'", del, 1);

    /* Everything right but the announced tree digest. */
    fent_t ok[] = {{.path = "x", .kind = MF_REGULAR, .mode = 0644, .size = UINT64_MAX}};
    f->bad_digest = true;
    hostile(f, "digest mismatch", "not the agent's", ok, 1);
    f->bad_digest = false;
}

static int fake_db_live;
static int db_is_live(void *ctx, uint64_t generation)
{
    return fake_db_live;
}

static void write_file(const char *path, const char *text)
{
    FILE *o = fopen(path, "w");
    assert_non_null(o);
    fputs(text, o);
    fclose(o);
}

static void test_recovery(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    char p[PATH_MAX], t[PATH_MAX];
    struct stat st;
    open_store(f, NULL);
    put(f, "index.php", "<?php\n", 0644, 1700000000);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    assert_int_equal(gen, 1);

    /* Crash after the staged tree became generations/2, before the flip: undone. */
    fmt(p, "%s/generations/2/root", f->data);
    RUN(NULL, "mkdir", "-p", p);
    RUN(p, "touch", "../manifest");
    fmt(p, "%s/journal", f->data);
    write_file(p, "switch 2 1\n");
    open_store(f, NULL);
    assert_int_equal(gen_store_live(f->g), 1);
    assert_int_equal(docroot_gen(f), 1);
    assert_int_equal(stat(p, &st), -1);
    fmt(t, "%s/generations/2", f->data);
    assert_int_equal(stat(t, &st), -1);

    /* Crash after the flip, before the journal was removed (no database): finished. */
    fmt(t, "%s/generations/2/root", f->data);
    RUN(NULL, "mkdir", "-p", t);
    RUN(t, "touch", "../manifest");
    RUN(NULL, "ln", "-sfn", t, f->docroot);
    write_file(p, "switch 2 1\n");
    open_store(f, NULL);
    assert_int_equal(gen_store_live(f->g), 2);
    assert_int_equal(stat(p, &st), -1);

    /* With a database: its answer decides. Live -> flip forward to 3. */
    gen_hooks_t hooks = {.db_is_live = db_is_live};
    fmt(t, "%s/generations/3/root", f->data);
    RUN(NULL, "mkdir", "-p", t);
    RUN(t, "touch", "../manifest");
    write_file(p, "switch 3 2\n");
    fake_db_live = 1;
    open_store(f, &hooks);
    assert_int_equal(gen_store_live(f->g), 3);
    assert_int_equal(docroot_gen(f), 3);
    /* Not live -> back to 2 even though the docroot points at 4. */
    fmt(t, "%s/generations/4/root", f->data);
    RUN(NULL, "mkdir", "-p", t);
    RUN(t, "touch", "../manifest");
    RUN(NULL, "ln", "-sfn", t, f->docroot);
    write_file(p, "switch 4 3\n");
    fake_db_live = 0;
    open_store(f, &hooks);
    assert_int_equal(gen_store_live(f->g), 3);
    assert_int_equal(docroot_gen(f), 3);
    fmt(t, "%s/generations/4", f->data);
    assert_int_equal(stat(t, &st), -1);

    /* A docroot that is a real directory is refused, not replaced. */
    gen_store_close(f->g);
    f->g = NULL;
    RUN(NULL, "rm", f->docroot);
    RUN(NULL, "mkdir", f->docroot);
    assert_int_equal(gen_store_open(&f->opts, NULL, &f->g, f->err, sizeof(f->err)), ERR_CONFIG);
}

/* ---- the prepared tree (controller/files.c) ---- */

/* The prepared tree's base, after the background job is done: 0 when there is none. */
static uint64_t prepared_base(fx_t *f)
{
    char p[PATH_MAX], text[32] = "";
    gen_store_bg_wait(f->g);
    fmt(p, "%s/staging/next/base", f->data);
    FILE *in = fopen(p, "r");
    if (!in)
        return 0;
    if (!fgets(text, sizeof(text), in))
        text[0] = '\0';
    fclose(in);
    return strtoull(text, NULL, 10);
}

static ino_t inode_of(fx_t *f, uint64_t gen, const char *rel)
{
    char p[PATH_MAX];
    struct stat st;
    fmt(p, "%s/generations/%" PRIu64 "/root/%s", f->data, gen, rel);
    assert_int_equal(lstat(p, &st), 0);
    return st.st_ino;
}

/* Generation 1 of make_tree's tree, and the tree of the next one prepared. */
static void first_prepared(fx_t *f, uint64_t *gen)
{
    open_store(f, NULL);
    make_tree(f);
    fix_dir_times(f);
    assert_int_equal(sync_tree(f, false, true, 0, gen, NULL), 0);
    assert_int_equal(prepared_base(f), 1);
}

/* A sync after a generation went live patches the prepared link copy: every kind of change comes
 * out as with a tree built whole, unchanged files stay shared, and the next tree is prepared. */
static void prepared(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    char p[PATH_MAX];
    first_prepared(f, &gen);

    put(f, "index.php", "<?php /* v2 */\n", 0644, 1700001000);
    RUN(f->src, "rm", "wp-cron.sh");
    RUN(f->src, "rm", "-r", "old");
    RUN(f->src, "mkdir", "-p", "newdir/inner");
    text_at(f->src, "newdir/inner/n", "n\n", "w");
    RUN(f->src, "rm", "-r", "todir");
    text_at(f->src, "todir", "nowfile\n", "w");
    RUN(f->src, "rm", "-r", "fromdir");
    text_at(f->src, "fromdir", "g\n", "w");
    RUN(f->src, "chmod", "0640", "wp-content/plugins/akismet/akismet.php");
    RUN(f->src, "rm", "plugins-link");
    RUN(f->src, "ln", "-s", "wp-content", "plugins-link");
    RUN(f->src, "chmod", "0700", "empty");
    fix_dir_times(f);
    int r = sync_tree(f, false, true, 0, &gen, NULL);
    if (r < 0)
        fail_msg("patched sync: %s", f->err);
    assert_int_equal(gen, 2);
    compare_tree(f);
    assert_staging_clean(f, true);
    assert_int_equal(inode_of(f, 1, "wp-content/uploads/big.bin"),
                     inode_of(f, 2, "wp-content/uploads/big.bin"));
    assert_int_not_equal(inode_of(f, 1, "wp-content/plugins/akismet/akismet.php"),
                         inode_of(f, 2, "wp-content/plugins/akismet/akismet.php"));
    /* Generation 1 kept its own metadata (nothing of it was changed in place). */
    fmt(p, "%s/generations/1/root/wp-content/plugins/akismet/akismet.php", f->data);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(prepared_base(f), 2);

    /* The job also built the content table of generation 2: a copy of a live file is found in
     * it and not asked for, and the big file changed at the end goes as a delta, since the
     * live copy is big enough (live_size). */
    copy_file(f, "wp-content/uploads/big.bin", "copy-of-big.bin");
    append_zeros(f, "wp-content/uploads/big.bin", 1024);
    fix_dir_times(f);
    agent_t a;
    r = sync_tree(f, false, false, 0, &gen, &a);
    if (r < 0)
        fail_msg("sync of a copy: %s", f->err);
    assert_int_equal(gen, 3);
    assert_true(f->stats.tab_prepared);
    assert_int_equal(f->stats.needs, 1);
    assert_int_equal(a.deltas, 1);
    compare_tree(f);
    assert_int_equal(prepared_base(f), 3);

    /* A file the backup changed in place is in the prepared tree too (a hard link): the sync
     * notices and refuses, as one building the tree whole does. */
    fmt(p, "%s/generations/3/root/wp-content/uploads/2024/01/same-a.txt", f->data);
    text_at(p, NULL, "local edit\n", "a");
    put(f, "index.php", "<?php /* v3 */\n", 0644, 1700002000);
    fix_dir_times(f);
    r = sync_tree(f, false, true, 0, &gen, NULL);
    assert_true(r < 0);
    if (!strstr(f->err, "changed on the backup"))
        fail_msg("in-place change: unexpected error '%s'", f->err);
    assert_int_equal(docroot_gen(f), 3);
    assert_int_equal(gen_store_live(f->g), 3);
}

/* With the watch (files.c): the files the sync keeps are taken as prepared, and the in-place
 * change above is noticed by the watch and refused after all. */
static void test_prepared(void **state)
{
    prepared(state);
}

/* Without it (no inotify): every kept file is looked at, with the same results. */
static void test_prepared_unwatched(void **state)
{
    setenv("UNDERSTUDY_TEST_NO_WATCH", "1", 1);
    prepared(state);
    unsetenv("UNDERSTUDY_TEST_NO_WATCH");
}

/* A prepared tree of another generation (a rollback since) is never patched. */
static void test_prepared_stale(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    open_store(f, NULL);
    put(f, "index.php", "<?php\n", 0644, 1700000000);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    put(f, "extra.txt", "extra\n", 0644, 1700000001);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    assert_int_equal(gen, 2);
    assert_int_equal(prepared_base(f), 2);
    assert_int_equal(gen_rollback(f->g, 1, f->err, sizeof(f->err)), 0);
    /* Changes listed against generation 2 while 1 is live: were the tree of 2 patched,
     * extra.txt (not in 1's manifest, so never dropped) would stay. */
    RUN(f->src, "rm", "extra.txt");
    put(f, "index.php", "<?php /* v2 */\n", 0644, 1700001000);
    int r = sync_tree(f, false, true, 0, &gen, NULL);
    if (r < 0)
        fail_msg("sync after a rollback: %s", f->err);
    assert_int_equal(gen, 3);
    compare_tree(f);
    assert_int_equal(prepared_base(f), 3);
}

/* What SIGKILL can leave: a preparation cut off (no base, entries missing, a stray one), or a
 * prepared tree already moved to staging/gen by a sync. The next sync ignores both and leaves
 * one whole generation. */
static void test_prepared_crash(void **state)
{
    fx_t *f = *state;
    uint64_t gen = 0;
    char p[PATH_MAX];
    first_prepared(f, &gen);

    /* Cut off: base never written; a file missing and one that is not in the manifest. */
    fmt(p, "%s/staging/next", f->data);
    RUN(p, "rm", "base", "root/index.php");
    text_at(p, "root/stray.txt", "stray\n", "w");
    open_store(f, NULL); /* a restart: the store prepares again only when asked */
    assert_int_equal(prepared_base(f), 0);
    put(f, "index.php", "<?php /* v2 */\n", 0644, 1700001000);
    fix_dir_times(f);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    assert_int_equal(gen, 2);
    compare_tree(f);
    assert_int_equal(prepared_base(f), 2);

    /* A crash mid-patch leaves staging/gen (the prepared tree) and no staging/next. */
    fmt(p, "%s/staging", f->data);
    RUN(p, "rm", "next/base");
    RUN(p, "rm", "-rf", "gen");
    RUN(p, "mv", "next", "gen");
    text_at(p, "gen/root/stray.txt", "stray\n", "w");
    open_store(f, NULL);
    stage_prepare_next(f->g); /* as the controller does when it starts */
    assert_int_equal(prepared_base(f), 2);
    put(f, "index.php", "<?php /* v3 */\n", 0644, 1700002000);
    fix_dir_times(f);
    assert_int_equal(sync_tree(f, false, true, 0, &gen, NULL), 0);
    assert_int_equal(gen, 3);
    compare_tree(f);
    assert_staging_clean(f, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_and_incremental, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_unwatched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_crash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
