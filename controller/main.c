/* understudy-controller: runs on the backup, receives syncs and switches generations. */
#include "cli.h"
#include "controller.h"

static const cli_cmd_t commands[] = {
    {"init", cmd_init, "create this host's key, certificate and a config template"},
    {"serve", cmd_serve, "accept syncs from agents (foreground; logs to stderr)"},
    {"firewall", cmd_firewall, "print, check or apply the backup's firewall ruleset"},
    {"rollback", cmd_rollback, "switch the site back to an earlier generation"},
    {"generations", cmd_generations, "list the kept generations (* marks the live one)"},
    {"dumps", cmd_dumps, "list the retained database dumps"},
    {"status", cmd_status, "is the backup current, how stale, is it fenced and why"},
    {"export-local-changes", cmd_export_local_changes,
     "write what was changed on the backup as SQL and files for the primary"},
    {"resolve", cmd_resolve, "save the diverged backup, then let syncs apply again"},
    {"trust", cmd_trust, "add a peer fingerprint to the config"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    return cli_main(
        "understudy-controller",
        "Receives a WordPress site from understudy agents and serves it as a warm standby.",
        "understudy-controller(8)", commands, argc, argv);
}
