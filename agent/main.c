/* understudy-agent: runs on the WordPress primary, unprivileged, from cron. */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "config.h"
#include "err.h"
#include "log.h"

struct cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct cmd commands[] = {
    {"init", cmd_init, "create this host's key, certificate and a config template"},
    {"sync", cmd_sync, "send what changed to the controller (run from cron)"},
    {"check", cmd_check, "connect to the controller and the database and report"},
    {"cron", cmd_cron, "print the crontab line that runs the agent"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: understudy-agent [--version] [--help] <command> [<args>]\n\n"
               "Keeps a warm standby of this WordPress site on an understudy controller.\n\n"
               "Commands:\n");
    for (const struct cmd *c = commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\nRun 'understudy-agent <command> --help' for a command's options.\n"
               "Exit codes: 0 success; see understudy-agent(1) for the full table.\n");
}

int main(int argc, char **argv)
{
    log_init("understudy-agent", LOG_INFO);
    if (argc < 2) {
        usage(stderr);
        return err_exit_code(ERR_USAGE);
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("understudy-agent %s (protocol %d)\n", UNDERSTUDY_VERSION,
               UNDERSTUDY_PROTOCOL_VERSION);
        return 0;
    }
    for (const struct cmd *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->fn(argc - 1, argv + 1);
    log_error("unknown command '%s'; run 'understudy-agent --help' for the list", argv[1]);
    return err_exit_code(ERR_USAGE);
}
