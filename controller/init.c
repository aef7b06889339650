#include "controller.h"
int cmd_init(int argc, char **argv) { return 0; }
