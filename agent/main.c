/* understudy-agent: runs on the WordPress primary, unprivileged, from cron. */
#include "cli.h"
#include "agent.h"

static const cli_cmd_t commands[] = {
    {"init", cmd_init, "create this host's key, certificate and a config template"},
    {"sync", cmd_sync, "send what changed to the controller (run from cron)"},
    {"check", cmd_check, "connect to the controller and the database and report"},
    {"cron", cmd_cron, "print the crontab line that runs the agent"},
    {"trust", cmd_trust, "add a peer fingerprint to the config"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    return cli_main("understudy-agent",
                    "Keeps a warm standby of this WordPress site on an understudy controller.",
                    "understudy-agent(1)", commands, argc, argv);
}
