/* A TLS connection carrying understudy frames over a libuv TCP stream.
 *
 * conn owns the uv_tcp_t, its timers and the tls engine. Everything that can go wrong ends in
 * one place, conn_fail(), which records the error, stops reading and timers, and closes every
 * handle; on_close then runs exactly once, and the conn is freed after it returns. Limits: the
 * handshake must finish within handshake_timeout_ms, the peer may stay silent at most
 * idle_timeout_ms, a frame may not exceed max_frame, and at most max_pending_output bytes may
 * wait to be written (a peer that does not read is cut off).
 */
#ifndef UNDERSTUDY_CONN_H
#define UNDERSTUDY_CONN_H

#include <stdint.h>
#include <uv.h>

#include "tls.h"
#include "wire.h"

typedef struct conn conn_t;

typedef struct conn_limits {
    size_t max_frame;
    size_t max_pending_output;
    uint64_t connect_timeout_ms;
    uint64_t handshake_timeout_ms;
    uint64_t idle_timeout_ms;
} conn_limits_t;

#define CONN_LIMITS_DEFAULT                                                                        \
    {                                                                                              \
        WIRE_MAX_FRAME_DEFAULT, 64u * 1024 * 1024, 10000, 10000, 300000                            \
    }

typedef struct conn_callbacks {
    /* The handshake completed and the peer's fingerprint is pinned. */
    void (*on_ready)(conn_t *c);
    /* A frame arrived; the callee owns msg. */
    void (*on_message)(conn_t *c, wire_msg_t *msg);
    /* The connection is closed: status 0 after conn_close(), else the error that ended it. The
     * conn is freed when this returns. */
    void (*on_close)(conn_t *c, int status);
    /* Optional: a write completed, so pending output shrank (see conn_pending_output). */
    void (*on_drain)(conn_t *c);
} conn_callbacks_t;

/* Accepts a pending connection on server and starts the server-side handshake. */
int conn_accept(uv_stream_t *server, tls_ctx_t *tls, const conn_limits_t *limits,
                const conn_callbacks_t *cb, void *data, conn_t **ret_conn);

/* Resolves host, connects and starts the client-side handshake. Failures are reported through
 * on_close (ERR_UNREACHABLE for resolution/connection failures), never synchronously, once this
 * returned 0. */
int conn_connect(uv_loop_t *loop, const char *host, uint16_t port, tls_ctx_t *tls,
                 const conn_limits_t *limits, const conn_callbacks_t *cb, void *data,
                 conn_t **ret_conn);

/* Queues one message. Returns 0, or the error that failed the connection (ERR_OVERLOADED when
 * pending output would pass its cap). */
int conn_send(conn_t *c, const wire_msg_t *msg);

/* Queues one frame already encoded by wire_encode (header included): lets another thread do the
 * encoding. Same returns as conn_send. */
int conn_send_frame(conn_t *c, const void *frame, size_t len);

/* Bytes encrypted and handed to the socket but not yet written. */
size_t conn_pending_output(const conn_t *c);

/* Stops delivering messages (and reading) until conn_resume_reading; the idle timer is stopped
 * meanwhile, since the silence is ours. */
void conn_pause_reading(conn_t *c);
void conn_resume_reading(conn_t *c);

/* Flushes what is queued, sends close_notify and closes; on_close gets 0. */
void conn_close(conn_t *c);

/* Ends the connection with an error; the first call wins, later calls are ignored. */
void conn_fail(conn_t *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void *conn_data(const conn_t *c);
void conn_set_data(conn_t *c, void *data);

/* "ADDR:PORT" of the peer. */
const char *conn_peer_name(const conn_t *c);

tls_engine_t *conn_tls(const conn_t *c);

/* Bytes received and sent on the socket so far (TLS records included: the cost on the wire). */
void conn_bytes(const conn_t *c, uint64_t *ret_in, uint64_t *ret_out);

/* The one line explaining the error that ended the connection. */
const char *conn_last_error(const conn_t *c);

#endif
