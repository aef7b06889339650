/* libFuzzer target: arbitrary bytes as access-log lines (split at newlines), matched against the
 * combined format and a custom format with $http_cf_connecting_ip and $time_iso8601, with the
 * built-in Cloudflare ranges trusted; and as $time_local text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static accesslog_t *make(const char *format)
{
    static const char *const ignore[] = {"POST /wp-json/x/", "* /healthz"};
    fw_spec_t spec;
    accesslog_t *al = NULL;
    char err[256];
    fw_spec_init(&spec);
    fw_spec_add_builtin_ranges(&spec);
    al_opts_t o = {.format = format, .ignore = ignore, .n_ignore = 2, .trusted = &spec.cloudflare};
    if (accesslog_new(&o, &al, err, sizeof(err)) < 0)
        abort();
    fw_spec_free(&spec);
    return al;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static accesslog_t *combined, *custom;
    const char *p = (const char *)data, *end = p + size;
    al_hit_t hit;
    time_t t;

    if (!combined) {
        combined = make(NULL);
        custom = make("$remote_addr $http_cf_connecting_ip [$time_iso8601] \"$request\" $status "
                      "\"$http_user_agent\"");
    }
    accesslog_parse_time_local(p, size, &t);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (accesslog_match_line(combined, p, len, "f", &hit) == 1 &&
            strlen(hit.line) >= sizeof(hit.line))
            abort();
        accesslog_match_line(custom, p, len, "f", &hit);
        p += len + 1;
    }
    return 0;
}
