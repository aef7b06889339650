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
int cmd_cron(int argc, char **argv);
int cmd_sync(int argc, char **argv);
int cmd_trust(int argc, char **argv);

/* Drops this process to nice 19 and the idle I/O class, so a scheduled sync or check yields to
 * the web server; failures are only logged at debug level. Call once at the start of a command. */
void agent_lower_priority(void);

#endif
