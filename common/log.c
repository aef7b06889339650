#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static const char *log_program = "understudy";
static enum log_level log_level = LOG_INFO;
static bool log_timestamps;

void log_init(const char *program, enum log_level level)
{
    log_program = program;
    log_level = level;
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

void log_set_timestamps(bool on)
{
    log_timestamps = on;
}

enum log_level log_get_level(void)
{
    return log_level;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[2048];
    size_t n = 0;
    va_list ap;

    if (level > log_level)
        return;
    if (log_timestamps) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ ", &tm);
    }
    n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: %s: ", log_program, names[level]);
    if (n < sizeof(line)) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
    }
    /* One write per line so concurrent writers (tests, journald) never interleave a line. */
    fprintf(stderr, "%s\n", line);
}
