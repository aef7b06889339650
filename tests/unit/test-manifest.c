/* manifest tests: walk order, file round trip, order enforcement, digest properties. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "manifest.h"

static void test_walk_order(void **state)
{
    /* A depth-first walk with sorted names: "a", "a/z", "a.b", "ab". */
    assert_true(mf_path_cmp("a", "a/z") < 0);
    assert_true(mf_path_cmp("a/z", "a.b") < 0);
    assert_true(mf_path_cmp("a.b", "ab") < 0);
    assert_true(mf_path_cmp("a/b/c", "a/b-") < 0);
    assert_true(mf_path_cmp("x", "x") == 0);
    assert_true(mf_path_cmp("\xc3\xa9", "z") > 0); /* bytes, unsigned */
}

/* mf_path_cmp_n (a word at a time) orders every pair as mf_path_cmp does: random paths over a
 * small alphabet with '/', '.', '-' and a high byte, long shared prefixes, lengths around 8. */
static void test_walk_order_n(void **state)
{
    static const char abc[] = "ab/.-\xe9";
    char a[64], b[64];
    unsigned seed = 12345;
    for (int i = 0; i < 200000; i++) {
        size_t la = 1 + (seed = seed * 1103515245 + 12345) % 40, lb;
        for (size_t k = 0; k < la; k++)
            a[k] = abc[((seed = seed * 1103515245 + 12345) >> 16) % 6];
        /* b: a's first bytes, then its own */
        size_t keep = (seed = seed * 1103515245 + 12345) >> 8 & 63;
        keep = keep > la ? la : keep;
        lb = keep + ((seed = seed * 1103515245 + 12345) >> 8) % 6;
        memcpy(b, a, keep);
        for (size_t k = keep; k < lb; k++)
            b[k] = abc[((seed = seed * 1103515245 + 12345) >> 16) % 6];
        if (lb == 0)
            b[lb++] = 'a';
        a[la] = b[lb] = '\0';
        int want = mf_path_cmp(a, b), got = mf_path_cmp_n(a, la, b, lb);
        if ((want > 0) != (got > 0) || (want < 0) != (got < 0))
            fail_msg("'%s' vs '%s': mf_path_cmp %d, mf_path_cmp_n %d", a, b, want, got);
    }
}

static mf_entry_t entry(const char *path, mf_kind_t kind, const char *target)
{
    mf_entry_t e;
    memset(&e, 0, sizeof(e));
    e.path = path;
    e.kind = kind;
    e.mode = kind == MF_DIRECTORY ? 0755 : 0644;
    e.mtime_ns = 1700000000123456789LL;
    e.size = kind == MF_REGULAR ? strlen(path) : 0;
    memset(e.hash, path[0], MF_HASH_LEN);
    e.link_target = target;
    e.ino = 42;
    return e;
}

static void test_round_trip_and_digest(void **state)
{
    char path[] = "/tmp/test-manifest.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    mf_entry_t es[] = {
        entry("a", MF_DIRECTORY, NULL),
        entry("a/z", MF_REGULAR, NULL),
        entry("a.b", MF_SYMLINK, "a/z"),
        entry("name with\nnewline", MF_REGULAR, NULL),
    };
    size_t n = sizeof(es) / sizeof(es[0]);
    mf_writer_t *w;
    uint8_t digest[MF_HASH_LEN], digest2[MF_HASH_LEN];
    uint64_t count;
    assert_int_equal(mf_writer_open(path, &w), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mf_writer_add(w, &es[i]), 0);
    assert_int_equal(mf_writer_commit(w, digest, &count), 0);
    assert_int_equal(count, n);

    /* Read back: same entries; the digest recomputed from them matches. */
    mf_reader_t *r;
    mf_entry_t e;
    mf_digest_t d;
    assert_int_equal(mf_reader_open(path, &r, NULL), 0);
    assert_int_equal(mf_digest_init(&d), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(mf_reader_next(r, &e), 1);
        assert_string_equal(e.path, es[i].path);
        assert_int_equal(e.kind, es[i].kind);
        assert_int_equal(e.mtime_ns, es[i].mtime_ns);
        assert_int_equal(e.ino, 42);
        if (es[i].link_target)
            assert_string_equal(e.link_target, es[i].link_target);
        mf_digest_add(&d, &e);
    }
    assert_int_equal(mf_reader_next(r, &e), 0);
    mf_reader_close(r);
    mf_digest_final(&d, digest2);
    assert_memory_equal(digest, digest2, MF_HASH_LEN);

    /* The agent-only fields do not change the digest; a mode does. */
    assert_int_equal(mf_digest_init(&d), 0);
    for (size_t i = 0; i < n; i++) {
        mf_entry_t x = es[i];
        x.ino = 7;
        x.ctime_ns = 9;
        mf_digest_add(&d, &x);
    }
    mf_digest_final(&d, digest2);
    assert_memory_equal(digest, digest2, MF_HASH_LEN);
    assert_int_equal(mf_digest_init(&d), 0);
    for (size_t i = 0; i < n; i++) {
        mf_entry_t x = es[i];
        if (i == 1)
            x.mode = 0600;
        mf_digest_add(&d, &x);
    }
    mf_digest_final(&d, digest2);
    assert_memory_not_equal(digest, digest2, MF_HASH_LEN);
    unlink(path);
}

static void test_order_enforced(void **state)
{
    char path[] = "/tmp/test-manifest.XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mf_writer_t *w;
    assert_int_equal(mf_writer_open(path, &w), 0);
    mf_entry_t a = entry("b", MF_REGULAR, NULL), b = entry("a", MF_REGULAR, NULL);
    assert_int_equal(mf_writer_add(w, &a), 0);
    assert_int_equal(mf_writer_add(w, &b), ERR_PROTOCOL);
    assert_int_equal(mf_writer_add(w, &a), ERR_PROTOCOL); /* duplicates too */
    mf_writer_abort(w);
    unlink(path);

    /* A missing manifest reads as empty. */
    mf_reader_t *r;
    mf_entry_t e;
    bool missing;
    assert_int_equal(mf_reader_open("/nonexistent/manifest", &r, &missing), 0);
    assert_true(missing);
    assert_int_equal(mf_reader_next(r, &e), 0);
    mf_reader_close(r);

    /* A corrupt one is an error, not a crash. */
    FILE *f = fopen(path, "w");
    fputs("understudy-manifest 1\n\xff\xff\xff\x7f", f);
    fclose(f);
    assert_int_equal(mf_reader_open(path, &r, NULL), 0);
    assert_int_equal(mf_reader_next(r, &e), ERR_PROTOCOL);
    mf_reader_close(r);
    unlink(path);
}

/* A manifest far bigger than the writer's digest batch, with paths near the longest allowed:
 * the writer's digest is still the digest of its entries one by one. */
static void test_big_manifest_digest(void **state)
{
    char path[] = "/tmp/test-manifest.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    static char name[MF_PATH_MAX];
    mf_writer_t *w;
    mf_digest_t d;
    uint8_t digest[MF_HASH_LEN], digest2[MF_HASH_LEN];
    uint64_t count;
    assert_int_equal(mf_writer_open(path, &w), 0);
    assert_int_equal(mf_digest_init(&d), 0);
    for (int i = 0; i < 3000; i++) {
        size_t len = i % 7 == 0 ? MF_PATH_MAX - 1 : 20 + (size_t)i % 300;
        memset(name, 'x', len);
        snprintf(name, 16, "f%06d", i);
        name[strlen(name)] = 'x';
        name[len] = '\0';
        mf_entry_t e = entry(name, i % 5 ? MF_REGULAR : MF_SYMLINK, i % 5 ? NULL : "target");
        assert_int_equal(mf_writer_add(w, &e), 0);
        mf_digest_add(&d, &e);
    }
    assert_int_equal(mf_writer_commit(w, digest, &count), 0);
    mf_digest_final(&d, digest2);
    assert_int_equal(count, 3000);
    assert_memory_equal(digest, digest2, MF_HASH_LEN);

    /* Read back: records of up to 8 KiB straddle the reader's buffer many times over. */
    mf_reader_t *r;
    mf_entry_t e;
    assert_int_equal(mf_reader_open(path, &r, NULL), 0);
    for (int i = 0; i < 3000; i++) {
        size_t len = i % 7 == 0 ? MF_PATH_MAX - 1 : 20 + (size_t)i % 300;
        char want[16];
        snprintf(want, sizeof(want), "f%06d", i);
        assert_int_equal(mf_reader_next(r, &e), 1);
        assert_int_equal(strlen(e.path), len);
        assert_memory_equal(e.path, want, 7);
        assert_int_equal(e.kind, i % 5 ? MF_REGULAR : MF_SYMLINK);
        if (i % 5)
            assert_null(e.link_target);
        else
            assert_string_equal(e.link_target, "target");
        assert_int_equal(e.ino, 42);
        assert_int_equal(e.mtime_ns, 1700000000123456789LL);
    }
    assert_int_equal(mf_reader_next(r, &e), 0);
    mf_reader_close(r);

    /* Cut anywhere inside the last record (404 bytes: a 319-byte path, no link): an error,
     * never a short entry. */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *all = malloc((size_t)size);
    assert_non_null(all);
    assert_int_equal(fread(all, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    for (long cut = 1; cut < 404; cut += 37) {
        f = fopen(path, "w");
        assert_int_equal(fwrite(all, 1, (size_t)(size - cut), f), (size_t)(size - cut));
        fclose(f);
        assert_int_equal(mf_reader_open(path, &r, NULL), 0);
        int rc, n = 0;
        while ((rc = mf_reader_next(r, &e)) == 1)
            n++;
        assert_int_equal(rc, ERR_PROTOCOL);
        assert_int_equal(n, 2999);
        mf_reader_close(r);
    }
    free(all);
    unlink(path);
}

static void test_link_escapes(void **state)
{
    assert_false(mf_link_escapes("a/link", "target"));
    assert_false(mf_link_escapes("a/link", "../b/c"));
    assert_false(mf_link_escapes("a/b/link", "../../x"));
    assert_true(mf_link_escapes("a/link", "./x/../y")); /* '..' after a name */
    assert_true(mf_link_escapes("chain", "self/self/self/../../.."));
    assert_true(mf_link_escapes("link", "../x"));
    assert_true(mf_link_escapes("a/link", "../../x"));
    assert_true(mf_link_escapes("a/link", "x/../../../y"));
    assert_true(mf_link_escapes("a/link", "/etc/passwd"));
    assert_true(mf_link_escapes("a/link", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_order),
        cmocka_unit_test(test_walk_order_n),
        cmocka_unit_test(test_round_trip_and_digest),
        cmocka_unit_test(test_order_enforced),
        cmocka_unit_test(test_big_manifest_digest),
        cmocka_unit_test(test_link_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
