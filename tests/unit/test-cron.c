/* Tests for 'understudy-agent cron': the crontab line's format, a minute that is stable per site
 * and spread across sites, path resolution and quoting, and refusal of bad options. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"
#include "testutil.h"

static char dir[] = "/tmp/test-cron-XXXXXX";
static char conf[PATH_MAX];

/* Output of one cmd_cron call. */
struct run {
    int rc;
    char out[8192];
    char err[8192];
};

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
}

/* Writes a valid agent.conf for site `site` at path. */
static void write_conf(const char *path, const char *site)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "[controller]\n"
             "address = 127.0.0.1:7700\n"
             "fingerprint = "
             "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
             "[identity]\n"
             "key = %s/agent.key\n"
             "cert = %s/agent.crt\n"
             "[site]\n"
             "root = %s\n"
             "id = %s\n",
             dir, dir, dir, site);
    write_file(path, text, 0600);
}

static void read_fd(int fd, char *out, size_t size)
{
    ssize_t n = pread(fd, out, size - 1, 0);
    assert_true(n >= 0);
    out[n] = '\0';
}

/* Runs cmd_cron with the NULL-terminated arguments after "cron", capturing stdout and stderr. */
static void run_cron(struct run *r, ...)
{
    char *argv[16] = {"cron"};
    int argc = 1;
    va_list ap;
    va_start(ap, r);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    char out_path[PATH_MAX], err_path[PATH_MAX];
    snprintf(out_path, sizeof(out_path), "%s/stdout", dir);
    snprintf(err_path, sizeof(err_path), "%s/stderr", dir);
    int out_fd = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    int err_fd = open(err_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(out_fd >= 0 && err_fd >= 0);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    assert_true(saved_out >= 0 && saved_err >= 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    r->rc = cmd_cron(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    read_fd(out_fd, r->out, sizeof(r->out));
    read_fd(err_fd, r->err, sizeof(r->err));
    close(out_fd);
    close(err_fd);
}

/* Returns the minute at the start of the crontab line (the second line of the output). */
static int line_minute(const struct run *r)
{
    const char *line = strchr(r->out, '\n');
    assert_non_null(line);
    return atoi(line + 1);
}

static void assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB | REG_NEWLINE), 0);
    int m = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    if (m != 0)
        fail_msg("output:\n%s\ndoes not match: %s", text, pattern);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/agent.key", dir);
    write_file(path, "not a key\n", 0600);
    snprintf(path, sizeof(path), "%s/agent.crt", dir);
    write_file(path, "not a certificate\n", 0644);
    snprintf(conf, sizeof(conf), "%s/agent.conf", dir);
    write_conf(conf, "blog");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tu_rm_tree(dir);
}

static void t_line_format(void **state)
{
    (void)state;
    char sh[PATH_MAX], pattern[3 * PATH_MAX];
    assert_non_null(realpath("/bin/sh", sh));
    struct run r;
    run_cron(&r, "--config", conf, "--binary", "/bin/sh", NULL);
    assert_int_equal(r.rc, 0);
    snprintf(pattern, sizeof(pattern),
             "^# understudy: sync blog every 4 hours \\(installed with: crontab -e\\)\n"
             "([0-9]|[1-5][0-9]) \\*/4 \\* \\* \\* %s sync --config %s\n$",
             sh, conf);
    assert_matches(r.out, pattern);

    run_cron(&r, "--config", conf, "--binary", "/bin/sh", "--every", "1", NULL);
    assert_int_equal(r.rc, 0);
    assert_matches(r.out, "^# understudy: sync blog every hour \\(installed with: crontab -e\\)\n"
                          "[0-9]+ \\* \\* \\* \\* /");
    run_cron(&r, "--config", conf, "--binary", "/bin/sh", "--every=24", NULL);
    assert_int_equal(r.rc, 0);
    assert_matches(r.out, "every 24 hours .*\n[0-9]+ 0 \\* \\* \\* /");
    run_cron(&r, "--every", "6", "--config", conf, "--binary", "/bin/sh", NULL);
    assert_int_equal(r.rc, 0);
    assert_matches(r.out, "every 6 hours .*\n[0-9]+ \\*/6 \\* \\* \\* /");
    assert_string_equal(r.err, "");

    /* 5 does not divide 24: the line is still printed, with a warning about the short interval. */
    run_cron(&r, "--config", conf, "--binary", "/bin/sh", "--every", "5", NULL);
    assert_int_equal(r.rc, 0);
    assert_matches(r.out, "\n[0-9]+ \\*/5 \\* \\* \\* /");
    assert_non_null(strstr(r.err, "last interval of each day is 4 hours"));
}

static void t_default_binary_is_self(void **state)
{
    (void)state;
    char self[PATH_MAX], expect[PATH_MAX + 32];
    assert_non_null(realpath("/proc/self/exe", self));
    snprintf(expect, sizeof(expect), " %s sync --config ", self);
    struct run r;
    run_cron(&r, "--config", conf, NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, expect));
}

static void t_relative_config_made_absolute(void **state)
{
    (void)state;
    char cwd[PATH_MAX], expect[PATH_MAX + 32];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0);
    struct run r;
    run_cron(&r, "--config", "./agent.conf", "--binary", "/bin/sh", NULL);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(r.rc, 0);
    snprintf(expect, sizeof(expect), " sync --config %s\n", conf);
    assert_non_null(strstr(r.out, expect));
}

static void t_stable_and_spread_minute(void **state)
{
    (void)state;
    struct run a, b;
    run_cron(&a, "--config", conf, "--binary", "/bin/sh", NULL);
    run_cron(&b, "--config", conf, "--binary", "/bin/sh", NULL);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.out, b.out);
    int first = line_minute(&a);
    assert_in_range(first, 0, 59);

    /* Twenty sites on one host: all at the same minute would mean the hash does not spread. */
    bool spread = false;
    for (int i = 0; i < 20; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/site%d.conf", dir, i);
        write_conf(path, "other");
        run_cron(&a, "--config", path, "--binary", "/bin/sh", NULL);
        assert_int_equal(a.rc, 0);
        assert_in_range(line_minute(&a), 0, 59);
        if (line_minute(&a) != first)
            spread = true;
    }
    assert_true(spread);
}

static void t_quoting(void **state)
{
    (void)state;
    char path[PATH_MAX], expect[2 * PATH_MAX];
    snprintf(path, sizeof(path), "%s/it's 100%%.conf", dir);
    write_conf(path, "quoted");
    struct run r;
    run_cron(&r, "--config", path, "--binary", "/bin/sh", NULL);
    assert_int_equal(r.rc, 0);
    /* Single quotes for the shell, '\'' for the quote itself, \% so cron keeps the percent. */
    snprintf(expect, sizeof(expect), " sync --config '%s/it'\\''s 100\\%%.conf'\n", dir);
    assert_non_null(strstr(r.out, expect));
}

static void t_bad_every(void **state)
{
    (void)state;
    static const char *const bad[] = {"0", "25", "-1", "", "abc", "4x", " 4", "+4", "99999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct run r;
        run_cron(&r, "--config", conf, "--binary", "/bin/sh", "--every", bad[i], NULL);
        assert_int_equal(r.rc, 2);
        assert_string_equal(r.out, "");
        assert_non_null(strstr(r.err, "--every"));
    }
}

static void t_bad_usage(void **state)
{
    (void)state;
    struct run r;
    run_cron(&r, "--binary", "/bin/sh", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--config"));
    run_cron(&r, "--config", conf, "--every", NULL);
    assert_int_equal(r.rc, 2);
    run_cron(&r, "--config", conf, "--frequency", "4", NULL);
    assert_int_equal(r.rc, 2);
    run_cron(&r, "--config", "/nonexistent/agent.conf", NULL);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.out, "");
    run_cron(&r, "--config", conf, "--binary", "/nonexistent/understudy-agent", NULL);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.out, "");

    /* A configuration that does not load is refused with the config exit code. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/broken.conf", dir);
    write_file(path, "[controller]\naddress = nowhere\n", 0600);
    run_cron(&r, "--config", path, "--binary", "/bin/sh", NULL);
    assert_int_equal(r.rc, 3);
    assert_string_equal(r.out, "");

    run_cron(&r, "--help", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "usage: understudy-agent cron"));
}

static void t_lower_priority(void **state)
{
    (void)state;
    /* The effect is on this process, so this test runs last. */
    agent_lower_priority();
    assert_int_equal(getpriority(PRIO_PROCESS, 0), 19);
    long prio = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
    assert_int_equal(prio >> 13, 3 /* IOPRIO_CLASS_IDLE */);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_line_format),
        cmocka_unit_test(t_default_binary_is_self),
        cmocka_unit_test(t_relative_config_made_absolute),
        cmocka_unit_test(t_stable_and_spread_minute),
        cmocka_unit_test(t_quoting),
        cmocka_unit_test(t_bad_every),
        cmocka_unit_test(t_bad_usage),
        cmocka_unit_test(t_lower_priority),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
