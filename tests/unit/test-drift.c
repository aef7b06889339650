/* Unit tests for controller/drift: a temp tree and its manifest (written with mf_writer from the
 * tree itself), then uploads, deletions, mode and content changes, new plugin directories,
 * built-in and configured exclusions, a missing and a corrupt manifest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "drift.h"
#include "err.h"
#include "manifest.h"
#include "testutil.h"

static char root[64], manifest[128];

static void put_file(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *rel)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

static int cmp_paths(const void *a, const void *b)
{
    return mf_path_cmp(*(char *const *)a, *(char *const *)b);
}

/* Writes the manifest of the paths (in any order) as they are on disk now. */
static void write_manifest(const char **paths, size_t n)
{
    mf_writer_t *w;
    qsort(paths, n, sizeof(*paths), cmp_paths);
    assert_int_equal(mf_writer_open(manifest, &w), 0);
    for (size_t i = 0; i < n; i++) {
        char p[512], link[512] = "";
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", root, paths[i]);
        assert_int_equal(lstat(p, &st), 0);
        mf_entry_t e = {.path = paths[i],
                        .mode = st.st_mode & 07777,
                        .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
                        .size = (uint64_t)st.st_size};
        if (S_ISDIR(st.st_mode)) {
            e.kind = MF_DIRECTORY;
            e.size = 0;
        } else if (S_ISLNK(st.st_mode)) {
            e.kind = MF_SYMLINK;
            e.mode = 0;
            ssize_t k = readlink(p, link, sizeof(link) - 1);
            assert_true(k > 0);
            link[k] = '\0';
            e.link_target = link;
        } else {
            FILE *f = fopen(p, "rb");
            char buf[4096];
            size_t k;
            EVP_MD_CTX *ctx = EVP_MD_CTX_new();
            EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
            while ((k = fread(buf, 1, sizeof(buf), f)) > 0)
                EVP_DigestUpdate(ctx, buf, k);
            EVP_DigestFinal_ex(ctx, e.hash, NULL);
            EVP_MD_CTX_free(ctx);
            fclose(f);
        }
        assert_int_equal(mf_writer_add(w, &e), 0);
    }
    uint8_t digest[MF_HASH_LEN];
    uint64_t count;
    assert_int_equal(mf_writer_commit(w, digest, &count), 0);
    assert_int_equal(count, n);
}

static drift_report_t scan(const drift_opts_t *opts)
{
    drift_report_t rep;
    char err[256] = "";
    int r = drift_scan(root, manifest, opts, &rep, err, sizeof(err));
    if (r < 0)
        fail_msg("drift_scan: %s", err);
    return rep;
}

static bool has_example(const drift_report_t *rep, const char *text)
{
    for (size_t i = 0; i < rep->n_examples; i++)
        if (!strcmp(rep->examples[i], text))
            return true;
    return false;
}

static int setup(void **state)
{
    snprintf(root, sizeof(root), "/tmp/test-drift-XXXXXX");
    assert_non_null(mkdtemp(root));
    snprintf(manifest, sizeof(manifest), "%s.manifest", root);
    put_file("index.php", "<?php // index\n");
    put_file("wp-config.php", "<?php // primary's settings\n");
    make_dir("wp-content");
    make_dir("wp-content/cache");
    put_file("wp-content/cache/page.html", "<html>");
    make_dir("wp-content/uploads");
    put_file("wp-content/uploads/a.jpg", "AAAA");
    put_file("wp-content/uploads/b.jpg", "BBBB");
    put_file("wp-content/uploads-old.txt", "x"); /* sorts after "wp-content/uploads/..." */
    char p[512];
    snprintf(p, sizeof(p), "%s/link", root);
    assert_int_equal(symlink("index.php", p), 0);
    const char *paths[] = {
        "wp-content/uploads/b.jpg",
        "index.php",
        "link",
        "wp-config.php",
        "wp-content",
        "wp-content/cache",
        "wp-content/cache/page.html",
        "wp-content/uploads",
        "wp-content/uploads/a.jpg",
        "wp-content/uploads-old.txt",
    };
    write_manifest(paths, sizeof(paths) / sizeof(paths[0]));
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(tu_rm_tree(root), 0);
    assert_int_equal(tu_rm_tree(manifest), 0);
    return 0;
}

static void t_clean(void **state)
{
    drift_report_t rep = scan(NULL);
    assert_false(drift_found(&rep));
    assert_int_equal(rep.examined, 7); /* cache dir and wp-config.php excluded */

    /* Changes in excluded places are not drift. */
    put_file("wp-config.php", "<?php // the backup's database settings, longer\n");
    put_file("wp-content/cache/page.html", "<html>changed");
    put_file("wp-content/cache/new.html", "<html>");
    make_dir("wp-content/upgrade");
    put_file("wp-content/upgrade/x.zip", "PK");
    rep = scan(NULL);
    assert_false(drift_found(&rep));
}

static void t_upload_and_delete(void **state)
{
    char p[512];
    put_file("wp-content/uploads/c.jpg", "CCCC");
    snprintf(p, sizeof(p), "%s/wp-content/uploads/b.jpg", root);
    assert_int_equal(unlink(p), 0);
    drift_report_t rep = scan(NULL);
    assert_int_equal(rep.created, 1);
    assert_int_equal(rep.deleted, 1);
    assert_int_equal(rep.changed, 0);
    assert_true(has_example(&rep, "created wp-content/uploads/c.jpg"));
    assert_true(has_example(&rep, "deleted wp-content/uploads/b.jpg"));

    /* A configured exclusion hides them. */
    const char *ignore[] = {"wp-content/uploads/"};
    drift_opts_t o = {.ignore = ignore, .n_ignore = 1};
    rep = scan(&o);
    assert_false(drift_found(&rep));
}

static void t_changes(void **state)
{
    char p[512];
    struct stat st;

    /* Same size, mtime put back: only the hash sees it. */
    snprintf(p, sizeof(p), "%s/wp-content/uploads/a.jpg", root);
    assert_int_equal(stat(p, &st), 0);
    put_file("wp-content/uploads/a.jpg", "ZZZZ");
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    drift_report_t rep = scan(NULL);
    assert_false(drift_found(&rep));
    drift_opts_t o = {.hash = true};
    rep = scan(&o);
    assert_int_equal(rep.changed, 1);
    assert_true(has_example(&rep, "changed wp-content/uploads/a.jpg (content)"));

    /* Mode, size, symlink target. */
    snprintf(p, sizeof(p), "%s/index.php", root);
    assert_int_equal(chmod(p, 0600), 0);
    put_file("wp-content/uploads-old.txt", "longer");
    snprintf(p, sizeof(p), "%s/link", root);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("wp-config.php", p), 0);
    rep = scan(NULL);
    assert_int_equal(rep.changed, 3);
    assert_true(has_example(&rep, "changed index.php (mode)"));
    assert_true(has_example(&rep, "changed wp-content/uploads-old.txt (size)"));
    assert_true(has_example(&rep, "changed link (link target)"));
}

static void t_new_plugin(void **state)
{
    make_dir("wp-content/plugins");
    make_dir("wp-content/plugins/evil");
    put_file("wp-content/plugins/evil/evil.php", "<?php");
    drift_report_t rep = scan(NULL);
    assert_int_equal(rep.created, 3);
    assert_true(has_example(&rep, "created wp-content/plugins"));
    assert_true(has_example(&rep, "created wp-content/plugins/evil/evil.php"));
}

/* After a clear (resolve), changes from before it no longer count; later ones do. */
static void t_since(void **state)
{
    char p[512];
    put_file("wp-content/uploads/c.jpg", "CCCC");
    snprintf(p, sizeof(p), "%s/wp-content/uploads/b.jpg", root);
    assert_int_equal(unlink(p), 0);
    drift_opts_t o = {.since = time(NULL) + 2};
    drift_report_t rep = scan(&o);
    assert_false(drift_found(&rep));
    o.since = time(NULL) - 2;
    rep = scan(&o);
    assert_int_equal(rep.created, 1);
    assert_int_equal(rep.deleted, 1);
    /* A deletion at the very end of the walk (the walker is done by then). */
    snprintf(p, sizeof(p), "%s/wp-content/uploads-old.txt", root);
    assert_int_equal(unlink(p), 0);
    rep = scan(&o);
    assert_int_equal(rep.deleted, 2);
    assert_true(has_example(&rep, "deleted wp-content/uploads-old.txt"));
}

static void t_manifest_problems(void **state)
{
    drift_report_t rep;
    char err[256];

    assert_int_equal(unlink(manifest), 0);
    rep = scan(NULL);
    assert_int_equal(rep.created, 7);

    FILE *f = fopen(manifest, "w");
    fputs("understudy-manifest 1\n\x05\x00\x00", f);
    fclose(f);
    assert_int_equal(drift_scan(root, manifest, NULL, &rep, err, sizeof(err)), ERR_PROTOCOL);
    assert_non_null(strstr(err, "corrupt"));
    assert_true(drift_scan("/nonexistent-understudy", manifest, NULL, &rep, err, sizeof(err)) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(t_upload_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(t_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(t_new_plugin, setup, teardown),
        cmocka_unit_test_setup_teardown(t_since, setup, teardown),
        cmocka_unit_test_setup_teardown(t_manifest_problems, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
