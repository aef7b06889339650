/* Program and protocol versions. */
#ifndef UNDERSTUDY_VERSION_H
#define UNDERSTUDY_VERSION_H

#include "config.h"

/* The protocol version this program speaks: UNDERSTUDY_PROTOCOL_VERSION, unless the test-only
 * environment variable UNDERSTUDY_TEST_PROTOCOL_VERSION overrides it (used by the integration
 * test of the version-mismatch error; documented there). */
unsigned proto_version(void);

#endif
