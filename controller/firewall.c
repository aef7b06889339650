/* 'understudy-controller firewall': the backup's ruleset, printed, checked or applied with an
 * automatic rollback (the iptables-apply idea).
 *
 * The first half is the pure generator declared in firewall.h. The second half runs the system's
 * tools (nft, iptables-restore) through fork + execve with an argv and pipes, never a shell, and
 * keeps the apply/confirm/rollback state in [site] data/firewall/:
 *   previous.nft (or previous-iptables.rules, previous-ip6tables.rules)
 *                      the state before the last --apply, as a script that restores it
 *   pending            while an --apply waits for confirmation: token, format, deadline,
 *                      SSH_CONNECTION of the session that applied, pid of the rollback timer
 *   confirmed-TOKEN    written by 'firewall confirm'; the timer sees it and stands down
 *   lock               flock()ed by every step, so a confirm and the timer's deadline never race
 *   log                one line per apply, confirm and rollback
 */
#include "firewall.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "controller.h"
#include "err.h"
#include "fsutil.h"
#include "log.h"

extern char **environ;

/* Cloudflare's published ranges as of FW_CLOUDFLARE_DATE; the same lists as
 * deploy/cloudflare-ips-v4.txt and deploy/cloudflare-ips-v6.txt (a unit test compares them). */
static const char *const cloudflare_builtin[] = {
    "173.245.48.0/20",  "103.21.244.0/22", "103.22.200.0/22", "103.31.4.0/22",    "141.101.64.0/18",
    "108.162.192.0/18", "190.93.240.0/20", "188.114.96.0/20", "197.234.240.0/22", "198.41.128.0/17",
    "162.158.0.0/15",   "104.16.0.0/13",   "104.24.0.0/14",   "172.64.0.0/13",    "131.0.72.0/22",
    "2400:cb00::/32",   "2606:4700::/32",  "2803:f800::/32",  "2405:b500::/32",   "2405:8100::/32",
    "2a06:98c0::/29",   "2c0f:f248::/32",
};

/* ---- addresses ---------------------------------------------------------------------------- */

int fw_cidr_parse(const char *text, fw_cidr_t *ret, const char **why)
{
    char addr[INET6_ADDRSTRLEN];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    fw_cidr_t c = {0};
    const char *reason;

    if (alen == 0) {
        reason = "no address";
        goto fail;
    }
    if (alen >= sizeof(addr)) {
        reason = "too long for an address";
        goto fail;
    }
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    c.family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    unsigned max = c.family == AF_INET ? 32 : 128;
    if (inet_pton(c.family, addr, c.addr) != 1) {
        reason = c.family == AF_INET ? "not an IPv4 address (a dotted quad such as 192.0.2.1)"
                                     : "not an IPv6 address";
        goto fail;
    }
    if (c.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)c.addr)) {
        reason = "an IPv4-mapped IPv6 address never matches: write the IPv4 address";
        goto fail;
    }
    c.prefix = max;
    if (slash) {
        const char *p = slash + 1;
        size_t n = strlen(p);
        if (n == 0 || n > 3 || strspn(p, "0123456789") != n || (p[0] == '0' && n > 1)) {
            reason = "the prefix length after '/' must be a plain decimal number";
            goto fail;
        }
        unsigned v = (unsigned)strtoul(p, NULL, 10);
        if (v > max) {
            reason = c.family == AF_INET ? "the prefix length must be 1 to 32 for IPv4"
                                         : "the prefix length must be 1 to 128 for IPv6";
            goto fail;
        }
        if (v == 0) {
            reason = "a /0 prefix would allow every address";
            goto fail;
        }
        c.prefix = v;
    }
    for (unsigned i = c.prefix; i < max; i++) {
        if (c.addr[i / 8] & (0x80u >> (i % 8))) {
            reason = "bits are set after the prefix: write the network address (192.0.2.0/24, "
                     "not 192.0.2.1/24)";
            goto fail;
        }
    }
    *ret = c;
    return 0;
fail:
    if (why)
        *why = reason;
    return ERR_CONFIG;
}

void fw_cidr_format(const fw_cidr_t *cidr, char *out, size_t out_size)
{
    char addr[INET6_ADDRSTRLEN];
    unsigned max = cidr->family == AF_INET ? 32 : 128;

    if (!inet_ntop(cidr->family, cidr->addr, addr, sizeof(addr)))
        snprintf(addr, sizeof(addr), "?");
    if (cidr->prefix < max)
        snprintf(out, out_size, "%s/%u", addr, cidr->prefix);
    else
        snprintf(out, out_size, "%s", addr);
}

int fw_list_add(fw_list_t *list, const fw_cidr_t *cidr)
{
    if (list->n >= FW_MAX_CIDRS)
        return ERR_CONFIG;
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        fw_cidr_t *items = realloc(list->items, cap * sizeof(*items));
        if (!items)
            return UV_ENOMEM;
        list->items = items;
        list->cap = cap;
    }
    list->items[list->n++] = *cidr;
    return 0;
}

static size_t list_count(const fw_list_t *list, int family)
{
    size_t n = 0;
    for (size_t i = 0; i < list->n; i++)
        n += list->items[i].family == family;
    return n;
}

/* Copies at most 60 bytes of s (n bytes) into out for an error message, non-printable bytes as
 * '?', so a binary file cannot garble the terminal. */
static void quote(const char *s, size_t n, char *out, size_t out_size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < out_size; i++) {
        if (i == 60) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[o] = '\0';
}

/* ---- the spec ----------------------------------------------------------------------------- */

void fw_spec_init(fw_spec_t *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->http_ports[0] = 80;
    spec->http_ports[1] = 443;
    spec->n_http_ports = 2;
    spec->ssh_port = 22;
}

void fw_spec_free(fw_spec_t *spec)
{
    free(spec->admin.items);
    free(spec->primary.items);
    free(spec->cloudflare.items);
    spec->admin = (fw_list_t){0};
    spec->primary = (fw_list_t){0};
    spec->cloudflare = (fw_list_t){0};
}

const char *fw_last_error(const fw_spec_t *spec)
{
    return spec->error;
}

static int spec_fail(fw_spec_t *spec, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int spec_fail(fw_spec_t *spec, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spec->error, sizeof(spec->error), fmt, ap);
    va_end(ap);
    return code;
}

int fw_spec_add(fw_spec_t *spec, fw_list_t *list, const char *what, const char *value)
{
    fw_cidr_t c;
    const char *why = "";
    char q[80];

    quote(value, strlen(value), q, sizeof(q));
    if (fw_cidr_parse(value, &c, &why) < 0)
        return spec_fail(spec, ERR_CONFIG,
                         "%s: expected an IPv4 or IPv6 address or CIDR, got \"%s\": %s", what, q,
                         why);
    int r = fw_list_add(list, &c);
    if (r == ERR_CONFIG)
        return spec_fail(spec, r, "%s: more than %d entries", what, FW_MAX_CIDRS);
    if (r < 0)
        return spec_fail(spec, r, "%s: %s", what, err_str(r));
    return 0;
}

int fw_spec_add_ranges(fw_spec_t *spec, const char *name, const char *text, size_t len)
{
    size_t added = 0;
    unsigned line = 0;
    const char *p = text, *end = text + len;

    if (len > FW_MAX_RANGES_FILE)
        return spec_fail(spec, ERR_CONFIG, "%s: larger than %d bytes; not a list of ranges", name,
                         FW_MAX_RANGES_FILE);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *s = p, *e = eol;
        line++;
        p = nl ? nl + 1 : end;

        const char *hash = memchr(s, '#', (size_t)(e - s));
        if (hash)
            e = hash;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (s == e)
            continue;

        char entry[INET6_ADDRSTRLEN + 8], q[80];
        fw_cidr_t c;
        const char *why = "too long for a CIDR";
        size_t n = (size_t)(e - s);
        quote(s, n, q, sizeof(q));
        int bad = n >= sizeof(entry) || memchr(s, '\0', n);
        if (!bad) {
            memcpy(entry, s, n);
            entry[n] = '\0';
            bad = fw_cidr_parse(entry, &c, &why) < 0;
        }
        if (bad)
            return spec_fail(spec, ERR_CONFIG,
                             "%s:%u: expected an IPv4 or IPv6 CIDR, got \"%s\": %s", name, line, q,
                             why);
        int r = fw_list_add(&spec->cloudflare, &c);
        if (r == ERR_CONFIG)
            return spec_fail(spec, r, "%s:%u: more than %d ranges", name, line, FW_MAX_CIDRS);
        if (r < 0)
            return spec_fail(spec, r, "%s: %s", name, err_str(r));
        added++;
    }
    if (added == 0)
        return spec_fail(spec, ERR_CONFIG,
                         "%s: no ranges in the file (one CIDR per line expected); refusing an "
                         "empty Cloudflare list",
                         name);
    return (int)added;
}

int fw_spec_add_builtin_ranges(fw_spec_t *spec)
{
    for (size_t i = 0; i < sizeof(cloudflare_builtin) / sizeof(cloudflare_builtin[0]); i++) {
        fw_cidr_t c;
        int r = fw_cidr_parse(cloudflare_builtin[i], &c, NULL);
        assert(r == 0);
        r = fw_list_add(&spec->cloudflare, &c);
        if (r < 0)
            return spec_fail(spec, r, "built-in Cloudflare ranges: %s", err_str(r));
    }
    return 0;
}

int fw_spec_set_http_ports(fw_spec_t *spec, const char *what, const char *text)
{
    uint16_t ports[FW_MAX_PORTS];
    size_t n = 0;
    const char *p = text;
    char q[80];

    quote(text, strlen(text), q, sizeof(q));
    for (;;) {
        p += strspn(p, ", \t");
        if (!*p)
            break;
        size_t len = strspn(p, "0123456789");
        unsigned long v = len && len <= 5 && p[0] != '0' ? strtoul(p, NULL, 10) : 0;
        if (v == 0 || v > 65535 || (p[len] && !strchr(", \t", p[len])))
            return spec_fail(spec, ERR_CONFIG,
                             "%s: expected ports 1 to 65535 separated by commas, got \"%s\"", what,
                             q);
        for (size_t i = 0; i < n; i++)
            if (ports[i] == v)
                return spec_fail(spec, ERR_CONFIG, "%s: port %lu is listed twice", what, v);
        if (n == FW_MAX_PORTS)
            return spec_fail(spec, ERR_CONFIG, "%s: more than %d ports", what, FW_MAX_PORTS);
        ports[n++] = (uint16_t)v;
        p += len;
    }
    if (n == 0)
        return spec_fail(spec, ERR_CONFIG, "%s: no port given", what);
    memcpy(spec->http_ports, ports, n * sizeof(ports[0]));
    spec->n_http_ports = n;
    return 0;
}

static const char *const format_names[] = {
    [FW_FORMAT_NFT] = "nft",
    [FW_FORMAT_IPTABLES] = "iptables-restore",
    [FW_FORMAT_IP6TABLES] = "ip6tables-restore",
};

int fw_format_parse(const char *name, fw_format_t *ret_format)
{
    for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (!strcmp(name, format_names[i])) {
            *ret_format = (fw_format_t)i;
            return 0;
        }
    }
    return ERR_USAGE;
}

const char *fw_format_name(fw_format_t format)
{
    return format_names[format];
}

/* ---- generation --------------------------------------------------------------------------- */

struct gen {
    buf_t *out;
    int rc;
};

static void emit(struct gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct gen *g, const char *fmt, ...)
{
    char *s;
    va_list ap;

    if (g->rc < 0)
        return;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        g->rc = UV_ENOMEM;
        return;
    }
    int r = buf_append(g->out, s, (size_t)n);
    free(s);
    if (r < 0)
        g->rc = r;
}

/* Writes ports as "80" or "{ 80, 443 }" (nft) or "80,443" (iptables multiport). */
static void ports_text(const uint16_t *ports, size_t n, bool nft, char *out, size_t out_size)
{
    size_t o = 0;
    if (nft && n > 1)
        o += (size_t)snprintf(out + o, out_size - o, "{ ");
    for (size_t i = 0; i < n && o < out_size; i++)
        o += (size_t)snprintf(out + o, out_size - o, "%s%u", i ? (nft ? ", " : ",") : "", ports[i]);
    if (nft && n > 1 && o < out_size)
        snprintf(out + o, out_size - o, " }");
}

/* Refuses a spec that would lock the admin out, close the site, or give two services one port. */
static int spec_validate(fw_spec_t *spec)
{
    if (spec->admin.n == 0)
        return spec_fail(spec, ERR_CONFIG,
                         "refusing to generate a ruleset that locks SSH: set [firewall] admin = "
                         "YOUR.IP");
    if (spec->cloudflare.n == 0)
        return spec_fail(spec, ERR_CONFIG,
                         "refusing to generate a ruleset with an empty Cloudflare list: the site "
                         "would be closed to everyone");
    if (spec->listen_port == 0)
        return spec_fail(spec, ERR_CONFIG,
                         "no agent port: [listen] address needs a fixed port (not 0) to be "
                         "opened to [firewall] primary");
    if (spec->ssh_port == 0 || spec->n_http_ports == 0)
        return spec_fail(spec, ERR_CONFIG, "[firewall] ssh_port and http_ports must be 1..65535");

    struct port_use {
        uint16_t port;
        const char *what;
    } used[FW_MAX_PORTS + 3];
    size_t n = 0;
    for (size_t i = 0; i < spec->n_http_ports; i++)
        used[n++] = (struct port_use){spec->http_ports[i], "[firewall] http_ports"};
    used[n++] = (struct port_use){spec->ssh_port, "[firewall] ssh_port"};
    used[n++] = (struct port_use){spec->listen_port, "the port of [listen] address"};
    if (spec->webhook_port)
        used[n++] = (struct port_use){spec->webhook_port, "[firewall] webhook_port"};
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (used[i].port == used[j].port)
                return spec_fail(spec, ERR_CONFIG,
                                 "port %u is both %s and %s; each needs a port of its own",
                                 used[i].port, used[i].what, used[j].what);
    return 0;
}

static void nft_set(struct gen *g, const char *name, const fw_list_t *list, int family)
{
    size_t n = 0;
    char text[INET6_ADDRSTRLEN + 8];

    if (list_count(list, family) == 0)
        return;
    emit(g, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n\t\tauto-merge\n\t\telements = {", name,
         family == AF_INET ? "ipv4_addr" : "ipv6_addr");
    for (size_t i = 0; i < list->n; i++) {
        if (list->items[i].family != family)
            continue;
        fw_cidr_format(&list->items[i], text, sizeof(text));
        emit(g, "%s%s", n == 0 ? " " : n % 4 == 0 ? ",\n\t\t\t     " : ", ", text);
        n++;
    }
    emit(g, " }\n\t}\n");
}

/* One accept rule per family for sources in `list` (a named set) to `ports`; a comment where the
 * family has no entries. */
static void nft_allow(struct gen *g, const char *set, const fw_list_t *list, const char *ports)
{
    bool any = false;
    for (int k = 0; k < 2; k++) {
        int family = k ? AF_INET6 : AF_INET;
        if (list_count(list, family) == 0)
            continue;
        emit(g, "\t\ttcp dport %s %s saddr @%s_%s accept\n", ports, k ? "ip6" : "ip", set,
             k ? "v6" : "v4");
        any = true;
    }
    if (!any)
        emit(g, "\t\t# (no addresses: port %s stays closed)\n", ports);
}

static void header(struct gen *g, const fw_spec_t *spec, const char *what)
{
    emit(g, "# understudy: %s of the backup host.\n", what);
    emit(g, "# Generated by understudy-controller %s from %s.\n", UNDERSTUDY_VERSION,
         spec->origin ? spec->origin : "(no configuration file)");
    emit(g, "# Cloudflare ranges: %s.\n",
         spec->ranges_origin ? spec->ranges_origin : "(given by the caller)");
    emit(g, "# Regenerate rather than edit: understudy-controller firewall --config FILE\n#\n");
}

static void generate_nft(struct gen *g, const fw_spec_t *spec)
{
    char http[128], ssh[16], listen[16], webhook[16];

    ports_text(spec->http_ports, spec->n_http_ports, true, http, sizeof(http));
    snprintf(ssh, sizeof(ssh), "%u", spec->ssh_port);
    snprintf(listen, sizeof(listen), "%u", spec->listen_port);
    snprintf(webhook, sizeof(webhook), "%u", spec->webhook_port);

    emit(g, "#!/usr/sbin/nft -f\n");
    header(g, spec, "nftables ruleset (IPv4 and IPv6)");
    emit(
        g,
        "# This file is ONE transaction: 'nft -f' applies all of it or none of it, so the drop\n"
        "# policies below never exist without the accept rules beside them, and an error changes\n"
        "# nothing. The first two commands create our table if it is missing and then delete it,\n"
        "# so the definition that follows starts from nothing. Other tables (the admin's own,\n"
        "# Docker's, fail2ban's) are left alone.\n"
        "#\n"
        "# A drop policy in any base chain is final: a packet passes every base chain hooked at\n"
        "# input (or output), table after table; an accept only ends the chain it is in, while a\n"
        "# drop, by a rule or by a chain's policy, ends the packet. So this table alone enforces\n"
        "# its policy whatever other tables accept; to open another port, add it here (through\n"
        "# the configuration), not in another table. Conversely a drop in another table still\n"
        "# wins over an accept here: check 'nft list ruleset' if something allowed is blocked.\n"
        "#\n"
        "# Forwarded traffic is not filtered (no forward chain): containers and VMs keep working.\n"
        "\n"
        "table inet " FW_TABLE "\n"
        "delete table inet " FW_TABLE "\n"
        "\n"
        "table inet " FW_TABLE " {\n");
    nft_set(g, "cloudflare_v4", &spec->cloudflare, AF_INET);
    nft_set(g, "cloudflare_v6", &spec->cloudflare, AF_INET6);
    nft_set(g, "admin_v4", &spec->admin, AF_INET);
    nft_set(g, "admin_v6", &spec->admin, AF_INET6);
    nft_set(g, "primary_v4", &spec->primary, AF_INET);
    nft_set(g, "primary_v6", &spec->primary, AF_INET6);
    emit(
        g,
        "\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy drop;\n"
        "\n"
        "\t\tiif \"lo\" accept\n"
        "\t\t# IPv6 neighbour discovery and router advertisements: without them IPv6 stops\n"
        "\t\t# working within minutes. Hop limit 255 proves the sender is on our link (RFC 4861).\n"
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } "
        "ip6 hoplimit 255 accept\n"
        "\t\ticmpv6 type mld-listener-query ip6 saddr fe80::/10 accept\n"
        "\t\tct state established,related accept\n"
        "\t\tct state invalid drop\n"
        "\t\t# ICMP errors (path MTU discovery needs them) and ping.\n"
        "\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem, "
        "echo-request } accept\n"
        "\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, "
        "parameter-problem, echo-request } accept\n"
        "\t\t# DHCP replies, for hosts that get their addresses by DHCP.\n"
        "\t\tudp sport 67 udp dport 68 accept\n"
        "\t\tip6 saddr fe80::/10 udp sport 547 udp dport 546 accept\n"
        "\t\t# The site, only from Cloudflare's proxies.\n");
    nft_allow(g, "cloudflare", &spec->cloudflare, http);
    if (spec->webhook_port) {
        emit(g, "\t\t# The failover webhook ([firewall] webhook_port), also from Cloudflare.\n");
        nft_allow(g, "cloudflare", &spec->cloudflare, webhook);
    }
    emit(g, "\t\t# SSH, only from [firewall] admin.\n");
    nft_allow(g, "admin", &spec->admin, ssh);
    emit(g, "\t\t# understudy agents ([listen] address), only from [firewall] primary.\n");
    nft_allow(g, "primary", &spec->primary, listen);
    emit(g, "\t}\n"
            "\n"
            "\tchain output {\n"
            "\t\ttype filter hook output priority filter; policy drop;\n"
            "\n"
            "\t\toif \"lo\" accept\n"
            "\t\tct state established,related accept\n"
            "\t\t# ICMP and ICMPv6: neighbour discovery, errors, ping.\n"
            "\t\tmeta l4proto { icmp, ipv6-icmp } accept\n"
            "\t\t# DNS; HTTP(S) for updates, Cloudflare's API and webhooks; SMTP for alert mail.\n"
            "\t\tmeta l4proto { tcp, udp } th dport 53 accept\n"
            "\t\ttcp dport { 80, 443 } accept\n"
            "\t\ttcp dport { 25, 465, 587 } accept\n"
            "\t\t# NTP (certificates need a right clock) and DHCP requests.\n"
            "\t\tudp dport 123 accept\n"
            "\t\tudp dport { 67, 547 } accept\n"
            "\t}\n"
            "}\n");
}

/* -A CHAIN -s CIDR -p tcp ... -j ACCEPT for each address of the family. */
static void ipt_allow(struct gen *g, const fw_list_t *list, int family, const uint16_t *ports,
                      size_t n_ports)
{
    char p[128], text[INET6_ADDRSTRLEN + 8];
    size_t n = 0;

    ports_text(ports, n_ports, false, p, sizeof(p));
    for (size_t i = 0; i < list->n; i++) {
        if (list->items[i].family != family)
            continue;
        fw_cidr_format(&list->items[i], text, sizeof(text));
        if (n_ports > 1)
            emit(g, "-A INPUT -s %s -p tcp -m multiport --dports %s -j ACCEPT\n", text, p);
        else
            emit(g, "-A INPUT -s %s -p tcp -m tcp --dport %s -j ACCEPT\n", text, p);
        n++;
    }
    if (n == 0)
        emit(g, "# (no %s addresses: port %s stays closed)\n", family == AF_INET ? "IPv4" : "IPv6",
             p);
}

static void generate_iptables(struct gen *g, const fw_spec_t *spec, int family)
{
    bool v6 = family == AF_INET6;
    const char *icmp = v6 ? "-p ipv6-icmp -m icmp6 --icmpv6-type" : "-p icmp -m icmp --icmp-type";

    header(g, spec,
           v6 ? "IPv6 firewall for ip6tables-restore" : "IPv4 firewall for iptables-restore");
    emit(g,
         "# For hosts without nftables. %s-restore replaces the whole filter table in one commit,\n"
         "# so the DROP policies never exist without the ACCEPT rules; rules that other programs\n"
         "# put in that table are removed (the nft format keeps a table of its own instead).\n"
         "# This is the %s half: load the output of --format %s too, or %s stays as it was.\n"
         "# Forwarding is dropped: a standby web server routes nothing.\n"
         "*filter\n"
         ":INPUT DROP [0:0]\n"
         ":FORWARD DROP [0:0]\n"
         ":OUTPUT DROP [0:0]\n"
         "-A INPUT -i lo -j ACCEPT\n",
         v6 ? "ip6tables" : "iptables", v6 ? "IPv6" : "IPv4",
         v6 ? "iptables-restore" : "ip6tables-restore", v6 ? "IPv4" : "IPv6");
    if (v6) {
        emit(g, "# Neighbour discovery and router advertisements, from on-link senders only.\n");
        static const char *const nd[] = {"neighbour-solicitation", "neighbour-advertisement",
                                         "router-advertisement"};
        for (size_t i = 0; i < 3; i++)
            emit(g, "-A INPUT %s %s -m hl --hl-eq 255 -j ACCEPT\n", icmp, nd[i]);
        emit(g, "-A INPUT -s fe80::/10 %s 130 -j ACCEPT\n", icmp);
    }
    emit(g, "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A INPUT -m conntrack --ctstate INVALID -j DROP\n"
            "# ICMP errors (path MTU discovery needs them) and ping.\n");
    static const char *const icmp4[] = {"destination-unreachable", "time-exceeded",
                                        "parameter-problem", "echo-request", NULL};
    static const char *const icmp6[] = {
        "destination-unreachable", "packet-too-big", "time-exceeded",
        "parameter-problem",       "echo-request",   NULL};
    for (const char *const *t = v6 ? icmp6 : icmp4; *t; t++)
        emit(g, "-A INPUT %s %s -j ACCEPT\n", icmp, *t);
    emit(g, "# DHCP replies.\n");
    if (v6)
        emit(g, "-A INPUT -s fe80::/10 -p udp -m udp --sport 547 --dport 546 -j ACCEPT\n");
    else
        emit(g, "-A INPUT -p udp -m udp --sport 67 --dport 68 -j ACCEPT\n");
    emit(g, "# The site, only from Cloudflare's proxies.\n");
    ipt_allow(g, &spec->cloudflare, family, spec->http_ports, spec->n_http_ports);
    if (spec->webhook_port) {
        emit(g, "# The failover webhook ([firewall] webhook_port), also from Cloudflare.\n");
        ipt_allow(g, &spec->cloudflare, family, &spec->webhook_port, 1);
    }
    emit(g, "# SSH, only from [firewall] admin.\n");
    ipt_allow(g, &spec->admin, family, &spec->ssh_port, 1);
    emit(g, "# understudy agents ([listen] address), only from [firewall] primary.\n");
    ipt_allow(g, &spec->primary, family, &spec->listen_port, 1);
    emit(g,
         "-A OUTPUT -o lo -j ACCEPT\n"
         "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
         "-A OUTPUT -p %s -j ACCEPT\n"
         "# DNS; HTTP(S) for updates, Cloudflare's API and webhooks; SMTP for alert mail.\n"
         "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\n"
         "-A OUTPUT -p tcp -m tcp --dport 53 -j ACCEPT\n"
         "-A OUTPUT -p tcp -m multiport --dports 80,443,25,465,587 -j ACCEPT\n"
         "# NTP (certificates need a right clock) and DHCP requests.\n"
         "-A OUTPUT -p udp -m udp --dport 123 -j ACCEPT\n"
         "-A OUTPUT -p udp -m udp --dport %s -j ACCEPT\n"
         "COMMIT\n",
         v6 ? "ipv6-icmp" : "icmp", v6 ? "547" : "67");
}

int fw_generate(fw_spec_t *spec, fw_format_t format, buf_t *out)
{
    struct gen g = {out, 0};
    int r = spec_validate(spec);
    if (r < 0)
        return r;
    switch (format) {
    case FW_FORMAT_NFT:
        generate_nft(&g, spec);
        break;
    case FW_FORMAT_IPTABLES:
        generate_iptables(&g, spec, AF_INET);
        break;
    case FW_FORMAT_IP6TABLES:
        generate_iptables(&g, spec, AF_INET6);
        break;
    }
    if (g.rc < 0)
        return spec_fail(spec, g.rc, "cannot build the ruleset: %s", err_str(g.rc));
    return 0;
}

/* ---- running the system's tools ----------------------------------------------------------- */

#define TOOL_OUTPUT_MAX (16 * 1024 * 1024)

/* Finds an executable by name in $PATH, then in /usr/sbin and /sbin (cron and sudo often leave
 * them out of PATH). Returns 0 or UV_ENOENT. */
static int find_tool(const char *name, char *ret_path, size_t size)
{
    char dirs[4096];
    const char *path = getenv("PATH");

    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        if (*d != '/')
            continue;
        if ((size_t)snprintf(ret_path, size, "%s/%s", d, name) < size &&
            access(ret_path, X_OK) == 0)
            return 0;
    }
    return UV_ENOENT;
}

/* Result of one tool run: exit status (128 + signal if killed), stdout, stderr. */
struct run {
    int status;
    buf_t out;
    buf_t err;
};

static void run_free(struct run *run)
{
    buf_free(&run->out);
    buf_free(&run->err);
}

/* Runs argv (argv[0] looked up with find_tool) with `in` on its stdin, collecting its stdout and
 * stderr, through fork + execve: no shell sees any of it. Returns 0 (whatever the exit status,
 * which is in run->status) or a negative errno when the tool could not be run. */
static int run_tool(const char *const *argv, const char *in, size_t in_len, struct run *run)
{
    char path[PATH_MAX];
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int r = find_tool(argv[0], path, sizeof(path));

    buf_init(&run->out, TOOL_OUTPUT_MAX);
    buf_init(&run->err, 64 * 1024);
    run->status = -1;
    if (r < 0)
        return r;
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
        r = -errno;
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = -errno;
        goto out;
    }
    if (pid == 0) {
        if (dup2(pin[0], 0) < 0 || dup2(pout[1], 1) < 0 || dup2(perr[1], 2) < 0)
            _exit(127);
        execve(path, (char *const *)argv, environ);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    close(perr[1]);
    pin[0] = pout[1] = perr[1] = -1;
    fcntl(pin[1], F_SETFL, O_NONBLOCK);

    size_t off = 0;
    if (in_len == 0) {
        close(pin[1]);
        pin[1] = -1;
    }
    while (pin[1] >= 0 || pout[0] >= 0 || perr[0] >= 0) {
        struct pollfd fds[3] = {{pin[1], POLLOUT, 0}, {pout[0], POLLIN, 0}, {perr[0], POLLIN, 0}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        if (pin[1] >= 0 && fds[0].revents) {
            ssize_t n = write(pin[1], in + off, in_len - off);
            if (n > 0)
                off += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || off == in_len) {
                close(pin[1]); /* EPIPE: the tool stopped reading; its status tells why */
                pin[1] = -1;
            }
        }
        for (int k = 1; k < 3; k++) {
            int *fd = k == 1 ? &pout[0] : &perr[0];
            buf_t *b = k == 1 ? &run->out : &run->err;
            if (*fd < 0 || !fds[k].revents)
                continue;
            char chunk[16384];
            ssize_t n = read(*fd, chunk, sizeof(chunk));
            if (n > 0 && buf_append(b, chunk, (size_t)n) < 0)
                n = 0; /* over the cap: stop reading, the tool gets SIGPIPE */
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                close(*fd);
                *fd = -1;
            }
        }
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            r = -errno;
            goto out;
        }
    }
    if (WIFEXITED(status))
        run->status = WEXITSTATUS(status);
    else
        run->status = 128 + WTERMSIG(status);
    if (run->status == 127 && r == 0)
        r = UV_ENOENT;
out:
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0)
            close(pin[i]);
        if (pout[i] >= 0)
            close(pout[i]);
        if (perr[i] >= 0)
            close(perr[i]);
    }
    return r;
}

/* The tools for a format: check, load (replace our table / the filter table), save the state. */
struct backend {
    const char *const *check;
    const char *const *load;
    const char *previous; /* file name under data/firewall */
    const char *package;  /* Debian package to install when the tool is missing */
};

static const char *const nft_check[] = {"nft", "-c", "-f", "-", NULL};
static const char *const nft_load[] = {"nft", "-f", "-", NULL};
static const char *const ipt_check[] = {"iptables-restore", "--test", NULL};
static const char *const ipt_load[] = {"iptables-restore", NULL};
static const char *const ip6t_check[] = {"ip6tables-restore", "--test", NULL};
static const char *const ip6t_load[] = {"ip6tables-restore", NULL};

static const struct backend backends[] = {
    [FW_FORMAT_NFT] = {nft_check, nft_load, "previous.nft", "nftables"},
    [FW_FORMAT_IPTABLES] = {ipt_check, ipt_load, "previous-iptables.rules", "iptables"},
    [FW_FORMAT_IP6TABLES] = {ip6t_check, ip6t_load, "previous-ip6tables.rules", "iptables"},
};

/* Logs a failed tool run once: what was attempted, the tool's own error lines, what to do. */
static int tool_failed(const char *const *argv, const char *doing, int r, const struct run *run,
                       const char *package)
{
    if (r == UV_ENOENT) {
        log_error("%s: %s not found; install the %s package", doing, argv[0], package);
        return ERR_FIREWALL;
    }
    if (r < 0) {
        log_error("%s: cannot run %s: %s", doing, argv[0], uv_strerror(r));
        return ERR_FIREWALL;
    }
    log_error("%s: %s exited with status %d%s", doing, argv[0], run->status,
              run->err.len ? "; it said:" : "");
    if (run->err.len)
        fprintf(stderr, "%.*s%s", (int)run->err.len, (const char *)buf_data(&run->err),
                buf_data(&run->err)[run->err.len - 1] == '\n' ? "" : "\n");
    return ERR_FIREWALL;
}

/* Runs a load or check tool on text; 0 or ERR_FIREWALL (logged). */
static int tool_feed(fw_format_t format, bool check, const char *text, size_t len,
                     const char *doing)
{
    const struct backend *be = &backends[format];
    const char *const *argv = check ? be->check : be->load;
    struct run run;
    int r = run_tool(argv, text, len, &run);
    if (r == 0 && run.status == 0) {
        run_free(&run);
        return 0;
    }
    r = tool_failed(argv, doing, r, &run, be->package);
    run_free(&run);
    return r;
}

/* Runs a tool that prints the current state and appends its output to out. 0 or ERR_FIREWALL
 * (logged). */
static int capture(const char *const *argv, const char *package, buf_t *out)
{
    struct run run;
    int r = run_tool(argv, NULL, 0, &run);
    if (r == 0 && run.status == 0) {
        r = buf_append(out, buf_data(&run.out), run.out.len);
        run_free(&run);
        if (r < 0)
            log_error("saving the current ruleset: %s", uv_strerror(r));
        return r < 0 ? ERR_FIREWALL : 0;
    }
    r = tool_failed(argv, "saving the current ruleset", r, &run, package);
    run_free(&run);
    return r;
}

/* Captures the current state as a script that restores it when loaded with the format's load
 * tool: for nft our table's definition (or only its deletion when it does not exist), for
 * iptables the filter table as iptables-save prints it (or an accept-all table). Appends to out;
 * returns 0 or ERR_FIREWALL (logged). Sets *ret_existed to whether there was a table before. */
static int save_state(fw_format_t format, buf_t *out, bool *ret_existed)
{
    static const char *const tables[] = {"nft", "list", "tables", NULL};
    static const char *const table[] = {"nft", "list", "table", "inet", FW_TABLE, NULL};
    static const char *const save4[] = {"iptables-save", "-t", "filter", NULL};
    static const char *const save6[] = {"ip6tables-save", "-t", "filter", NULL};
    buf_t list = BUF_INIT;
    bool existed = false;
    int r;

    if (format == FW_FORMAT_NFT) {
        r = capture(tables, "nftables", &list);
        if (r == 0 && buf_append(&list, "", 1) < 0)
            r = ERR_FIREWALL;
        if (r < 0)
            goto out;
        /* "table inet understudy" as a whole line of the listing. */
        const char *want = "table inet " FW_TABLE "\n", *text = (const char *)buf_data(&list);
        for (const char *p = text; (p = strstr(p, want)); p++)
            if (p == text || p[-1] == '\n')
                existed = true;
        if (buf_append_str(out, "# understudy: the state of table inet " FW_TABLE
                                " before the last --apply.\n"
                                "table inet " FW_TABLE "\ndelete table inet " FW_TABLE "\n") < 0)
            r = ERR_FIREWALL;
        if (r == 0 && existed)
            r = capture(table, "nftables", out);
    } else {
        r = capture(format == FW_FORMAT_IPTABLES ? save4 : save6, "iptables", &list);
        if (r == 0 && buf_append(&list, "", 1) < 0)
            r = ERR_FIREWALL;
        if (r < 0)
            goto out;
        existed = strstr((const char *)buf_data(&list), "*filter") != NULL;
        if (existed)
            r = buf_append(out, buf_data(&list), list.len - 1);
        else
            r = buf_append_str(out, "# understudy: no filter table before the last --apply.\n"
                                    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                                    ":OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        if (r < 0)
            r = ERR_FIREWALL;
    }
    if (r == 0)
        *ret_existed = existed;
out:
    buf_free(&list);
    return r;
}

/* ---- state files -------------------------------------------------------------------------- */

struct fwdir {
    char path[PATH_MAX - 64]; /* data/firewall; room for the file names below it */
    int lock_fd;
};

struct pending {
    char token[33];
    fw_format_t format;
    long long deadline; /* Unix time */
    long pid;           /* the rollback timer */
    char ssh[256];      /* $SSH_CONNECTION at --apply, or "" */
};

/* Opens data/firewall (creating it 0700) and takes its lock. 0 or ERR_FIREWALL (logged). */
static int fwdir_open(struct fwdir *d, const cfg_t *cfg)
{
    const char *data = cfg_get(cfg, "site", "data");
    char lock[PATH_MAX];

    d->lock_fd = -1;
    if (!data ||
        (size_t)snprintf(d->path, sizeof(d->path), "%s/firewall", data) >= sizeof(d->path)) {
        log_error("%s: [site] data is missing or too long", cfg_path(cfg));
        return ERR_CONFIG;
    }
    int r = fs_mkdirs(d->path, strlen(d->path), 0700);
    if (r < 0) {
        log_error("cannot create %s: %s", d->path, uv_strerror(r));
        return ERR_FIREWALL;
    }
    snprintf(lock, sizeof(lock), "%s/lock", d->path);
    d->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX) < 0) {
        log_error("cannot lock %s: %s", lock, strerror(errno));
        return ERR_FIREWALL;
    }
    return 0;
}

static void fwdir_close(struct fwdir *d)
{
    if (d->lock_fd >= 0)
        close(d->lock_fd); /* releases the flock */
    d->lock_fd = -1;
}

static void fwdir_file(const struct fwdir *d, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", d->path, name);
}

/* Writes a file atomically (temporary file, fsync, rename), mode 0600. 0 or a negative errno. */
static int write_file(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return UV_ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    return 0;
}

/* Reads a whole file (at most max bytes) into out. 0 or a negative errno (UV_ENOENT: absent). */
static int read_file(const char *path, buf_t *out, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (;;) {
        uint8_t *p = buf_reserve(out, 16384);
        if (!p) {
            close(fd);
            return out->len >= max ? UV_EFBIG : UV_ENOMEM;
        }
        ssize_t n = read(fd, p, 16384);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        if (n == 0)
            break;
        buf_commit(out, (size_t)n);
        if (out->len > max) {
            close(fd);
            return UV_EFBIG;
        }
    }
    close(fd);
    return 0;
}

static void fw_log(const struct fwdir *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends a time-stamped line to data/firewall/log (best effort). */
static void fw_log(const struct fwdir *d, const char *fmt, ...)
{
    char path[PATH_MAX], stamp[32], line[1024];
    time_t now = time(NULL);
    struct tm tm;
    va_list ap;

    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fwdir_file(d, "log", path, sizeof(path));
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "a") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return;
    }
    fprintf(f, "%s %s\n", stamp, line);
    fclose(f);
}

/* Reads data/firewall/pending. 0, UV_ENOENT when no apply is pending, or ERR_FIREWALL when it is
 * unreadable (logged). */
static int pending_read(const struct fwdir *d, struct pending *ret)
{
    char path[PATH_MAX];
    buf_t b = BUF_INIT;
    struct pending p = {.pid = 0};
    bool have_format = false;

    fwdir_file(d, "pending", path, sizeof(path));
    int r = read_file(path, &b, 4096);
    if (r == UV_ENOENT)
        return r;
    if (r == 0)
        r = buf_append(&b, "", 1);
    if (r < 0) {
        buf_free(&b);
        log_error("cannot read %s: %s", path, uv_strerror(r));
        return ERR_FIREWALL;
    }
    char *save = NULL;
    for (char *line = strtok_r((char *)buf_data(&b), "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq++ = '\0';
        if (!strcmp(line, "token"))
            snprintf(p.token, sizeof(p.token), "%s", eq);
        else if (!strcmp(line, "format"))
            have_format = fw_format_parse(eq, &p.format) == 0;
        else if (!strcmp(line, "deadline"))
            p.deadline = strtoll(eq, NULL, 10);
        else if (!strcmp(line, "pid"))
            p.pid = strtol(eq, NULL, 10);
        else if (!strcmp(line, "ssh_connection"))
            snprintf(p.ssh, sizeof(p.ssh), "%s", eq);
    }
    buf_free(&b);
    if (strlen(p.token) != 32 || !have_format) {
        log_error("%s is damaged; run 'understudy-controller firewall rollback' or remove it",
                  path);
        return ERR_FIREWALL;
    }
    *ret = p;
    return 0;
}

static int pending_write(const struct fwdir *d, const struct pending *p)
{
    char path[PATH_MAX], text[1024];
    int n = snprintf(text, sizeof(text),
                     "token=%s\nformat=%s\ndeadline=%lld\npid=%ld\nssh_connection=%s\n", p->token,
                     fw_format_name(p->format), p->deadline, p->pid, p->ssh);
    fwdir_file(d, "pending", path, sizeof(path));
    int r = write_file(path, text, (size_t)n);
    if (r < 0)
        log_error("cannot write %s: %s", path, uv_strerror(r));
    return r < 0 ? ERR_FIREWALL : 0;
}

static void pending_remove(const struct fwdir *d)
{
    char path[PATH_MAX];
    fwdir_file(d, "pending", path, sizeof(path));
    unlink(path);
}

static bool marker_exists(const struct fwdir *d, const char *token)
{
    char path[PATH_MAX], name[64];
    snprintf(name, sizeof(name), "confirmed-%s", token);
    fwdir_file(d, name, path, sizeof(path));
    return access(path, F_OK) == 0;
}

static void marker_remove(const struct fwdir *d, const char *token)
{
    char path[PATH_MAX], name[64];
    snprintf(name, sizeof(name), "confirmed-%s", token);
    fwdir_file(d, name, path, sizeof(path));
    unlink(path);
}

static bool timer_alive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Loads previous.* for the format, and tells in *ret_table_existed (if not NULL) whether it
 * restores a ruleset rather than the absence of one. 0 or ERR_FIREWALL (logged). */
static int restore_previous(const struct fwdir *d, fw_format_t format, bool *ret_table_existed)
{
    char path[PATH_MAX];
    buf_t b = BUF_INIT;

    fwdir_file(d, backends[format].previous, path, sizeof(path));
    int r = read_file(path, &b, TOOL_OUTPUT_MAX);
    if (r < 0) {
        buf_free(&b);
        log_error("nothing to roll back to: cannot read %s: %s (no --apply with --format %s yet?)",
                  path, uv_strerror(r), fw_format_name(format));
        return ERR_FIREWALL;
    }
    r = buf_append(&b, "", 1);
    if (r == 0 && ret_table_existed)
        *ret_table_existed = format == FW_FORMAT_NFT
                                 ? strstr((char *)buf_data(&b), "table inet " FW_TABLE " {") != NULL
                                 : !strstr((char *)buf_data(&b), "# understudy: no filter table");
    if (r == 0)
        r = tool_feed(format, false, (const char *)buf_data(&b), b.len - 1,
                      "restoring the previous ruleset");
    buf_free(&b);
    return r < 0 ? ERR_FIREWALL : 0;
}

/* ---- the rollback timer ------------------------------------------------------------------- */

/* The detached timer's body: waits for a confirmation marker, for the pending apply to go away
 * (a manual rollback, a newer apply) or for the deadline, which restores the previous state.
 * Runs in its own session with no terminal and stdio on /dev/null; never returns to the caller's
 * code paths. */
static void timer_run(struct fwdir *d, const char *token, fw_format_t format, unsigned seconds)
{
    struct timespec now, end;
    struct pending p;

    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += seconds;
    for (;;) {
        if (marker_exists(d, token))
            break;
        if (pending_read(d, &p) < 0 || strcmp(p.token, token))
            return; /* rolled back by hand, or replaced */
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
            break;
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    char lock[PATH_MAX];
    fwdir_file(d, "lock", lock, sizeof(lock));
    d->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX) < 0)
        return;
    if (pending_read(d, &p) == 0 && !strcmp(p.token, token)) {
        if (marker_exists(d, token)) {
            pending_remove(d);
            fw_log(d, "apply %s confirmed; keeping the new ruleset", token);
        } else if (restore_previous(d, format, NULL) == 0) {
            pending_remove(d);
            fw_log(d, "apply %s NOT confirmed within %u s: rolled back to %s", token, seconds,
                   backends[format].previous);
        } else {
            fw_log(d, "apply %s NOT confirmed within %u s, and the rollback FAILED", token,
                   seconds);
        }
    }
    marker_remove(d, token);
    fwdir_close(d);
}

/* Starts the rollback timer as a detached grandchild (fork, setsid, fork), so it outlives this
 * command and the SSH session it runs in. Returns the timer's pid, or a negative errno. */
static long timer_start(struct fwdir *d, const char *token, fw_format_t format, unsigned seconds)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        int e = -errno;
        close(p[0]);
        close(p[1]);
        return e;
    }
    if (child == 0) {
        close(p[0]);
        if (setsid() < 0)
            _exit(1);
        pid_t grandchild = fork();
        if (grandchild != 0)
            _exit(grandchild < 0);
        /* The timer: no terminal, no inherited descriptors (above all not the lock). */
        pid_t me = getpid();
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        signal(SIGHUP, SIG_IGN);
        if (chdir("/") < 0)
            _exit(1);
        if (write(p[1], &me, sizeof(me)) != (ssize_t)sizeof(me))
            _exit(1);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        d->lock_fd = -1;
        timer_run(d, token, format, seconds);
        _exit(0);
    }
    close(p[1]);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    pid_t timer = 0;
    ssize_t n;
    while ((n = read(p[0], &timer, sizeof(timer))) < 0 && errno == EINTR)
        ;
    close(p[0]);
    if (n != (ssize_t)sizeof(timer) || timer <= 0)
        return UV_ESRCH;
    return timer;
}

/* ---- commands ----------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: understudy-controller firewall --config FILE [--format FORMAT]\n"
        "                                      [--cloudflare-ranges FILE]...\n"
        "                                      [--check | --apply [--confirm-within SECONDS]]\n"
        "       understudy-controller firewall confirm --config FILE\n"
        "       understudy-controller firewall rollback --config FILE [--format FORMAT]\n"
        "\n"
        "Prints the backup's firewall: HTTP(S) only from Cloudflare's ranges, SSH only from\n"
        "[firewall] admin, the agent port ([listen] address) only from [firewall] primary, the\n"
        "webhook port ([firewall] webhook_port) from Cloudflare's ranges; loopback, replies,\n"
        "essential ICMP/ICMPv6 (neighbour discovery) and DHCP in; DNS, HTTP(S), SMTP, NTP, DHCP\n"
        "and replies out. Everything else is dropped.\n"
        "\n"
        "  --format nft                 (default) a script for 'nft -f': table inet understudy,\n"
        "                               IPv4 and IPv6, other tables untouched\n"
        "  --format iptables-restore    IPv4 rules for iptables-restore (no nftables); replaces\n"
        "                               the filter table\n"
        "  --format ip6tables-restore   the IPv6 half, for ip6tables-restore; load both\n"
        "  --cloudflare-ranges FILE     Cloudflare's ranges, one CIDR per line, IPv4 and IPv6\n"
        "                               mixed, '#' comments; repeat for several files\n"
        "                               (default: [firewall] cloudflare_ranges, else the list\n"
        "                               built in, Cloudflare's list as of %s)\n"
        "  --check                      validate with 'nft -c' / 'iptables-restore --test'\n"
        "  --apply                      load it in one transaction; roll back automatically\n"
        "  --confirm-within SECONDS     ... unless confirmed in time (default 60)\n"
        "\n"
        "confirm   keeps the ruleset of the last --apply. Run it from a NEW SSH connection (it\n"
        "          refuses the session that applied) to prove the new rules let you in; from a\n"
        "          console (no $SSH_CONNECTION) it is accepted. With sudo, keep the variable:\n"
        "          sudo --preserve-env=SSH_CONNECTION ...\n"
        "rollback  restores the state saved before the last --apply, at once (--format: of\n"
        "          the last apply of that format; default: the pending one, else nft).\n"
        "\n"
        "With iptables, apply the halves in turn: --format iptables-restore --apply, confirm,\n"
        "then --format ip6tables-restore --apply, confirm.\n"
        "\n"
        "State: [site] data/firewall/ (previous.nft, pending, log). The ruleset lasts until\n"
        "reboot; to load it at boot, save the printed script and include it from\n"
        "/etc/nftables.conf.\n",
        FW_CLOUDFLARE_DATE);
}

/* Fills spec from the configuration and the ranges files (none: [firewall] cloudflare_ranges,
 * else the built-in list); ranges_origin receives their names and must outlive spec. 0 or
 * ERR_CONFIG (logged). */
static int spec_from_config(fw_spec_t *spec, const cfg_t *cfg, const char *const *ranges,
                            size_t n_ranges, const char *origin, char *ranges_origin,
                            size_t ranges_origin_size)
{
    const char *path = cfg_path(cfg);
    const char *const *values;
    char what[PATH_MAX + 64];
    size_t n;
    int r = 0;

    spec->origin = origin;

    n = cfg_get_all(cfg, "firewall", "admin", &values);
    snprintf(what, sizeof(what), "%s: [firewall] admin", path);
    for (size_t i = 0; i < n && r == 0; i++)
        r = fw_spec_add(spec, &spec->admin, what, values[i]);
    n = cfg_get_all(cfg, "firewall", "primary", &values);
    snprintf(what, sizeof(what), "%s: [firewall] primary", path);
    for (size_t i = 0; i < n && r == 0; i++)
        r = fw_spec_add(spec, &spec->primary, what, values[i]);
    const char *ports = cfg_get(cfg, "firewall", "http_ports");
    if (r == 0 && ports) {
        snprintf(what, sizeof(what), "%s: [firewall] http_ports", path);
        r = fw_spec_set_http_ports(spec, what, ports);
    }
    if (r < 0)
        goto fail;

    static const struct {
        const char *key;
        uint64_t def;
    } port_keys[] = {{"ssh_port", 22}, {"webhook_port", 0}};
    for (size_t i = 0; i < 2; i++) {
        uint64_t v = cfg_get_uint(cfg, "firewall", port_keys[i].key, port_keys[i].def);
        if (v > 65535 || (v == 0 && port_keys[i].def)) {
            log_error("%s: [firewall] %s: expected a port 1 to 65535, got %llu", path,
                      port_keys[i].key, (unsigned long long)v);
            return ERR_CONFIG;
        }
        *(i == 0 ? &spec->ssh_port : &spec->webhook_port) = (uint16_t)v;
    }

    char host[256];
    uint16_t port = 0;
    const char *listen = cfg_get(cfg, "listen", "address");
    if (!listen || cfg_parse_address(listen, host, sizeof(host), &port) < 0 || port == 0) {
        log_error("%s: [listen] address: the firewall needs a fixed port (HOST:PORT, not port 0) "
                  "to open to [firewall] primary",
                  path);
        return ERR_CONFIG;
    }
    spec->listen_port = port;

    const char *from_config = cfg_get(cfg, "firewall", "cloudflare_ranges");
    if (n_ranges == 0 && from_config) {
        ranges = &from_config;
        n_ranges = 1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n_ranges; i++) {
        buf_t b = BUF_INIT;
        r = read_file(ranges[i], &b, FW_MAX_RANGES_FILE);
        if (r < 0) {
            log_error("cannot read the Cloudflare ranges %s: %s", ranges[i],
                      r == UV_EFBIG ? "larger than 1 MiB" : uv_strerror(r));
            buf_free(&b);
            return ERR_CONFIG;
        }
        r = fw_spec_add_ranges(spec, ranges[i], (const char *)buf_data(&b), b.len);
        buf_free(&b);
        if (r < 0)
            goto fail;
        if (o < ranges_origin_size)
            o += (size_t)snprintf(ranges_origin + o, ranges_origin_size - o, "%s%s", i ? ", " : "",
                                  ranges[i]);
    }
    if (n_ranges == 0) {
        r = fw_spec_add_builtin_ranges(spec);
        if (r < 0)
            goto fail;
        snprintf(ranges_origin, ranges_origin_size,
                 "the list built into understudy, published by Cloudflare, as of %s",
                 FW_CLOUDFLARE_DATE);
    }
    spec->ranges_origin = ranges_origin;
    return 0;
fail:
    log_error("%s", fw_last_error(spec));
    return ERR_CONFIG;
}

/* "a, b, c" for up to 6 entries of a list, then "and N more". */
static void list_text(const fw_list_t *list, char *out, size_t size)
{
    size_t o = 0;
    char text[INET6_ADDRSTRLEN + 8];

    out[0] = '\0';
    for (size_t i = 0; i < list->n && o + 1 < size; i++) {
        if (i == 6) {
            snprintf(out + o, size - o, " and %zu more", list->n - i);
            return;
        }
        fw_cidr_format(&list->items[i], text, sizeof(text));
        o += (size_t)snprintf(out + o, size - o, "%s%s", i ? ", " : "", text);
    }
    if (list->n == 0)
        snprintf(out, size, "nowhere");
}

static int do_apply(const cfg_t *cfg, fw_spec_t *spec, fw_format_t format, const char *ruleset,
                    size_t len, unsigned seconds, const char *config_path)
{
    struct fwdir d;
    struct pending p = {.format = format};
    char path[PATH_MAX];
    buf_t prev = BUF_INIT;
    bool existed = false;
    uint8_t rnd[16];

    int r = tool_feed(format, true, ruleset, len, "checking the ruleset before applying it");
    if (r < 0)
        return r;
    r = fwdir_open(&d, cfg);
    if (r < 0)
        goto out;

    r = pending_read(&d, &p);
    if (r == 0) {
        if (timer_alive(p.pid)) {
            char at[64];
            time_t t = (time_t)p.deadline;
            struct tm tm_at;
            gmtime_r(&t, &tm_at);
            strftime(at, sizeof(at), "%Y-%m-%d %H:%M:%S UTC", &tm_at);
            log_error("an earlier --apply (--format %s) is waiting for confirmation, rollback "
                      "at %s; run 'understudy-controller firewall confirm' or 'rollback' first",
                      fw_format_name(p.format), at);
            r = ERR_FIREWALL;
            goto out;
        }
        log_warn("discarding the state of an earlier --apply whose rollback timer is gone");
        pending_remove(&d);
    } else if (r != UV_ENOENT) {
        goto out;
    }

    r = save_state(format, &prev, &existed);
    if (r < 0)
        goto out;
    fwdir_file(&d, backends[format].previous, path, sizeof(path));
    r = write_file(path, buf_data(&prev), prev.len);
    if (r < 0) {
        log_error("cannot save the current ruleset to %s: %s", path, uv_strerror(r));
        r = ERR_FIREWALL;
        goto out;
    }

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        log_error("cannot draw a random token: %s", strerror(errno));
        r = ERR_FIREWALL;
        goto out;
    }
    p = (struct pending){.format = format, .deadline = (long long)time(NULL) + seconds};
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(p.token + 2 * i, 3, "%02x", rnd[i]);
    const char *ssh = getenv("SSH_CONNECTION");
    snprintf(p.ssh, sizeof(p.ssh), "%s", ssh ? ssh : "");
    r = pending_write(&d, &p);
    if (r < 0)
        goto out;

    r = tool_feed(format, false, ruleset, len, "applying the ruleset");
    if (r < 0) {
        pending_remove(&d); /* one transaction: nothing was changed */
        goto out;
    }
    long pid = timer_start(&d, p.token, format, seconds);
    if (pid < 0) {
        log_error("cannot start the rollback timer (%s); restoring the previous ruleset now",
                  uv_strerror((int)pid));
        restore_previous(&d, format, NULL);
        pending_remove(&d);
        r = ERR_FIREWALL;
        goto out;
    }
    p.pid = pid;
    pending_write(&d, &p); /* the timer only needs the token, already written */

    char admin[512], primary[512], ports[128], when[64];
    struct tm tm;
    time_t deadline = (time_t)p.deadline;
    list_text(&spec->admin, admin, sizeof(admin));
    list_text(&spec->primary, primary, sizeof(primary));
    ports_text(spec->http_ports, spec->n_http_ports, true, ports, sizeof(ports));
    gmtime_r(&deadline, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    fw_log(&d, "apply %s (%s) from %s; rollback at %s unless confirmed", p.token,
           fw_format_name(format), p.ssh[0] ? p.ssh : "a console", when);
    printf("applied %s in one transaction (%s):\n",
           format == FW_FORMAT_NFT ? "table inet " FW_TABLE : "the filter table",
           fw_format_name(format));
    printf("  ports %s from %zu Cloudflare ranges (%s)\n", ports, spec->cloudflare.n,
           spec->ranges_origin);
    if (spec->webhook_port)
        printf("  webhook port %u from the same ranges\n", spec->webhook_port);
    printf("  SSH port %u from %s\n", spec->ssh_port, admin);
    printf("  agent port %u from %s\n", spec->listen_port, primary);
    printf("  everything else in: dropped; out: DNS, HTTP(S), SMTP, NTP, DHCP and replies\n");
    printf("previous state (%s) saved in %s\n",
           existed ? "a ruleset" : "none of ours: rollback removes it", path);
    printf("ROLLBACK at %s (in %u s, timer pid %ld) unless you confirm from a NEW SSH "
           "connection:\n  understudy-controller firewall confirm --config %s\n",
           when, seconds, pid, config_path);
    r = 0;
out:
    buf_free(&prev);
    fwdir_close(&d);
    return r;
}

static int do_confirm(const cfg_t *cfg)
{
    struct fwdir d;
    struct pending p;
    char path[PATH_MAX], name[64];

    int r = fwdir_open(&d, cfg);
    if (r < 0)
        goto out;
    r = pending_read(&d, &p);
    if (r == UV_ENOENT) {
        log_error("no --apply is waiting for confirmation (already confirmed, or rolled back: "
                  "see %s/log)",
                  d.path);
        r = ERR_FIREWALL;
        goto out;
    }
    if (r < 0)
        goto out;
    const char *ssh = getenv("SSH_CONNECTION");
    if (ssh && *ssh && p.ssh[0] && !strcmp(ssh, p.ssh)) {
        log_error("refusing to confirm from the SSH connection that ran --apply (%s): that "
                  "connection was open before the new rules; open a NEW ssh connection and run "
                  "confirm there, to prove the new rules let you in",
                  ssh);
        r = ERR_FIREWALL;
        goto out;
    }
    snprintf(name, sizeof(name), "confirmed-%s", p.token);
    fwdir_file(&d, name, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("cannot write %s: %s", path, strerror(errno));
        r = ERR_FIREWALL;
        goto out;
    }
    close(fd);
    if (!timer_alive(p.pid)) {
        /* No timer to see the marker (it died, or the host rebooted): finish its work. */
        pending_remove(&d);
        marker_remove(&d, p.token);
    }
    fw_log(&d, "apply %s confirmed from %s", p.token, ssh && *ssh ? ssh : "a console");
    printf("confirmed: the ruleset applied with --format %s stays; the rollback is cancelled\n",
           fw_format_name(p.format));
    r = 0;
out:
    fwdir_close(&d);
    return r;
}

static int do_rollback(const cfg_t *cfg, fw_format_t format, bool format_given)
{
    struct fwdir d;
    struct pending p;
    bool existed = false;

    int r = fwdir_open(&d, cfg);
    if (r < 0)
        goto out;
    r = pending_read(&d, &p);
    if (r == 0 && !format_given)
        format = p.format;
    else if (r < 0 && r != UV_ENOENT)
        goto out;
    r = restore_previous(&d, format, &existed);
    if (r < 0)
        goto out;
    pending_remove(&d); /* the timer, if any, sees it gone and exits */
    fw_log(&d, "rolled back by hand to %s", backends[format].previous);
    if (format == FW_FORMAT_NFT)
        printf("rolled back: %s\n", existed ? "table inet " FW_TABLE
                                              " is as before the last --apply"
                                            : "table inet " FW_TABLE " removed (there was none "
                                              "before the last --apply)");
    else
        printf("rolled back: the filter table is as before the last --apply (%s)\n",
               fw_format_name(format));
out:
    fwdir_close(&d);
    return r;
}

int cmd_firewall(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, 'f'},
        {"cloudflare-ranges", required_argument, NULL, 'r'},
        {"check", no_argument, NULL, 'k'},
        {"apply", no_argument, NULL, 'a'},
        {"confirm-within", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *ranges[8];
    size_t n_ranges = 0;
    fw_format_t format = FW_FORMAT_NFT;
    bool check = false, apply = false, format_given = false, within_given = false;
    unsigned long within = 60;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:f:r:kaw:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'f':
            if (fw_format_parse(optarg, &format) < 0) {
                log_error("--format: expected nft, iptables-restore or ip6tables-restore, got "
                          "'%s'",
                          optarg);
                return err_exit_code(ERR_USAGE);
            }
            format_given = true;
            break;
        case 'r':
            if (n_ranges == sizeof(ranges) / sizeof(ranges[0])) {
                log_error("--cloudflare-ranges: at most %zu files", n_ranges);
                return err_exit_code(ERR_USAGE);
            }
            ranges[n_ranges++] = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'a':
            apply = true;
            break;
        case 'w': {
            char *end;
            errno = 0;
            within = strtoul(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-' || within < 1 ||
                within > 86400) {
                log_error("--confirm-within: expected seconds, 1 to 86400, got '%s'", optarg);
                return err_exit_code(ERR_USAGE);
            }
            within_given = true;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return err_exit_code(ERR_USAGE);
        }
    }
    const char *sub = optind < argc ? argv[optind++] : NULL;
    if (optind != argc || (sub && strcmp(sub, "confirm") && strcmp(sub, "rollback"))) {
        log_error("firewall: unexpected argument '%s'; run 'understudy-controller firewall "
                  "--help'",
                  argv[optind - 1]);
        return err_exit_code(ERR_USAGE);
    }
    if (!config_path) {
        log_error("firewall needs --config FILE; run 'understudy-controller firewall --help'");
        return err_exit_code(ERR_USAGE);
    }
    if ((check && apply) || (sub && (check || apply || n_ranges || within_given)) ||
        (within_given && !apply) || (sub && !strcmp(sub, "confirm") && format_given)) {
        log_error("firewall: these options do not go together; run 'understudy-controller "
                  "firewall --help'");
        return err_exit_code(ERR_USAGE);
    }

    char config_abs[PATH_MAX];
    if (!realpath(config_path, config_abs))
        snprintf(config_abs, sizeof(config_abs), "%s", config_path);
    cfg_t *cfg = NULL;
    int r = controller_load_config(config_path, &cfg);
    if (r < 0)
        return err_exit_code(r);
    signal(SIGPIPE, SIG_IGN); /* a tool that stops reading must not kill us mid-apply */

    if (sub && !strcmp(sub, "confirm")) {
        r = do_confirm(cfg);
        cfg_free(cfg);
        return err_exit_code(r);
    }
    if (sub) {
        r = do_rollback(cfg, format, format_given);
        cfg_free(cfg);
        return err_exit_code(r);
    }

    fw_spec_t spec;
    buf_t out = BUF_INIT;
    fw_spec_init(&spec);
    char ranges_origin[2 * PATH_MAX];
    r = spec_from_config(&spec, cfg, ranges, n_ranges, config_abs, ranges_origin,
                         sizeof(ranges_origin));
    if (r == 0) {
        r = fw_generate(&spec, format, &out);
        if (r < 0)
            log_error("%s", fw_last_error(&spec));
    }
    if (r == 0 && spec.primary.n == 0)
        log_warn("no [firewall] primary: the agent port %u stays closed, so no agent can sync",
                 spec.listen_port);
    if (r == 0 && format != FW_FORMAT_NFT) {
        int family = format == FW_FORMAT_IPTABLES ? AF_INET : AF_INET6;
        if (list_count(&spec.admin, family) == 0)
            log_warn("no %s address in [firewall] admin: SSH over %s will be closed",
                     family == AF_INET ? "IPv4" : "IPv6", family == AF_INET ? "IPv4" : "IPv6");
    }
    if (r == 0) {
        if (apply) {
            r = do_apply(cfg, &spec, format, (const char *)buf_data(&out), out.len,
                         (unsigned)within, config_abs);
        } else if (check) {
            r = tool_feed(format, true, (const char *)buf_data(&out), out.len,
                          "checking the ruleset");
            if (r == 0)
                printf("ok: the %s ruleset passes %s\n", fw_format_name(format),
                       format == FW_FORMAT_NFT ? "'nft -c'" : "--test");
        } else if (fwrite(buf_data(&out), 1, out.len, stdout) != out.len || fflush(stdout)) {
            log_error("cannot write the ruleset: %s", strerror(errno));
            r = UV_EIO;
        }
    }
    buf_free(&out);
    fw_spec_free(&spec);
    cfg_free(cfg);
    return err_exit_code(r);
}
