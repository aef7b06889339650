#include "msgpipe.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "err.h"

struct item {
    struct item *next;
    size_t len;
    uint8_t data[];
};

struct dir {
    struct item *head, *tail;
    size_t bytes;
    uint64_t total;
    bool closed;
};

struct msgpipe {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct dir d[2]; /* d[i]: frames sent by end i */
    size_t max_bytes;
    struct endctx {
        msgpipe_t *p;
        int end;
    } ends[2];
};

static int pipe_send(void *ctx, const wire_msg_t *msg)
{
    struct endctx *e = ctx;
    msgpipe_t *p = e->p;
    struct dir *d = &p->d[e->end];
    buf_t b;
    buf_init(&b, 0);
    int r = wire_encode(msg, WIRE_MAX_FRAME_DEFAULT, &b);
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    struct item *it = malloc(sizeof(*it) + b.len);
    it->next = NULL;
    it->len = b.len;
    memcpy(it->data, buf_data(&b), b.len);
    buf_free(&b);
    pthread_mutex_lock(&p->mu);
    while (d->bytes > p->max_bytes && !p->d[!e->end].closed && !d->closed)
        pthread_cond_wait(&p->cond, &p->mu);
    if (p->d[!e->end].closed || d->closed) {
        pthread_mutex_unlock(&p->mu);
        free(it);
        return ERR_PEER_CLOSED;
    }
    if (d->tail)
        d->tail->next = it;
    else
        d->head = it;
    d->tail = it;
    d->bytes += it->len;
    d->total += it->len;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static int pipe_recv(void *ctx, wire_msg_t **ret, uint64_t timeout_ms)
{
    struct endctx *e = ctx;
    msgpipe_t *p = e->p;
    struct dir *d = &p->d[!e->end];
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms ? (time_t)(timeout_ms / 1000) + 1 : 3600;
    pthread_mutex_lock(&p->mu);
    while (!d->head && !d->closed) {
        if (pthread_cond_timedwait(&p->cond, &p->mu, &deadline) != 0) {
            pthread_mutex_unlock(&p->mu);
            return UV_ETIMEDOUT;
        }
    }
    if (!d->head) {
        pthread_mutex_unlock(&p->mu);
        return ERR_PEER_CLOSED;
    }
    struct item *it = d->head;
    d->head = it->next;
    if (!d->head)
        d->tail = NULL;
    d->bytes -= it->len;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    int r = wire_decode_payload(it->data + WIRE_HEADER_SIZE, it->len - WIRE_HEADER_SIZE, ret);
    free(it);
    return r == 1 ? 1 : r;
}

msgpipe_t *msgpipe_new(size_t max_bytes)
{
    msgpipe_t *p = calloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->max_bytes = max_bytes;
    for (int i = 0; i < 2; i++) {
        p->ends[i].p = p;
        p->ends[i].end = i;
    }
    return p;
}

msgio_t msgpipe_end(msgpipe_t *p, int end)
{
    msgio_t io = {pipe_send, pipe_recv, &p->ends[end]};
    return io;
}

void msgpipe_close(msgpipe_t *p, int end)
{
    pthread_mutex_lock(&p->mu);
    p->d[end].closed = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

uint64_t msgpipe_bytes(msgpipe_t *p, int from)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->d[from].total;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void msgpipe_free(msgpipe_t *p)
{
    for (int i = 0; i < 2; i++) {
        struct item *it = p->d[i].head;
        while (it) {
            struct item *n = it->next;
            free(it);
            it = n;
        }
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    free(p);
}
