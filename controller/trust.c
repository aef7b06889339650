/* understudy-controller trust: adds an agent's fingerprint to controller.conf. */
#include "cli.h"
#include "controller.h"

int cmd_trust(int argc, char **argv)
{
    static const cli_trust_t t = {
        "understudy-controller", "agent", "understudy-agent",
        "The controller reads its configuration when it starts: restart it afterwards."};
    return cli_trust(&t, argc, argv);
}
