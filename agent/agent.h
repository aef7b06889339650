/* understudy-agent: commands and the pieces they share. */
#ifndef UNDERSTUDY_AGENT_H
#define UNDERSTUDY_AGENT_H

#include "cfg.h"

/* The agent's configuration schema (agent.conf). */
extern const cfg_key_t agent_schema[];

/* Loads and validates agent.conf; on failure logs one line and returns the error. */
int agent_load_config(const char *path, cfg_t **ret_cfg);

int cmd_init(int argc, char **argv);
int cmd_check(int argc, char **argv);

#endif
