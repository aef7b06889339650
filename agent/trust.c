/* understudy-agent trust: adds the controller's fingerprint to agent.conf. */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "cfgedit.h"
#include "err.h"
#include "log.h"
#include "tls.h"

static void trust_usage(FILE *f)
{
    fprintf(f, "usage: understudy-agent trust --config FILE FINGERPRINT\n\n"
               "Adds 'fingerprint = FINGERPRINT' to the [controller] section of the agent's\n"
               "configuration, so the agent accepts the controller whose certificate has it\n"
               "(the line 'understudy-controller init' printed after 'fingerprint:'). The file is\n"
               "rewritten atomically with its comments kept; a fingerprint already there is\n"
               "not added twice. Several may be trusted at once, to rotate a key.\n");
}

static bool same_fingerprint(const char *existing, const char *value)
{
    char fp[TLS_FP_LEN];
    return tls_fingerprint_parse(existing, fp) == 0 && !strcmp(fp, value);
}

int cmd_trust(int argc, char **argv)
{
    const char *config = NULL, *given = NULL;
    char fp[TLS_FP_LEN];
    bool added;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            trust_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config = argv[i] + 9;
        } else if (argv[i][0] != '-' && !given) {
            given = argv[i];
        } else {
            trust_usage(stderr);
            return err_exit_code(ERR_USAGE);
        }
    }
    if (!config || !given) {
        log_error("trust needs --config FILE and a FINGERPRINT; see 'understudy-agent trust "
                  "--help'");
        return err_exit_code(ERR_USAGE);
    }
    if (tls_fingerprint_parse(given, fp) < 0) {
        log_error("\"%s\" is not a certificate fingerprint: expected the 64 hex digits (in pairs "
                  "joined by ':') that 'understudy-controller init' prints after 'fingerprint:'",
                  given);
        return err_exit_code(ERR_USAGE);
    }
    int r = cfgedit_add_value(config, "controller", "fingerprint", fp, same_fingerprint, &added);
    if (r < 0) {
        log_error("cannot add the fingerprint to %s: %s", config, err_str(r));
        return err_exit_code(r);
    }
    printf("%s [controller] fingerprint %s in %s\n", added ? "added" : "already trusted:", fp,
           config);
    return 0;
}
