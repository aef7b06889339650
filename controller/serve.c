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
#include "conn.h"
#include "controller.h"
#include "err.h"
#include "log.h"
#include "version.h"

enum session_state {
    SESSION_AWAIT_HELLO,
    SESSION_READY,
};

typedef struct server server_t;

typedef struct session {
    server_t *server;
    conn_t *conn;
    enum session_state state;
    struct session *prev, *next;
} session_t;

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    cfg_t *cfg;
    tls_ctx_t *tls;
    conn_limits_t limits;
    const char *site_id;
    uint64_t max_connections;
    uint64_t n_sessions;
    session_t *sessions;
    bool stopping;
};

static void session_unlink(session_t *s)
{
    server_t *srv = s->server;
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->n_sessions--;
}

static void session_send_error(session_t *s, int code, const char *text)
{
    wire_msg_t m = {.type = WIRE_ERROR};
    m.u.error.code = (uint32_t)err_exit_code(code);
    m.u.error.text = text;
    if (conn_send(s->conn, &m) == 0)
        conn_close(s->conn);
}

static void session_on_hello(session_t *s, const wire_hello_t *h)
{
    char text[512];
    const char *fp = tls_engine_peer_fingerprint(conn_tls(s->conn));

    if (h->role != WIRE_ROLE_AGENT) {
        log_error("%s: peer %s did not introduce itself as an agent", conn_peer_name(s->conn),
                  fp);
        session_send_error(s, ERR_PROTOCOL, "the controller only accepts agents");
        return;
    }
    if (h->protocol_version != proto_version()) {
        snprintf(text, sizeof(text),
                 "protocol version mismatch: agent %s speaks protocol %u, controller %s speaks "
                 "%u; install the same understudy release on both hosts",
                 h->program_version, h->protocol_version, UNDERSTUDY_VERSION, proto_version());
        log_error("%s: %s", conn_peer_name(s->conn), text);
        session_send_error(s, ERR_PROTO_VERSION, text);
        return;
    }
    if (strcmp(h->site_id, s->server->site_id) != 0) {
        snprintf(text, sizeof(text),
                 "site mismatch: the agent syncs site \"%.100s\", this controller keeps \"%.100s\" "
                 "([site] id in both configs)",
                 h->site_id, s->server->site_id);
        log_error("%s: %s", conn_peer_name(s->conn), text);
        session_send_error(s, ERR_CONFIG, text);
        return;
    }
    wire_msg_t reply = {.type = WIRE_HELLO};
    reply.u.hello.magic = WIRE_MAGIC;
    reply.u.hello.protocol_version = proto_version();
    reply.u.hello.program_version = UNDERSTUDY_VERSION;
    reply.u.hello.site_id = s->server->site_id;
    reply.u.hello.role = WIRE_ROLE_CONTROLLER;
    if (conn_send(s->conn, &reply) < 0)
        return;
    s->state = SESSION_READY;
    log_info("%s: agent %s (understudy %s) connected for site \"%s\"", conn_peer_name(s->conn),
             fp, h->program_version, h->site_id);
}

static void session_on_message(session_t *s, const wire_msg_t *m)
{
    if (s->state == SESSION_AWAIT_HELLO) {
        if (m->type != WIRE_HELLO) {
            conn_fail(s->conn, ERR_PROTOCOL, "%s sent %s before Hello", conn_peer_name(s->conn),
                      wire_type_name(m->type));
            return;
        }
        session_on_hello(s, &m->u.hello);
        return;
    }
    switch (m->type) {
    case WIRE_SYNC_BEGIN: {
        wire_msg_t r = {.type = WIRE_RESULT};
        r.u.result.status = WIRE_STATUS_FAILED;
        r.u.result.reason_code = (uint32_t)err_exit_code(ERR_INTERNAL);
        r.u.result.reason = "this controller does not implement sync yet";
        conn_send(s->conn, &r);
        break;
    }
    default:
        conn_fail(s->conn, ERR_PROTOCOL, "%s sent an unexpected %s", conn_peer_name(s->conn),
                  wire_type_name(m->type));
        break;
    }
}

static void on_session_message(conn_t *c, wire_msg_t *msg)
{
    session_on_message(conn_data(c), msg);
    wire_msg_free(msg);
}

static void on_session_close(conn_t *c, int status)
{
    session_t *s = conn_data(c);

    if (status == ERR_PEER_CLOSED && s->state == SESSION_READY)
        log_info("%s: agent disconnected", conn_peer_name(c));
    else if (status < 0)
        log_error("%s: %s (%s)", conn_peer_name(c), conn_last_error(c), err_name(status));
    session_unlink(s);
    free(s);
}

static const conn_callbacks_t session_callbacks = {
    .on_ready = NULL,
    .on_message = on_session_message,
    .on_close = on_session_close,
};

static void server_accept(server_t *srv)
{
    session_t *s = calloc(1, sizeof(*s));
    int r;

    if (!s) {
        log_error("out of memory accepting a connection");
        return;
    }
    s->server = srv;
    r = conn_accept((uv_stream_t *)&srv->listener, srv->tls, &srv->limits, &session_callbacks, s,
                    &s->conn);
    if (r < 0) {
        log_error("cannot accept a connection: %s", err_str(r));
        free(s);
        return;
    }
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->n_sessions++;
    if (srv->n_sessions > srv->max_connections)
        conn_fail(s->conn, ERR_OVERLOADED,
                  "%s: refused: already %llu connections ([listen] max_connections)",
                  conn_peer_name(s->conn), (unsigned long long)srv->max_connections);
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
        conn_close(s->conn);
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
    signal(SIGPIPE, SIG_IGN);
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
    uv_run(srv.loop, UV_RUN_DEFAULT); /* let closing handles finish */
    if (uv_loop_close(srv.loop) != 0)
        log_warn("event loop closed with handles still open");
    tls_ctx_free(srv.tls);
    cfg_free(srv.cfg);
    return err_exit_code(r);
}
