/* chan tests: two worker threads talking through real conns on one loop over 127.0.0.1, with
 * queues far smaller than the traffic so backpressure must work, and the loop left with no
 * handle open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "err.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/test-chan.XXXXXX";
static tu_pair_t id;

static int setup_all(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? tu_identities(tmpdir, &id) : -1;
}

static int teardown_all(void **state)
{
    (void)state;
    return tu_rm_tree(tmpdir);
}

#define N_MSGS   200
#define MSG_SIZE (256 * 1024)

typedef struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    tls_ctx_t *sctx, *cctx;
    conn_limits_t limits;
    chan_t *server, *client;
    int server_done, client_done;
    int server_status, client_status;
    /* results written by the workers */
    int received, sent, echoes;
    uint64_t bytes;
    int mode; /* 0: stream + echo, 1: server fails early */
} fixture_t;

/* Server worker: receives N_MSGS big Results slowly, checks them, then answers one Result. */
static void server_worker(chan_t *ch, void *arg)
{
    fixture_t *f = arg;
    msgio_t io = chan_io(ch);
    wire_msg_t *m;

    if (f->mode == 1) {
        wire_msg_t e = {.type = WIRE_ERROR};
        e.u.error.code = 19;
        e.u.error.text = "go away";
        msgio_send(&io, &e);
        chan_fail(ch, ERR_PROTOCOL, "refused on purpose");
        return;
    }
    for (int i = 0; i < N_MSGS; i++) {
        if (msgio_recv(&io, &m, 20000) != 1)
            return;
        if (m->type == WIRE_FILE_DATA && m->u.file_data.offset == (uint64_t)i &&
            m->u.file_data.data.len == MSG_SIZE &&
            m->u.file_data.data.data[MSG_SIZE - 1] == (uint8_t)i)
            f->received++;
        f->bytes += m->u.file_data.data.len;
        wire_msg_free(m);
    }
    wire_msg_t r = {.type = WIRE_RESULT};
    r.u.result.status = WIRE_STATUS_APPLIED;
    r.u.result.generation = (uint64_t)f->received;
    r.u.result.reason = "";
    msgio_send(&io, &r);
    /* Wait for the client to hang up. */
    if (msgio_recv(&io, &m, 20000) == 1)
        wire_msg_free(m);
}

/* Client worker: streams N_MSGS frames of MSG_SIZE, far more than the queues hold. */
static void client_worker(chan_t *ch, void *arg)
{
    fixture_t *f = arg;
    msgio_t io = chan_io(ch);
    uint8_t *data = malloc(MSG_SIZE);
    wire_msg_t *m;

    for (int i = 0; i < N_MSGS; i++) {
        memset(data, i, MSG_SIZE);
        wire_msg_t d = {.type = WIRE_FILE_DATA};
        d.u.file_data.path.data = (const uint8_t *)"f";
        d.u.file_data.path.len = 1;
        d.u.file_data.offset = (uint64_t)i;
        d.u.file_data.data.data = data;
        d.u.file_data.data.len = MSG_SIZE;
        if (msgio_send(&io, &d) < 0)
            break;
        f->sent++;
    }
    free(data);
    int r = msgio_recv(&io, &m, 20000);
    if (r == 1) {
        if (m->type == WIRE_RESULT)
            f->echoes = (int)m->u.result.generation;
        else if (m->type == WIRE_ERROR)
            f->echoes = -1;
        wire_msg_free(m);
    }
}

static void on_server_done(chan_t *ch, int status, void *arg)
{
    fixture_t *f = arg;
    f->server_done++;
    f->server_status = status;
    uv_close((uv_handle_t *)&f->listener, NULL);
}

static void on_client_done(chan_t *ch, int status, void *arg)
{
    fixture_t *f = arg;
    f->client_done++;
    f->client_status = status;
}

static void on_connection(uv_stream_t *l, int status)
{
    fixture_t *f = l->data;
    conn_t *c;
    assert_int_equal(chan_new(l->loop, 1u << 20, 1u << 20, WIRE_MAX_FRAME_DEFAULT, server_worker,
                              on_server_done, f, &f->server),
                     0);
    assert_int_equal(conn_accept(l, f->sctx, &f->limits, chan_conn_callbacks(), f->server, &c), 0);
}

static void run(fixture_t *f)
{
    struct sockaddr_in addr;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    conn_t *c;
    const char *spin = id.cfp, *cpin = id.sfp;

    f->limits = (conn_limits_t)CONN_LIMITS_DEFAULT;
    f->limits.max_pending_output = 2u << 20;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(tls_ctx_new(true, id.skey, id.scert, &spin, 1, &f->sctx, NULL), 0);
    assert_int_equal(tls_ctx_new(false, id.ckey, id.ccert, &cpin, 1, &f->cctx, NULL), 0);
    uv_tcp_init(&f->loop, &f->listener);
    f->listener.data = f;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&f->listener, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 8, on_connection), 0);
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&ss, &len);
    uint16_t port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    assert_int_equal(chan_new(&f->loop, 1u << 20, 1u << 20, WIRE_MAX_FRAME_DEFAULT, client_worker,
                              on_client_done, f, &f->client),
                     0);
    assert_int_equal(conn_connect(&f->loop, "127.0.0.1", port, f->cctx, &f->limits,
                                  chan_conn_callbacks(), f->client, &c),
                     0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    tls_ctx_free(f->sctx);
    tls_ctx_free(f->cctx);
}

static void test_stream_with_backpressure(void **state)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    run(&f);
    assert_int_equal(f.sent, N_MSGS);
    assert_int_equal(f.received, N_MSGS);
    assert_int_equal(f.bytes, (uint64_t)N_MSGS * MSG_SIZE);
    assert_int_equal(f.echoes, N_MSGS);
    assert_int_equal(f.client_done, 1);
    assert_int_equal(f.server_done, 1);
    assert_int_equal(f.client_status, 0); /* the client's worker finished: clean close */
}

static void test_worker_fails(void **state)
{
    fixture_t f;
    memset(&f, 0, sizeof(f));
    f.mode = 1;
    run(&f);
    assert_int_equal(f.server_status, ERR_PROTOCOL);
    assert_int_equal(f.server_done, 1);
    assert_int_equal(f.client_done, 1);
    /* The Error sent before chan_fail arrived, or the client saw the close: never a hang. */
    assert_true(f.echoes == -1 || f.client_status < 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the programs do (common/cli.c) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_with_backpressure),
        cmocka_unit_test(test_worker_fails),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
