/* Unit tests for common/cfg: schema checks, error lines, typed values, secret files, templates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "cfg.h"
#include "err.h"
#include "testutil.h"

#define FP_COLONS                                                                                  \
    "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:"   \
    "67:89"
#define FP_PLAIN "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
#define FP2      "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static const cfg_key_t schema[] = {
    {"server", "address", CFG_ADDRESS, CFG_REQUIRED, NULL, "where to connect, HOST:PORT"},
    {"server", "fingerprint", CFG_FINGERPRINT, CFG_REQUIRED | CFG_MULTI, NULL,
     "the server's certificate fingerprint"},
    {"server", "key", CFG_PATH, CFG_REQUIRED, NULL, "our private key"},
    {"limits", "max_size", CFG_SIZE, 0, "64M", "largest file"},
    {"limits", "timeout", CFG_DURATION, 0, "30s", "how long to wait"},
    {"limits", "workers", CFG_UINT, 0, "4", "worker threads"},
    {"limits", "verbose", CFG_BOOL, 0, "no", "say more"},
    {"limits", "owner", CFG_OWNER, 0, "www-data:www-data", "who owns restored files"},
    {"limits", "password", CFG_STRING, 0, NULL, "a secret"},
    {"limits", "exclude", CFG_PATH, CFG_MULTI, NULL, "paths to skip"},
    {NULL, NULL, 0, 0, NULL, NULL},
};

static const char good[] = "; a comment\n"
                           "# another comment\n"
                           "\n"
                           "[server]\n"
                           "address = db.example.org:8443\n"
                           "fingerprint = " FP_PLAIN "\n"
                           "fingerprint = sha256:" FP2 "\n"
                           "  key=/etc/understudy/key.pem\n"
                           "[limits]\n"
                           "max_size = 2G\n"
                           "timeout = 5m\n"
                           "workers = 12\n"
                           "verbose = On\n"
                           "owner = www-data:www-data\n"
                           "password = p#ss;word # not a comment\n"
                           "exclude = /var/www/cache\n"
                           "exclude = /var/www/tmp\n";

/* Loads text and returns the result; the cfg is left in *ret_cfg for inspection. */
static int load(const char *text, cfg_t **ret_cfg)
{
    cfg_t *cfg = cfg_new(schema);
    assert_non_null(cfg);
    *ret_cfg = cfg;
    return cfg_load_string(cfg, "/etc/t.conf", text);
}

/* Loads text, expects failure with exactly the message want. */
static void expect_error(const char *text, int code, const char *want)
{
    cfg_t *cfg;
    int r = load(text, &cfg);
    if (strcmp(cfg_last_error(cfg), want) != 0)
        print_error("got:  %s\nwant: %s\n", cfg_last_error(cfg), want);
    assert_int_equal(r, code);
    assert_string_equal(cfg_last_error(cfg), want);
    cfg_free(cfg);
}

/* The required part of a valid file, for tests that add one line to it. */
#define REQUIRED_PART "[server]\naddress = 127.0.0.1:1\nfingerprint = " FP_PLAIN "\nkey = /k\n"

static void t_good_file(void **state)
{
    const char *const *fps, *const *ex;
    cfg_t *cfg;

    assert_int_equal(load(good, &cfg), 0);
    assert_string_equal(cfg_last_error(cfg), "");
    assert_string_equal(cfg_path(cfg), "/etc/t.conf");
    assert_string_equal(cfg_get(cfg, "server", "address"), "db.example.org:8443");
    assert_string_equal(cfg_get(cfg, "server", "fingerprint"), FP_COLONS);
    assert_int_equal(cfg_get_all(cfg, "server", "fingerprint", &fps), 2);
    assert_string_equal(fps[0], FP_COLONS);
    assert_string_equal(fps[1], "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:"
                                "66:77:88:99:AA:BB:CC:DD:EE:FF");
    assert_string_equal(cfg_get(cfg, "server", "key"), "/etc/understudy/key.pem");
    assert_int_equal(cfg_get_size(cfg, "limits", "max_size", 0), 2ULL << 30);
    assert_int_equal(cfg_get_duration(cfg, "limits", "timeout", 0), 300);
    assert_int_equal(cfg_get_uint(cfg, "limits", "workers", 0), 12);
    assert_true(cfg_get_bool(cfg, "limits", "verbose", false));
    assert_string_equal(cfg_get(cfg, "limits", "owner"), "www-data:www-data");
    /* Inline comments are off: '#' and ';' belong to the value. */
    assert_string_equal(cfg_get(cfg, "limits", "password"), "p#ss;word # not a comment");
    assert_int_equal(cfg_get_all(cfg, "limits", "exclude", &ex), 2);
    assert_string_equal(ex[0], "/var/www/cache");
    assert_string_equal(ex[1], "/var/www/tmp");
    cfg_free(cfg);
}

static void t_line_numbers(void **state)
{
    cfg_t *cfg;

    assert_int_equal(load(good, &cfg), 0);
    assert_int_equal(cfg_line(cfg, "server", "address"), 5);
    assert_int_equal(cfg_line(cfg, "server", "fingerprint"), 6);
    assert_int_equal(cfg_line(cfg, "server", "key"), 8);
    assert_int_equal(cfg_line(cfg, "limits", "exclude"), 16);
    cfg_free(cfg);

    /* Defaults have no line. */
    assert_int_equal(load(REQUIRED_PART, &cfg), 0);
    assert_int_equal(cfg_line(cfg, "limits", "workers"), 0);
    cfg_free(cfg);

    /* An error after comments, blank lines and CRLF endings names the right line. */
    expect_error("\r\n; c\r\n\r\n[server]\r\n# x = y\r\n  \r\naddress = nope\r\n", ERR_CONFIG,
                 "/etc/t.conf:7: [server] address: expected HOST:PORT, got \"nope\"");
    expect_error(REQUIRED_PART "[limits]\n\n\nworkers = -1\n", ERR_CONFIG,
                 "/etc/t.conf:8: [limits] workers: expected a non-negative integer, got \"-1\"");
}

static void t_crlf_and_bom(void **state)
{
    cfg_t *cfg;

    assert_int_equal(load("\xEF\xBB\xBF[server]\r\naddress = [::1]:80\r\nfingerprint = " FP_PLAIN
                          "\r\nkey = /k\r\n",
                          &cfg),
                     0);
    assert_string_equal(cfg_get(cfg, "server", "address"), "[::1]:80");
    assert_string_equal(cfg_get(cfg, "server", "key"), "/k");
    cfg_free(cfg);
}

static void t_unknown_key(void **state)
{
    expect_error(REQUIRED_PART "adress = x\n", ERR_CONFIG,
                 "/etc/t.conf:5: unknown key 'adress' in [server]; known keys: address, "
                 "fingerprint, key");
    expect_error("workers = 3\n", ERR_CONFIG,
                 "/etc/t.conf:1: key 'workers' comes before any [section]");
}

static void t_unknown_section(void **state)
{
    expect_error(REQUIRED_PART "\n[limit]\nworkers = 3\n", ERR_CONFIG,
                 "/etc/t.conf:6: unknown section [limit]; known sections: server, limits");
    /* Even an empty one. */
    expect_error(REQUIRED_PART "[extra]\n", ERR_CONFIG,
                 "/etc/t.conf:5: unknown section [extra]; known sections: server, limits");
    expect_error("[server\n", ERR_CONFIG, "/etc/t.conf:1: section header lacks its closing ']'");
}

static void t_syntax_error(void **state)
{
    expect_error(REQUIRED_PART "[limits]\nverbose\n", ERR_CONFIG,
                 "/etc/t.conf:6: expected \"key = value\", \"[section]\" or a comment, got "
                 "\"verbose\"");
}

struct bad_case {
    const char *line;
    const char *error;
};

static void t_bad_values(void **state)
{
    static const struct bad_case cases[] = {
        {"[server]\naddress = example.org", "[server] address: expected HOST:PORT, got "
                                            "\"example.org\""},
        {"[server]\naddress = example.org:70000", "[server] address: expected HOST:PORT, got "
                                                  "\"example.org:70000\""},
        {"[server]\naddress = ::1:80", "[server] address: expected HOST:PORT, got \"::1:80\""},
        {"[server]\naddress = [::1]", "[server] address: expected HOST:PORT, got \"[::1]\""},
        {"[server]\nfingerprint = ABCD",
         "[server] fingerprint: expected a SHA-256 fingerprint (64 hex digits, ':' separators "
         "optional), got \"ABCD\""},
        {"[server]\nkey = relative/key.pem",
         "[server] key: expected an absolute path, got \"relative/key.pem\""},
        {"[limits]\nmax_size = 10MB",
         "[limits] max_size: expected a size such as 4096, 512K, 64M or 2G, got \"10MB\""},
        {"[limits]\nmax_size = 99999999999G",
         "[limits] max_size: expected a size such as 4096, 512K, 64M or 2G, got "
         "\"99999999999G\""},
        {"[limits]\ntimeout = 5 weeks",
         "[limits] timeout: expected a duration such as 30s, 5m, 2h or 1d, got \"5 weeks\""},
        {"[limits]\nworkers = 1.5", "[limits] workers: expected a non-negative integer, got "
                                    "\"1.5\""},
        {"[limits]\nworkers = 99999999999999999999999",
         "[limits] workers: expected a non-negative integer, got \"99999999999999999999999\""},
        {"[limits]\nverbose = maybe", "[limits] verbose: expected yes or no, got \"maybe\""},
        {"[limits]\nowner = www-data", "[limits] owner: expected USER:GROUP, got \"www-data\""},
        {"[limits]\nowner = a:b:c", "[limits] owner: expected USER:GROUP, got \"a:b:c\""},
        {"[limits]\npassword =", "[limits] password: no value; expected a non-empty value"},
        {"[limits]\nverbose = \"\\x01\"", "[limits] verbose: expected yes or no, got "
                                          "\"\\\"\\\\x01\\\"\""},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[512], want[512];
        snprintf(text, sizeof(text), "%s\n", cases[i].line);
        snprintf(want, sizeof(want), "/etc/t.conf:2: %s", cases[i].error);
        expect_error(text, ERR_CONFIG, want);
    }
}

static void t_repeated_single_key(void **state)
{
    expect_error(REQUIRED_PART "[limits]\nworkers = 1\n\nworkers = 2\n", ERR_CONFIG,
                 "/etc/t.conf:8: [limits] workers: set again (first on line 6); only one value "
                 "is allowed");
}

static void t_multi_keys_in_order(void **state)
{
    const char *const *v;
    cfg_t *cfg;

    assert_int_equal(load(REQUIRED_PART "fingerprint = " FP2 "\n[limits]\nexclude = /c\n"
                                        "[server]\nfingerprint = " FP_COLONS "\n",
                          &cfg),
                     0);
    assert_int_equal(cfg_get_all(cfg, "server", "fingerprint", &v), 3);
    assert_string_equal(v[0], FP_COLONS);
    assert_memory_equal(v[1], "00:11:22", 8);
    assert_string_equal(v[2], FP_COLONS);
    assert_int_equal(cfg_line(cfg, "server", "fingerprint"), 3);
    assert_int_equal(cfg_get_all(cfg, "limits", "exclude", &v), 1);
    assert_string_equal(v[0], "/c");
    cfg_free(cfg);
}

static void t_defaults(void **state)
{
    const char *const *v = NULL;
    cfg_t *cfg;

    assert_int_equal(load(REQUIRED_PART, &cfg), 0);
    assert_string_equal(cfg_get(cfg, "limits", "max_size"), "64M");
    assert_int_equal(cfg_get_size(cfg, "limits", "max_size", 0), 64ULL << 20);
    assert_int_equal(cfg_get_duration(cfg, "limits", "timeout", 0), 30);
    assert_int_equal(cfg_get_uint(cfg, "limits", "workers", 0), 4);
    assert_false(cfg_get_bool(cfg, "limits", "verbose", true));
    assert_null(cfg_get(cfg, "limits", "password"));
    assert_int_equal(cfg_get_all(cfg, "limits", "exclude", &v), 0);
    assert_int_equal(cfg_get_all(cfg, "limits", "owner", &v), 1);
    assert_string_equal(v[0], "www-data:www-data");
    cfg_free(cfg);

    /* Every unit, and the accessors' own default when the key has none. */
    assert_int_equal(load(REQUIRED_PART "[limits]\nmax_size = 3 KiB\ntimeout = 2d\n", &cfg), 0);
    assert_int_equal(cfg_get_size(cfg, "limits", "max_size", 0), 3072);
    assert_int_equal(cfg_get_duration(cfg, "limits", "timeout", 0), 2 * 86400);
    cfg_free(cfg);
    assert_int_equal(load(REQUIRED_PART "[limits]\nmax_size = 7\ntimeout = 3h\n", &cfg), 0);
    assert_int_equal(cfg_get_size(cfg, "limits", "max_size", 0), 7);
    assert_int_equal(cfg_get_duration(cfg, "limits", "timeout", 0), 3 * 3600);
    cfg_free(cfg);
}

static void t_missing_required(void **state)
{
    expect_error("[server]\naddress = h:1\nkey = /k\n", ERR_CONFIG,
                 "/etc/t.conf: [server] fingerprint is required (the server's certificate "
                 "fingerprint)");
    expect_error("", ERR_CONFIG,
                 "/etc/t.conf: [server] address is required (where to connect, "
                 "HOST:PORT)");
}

static void t_limits(void **state)
{
    char *text = malloc(5000);
    cfg_t *cfg;

    assert_non_null(text);
    int head = snprintf(text, 5000, "[server]\naddress = ");
    memset(text + head, 'a', 4200);
    snprintf(text + head + 4200, 5000 - (size_t)head - 4200, ":1\n");
    expect_error(text, ERR_CONFIG, "/etc/t.conf:2: line longer than 4096 bytes");
    free(text);

    /* 4095 characters and the newline fit. */
    text = calloc(1, 5000);
    assert_non_null(text);
    head = snprintf(text, 5000, "[limits]\npassword = ");
    memset(text + head, 'p', 4095 - 11);
    snprintf(text + head + 4095 - 11, 5000 - (size_t)head - (4095 - 11), "\n" REQUIRED_PART);
    assert_int_equal(load(text, &cfg), 0);
    assert_int_equal(strlen(cfg_get(cfg, "limits", "password")), 4095 - 11);
    cfg_free(cfg);
    free(text);
}

static void t_parse_address(void **state)
{
    char host[64];
    uint16_t port = 1;

    assert_int_equal(cfg_parse_address("example.org:443", host, sizeof(host), &port), 0);
    assert_string_equal(host, "example.org");
    assert_int_equal(port, 443);
    assert_int_equal(cfg_parse_address("[2001:db8::1]:0", host, sizeof(host), &port), 0);
    assert_string_equal(host, "2001:db8::1");
    assert_int_equal(port, 0);
    assert_int_equal(cfg_parse_address("[fe80::1%eth0]:8443", host, sizeof(host), &port), 0);
    assert_string_equal(host, "fe80::1%eth0");
    assert_int_equal(cfg_parse_address("10.0.0.1:65535", host, sizeof(host), &port), 0);
    assert_int_equal(port, 65535);

    static const char *const bad[] = {
        "example.org", ":80",          "[::1]",         "[::1]80",    "[nothex]:1", "h:",
        "h:65536",     "h:+1",         "h:1a",          "h: 1",       "a b:1",      "::1:80",
        "[]:1",        "h:0000000080", "[1.2.3.4]:80x", "[::1]:80:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        port = 7;
        if (cfg_parse_address(bad[i], host, sizeof(host), &port) != ERR_CONFIG)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(port, 7);
    }
    /* The host must fit. */
    assert_int_equal(cfg_parse_address("abcdefgh:1", host, 8, &port), ERR_CONFIG);
    assert_int_equal(cfg_parse_address("abcdefg:1", host, 8, &port), 0);
}

static char tmpdir[64];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-cfg.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    return tu_rm_tree(tmpdir);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void t_load_file(void **state)
{
    char path[128];
    cfg_t *cfg;

    snprintf(path, sizeof(path), "%s/agent.conf", tmpdir);
    write_file(path, good, 0644);
    cfg = cfg_new(schema);
    assert_int_equal(cfg_load(cfg, path), 0);
    assert_string_equal(cfg_path(cfg), path);
    assert_int_equal(cfg_get_uint(cfg, "limits", "workers", 0), 12);
    cfg_free(cfg);

    snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
    cfg = cfg_new(schema);
    assert_int_equal(cfg_load(cfg, path), UV_ENOENT);
    assert_non_null(strstr(cfg_last_error(cfg), "missing.conf: cannot read: "));
    cfg_free(cfg);

    /* A NUL byte is refused with its line. */
    snprintf(path, sizeof(path), "%s/nul.conf", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite("[server]\n\nkey = a\0b\n", 1, 20, f);
    fclose(f);
    cfg = cfg_new(schema);
    assert_int_equal(cfg_load(cfg, path), ERR_CONFIG);
    assert_non_null(strstr(cfg_last_error(cfg), "nul.conf:3: contains a NUL byte"));
    cfg_free(cfg);
}

static void t_secret_file(void **state)
{
    char path[128], err[512], want[512];

    snprintf(path, sizeof(path), "%s/key.pem", tmpdir);
    write_file(path, "secret\n", 0600);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), 0);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), 0);

    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), ERR_INSECURE_FILE);
    snprintf(want, sizeof(want), "%s is readable by group or others (mode 0644); run: chmod 600 %s",
             path, path);
    assert_string_equal(err, want);

    assert_int_equal(chmod(path, 0620), 0);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), ERR_INSECURE_FILE);
    assert_non_null(strstr(err, "is writable by group or others (mode 0620)"));

    assert_int_equal(chmod(path, 0607), 0);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), ERR_INSECURE_FILE);
    assert_non_null(strstr(err, "is readable, writable and executable by group or others"));

    assert_int_equal(chmod(path, 0601), 0);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), ERR_INSECURE_FILE);

    /* A path a shell would split is quoted in the advice. */
    snprintf(path, sizeof(path), "%s/my key's.pem", tmpdir);
    write_file(path, "secret\n", 0640);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), ERR_INSECURE_FILE);
    snprintf(want, sizeof(want), "run: chmod 600 '%s/my key'\\''s.pem'", tmpdir);
    assert_non_null(strstr(err, want));

    snprintf(path, sizeof(path), "%s/absent.pem", tmpdir);
    assert_int_equal(cfg_check_secret_file(path, err, sizeof(err)), UV_ENOENT);
    assert_non_null(strstr(err, "absent.pem: "));
    assert_int_equal(cfg_check_secret_file(tmpdir, err, sizeof(err)), UV_EISDIR);
}

static void t_template_round_trip(void **state)
{
    static const char *const values[] = {
        "server.address",
        "[2001:db8::5]:8443",
        "server.fingerprint",
        FP_PLAIN,
        "server.fingerprint",
        FP2,
        "server.key",
        "/etc/understudy/agent key.pem",
        "limits.password",
        "p#ss;w",
        NULL,
    };
    const char *const *v;
    char path[128], text[4096];
    struct stat st;
    cfg_t *cfg;

    snprintf(path, sizeof(path), "%s/template.conf", tmpdir);
    assert_int_equal(cfg_write_template(schema, path, "understudy test\n\nsecond line", values), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_non_null(strstr(text, "# understudy test\n#\n# second line\n"));
    assert_non_null(strstr(text, "[server]\n\n# where to connect, HOST:PORT (required)\n"
                                 "address = [2001:db8::5]:8443\n"));
    assert_non_null(strstr(text, "# worker threads\n#workers = 4\n"));
    assert_non_null(strstr(text, "#exclude =\n"));

    cfg = cfg_new(schema);
    if (cfg_load(cfg, path) != 0)
        fail_msg("%s", cfg_last_error(cfg));
    assert_string_equal(cfg_get(cfg, "server", "address"), "[2001:db8::5]:8443");
    assert_int_equal(cfg_get_all(cfg, "server", "fingerprint", &v), 2);
    assert_string_equal(v[0], FP_COLONS);
    assert_string_equal(cfg_get(cfg, "server", "key"), "/etc/understudy/agent key.pem");
    assert_string_equal(cfg_get(cfg, "limits", "password"), "p#ss;w");
    assert_int_equal(cfg_get_uint(cfg, "limits", "workers", 0), 4);
    assert_int_equal(cfg_line(cfg, "limits", "workers"), 0);
    cfg_free(cfg);

    /* Without values the required keys are commented out, and loading says which is missing;
     * appending them under their section header completes the file. */
    assert_int_equal(cfg_write_template(schema, path, NULL, NULL), 0);
    cfg = cfg_new(schema);
    assert_int_equal(cfg_load(cfg, path), ERR_CONFIG);
    assert_non_null(strstr(cfg_last_error(cfg), "template.conf: [server] address is required "
                                                "(where to connect, HOST:PORT)"));
    cfg_free(cfg);
    f = fopen(path, "a");
    assert_non_null(f);
    fputs("\n[server]\naddress = h:1\nfingerprint = " FP2 "\nkey = /k\n", f);
    fclose(f);
    cfg = cfg_new(schema);
    if (cfg_load(cfg, path) != 0)
        fail_msg("%s", cfg_last_error(cfg));
    assert_string_equal(cfg_get(cfg, "server", "address"), "h:1");
    cfg_free(cfg);

    /* Values must name schema keys and fit on one line. */
    static const char *const unknown[] = {"server.nope", "x", NULL};
    static const char *const multiline[] = {"server.key", "/a\nb", NULL};
    assert_int_equal(cfg_write_template(schema, path, NULL, unknown), UV_EINVAL);
    assert_int_equal(cfg_write_template(schema, path, NULL, multiline), UV_EINVAL);

    snprintf(path, sizeof(path), "%s/no/such/dir.conf", tmpdir);
    assert_int_equal(cfg_write_template(schema, path, NULL, NULL), UV_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_good_file),           cmocka_unit_test(t_line_numbers),
        cmocka_unit_test(t_crlf_and_bom),        cmocka_unit_test(t_unknown_key),
        cmocka_unit_test(t_unknown_section),     cmocka_unit_test(t_syntax_error),
        cmocka_unit_test(t_bad_values),          cmocka_unit_test(t_repeated_single_key),
        cmocka_unit_test(t_multi_keys_in_order), cmocka_unit_test(t_defaults),
        cmocka_unit_test(t_missing_required),    cmocka_unit_test(t_limits),
        cmocka_unit_test(t_parse_address),       cmocka_unit_test(t_load_file),
        cmocka_unit_test(t_secret_file),         cmocka_unit_test(t_template_round_trip),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
