/* libFuzzer target: arbitrary bytes as wp-config.php, through wpconfig_parse. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "wpconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wpconfig_t c = {0};
    char err[512];
    int r = wpconfig_parse((const char *)data, size, &c, err, sizeof(err));

    if (r == 0) {
        /* Success means every needed value is there. */
        if (!c.db_name || !c.db_user || !c.db_password || !c.db_host || !c.table_prefix)
            abort();
    } else if (r != ERR_WPCONFIG || !err[0]) {
        abort();
    }
    wpconfig_clear(&c);
    return 0;
}
