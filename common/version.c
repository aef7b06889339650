#include "version.h"

#include <stdlib.h>

unsigned proto_version(void)
{
    const char *v = getenv("UNDERSTUDY_TEST_PROTOCOL_VERSION");
    if (v && *v)
        return (unsigned)strtoul(v, NULL, 10);
    return UNDERSTUDY_PROTOCOL_VERSION;
}
