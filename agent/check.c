/* understudy-agent check: connect to the controller and the site's database and report.
 *
 * Prints one "name: value" line per finding on stdout; failures go to stderr as one line each.
 * Exits 0 only when the controller handshake, the Hello exchange and the database checks all
 * succeed; otherwise with the exit code of the first failure (see common/err.h).
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agent.h"
#include "conn.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "version.h"
#include "wpconfig.h"

typedef struct check {
    cfg_t *cfg;
    conn_t *conn;
    int result; /* first error, 0 if none */
    bool got_hello;
    char error[1024];
} check_t;

static void check_set_error(check_t *ck, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void check_set_error(check_t *ck, int r, const char *fmt, ...)
{
    va_list ap;
    if (ck->result < 0)
        return;
    ck->result = r;
    va_start(ap, fmt);
    vsnprintf(ck->error, sizeof(ck->error), fmt, ap);
    va_end(ap);
}

static void check_on_ready(conn_t *c)
{
    check_t *ck = conn_data(c);
    tls_engine_t *tls = conn_tls(c);
    wire_msg_t m = {.type = WIRE_HELLO};

    printf("tls: %s\n", tls_engine_version(tls));
    printf("controller: trusted (fingerprint %s)\n", tls_engine_peer_fingerprint(tls));
    m.u.hello.magic = WIRE_MAGIC;
    m.u.hello.protocol_version = proto_version();
    m.u.hello.program_version = UNDERSTUDY_VERSION;
    m.u.hello.site_id = cfg_get(ck->cfg, "site", "id");
    m.u.hello.role = WIRE_ROLE_AGENT;
    conn_send(c, &m);
}

static void check_on_hello(check_t *ck, conn_t *c, const wire_hello_t *h)
{
    if (h->role != WIRE_ROLE_CONTROLLER) {
        conn_fail(c, ERR_PROTOCOL, "the peer at %s is not an understudy controller",
                  conn_peer_name(c));
        return;
    }
    if (h->protocol_version != proto_version()) {
        conn_fail(c, ERR_PROTO_VERSION,
                  "protocol version mismatch: controller %s speaks protocol %u, this agent %s "
                  "speaks %u; install the same understudy release on both hosts",
                  h->program_version, h->protocol_version, UNDERSTUDY_VERSION, proto_version());
        return;
    }
    printf("controller version: %s (protocol %u)\n", h->program_version, h->protocol_version);
    printf("site: %s\n", h->site_id);
    ck->got_hello = true;
    conn_close(c);
}

static void check_on_message(conn_t *c, wire_msg_t *m)
{
    check_t *ck = conn_data(c);

    if (m->type == WIRE_HELLO && !ck->got_hello) {
        check_on_hello(ck, c, &m->u.hello);
    } else if (m->type == WIRE_ERROR) {
        /* The controller said why it refuses; keep its exit code when it is one of ours. */
        int code = ERR_PROTOCOL;
        if (m->u.error.code == (uint32_t)err_exit_code(ERR_PROTO_VERSION))
            code = ERR_PROTO_VERSION;
        else if (m->u.error.code == (uint32_t)err_exit_code(ERR_CONFIG))
            code = ERR_CONFIG;
        check_set_error(ck, code, "the controller refused: %s", m->u.error.text);
        conn_close(c);
    } else {
        conn_fail(c, ERR_PROTOCOL, "the controller sent an unexpected %s", wire_type_name(m->type));
    }
    wire_msg_free(m);
}

static void check_on_close(conn_t *c, int status)
{
    check_t *ck = conn_data(c);
    if (status < 0 && status != ERR_PEER_CLOSED)
        check_set_error(ck, status, "%s", conn_last_error(c));
    else if (!ck->got_hello)
        check_set_error(ck, status < 0 ? status : ERR_PEER_CLOSED, "%s",
                        status < 0 ? conn_last_error(c)
                                   : "the controller closed the connection before its Hello");
}

static const conn_callbacks_t check_callbacks = {
    .on_ready = check_on_ready,
    .on_message = check_on_message,
    .on_close = check_on_close,
};

static int check_controller(check_t *ck)
{
    const char *const *pins;
    size_t n_pins = cfg_get_all(ck->cfg, "controller", "fingerprint", &pins);
    char host[256];
    uint16_t port;
    tls_ctx_t *tls = NULL;
    char *error = NULL;
    uv_loop_t loop;
    conn_limits_t limits = CONN_LIMITS_DEFAULT;
    int r;

    r = tls_ctx_new(false, cfg_get(ck->cfg, "identity", "key"),
                    cfg_get(ck->cfg, "identity", "cert"), pins, n_pins, &tls, &error);
    if (r < 0) {
        check_set_error(ck, r, "%s", error ? error : err_str(r));
        free(error);
        return r;
    }
    printf("agent fingerprint: %s\n", tls_ctx_fingerprint(tls));
    if (tls_ctx_check_validity(tls) < 0)
        log_warn("our certificate %s %s; the controller will refuse it until it is renewed "
                 "('understudy-agent init --force', then update the controller's fingerprint)",
                 cfg_get(ck->cfg, "identity", "cert"),
                 tls_ctx_check_validity(tls) == ERR_CERT_EXPIRED ? "has expired"
                                                                 : "is not yet valid");
    cfg_parse_address(cfg_get(ck->cfg, "controller", "address"), host, sizeof(host), &port);
    limits.connect_timeout_ms = cfg_get_duration(ck->cfg, "agent", "connect_timeout", 10) * 1000;
    limits.handshake_timeout_ms =
        cfg_get_duration(ck->cfg, "agent", "handshake_timeout", 10) * 1000;
    uv_loop_init(&loop);
    r = conn_connect(&loop, host, port, tls, &limits, &check_callbacks, ck, &ck->conn);
    if (r < 0)
        check_set_error(ck, ERR_UNREACHABLE, "cannot connect to %s:%u: %s", host, port,
                        uv_strerror(r));
    else
        uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        log_warn("event loop closed with handles still open");
    tls_ctx_free(tls);
    return ck->result;
}

static int check_database(check_t *ck)
{
    const char *wp_path = cfg_get(ck->cfg, "site", "wp_config");
    char path[4096], err[1024], missing[256];
    wpconfig_t wp = {0};
    MYSQL *db = NULL;
    char **grants = NULL;
    size_t n_grants = 0;
    int r;

    if (!wp_path) {
        snprintf(path, sizeof(path), "%s/wp-config.php", cfg_get(ck->cfg, "site", "root"));
        wp_path = path;
    }
    r = wpconfig_load(wp_path, &wp, err, sizeof(err));
    if (r < 0) {
        if (r == ERR_WPCONFIG)
            check_set_error(ck, r, "%s", err);
        else
            check_set_error(ck, ERR_WPCONFIG, "cannot read %s: %s", wp_path, err_str(r));
        return r;
    }
    printf("wp-config: %s (database %s, table prefix %s)\n", wp_path, wp.db_name, wp.table_prefix);
    r = agentdb_connect(&wp, &db, err, sizeof(err));
    if (r < 0) {
        check_set_error(ck, r, "%s", err);
        goto out;
    }
    printf("database: connected as %s@%s\n", wp.db_user, wp.db_host);
    r = agentdb_grants(db, &grants, &n_grants, err, sizeof(err));
    if (r < 0) {
        check_set_error(ck, r, "%s", err);
        goto out;
    }
    for (size_t i = 0; i < n_grants; i++)
        printf("grant: %s\n", grants[i]);
    r = agentdb_check_privileges(grants, n_grants, wp.db_name, missing, sizeof(missing));
    if (r < 0)
        check_set_error(ck, r, "database user %s lacks %s on %s; ask the host to grant it",
                        wp.db_user, missing, wp.db_name);
    else
        printf("privileges: sufficient for a consistent snapshot\n");
out:
    agentdb_free_lines(grants, n_grants);
    agentdb_close(db);
    wpconfig_clear(&wp);
    return r;
}

static void check_usage(FILE *f)
{
    fprintf(f, "usage: understudy-agent check --config FILE [--no-database]\n\n"
               "Connects to the controller, completes the pinned TLS 1.3 handshake and the Hello\n"
               "exchange, then connects to the site's database with the credentials from\n"
               "wp-config.php and lists its grants. Exits 0 only when everything is in order.\n");
}

int cmd_check(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"no-database", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool database = true;
    check_t ck = {0};
    int opt;

    while ((opt = getopt_long(argc, argv, "c:nh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'n':
            database = false;
            break;
        case 'h':
            check_usage(stdout);
            return 0;
        default:
            check_usage(stderr);
            return err_exit_code(ERR_USAGE);
        }
    }
    if (!config_path || optind != argc) {
        log_error("check needs --config FILE; see 'understudy-agent check --help'");
        return err_exit_code(ERR_USAGE);
    }
    int r = agent_load_config(config_path, &ck.cfg);
    if (r < 0)
        return err_exit_code(r);
    agent_lower_priority();
    check_controller(&ck);
    if (ck.result < 0)
        log_error("%s", ck.error);
    int first = ck.result;
    if (database) {
        ck.result = 0;
        check_database(&ck);
        if (ck.result < 0)
            log_error("%s", ck.error);
        if (first == 0)
            first = ck.result;
    }
    cfg_free(ck.cfg);
    if (first == 0)
        printf("ok: all checks passed\n");
    return err_exit_code(first);
}
