#include "agent.h"

#include "cli.h"

const cfg_key_t agent_schema[] = {
    {"controller", "address", CFG_ADDRESS, CFG_REQUIRED, NULL,
     "where understudy-controller listens, HOST:PORT"},
    {"controller", "fingerprint", CFG_FINGERPRINT, CFG_REQUIRED | CFG_MULTI, NULL,
     "SHA-256 fingerprint of the controller's certificate; repeat the key to accept several"},
    {"identity", "key", CFG_PATH, CFG_REQUIRED, NULL, "this agent's private key (mode 0600)"},
    {"identity", "cert", CFG_PATH, CFG_REQUIRED, NULL, "this agent's certificate"},
    {"site", "root", CFG_PATH, CFG_REQUIRED, NULL, "the WordPress site's directory"},
    {"site", "wp_config", CFG_PATH, 0, NULL,
     "path of wp-config.php (default <root>/wp-config.php)"},
    {"site", "id", CFG_STRING, 0, "default", "name of this site, reported to the controller"},
    {"site", "exclude", CFG_STRING, CFG_MULTI, NULL,
     "gitignore-like pattern not to sync; repeat the key (defaults: wp-content/cache/, "
     "wp-content/upgrade/)"},
    {"agent", "state", CFG_PATH, 0, NULL,
     "where the agent keeps the manifest of the last sync (default: state/ beside this file)"},
    {"agent", "bandwidth_limit", CFG_SIZE, 0, "0", "bytes per second at most (0: no limit)"},
    {"database", "routines", CFG_BOOL, 0, "no", "also sync stored routines and events"},
    {"database", "digest_cache", CFG_BOOL, 0, "yes",
     "skip re-digesting tables whose UPDATE_TIME has not moved (all are re-digested daily)"},
    {"agent", "connect_timeout", CFG_DURATION, 0, "10s", "give up connecting after this long"},
    {"agent", "handshake_timeout", CFG_DURATION, 0, "10s",
     "give up the TLS handshake after this long"},
    {NULL, NULL, 0, 0, NULL, NULL},
};

int agent_load_config(const char *path, cfg_t **ret_cfg)
{
    return cli_load_config(agent_schema, path, ret_cfg);
}
