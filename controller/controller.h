/* understudy-controller: commands and the pieces they share. */
#ifndef UNDERSTUDY_CONTROLLER_H
#define UNDERSTUDY_CONTROLLER_H

#include "cfg.h"

/* The controller's configuration schema (controller.conf). */
extern const cfg_key_t controller_schema[];

/* Loads and validates controller.conf; on failure logs one line and returns the error. */
int controller_load_config(const char *path, cfg_t **ret_cfg);

int cmd_init(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_firewall(int argc, char **argv);
int cmd_dumps(int argc, char **argv);
int cmd_trust(int argc, char **argv);
int cmd_rollback(int argc, char **argv);
int cmd_generations(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_resolve(int argc, char **argv);
int cmd_export_local_changes(int argc, char **argv);

#endif
