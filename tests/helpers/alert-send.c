/* Test helper: queues an alert and delivers the outbox with the [alerts] settings of a
 * controller configuration, as the controller does (controller/alert.h).
 *   alert-send --config FILE [--at SECONDS] [--deliver-only] SUBJECT TEXT
 * --at delivers as if SECONDS had passed (to reach items waiting for their retry time);
 * --deliver-only queues nothing. Prints "delivered D failed F pending P" and the first error;
 * exits 0 when nothing failed, 1 otherwise, 2 on usage or configuration errors. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alert.h"
#include "controller.h"
#include "err.h"
#include "log.h"

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"at", required_argument, NULL, 'a'},
        {"deliver-only", no_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    long at = 0;
    int deliver_only = 0, opt;
    cfg_t *cfg = NULL;
    alert_t *a = NULL;
    alert_opts_t ao;
    alert_stats_t st;
    char err[512] = "";

    log_init("alert-send", LOG_INFO);
    while ((opt = getopt_long(argc, argv, "c:a:d", opts, NULL)) != -1) {
        if (opt == 'c')
            config = optarg;
        else if (opt == 'a')
            at = atol(optarg);
        else if (opt == 'd')
            deliver_only = 1;
        else
            return 2;
    }
    if (!config || argc - optind != (deliver_only ? 0 : 2)) {
        fprintf(stderr, "usage: alert-send --config FILE [--at SECONDS] [--deliver-only] "
                        "SUBJECT TEXT\n");
        return 2;
    }
    if (controller_load_config(config, &cfg) < 0)
        return 2;
    alert_opts_from_cfg(cfg, &ao);
    if (alert_open(&ao, &a, err, sizeof(err)) < 0) {
        fprintf(stderr, "alert-send: %s\n", err);
        cfg_free(cfg);
        return 2;
    }
    time_t now = time(NULL);
    if (!deliver_only) {
        int r = alert_enqueue(a, ALERT_TEST, now, argv[optind], argv[optind + 1]);
        if (r < 0) {
            fprintf(stderr, "alert-send: cannot queue: %s\n", err_str(r));
            alert_free(a);
            cfg_free(cfg);
            return 2;
        }
    }
    alert_deliver(a, now + at, &st);
    printf("delivered %u failed %u pending %u\n", st.delivered, st.failed, st.pending);
    if (st.first_error[0])
        printf("error: %s\n", st.first_error);
    alert_free(a);
    cfg_free(cfg);
    return st.failed ? 1 : 0;
}
