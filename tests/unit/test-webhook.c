/* Unit tests for the pure parts of controller/webhook: the strict JSON scanner on Cloudflare
 * notification bodies (DOWN/UP from data, from alert_event, from the text; pool filtering;
 * Cloudflare's test message), malformed and hostile bodies, and the secret comparison. The HTTPS
 * endpoint itself is tested by tests/integration/webhook.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook.h"

static int parse(const char *body, const char *const *pools, size_t n, webhook_note_t *note)
{
    return webhook_parse_note(body, strlen(body), pools, n, note);
}

static void t_states(void **state)
{
    webhook_note_t n;

    assert_int_equal(parse("{\"name\":\"lb\",\"text\":\"Pool primary is unhealthy\",\"ts\":"
                           "1795654923,\"alert_type\":\"load_balancing_health_alert\","
                           "\"data\":{\"pool_name\":\"primary\",\"new_health\":\"Unhealthy\","
                           "\"origins\":[{\"name\":\"a\",\"healthy\":false}],\"x\":null}}",
                           NULL, 0, &n),
                     0);
    assert_int_equal(n.state, GUARD_PRIMARY_DOWN);
    assert_true(n.relevant);
    assert_string_equal(n.detail,
                        "load_balancing_health_alert: primary: Pool primary is unhealthy");

    assert_int_equal(
        parse("{\"data\":{\"pool_name\":\"primary\",\"new_health\":\"Healthy\"}}", NULL, 0, &n), 0);
    assert_int_equal(n.state, GUARD_PRIMARY_UP);

    /* alert_event of a health alert. */
    assert_int_equal(parse("{\"alert_type\":\"health_check_status_notification\","
                           "\"alert_event\":\"ALERT_STATE_EVENT_START\",\"data\":{}}",
                           NULL, 0, &n),
                     0);
    assert_int_equal(n.state, GUARD_PRIMARY_DOWN);
    assert_int_equal(parse("{\"alert_type\":\"health_check_status_notification\","
                           "\"alert_event\":\"ALERT_STATE_EVENT_END\",\"data\":{}}",
                           NULL, 0, &n),
                     0);
    assert_int_equal(n.state, GUARD_PRIMARY_UP);

    /* The text alone; "unhealthy" is not read as "healthy". */
    assert_int_equal(parse("{\"text\":\"Origin x is UNHEALTHY\"}", NULL, 0, &n), 0);
    assert_int_equal(n.state, GUARD_PRIMARY_DOWN);
    assert_int_equal(parse("{\"text\":\"Origin x is healthy again\"}", NULL, 0, &n), 0);
    assert_int_equal(n.state, GUARD_PRIMARY_UP);

    /* Cloudflare's test message says neither. */
    assert_int_equal(parse("{\"text\":\"Hello World! This is a test message sent from "
                           "https://cloudflare.com. If you can see this, your webhook is "
                           "configured properly.\"}",
                           NULL, 0, &n),
                     0);
    assert_int_equal(n.state, GUARD_PRIMARY_UNKNOWN);

    /* Escapes are decoded; control characters do not reach the detail. */
    assert_int_equal(parse("{\"text\":\"a\\nb \\u00e9 \\ud83d\\ude00 \\\"q\\\" \\/\","
                           "\"data\":{\"status\":\"down\"}}",
                           NULL, 0, &n),
                     0);
    assert_int_equal(n.state, GUARD_PRIMARY_DOWN);
    assert_string_equal(n.detail, "a b \xc3\xa9 \xf0\x9f\x98\x80 \"q\" /");
}

static void t_pools(void **state)
{
    const char *pools[] = {"primary-pool"};
    webhook_note_t n;

    assert_int_equal(parse("{\"data\":{\"pool_name\":\"backup-pool\",\"new_health\":"
                           "\"Unhealthy\"}}",
                           pools, 1, &n),
                     0);
    assert_false(n.relevant);
    assert_int_equal(parse("{\"data\":{\"pool_name\":\"primary-pool\",\"new_health\":"
                           "\"Unhealthy\"}}",
                           pools, 1, &n),
                     0);
    assert_true(n.relevant);
    assert_int_equal(parse("{\"data\":{\"origin_name\":\"primary-pool\"}}", pools, 1, &n), 0);
    assert_true(n.relevant);
    assert_int_equal(parse("{\"text\":\"Pool primary-pool is unhealthy\"}", pools, 1, &n), 0);
    assert_true(n.relevant);
}

static void t_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "[]",
        "\"x\"",
        "{",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{'a':1}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":-}",
        "{\"a\":tru}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"raw\ttab\"}",
        "{\"a\":1} x",
        "{\"a\":[1,]}",
        "{\"a\":\"unterminated}",
    };
    webhook_note_t n;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], NULL, 0, &n) != UV_EINVAL)
            fail_msg("accepted: %s", bad[i]);

    /* Nesting is capped. */
    char deep[200] = "{\"a\":";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    for (int i = 0; i < 40; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    assert_int_equal(parse(deep, NULL, 0, &n), UV_EINVAL);
    assert_int_equal(
        parse("{\"a\":[[[[1]]]],\"b\":{\"c\":{\"d\":true}},\"e\":-1.5e+3}", NULL, 0, &n), 0);

    /* Long values are cut, not overflowed; an embedded NUL ends nothing early. */
    char *big = malloc(70000);
    assert_non_null(big);
    strcpy(big, "{\"text\":\"unhealthy ");
    memset(big + strlen(big), 'x', 60000);
    strcpy(big + 19 + 60000, "\"}");
    assert_int_equal(parse(big, NULL, 0, &n), 0);
    assert_int_equal(n.state, GUARD_PRIMARY_DOWN);
    assert_true(strlen(n.detail) < GUARD_DETAIL_LEN);
    free(big);
    assert_int_equal(webhook_parse_note("{\"a\":\"x\0y\"}", 11, NULL, 0, &n), UV_EINVAL);
}

static void t_secret(void **state)
{
    assert_true(webhook_secret_equal("0123456789abcdef", "0123456789abcdef", 16));
    assert_false(webhook_secret_equal("0123456789abcdef", "0123456789abcdeF", 16));
    assert_false(webhook_secret_equal("0123456789abcdef", "0123456789abcde", 15));
    assert_false(webhook_secret_equal("0123456789abcdef", "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_states),
        cmocka_unit_test(t_pools),
        cmocka_unit_test(t_malformed),
        cmocka_unit_test(t_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
