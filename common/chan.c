/* A connection handed to a worker thread. See chan.h.
 *
 * Shared state is guarded by one mutex; the worker waits on one condition variable, the loop
 * thread is woken through one uv_async_t. The loop thread alone touches the conn.
 */
#include "chan.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deadline.h"
#include "err.h"

/* Frames are gathered up to this many bytes for one TLS write (see chan_flush_out). */
#define CHAN_BATCH (64u * 1024)

struct chan_item {
    struct chan_item *next;
    wire_msg_t *msg; /* inbound */
    size_t size;     /* bytes counted against the queue's bound */
    uint8_t frame[]; /* outbound: an encoded frame of size bytes */
};

struct chan {
    uv_loop_t *loop;
    uv_async_t async;
    conn_t *conn; /* loop thread only; NULL once closed */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;

    struct chan_item *in_head, *in_tail;
    struct chan_item *out_head, *out_tail;
    size_t in_bytes, out_bytes, socket_pending;
    size_t max_in, max_out, max_frame;
    buf_t batch; /* loop thread: frames gathered for one write (chan_flush_out) */

    bool started, worker_done, conn_closed, finished, paused;
    int conn_status;
    bool fail_requested, fail_sent;
    int fail_status;

    chan_worker_fn fn;
    chan_done_fn on_done;
    void *arg;

    uint64_t bytes_in, bytes_out;
    char peer_fp[TLS_FP_LEN];
    char peer_name[320];
    char error[640];
};

static void chan_wake_loop(chan_t *ch)
{
    uv_async_send(&ch->async);
}

/* Loop thread: moves queued frames into the conn while its socket output is under the bound.
 * Small frames (a listing entry, a small file) are copied together into one write of up to
 * CHAN_BATCH bytes: full TLS records and one socket write instead of one of each per frame. */
static void chan_flush_out(chan_t *ch)
{
    pthread_mutex_lock(&ch->mu);
    while (ch->out_head && ch->conn && conn_pending_output(ch->conn) < ch->max_out) {
        struct chan_item *it = ch->out_head;
        ch->out_head = it->next;
        if (!ch->out_head)
            ch->out_tail = NULL;
        ch->out_bytes -= it->size;
        bool more = ch->out_head != NULL;
        pthread_mutex_unlock(&ch->mu);
        if (it->size >= CHAN_BATCH && !ch->batch.len) {
            conn_send_frame(ch->conn, it->frame, it->size);
        } else if (buf_append(&ch->batch, it->frame, it->size) < 0) {
            conn_fail(ch->conn, UV_ENOMEM, "out of memory");
        } else if (!more || ch->batch.len >= CHAN_BATCH) {
            conn_send_frame(ch->conn, buf_data(&ch->batch), ch->batch.len);
            buf_reset(&ch->batch);
        }
        free(it);
        pthread_mutex_lock(&ch->mu);
    }
    if (ch->batch.len && ch->conn) {
        /* Stopped at the bound (or the queue emptied meanwhile): send what was gathered. */
        pthread_mutex_unlock(&ch->mu);
        conn_send_frame(ch->conn, buf_data(&ch->batch), ch->batch.len);
        pthread_mutex_lock(&ch->mu);
    }
    buf_reset(&ch->batch);
    ch->socket_pending = ch->conn ? conn_pending_output(ch->conn) : 0;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->mu);
}

static void free_items(struct chan_item *it)
{
    while (it) {
        struct chan_item *next = it->next;
        wire_msg_free(it->msg);
        free(it);
        it = next;
    }
}

static void on_async_closed(uv_handle_t *h)
{
    chan_t *ch = h->data;
    pthread_mutex_destroy(&ch->mu);
    pthread_cond_destroy(&ch->cond);
    buf_free(&ch->batch);
    free(ch);
}

/* Loop thread: once the worker is done (or never started) and the conn is closed. */
static void chan_maybe_finish(chan_t *ch)
{
    int status;

    pthread_mutex_lock(&ch->mu);
    bool done = (ch->worker_done || !ch->started) && ch->conn_closed && !ch->finished;
    if (done)
        ch->finished = true;
    status = ch->fail_requested ? ch->fail_status : ch->conn_status;
    pthread_mutex_unlock(&ch->mu);
    if (!done)
        return;
    if (ch->started)
        pthread_join(ch->thread, NULL);
    if (ch->on_done)
        ch->on_done(ch, status, ch->arg);
    free_items(ch->in_head);
    free_items(ch->out_head);
    ch->in_head = ch->out_head = NULL;
    uv_close((uv_handle_t *)&ch->async, on_async_closed);
}

static void on_async(uv_async_t *a)
{
    chan_t *ch = a->data;
    bool fail = false, close = false, resume = false;
    int fail_status = 0;

    chan_flush_out(ch);
    pthread_mutex_lock(&ch->mu);
    if (ch->conn && !ch->out_head) {
        if (ch->fail_requested && !ch->fail_sent) {
            ch->fail_sent = true;
            fail = true;
            fail_status = ch->fail_status;
        } else if (ch->worker_done && !ch->fail_requested) {
            close = true;
        }
    }
    if (ch->paused && ch->in_bytes <= ch->max_in / 2) {
        ch->paused = false;
        resume = true;
    }
    pthread_mutex_unlock(&ch->mu);
    if (fail)
        conn_fail(ch->conn, fail_status, "%s", ch->error);
    else if (close)
        conn_close(ch->conn);
    else if (resume && ch->conn)
        conn_resume_reading(ch->conn);
    chan_maybe_finish(ch);
}

static void *worker_main(void *arg)
{
    chan_t *ch = arg;
    ch->fn(ch, ch->arg);
    pthread_mutex_lock(&ch->mu);
    ch->worker_done = true;
    pthread_mutex_unlock(&ch->mu);
    chan_wake_loop(ch);
    return NULL;
}

static void chan_on_ready(conn_t *c)
{
    chan_t *ch = conn_data(c);
    ch->conn = c;
    snprintf(ch->peer_fp, sizeof(ch->peer_fp), "%s", tls_engine_peer_fingerprint(conn_tls(c)));
    snprintf(ch->peer_name, sizeof(ch->peer_name), "%s", conn_peer_name(c));
    ch->started = true;
    if (pthread_create(&ch->thread, NULL, worker_main, ch) != 0) {
        ch->started = false;
        conn_fail(c, UV_ENOMEM, "cannot start a worker thread");
    }
}

static void chan_on_message(conn_t *c, wire_msg_t *msg)
{
    chan_t *ch = conn_data(c);
    struct chan_item *it = calloc(1, sizeof(*it));
    bool pause;

    if (!it) {
        wire_msg_free(msg);
        conn_fail(c, UV_ENOMEM, "out of memory");
        return;
    }
    it->msg = msg;
    it->size = wire_msg_size(msg);
    pthread_mutex_lock(&ch->mu);
    if (ch->in_tail)
        ch->in_tail->next = it;
    else
        ch->in_head = it;
    ch->in_tail = it;
    ch->in_bytes += it->size;
    pause = ch->in_bytes > ch->max_in && !ch->paused;
    if (pause)
        ch->paused = true;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->mu);
    if (pause)
        conn_pause_reading(c);
}

static void chan_on_drain(conn_t *c)
{
    chan_t *ch = conn_data(c);
    chan_flush_out(ch);
    on_async(&ch->async); /* a fail or close may have been waiting for the queue to empty */
}

static void chan_on_close(conn_t *c, int status)
{
    chan_t *ch = conn_data(c);
    pthread_mutex_lock(&ch->mu);
    conn_bytes(c, &ch->bytes_in, &ch->bytes_out);
    ch->conn_closed = true;
    ch->conn_status = status;
    if (!ch->fail_requested || !ch->error[0])
        snprintf(ch->error, sizeof(ch->error), "%s", conn_last_error(c));
    ch->conn = NULL;
    pthread_cond_broadcast(&ch->cond);
    pthread_mutex_unlock(&ch->mu);
    chan_wake_loop(ch); /* finish from the async callback, after conn has freed itself */
}

static const conn_callbacks_t chan_callbacks = {
    .on_ready = chan_on_ready,
    .on_message = chan_on_message,
    .on_close = chan_on_close,
    .on_drain = chan_on_drain,
};

const conn_callbacks_t *chan_conn_callbacks(void)
{
    return &chan_callbacks;
}

int chan_new(uv_loop_t *loop, size_t max_in, size_t max_out, size_t max_frame, chan_worker_fn fn,
             chan_done_fn on_done, void *arg, chan_t **ret_chan)
{
    chan_t *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return UV_ENOMEM;
    ch->loop = loop;
    ch->max_in = max_in;
    ch->max_out = max_out;
    ch->max_frame = max_frame;
    buf_init(&ch->batch, 0);
    ch->fn = fn;
    ch->on_done = on_done;
    ch->arg = arg;
    pthread_mutex_init(&ch->mu, NULL);
    pthread_cond_init(&ch->cond, NULL);
    uv_async_init(loop, &ch->async, on_async);
    ch->async.data = ch;
    *ret_chan = ch;
    return 0;
}

void chan_shutdown(chan_t *ch)
{
    if (ch->conn)
        conn_close(ch->conn);
    else
        chan_cancel(ch, ERR_PEER_CLOSED);
}

void chan_cancel(chan_t *ch, int status)
{
    pthread_mutex_lock(&ch->mu);
    ch->conn_closed = true;
    ch->conn_status = status;
    pthread_mutex_unlock(&ch->mu);
    chan_wake_loop(ch);
}

int chan_recv(chan_t *ch, wire_msg_t **ret_msg, uint64_t timeout_ms)
{
    struct timespec deadline;
    bool wake = false;
    int r = 0;

    if (timeout_ms)
        deadline = deadline_after_ms(timeout_ms);
    pthread_mutex_lock(&ch->mu);
    while (!ch->in_head && !ch->conn_closed) {
        if (!timeout_ms) {
            pthread_cond_wait(&ch->cond, &ch->mu);
        } else if (pthread_cond_timedwait(&ch->cond, &ch->mu, &deadline) != 0) {
            r = UV_ETIMEDOUT;
            break;
        }
    }
    if (ch->in_head) {
        struct chan_item *it = ch->in_head;
        ch->in_head = it->next;
        if (!ch->in_head)
            ch->in_tail = NULL;
        ch->in_bytes -= it->size;
        wake = ch->paused && ch->in_bytes <= ch->max_in / 2;
        *ret_msg = it->msg;
        free(it);
        r = 1;
    } else if (r == 0) {
        r = ch->conn_status < 0 ? ch->conn_status : ERR_PEER_CLOSED;
    }
    pthread_mutex_unlock(&ch->mu);
    if (wake)
        chan_wake_loop(ch);
    return r;
}

int chan_send(chan_t *ch, const wire_msg_t *msg)
{
    buf_t frame;
    struct chan_item *it;
    int r;

    buf_init(&frame, 0);
    r = wire_encode(msg, ch->max_frame, &frame);
    if (r < 0) {
        buf_free(&frame);
        return r;
    }
    it = malloc(sizeof(*it) + frame.len);
    if (!it) {
        buf_free(&frame);
        return UV_ENOMEM;
    }
    it->next = NULL;
    it->msg = NULL;
    it->size = frame.len;
    memcpy(it->frame, buf_data(&frame), frame.len);
    buf_free(&frame);

    pthread_mutex_lock(&ch->mu);
    while (!ch->conn_closed && ch->out_head && ch->out_bytes + ch->socket_pending > ch->max_out)
        pthread_cond_wait(&ch->cond, &ch->mu);
    if (ch->conn_closed) {
        r = ch->conn_status < 0 ? ch->conn_status : ERR_PEER_CLOSED;
        pthread_mutex_unlock(&ch->mu);
        free(it);
        return r;
    }
    if (ch->out_tail)
        ch->out_tail->next = it;
    else
        ch->out_head = it;
    ch->out_tail = it;
    ch->out_bytes += it->size;
    pthread_mutex_unlock(&ch->mu);
    chan_wake_loop(ch);
    return 0;
}

static int io_send(void *ctx, const wire_msg_t *msg)
{
    return chan_send(ctx, msg);
}

static int io_recv(void *ctx, wire_msg_t **ret_msg, uint64_t timeout_ms)
{
    return chan_recv(ctx, ret_msg, timeout_ms);
}

msgio_t chan_io(chan_t *ch)
{
    msgio_t io = {io_send, io_recv, ch};
    return io;
}

void chan_fail(chan_t *ch, int err, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&ch->mu);
    if (!ch->fail_requested) {
        ch->fail_requested = true;
        ch->fail_status = err;
        va_start(ap, fmt);
        vsnprintf(ch->error, sizeof(ch->error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&ch->mu);
    chan_wake_loop(ch);
}

const char *chan_peer_fingerprint(const chan_t *ch)
{
    return ch->peer_fp;
}

const char *chan_peer_name(const chan_t *ch)
{
    return ch->peer_name;
}

void chan_bytes(const chan_t *ch, uint64_t *ret_in, uint64_t *ret_out)
{
    *ret_in = ch->bytes_in;
    *ret_out = ch->bytes_out;
}

const char *chan_last_error(const chan_t *ch)
{
    return ch->error;
}
