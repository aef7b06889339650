/* Unit tests for controller/alert: option checks, the outbox (one item per recipient, kept
 * across reopen), what alert_check announces and that it remembers it across reopen, and the
 * retry bookkeeping of failed deliveries (to closed local ports). Delivery to a real SMTP server
 * and webhook receiver is tests/integration/alerts.sh's job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert.h"
#include "err.h"
#include "testutil.h"

#define NOW 1795654923

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/test-alert-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(tu_rm_tree(dir), 0);
    return 0;
}

static const char *const emails[] = {"ops@example.org", "owner@example.net"};
static const char *const hooks[] = {"http://127.0.0.1:1/hook"};

static alert_opts_t opts(void)
{
    return (alert_opts_t){
        .data_dir = dir,
        .site_id = "blog",
        .emails = emails,
        .n_emails = 2,
        .smtp_url = "smtp://127.0.0.1:1",
        .smtp_starttls = true,
        .from = "understudy@example.org",
        .webhooks = hooks,
        .n_webhooks = 1,
        .remind_s = 12 * 3600,
        .failure_grace_s = 6 * 3600,
        .stale_after_s = 24 * 3600,
    };
}

static alert_t *open_alert(void)
{
    alert_opts_t o = opts();
    alert_t *a = NULL;
    char err[256] = "";
    if (alert_open(&o, &a, err, sizeof(err)) < 0)
        fail_msg("alert_open: %s", err);
    return a;
}

/* Concatenates the outbox's item files into one string (static). */
static const char *outbox_text(void)
{
    static char all[65536];
    char path[512];
    struct dirent *de;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/alerts", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    while ((de = readdir(d))) {
        if (!strstr(de->d_name, ".alert"))
            continue;
        snprintf(path, sizeof(path), "%s/alerts/%s", dir, de->d_name);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        len += fread(all + len, 1, sizeof(all) - 1 - len, f);
        fclose(f);
    }
    closedir(d);
    all[len] = '\0';
    return all;
}

static void t_options(void **state)
{
    alert_opts_t o = opts();
    alert_t *a = NULL;
    char err[256];

    o.smtp_url = NULL;
    assert_int_equal(alert_open(&o, &a, err, sizeof(err)), ERR_CONFIG);
    assert_non_null(strstr(err, "smtp_url"));
    o = opts();
    o.from = "not an address";
    assert_int_equal(alert_open(&o, &a, err, sizeof(err)), ERR_CONFIG);
    o = opts();
    const char *bad[] = {"ops@example.org>\r\nRCPT TO:<x@y"};
    o.emails = bad;
    o.n_emails = 1;
    assert_int_equal(alert_open(&o, &a, err, sizeof(err)), ERR_CONFIG);
    o = opts();
    const char *badhook[] = {"file:///etc/passwd"};
    o.webhooks = badhook;
    assert_int_equal(alert_open(&o, &a, err, sizeof(err)), ERR_CONFIG);
    o = opts();
    o.smtp_user = "u";
    assert_int_equal(alert_open(&o, &a, err, sizeof(err)), ERR_CONFIG);
    assert_null(a);

    /* Nobody to tell is fine: nothing is queued. */
    o = (alert_opts_t){.data_dir = dir};
    assert_int_equal(alert_open(&o, &a, err, sizeof(err)), 0);
    assert_int_equal(alert_enqueue(a, ALERT_TEST, NOW, "s", "t"), 0);
    assert_int_equal(alert_pending(a), 0);
    alert_free(a);
}

static void t_outbox(void **state)
{
    alert_t *a = open_alert();
    assert_int_equal(alert_enqueue(a, ALERT_TEST, NOW, "hello\r\nBcc: evil@example.com", "body"),
                     3);
    assert_int_equal(alert_pending(a), 3);
    assert_int_equal(alert_next_due(a), NOW);
    alert_free(a);

    a = open_alert();
    assert_int_equal(alert_pending(a), 3);
    const char *all = outbox_text();
    assert_non_null(strstr(all, "to mail ops@example.org\n"));
    assert_non_null(strstr(all, "to mail owner@example.net\n"));
    assert_non_null(strstr(all, "to webhook http://127.0.0.1:1/hook\n"));
    assert_non_null(strstr(all, "subject hello  Bcc: evil@example.com\n")); /* one line */
    alert_free(a);
}

static void t_check(void **state)
{
    alert_t *a = open_alert();
    alert_status_t st = {.tripped = true,
                         .tripped_since = NOW - 10,
                         .reason = "signal access-log at T: POST /wp-comments-post.php 302",
                         .last_success = NOW - 100};

    assert_int_equal(alert_check(a, &st, NOW), 1);
    assert_int_equal(alert_pending(a), 3);
    assert_non_null(strstr(outbox_text(), "subject [understudy blog] backup has local changes"));
    assert_non_null(strstr(outbox_text(), "POST /wp-comments-post.php 302"));
    assert_int_equal(alert_check(a, &st, NOW + 60), 0);
    alert_free(a);

    /* Remembered across a restart; the reminder comes after remind. */
    a = open_alert();
    assert_int_equal(alert_check(a, &st, NOW + 3600), 0);
    assert_int_equal(alert_check(a, &st, NOW + 12 * 3600), 1);
    assert_int_equal(alert_pending(a), 6);
    assert_non_null(strstr(outbox_text(), "kind reminder\n"));
    assert_int_equal(alert_check(a, &st, NOW + 13 * 3600), 0);

    /* Sync failures past the grace, once per streak; stale once per last success. */
    alert_status_t f = {
        .failing_since = NOW, .last_failure = "database error", .last_success = NOW - 3600};
    assert_int_equal(alert_check(a, &f, NOW + 5 * 3600), 0);
    assert_int_equal(alert_check(a, &f, NOW + 7 * 3600), 1);
    assert_int_equal(alert_check(a, &f, NOW + 8 * 3600), 0);
    assert_int_equal(alert_check(a, &f, NOW + 24 * 3600), 1); /* stale now too */
    assert_non_null(strstr(outbox_text(), "kind stale\n"));
    assert_int_equal(alert_check(a, &f, NOW + 48 * 3600), 0);
    f.failing_since = NOW + 50 * 3600; /* a new streak */
    assert_int_equal(alert_check(a, &f, NOW + 57 * 3600), 1);

    /* A failover notification, once. */
    alert_status_t d = {.primary_down = true, .primary_down_since = NOW, .primary_detail = "x"};
    assert_int_equal(alert_check(a, &d, NOW + 1), 1);
    assert_int_equal(alert_check(a, &d, NOW + 2), 0);
    alert_free(a);

    /* A new trip after a clear is announced again. */
    a = open_alert();
    alert_status_t clear = {0};
    assert_int_equal(alert_check(a, &clear, NOW + 100), 0);
    st.tripped_since = NOW + 200;
    assert_int_equal(alert_check(a, &st, NOW + 200), 1);
    alert_free(a);
}

static void t_retry(void **state)
{
    alert_t *a = open_alert();
    alert_stats_t s;

    assert_int_equal(alert_enqueue(a, ALERT_TEST, NOW, "subject", "body"), 3);
    assert_int_equal(alert_deliver(a, NOW, &s), 0);
    assert_int_equal(s.delivered, 0);
    assert_int_equal(s.failed, 3);
    assert_int_equal(s.pending, 3);
    assert_non_null(strstr(s.first_error, "127.0.0.1"));
    assert_int_equal(alert_next_due(a), NOW + 60);
    assert_non_null(strstr(outbox_text(), "attempts 1\nnext 1795654983\nerror "));

    /* Not due yet: nothing is tried. */
    assert_int_equal(alert_deliver(a, NOW + 30, &s), 0);
    assert_int_equal(s.failed, 0);
    /* Due: tried again, the delay doubles; kept across a restart. */
    assert_int_equal(alert_deliver(a, NOW + 60, &s), 0);
    assert_int_equal(s.failed, 3);
    alert_free(a);
    a = open_alert();
    assert_int_equal(alert_next_due(a), NOW + 60 + 120);
    assert_non_null(strstr(outbox_text(), "attempts 2\n"));
    /* The delay is capped at an hour, and nothing is ever dropped. */
    time_t t = NOW + 180;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(alert_deliver(a, t, &s), 0);
        t = alert_next_due(a);
    }
    assert_int_equal(alert_pending(a), 3);
    assert_non_null(strstr(outbox_text(), "attempts 10\n"));
    assert_int_equal(alert_deliver(a, t, &s), 0);
    assert_int_equal(alert_next_due(a), t + ALERT_MAX_BACKOFF_S);

    /* A damaged item is set aside, not deleted. */
    char path[256];
    snprintf(path, sizeof(path), "%s/alerts/000000000001-000000000000.alert", dir);
    FILE *f = fopen(path, "w");
    fputs("garbage", f);
    fclose(f);
    assert_int_equal(alert_pending(a), 4);
    assert_int_equal(alert_deliver(a, t, &s), 0);
    assert_int_equal(alert_pending(a), 3);
    size_t plen = strlen(path);
    snprintf(path + plen, sizeof(path) - plen, ".damaged");
    assert_int_equal(access(path, F_OK), 0);
    alert_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_options, setup, teardown),
        cmocka_unit_test_setup_teardown(t_outbox, setup, teardown),
        cmocka_unit_test_setup_teardown(t_check, setup, teardown),
        cmocka_unit_test_setup_teardown(t_retry, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
