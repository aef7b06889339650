/* understudy-agent trust: adds the controller's fingerprint to agent.conf. */
#include "agent.h"
#include "cli.h"

int cmd_trust(int argc, char **argv)
{
    static const cli_trust_t t = {"understudy-agent", "controller", "understudy-controller", ""};
    return cli_trust(&t, argc, argv);
}
