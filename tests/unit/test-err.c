/* Unit tests for common/err: the table is complete and consistent, libuv codes pass through. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "err.h"

/* Every entry: the enum, the name, the exit code and the message agree with ERR_MAP. */
static void t_table(void **state)
{
#define CHECK_(name, exit_code, msg)                                                               \
    assert_string_equal(err_name(ERR_##name), "ERR_" #name);                                       \
    assert_int_equal(err_exit_code(ERR_##name), exit_code);                                        \
    assert_string_equal(err_str(ERR_##name), msg);
    ERR_MAP(CHECK_)
#undef CHECK_
}

static void t_every_code(void **state)
{
    assert_true(ERR_LAST_ - ERR_FIRST_ > 1);
    for (int c = ERR_FIRST_ + 1; c < ERR_LAST_; c++) {
        const char *name = err_name(c), *msg = err_str(c);
        assert_non_null(name);
        assert_non_null(msg);
        assert_true(strncmp(name, "ERR_", 4) == 0 && strlen(name) > 4);
        assert_true(strlen(msg) > 0);
        int x = err_exit_code(c);
        assert_true(x >= 2 && x <= 127); /* 0 success, 1 system errors, 128+ signals */
        for (int d = ERR_FIRST_ + 1; d < c; d++)
            assert_string_not_equal(name, err_name(d));
    }
}

/* Project codes stay clear of every code libuv knows, and below its range. */
static void t_no_overlap(void **state)
{
    assert_true(ERR_LAST_ < -4095);
#define CHECK_(name, msg)                                                                          \
    assert_false((int)UV_##name > (int)ERR_FIRST_ && (int)UV_##name < (int)ERR_LAST_);
    UV_ERRNO_MAP(CHECK_)
#undef CHECK_
}

static void t_libuv_passthrough(void **state)
{
    static const int codes[] = {UV_ENOENT,     UV_ECONNREFUSED, UV_ENOMEM, UV_ENOBUFS,
                                UV_EAI_NONAME, UV_EOF,          UV_EACCES, UV_ETIMEDOUT};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_string_equal(err_name(codes[i]), uv_err_name(codes[i]));
        assert_string_equal(err_str(codes[i]), uv_strerror(codes[i]));
        assert_int_equal(err_exit_code(codes[i]), 1);
    }
    assert_string_equal(err_name(UV_ECONNREFUSED), "ECONNREFUSED");
}

static void t_success(void **state)
{
    static const int codes[] = {0, 1, 42, INT_MAX};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_int_equal(err_exit_code(codes[i]), 0);
        assert_string_equal(err_name(codes[i]), "OK");
        assert_string_equal(err_str(codes[i]), "success");
    }
}

/* Codes nobody defined get a fixed name and message (no allocation: the ASan build would see a
 * leak), and exit code 1. */
static void t_unknown(void **state)
{
    static const int codes[] = {ERR_FIRST_, ERR_LAST_, -4242, -9999, INT_MIN, ERR_BASE - 1};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_non_null(err_name(codes[i]));
        assert_non_null(err_str(codes[i]));
        assert_true(strncmp(err_name(codes[i]), "ERR_", 4) != 0);
        assert_int_equal(err_exit_code(codes[i]), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_table),      cmocka_unit_test(t_every_code),
        cmocka_unit_test(t_no_overlap), cmocka_unit_test(t_libuv_passthrough),
        cmocka_unit_test(t_success),    cmocka_unit_test(t_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
