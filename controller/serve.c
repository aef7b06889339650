/* understudy-controller serve: accept agents over pinned TLS and run their sessions.
 *
 * One server struct owns the listening socket, the signal handlers and the list of sessions; one
 * session struct per connection holds the protocol state. Callbacks only translate events into
 * calls of the named steps below.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "chan.h"
#include "conn.h"
#include "controller.h"
#include "err.h"
#include "log.h"
#include "sync.h"
#include "watch.h"
#include "version.h"

/* Per connection: received messages waiting for the worker, and output waiting for the peer. */
#define SESSION_MAX_IN  (32u * 1024 * 1024)
#define SESSION_MAX_OUT (8u * 1024 * 1024)
/* How long the rest of a failed sync is read and discarded before the connection is closed. */
#define SESSION_DRAIN_MS 30000

typedef struct server server_t;

/* One connection: its chan, and the worker that runs Hello and then syncs. */
typedef struct session {
    server_t *server;
    chan_t *chan;
    bool greeted;
    struct session *prev, *next;
} session_t;

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    cfg_t *cfg;
    tls_ctx_t *tls;
    syncer_t *syncer;
    watch_t *watch;
    conn_limits_t limits;
    const char *site_id;
    uint64_t max_connections;
    uint64_t n_sessions;
    session_t *sessions;
    bool stopping;
};

/* Worker: answers the agent's Hello, or says why not with an Error. Returns 0 when greeted. */
static int session_hello(session_t *s, const msgio_t *io)
{
    chan_t *ch = s->chan;
    wire_msg_t *m = NULL;
    char text[512];
    int code = 0;
    int r = msgio_recv(io, &m, s->server->limits.handshake_timeout_ms);

    if (r < 0)
        return r;
    const wire_hello_t *h = &m->u.hello;
    if (m->type != WIRE_HELLO) {
        snprintf(text, sizeof(text), "sent %s before Hello", wire_type_name(m->type));
        code = ERR_PROTOCOL;
    } else if (h->role != WIRE_ROLE_AGENT) {
        snprintf(text, sizeof(text), "the controller only accepts agents");
        code = ERR_PROTOCOL;
    } else if (h->protocol_version != proto_version()) {
        snprintf(text, sizeof(text),
                 "protocol version mismatch: agent %.40s speaks protocol %u, controller %s "
                 "speaks %u; install the same understudy release on both hosts",
                 h->program_version, h->protocol_version, UNDERSTUDY_VERSION, proto_version());
        code = ERR_PROTO_VERSION;
    } else if (strcmp(h->site_id, s->server->site_id) != 0) {
        snprintf(text, sizeof(text),
                 "site mismatch: the agent syncs site \"%.100s\", this controller keeps "
                 "\"%.100s\" ([site] id in both configs)",
                 h->site_id, s->server->site_id);
        code = ERR_CONFIG;
    }
    if (code < 0) {
        wire_msg_t e = {.type = WIRE_ERROR};
        e.u.error.code = (uint32_t)err_exit_code(code);
        e.u.error.text = text;
        log_error("%s: %s", chan_peer_name(ch), text);
        msgio_send(io, &e);
        wire_msg_free(m);
        chan_fail(ch, code, "%s", text);
        return code;
    }
    log_info("%s: agent %s (understudy %s) connected for site \"%s\"", chan_peer_name(ch),
             chan_peer_fingerprint(ch), h->program_version, h->site_id);
    wire_msg_free(m);

    wire_msg_t reply = {.type = WIRE_HELLO};
    reply.u.hello.magic = WIRE_MAGIC;
    reply.u.hello.protocol_version = proto_version();
    reply.u.hello.program_version = UNDERSTUDY_VERSION;
    reply.u.hello.site_id = s->server->site_id;
    reply.u.hello.role = WIRE_ROLE_CONTROLLER;
    return msgio_send(io, &reply);
}

/* Worker thread of one connection. */
static void session_worker(chan_t *ch, void *arg)
{
    session_t *s = arg;
    msgio_t io = chan_io(ch);
    wire_msg_t *m;
    int r;

    if (session_hello(s, &io) < 0)
        return;
    s->greeted = true;
    /* Syncs until the agent hangs up. */
    uint64_t drain_until = 0;
    while ((r = msgio_recv(&io, &m, s->server->limits.idle_timeout_ms)) == 1) {
        if (drain_until) {
            /* The rest of a sync that failed early: the agent streams on until its Commit and
             * reads our Result only then. Discarding it (rather than closing with it unread,
             * which makes the kernel reset the connection and drop the Result the agent has
             * not read yet) lets the agent print why. Bounded in time. */
            bool done = m->type == WIRE_COMMIT;
            wire_msg_free(m);
            if (done)
                drain_until = 0;
            else if (uv_hrtime() / 1000000 > drain_until)
                return;
            continue;
        }
        if (m->type != WIRE_SYNC_BEGIN) {
            chan_fail(ch, ERR_PROTOCOL, "%s sent an unexpected %s", chan_peer_name(ch),
                      wire_type_name(m->type));
            wire_msg_free(m);
            return;
        }
        r = syncer_run(s->server->syncer, &io, &m->u.sync_begin, chan_peer_name(ch));
        wire_msg_free(m);
        if (r < 0)
            return;
        if (r == 1)
            drain_until = uv_hrtime() / 1000000 + SESSION_DRAIN_MS;
    }
    if (r == UV_ETIMEDOUT)
        chan_fail(ch, ERR_IDLE_TIMEOUT, "%s sent nothing for %llu ms", chan_peer_name(ch),
                  (unsigned long long)s->server->limits.idle_timeout_ms);
}

/* Loop thread: the connection and its worker are both finished. */
static void on_session_done(chan_t *ch, int status, void *arg)
{
    session_t *s = arg;
    server_t *srv = s->server;

    if (status == ERR_PEER_CLOSED && s->greeted)
        log_info("%s: agent disconnected", chan_peer_name(ch)[0] ? chan_peer_name(ch) : "peer");
    else if (status < 0 && status != ERR_PEER_CLOSED)
        log_error("%s (%s)", chan_last_error(ch), err_name(status));
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->n_sessions--;
    free(s);
    if (srv->stopping && srv->n_sessions == 0) {
        watch_stop(srv->watch); /* no worker can be inside watch_refusal any more */
        srv->watch = NULL;
    }
}

static void server_accept(server_t *srv)
{
    session_t *s = calloc(1, sizeof(*s));
    int r;

    if (!s) {
        log_error("out of memory accepting a connection");
        return;
    }
    s->server = srv;
    r = chan_new(srv->loop, SESSION_MAX_IN, SESSION_MAX_OUT, srv->limits.max_frame, session_worker,
                 on_session_done, s, &s->chan);
    if (r < 0) {
        log_error("cannot accept a connection: %s", err_str(r));
        free(s);
        return;
    }
    conn_t *conn;
    r = conn_accept((uv_stream_t *)&srv->listener, srv->tls, &srv->limits, chan_conn_callbacks(),
                    s->chan, &conn);
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->n_sessions++;
    if (r < 0) {
        log_error("cannot accept a connection: %s", err_str(r));
        chan_cancel(s->chan, r);
        return;
    }
    if (srv->n_sessions > srv->max_connections)
        conn_fail(conn, ERR_OVERLOADED,
                  "%s: refused: already %llu connections ([listen] max_connections)",
                  conn_peer_name(conn), (unsigned long long)srv->max_connections);
}

static void on_connection(uv_stream_t *listener, int status)
{
    server_t *srv = listener->data;
    if (status < 0) {
        log_error("accept failed: %s", uv_strerror(status));
        return;
    }
    server_accept(srv);
}

static void server_stop(server_t *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    log_info("stopping");
    uv_close((uv_handle_t *)&srv->listener, NULL);
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    for (session_t *s = srv->sessions; s; s = s->next)
        chan_shutdown(s->chan);
    if (srv->n_sessions == 0) {
        watch_stop(srv->watch);
        srv->watch = NULL;
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    server_stop(h->data);
}

static int server_listen(server_t *srv)
{
    char host[256], name[INET6_ADDRSTRLEN];
    uint16_t port;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int r;

    r = cfg_parse_address(cfg_get(srv->cfg, "listen", "address"), host, sizeof(host), &port);
    if (r == 0)
        r = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                              : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (r < 0) {
        log_error("%s: [listen] address must be a numeric IP and port, got \"%s\"",
                  cfg_path(srv->cfg), cfg_get(srv->cfg, "listen", "address"));
        return ERR_CONFIG;
    }
    uv_tcp_init(srv->loop, &srv->listener);
    srv->listener.data = srv;
    r = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&srv->listener, 64, on_connection);
    if (r < 0) {
        log_error("cannot listen on %s: %s", cfg_get(srv->cfg, "listen", "address"),
                  uv_strerror(r));
        uv_close((uv_handle_t *)&srv->listener, NULL);
        return r;
    }
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof(name));
        log_info("listening on [%s]:%u", name, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof(name));
        log_info("listening on %s:%u", name, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    }
    return 0;
}

static int server_init(server_t *srv, const char *config_path)
{
    const char *const *pins;
    size_t n_pins;
    char *error = NULL;
    char errbuf[1024];
    int r;

    r = controller_load_config(config_path, &srv->cfg);
    if (r < 0)
        return r;
    n_pins = cfg_get_all(srv->cfg, "agent", "fingerprint", &pins);
    r = tls_ctx_new(true, cfg_get(srv->cfg, "identity", "key"),
                    cfg_get(srv->cfg, "identity", "cert"), pins, n_pins, &srv->tls, &error);
    if (r < 0) {
        log_error("%s", error ? error : err_str(r));
        free(error);
        return r;
    }
    if (tls_ctx_check_validity(srv->tls) < 0)
        log_warn("our certificate %s %s; agents will refuse this controller until it is renewed "
                 "('understudy-controller init --force', then update the agents' fingerprint)",
                 cfg_get(srv->cfg, "identity", "cert"),
                 tls_ctx_check_validity(srv->tls) == ERR_CERT_EXPIRED ? "has expired"
                                                                      : "is not yet valid");
    srv->site_id = cfg_get(srv->cfg, "site", "id");
    r = syncer_open(srv->cfg, &srv->syncer, errbuf, sizeof(errbuf));
    if (r < 0) {
        log_error("%s", errbuf);
        return r;
    }
    r = watch_start(srv->loop, srv->cfg, &srv->watch, errbuf, sizeof(errbuf));
    if (r < 0) {
        log_error("write guard: %s", errbuf);
        return r;
    }
    syncer_set_watch(srv->syncer, srv->watch);
    if (guard_reason_line(watch_guard(srv->watch), errbuf, sizeof(errbuf)))
        log_warn("write guard: syncs are refused: %s", errbuf);
    srv->max_connections = cfg_get_uint(srv->cfg, "listen", "max_connections", 16);
    srv->limits = (conn_limits_t)CONN_LIMITS_DEFAULT;
    srv->limits.max_frame = cfg_get_size(srv->cfg, "listen", "max_frame", WIRE_MAX_FRAME_DEFAULT);
    srv->limits.handshake_timeout_ms =
        cfg_get_duration(srv->cfg, "listen", "handshake_timeout", 10) * 1000;
    srv->limits.idle_timeout_ms = cfg_get_duration(srv->cfg, "listen", "idle_timeout", 300) * 1000;
    return 0;
}

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: understudy-controller serve --config FILE [--verbose]\n\n"
               "Accepts agents in the foreground, logging to stderr, until SIGTERM or SIGINT.\n");
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    server_t srv = {0};
    int opt, r;

    while ((opt = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'v':
            log_set_level(LOG_DEBUG);
            break;
        case 'h':
            serve_usage(stdout);
            return 0;
        default:
            serve_usage(stderr);
            return err_exit_code(ERR_USAGE);
        }
    }
    if (!config_path || optind != argc) {
        log_error("serve needs --config FILE; see 'understudy-controller serve --help'");
        return err_exit_code(ERR_USAGE);
    }
    log_set_timestamps(true);
    srv.loop = uv_default_loop();
    r = server_init(&srv, config_path);
    if (r == 0)
        r = server_listen(&srv);
    if (r == 0) {
        uv_signal_init(srv.loop, &srv.sigterm);
        uv_signal_init(srv.loop, &srv.sigint);
        srv.sigterm.data = srv.sigint.data = &srv;
        uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
        uv_signal_start(&srv.sigint, on_signal, SIGINT);
        uv_run(srv.loop, UV_RUN_DEFAULT);
    }
    if (r < 0)
        watch_stop(srv.watch);        /* started, but the listener failed */
    uv_run(srv.loop, UV_RUN_DEFAULT); /* let closing handles finish */
    if (uv_loop_close(srv.loop) != 0)
        log_warn("event loop closed with handles still open");
    syncer_close(srv.syncer);
    tls_ctx_free(srv.tls);
    cfg_free(srv.cfg);
    return err_exit_code(r);
}
