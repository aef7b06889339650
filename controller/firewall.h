/* The backup's firewall: a ruleset generator (pure: a struct of addresses in, text out) and the
 * plumbing that checks, applies and rolls back the ruleset with the system's tools.
 *
 * The generator knows nothing of configuration files or processes, so it is tested on its own
 * (tests/unit/test-firewall.c); cmd_firewall in firewall.c fills a fw_spec_t from the
 * configuration and runs nft or iptables-restore.
 */
#ifndef UNDERSTUDY_FIREWALL_H
#define UNDERSTUDY_FIREWALL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define FW_TABLE           "understudy"  /* table inet understudy */
#define FW_MAX_PORTS       15            /* iptables' multiport takes 15 ports at most */
#define FW_MAX_CIDRS       10000         /* entries in one list */
#define FW_MAX_RANGES_FILE (1024 * 1024) /* bytes in a --cloudflare-ranges file */
#define FW_CLOUDFLARE_DATE "2026-09-29"  /* when the built-in Cloudflare lists were taken */
#define FW_ERROR_MAX       512

typedef enum fw_format {
    FW_FORMAT_NFT,       /* a script for nft -f: table inet understudy, IPv4 and IPv6 */
    FW_FORMAT_IPTABLES,  /* iptables-restore input, IPv4 rules only (replaces the filter table) */
    FW_FORMAT_IP6TABLES, /* ip6tables-restore input, IPv6 rules only (replaces the filter table) */
} fw_format_t;

/* An IPv4 or IPv6 network: family AF_INET or AF_INET6, address in network byte order (4 or 16
 * bytes used), prefix length 1..32 or 1..128, no host bits set. */
typedef struct fw_cidr {
    int family;
    uint8_t addr[16];
    unsigned prefix;
} fw_cidr_t;

typedef struct fw_list {
    fw_cidr_t *items;
    size_t n;
    size_t cap;
} fw_list_t;

/* What the ruleset allows. Ports are 1..65535; webhook_port 0 means no webhook. */
typedef struct fw_spec {
    fw_list_t admin;      /* may reach ssh_port */
    fw_list_t primary;    /* may reach listen_port (the agent connects from there) */
    fw_list_t cloudflare; /* may reach http_ports and webhook_port */
    uint16_t http_ports[FW_MAX_PORTS];
    size_t n_http_ports;
    uint16_t ssh_port;
    uint16_t listen_port;
    uint16_t webhook_port;
    const char *origin;        /* for the header comment: where the settings came from; or NULL */
    const char *ranges_origin; /* for the header comment: where the Cloudflare list came from */
    char error[FW_ERROR_MAX];  /* the last failure, see fw_last_error() */
} fw_spec_t;

/* Initialises an empty spec: no addresses, HTTP ports 80 and 443, SSH port 22. */
void fw_spec_init(fw_spec_t *spec);

/* Frees the lists; the spec is empty afterwards. Accepts a zeroed spec. */
void fw_spec_free(fw_spec_t *spec);

/* The one-line explanation of the last failure of a function taking this spec. */
const char *fw_last_error(const fw_spec_t *spec);

/* Parses "ADDRESS" or "ADDRESS/PREFIX" (IPv4 dotted quad or IPv6), strictly: no spaces, no
 * leading zeros in the prefix, prefix within the family's range and not 0, no host bits set, no
 * IPv4-mapped IPv6 address. Returns 0 and fills *ret, or ERR_CONFIG with a static reason in *why
 * (if why is not NULL). */
int fw_cidr_parse(const char *text, fw_cidr_t *ret, const char **why);

/* Writes the canonical text of a network (inet_ntop; "/N" only when it is not a single host). */
void fw_cidr_format(const fw_cidr_t *cidr, char *out, size_t out_size);

/* Appends a copy of *cidr. Returns 0, ERR_CONFIG past FW_MAX_CIDRS or UV_ENOMEM. */
int fw_list_add(fw_list_t *list, const fw_cidr_t *cidr);

/* Parses `value` (from configuration key `what`, e.g. "/etc/understudy/controller.conf:
 * [firewall] admin") with fw_cidr_parse and appends it to list. On failure returns ERR_CONFIG and
 * keeps a line naming `what` and the value in the spec's error. */
int fw_spec_add(fw_spec_t *spec, fw_list_t *list, const char *what, const char *value);

/* Parses a ranges file's text (one CIDR per line, IPv4 and IPv6 mixed, blank lines and '#'
 * comments allowed, also after an entry) and appends each entry to spec->cloudflare. `name`
 * names the file in errors ("NAME:LINE: ..."). Returns the number of entries added or
 * ERR_CONFIG. */
int fw_spec_add_ranges(fw_spec_t *spec, const char *name, const char *text, size_t len);

/* Appends the built-in copy of Cloudflare's published ranges (identical to
 * deploy/cloudflare-ips-v4.txt and -v6.txt, taken FW_CLOUDFLARE_DATE). Returns 0 or UV_ENOMEM. */
int fw_spec_add_builtin_ranges(fw_spec_t *spec);

/* Parses a list of ports separated by commas and/or spaces ("80, 443") into spec->http_ports.
 * Returns 0 or ERR_CONFIG (with `what` named in the spec's error). */
int fw_spec_set_http_ports(fw_spec_t *spec, const char *what, const char *text);

/* Parses the name of an output format ("nft", "iptables-restore", "ip6tables-restore"). Returns
 * 0 or ERR_USAGE. */
int fw_format_parse(const char *name, fw_format_t *ret_format);

/* Returns the name of a format as fw_format_parse accepts it. */
const char *fw_format_name(fw_format_t format);

/* Appends the complete ruleset for `format` to out. Refuses (ERR_CONFIG, reason in the spec's
 * error) a spec without admin addresses (SSH would be locked), without Cloudflare ranges, without a
 * listen port, or where two services share a port. Returns 0, ERR_CONFIG or UV_ENOBUFS/UV_ENOMEM
 * from the buffer. */
int fw_generate(fw_spec_t *spec, fw_format_t format, buf_t *out);

#endif
