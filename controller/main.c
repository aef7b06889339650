/* understudy-controller: runs on the backup, receives syncs and switches generations. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "controller.h"
#include "err.h"
#include "log.h"

struct cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct cmd commands[] = {
    {"init", cmd_init, "create this host's key, certificate and a config template"},
    {"serve", cmd_serve, "accept syncs from agents (foreground; logs to stderr)"},
    {"firewall", cmd_firewall, "print, check or apply the backup's firewall ruleset"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: understudy-controller [--version] [--help] <command> [<args>]\n\n"
               "Receives a WordPress site from understudy agents and serves it as a warm "
               "standby.\n\nCommands:\n");
    for (const struct cmd *c = commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\nRun 'understudy-controller <command> --help' for a command's options.\n"
               "Exit codes: 0 success; see understudy-controller(8) for the full table.\n");
}

int main(int argc, char **argv)
{
    log_init("understudy-controller", LOG_INFO);
    if (argc < 2) {
        usage(stderr);
        return err_exit_code(ERR_USAGE);
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("understudy-controller %s (protocol %d)\n", UNDERSTUDY_VERSION,
               UNDERSTUDY_PROTOCOL_VERSION);
        return 0;
    }
    for (const struct cmd *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->fn(argc - 1, argv + 1);
    log_error("unknown command '%s'; run 'understudy-controller --help' for the list", argv[1]);
    return err_exit_code(ERR_USAGE);
}
