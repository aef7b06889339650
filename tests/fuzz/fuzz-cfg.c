/* libFuzzer target: arbitrary bytes as agent.conf, through cfg_load_string with the agent's
 * schema, then every accessor the agent uses. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "cfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    cfg_t *cfg = cfg_new(agent_schema);

    if (!text || !cfg) {
        free(text);
        cfg_free(cfg);
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    if (cfg_load_string(cfg, "/fuzz/agent.conf", text) == 0) {
        const char *const *pins;
        size_t n = cfg_get_all(cfg, "controller", "fingerprint", &pins);
        for (size_t i = 0; i < n; i++)
            if (strlen(pins[i]) != 95)
                abort(); /* normalised fingerprints have one fixed length */
        char host[256];
        uint16_t port;
        if (cfg_parse_address(cfg_get(cfg, "controller", "address"), host, sizeof(host), &port) !=
            0)
            abort(); /* a validated address must parse again */
        (void)cfg_get_duration(cfg, "agent", "connect_timeout", 0);
        (void)cfg_line(cfg, "site", "root");
    } else if (!cfg_last_error(cfg)[0]) {
        abort(); /* every failure explains itself */
    }
    cfg_free(cfg);
    free(text);
    return 0;
}
