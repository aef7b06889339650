/* Deadlines for pthread_cond_timedwait, which measures CLOCK_REALTIME unless told otherwise. */
#ifndef UNDERSTUDY_DEADLINE_H
#define UNDERSTUDY_DEADLINE_H

#include <stdint.h>
#include <time.h>

/* The CLOCK_REALTIME time ms milliseconds from now. */
static inline struct timespec deadline_after_ms(uint64_t ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += (time_t)(ms / 1000);
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

#endif
