/* INI configuration files checked against a schema.
 *
 * inih does the tokenising; this file feeds it one line at a time through its own reader (so it
 * always knows the line number, which Debian's inih does not pass to handlers), checks section
 * headers as the reader hands them over, and validates every key = value pair in the handler.
 * The first problem stops the parse and becomes the one-line message of cfg_last_error().
 *
 * Comments must stand on lines of their own (starting with ';' or '#'): inline comments are off,
 * so a '#' or ';' inside a value (a password, a fingerprint) is part of the value.
 */
#include "cfg.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "err.h"
#include "tls.h"

#define CFG_MAX_FILE   (1024 * 1024) /* bytes in a configuration file */
#define CFG_MAX_LINE   4096          /* bytes in one line, newline included */
#define CFG_MAX_VALUES 1024          /* values of one CFG_MULTI key */
#define CFG_SHOW_MAX   80            /* characters of a bad value quoted in a message */

struct cfg_entry {
    char **values;      /* normalised, in file order */
    unsigned *lines;    /* line of each value */
    size_t n;           /* values set in the file */
    const char *def[1]; /* the schema default, for cfg_get_all */
};

struct cfg {
    const cfg_key_t *schema;
    size_t n_keys;
    struct cfg_entry *entries; /* one per schema key, same order */
    char *path;
    char *error;
    bool loaded;
};

/* One parse in progress: the text, the reader's position and the first error. */
struct cfg_parse {
    cfg_t *cfg;
    const char *text;
    size_t len;
    size_t pos;
    unsigned line;   /* number of the line last handed to inih */
    const char *cur; /* that line, not NUL-terminated */
    size_t cur_len;
    int result;
};

static const char *const cfg_expect[] = {
    [CFG_STRING] = "a non-empty value",
    [CFG_PATH] = "an absolute path",
    [CFG_ADDRESS] = "HOST:PORT",
    [CFG_FINGERPRINT] = "a SHA-256 fingerprint (64 hex digits, ':' separators optional)",
    [CFG_UINT] = "a non-negative integer",
    [CFG_BOOL] = "yes or no",
    [CFG_SIZE] = "a size such as 4096, 512K, 64M or 2G",
    [CFG_DURATION] = "a duration such as 30s, 5m, 2h or 1d",
    [CFG_OWNER] = "USER:GROUP",
};

struct cfg_unit {
    const char *name;
    uint64_t factor;
};

static const struct cfg_unit cfg_size_units[] = {
    {"", 1},           {"B", 1},
    {"K", 1ULL << 10}, {"KiB", 1ULL << 10},
    {"M", 1ULL << 20}, {"MiB", 1ULL << 20},
    {"G", 1ULL << 30}, {"GiB", 1ULL << 30},
    {"T", 1ULL << 40}, {"TiB", 1ULL << 40},
    {NULL, 0},
};

static const struct cfg_unit cfg_duration_units[] = {
    {"", 1}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}, {NULL, 0},
};

/* ---- errors ---- */

__attribute__((format(printf, 2, 3))) static void cfg_set_error(cfg_t *cfg, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    free(cfg->error);
    cfg->error = msg;
}

/* Records the first error of a parse, prefixed with "FILE:LINE: ", and returns ERR_CONFIG. */
__attribute__((format(printf, 2, 3))) static int cfg_fail_at(struct cfg_parse *ps, const char *fmt,
                                                             ...)
{
    va_list ap;
    char *msg = NULL;

    if (ps->result < 0)
        return ps->result;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    cfg_set_error(ps->cfg, "%s:%u: %s", ps->cfg->path, ps->line, msg ? msg : "out of memory");
    free(msg);
    ps->result = ERR_CONFIG;
    return ERR_CONFIG;
}

/* Writes s (n bytes) into out as a C-escaped string of at most CFG_SHOW_MAX characters. */
static void cfg_quote(const char *s, size_t n, char *out, size_t out_size)
{
    size_t o = 0;

    assert(out_size > CFG_SHOW_MAX + 8);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o >= CFG_SHOW_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, out_size - o, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

/* Appends the distinct sections (key == NULL) or the keys of a section to b, comma-separated. */
static void cfg_list_names(const cfg_t *cfg, const char *section, buf_t *b)
{
    bool first = true;

    for (size_t i = 0; i < cfg->n_keys; i++) {
        const cfg_key_t *k = &cfg->schema[i];
        const char *name = k->key;
        if (!section) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                seen = !strcmp(cfg->schema[j].section, k->section);
            if (seen)
                continue;
            name = k->section;
        } else if (strcmp(k->section, section) != 0) {
            continue;
        }
        (void)buf_printf(b, "%s%s", first ? "" : ", ", name);
        first = false;
    }
    (void)buf_append(b, "", 1);
}

/* ---- schema look-ups ---- */

static bool cfg_has_section(const cfg_t *cfg, const char *section, size_t len)
{
    for (size_t i = 0; i < cfg->n_keys; i++)
        if (strlen(cfg->schema[i].section) == len && !memcmp(cfg->schema[i].section, section, len))
            return true;
    return false;
}

static const cfg_key_t *cfg_find(const cfg_t *cfg, const char *section, const char *key,
                                 struct cfg_entry **ret_entry)
{
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const cfg_key_t *k = &cfg->schema[i];
        if (!strcmp(k->section, section) && !strcmp(k->key, key)) {
            if (ret_entry)
                *ret_entry = &cfg->entries[i];
            return k;
        }
    }
    return NULL;
}

/* The entry of a key the program asks about; asking for a key not in the schema is a bug. */
static const struct cfg_entry *cfg_lookup(const cfg_t *cfg, const char *section, const char *key,
                                          const cfg_key_t **ret_key)
{
    struct cfg_entry *e = NULL;
    const cfg_key_t *k = cfg_find(cfg, section, key, &e);

    assert(k && "key not in the schema");
    if (ret_key)
        *ret_key = k;
    return e;
}

/* ---- value syntax ---- */

static int cfg_parse_u64(const char *s, uint64_t *ret, const char **ret_end)
{
    uint64_t v = 0;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return ERR_CONFIG;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return ERR_CONFIG;
        v = v * 10 + d;
    }
    *ret = v;
    *ret_end = p;
    return 0;
}

static int cfg_parse_uint(const char *s, uint64_t *ret)
{
    const char *end;
    uint64_t v;

    if (cfg_parse_u64(s, &v, &end) < 0 || *end)
        return ERR_CONFIG;
    *ret = v;
    return 0;
}

/* A number followed by optional blanks and one of the units (matched case-insensitively). */
static int cfg_parse_with_unit(const char *s, const struct cfg_unit *units, uint64_t *ret)
{
    const char *end;
    uint64_t v;

    if (cfg_parse_u64(s, &v, &end) < 0)
        return ERR_CONFIG;
    while (*end == ' ' || *end == '\t')
        end++;
    for (const struct cfg_unit *u = units; u->name; u++) {
        if (strcasecmp(end, u->name) != 0)
            continue;
        if (v > UINT64_MAX / u->factor)
            return ERR_CONFIG;
        *ret = v * u->factor;
        return 0;
    }
    return ERR_CONFIG;
}

static int cfg_parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!strcasecmp(s, yes[i])) {
            *ret = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *ret = false;
            return 0;
        }
    }
    return ERR_CONFIG;
}

/* A user or group name as useradd accepts it, or a numeric id. */
static bool cfg_valid_account(const char *s, size_t len)
{
    if (len == 0 || len > 64 || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.' && !(c == '$' && i == len - 1))
            return false;
    }
    return true;
}

static int cfg_parse_owner(const char *s)
{
    const char *colon = strchr(s, ':');

    if (!colon || strchr(colon + 1, ':'))
        return ERR_CONFIG;
    if (!cfg_valid_account(s, (size_t)(colon - s)) ||
        !cfg_valid_account(colon + 1, strlen(colon + 1)))
        return ERR_CONFIG;
    return 0;
}

static bool cfg_valid_hostname(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '.' && c != '_')
            return false;
    }
    return true;
}

/* An IPv6 address, optionally with a %zone (letters, digits, '.', '-', '_'). */
static bool cfg_valid_ipv6(const char *s, size_t len)
{
    char tmp[INET6_ADDRSTRLEN];
    unsigned char addr[16];
    const char *zone = memchr(s, '%', len);
    size_t alen = zone ? (size_t)(zone - s) : len;

    if (alen == 0 || alen >= sizeof(tmp))
        return false;
    if (zone && !cfg_valid_hostname(zone + 1, len - alen - 1))
        return false;
    memcpy(tmp, s, alen);
    tmp[alen] = '\0';
    return inet_pton(AF_INET6, tmp, addr) == 1;
}

static int cfg_parse_port(const char *s, uint16_t *ret)
{
    uint64_t v;

    if (strlen(s) > 5 || cfg_parse_uint(s, &v) < 0 || v > 65535)
        return ERR_CONFIG;
    *ret = (uint16_t)v;
    return 0;
}

int cfg_parse_address(const char *text, char *ret_host, size_t host_size, uint16_t *ret_port)
{
    const char *host = text, *colon;
    size_t len;
    uint16_t port;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return ERR_CONFIG;
        host = text + 1;
        len = (size_t)(close - host);
        colon = close + 1;
        if (!cfg_valid_ipv6(host, len))
            return ERR_CONFIG;
    } else {
        colon = strchr(text, ':');
        if (!colon || strchr(colon + 1, ':'))
            return ERR_CONFIG; /* no port, or an IPv6 address without brackets */
        len = (size_t)(colon - text);
        if (!cfg_valid_hostname(host, len))
            return ERR_CONFIG;
    }
    if (cfg_parse_port(colon + 1, &port) < 0 || len >= host_size)
        return ERR_CONFIG;
    memcpy(ret_host, host, len);
    ret_host[len] = '\0';
    *ret_port = port;
    return 0;
}

/* Checks a value against its key's type; returns 0 and a malloc'ed normalised copy. */
static int cfg_normalise(const cfg_key_t *k, const char *value, char **ret)
{
    char fp[TLS_FP_LEN], host[256];
    uint64_t u;
    uint16_t port;
    bool b;
    int r = 0;

    switch (k->type) {
    case CFG_STRING:
        break;
    case CFG_PATH:
        r = value[0] == '/' ? 0 : ERR_CONFIG;
        break;
    case CFG_ADDRESS:
        r = cfg_parse_address(value, host, sizeof(host), &port);
        break;
    case CFG_FINGERPRINT:
        r = tls_fingerprint_parse(value, fp);
        value = fp;
        break;
    case CFG_UINT:
        r = cfg_parse_uint(value, &u);
        break;
    case CFG_BOOL:
        r = cfg_parse_bool(value, &b);
        break;
    case CFG_SIZE:
        r = cfg_parse_with_unit(value, cfg_size_units, &u);
        break;
    case CFG_DURATION:
        r = cfg_parse_with_unit(value, cfg_duration_units, &u);
        break;
    case CFG_OWNER:
        r = cfg_parse_owner(value);
        break;
    default:
        assert(!"unknown cfg_type");
        r = ERR_CONFIG;
    }
    if (r < 0)
        return ERR_CONFIG;
    *ret = strdup(value);
    return *ret ? 0 : UV_ENOMEM;
}

/* ---- the parse ---- */

static int cfg_append(struct cfg_entry *e, char *value, unsigned line)
{
    char **values = realloc(e->values, (e->n + 1) * sizeof(*values));
    if (!values)
        return UV_ENOMEM;
    e->values = values;
    unsigned *lines = realloc(e->lines, (e->n + 1) * sizeof(*lines));
    if (!lines)
        return UV_ENOMEM;
    e->lines = lines;
    e->values[e->n] = value;
    e->lines[e->n] = line;
    e->n++;
    return 0;
}

static int cfg_unknown_key(struct cfg_parse *ps, const char *section, const char *key)
{
    buf_t names = BUF_INIT;
    int r;

    cfg_list_names(ps->cfg, section, &names);
    r = cfg_fail_at(ps, "unknown key '%s' in [%s]; known keys: %s", key, section,
                    names.len ? (const char *)buf_data(&names) : "");
    buf_free(&names);
    return r;
}

static int cfg_add(struct cfg_parse *ps, const char *section, const char *key, const char *value)
{
    struct cfg_entry *e = NULL;
    const cfg_key_t *k;
    char shown[CFG_SHOW_MAX + 16];
    char *norm;
    int r;

    if (!*section)
        return cfg_fail_at(ps, "key '%s' comes before any [section]", key);
    k = cfg_find(ps->cfg, section, key, &e);
    if (!k)
        return cfg_unknown_key(ps, section, key);
    if (e->n > 0 && !(k->flags & CFG_MULTI))
        return cfg_fail_at(ps, "[%s] %s: set again (first on line %u); only one value is allowed",
                           section, key, e->lines[0]);
    if (e->n >= CFG_MAX_VALUES)
        return cfg_fail_at(ps, "[%s] %s: more than %d values", section, key, CFG_MAX_VALUES);
    if (!*value)
        return cfg_fail_at(ps, "[%s] %s: no value; expected %s", section, key, cfg_expect[k->type]);
    r = cfg_normalise(k, value, &norm);
    if (r == ERR_CONFIG) {
        cfg_quote(value, strlen(value), shown, sizeof(shown));
        return cfg_fail_at(ps, "[%s] %s: expected %s, got \"%s\"", section, key,
                           cfg_expect[k->type], shown);
    }
    if (r == 0) {
        r = cfg_append(e, norm, ps->line);
        if (r < 0)
            free(norm);
    }
    if (r < 0)
        ps->result = r;
    return r;
}

static int cfg_on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *ps = user;
    return cfg_add(ps, section, name, value) < 0 ? 0 : 1;
}

/* Rejects a "[section]" line for a section the schema does not know, as the reader hands it out
 * (inih only reports sections through their keys). Mirrors inih: blanks are skipped, a BOM is
 * skipped on line 1, ';' or '#' starts a comment, the name is what lies between '[' and ']'. */
static int cfg_check_header(struct cfg_parse *ps, const char *line)
{
    const char *p = line, *close;
    buf_t names = BUF_INIT;
    char shown[CFG_SHOW_MAX + 16];
    int r;

    if (ps->line == 1 && !strncmp(p, "\xEF\xBB\xBF", 3))
        p += 3;
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '[')
        return 0;
    close = strchr(p, ']');
    if (!close)
        return cfg_fail_at(ps, "section header lacks its closing ']'");
    if (cfg_has_section(ps->cfg, p + 1, (size_t)(close - p - 1)))
        return 0;
    cfg_quote(p + 1, (size_t)(close - p - 1), shown, sizeof(shown));
    cfg_list_names(ps->cfg, NULL, &names);
    r = cfg_fail_at(ps, "unknown section [%s]; known sections: %s", shown,
                    names.len ? (const char *)buf_data(&names) : "");
    buf_free(&names);
    return r;
}

/* inih's fgets-like reader: hands out exactly one line per call and counts them. */
static char *cfg_read_line(char *str, int num, void *stream)
{
    struct cfg_parse *ps = stream;
    const char *start, *nl;
    size_t n;

    if (ps->result < 0 || ps->pos >= ps->len)
        return NULL;
    start = ps->text + ps->pos;
    nl = memchr(start, '\n', ps->len - ps->pos);
    n = nl ? (size_t)(nl - start) + 1 : ps->len - ps->pos;
    ps->pos += n;
    ps->line++;
    ps->cur = start;
    ps->cur_len = n;
    if (num < 2 || n > (size_t)num - 1) {
        cfg_fail_at(ps, "line longer than %d bytes", num - 1);
        return NULL;
    }
    memcpy(str, start, n);
    str[n] = '\0';
    if (cfg_check_header(ps, str) < 0)
        return NULL;
    return str;
}

/* inih's settings are process-wide globals in Debian's build: set them before every parse. */
static void cfg_setup_inih(void)
{
    static char comment_prefixes[] = ";#";
    static char inline_prefixes[] = "";

    ini_allow_multiline = false;
    ini_allow_bom = true;
    ini_start_comment_prefixes = comment_prefixes;
    ini_allow_inline_comments = false;
    ini_inline_comment_prefixes = inline_prefixes;
    ini_use_stack = true;
    ini_max_line = CFG_MAX_LINE + 1;
    ini_stop_on_first_error = true;
    ini_allow_no_value = false;
}

static int cfg_syntax_error(struct cfg_parse *ps, int line)
{
    char shown[CFG_SHOW_MAX + 16];
    size_t n = ps->cur_len;

    if ((unsigned)line != ps->line)
        return cfg_fail_at(ps, "syntax error on line %d", line);
    while (n > 0 && (ps->cur[n - 1] == '\n' || ps->cur[n - 1] == '\r'))
        n--;
    cfg_quote(ps->cur, n, shown, sizeof(shown));
    return cfg_fail_at(ps, "expected \"key = value\", \"[section]\" or a comment, got \"%s\"",
                       shown);
}

static int cfg_check_required(cfg_t *cfg)
{
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const cfg_key_t *k = &cfg->schema[i];
        if ((k->flags & CFG_REQUIRED) && cfg->entries[i].n == 0) {
            cfg_set_error(cfg, "%s: [%s] %s is required (%s)", cfg->path, k->section, k->key,
                          k->help ? k->help : "no default");
            return ERR_CONFIG;
        }
    }
    return 0;
}

static int cfg_parse_text(cfg_t *cfg, const char *text, size_t len)
{
    struct cfg_parse ps = {.cfg = cfg, .text = text, .len = len};
    const char *nul = memchr(text, '\0', len);
    int rc;

    if (nul) {
        for (const char *p = text; p <= nul; p++)
            ps.line += p == text || p[-1] == '\n';
        return cfg_fail_at(&ps, "contains a NUL byte; not a text file");
    }
    cfg_setup_inih();
    rc = ini_parse_stream(cfg_read_line, &ps, cfg_on_pair, &ps);
    if (ps.result == UV_ENOMEM || rc == -2) {
        cfg_set_error(cfg, "%s: out of memory", cfg->path);
        return UV_ENOMEM;
    }
    if (ps.result < 0)
        return ps.result;
    if (rc != 0)
        return cfg_syntax_error(&ps, rc);
    return cfg_check_required(cfg);
}

static int cfg_begin(cfg_t *cfg, const char *path)
{
    assert(!cfg->loaded && "cfg_load may be called once per cfg_t");
    cfg->loaded = true;
    free(cfg->error);
    cfg->error = NULL;
    cfg->path = strdup(path);
    return cfg->path ? 0 : UV_ENOMEM;
}

/* Reads a whole file of at most CFG_MAX_FILE bytes into a malloc'ed buffer. */
static int cfg_read_file(const char *path, char **ret_text, size_t *ret_len)
{
    size_t len = 0, cap = 4096;
    char *text = NULL;
    int fd, r = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (;;) {
        if (len == cap || !text) {
            cap = text ? cap * 2 : cap;
            char *t = realloc(text, cap);
            if (!t) {
                r = UV_ENOMEM;
                break;
            }
            text = t;
        }
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > CFG_MAX_FILE) {
            r = UV_EFBIG;
            break;
        }
    }
    close(fd);
    if (r < 0) {
        free(text);
        return r;
    }
    *ret_text = text;
    *ret_len = len;
    return 0;
}

cfg_t *cfg_new(const cfg_key_t *schema)
{
    cfg_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    cfg->schema = schema;
    while (schema[cfg->n_keys].key)
        cfg->n_keys++;
    cfg->entries = calloc(cfg->n_keys + 1, sizeof(*cfg->entries));
    if (!cfg->entries) {
        free(cfg);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_keys; i++)
        cfg->entries[i].def[0] = schema[i].default_value;
    return cfg;
}

void cfg_free(cfg_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        for (size_t j = 0; j < cfg->entries[i].n; j++)
            free(cfg->entries[i].values[j]);
        free(cfg->entries[i].values);
        free(cfg->entries[i].lines);
    }
    free(cfg->entries);
    free(cfg->path);
    free(cfg->error);
    free(cfg);
}

int cfg_load(cfg_t *cfg, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    int r = cfg_begin(cfg, path);

    if (r < 0)
        return r;
    r = cfg_read_file(path, &text, &len);
    if (r == UV_EFBIG) {
        cfg_set_error(cfg, "%s: larger than %d bytes; not a configuration file", path,
                      CFG_MAX_FILE);
        return ERR_CONFIG;
    }
    if (r < 0) {
        cfg_set_error(cfg, "%s: cannot read: %s", path, uv_strerror(r));
        return r;
    }
    r = cfg_parse_text(cfg, text, len);
    free(text);
    return r;
}

int cfg_load_string(cfg_t *cfg, const char *path, const char *text)
{
    int r = cfg_begin(cfg, path);
    if (r < 0)
        return r;
    return cfg_parse_text(cfg, text, strlen(text));
}

const char *cfg_last_error(const cfg_t *cfg)
{
    return cfg->error ? cfg->error : "";
}

/* ---- accessors ---- */

const char *cfg_get(const cfg_t *cfg, const char *section, const char *key)
{
    const cfg_key_t *k;
    const struct cfg_entry *e = cfg_lookup(cfg, section, key, &k);

    if (!e)
        return NULL;
    return e->n ? e->values[0] : k->default_value;
}

size_t cfg_get_all(const cfg_t *cfg, const char *section, const char *key,
                   const char *const **ret_values)
{
    const struct cfg_entry *e = cfg_lookup(cfg, section, key, NULL);

    if (!e)
        return 0;
    if (e->n) {
        *ret_values = (const char *const *)e->values;
        return e->n;
    }
    if (!e->def[0])
        return 0;
    *ret_values = e->def;
    return 1;
}

uint64_t cfg_get_uint(const cfg_t *cfg, const char *section, const char *key, uint64_t def)
{
    const char *v = cfg_get(cfg, section, key);
    uint64_t u;
    return v && cfg_parse_uint(v, &u) == 0 ? u : def;
}

bool cfg_get_bool(const cfg_t *cfg, const char *section, const char *key, bool def)
{
    const char *v = cfg_get(cfg, section, key);
    bool b;
    return v && cfg_parse_bool(v, &b) == 0 ? b : def;
}

uint64_t cfg_get_size(const cfg_t *cfg, const char *section, const char *key, uint64_t def)
{
    const char *v = cfg_get(cfg, section, key);
    uint64_t u;
    return v && cfg_parse_with_unit(v, cfg_size_units, &u) == 0 ? u : def;
}

uint64_t cfg_get_duration(const cfg_t *cfg, const char *section, const char *key, uint64_t def)
{
    const char *v = cfg_get(cfg, section, key);
    uint64_t u;
    return v && cfg_parse_with_unit(v, cfg_duration_units, &u) == 0 ? u : def;
}

unsigned cfg_line(const cfg_t *cfg, const char *section, const char *key)
{
    const struct cfg_entry *e = cfg_lookup(cfg, section, key, NULL);
    return e && e->n ? e->lines[0] : 0;
}

const char *cfg_path(const cfg_t *cfg)
{
    return cfg->path;
}

/* ---- secret files ---- */

/* Writes path into out, single-quoted for a shell if it holds anything unusual. */
static void cfg_shell_quote(const char *path, char *out, size_t size)
{
    size_t o = 0;

    if (strspn(path, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@") ==
        strlen(path)) {
        snprintf(out, size, "%s", path);
        return;
    }
    if (size < 8) {
        out[0] = '\0';
        return;
    }
    out[o++] = '\'';
    for (const char *p = path; *p && o + 6 < size; p++) {
        if (*p == '\'') {
            memcpy(out + o, "'\\''", 4);
            o += 4;
        } else {
            out[o++] = *p;
        }
    }
    out[o++] = '\'';
    out[o] = '\0';
}

static void cfg_describe_access(mode_t mode, char *out, size_t size)
{
    static const struct {
        mode_t bits;
        const char *word;
    } kinds[] = {{044, "readable"}, {022, "writable"}, {011, "executable"}};
    size_t n = 0, total = 0, o = 0;

    for (size_t i = 0; i < 3; i++)
        total += (mode & kinds[i].bits) != 0;
    out[0] = '\0';
    for (size_t i = 0; i < 3; i++) {
        if (!(mode & kinds[i].bits))
            continue;
        const char *sep = n == 0 ? "" : n + 1 == total ? " and " : ", ";
        o += (size_t)snprintf(out + o, o < size ? size - o : 0, "%s%s", sep, kinds[i].word);
        n++;
    }
}

int cfg_check_secret_file(const char *path, char *err, size_t err_size)
{
    struct stat st;
    char quoted[4200], access[48];

    if (stat(path, &st) < 0) {
        int r = -errno;
        snprintf(err, err_size, "%s: %s", path, uv_strerror(r));
        return r;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, err_size, "%s: is a directory, not a key or password file", path);
        return UV_EISDIR;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "%s: not a regular file", path);
        return UV_EINVAL;
    }
    if ((st.st_mode & 077) == 0)
        return 0;
    cfg_shell_quote(path, quoted, sizeof(quoted));
    cfg_describe_access(st.st_mode & 077, access, sizeof(access));
    snprintf(err, err_size, "%s is %s by group or others (mode %04o); run: chmod 600 %s", path,
             access, (unsigned)(st.st_mode & 07777), quoted);
    return ERR_INSECURE_FILE;
}

/* ---- templates ---- */

/* The i-th value given for "section.key" in values, or NULL. */
static const char *cfg_template_value(const char *const *values, const cfg_key_t *k, size_t nth)
{
    size_t slen = strlen(k->section);

    for (size_t i = 0; values && values[i]; i += 2) {
        const char *name = values[i];
        if (!strncmp(name, k->section, slen) && name[slen] == '.' &&
            !strcmp(name + slen + 1, k->key) && nth-- == 0)
            return values[i + 1];
    }
    return NULL;
}

/* Values must name schema keys and survive the round trip through inih (one line, no blanks
 * at either end). */
static int cfg_template_check(const cfg_key_t *schema, const char *const *values)
{
    for (size_t i = 0; values && values[i]; i += 2) {
        const char *v = values[i + 1], *dot = strchr(values[i], '.');
        bool found = false;
        if (!v || !dot || !*v || strpbrk(v, "\r\n") || isspace((unsigned char)v[0]) ||
            isspace((unsigned char)v[strlen(v) - 1]))
            return UV_EINVAL;
        for (const cfg_key_t *k = schema; k->key && !found; k++)
            found = strlen(k->section) == (size_t)(dot - values[i]) &&
                    !strncmp(k->section, values[i], (size_t)(dot - values[i])) &&
                    !strcmp(k->key, dot + 1);
        if (!found)
            return UV_EINVAL;
    }
    return 0;
}

static void cfg_template_header(FILE *f, const char *header)
{
    const char *p = header;

    while (p && *p) {
        size_t n = strcspn(p, "\n");
        fprintf(f, n ? "# %.*s\n" : "#%.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
    if (header && *header)
        fputs("#\n", f);
    fputs("# Comments go on lines of their own: a '#' or ';' after a value is part of the value.\n",
          f);
}

/* A key with values is written as set; one without is commented out (with its default, if any),
 * so a required key left to fill in fails as missing, and appending "key = value" under a
 * repeated [section] header also works. */
static void cfg_template_key(FILE *f, const cfg_key_t *k, const char *const *values)
{
    const char *v = cfg_template_value(values, k, 0);
    bool required = k->flags & CFG_REQUIRED;

    fprintf(f, "\n# %s%s\n", k->help ? k->help : k->key, required ? " (required)" : "");
    for (size_t i = 1; v; v = cfg_template_value(values, k, i++))
        fprintf(f, "%s = %s\n", k->key, v);
    if (!cfg_template_value(values, k, 0))
        fprintf(f, "#%s =%s%s\n", k->key, k->default_value ? " " : "",
                k->default_value ? k->default_value : "");
}

static void cfg_template_body(FILE *f, const cfg_key_t *schema, const char *header,
                              const char *const *values)
{
    cfg_template_header(f, header);
    for (const cfg_key_t *s = schema; s->key; s++) {
        bool seen = false;
        for (const cfg_key_t *p = schema; p < s && !seen; p++)
            seen = !strcmp(p->section, s->section);
        if (seen)
            continue;
        fprintf(f, "\n[%s]\n", s->section);
        for (const cfg_key_t *k = s; k->key; k++)
            if (!strcmp(k->section, s->section))
                cfg_template_key(f, k, values);
    }
}

int cfg_write_template(const cfg_key_t *schema, const char *path, const char *header,
                       const char *const *values)
{
    char *tmp = NULL;
    FILE *f = NULL;
    int fd, r;

    r = cfg_template_check(schema, values);
    if (r < 0)
        return r;
    if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
        return UV_ENOMEM;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        free(tmp);
        return r;
    }
    if (fchmod(fd, 0644) < 0 || !(f = fdopen(fd, "w"))) {
        r = -errno;
        close(fd);
        goto fail;
    }
    cfg_template_body(f, schema, header, values);
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) < 0) {
        r = errno ? -errno : UV_EIO;
        fclose(f);
        goto fail;
    }
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    free(tmp);
    return 0;

fail:
    unlink(tmp);
    free(tmp);
    return r;
}

char *cfg_read_secret(const char *path, char *err, size_t err_size)
{
    char buf[1024];
    if (cfg_check_secret_file(path, err, err_size) < 0)
        return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        snprintf(err, err_size, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}
