/* understudy-agent init: this host's identity and a config template. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "err.h"
#include "cli.h"
#include "log.h"

static void init_usage(FILE *f)
{
    fprintf(f, "usage: understudy-agent init --dir DIR [--force] [--site-root PATH]\n"
               "                             [--controller HOST:PORT]\n\n"
               "Creates DIR/agent.key (mode 0600; it never leaves this host), DIR/agent.crt and\n"
               "a commented DIR/agent.conf, and prints this agent's fingerprint for the\n"
               "controller's [agent] fingerprint key. An existing key is kept unless --force;\n"
               "an existing agent.conf is never overwritten.\n");
}

int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},
        {"site-root", required_argument, NULL, 's'},
        {"controller", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *site_root = NULL, *controller = NULL;
    bool force = false;
    identity_paths_t id;
    char root_abs[PATH_MAX + 16];
    int opt, r;

    while ((opt = getopt_long(argc, argv, "d:fs:c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 'f':
            force = true;
            break;
        case 's':
            site_root = optarg;
            break;
        case 'c':
            controller = optarg;
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
        log_error("init needs --dir DIR (and no other arguments); see 'understudy-agent init "
                  "--help'");
        return err_exit_code(ERR_USAGE);
    }
    r = cli_init_identity(dir, "agent", force, &id);
    if (r != 0)
        return r;
    if (site_root) {
        if (!realpath(site_root, root_abs))
            snprintf(root_abs, sizeof(root_abs), "%s", site_root);
    } else {
        snprintf(root_abs, sizeof(root_abs), "%s/site", id.dir);
    }
    const char *values[] = {"site.root", root_abs, "controller.address", controller, NULL};
    if (!controller)
        values[2] = NULL;
    return cli_init_finish(&id, agent_schema,
                           "understudy-agent configuration (see understudy.conf(5)).\n"
                           "Paste the controller's fingerprint below, and its address.",
                           values);
}
