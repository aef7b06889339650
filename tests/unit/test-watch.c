/* Unit tests for controller/watch on a real libuv loop: a live generation laid out as
 * generation.c does (docroot symlink -> data/generations/1/root, manifest beside it), an access
 * log written by the test; a write request trips the guard (an old one does not), a file dropped
 * into the live tree trips it, watch_refusal from another thread sees a line written just before
 * it, trips queue alerts, sync outcomes are remembered, and stopping closes every handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "controller.h"
#include "fsutil.h"
#include "guard.h"
#include "manifest.h"
#include "watch.h"
#include "testutil.h"

static char dir[64], logpath[128];

/* The fixtures are made and checked with system calls, not a shell. */
static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Whether a line of the file at path is line (whole) or, with prefix, starts with it. */
static bool has_line(const char *path, const char *line, bool prefix)
{
    char buf[1024];
    bool found = false;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (!found && fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\n")] = '\0';
        found = prefix ? strncmp(buf, line, strlen(line)) == 0 : strcmp(buf, line) == 0;
    }
    fclose(f);
    return found;
}

/* Whether one of the queued alerts (the .alert files in data/alerts) has a line starting with
 * prefix. */
static bool alert_has(const char *prefix)
{
    char d[256], p[512];
    bool found = false;
    snprintf(d, sizeof(d), "%s/data/alerts", dir);
    DIR *dh = opendir(d);
    assert_non_null(dh);
    for (struct dirent *e; !found && (e = readdir(dh));) {
        size_t n = strlen(e->d_name);
        if (n <= 6 || strcmp(e->d_name + n - 6, ".alert") != 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
        found = has_line(p, prefix, true);
    }
    closedir(dh);
    return found;
}

static void check_history(const char *line)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/data/alerts/history", dir);
    if (!has_line(p, line, false))
        fail_msg("%s has no line '%s'", p, line);
}

static void add_entry(mf_writer_t *mw, const char *root, const char *rel)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", root, rel);
    assert_int_equal(lstat(p, &st), 0);
    mf_entry_t e = {.path = rel,
                    .kind = S_ISDIR(st.st_mode) ? MF_DIRECTORY : MF_REGULAR,
                    .mode = st.st_mode & 07777,
                    .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
                    .size = S_ISDIR(st.st_mode) ? 0 : (uint64_t)st.st_size};
    assert_int_equal(mf_writer_add(mw, &e), 0);
}

static int setup(void **state)
{
    char root[256], manifest[256], p[512];
    snprintf(dir, sizeof(dir), "/tmp/test-watch-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(root, sizeof(root), "%s/data/generations/1/root", dir);
    snprintf(manifest, sizeof(manifest), "%s/data/generations/1/manifest", dir);
    snprintf(p, sizeof(p), "%s/wp-content/uploads", root);
    assert_int_equal(fs_mkdirs(p, strlen(p), 0755), 0);
    snprintf(p, sizeof(p), "%s/www", dir);
    assert_int_equal(fs_mkdirs(p, strlen(p), 0755), 0);
    snprintf(p, sizeof(p), "%s/index.php", root);
    put(p, "<?php\n");
    snprintf(p, sizeof(p), "%s/www/site", dir);
    assert_int_equal(symlink(root, p), 0);
    mf_writer_t *mw;
    assert_int_equal(mf_writer_open(manifest, &mw), 0);
    add_entry(mw, root, "index.php");
    add_entry(mw, root, "wp-content");
    add_entry(mw, root, "wp-content/uploads");
    uint8_t d[MF_HASH_LEN];
    uint64_t n;
    assert_int_equal(mf_writer_commit(mw, d, &n), 0);
    snprintf(logpath, sizeof(logpath), "%s/access.log", dir);
    put(logpath, "");
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(tu_rm_tree(dir), 0);
    return 0;
}

static cfg_t *config(void)
{
    char text[2048];
    cfg_t *cfg = cfg_new(controller_schema);
    snprintf(text, sizeof(text),
             "[listen]\naddress = 127.0.0.1:0\n[identity]\nkey = /x/k\ncert = /x/c\n"
             "[agent]\nfingerprint = %064d\n[site]\ndocroot = %s/www/site\ndata = %s/data\n"
             "[guard]\naccess_log = %s\nfile_check_interval = 1s\n"
             "[alerts]\nwebhook = http://127.0.0.1:1/hook\n",
             0, dir, dir, logpath);
    if (cfg_load_string(cfg, "/test/controller.conf", text) < 0)
        fail_msg("config: %s", cfg_last_error(cfg));
    return cfg;
}

static void log_line(const char *method, const char *path, int status, time_t t)
{
    char ts[64];
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%d/%b/%Y:%H:%M:%S +0000", &tm);
    FILE *f = fopen(logpath, "a");
    assert_non_null(f);
    fprintf(f, "203.0.113.9 - - [%s] \"%s %s HTTP/1.1\" %d 5 \"-\" \"test\"\n", ts, method, path,
            status);
    fclose(f);
}

typedef struct run {
    uv_loop_t *loop;
    watch_t *w;
    guard_signal_t want;
    uint64_t deadline;
    bool seen;
    uv_timer_t t;
} run_t;

static void on_check(uv_timer_t *t)
{
    run_t *r = t->data;
    guard_info_t info;
    if ((guard_is_tripped(watch_guard(r->w), &info) && (info.signals & (1u << r->want))) ||
        uv_now(r->loop) >= r->deadline) {
        r->seen = guard_is_tripped(watch_guard(r->w), &info) && (info.signals & (1u << r->want));
        uv_timer_stop(t);
        uv_stop(r->loop);
    }
}

/* Runs the loop until the guard shows signal `want` or ms pass; returns whether it did. */
static bool run_until(uv_loop_t *loop, watch_t *w, guard_signal_t want, uint64_t ms)
{
    run_t r = {.loop = loop, .w = w, .want = want, .deadline = uv_now(loop) + ms};
    uv_timer_init(loop, &r.t);
    r.t.data = &r;
    uv_timer_start(&r.t, on_check, 50, 50);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&r.t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return r.seen;
}

static void stop(uv_loop_t *loop, watch_t *w, cfg_t *cfg)
{
    watch_stop(w);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
    cfg_free(cfg);
}

static void t_access_log(void **state)
{
    uv_loop_t loop;
    watch_t *w;
    char err[512] = "";
    cfg_t *cfg = config();
    guard_info_t info;

    assert_int_equal(uv_loop_init(&loop), 0);
    if (watch_start(&loop, cfg, &w, err, sizeof(err)) < 0)
        fail_msg("watch_start: %s", err);
    /* Reads, and writes from before the switch, do not count. */
    log_line("GET", "/", 200, time(NULL));
    log_line("POST", "/wp-comments-post.php", 302, time(NULL) - 3600);
    log_line("POST", "/wp-cron.php?doing_wp_cron=1", 200, time(NULL));
    assert_false(run_until(&loop, w, GUARD_SIGNAL_ACCESS_LOG, 1500));
    log_line("POST", "/wp-comments-post.php", 302, time(NULL));
    assert_true(run_until(&loop, w, GUARD_SIGNAL_ACCESS_LOG, 5000));
    assert_true(guard_is_tripped(watch_guard(w), &info));
    assert_int_equal(info.signal, GUARD_SIGNAL_ACCESS_LOG);
    assert_non_null(strstr(info.evidence[0], "POST /wp-comments-post.php 302 from 203.0.113.9"));
    /* The trip queued an alert for the webhook (it cannot be delivered to port 1). */
    run_until(&loop, w, GUARD_SIGNAL_MANUAL, 300);
    assert_true(alert_has("kind tripped"));
    stop(&loop, w, cfg);
}

static void t_files(void **state)
{
    uv_loop_t loop;
    watch_t *w;
    char err[512] = "";
    cfg_t *cfg = config();
    guard_info_t info;
    char p[256];

    snprintf(p, sizeof(p), "%s/www/site/wp-content/uploads/cat.jpg", dir);
    put(p, "x\n");
    assert_int_equal(uv_loop_init(&loop), 0);
    if (watch_start(&loop, cfg, &w, err, sizeof(err)) < 0)
        fail_msg("watch_start: %s", err);
    assert_true(run_until(&loop, w, GUARD_SIGNAL_FILES, 5000));
    assert_true(guard_is_tripped(watch_guard(w), &info));
    assert_string_equal(info.evidence[0], "1 created, 0 changed, 0 deleted");
    assert_string_equal(info.evidence[1], "created wp-content/uploads/cat.jpg");
    stop(&loop, w, cfg);

    /* The trip survives a restart. */
    cfg = config();
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(watch_start(&loop, cfg, &w, err, sizeof(err)), 0);
    assert_true(guard_is_tripped(watch_guard(w), NULL));
    stop(&loop, w, cfg);
}

typedef struct barrier {
    watch_t *w;
    bool refused;
    char reason[1024];
    volatile int done;
} barrier_t;

static void *barrier_thread(void *arg)
{
    barrier_t *b = arg;
    b->refused = watch_refusal(b->w, b->reason, sizeof(b->reason));
    __atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void t_barrier(void **state)
{
    uv_loop_t loop;
    watch_t *w;
    char err[512] = "";
    cfg_t *cfg = config();
    pthread_t th;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(watch_start(&loop, cfg, &w, err, sizeof(err)), 0);
    run_until(&loop, w, GUARD_SIGNAL_MANUAL, 1200); /* past the first ticks */

    barrier_t b = {.w = w};
    assert_int_equal(pthread_create(&th, NULL, barrier_thread, &b), 0);
    while (!__atomic_load_n(&b.done, __ATOMIC_SEQ_CST))
        uv_run(&loop, UV_RUN_ONCE);
    pthread_join(th, NULL);
    assert_false(b.refused);

    /* A write logged just before the check is seen by it, without waiting for a tick. */
    log_line("PUT", "/wp-json/wp/v2/posts/1", 200, time(NULL));
    b = (barrier_t){.w = w};
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(pthread_create(&th, NULL, barrier_thread, &b), 0);
    while (!__atomic_load_n(&b.done, __ATOMIC_SEQ_CST))
        uv_run(&loop, UV_RUN_NOWAIT);
    pthread_join(th, NULL);
    uv_update_time(&loop);
    assert_true(b.refused);
    assert_non_null(strstr(b.reason, "signal access-log at "));
    assert_non_null(strstr(b.reason, "PUT /wp-json/wp/v2/posts/1 200"));
    assert_true(uv_now(&loop) - t0 < 900);

    /* Sync outcomes are kept in data/alerts/history. */
    watch_sync_done(w, false, 1795654923, "database error:\nline two");
    check_history("failing 1795654923");
    check_history("failure database error: line two");
    watch_sync_done(w, true, 1795655000, NULL);
    check_history("success 1795655000");
    check_history("failing 0");
    stop(&loop, w, cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_access_log, setup, teardown),
        cmocka_unit_test_setup_teardown(t_files, setup, teardown),
        cmocka_unit_test_setup_teardown(t_barrier, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
