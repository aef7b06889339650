/* Unit tests for controller/guard: the latch survives a reopen, the first trip is kept, evidence
 * is capped and escaped, the reason line, failover notifications, clear, and a corrupt state file
 * that must still count as tripped. */
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
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "testutil.h"

static char *make_dir(void)
{
    char tmpl[] = "/tmp/test-guard-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_dir(char *dir)
{
    assert_int_equal(tu_rm_tree(dir), 0);
    free(dir);
}

static guard_t *open_guard(const char *dir)
{
    guard_t *g = NULL;
    char err[256] = "";
    int r = guard_open(dir, &g, err, sizeof(err));
    if (r < 0)
        fail_msg("guard_open: %s", err);
    return g;
}

static char *read_text(const char *dir, const char *name)
{
    char path[512];
    static char text[65536];
    snprintf(path, sizeof(path), "%s/guard/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

static void t_persist(void **state)
{
    char *dir = make_dir();
    guard_t *g = open_guard(dir);
    guard_info_t info;
    char reason[512];
    struct stat st;

    assert_false(guard_is_tripped(g, &info));
    assert_false(guard_reason_line(g, reason, sizeof(reason)));
    assert_string_equal(reason, "");

    const char *ev[] = {"POST /wp-comments-post.php 302 from 203.0.113.9"};
    assert_int_equal(guard_trip(g, GUARD_SIGNAL_ACCESS_LOG, 1795660923, ev, 1), 1);
    const char *ev2[] = {"wp-content/uploads/2026/11/cat.jpg created"};
    assert_int_equal(guard_trip(g, GUARD_SIGNAL_FILES, 1795661000, ev2, 1), 0);
    guard_free(g);

    char path[512];
    snprintf(path, sizeof(path), "%s/guard", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    g = open_guard(dir);
    assert_true(guard_is_tripped(g, &info));
    assert_int_equal(info.signal, GUARD_SIGNAL_ACCESS_LOG);
    assert_int_equal(info.since, 1795660923);
    assert_int_equal(info.signals, (1u << GUARD_SIGNAL_ACCESS_LOG) | (1u << GUARD_SIGNAL_FILES));
    assert_int_equal(info.n_evidence, 2);
    assert_string_equal(info.evidence[1], "[files] wp-content/uploads/2026/11/cat.jpg created");
    assert_true(guard_reason_line(g, reason, sizeof(reason)));
    assert_string_equal(reason, "signal access-log at 2026-11-26T02:42:03Z: POST "
                                "/wp-comments-post.php 302 from 203.0.113.9; [files] "
                                "wp-content/uploads/2026/11/cat.jpg created");

    /* The events log has one JSON line per trip and evidence. */
    const char *ev_text = read_text(dir, "events");
    assert_non_null(ev_text);
    assert_non_null(strstr(ev_text, "{\"time\":\"2026-11-26T02:42:03Z\",\"event\":\"trip\","
                                    "\"signal\":\"access-log\",\"evidence\":[\"POST "
                                    "/wp-comments-post.php 302 from 203.0.113.9\"],\"more\":0}\n"));
    assert_non_null(strstr(ev_text, "\"event\":\"evidence\",\"signal\":\"files\""));

    /* Clear removes the latch and logs it. */
    assert_int_equal(guard_clear(g, "resolve --discard-local by root"), 0);
    assert_false(guard_is_tripped(g, NULL));
    guard_free(g);
    g = open_guard(dir);
    assert_false(guard_is_tripped(g, NULL));
    assert_non_null(strstr(read_text(dir, "events"), "\"event\":\"clear\""));
    guard_free(g);
    rm_dir(dir);
}

static void t_evidence_cap(void **state)
{
    char *dir = make_dir();
    guard_t *g = open_guard(dir);
    guard_info_t info;
    char reason[4096], line[600];
    const char *ev[1] = {line};

    for (int i = 0; i < 25; i++) {
        snprintf(line, sizeof(line), "POST /x%d", i);
        assert_int_equal(guard_trip(g, GUARD_SIGNAL_ACCESS_LOG, 1000 + i, ev, 1), i == 0);
    }
    assert_true(guard_is_tripped(g, &info));
    assert_int_equal(info.n_evidence, GUARD_MAX_EVIDENCE);
    assert_int_equal(info.dropped_evidence, 25 - GUARD_MAX_EVIDENCE);
    assert_int_equal(info.since, 1000);
    assert_true(guard_reason_line(g, reason, sizeof(reason)));
    assert_non_null(strstr(reason, "; POST /x9 (+15 more)"));

    /* A short buffer is cut with "...". */
    char small[40];
    assert_true(guard_reason_line(g, small, sizeof(small)));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_string_equal(small + sizeof(small) - 4, "...");
    guard_free(g);

    /* Long and hostile evidence is escaped and cut. */
    g = open_guard(dir);
    assert_int_equal(guard_clear(g, "test"), 0);
    memset(line, 'a', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    line[3] = '\n';
    line[4] = '\\';
    assert_int_equal(guard_trip(g, GUARD_SIGNAL_DATABASE, 5, ev, 1), 1);
    guard_free(g);
    g = open_guard(dir);
    assert_true(guard_is_tripped(g, &info));
    assert_int_equal(info.n_evidence, 1);
    assert_int_equal(strncmp(info.evidence[0], "aaa\\x0a\\x5caaa", 14), 0);
    assert_int_equal(strlen(info.evidence[0]), GUARD_EVIDENCE_LEN - 1);
    assert_string_equal(info.evidence[0] + GUARD_EVIDENCE_LEN - 4, "...");
    guard_free(g);
    rm_dir(dir);
}

static void t_primary(void **state)
{
    char *dir = make_dir();
    guard_t *g = open_guard(dir);
    char reason[512];
    guard_info_t info;

    assert_false(guard_primary_down(g));
    assert_int_equal(
        guard_note_primary(g, GUARD_PRIMARY_DOWN, 1795660923, "Pool primary is unhealthy"), 0);
    assert_true(guard_primary_down(g));
    assert_false(guard_is_tripped(g, NULL));
    assert_true(guard_reason_line(g, reason, sizeof(reason)));
    assert_string_equal(reason, "failover: the primary was reported DOWN at 2026-11-26T02:42:03Z "
                                "(Pool primary is unhealthy); the backup is serving");
    guard_free(g);

    g = open_guard(dir);
    assert_true(guard_primary_down(g));
    assert_true(guard_is_tripped(g, &info) == false);
    assert_int_equal(info.primary_since, 1795660923);
    assert_int_equal(guard_note_primary(g, GUARD_PRIMARY_UP, 1795661923, "healthy"), 0);
    assert_false(guard_primary_down(g));
    assert_false(guard_reason_line(g, reason, sizeof(reason)));
    guard_free(g);
    g = open_guard(dir);
    assert_false(guard_primary_down(g));
    guard_free(g);
    const char *ev = read_text(dir, "events");
    assert_non_null(strstr(ev, "\"event\":\"primary-down\",\"detail\":\"Pool primary is "
                               "unhealthy\"}"));
    assert_non_null(strstr(ev, "\"event\":\"primary-up\""));
    rm_dir(dir);
}

static void t_corrupt(void **state)
{
    char *dir = make_dir();
    char path[512];
    guard_info_t info;

    snprintf(path, sizeof(path), "%s/guard", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/guard/tripped", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("garbage\n", f);
    fclose(f);
    guard_t *g = open_guard(dir);
    assert_true(guard_is_tripped(g, &info));
    assert_int_equal(info.signal, GUARD_SIGNAL_MANUAL);
    assert_non_null(strstr(info.evidence[info.n_evidence - 1], "corrupt"));
    guard_free(g);
    rm_dir(dir);
}

/* serve and resolve are different processes: each sees the other's trip and clear. */
static void t_two_processes(void **state)
{
    char *dir = make_dir();
    guard_t *serve = open_guard(dir), *resolve = open_guard(dir);
    guard_info_t info;
    const char *ev[] = {"POST /wp-login.php 302 from 198.51.100.7"};

    assert_int_equal(guard_trip(serve, GUARD_SIGNAL_ACCESS_LOG, 100, ev, 1), 1);
    assert_true(guard_is_tripped(resolve, &info));
    assert_string_equal(info.evidence[0], ev[0]);
    time_t before = time(NULL);
    assert_int_equal(guard_clear(resolve, "resolve --discard-local"), 0);
    assert_false(guard_is_tripped(serve, &info));
    assert_true(info.cleared_at >= before);
    char reason[256];
    assert_false(guard_reason_line(serve, reason, sizeof(reason)));
    /* A new trip after the clear is a first trip again, seen by the other side. */
    assert_int_equal(guard_trip(serve, GUARD_SIGNAL_FILES, 200, ev, 1), 1);
    assert_true(guard_is_tripped(resolve, &info));
    assert_int_equal(info.signal, GUARD_SIGNAL_FILES);
    assert_int_equal(info.since, 200);
    guard_free(serve);
    guard_free(resolve);

    /* The clear time survives a restart. */
    guard_t *g = open_guard(dir);
    assert_true(guard_is_tripped(g, &info));
    assert_true(info.cleared_at >= before);
    guard_free(g);
    rm_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_persist), cmocka_unit_test(t_evidence_cap),  cmocka_unit_test(t_primary),
        cmocka_unit_test(t_corrupt), cmocka_unit_test(t_two_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
