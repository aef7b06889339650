#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

void buf_init(buf_t *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void buf_free(buf_t *b)
{
    size_t max = b->max;
    free(b->base);
    buf_init(b, max);
}

/* Makes room for n more bytes without looking at the cap. */
static uint8_t *buf_grow(buf_t *b, size_t n)
{
    if (b->base && n <= b->cap - b->start - b->len)
        return b->base + b->start + b->len;
    /* Compact first: consumed space at the front is free for reuse. */
    if (b->start > 0) {
        memmove(b->base, b->base + b->start, b->len);
        b->start = 0;
        if (n <= b->cap - b->len)
            return b->base + b->len;
    }
    if (n > SIZE_MAX / 2 - b->len)
        return NULL;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->base, cap);
    if (!p)
        return NULL;
    b->base = p;
    b->cap = cap;
    return b->base + b->len;
}

static int buf_over_cap(const buf_t *b, size_t n)
{
    return b->max && (n > b->max || b->len > b->max - n);
}

uint8_t *buf_reserve(buf_t *b, size_t n)
{
    if (buf_over_cap(b, n))
        return NULL;
    return buf_grow(b, n);
}

void buf_commit(buf_t *b, size_t n)
{
    b->len += n;
}

int buf_append(buf_t *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t *p = buf_reserve(b, n);
    if (!p)
        return buf_over_cap(b, n) ? UV_ENOBUFS : UV_ENOMEM;
    memcpy(p, data, n);
    b->len += n;
    return 0;
}

int buf_append_str(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return UV_EINVAL;
    /* The terminating NUL is written but not kept: only n bytes count against the cap. */
    if (buf_over_cap(b, (size_t)n))
        return UV_ENOBUFS;
    uint8_t *p = buf_grow(b, (size_t)n + 1);
    if (!p)
        return UV_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void buf_consume(buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->start = 0;
        b->len = 0;
        return;
    }
    b->start += n;
    b->len -= n;
}

void buf_reset(buf_t *b)
{
    b->start = 0;
    b->len = 0;
}
