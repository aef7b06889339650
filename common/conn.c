/* libuv TCP stream + TLS engine + frame decoder. See conn.h.
 *
 * Life of a conn: RESOLVING -> CONNECTING (client only) -> HANDSHAKE -> OPEN -> CLOSING -> freed.
 * libuv callbacks are thin: each turns a status into a call of a named step. conn_fail() is the
 * one failure path. A conn is freed only when both of its handles are closed and no request
 * (getaddrinfo, connect, write, shutdown) is outstanding, so a late callback never touches freed
 * memory.
 */
#include "conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define CONN_READ_SIZE         65536
#define CONN_SHUTDOWN_GRACE_MS 2000

enum conn_state {
    CONN_RESOLVING,
    CONN_CONNECTING,
    CONN_HANDSHAKE,
    CONN_OPEN,
    CONN_CLOSING,
};

struct conn {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    enum conn_state state;
    int handles_open;
    int reqs_open;
    bool close_notified;
    bool paused;

    tls_engine_t *tls;
    wire_decoder_t decoder;
    buf_t plain; /* decrypted bytes on their way to the decoder */
    buf_t out;   /* frames encoded, before encryption */
    size_t in_flight;
    uint64_t bytes_in, bytes_out; /* ciphertext on the socket, both directions */

    conn_limits_t limits;
    conn_callbacks_t cb;
    void *data;

    int status;
    char error[640];
    char peer[320];
    uint16_t port;
    char read_buf[CONN_READ_SIZE];
};

struct conn_write {
    uv_write_t req;
    conn_t *conn;
    size_t len;
    uint8_t data[];
};

static void conn_flush(conn_t *c);
static void conn_begin_close(conn_t *c);

static void conn_maybe_free(conn_t *c)
{
    if (c->handles_open > 0 || c->reqs_open > 0 || c->close_notified)
        return;
    c->close_notified = true;
    if (c->cb.on_close)
        c->cb.on_close(c, c->status);
    tls_engine_free(c->tls);
    wire_decoder_free(&c->decoder);
    buf_free(&c->plain);
    buf_free(&c->out);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->handles_open--;
    conn_maybe_free(c);
}

static void conn_close_handles(conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

void conn_fail(conn_t *c, int err, const char *fmt, ...)
{
    va_list ap;

    if (c->state == CONN_CLOSING)
        return;
    c->status = err;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof(c->error), fmt, ap);
    va_end(ap);
    /* Send what the engine has queued (a TLS alert tells the peer why), then close. */
    conn_flush(c);
    conn_begin_close(c);
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    switch (c->state) {
    case CONN_RESOLVING:
    case CONN_CONNECTING:
        conn_fail(c, ERR_UNREACHABLE, "cannot connect to %s: no answer within %llu ms", c->peer,
                  (unsigned long long)c->limits.connect_timeout_ms);
        break;
    case CONN_HANDSHAKE:
        conn_fail(c, ERR_HANDSHAKE_TIMEOUT, "TLS handshake with %s did not finish within %llu ms",
                  c->peer, (unsigned long long)c->limits.handshake_timeout_ms);
        break;
    case CONN_OPEN:
        conn_fail(c, ERR_IDLE_TIMEOUT, "%s sent nothing for %llu ms", c->peer,
                  (unsigned long long)c->limits.idle_timeout_ms);
        break;
    case CONN_CLOSING:
        /* The shutdown did not complete in time (the peer stopped reading): close now. */
        conn_close_handles(c);
        break;
    }
}

static void arm_timer(conn_t *c, uint64_t ms)
{
    if (ms > 0)
        uv_timer_start(&c->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    c->reqs_open--;
    conn_close_handles(c);
}

static void conn_begin_close(conn_t *c)
{
    enum conn_state was = c->state;

    c->state = CONN_CLOSING;
    if (was == CONN_RESOLVING) {
        uv_cancel((uv_req_t *)&c->gai); /* its callback still runs, with UV_EAI_CANCELED */
        conn_close_handles(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (was == CONN_CONNECTING ||
        uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close_handles(c);
        return;
    }
    c->shutdown_req.data = c;
    c->reqs_open++;
    arm_timer(c, CONN_SHUTDOWN_GRACE_MS);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn_write *w = (struct conn_write *)req;
    conn_t *c = w->conn;

    c->in_flight -= w->len;
    c->reqs_open--;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, ERR_PEER_CLOSED, "cannot send to %s: %s", c->peer, uv_strerror(status));
    else if (c->state == CONN_OPEN && c->cb.on_drain)
        c->cb.on_drain(c);
    conn_maybe_free(c);
}

/* Hands all ciphertext the engine has produced to libuv, within the pending-output cap. */
static void conn_flush(conn_t *c)
{
    size_t n = tls_engine_pending_output(c->tls);
    if (n == 0 || uv_is_closing((uv_handle_t *)&c->tcp) || c->state <= CONN_CONNECTING)
        return;
    if (c->in_flight + n > c->limits.max_pending_output) {
        c->status = ERR_OVERLOADED;
        snprintf(c->error, sizeof(c->error),
                 "%s is not reading: more than %zu bytes waiting to be sent", c->peer,
                 c->limits.max_pending_output);
        conn_begin_close(c);
        return;
    }
    struct conn_write *w = malloc(sizeof(*w) + n);
    if (!w) {
        c->status = UV_ENOMEM;
        snprintf(c->error, sizeof(c->error), "out of memory");
        conn_begin_close(c);
        return;
    }
    w->conn = c;
    w->len = tls_engine_output(c->tls, w->data, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(w);
        return;
    }
    c->in_flight += w->len;
    c->bytes_out += w->len;
    c->reqs_open++;
}

static void conn_handshake_done(conn_t *c)
{
    c->state = CONN_OPEN;
    arm_timer(c, c->limits.idle_timeout_ms);
    if (c->cb.on_ready)
        c->cb.on_ready(c);
}

/* Hands every complete frame to on_message, unless paused. */
static void conn_deliver(conn_t *c)
{
    wire_msg_t *msg;
    int f = 0;

    while (c->state == CONN_OPEN && !c->paused && (f = wire_decoder_next(&c->decoder, &msg)) == 1)
        c->cb.on_message(c, msg);
    if (f < 0 && c->state == CONN_OPEN)
        conn_fail(c, f, "%s sent an invalid frame: %s", c->peer, err_str(f));
}

/* The peer closed (TLS close_notify or TCP end) after everything it sent was delivered. Bytes
 * left in the decoder then are a frame it cut short: a protocol error, not a plain close. */
static void conn_closed_by_peer(conn_t *c, bool was_open)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->state == CONN_OPEN && !c->paused && c->decoder.in.len > 0)
        conn_fail(c, ERR_PROTOCOL,
                  "%s closed the connection in the middle of a frame (%zu bytes of it arrived)",
                  c->peer, c->decoder.in.len);
    else
        conn_fail(c, ERR_PEER_CLOSED, "%s closed the connection%s", c->peer,
                  was_open || c->state == CONN_OPEN ? "" : " during the TLS handshake");
}

/* Decrypts what arrived and delivers every complete frame. */
static void conn_process(conn_t *c)
{
    bool was_open = c->state == CONN_OPEN;
    int r = tls_engine_read(c->tls, &c->plain);

    conn_flush(c);
    if (r < 0 && r != ERR_PEER_CLOSED) {
        conn_fail(c, r, "%s: %s", c->peer, tls_engine_last_error(c->tls));
        return;
    }
    if (c->state == CONN_HANDSHAKE && tls_engine_handshake_done(c->tls))
        conn_handshake_done(c);
    if (c->plain.len > 0 && c->state == CONN_OPEN) {
        int f = wire_decoder_feed(&c->decoder, buf_data(&c->plain), c->plain.len);
        buf_reset(&c->plain);
        if (f < 0) {
            conn_fail(c, ERR_OVERLOADED, "%s: too much unprocessed input", c->peer);
            return;
        }
    }
    conn_deliver(c);
    if (r == ERR_PEER_CLOSED)
        conn_closed_by_peer(c, was_open);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    conn_t *c = h->data;
    b->base = c->read_buf;
    b->len = sizeof(c->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;

    if (nread == UV_EOF) {
        /* Let the engine classify what it has (garbage, half a handshake) before calling it a
         * plain close. */
        conn_process(c);
        conn_closed_by_peer(c, false);
        return;
    }
    if (nread < 0) {
        conn_fail(c, ERR_PEER_CLOSED, "connection to %s lost: %s", c->peer,
                  uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    c->bytes_in += (uint64_t)nread;
    if (c->state == CONN_OPEN)
        arm_timer(c, c->limits.idle_timeout_ms);
    if (tls_engine_feed(c->tls, b->base, (size_t)nread) < 0) {
        conn_fail(c, UV_ENOMEM, "out of memory");
        return;
    }
    conn_process(c);
}

static void conn_start(conn_t *c)
{
    int r;

    c->state = CONN_HANDSHAKE;
    arm_timer(c, c->limits.handshake_timeout_ms);
    r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r < 0) {
        conn_fail(c, ERR_PEER_CLOSED, "cannot read from %s: %s", c->peer, uv_strerror(r));
        return;
    }
    conn_process(c); /* the client's first flight goes out here */
}

static int conn_new(uv_loop_t *loop, tls_ctx_t *tls, const conn_limits_t *limits,
                    const conn_callbacks_t *cb, void *data, conn_t **ret_conn)
{
    conn_t *c = calloc(1, sizeof(*c));
    int r;

    if (!c)
        return UV_ENOMEM;
    c->loop = loop;
    c->limits = *limits;
    c->cb = *cb;
    c->data = data;
    r = tls_engine_new(tls, &c->tls);
    if (r < 0) {
        free(c);
        return r;
    }
    wire_decoder_init(&c->decoder, limits->max_frame);
    buf_init(&c->plain, 0);
    buf_init(&c->out, 0);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    *ret_conn = c;
    return 0;
}

static void format_peer(conn_t *c, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        uv_ip4_name(in, ip, sizeof(ip));
        port = ntohs(in->sin_port);
        snprintf(c->peer, sizeof(c->peer), "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(in6, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", ip, port);
    }
}

int conn_accept(uv_stream_t *server, tls_ctx_t *tls, const conn_limits_t *limits,
                const conn_callbacks_t *cb, void *data, conn_t **ret_conn)
{
    conn_t *c;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int r = conn_new(server->loop, tls, limits, cb, data, &c);

    if (r < 0)
        return r;
    snprintf(c->peer, sizeof(c->peer), "unknown peer");
    r = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r < 0) {
        c->status = r;
        c->state = CONN_CLOSING;
        c->cb.on_close = NULL; /* the caller learns of this failure from our return value */
        conn_close_handles(c);
        return r;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        format_peer(c, (struct sockaddr *)&ss);
    uv_tcp_nodelay(&c->tcp, 1);
    *ret_conn = c;
    conn_start(c);
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    c->reqs_open--;
    if (c->state == CONN_CLOSING) {
        conn_maybe_free(c);
        return;
    }
    if (status < 0) {
        conn_fail(c, ERR_UNREACHABLE, "cannot connect to %s: %s", c->peer, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_start(c);
}

static int start_connect(conn_t *c, const struct sockaddr *addr)
{
    c->state = CONN_CONNECTING;
    c->connect_req.data = c;
    int r = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect);
    if (r == 0)
        c->reqs_open++;
    return r;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn_t *c = req->data;
    int r;

    c->reqs_open--;
    if (c->state == CONN_CLOSING) {
        uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    if (status < 0 || !res) {
        conn_fail(c, ERR_UNREACHABLE, "cannot resolve %s: %s", c->peer, uv_strerror(status));
        uv_freeaddrinfo(res);
        return;
    }
    char host[sizeof(c->peer)];
    snprintf(host, sizeof(host), "%s", c->peer);
    format_peer(c, res->ai_addr);
    if (strncmp(host, c->peer, strlen(host)) != 0) {
        /* Keep the name the user wrote next to the address it resolved to. */
        char both[sizeof(c->peer)];
        snprintf(both, sizeof(both), "%.200s (%.100s)", host, c->peer);
        snprintf(c->peer, sizeof(c->peer), "%s", both);
    }
    r = start_connect(c, res->ai_addr);
    uv_freeaddrinfo(res);
    if (r < 0)
        conn_fail(c, ERR_UNREACHABLE, "cannot connect to %s: %s", c->peer, uv_strerror(r));
}

/* An address written as one: the connect starts without libuv's resolver (which would start
 * its thread pool for a name that needs no look-up). */
static bool numeric_addr(const char *host, uint16_t port, struct sockaddr_storage *ret)
{
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ret) == 0 ||
           uv_ip6_addr(host, port, (struct sockaddr_in6 *)ret) == 0;
}

int conn_connect(uv_loop_t *loop, const char *host, uint16_t port, tls_ctx_t *tls,
                 const conn_limits_t *limits, const conn_callbacks_t *cb, void *data,
                 conn_t **ret_conn)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct sockaddr_storage addr;
    char service[8];
    conn_t *c;
    int r = conn_new(loop, tls, limits, cb, data, &c);

    if (r < 0)
        return r;
    snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    snprintf(service, sizeof(service), "%u", port);
    c->state = CONN_RESOLVING;
    c->gai.data = c;
    arm_timer(c, limits->connect_timeout_ms);
    if (numeric_addr(host, port, &addr)) {
        format_peer(c, (const struct sockaddr *)&addr);
        r = start_connect(c, (const struct sockaddr *)&addr);
    } else {
        r = uv_getaddrinfo(loop, &c->gai, on_resolved, host, service, &hints);
        if (r == 0)
            c->reqs_open++;
    }
    if (r < 0) {
        c->cb.on_close = NULL;
        c->state = CONN_CLOSING;
        conn_close_handles(c);
        return r;
    }
    *ret_conn = c;
    return 0;
}

int conn_send_frame(conn_t *c, const void *frame, size_t len)
{
    if (c->state != CONN_OPEN)
        return c->status < 0 ? c->status : ERR_PEER_CLOSED;
    int r = tls_engine_write(c->tls, frame, len);
    if (r < 0) {
        conn_fail(c, r, "cannot send to %s: %s", c->peer, err_str(r));
        return r;
    }
    conn_flush(c);
    return c->state == CONN_CLOSING ? c->status : 0;
}

size_t conn_pending_output(const conn_t *c)
{
    return c->in_flight;
}

void conn_pause_reading(conn_t *c)
{
    if (c->state != CONN_OPEN || c->paused)
        return;
    c->paused = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
}

void conn_resume_reading(conn_t *c)
{
    if (c->state != CONN_OPEN || !c->paused)
        return;
    c->paused = false;
    arm_timer(c, c->limits.idle_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_fail(c, ERR_PEER_CLOSED, "cannot read from %s", c->peer);
        return;
    }
    conn_deliver(c); /* frames that were already decoded while paused */
}

int conn_send(conn_t *c, const wire_msg_t *msg)
{
    int r;

    if (c->state != CONN_OPEN)
        return c->status < 0 ? c->status : ERR_PEER_CLOSED;
    buf_reset(&c->out);
    r = wire_encode(msg, c->limits.max_frame, &c->out);
    if (r == 0)
        r = tls_engine_write(c->tls, buf_data(&c->out), c->out.len);
    buf_reset(&c->out);
    if (r < 0) {
        conn_fail(c, r, "cannot send %s to %s: %s", wire_type_name(msg->type), c->peer, err_str(r));
        return r;
    }
    conn_flush(c);
    return c->state == CONN_CLOSING ? c->status : 0;
}

void conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->state == CONN_OPEN || c->state == CONN_HANDSHAKE) {
        tls_engine_shutdown(c->tls);
        conn_flush(c);
    }
    if (c->state != CONN_CLOSING) {
        c->status = 0;
        conn_begin_close(c);
    }
}

void *conn_data(const conn_t *c)
{
    return c->data;
}

void conn_set_data(conn_t *c, void *data)
{
    c->data = data;
}

const char *conn_peer_name(const conn_t *c)
{
    return c->peer;
}

tls_engine_t *conn_tls(const conn_t *c)
{
    return c->tls;
}

void conn_bytes(const conn_t *c, uint64_t *ret_in, uint64_t *ret_out)
{
    *ret_in = c->bytes_in;
    *ret_out = c->bytes_out;
}

const char *conn_last_error(const conn_t *c)
{
    return c->error;
}
