/* understudy-controller: runs on the backup, receives syncs and switches generations. */
#include <malloc.h>

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
    /* Two malloc arenas, not glibc's eight per CPU: the big allocations (the live content
     * table, about 11 MB at 50,000 files) are made by short-lived threads (the background job,
     * a sync's workers) and freed by others, and every new arena kept its own freed copy:
     * 70 MB resident after a few syncs of a 50,000-file site instead of 35 MB. */
    mallopt(M_ARENA_MAX, 2);
    return cli_main(
        "understudy-controller",
        "Receives a WordPress site from understudy agents and serves it as a warm standby.",
        "understudy-controller(8)", commands, argc, argv);
}
