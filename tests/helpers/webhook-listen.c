/* Test helper: runs the failover webhook endpoint (controller/webhook.h) on its own loop with a
 * guard in DATA_DIR, until SIGTERM or SIGINT.
 *   webhook-listen DATA_DIR CERT KEY SECRET_FILE [--timeout-ms N] [--pool NAME]...
 * Prints "port N" once listening and "event down|up DETAIL" after each recorded notification.
 * On exit, checks that every handle was closed (uv_loop_close) and exits 0, or 1 if not. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "guard.h"
#include "log.h"
#include "webhook.h"

static webhook_t *hook;
static uv_signal_t sigterm, sigint;

static void on_event(void *ctx, guard_primary_t state, const char *detail)
{
    printf("event %s %s\n", state == GUARD_PRIMARY_DOWN ? "down" : "up", detail);
    fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
    webhook_stop(hook);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
}

int main(int argc, char **argv)
{
    const char *pools[WEBHOOK_MAX_POOLS];
    webhook_opts_t o = {.listen = "127.0.0.1:0", .pools = pools};
    guard_t *g = NULL;
    char err[512];

    log_init("webhook-listen", LOG_DEBUG);
    if (argc < 5) {
        fprintf(stderr, "usage: webhook-listen DATA_DIR CERT KEY SECRET_FILE [--timeout-ms N] "
                        "[--pool NAME]...\n");
        return 2;
    }
    o.cert_path = argv[2];
    o.key_path = argv[3];
    o.secret_file = argv[4];
    for (int i = 5; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--timeout-ms"))
            o.timeout_ms = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--pool") && o.n_pools < WEBHOOK_MAX_POOLS)
            pools[o.n_pools++] = argv[i + 1];
    }
    if (guard_open(argv[1], &g, err, sizeof(err)) < 0) {
        fprintf(stderr, "webhook-listen: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    if (webhook_start(loop, &o, g, on_event, NULL, &hook, err, sizeof(err)) < 0) {
        fprintf(stderr, "webhook-listen: %s\n", err);
        uv_run(loop, UV_RUN_DEFAULT);
        guard_free(g);
        return 2;
    }
    printf("port %d\n", webhook_port(hook));
    fflush(stdout);
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    int leaked = uv_loop_close(loop) != 0;
    guard_free(g);
    if (leaked)
        fprintf(stderr, "webhook-listen: handles left open\n");
    return leaked;
}
