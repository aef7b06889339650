#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "err.h"
#include "log.h"

static void usage(FILE *f, const char *program, const char *description, const char *man_page,
                  const cli_cmd_t *cmds)
{
    fprintf(f, "usage: %s [--version] [--help] <command> [<args>]\n\n%s\n\nCommands:\n", program,
            description);
    for (const cli_cmd_t *c = cmds; c->name; c++)
        fprintf(f, "  %-22s %s\n", c->name, c->summary);
    fprintf(f,
            "\nRun '%s <command> --help' for a command's options.\n"
            "Exit codes: 0 success; see %s for the full table.\n",
            program, man_page);
}

int cli_main(const char *program, const char *description, const char *man_page,
             const cli_cmd_t *cmds, int argc, char **argv)
{
    log_init(program, LOG_INFO);
    /* A peer that resets a connection must show up as a write error, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr, program, description, man_page, cmds);
        return err_exit_code(ERR_USAGE);
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout, program, description, man_page, cmds);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("%s %s (protocol %d)\n", program, UNDERSTUDY_VERSION, UNDERSTUDY_PROTOCOL_VERSION);
        return 0;
    }
    for (const cli_cmd_t *c = cmds; c->name; c++)
        if (!strcmp(argv[1], c->name))
            return c->fn(argc - 1, argv + 1);
    log_error("unknown command '%s'; run '%s --help' for the list", argv[1], program);
    return err_exit_code(ERR_USAGE);
}

int cli_load_config(const cfg_key_t *schema, const char *path, cfg_t **ret_cfg)
{
    cfg_t *cfg = cfg_new(schema);
    if (!cfg)
        return UV_ENOMEM;
    int r = cfg_load(cfg, path);
    if (r < 0) {
        log_error("%s", cfg_last_error(cfg));
        cfg_free(cfg);
        return r;
    }
    *ret_cfg = cfg;
    return 0;
}
