#include "controller.h"
int cmd_firewall(int argc, char **argv) { return 0; }
