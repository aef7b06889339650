/* fault tests: the hook kills exactly at the Nth pass of the named point, and costs nothing
 * otherwise. Each case runs in a child, since the environment is read once per process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fault.h"

/* Runs the points in the child with UNDERSTUDY_TEST_FAULT=spec; returns how many points it
 * passed before it died (or all of them, n, when it exited) and whether SIGKILL ended it. */
static int passes(const char *spec, const char *const *points, int n, bool *ret_killed)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (spec)
            setenv("UNDERSTUDY_TEST_FAULT", spec, 1);
        else
            unsetenv("UNDERSTUDY_TEST_FAULT");
        for (int i = 0; i < n; i++) {
            fault_point(points[i]);
            (void)!write(fds[1], "x", 1);
        }
        _exit(0);
    }
    close(fds[1]);
    int count = 0, status;
    char c;
    while (read(fds[0], &c, 1) == 1)
        count++;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    *ret_killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    return count;
}

static void test_nth_pass(void **state)
{
    (void)state;
    const char *p[] = {"a.b", "c.d", "a.b", "a.b", "c.d"};
    bool killed;
    assert_int_equal(passes("a.b@2", p, 5, &killed), 2); /* died at p[2] */
    assert_true(killed);
    assert_int_equal(passes("c.d", p, 5, &killed), 1); /* the first pass by default */
    assert_true(killed);
    assert_int_equal(passes("a.b@4", p, 5, &killed), 5); /* passed only three times */
    assert_false(killed);
    assert_int_equal(passes("a", p, 5, &killed), 5); /* whole names only */
    assert_false(killed);
    assert_int_equal(passes(NULL, p, 5, &killed), 5);
    assert_false(killed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nth_pass),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
