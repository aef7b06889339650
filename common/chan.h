/* A connection handed to a worker thread.
 *
 * A sync is long, sequential work that blocks (reading and hashing files, compressing, MySQL,
 * fsync), and none of it may run on the libuv loop thread. chan lets a worker thread run a whole
 * session as plain sequential code: chan_recv() blocks until the next message arrives,
 * chan_send() encodes a message on the worker and blocks while too much output is waiting. The
 * loop thread keeps doing all network I/O: it moves frames between the conn and two bounded
 * queues, pauses reading while the worker is behind (so a fast peer cannot fill our memory), and
 * wakes the worker when output drains.
 *
 * Life: chan_new(); pass chan_conn_callbacks() and the chan to conn_accept/conn_connect; when the
 * TLS handshake completes the worker starts and runs fn(chan, arg). When fn returns, queued output
 * is flushed and the connection closed cleanly (or with the error given to chan_fail). When both
 * the worker has returned and the connection is closed, on_done(chan, status, arg) runs on the
 * loop thread and the chan is freed after it returns.
 */
#ifndef UNDERSTUDY_CHAN_H
#define UNDERSTUDY_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "msgio.h"

typedef struct chan chan_t;

typedef void (*chan_worker_fn)(chan_t *ch, void *arg);
typedef void (*chan_done_fn)(chan_t *ch, int status, void *arg);

/* Creates a chan. max_in bounds the bytes of received messages waiting for the worker (reading
 * pauses above it); max_out bounds encoded frames waiting to be sent plus socket output (chan_send
 * blocks above it). Returns 0 or UV_ENOMEM. */
int chan_new(uv_loop_t *loop, size_t max_in, size_t max_out, size_t max_frame, chan_worker_fn fn,
             chan_done_fn on_done, void *arg, chan_t **ret_chan);

/* Loop thread: gives up a chan whose conn could not be created (conn_accept/conn_connect
 * failed); on_done runs with status from the loop. */
void chan_cancel(chan_t *ch, int status);

/* Loop thread: closes the connection cleanly (server shutdown); the worker's next chan call
 * returns an error and it winds down. */
void chan_shutdown(chan_t *ch);

/* The callbacks to give conn_accept/conn_connect, with the chan as their data. */
const conn_callbacks_t *chan_conn_callbacks(void);

/* Worker thread: waits for the next message, at most timeout_ms (0: no limit). Returns 1 and
 * *ret_msg (caller frees), or the error that closed the connection (ERR_PEER_CLOSED after a clean
 * close), or UV_ETIMEDOUT. */
int chan_recv(chan_t *ch, wire_msg_t **ret_msg, uint64_t timeout_ms);

/* Worker thread: queues a message. Blocks while more than max_out bytes wait. Returns 0, or the
 * error that closed the connection. */
int chan_send(chan_t *ch, const wire_msg_t *msg);

/* The chan as a msgio_t (chan_send / chan_recv). */
msgio_t chan_io(chan_t *ch);

/* Worker thread: ends the connection with an error after flushing what is queued (so an Error
 * or Result message sent just before still reaches the peer). The first call wins. */
void chan_fail(chan_t *ch, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Any thread: the peer's fingerprint and address (valid once the worker runs). */
const char *chan_peer_fingerprint(const chan_t *ch);
const char *chan_peer_name(const chan_t *ch);

/* Loop thread, in on_done: bytes received and sent on the socket over the connection's life. */
void chan_bytes(const chan_t *ch, uint64_t *ret_in, uint64_t *ret_out);

/* Loop thread, in on_done: the one line explaining how the connection ended. */
const char *chan_last_error(const chan_t *ch);

#endif
