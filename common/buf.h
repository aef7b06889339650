/* Growable byte buffers.
 *
 * A buf_t owns its bytes. Data is appended at the end and consumed from the front; consuming is
 * O(1) until the next append compacts. Every growth is checked against an optional cap so a peer
 * cannot make us allocate without bound.
 */
#ifndef UNDERSTUDY_BUF_H
#define UNDERSTUDY_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct buf {
    uint8_t *base; /* allocation */
    size_t start;  /* first unconsumed byte */
    size_t len;    /* unconsumed bytes, from base + start */
    size_t cap;    /* allocated bytes */
    size_t max;    /* 0 = no limit; else len may never exceed it */
} buf_t;

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0, 0                                                                           \
    }

/* Initialises an empty buffer that may hold at most max bytes (0: unlimited). */
void buf_init(buf_t *b, size_t max);

/* Frees the bytes; the buffer is empty and reusable afterwards. Accepts a zeroed buffer. */
void buf_free(buf_t *b);

/* Returns a pointer to the unconsumed bytes (NULL while nothing was ever allocated). */
static inline uint8_t *buf_data(const buf_t *b)
{
    return b->base ? b->base + b->start : NULL;
}

/* Makes room for n more bytes and returns where they go (not yet counted in len: call
 * buf_commit). Returns NULL when the cap would be exceeded or memory is short. */
uint8_t *buf_reserve(buf_t *b, size_t n);

/* Counts n bytes written into the space buf_reserve returned. */
void buf_commit(buf_t *b, size_t n);

/* Appends n bytes. Returns 0, UV_ENOBUFS past the cap, UV_ENOMEM. */
int buf_append(buf_t *b, const void *data, size_t n);

/* Appends a NUL-terminated string without its NUL. */
int buf_append_str(buf_t *b, const char *s);

/* Appends printf-formatted text. */
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Drops n bytes from the front. */
void buf_consume(buf_t *b, size_t n);

/* Drops everything, keeping the allocation. */
void buf_reset(buf_t *b);

#endif
