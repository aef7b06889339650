/* See fault.h. The environment is read once (pthread_once); counting is atomic because both a
 * connection's worker thread and the main thread pass points. */
#include "fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct {
    bool on;
    char name[64];
    unsigned long nth;
    bool trace;
    atomic_ulong passed;
} F;

static void load(void)
{
    const char *v = getenv("UNDERSTUDY_TEST_FAULT");
    const char *t = getenv("UNDERSTUDY_TEST_FAULT_TRACE");
    F.trace = t && *t && strcmp(t, "0") != 0;
    F.nth = 1;
    if (v && *v) {
        const char *at = strchr(v, '@');
        size_t n = at ? (size_t)(at - v) : strlen(v);
        if (n < sizeof(F.name)) {
            memcpy(F.name, v, n);
            F.name[n] = '\0';
        }
        if (at)
            F.nth = strtoul(at + 1, NULL, 10);
        if (F.nth == 0)
            F.nth = 1;
    }
    F.on = F.name[0] || F.trace;
}

void fault_point(const char *name)
{
    pthread_once(&once, load);
    if (!F.on)
        return;
    if (F.trace)
        fprintf(stderr, "understudy fault point: %s\n", name);
    if (!F.name[0] || strcmp(F.name, name) != 0)
        return;
    unsigned long n = atomic_fetch_add(&F.passed, 1) + 1;
    if (n != F.nth)
        return;
    char line[128];
    int len = snprintf(line, sizeof(line), "understudy fault: %s@%lu\n", name, n);
    if (len > 0)
        (void)!write(STDERR_FILENO, line, (size_t)len);
    raise(SIGKILL);
}
