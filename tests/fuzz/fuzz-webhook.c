/* libFuzzer target: arbitrary bytes as a failover webhook body, through webhook_parse_note (the
 * strict JSON scanner) with and without pool filtering, and the secret comparison. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const pools[] = {"primary", "origin-a"};
    webhook_note_t note;

    if (webhook_parse_note((const char *)data, size, NULL, 0, &note) == 0) {
        if (strlen(note.detail) >= sizeof(note.detail) || !note.relevant)
            abort();
        for (const char *p = note.detail; *p; p++)
            if ((unsigned char)*p < 0x20)
                abort(); /* the detail is one line */
    }
    webhook_parse_note((const char *)data, size, pools, 2, &note);
    webhook_secret_equal("0123456789abcdef", (const char *)data, size);
    return 0;
}
