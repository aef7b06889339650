#include "err.h"

#include <string.h>
#include <uv.h>

struct err_entry {
    const char *name;
    int exit_code;
    const char *msg;
};

static const struct err_entry err_table[] = {
#define ERR_ROW_(name, exit_code, msg) {"ERR_" #name, exit_code, msg},
    ERR_MAP(ERR_ROW_)
#undef ERR_ROW_
};

static const struct err_entry *err_lookup(int code)
{
    if (code <= ERR_FIRST_ || code >= ERR_LAST_)
        return NULL;
    return &err_table[code - ERR_FIRST_ - 1];
}

/* libuv's uv_err_name()/uv_strerror() return a fresh malloc'd string for a code they do not
 * know, which nobody frees: ask only about the codes libuv lists. */
static int uv_knows(int code)
{
    switch (code) {
#define UV_KNOWN_(name, msg) case UV_##name:
        UV_ERRNO_MAP(UV_KNOWN_)
#undef UV_KNOWN_
        return 1;
    default:
        return 0;
    }
}

const char *err_name(int code)
{
    const struct err_entry *e = err_lookup(code);
    if (e)
        return e->name;
    if (code >= 0)
        return "OK";
    if (!uv_knows(code))
        return "EUNKNOWN";
    return uv_err_name(code);
}

const char *err_str(int code)
{
    const struct err_entry *e = err_lookup(code);
    if (e)
        return e->msg;
    if (code >= 0)
        return "success";
    if (!uv_knows(code))
        return "unknown error";
    return uv_strerror(code);
}

int err_exit_code(int code)
{
    const struct err_entry *e = err_lookup(code);
    if (e)
        return e->exit_code;
    return code >= 0 ? 0 : 1;
}
