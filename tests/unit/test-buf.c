/* Unit tests for common/buf: append, consume, reserve/commit, compaction, caps, printf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "buf.h"

static void t_append_consume(void **state)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_append_str(&b, " world"), 0);
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 11);
    assert_memory_equal(buf_data(&b), "hello world", 11);
    buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_memory_equal(buf_data(&b), "world", 5);
    buf_consume(&b, 100); /* more than there is: empty */
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append(&b, "x", 1), 0);
    assert_memory_equal(buf_data(&b), "x", 1);
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap); /* the allocation stays */
    buf_free(&b);
    assert_null(b.base);
    assert_int_equal(b.len, 0);
}

static void t_reserve_commit(void **state)
{
    buf_t b;
    buf_init(&b, 0);
    uint8_t *p = buf_reserve(&b, 0); /* nothing allocated yet, still a valid answer */
    assert_non_null(p);
    p = buf_reserve(&b, 3);
    assert_non_null(p);
    memcpy(p, "abc", 3);
    assert_int_equal(b.len, 0); /* not counted until committed */
    buf_commit(&b, 2);
    assert_int_equal(b.len, 2);
    assert_memory_equal(buf_data(&b), "ab", 2);
    p = buf_reserve(&b, 10000); /* growth keeps what is there */
    assert_non_null(p);
    assert_memory_equal(buf_data(&b), "ab", 2);
    assert_true(b.cap >= 10002);
    memset(p, 'z', 10000);
    buf_commit(&b, 10000);
    assert_int_equal(b.len, 10002);
    assert_int_equal(buf_data(&b)[10001], 'z');
    buf_free(&b);
}

/* Consumed space at the front is reused before the buffer grows. */
static void t_compaction(void **state)
{
    uint8_t data[200];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)i;
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, data, 200), 0);
    size_t cap = b.cap;
    buf_consume(&b, 150);
    assert_int_equal(b.start, 150);
    assert_int_equal(buf_append(&b, data, 200), 0);
    assert_int_equal(b.cap, cap); /* 250 bytes fit after moving the 50 to the front */
    assert_int_equal(b.start, 0);
    assert_int_equal(b.len, 250);
    assert_memory_equal(buf_data(&b), data + 150, 50);
    assert_memory_equal(buf_data(&b) + 50, data, 200);

    /* Compaction then growth: the data still arrives in order. */
    buf_consume(&b, 10);
    assert_int_equal(buf_append(&b, data, 200), 0);
    assert_int_equal(b.len, 440);
    assert_memory_equal(buf_data(&b), data + 160, 40);
    assert_memory_equal(buf_data(&b) + 40, data, 200);
    assert_memory_equal(buf_data(&b) + 240, data, 200);
    buf_free(&b);
}

static void t_cap(void **state)
{
    buf_t b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(buf_append(&b, "x", 1), UV_ENOBUFS);
    assert_null(buf_reserve(&b, 1));
    assert_int_equal(b.len, 10);
    /* The cap counts unconsumed bytes, not the allocation. */
    buf_consume(&b, 4);
    assert_int_equal(buf_append(&b, "abcd", 4), 0);
    assert_int_equal(buf_append(&b, "e", 1), UV_ENOBUFS);
    assert_memory_equal(buf_data(&b), "456789abcd", 10);
    /* Sizes that would overflow a sum are refused, not wrapped. */
    assert_int_equal(buf_append(&b, "e", SIZE_MAX), UV_ENOBUFS);
    assert_null(buf_reserve(&b, SIZE_MAX));
    assert_int_equal(buf_printf(&b, "%s", "x"), UV_ENOBUFS);
    /* buf_free keeps the cap. */
    buf_free(&b);
    assert_int_equal(buf_append(&b, "0123456789x", 11), UV_ENOBUFS);
    buf_free(&b);

    /* Without a cap, an impossible size is UV_ENOMEM and nothing is written. */
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_null(buf_reserve(&b, SIZE_MAX));
    assert_null(buf_reserve(&b, SIZE_MAX - 2));
    assert_int_equal(buf_append(&b, "x", SIZE_MAX - 1), UV_ENOMEM);
    assert_int_equal(b.len, 3);
    buf_free(&b);
}

static void t_printf(void **state)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_int_equal(b.len, 4); /* no NUL counted */
    assert_memory_equal(buf_data(&b), "42-x", 4);
    assert_int_equal(buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 4);
    assert_int_equal(buf_printf(&b, "%05u|%.3s", 7u, "abcdef"), 0);
    assert_memory_equal(buf_data(&b), "42-x00007|abc", 13);
    /* Long output grows the buffer. */
    char big[5000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 13 + 2 + 4999);
    assert_int_equal(buf_data(&b)[13], '[');
    assert_int_equal(buf_data(&b)[b.len - 1], ']');
    buf_free(&b);

    /* Text that fills a capped buffer exactly fits: the NUL is not counted against the cap. */
    buf_init(&b, 5);
    assert_int_equal(buf_printf(&b, "%s", "hello"), 0);
    assert_memory_equal(buf_data(&b), "hello", 5);
    buf_free(&b);
    buf_init(&b, 5);
    assert_int_equal(buf_printf(&b, "%s", "hello!"), UV_ENOBUFS);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_printf(&b, "%s", "hel"), 0);
    assert_int_equal(buf_printf(&b, "%d", 12), 0);
    assert_memory_equal(buf_data(&b), "hel12", 5);
    buf_free(&b);
}

static void t_zeroed(void **state)
{
    buf_t b;
    memset(&b, 0, sizeof(b));
    buf_free(&b); /* accepts a zeroed buffer */
    buf_free(&b);
    assert_null(buf_data(&b));
    buf_t c = BUF_INIT;
    assert_int_equal(c.len, 0);
    buf_consume(&c, 5);
    buf_reset(&c);
    assert_int_equal(buf_append(&c, "a", 1), 0); /* a zeroed buffer is usable, uncapped */
    buf_free(&c);
    buf_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_append_consume), cmocka_unit_test(t_reserve_commit),
        cmocka_unit_test(t_compaction),     cmocka_unit_test(t_cap),
        cmocka_unit_test(t_printf),         cmocka_unit_test(t_zeroed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
