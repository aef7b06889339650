/* INI configuration files (inih underneath), checked against a schema.
 *
 * Each program declares the keys it understands in a cfg_key_t table ending with {NULL}. Loading
 * rejects unknown sections and keys, values that do not parse as the key's type, repeated
 * single-valued keys and missing required keys, with one line naming the file, the line, the key
 * and what is expected, e.g.
 *   /etc/understudy/agent.conf:7: [controller] address: expected HOST:PORT, got "example.org"
 * Defaults from the schema apply to keys that are absent.
 *
 * Comments are whole lines starting with ';' or '#'. There are no inline comments: a '#' or ';'
 * after a value is part of the value (passwords, fingerprints). Values are taken verbatim with
 * the blanks around them removed; there is no quoting and no line continuation.
 */
#ifndef UNDERSTUDY_CFG_H
#define UNDERSTUDY_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum cfg_type {
    CFG_STRING,      /* any non-empty text */
    CFG_PATH,        /* an absolute path */
    CFG_ADDRESS,     /* HOST:PORT, [IPv6]:PORT; port 0..65535 */
    CFG_FINGERPRINT, /* a certificate SHA-256 fingerprint (tls_fingerprint_parse), normalised */
    CFG_UINT,        /* a non-negative integer */
    CFG_BOOL,        /* yes/no, true/false, on/off, 1/0 */
    CFG_SIZE,        /* bytes with optional K, M, G, T suffix (powers of 1024; also KiB...) */
    CFG_DURATION,    /* seconds with optional s, m, h, d suffix */
    CFG_OWNER,       /* USER:GROUP */
} cfg_type_t;

enum {
    CFG_REQUIRED = 1 << 0, /* must be present (no default) */
    CFG_MULTI = 1 << 1,    /* may be repeated; values kept in file order */
};

typedef struct cfg_key {
    const char *section;
    const char *key;
    cfg_type_t type;
    unsigned flags;
    const char *default_value; /* NULL: none */
    const char *help;          /* one line, for templates and docs */
} cfg_key_t;

typedef struct cfg cfg_t;

/* Creates an empty configuration for a schema (which must outlive it). */
cfg_t *cfg_new(const cfg_key_t *schema);
void cfg_free(cfg_t *cfg);

/* Parses a file. Returns 0, ERR_CONFIG (bad content) or a negative errno (cannot open); the
 * one-line explanation is then in cfg_last_error(). May be called once per cfg_t. Files are
 * limited to 1 MiB and lines to 4096 bytes. Sets inih's process-wide options before parsing, so
 * do not load configurations from several threads at once. */
int cfg_load(cfg_t *cfg, const char *path);

/* Parses text as if it were the file named path (for tests). */
int cfg_load_string(cfg_t *cfg, const char *path, const char *text);

const char *cfg_last_error(const cfg_t *cfg);

/* The value of a key (normalised for CFG_FINGERPRINT), its default when absent, or NULL. For
 * CFG_MULTI keys, the first value. */
const char *cfg_get(const cfg_t *cfg, const char *section, const char *key);

/* All values of a CFG_MULTI key, in file order; returns their count and sets *ret_values (owned
 * by cfg). */
size_t cfg_get_all(const cfg_t *cfg, const char *section, const char *key,
                   const char *const **ret_values);

/* Typed accessors for values already validated by cfg_load; they return def when absent. */
uint64_t cfg_get_uint(const cfg_t *cfg, const char *section, const char *key, uint64_t def);
bool cfg_get_bool(const cfg_t *cfg, const char *section, const char *key, bool def);
uint64_t cfg_get_size(const cfg_t *cfg, const char *section, const char *key, uint64_t def);
uint64_t cfg_get_duration(const cfg_t *cfg, const char *section, const char *key, uint64_t def);

/* The line a key was set on, or 0 if it came from a default. */
unsigned cfg_line(const cfg_t *cfg, const char *section, const char *key);

/* The path the configuration was loaded from. */
const char *cfg_path(const cfg_t *cfg);

/* Splits "HOST:PORT" or "[V6]:PORT" into host (brackets removed) and port. Returns 0 or
 * ERR_CONFIG. */
int cfg_parse_address(const char *text, char *ret_host, size_t host_size, uint16_t *ret_port);

/* Checks that a secret file (private key, password file) exists and is not readable, writable
 * or executable by group or others. Returns 0, ERR_INSECURE_FILE or a negative errno; on failure
 * writes a one-line explanation with the chmod to run into err (e.g. "... run: chmod 600 PATH"). */
int cfg_check_secret_file(const char *path, char *err, size_t err_size);

/* Reads a secret file (a password) after cfg_check_secret_file: its content up to the first
 * line end, malloc'ed (caller frees). Returns NULL with a one-line reason in err. */
char *cfg_read_secret(const char *path, char *err, size_t err_size);

/* Writes a commented template for the schema: every key with its help line, defaults and
 * required keys, with values from `values` (pairs "section.key", value, NULL-terminated) filled
 * in. header (may be NULL) becomes '#' comment lines at the top. Keys without a value are
 * commented out, showing their default if any (a required one then fails to load as missing
 * until it is set, in place or appended under its [section] header). Writes a
 * temporary file renamed over path, mode 0644 (templates hold no secrets). Returns 0, UV_EINVAL
 * when values name a key not in the schema or hold a value that cannot round-trip (empty,
 * multi-line, blanks at either end), or a negative errno. */
int cfg_write_template(const cfg_key_t *schema, const char *path, const char *header,
                       const char *const *values);

#endif
