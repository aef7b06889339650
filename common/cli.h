/* The command-line front end both programs share: git-style subcommand dispatch and config
 * loading that reports its one-line error. Unlike the rest of common/, this module talks to the
 * user (it logs), because it is the programs' own outermost layer. */
#ifndef UNDERSTUDY_CLI_H
#define UNDERSTUDY_CLI_H

#include "cfg.h"
#include "identity.h"

typedef struct cli_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} cli_cmd_t;

/* Runs the subcommand named by argv[1] from cmds (ending with {NULL}); handles --help,
 * --version and unknown commands. Returns the process exit code. */
int cli_main(const char *program, const char *description, const char *man_page,
             const cli_cmd_t *cmds, int argc, char **argv);

/* Loads a config file against schema; on failure logs the one line naming file, line and key,
 * and returns the error. */
int cli_load_config(const cfg_key_t *schema, const char *path, cfg_t **ret_cfg);

/* `init`, both programs: creates the identity (identity_init) in dir as <name>.key/.crt, logging
 * the one-line reason on failure. Returns 0 or the process exit code. */
int cli_init_identity(const char *dir, const char *name, bool force, identity_paths_t *ret);

/* `init`, second half: writes id->conf from schema with the identity's key and cert filled in
 * plus values (pairs "section.key", value, NULL-terminated), unless the file exists (an
 * existing config is never overwritten), then prints key, cert, config and fingerprint.
 * Returns 0 or the process exit code. */
int cli_init_finish(const identity_paths_t *id, const cfg_key_t *schema, const char *header,
                    const char *const *values);

/* `trust --config FILE FINGERPRINT`, shared by both programs: adds the peer's fingerprint to
 * section of the config file (atomically, keeping comments; idempotent). */
typedef struct cli_trust {
    const char *program;      /* "understudy-agent" */
    const char *section;      /* where the peer's fingerprints go: "controller" */
    const char *peer_program; /* whose init prints the fingerprint: "understudy-controller" */
    const char *note;         /* an extra sentence for --help, or "" */
} cli_trust_t;

int cli_trust(const cli_trust_t *t, int argc, char **argv);

#endif
