/* understudy-controller init: this host's identity and a config template. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "controller.h"
#include "err.h"
#include "cli.h"
#include "log.h"

static void init_usage(FILE *f)
{
    fprintf(f, "usage: understudy-controller init --dir DIR [--force] [--listen HOST:PORT]\n\n"
               "Creates DIR/controller.key (mode 0600; it never leaves this host),\n"
               "DIR/controller.crt and a commented DIR/controller.conf, and prints this\n"
               "controller's fingerprint for the agent's [controller] fingerprint key. An\n"
               "existing key is kept unless --force; an existing controller.conf is never\n"
               "overwritten. --listen defaults to 127.0.0.1:0 (any free port).\n");
}

int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},
        {"listen", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *listen = "127.0.0.1:0";
    bool force = false;
    identity_paths_t id;
    char docroot[PATH_MAX + 16], data[PATH_MAX + 16];
    int opt, r;

    while ((opt = getopt_long(argc, argv, "d:fl:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 'f':
            force = true;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'h':
            init_usage(stdout);
            return 0;
        default:
            init_usage(stderr);
            return err_exit_code(ERR_USAGE);
        }
    }
    if (!dir || optind != argc) {
        log_error("init needs --dir DIR (and no other arguments); see 'understudy-controller "
                  "init --help'");
        return err_exit_code(ERR_USAGE);
    }
    r = cli_init_identity(dir, "controller", force, &id);
    if (r != 0)
        return r;
    snprintf(docroot, sizeof(docroot), "%s/docroot", id.dir);
    snprintf(data, sizeof(data), "%s/data", id.dir);
    const char *values[] = {
        "listen.address", listen, "site.docroot", docroot, "site.data", data, NULL};
    return cli_init_finish(&id, controller_schema,
                           "understudy-controller configuration (see understudy.conf(5)).\n"
                           "Paste each agent's fingerprint under [agent].",
                           values);
}
