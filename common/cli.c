#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "cfgedit.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "tls.h"

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

static void trust_usage(FILE *f, const cli_trust_t *t)
{
    fprintf(f,
            "usage: %s trust --config FILE FINGERPRINT\n\n"
            "Adds 'fingerprint = FINGERPRINT' to the [%s] section of the configuration, so\n"
            "this side accepts the peer whose certificate has it (the line '%s init'\n"
            "printed after 'fingerprint:'). The file is rewritten atomically with its comments\n"
            "kept; a fingerprint already there is not added twice. Several may be trusted at\n"
            "once, to rotate a key.%s%s\n",
            t->program, t->section, t->peer_program, t->note[0] ? " " : "", t->note);
}

static bool same_fingerprint(const char *existing, const char *value)
{
    char fp[TLS_FP_LEN];
    return tls_fingerprint_parse(existing, fp) == 0 && !strcmp(fp, value);
}

int cli_trust(const cli_trust_t *t, int argc, char **argv)
{
    const char *config = NULL, *given = NULL;
    char fp[TLS_FP_LEN];
    bool added;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            trust_usage(stdout, t);
            return 0;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config = argv[i] + 9;
        } else if (argv[i][0] != '-' && !given) {
            given = argv[i];
        } else {
            trust_usage(stderr, t);
            return err_exit_code(ERR_USAGE);
        }
    }
    if (!config || !given) {
        log_error("trust needs --config FILE and a FINGERPRINT; see '%s trust --help'", t->program);
        return err_exit_code(ERR_USAGE);
    }
    if (tls_fingerprint_parse(given, fp) < 0) {
        log_error("\"%s\" is not a certificate fingerprint: expected the 64 hex digits (in pairs "
                  "joined by ':') that '%s init' prints after 'fingerprint:'",
                  given, t->peer_program);
        return err_exit_code(ERR_USAGE);
    }
    int r = cfgedit_add_value(config, t->section, "fingerprint", fp, same_fingerprint, &added);
    if (r < 0) {
        log_error("cannot add the fingerprint to %s: %s", config, err_str(r));
        return err_exit_code(r);
    }
    printf("%s [%s] fingerprint %s in %s\n", added ? "added" : "already trusted:", t->section, fp,
           config);
    return 0;
}

int cli_init_identity(const char *dir, const char *name, bool force, identity_paths_t *ret)
{
    char *error = NULL;
    int r = identity_init(dir, name, force, ret, &error);
    if (r < 0) {
        log_error("%s", error ? error : err_str(r));
        free(error);
        return err_exit_code(r);
    }
    return 0;
}

int cli_init_finish(const identity_paths_t *id, const cfg_key_t *schema, const char *header,
                    const char *const *values)
{
    const char *all[32] = {"identity.key", id->key, "identity.cert", id->cert};
    size_t n = 4;

    for (size_t i = 0; values[i] && n + 2 < sizeof(all) / sizeof(all[0]); i += 2) {
        all[n++] = values[i];
        all[n++] = values[i + 1];
    }
    all[n] = NULL;
    if (access(id->conf, F_OK) == 0) {
        log_info("keeping existing %s", id->conf);
    } else {
        int r = cfg_write_template(schema, id->conf, header, all);
        if (r < 0) {
            log_error("cannot write %s: %s", id->conf, err_str(r));
            return err_exit_code(r);
        }
    }
    printf("key: %s\ncert: %s\nconfig: %s\nfingerprint: %s\n", id->key, id->cert, id->conf,
           id->fingerprint);
    return 0;
}
