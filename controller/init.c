/* understudy-controller init: this host's identity and a config template. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "controller.h"
#include "err.h"
#include "identity.h"
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
    char *error = NULL;
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
    r = identity_init(dir, "controller", force, &id, &error);
    if (r < 0) {
        log_error("%s", error ? error : err_str(r));
        free(error);
        return err_exit_code(r);
    }
    snprintf(docroot, sizeof(docroot), "%s/docroot", id.dir);
    snprintf(data, sizeof(data), "%s/data", id.dir);
    if (access(id.conf, F_OK) == 0) {
        log_info("keeping existing %s", id.conf);
    } else {
        const char *values[] = {"listen.address",
                                listen,
                                "identity.key",
                                id.key,
                                "identity.cert",
                                id.cert,
                                "site.docroot",
                                docroot,
                                "site.data",
                                data,
                                NULL};
        r = cfg_write_template(controller_schema, id.conf,
                               "understudy-controller configuration (see understudy.conf(5)).\n"
                               "Paste each agent's fingerprint under [agent].",
                               values);
        if (r < 0) {
            log_error("cannot write %s: %s", id.conf, err_str(r));
            return err_exit_code(r);
        }
    }
    printf("key: %s\ncert: %s\nconfig: %s\nfingerprint: %s\n", id.key, id.cert, id.conf,
           id.fingerprint);
    return 0;
}
