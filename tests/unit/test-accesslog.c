/* Unit tests for controller/accesslog: nginx and Apache combined lines, a custom format with
 * CF-Connecting-IP, the write rules (methods, statuses, wp-cron, xmlrpc, nonce GETs, ignore
 * rules), $time_local parsing, and following real temp files through partial lines, rotation by
 * rename and copytruncate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "accesslog.h"
#include "err.h"
#include "testutil.h"

/* 2026-11-26T01:02:03Z */
#define T0 1795654923

static accesslog_t *make(const char *format, const char *const *ignore, size_t n_ignore,
                         const char *const *paths, size_t n_paths, bool cloudflare)
{
    fw_spec_t spec;
    accesslog_t *al = NULL;
    char err[256] = "";

    fw_spec_init(&spec);
    if (cloudflare)
        assert_int_equal(fw_spec_add_builtin_ranges(&spec), 0);
    al_opts_t o = {.paths = paths,
                   .n_paths = n_paths,
                   .format = format,
                   .ignore = ignore,
                   .n_ignore = n_ignore,
                   .trusted = &spec.cloudflare};
    int r = accesslog_new(&o, &al, err, sizeof(err));
    fw_spec_free(&spec);
    if (r < 0)
        fail_msg("accesslog_new: %s", err);
    return al;
}

static int match(accesslog_t *al, const char *line, al_hit_t *hit)
{
    return accesslog_match_line(al, line, strlen(line), "access.log", hit);
}

static void t_time_local(void **state)
{
    time_t t;
    const char *s = "26/Nov/2026:01:02:03 +0000";
    assert_int_equal(accesslog_parse_time_local(s, strlen(s), &t), 0);
    assert_int_equal(t, T0);
    s = "26/Nov/2026:02:32:03 +0130";
    assert_int_equal(accesslog_parse_time_local(s, strlen(s), &t), 0);
    assert_int_equal(t, T0);
    s = "25/Nov/2026:20:02:03 -0500";
    assert_int_equal(accesslog_parse_time_local(s, strlen(s), &t), 0);
    assert_int_equal(t, T0);
    s = "26/Nob/2026:01:02:03 +0000";
    assert_int_equal(accesslog_parse_time_local(s, strlen(s), &t), UV_EINVAL);
    s = "26/Nov/2026:01:02:03";
    assert_int_equal(accesslog_parse_time_local(s, strlen(s), &t), UV_EINVAL);
    s = "26/Nov/2026:25:02:03 +0000";
    assert_int_equal(accesslog_parse_time_local(s, strlen(s), &t), UV_EINVAL);
}

static void t_combined(void **state)
{
    accesslog_t *al = make(NULL, NULL, 0, NULL, 0, true);
    al_hit_t hit;

    accesslog_set_since(al, T0);
    /* nginx combined. */
    assert_int_equal(match(al,
                           "203.0.113.9 - - [26/Nov/2026:01:02:03 +0000] \"POST "
                           "/wp-comments-post.php HTTP/1.1\" 302 5 \"https://blog.example/?p=1\" "
                           "\"Mozilla/5.0 (X11; Linux x86_64)\"",
                           &hit),
                     1);
    assert_string_equal(hit.line, "POST /wp-comments-post.php 302 from 203.0.113.9 at "
                                  "2026-11-26T01:02:03Z (access.log)");
    assert_int_equal(hit.time, T0);
    /* Apache combined: ident field and "-" for no bytes, escaped quote in the UA. */
    assert_int_equal(match(al,
                           "198.51.100.7 - editor [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-login.php HTTP/1.1\" 200 - \"-\" \"Evil \\\"UA\\\" 1.0\"",
                           &hit),
                     1);
    assert_string_equal(hit.line,
                        "POST /wp-login.php 200 from 198.51.100.7 at 2026-11-26T01:05:00Z "
                        "(access.log)");
    /* xmlrpc.php answers 200 even to failed logins: counted. */
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST /xmlrpc.php "
                           "HTTP/1.1\" 200 403 \"-\" \"-\"",
                           NULL),
                     1);
    /* PUT, PATCH, DELETE through the REST API. */
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"DELETE "
                           "/wp-json/wp/v2/posts/5 HTTP/1.1\" 200 403 \"-\" \"-\"",
                           NULL),
                     1);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"PATCH "
                           "/wp-json/wp/v2/posts/5 HTTP/1.1\" 204 0 \"-\" \"-\"",
                           NULL),
                     1);
    /* Nonce-protected GET actions in wp-admin. */
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"GET "
                           "/wp-admin/post.php?post=1&action=trash&_wpnonce=0a1b HTTP/2.0\" 302 0 "
                           "\"-\" \"-\"",
                           NULL),
                     1);
    /* Not writes: GET, failed statuses, before the switch, wp-cron, malformed requests. */
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"GET /?p=1 HTTP/1.1\" "
                           "200 512 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"GET "
                           "/wp-admin/edit.php?x_wpnonce=1 HTTP/1.1\" 200 512 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-comments-post.php HTTP/1.1\" 403 0 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-comments-post.php HTTP/1.1\" 503 0 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:02:02 +0000] \"POST "
                           "/wp-comments-post.php HTTP/1.1\" 302 0 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "127.0.0.1 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-cron.php?doing_wp_cron=1795654923.1234 HTTP/1.1\" 200 0 \"-\" "
                           "\"WordPress/6.1.1; https://blog.example\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "127.0.0.1 - - [26/Nov/2026:01:05:00 +0000] \"POST /wp-cron.php "
                           "HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(
        match(al, "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"-\" 400 0 \"-\" \"-\"", NULL),
        0);
    /* wp-cron in disguise is not ignored. */
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-cron.php/../wp-comments-post.php HTTP/1.1\" 302 0 \"-\" \"-\"",
                           NULL),
                     1);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-cron.phpx HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     1);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-cron%2ephp HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     1);
    /* Absolute-form targets are matched by path. */
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "http://blog.example/wp-cron.php?doing_wp_cron HTTP/1.1\" 200 0 \"-\" "
                           "\"-\"",
                           NULL),
                     0);
    /* Lines that do not fit the format. */
    assert_int_equal(match(al, "garbage", NULL), UV_EINVAL);
    assert_int_equal(match(al, "", NULL), UV_EINVAL);
    accesslog_free(al);
}

static void t_rules(void **state)
{
    const char *ignore[] = {"POST /wp-json/akismet/", "* /healthz"};
    accesslog_t *al = make("combined", ignore, 2, NULL, 0, false);

    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"POST "
                           "/wp-json/akismet/v1/key HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"PUT "
                           "/wp-json/akismet/v1/key HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     1);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"DELETE "
                           "/healthz?x=1 HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     0);
    assert_int_equal(match(al,
                           "198.51.100.7 - - [26/Nov/2026:01:05:00 +0000] \"DELETE "
                           "/healthzz HTTP/1.1\" 200 0 \"-\" \"-\"",
                           NULL),
                     1);
    accesslog_free(al);

    /* Bad rules and formats are refused. */
    accesslog_t *bad = NULL;
    char err[256];
    const char *r1[] = {"post /x"};
    al_opts_t o = {.ignore = r1, .n_ignore = 1};
    assert_int_equal(accesslog_new(&o, &bad, err, sizeof(err)), ERR_CONFIG);
    assert_non_null(strstr(err, "upper case"));
    const char *r2[] = {"POST x"};
    o.ignore = r2;
    assert_int_equal(accesslog_new(&o, &bad, err, sizeof(err)), ERR_CONFIG);
    o.n_ignore = 0;
    o.format = "$remote_addr $request";
    assert_int_equal(accesslog_new(&o, &bad, err, sizeof(err)), ERR_CONFIG);
    assert_non_null(strstr(err, "$status"));
    o.format = "$request$status";
    assert_int_equal(accesslog_new(&o, &bad, err, sizeof(err)), ERR_CONFIG);
}

static void t_cloudflare(void **state)
{
    accesslog_t *al = make("$remote_addr $http_cf_connecting_ip [$time_iso8601] \"$request\" "
                           "$status \"$http_user_agent\"",
                           NULL, 0, NULL, 0, true);
    al_hit_t hit;

    /* The peer is Cloudflare: the header names the client. */
    assert_int_equal(match(al,
                           "162.158.1.1 203.0.113.9 [2026-11-26T02:02:03+01:00] \"POST "
                           "/wp-login.php HTTP/1.1\" 302 \"Mozilla\"",
                           &hit),
                     1);
    assert_string_equal(hit.line, "POST /wp-login.php 302 from 203.0.113.9 at 2026-11-26T01:02:03Z "
                                  "(access.log)");
    assert_int_equal(match(al,
                           "2606:4700::1 2001:db8::9 [2026-11-26T01:02:03+00:00] \"POST "
                           "/wp-login.php HTTP/1.1\" 302 \"Mozilla\"",
                           &hit),
                     1);
    assert_non_null(strstr(hit.line, " from 2001:db8::9 "));
    /* Not Cloudflare: a forged header is not believed. */
    assert_int_equal(match(al,
                           "198.51.100.1 203.0.113.9 [2026-11-26T01:02:03+00:00] \"POST "
                           "/wp-login.php HTTP/1.1\" 302 \"Mozilla\"",
                           &hit),
                     1);
    assert_non_null(strstr(hit.line, " from 198.51.100.1 "));
    /* Cloudflare without a usable header. */
    assert_int_equal(match(al,
                           "162.158.1.1 - [2026-11-26T01:02:03Z] \"POST /wp-login.php HTTP/1.1\" "
                           "302 \"Mozilla\"",
                           &hit),
                     1);
    assert_non_null(strstr(hit.line, " from 162.158.1.1 "));
    accesslog_free(al);

    fw_spec_t spec;
    fw_spec_init(&spec);
    assert_int_equal(fw_spec_add_builtin_ranges(&spec), 0);
    assert_true(accesslog_addr_in(&spec.cloudflare, "104.16.0.1"));
    assert_true(accesslog_addr_in(&spec.cloudflare, "104.23.255.255"));
    assert_false(accesslog_addr_in(&spec.cloudflare, "104.28.0.0"));
    assert_true(accesslog_addr_in(&spec.cloudflare, "::ffff:104.16.0.1"));
    assert_true(accesslog_addr_in(&spec.cloudflare, "2a06:98c7:ffff::1"));
    assert_false(accesslog_addr_in(&spec.cloudflare, "2a06:98c8::1"));
    assert_false(accesslog_addr_in(&spec.cloudflare, "not an address"));
    fw_spec_free(&spec);
}

/* ---- files ---- */

static const char *line_post =
    "203.0.113.9 - - [26/Nov/2026:01:02:03 +0000] \"POST /wp-comments-post.php HTTP/1.1\" 302 5 "
    "\"-\" \"-\"\n";
static const char *line_get =
    "203.0.113.9 - - [26/Nov/2026:01:02:03 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"-\"\n";

static void append(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static size_t poll_n(accesslog_t *al)
{
    al_hit_t hits[4];
    size_t n = 99;
    assert_int_equal(accesslog_poll(al, hits, 4, &n), 0);
    return n;
}

static void t_follow(void **state)
{
    char dir[] = "/tmp/test-accesslog-XXXXXX";
    char path[256], rotated[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", dir);
    const char *paths[] = {path};
    accesslog_t *al = make(NULL, NULL, 0, paths, 1, false);
    accesslog_set_since(al, T0);

    /* Missing file: nothing, no error. */
    assert_int_equal(poll_n(al), 0);
    append(path, line_get, strlen(line_get));
    append(path, line_post, strlen(line_post));
    assert_int_equal(poll_n(al), 1);
    assert_int_equal(poll_n(al), 0);

    /* A partial line waits for its end. */
    size_t half = strlen(line_post) / 2;
    append(path, line_post, half);
    assert_int_equal(poll_n(al), 0);
    append(path, line_post + half, strlen(line_post) - half);
    assert_int_equal(poll_n(al), 1);

    /* Rotation by rename: the writer still appends to the old file, then the new one appears.
     * Both lines are seen, the old file's first. */
    assert_int_equal(rename(path, rotated), 0);
    append(rotated, line_post, strlen(line_post));
    append(path, line_post, strlen(line_post));
    append(path, line_post, strlen(line_post));
    size_t total = 0;
    for (int i = 0; i < 3; i++)
        total += poll_n(al);
    assert_int_equal(total, 3);
    append(rotated, line_post, strlen(line_post)); /* late writes to the old file are lost */
    assert_int_equal(poll_n(al), 0);

    /* copytruncate: emptied in place, then a new line shorter than what was read. */
    assert_int_equal(truncate(path, 0), 0);
    append(path, line_post, strlen(line_post));
    assert_int_equal(poll_n(al), 1);

    /* An overlong line is skipped whole, and the next line is still read. */
    char *big = malloc(AL_MAX_LINE + 100);
    assert_non_null(big);
    memset(big, 'x', AL_MAX_LINE + 99);
    big[AL_MAX_LINE + 99] = '\n';
    append(path, big, AL_MAX_LINE + 100);
    free(big);
    append(path, line_post, strlen(line_post));
    assert_int_equal(poll_n(al), 1);

    /* More hits than room: all counted, the first ones kept. */
    for (int i = 0; i < 6; i++)
        append(path, line_post, strlen(line_post));
    al_hit_t hits[2];
    size_t n = 0;
    assert_int_equal(accesslog_poll(al, hits, 2, &n), 0);
    assert_int_equal(n, 6);
    assert_non_null(strstr(hits[1].line, "POST /wp-comments-post.php 302"));

    /* A small budget reads a backlog over several polls; SIZE_MAX reads it all at once. */
    accesslog_set_budget(al, strlen(line_post) + 1);
    for (int i = 0; i < 4; i++)
        append(path, line_post, strlen(line_post));
    assert_int_equal(poll_n(al), 1);
    accesslog_set_budget(al, SIZE_MAX);
    assert_int_equal(poll_n(al), 3);
    accesslog_set_budget(al, 0);

    accesslog_free(al);
    assert_int_equal(tu_rm_tree(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_time_local), cmocka_unit_test(t_combined), cmocka_unit_test(t_rules),
        cmocka_unit_test(t_cloudflare), cmocka_unit_test(t_follow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
