/* Tests for the firewall ruleset generator (controller/firewall.h): strict address parsing,
 * ranges files, the built-in Cloudflare list against deploy/, the nft and iptables-restore
 * outputs, and the refusals (SSH lock-out, empty Cloudflare list, shared ports). Loading the
 * rulesets into the kernel is tests/integration/firewall.sh's job. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "firewall.h"

/* A spec with admin 198.19.1.2 and 2001:db8:f::a, primary 198.19.2.0/24, agent port 7443 and
 * the built-in Cloudflare list. */
static void spec_sample(fw_spec_t *spec)
{
    fw_spec_init(spec);
    assert_int_equal(fw_spec_add(spec, &spec->admin, "t: [firewall] admin", "198.19.1.2"), 0);
    assert_int_equal(fw_spec_add(spec, &spec->admin, "t: [firewall] admin", "2001:db8:f::a"), 0);
    assert_int_equal(fw_spec_add(spec, &spec->primary, "t: [firewall] primary", "198.19.2.0/24"),
                     0);
    assert_int_equal(fw_spec_add_builtin_ranges(spec), 0);
    spec->listen_port = 7443;
}

/* Generates the ruleset as a NUL-terminated string the caller frees, asserting success. */
static char *generate(fw_spec_t *spec, fw_format_t format)
{
    buf_t out = BUF_INIT;
    int r = fw_generate(spec, format, &out);
    if (r < 0)
        fail_msg("fw_generate: %s", fw_last_error(spec));
    assert_int_equal(buf_append(&out, "", 1), 0);
    char *text = strdup((const char *)buf_data(&out));
    buf_free(&out);
    assert_non_null(text);
    return text;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

#define assert_contains(text, needle)                                                              \
    do {                                                                                           \
        if (!strstr((text), (needle)))                                                             \
            fail_msg("missing \"%s\" in:\n%s", (needle), (text));                                  \
    } while (0)

#define assert_lacks(text, needle)                                                                 \
    do {                                                                                           \
        if (strstr((text), (needle)))                                                              \
            fail_msg("unexpected \"%s\" in:\n%s", (needle), (text));                               \
    } while (0)

static void t_cidr_valid(void **state)
{
    static const struct {
        const char *in, *canonical;
        int family;
        unsigned prefix;
    } cases[] = {
        {"192.0.2.1", "192.0.2.1", AF_INET, 32},
        {"192.0.2.0/24", "192.0.2.0/24", AF_INET, 24},
        {"198.18.0.0/15", "198.18.0.0/15", AF_INET, 15},
        {"10.0.0.0/8", "10.0.0.0/8", AF_INET, 8},
        {"203.0.113.7/32", "203.0.113.7", AF_INET, 32},
        {"2001:db8::1", "2001:db8::1", AF_INET6, 128},
        {"2001:DB8:0:0::/64", "2001:db8::/64", AF_INET6, 64},
        {"2a06:98c0::/29", "2a06:98c0::/29", AF_INET6, 29},
        {"::1", "::1", AF_INET6, 128},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fw_cidr_t c;
        char text[64];
        const char *why = NULL;
        if (fw_cidr_parse(cases[i].in, &c, &why) != 0)
            fail_msg("%s rejected: %s", cases[i].in, why);
        assert_int_equal(c.family, cases[i].family);
        assert_int_equal(c.prefix, cases[i].prefix);
        fw_cidr_format(&c, text, sizeof(text));
        assert_string_equal(text, cases[i].canonical);
    }
}

static void t_cidr_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "/24",
        "192.0.2.1/24",  /* host bits */
        "192.0.2.0/33",  /* prefix range */
        "192.0.2.0/024", /* leading zero */
        "192.0.2.0/",    /* no prefix */
        "192.0.2.0/0",   /* the whole Internet */
        "192.0.2.0/+8",  /* sign */
        "192.0.2.0/8x",  /* trailing junk */
        "192.0.2.0/2/4", /* two slashes */
        "256.0.0.1",     /* octet range */
        "192.0.2",       /* three parts */
        "192.0.2.01",    /* leading zero in an octet */
        " 192.0.2.1",    /* spaces are the caller's business, not ours */
        "192.0.2.1 ",    /* */
        "0x7f.0.0.1",    /* hex */
        "::ffff:192.0.2.1",
        "2001:db8::/129",
        "2001:db8::1/64", /* host bits */
        "::/0",
        "fe80::1%eth0",
        "2001:db8:::1",
        "example.org",
        "1234567890123456789012345678901234567890123456789012345678901234567890",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fw_cidr_t c;
        const char *why = NULL;
        if (fw_cidr_parse(bad[i], &c, &why) != ERR_CONFIG)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_non_null(why);
        assert_true(strlen(why) > 5);
    }
}

static void t_spec_add_error_names_key(void **state)
{
    fw_spec_t spec;
    (void)state;
    fw_spec_init(&spec);
    assert_int_equal(fw_spec_add(&spec, &spec.admin, "/etc/u.conf: [firewall] admin", "10.0.0.1/8"),
                     ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "/etc/u.conf: [firewall] admin: expected an IPv4 or IPv6 "
                                          "address or CIDR, got \"10.0.0.1/8\"");
    assert_int_equal(spec.admin.n, 0);
    assert_int_equal(fw_spec_add(&spec, &spec.admin, "x", "bad\nline"), ERR_CONFIG);
    assert_null(strchr(fw_last_error(&spec), '\n'));
    fw_spec_free(&spec);
}

static void t_ranges_file(void **state)
{
    static const char text[] = "# Cloudflare, test copy\r\n"
                               "\n"
                               "198.18.8.0/24\r\n"
                               "   2001:db8:cf::/48   # trailing comment\n"
                               "\t198.18.9.1\n"
                               "# the end, no newline after the last entry:\n"
                               "203.0.113.0/25";
    fw_spec_t spec;
    char t[64];
    (void)state;
    fw_spec_init(&spec);
    assert_int_equal(fw_spec_add_ranges(&spec, "r.txt", text, strlen(text)), 4);
    assert_int_equal(spec.cloudflare.n, 4);
    fw_cidr_format(&spec.cloudflare.items[1], t, sizeof(t));
    assert_string_equal(t, "2001:db8:cf::/48");
    fw_cidr_format(&spec.cloudflare.items[3], t, sizeof(t));
    assert_string_equal(t, "203.0.113.0/25");
    fw_spec_free(&spec);
}

static void t_ranges_errors(void **state)
{
    fw_spec_t spec;
    (void)state;

    fw_spec_init(&spec);
    static const char bad[] = "# ok\n198.18.8.0/24\n10.1.2.3/8\n";
    assert_int_equal(fw_spec_add_ranges(&spec, "r.txt", bad, strlen(bad)), ERR_CONFIG);
    assert_contains(fw_last_error(&spec),
                    "r.txt:3: expected an IPv4 or IPv6 CIDR, got \"10.1.2.3/8\": ");
    fw_spec_free(&spec);

    fw_spec_init(&spec);
    static const char two[] = "198.18.8.0/24 198.18.9.0/24\n";
    assert_int_equal(fw_spec_add_ranges(&spec, "r.txt", two, strlen(two)), ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "r.txt:1:");
    fw_spec_free(&spec);

    fw_spec_init(&spec);
    static const char nul[] = "198.18.8.0/24\n19\0008.18.9.0/24\n";
    assert_int_equal(fw_spec_add_ranges(&spec, "r.txt", nul, sizeof(nul) - 1), ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "r.txt:2:");
    fw_spec_free(&spec);

    fw_spec_init(&spec);
    static const char empty[] = "# nothing but comments\n\n   # here\n";
    assert_int_equal(fw_spec_add_ranges(&spec, "r.txt", empty, strlen(empty)), ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "r.txt: no ranges");
    assert_int_equal(fw_spec_add_ranges(&spec, "r.txt", "", 0), ERR_CONFIG);
    fw_spec_free(&spec);
}

/* The built-in list is the one shipped in deploy/, entry for entry. */
static void t_builtin_matches_deploy(void **state)
{
    fw_spec_t shipped, builtin;
    const char *src = getenv("UNDERSTUDY_SOURCE");
    (void)state;
    if (!src)
        src = ".";
    fw_spec_init(&shipped);
    fw_spec_init(&builtin);
    for (int v = 4; v <= 6; v += 2) {
        char path[4096], text[8192];
        snprintf(path, sizeof(path), "%s/deploy/cloudflare-ips-v%d.txt", src, v);
        FILE *f = fopen(path, "r");
        if (!f)
            fail_msg("cannot open %s (set UNDERSTUDY_SOURCE)", path);
        size_t n = fread(text, 1, sizeof(text), f);
        fclose(f);
        assert_true(n < sizeof(text));
        assert_non_null(strstr(text, FW_CLOUDFLARE_DATE)); /* the header gives the date */
        assert_true(fw_spec_add_ranges(&shipped, path, text, n) > 0);
    }
    assert_int_equal(fw_spec_add_builtin_ranges(&builtin), 0);
    assert_int_equal(shipped.cloudflare.n, 22);
    assert_int_equal(builtin.cloudflare.n, shipped.cloudflare.n);
    assert_memory_equal(builtin.cloudflare.items, shipped.cloudflare.items,
                        shipped.cloudflare.n * sizeof(fw_cidr_t));
    fw_spec_free(&shipped);
    fw_spec_free(&builtin);
}

static void t_nft(void **state)
{
    fw_spec_t spec;
    (void)state;
    spec_sample(&spec);
    char *t = generate(&spec, FW_FORMAT_NFT);

    /* One table of our own, rebuilt from nothing inside the one transaction. */
    const char *head = "\ntable inet understudy\ndelete table inet understudy\n\n"
                       "table inet understudy {\n";
    assert_contains(t, head);
    assert_int_equal(count(t, "policy drop;"), 2);
    assert_true(strstr(t, "policy drop;") > strstr(t, head));
    assert_contains(t, "A drop policy in any base chain is final");
    assert_lacks(t, "hook forward");
    assert_lacks(t, "flush ruleset");
    assert_int_equal(count(t, "\ntable "), 2); /* ours, created then defined; nothing else */
    assert_int_equal(count(t, "table inet understudy"), 3);

    /* Cloudflare's ranges, both families. */
    assert_contains(t, "set cloudflare_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n");
    assert_contains(t, "173.245.48.0/20");
    assert_contains(t, "131.0.72.0/22");
    assert_contains(t, "2a06:98c0::/29");
    assert_contains(t, "tcp dport { 80, 443 } ip saddr @cloudflare_v4 accept\n");
    assert_contains(t, "tcp dport { 80, 443 } ip6 saddr @cloudflare_v6 accept\n");

    /* SSH from admin only, agent port from primary only. */
    assert_contains(t, "set admin_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n"
                       "\t\telements = { 198.19.1.2 }\n");
    assert_contains(t, "elements = { 2001:db8:f::a }");
    assert_contains(t, "tcp dport 22 ip saddr @admin_v4 accept\n");
    assert_contains(t, "tcp dport 22 ip6 saddr @admin_v6 accept\n");
    assert_contains(t, "tcp dport 7443 ip saddr @primary_v4 accept\n");
    assert_lacks(t, "primary_v6"); /* no IPv6 primary: no set, no rule */
    assert_int_equal(count(t, "dport 22 "), 2);
    assert_int_equal(count(t, "dport 7443 "), 1);

    /* Basics: loopback, replies, neighbour discovery before the invalid-state drop. */
    assert_contains(t, "iif \"lo\" accept");
    assert_contains(t, "oif \"lo\" accept");
    assert_int_equal(count(t, "ct state established,related accept"), 2);
    const char *nd = strstr(t, "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert");
    assert_non_null(nd);
    assert_true(nd < strstr(t, "ct state invalid drop"));
    assert_contains(t, "packet-too-big");
    assert_contains(t, "meta l4proto { icmp, ipv6-icmp } accept");

    /* Outbound: DNS, HTTP(S), SMTP. */
    assert_contains(t, "th dport 53 accept");
    assert_contains(t, "tcp dport { 80, 443 } accept");
    assert_contains(t, "tcp dport { 25, 465, 587 } accept");

    assert_lacks(t, "webhook_port");
    assert_lacks(t, "8443");
    free(t);

    spec.webhook_port = 8443;
    t = generate(&spec, FW_FORMAT_NFT);
    assert_contains(t, "tcp dport 8443 ip saddr @cloudflare_v4 accept\n");
    assert_contains(t, "tcp dport 8443 ip6 saddr @cloudflare_v6 accept\n");
    free(t);
    fw_spec_free(&spec);
}

static void t_nft_custom_ports_and_ranges(void **state)
{
    fw_spec_t spec;
    static const char ranges[] = "198.18.8.0/24\n";
    (void)state;
    fw_spec_init(&spec);
    assert_int_equal(fw_spec_add(&spec, &spec.admin, "a", "2001:db8::/64"), 0);
    assert_int_equal(fw_spec_add_ranges(&spec, "r", ranges, strlen(ranges)), 1);
    assert_int_equal(fw_spec_set_http_ports(&spec, "p", "8080"), 0);
    spec.ssh_port = 2222;
    spec.listen_port = 7443;
    char *t = generate(&spec, FW_FORMAT_NFT);
    assert_contains(t, "tcp dport 8080 ip saddr @cloudflare_v4 accept\n");
    assert_lacks(t, "cloudflare_v6");
    assert_lacks(t, "173.245.48.0/20");
    assert_contains(t, "tcp dport 2222 ip6 saddr @admin_v6 accept\n");
    assert_lacks(t, "admin_v4");
    assert_contains(t, "(no addresses: port 7443 stays closed)");
    free(t);
    fw_spec_free(&spec);
}

static void t_iptables(void **state)
{
    fw_spec_t spec;
    (void)state;
    spec_sample(&spec);
    spec.webhook_port = 8443;

    char *t = generate(&spec, FW_FORMAT_IPTABLES);
    assert_true(strstr(t, "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n"));
    assert_int_equal(count(t, "\nCOMMIT\n"), 1);
    assert_contains(t,
                    "-A INPUT -s 173.245.48.0/20 -p tcp -m multiport --dports 80,443 -j ACCEPT\n");
    assert_contains(t, "-A INPUT -s 131.0.72.0/22 -p tcp -m tcp --dport 8443 -j ACCEPT\n");
    assert_contains(t, "-A INPUT -s 198.19.1.2 -p tcp -m tcp --dport 22 -j ACCEPT\n");
    assert_contains(t, "-A INPUT -s 198.19.2.0/24 -p tcp -m tcp --dport 7443 -j ACCEPT\n");
    assert_contains(t, "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    assert_contains(t, "-A OUTPUT -p tcp -m multiport --dports 80,443,25,465,587 -j ACCEPT\n");
    assert_contains(t, "--icmp-type echo-request");
    assert_lacks(t, "2001:db8");
    assert_lacks(t, "2400:cb00");
    assert_lacks(t, "icmp6");
    assert_int_equal(count(t, "--dport 22 "), 1);
    free(t);

    t = generate(&spec, FW_FORMAT_IP6TABLES);
    assert_contains(t, "*filter\n:INPUT DROP [0:0]\n");
    assert_contains(t,
                    "-A INPUT -s 2400:cb00::/32 -p tcp -m multiport --dports 80,443 -j ACCEPT\n");
    assert_contains(t, "-A INPUT -s 2001:db8:f::a -p tcp -m tcp --dport 22 -j ACCEPT\n");
    assert_contains(t, "--icmpv6-type neighbour-solicitation -m hl --hl-eq 255 -j ACCEPT\n");
    assert_contains(t, "--icmpv6-type neighbour-advertisement -m hl --hl-eq 255 -j ACCEPT\n");
    assert_contains(t, "--icmpv6-type packet-too-big -j ACCEPT\n");
    assert_true(strstr(t, "neighbour-solicitation") < strstr(t, "--ctstate INVALID -j DROP"));
    assert_contains(t, "(no IPv6 addresses: port 7443 stays closed)");
    assert_lacks(t, "198.19.");
    assert_lacks(t, "173.245.");
    free(t);
    fw_spec_free(&spec);
}

static void t_refuses_ssh_lockout(void **state)
{
    fw_spec_t spec;
    buf_t out = BUF_INIT;
    (void)state;
    fw_spec_init(&spec);
    assert_int_equal(fw_spec_add_builtin_ranges(&spec), 0);
    assert_int_equal(fw_spec_add(&spec, &spec.primary, "p", "198.19.2.2"), 0);
    spec.listen_port = 7443;
    for (int f = FW_FORMAT_NFT; f <= FW_FORMAT_IP6TABLES; f++) {
        assert_int_equal(fw_generate(&spec, (fw_format_t)f, &out), ERR_CONFIG);
        assert_string_equal(fw_last_error(&spec),
                            "refusing to generate a ruleset that locks SSH: set [firewall] admin "
                            "= YOUR.IP");
        assert_int_equal(out.len, 0);
    }
    fw_spec_free(&spec);
}

static void t_refuses_empty_cloudflare(void **state)
{
    fw_spec_t spec;
    buf_t out = BUF_INIT;
    (void)state;
    fw_spec_init(&spec);
    assert_int_equal(fw_spec_add(&spec, &spec.admin, "a", "198.19.1.2"), 0);
    spec.listen_port = 7443;
    assert_int_equal(fw_generate(&spec, FW_FORMAT_NFT, &out), ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "empty Cloudflare list");
    assert_int_equal(out.len, 0);
    fw_spec_free(&spec);
}

static void t_refuses_bad_ports(void **state)
{
    fw_spec_t spec;
    buf_t out = BUF_INIT;
    (void)state;

    spec_sample(&spec);
    spec.listen_port = 0;
    assert_int_equal(fw_generate(&spec, FW_FORMAT_NFT, &out), ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "[listen] address");

    spec.listen_port = 22;
    assert_int_equal(fw_generate(&spec, FW_FORMAT_NFT, &out), ERR_CONFIG);
    assert_contains(fw_last_error(&spec),
                    "port 22 is both [firewall] ssh_port and the port of [listen] address");

    spec.listen_port = 7443;
    spec.webhook_port = 443;
    assert_int_equal(fw_generate(&spec, FW_FORMAT_IPTABLES, &out), ERR_CONFIG);
    assert_contains(fw_last_error(&spec), "[firewall] http_ports and [firewall] webhook_port");
    assert_int_equal(out.len, 0);
    fw_spec_free(&spec);
}

static void t_http_ports(void **state)
{
    fw_spec_t spec;
    (void)state;
    fw_spec_init(&spec);
    assert_int_equal(spec.n_http_ports, 2);
    assert_int_equal(fw_spec_set_http_ports(&spec, "p", " 80, 443 8080,8443 "), 0);
    assert_int_equal(spec.n_http_ports, 4);
    assert_int_equal(spec.http_ports[2], 8080);
    static const char *const bad[] = {"",      " , ",   "0",
                                      "65536", "80,80", "08",
                                      "80x",   "-1",    "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (fw_spec_set_http_ports(&spec, "c: [firewall] http_ports", bad[i]) != ERR_CONFIG)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_contains(fw_last_error(&spec), "c: [firewall] http_ports");
    }
    assert_int_equal(spec.n_http_ports, 4); /* unchanged by the failures */
    fw_spec_free(&spec);
}

static void t_formats(void **state)
{
    fw_format_t f;
    (void)state;
    assert_int_equal(fw_format_parse("nft", &f), 0);
    assert_int_equal(f, FW_FORMAT_NFT);
    assert_int_equal(fw_format_parse("iptables-restore", &f), 0);
    assert_int_equal(f, FW_FORMAT_IPTABLES);
    assert_int_equal(fw_format_parse("ip6tables-restore", &f), 0);
    assert_int_equal(f, FW_FORMAT_IP6TABLES);
    assert_string_equal(fw_format_name(FW_FORMAT_IP6TABLES), "ip6tables-restore");
    assert_int_equal(fw_format_parse("iptables", &f), ERR_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_cidr_valid),
        cmocka_unit_test(t_cidr_invalid),
        cmocka_unit_test(t_spec_add_error_names_key),
        cmocka_unit_test(t_ranges_file),
        cmocka_unit_test(t_ranges_errors),
        cmocka_unit_test(t_builtin_matches_deploy),
        cmocka_unit_test(t_nft),
        cmocka_unit_test(t_nft_custom_ports_and_ranges),
        cmocka_unit_test(t_iptables),
        cmocka_unit_test(t_refuses_ssh_lockout),
        cmocka_unit_test(t_refuses_empty_cloudflare),
        cmocka_unit_test(t_refuses_bad_ports),
        cmocka_unit_test(t_http_ports),
        cmocka_unit_test(t_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
