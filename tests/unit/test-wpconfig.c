/* Unit tests for agent/wpconfig: the PHP lexer, define() and $table_prefix, DB_HOST forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "err.h"
#include "wpconfig.h"

static char err[1024];

static int parse(const char *php, wpconfig_t *c)
{
    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    return wpconfig_parse(php, strlen(php), c, err, sizeof(err));
}

/* Parses text that must succeed. */
static void parse_ok(const char *php, wpconfig_t *c)
{
    if (parse(php, c) != 0)
        fail_msg("parse failed: %s", err);
}

/* Parses text that must fail with a message containing want. */
static void parse_fails(const char *php, const char *want)
{
    wpconfig_t c;
    int r = parse(php, &c);
    if (r != ERR_WPCONFIG || !strstr(err, want))
        fail_msg("r=%d err=\"%s\", want \"%s\"", r, err, want);
    assert_null(c.db_name);
}

#define DB_REST                                                                                    \
    "define('DB_USER', 'u');\ndefine('DB_PASSWORD', 'p');\ndefine('DB_HOST', 'localhost');\n"

/* WordPress's wp-config-sample.php, as Debian and upstream ship it. */
static const char sample[] =
    "<?php\n"
    "/**\n"
    " * The base configuration for WordPress\n"
    " *\n"
    " * The wp-config.php creation script uses this file during the installation.\n"
    " * You don't have to use the web site, you can copy this file to \"wp-config.php\"\n"
    " * and fill in the values.\n"
    " *\n"
    " * @link https://wordpress.org/documentation/article/editing-wp-config-php/\n"
    " *\n"
    " * @package WordPress\n"
    " */\n"
    "\n"
    "// ** Database settings - You can get this info from your web host ** //\n"
    "/** The name of the database for WordPress */\n"
    "define( 'DB_NAME', 'database_name_here' );\n"
    "\n"
    "/** Database username */\n"
    "define( 'DB_USER', 'username_here' );\n"
    "\n"
    "/** Database password */\n"
    "define( 'DB_PASSWORD', 'password_here' );\n"
    "\n"
    "/** Database hostname */\n"
    "define( 'DB_HOST', 'localhost' );\n"
    "\n"
    "/** Database charset to use in creating database tables. */\n"
    "define( 'DB_CHARSET', 'utf8' );\n"
    "\n"
    "/** The database collate type. Don't change this if in doubt. */\n"
    "define( 'DB_COLLATE', '' );\n"
    "\n"
    "/**#@+\n"
    " * Authentication unique keys and salts.\n"
    " */\n"
    "define( 'AUTH_KEY',         'put your unique phrase here' );\n"
    "define( 'SECURE_AUTH_KEY',  'k$#`\"/*x//\\'' );\n"
    "define( 'NONCE_SALT',       'put your unique phrase here' );\n"
    "\n"
    "/**#@-*/\n"
    "\n"
    "/**\n"
    " * WordPress database table prefix.\n"
    " */\n"
    "$table_prefix = 'wp_';\n"
    "\n"
    "define( 'WP_DEBUG', false );\n"
    "\n"
    "/* Add any custom values between this line and the \"stop editing\" line. */\n"
    "\n"
    "/* That's all, stop editing! Happy publishing. */\n"
    "\n"
    "/** Absolute path to the WordPress directory. */\n"
    "if ( ! defined( 'ABSPATH' ) ) {\n"
    "\tdefine( 'ABSPATH', __DIR__ . '/' );\n"
    "}\n"
    "\n"
    "/** Sets up WordPress vars and included files. */\n"
    "require_once ABSPATH . 'wp-settings.php';\n";

static void t_sample(void **state)
{
    wpconfig_t c;

    parse_ok(sample, &c);
    assert_string_equal(c.db_name, "database_name_here");
    assert_string_equal(c.db_user, "username_here");
    assert_string_equal(c.db_password, "password_here");
    assert_string_equal(c.db_host, "localhost");
    assert_string_equal(c.db_charset, "utf8");
    assert_string_equal(c.table_prefix, "wp_");
    assert_string_equal(c.host, "localhost");
    assert_int_equal(c.port, 0);
    assert_null(c.socket);
    wpconfig_clear(&c);
    assert_null(c.db_name);
    wpconfig_clear(&c);
}

/* /etc/wordpress/config-HOST.php as Debian's setup-mysql writes it. */
static void t_debian_config(void **state)
{
    wpconfig_t c;

    parse_ok("<?php\n"
             "define('DB_NAME', 'wordpress');\n"
             "define('DB_USER', 'wordpress');\n"
             "define('DB_PASSWORD', 'c0mpl3x#;?>pass');\n"
             "define('DB_HOST', 'localhost');\n"
             "define('WP_CONTENT_DIR', '/srv/www/wp-content/example.org');\n"
             "?>\n",
             &c);
    assert_string_equal(c.db_name, "wordpress");
    assert_string_equal(c.db_password, "c0mpl3x#;?>pass");
    assert_null(c.db_charset);
    assert_string_equal(c.table_prefix, "wp_");
    wpconfig_clear(&c);
}

static void t_quote_styles(void **state)
{
    wpconfig_t c;

    parse_ok("<?php define(\"DB_NAME\", \"db1\");\n"
             "DEFINE('DB_USER', \"u\", true);\n"
             "define ( 'DB_PASSWORD' , /* inline */ 'p' ) ;\n"
             "\\define('DB_HOST',\n  'h');\n",
             &c);
    assert_string_equal(c.db_name, "db1");
    assert_string_equal(c.db_user, "u");
    assert_string_equal(c.db_password, "p");
    assert_string_equal(c.db_host, "h");
    wpconfig_clear(&c);
}

static void t_escapes(void **state)
{
    wpconfig_t c;

    /* Single quotes: only \' and \\ are escapes. Double quotes: PHP's full set; unknown escapes
     * keep their backslash, octal wraps at 256. */
    parse_ok("<?php define('DB_NAME', 'it\\'s \\\\ a\\nb\\x41');\n"
             "define('DB_USER', "
             "\"l1\\nl2\\t\\x41\\x4a\\$x\\u{1F600}\\101\\\"\\\\\\q\\u00e9\\e\\9\\501x\");\n"
             "define('DB_PASSWORD', \"$ 5{ \\{x} 100%\");\n"
             "define('DB_HOST', 'localhost');\n",
             &c);
    assert_string_equal(c.db_name, "it's \\ a\\nb\\x41");
    assert_string_equal(c.db_user, "l1\nl2\tAJ$x\xF0\x9F\x98\x80"
                                   "A\"\\\\q\\u00e9\x1b\\9Ax");
    assert_string_equal(c.db_password, "$ 5{ \\{x} 100%");
    wpconfig_clear(&c);

    /* A value with a NUL byte, or a malformed \u{}, is not usable. */
    parse_fails("<?php define('DB_NAME', 'n');\ndefine('DB_USER', \"a\\0b\");\n" DB_REST,
                "wp-config.php:2: DB_USER is not a plain string literal");
    parse_fails("<?php define('DB_NAME', \"bad \\u{110000}\");\n" DB_REST,
                "wp-config.php:1: DB_NAME is not a plain string literal");
}

static void t_interpolation_refused(void **state)
{
    parse_fails("<?php $n = 'x';\ndefine('DB_NAME', \"wp_$n\");\n" DB_REST,
                "wp-config.php:2: DB_NAME is not a plain string literal");
    parse_fails("<?php define('DB_NAME', \"a{$n}\");\n" DB_REST, "DB_NAME is not a plain");
    parse_fails("<?php define('DB_NAME', `hostname`);\n" DB_REST, "DB_NAME is not a plain");
}

static void t_comments_ignored(void **state)
{
    wpconfig_t c;

    parse_ok("<?php\n"
             "// define('DB_NAME', 'line');\n"
             "# define('DB_NAME', 'hash');\n"
             "#[Attribute] define('DB_NAME', 'attr');\n"
             "/* define('DB_NAME', 'block');\n"
             "   define('DB_USER', 'block'); */\n"
             "/** define('DB_NAME', 'doc') */ define('DB_NAME', 'real');\n"
             "$x = \"define('DB_USER', 'instring')\";\n"
             "$y = 'define(\"DB_USER\", \"instring\")';\n"
             "$o->define('DB_USER', 'method'); Foo::define('DB_USER', 'static');\n"
             "function define($a, $b) {}\n"
             "const DB_USER = 'const';\n"
             "$s = <<<EOT\n"
             "define('DB_USER', 'heredoc');\n"
             "  EOTX\n"
             "  EOT;\n"
             "$t = <<<'EOT'\n"
             "define('DB_USER', 'nowdoc');\n"
             "EOT;\n"
             "define('DB_USER', 'u2');\n"
             "define('DB_PASSWORD', 'p');\n"
             "define('DB_HOST', 'localhost');\n",
             &c);
    assert_string_equal(c.db_name, "real");
    assert_string_equal(c.db_user, "u2");
    wpconfig_clear(&c);

    /* A commented-out define is not a define. */
    parse_fails("<?php\n// define('DB_PASSWORD', 'p');\n"
                "define('DB_NAME', 'n');\ndefine('DB_USER', 'u');\ndefine('DB_HOST', 'h');\n",
                "wp-config.php: DB_PASSWORD is not defined");
    parse_fails("<?php\n/*\ndefine('DB_PASSWORD', 'p');\n*/\n"
                "define('DB_NAME', 'n');\ndefine('DB_USER', 'u');\ndefine('DB_HOST', 'h');\n",
                "DB_PASSWORD is not defined");
    /* `const` is not define(). */
    parse_fails("<?php const DB_NAME = 'n';\n" DB_REST, "DB_NAME is not defined");
    /* A // comment ends at ?>: what follows is HTML, not PHP. */
    parse_fails("<?php // note ?> define('DB_NAME', 'n');\n<?php\n" DB_REST,
                "DB_NAME is not defined");
    /* Outside <?php nothing counts. */
    parse_fails("define('DB_NAME', 'n');\n<?php\n" DB_REST, "DB_NAME is not defined");
}

static void t_first_define_wins(void **state)
{
    wpconfig_t c;

    parse_ok("<?php define('DB_NAME', 'first');\n" DB_REST "define('DB_NAME', 'second');\n", &c);
    assert_string_equal(c.db_name, "first");
    wpconfig_clear(&c);

    /* Also when the first is not understood: PHP would use that one. */
    parse_fails("<?php define('DB_NAME', getenv('DB'));\n" DB_REST "define('DB_NAME', 'x');\n",
                "wp-config.php:1: DB_NAME is not a plain string literal");
}

static void t_not_literal(void **state)
{
    parse_fails("<?php define('DB_NAME', 'n');\ndefine('DB_USER', 'u');\n\n"
                "define( 'DB_PASSWORD', getenv('WP_DB_PASSWORD') );\n"
                "define('DB_HOST', 'localhost');\n",
                "wp-config.php:4: DB_PASSWORD is not a plain string literal");
    parse_fails("<?php define('DB_NAME', 'wp' . '_site');\n" DB_REST,
                "wp-config.php:1: DB_NAME is not a plain string literal");
    parse_fails("<?php define('DB_NAME', SOME_CONSTANT);\n" DB_REST,
                "wp-config.php:1: DB_NAME is not a plain string literal");
    parse_fails("<?php define('DB_NAME', <<<X\nname\nX);\n" DB_REST,
                "wp-config.php:1: DB_NAME is not a plain string literal");
}

static void t_missing(void **state)
{
    parse_fails("<?php define('DB_NAME', 'n');\ndefine('DB_USER', 'u');\n"
                "define('DB_HOST', 'localhost');\n",
                "wp-config.php: DB_PASSWORD is not defined; expected define( 'DB_PASSWORD', "
                "'...' );");
    parse_fails("<?php\n" DB_REST, "DB_NAME is not defined");
    parse_fails("", "DB_NAME is not defined");
    parse_fails("<?php define('DB_NAME', '');\n" DB_REST, "wp-config.php:1: DB_NAME is empty");

    /* An empty password is allowed (local installs). */
    wpconfig_t c;
    parse_ok("<?php define('DB_NAME', 'n'); define('DB_USER', 'u'); define('DB_PASSWORD', '');"
             " define('DB_HOST', 'h');",
             &c);
    assert_string_equal(c.db_password, "");
    wpconfig_clear(&c);
}

static void t_table_prefix(void **state)
{
    wpconfig_t c;

    parse_ok("<?php define('DB_NAME', 'n');\n" DB_REST "$table_prefix  = 'site2_';\n", &c);
    assert_string_equal(c.table_prefix, "site2_");
    wpconfig_clear(&c);

    /* The last assignment wins; comparisons and other variables are not assignments. */
    parse_ok("<?php define('DB_NAME', 'n');\n" DB_REST "$table_prefix = \"a_\";\n"
             "if ($table_prefix == 'x') {}\n$table_prefixes = 'no';\n$table_prefix = 'b_'?>",
             &c);
    assert_string_equal(c.table_prefix, "b_");
    wpconfig_clear(&c);

    parse_fails("<?php define('DB_NAME', 'n');\n" DB_REST "$table_prefix = getenv('P');\n",
                "wp-config.php:5: $table_prefix is not a plain string literal");
    parse_fails("<?php define('DB_NAME', 'n');\n" DB_REST "$table_prefix = 'wp-x';\n",
                "wp-config.php:5: $table_prefix may only hold letters, digits and underscores");
}

static void t_crlf_and_bom(void **state)
{
    wpconfig_t c;

    parse_ok("\xEF\xBB\xBF<?php\r\ndefine( 'DB_NAME', 'n' );\r\ndefine( 'DB_USER', 'u' );\r\n"
             "define( 'DB_PASSWORD', 'p' );\r\ndefine( 'DB_HOST', '127.0.0.1:3307' );\r\n"
             "$table_prefix = 'wp_';\r\n",
             &c);
    assert_string_equal(c.db_name, "n");
    assert_string_equal(c.db_host, "127.0.0.1:3307");
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 3307);
    wpconfig_clear(&c);

    parse_fails("\xEF\xBB\xBF<?php\r\n// x\r\n\r\ndefine('DB_NAME', DB);\r\n" DB_REST,
                "wp-config.php:4: DB_NAME is not a plain string literal");
}

struct host_case {
    const char *value;
    const char *host;
    uint16_t port;
    const char *socket;
};

static void t_db_host_forms(void **state)
{
    static const struct host_case cases[] = {
        {"localhost", "localhost", 0, NULL},
        {"127.0.0.1:3307", "127.0.0.1", 3307, NULL},
        {"localhost:/var/run/mysqld/mysqld.sock", NULL, 0, "/var/run/mysqld/mysqld.sock"},
        {":/tmp/mysql.sock", NULL, 0, "/tmp/mysql.sock"},
        {"db.internal:/run/m.sock", "db.internal", 0, "/run/m.sock"},
        {"[::1]:3306", "::1", 3306, NULL},
        {"::1", "::1", 0, NULL},
        {"[2001:db8::2]", "2001:db8::2", 0, NULL},
        {"db.example.com", "db.example.com", 0, NULL},
        {"db.example.com:0", "db.example.com", 0, NULL},
        {"db.example.com:abc", "db.example.com", 0, NULL},
        {"db.example.com:33060", "db.example.com", 33060, NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *host = (char *)"unset", *socket = (char *)"unset";
        uint16_t port = 99;
        if (wpconfig_parse_db_host(cases[i].value, &host, &port, &socket) != 0)
            fail_msg("%s refused", cases[i].value);
        if (cases[i].host)
            assert_string_equal(host, cases[i].host);
        else
            assert_null(host);
        if (cases[i].socket)
            assert_string_equal(socket, cases[i].socket);
        else
            assert_null(socket);
        assert_int_equal(port, cases[i].port);
        free(host);
        free(socket);
    }

    char *host = NULL, *socket = NULL;
    uint16_t port = 0;
    assert_int_equal(wpconfig_parse_db_host("db:65536", &host, &port, &socket), ERR_WPCONFIG);
    assert_int_equal(wpconfig_parse_db_host("[zz::1]:3306", &host, &port, &socket), ERR_WPCONFIG);

    /* Through the whole parse. */
    parse_fails("<?php define('DB_NAME', 'n'); define('DB_USER', 'u'); define('DB_PASSWORD', '');"
                "\ndefine('DB_HOST', 'db:99999');",
                "wp-config.php:2: DB_HOST 'db:99999' is not understood");
    wpconfig_t c;
    parse_ok("<?php define('DB_NAME', 'n'); define('DB_USER', 'u'); define('DB_PASSWORD', '');"
             "define('DB_HOST', 'localhost:/run/mysqld/mysqld.sock');",
             &c);
    assert_null(c.host);
    assert_string_equal(c.socket, "/run/mysqld/mysqld.sock");
    assert_string_equal(c.db_host, "localhost:/run/mysqld/mysqld.sock");
    wpconfig_clear(&c);
}

static void t_load(void **state)
{
    char dir[] = "/tmp/test-wpconfig.XXXXXX", path[128];
    wpconfig_t c = {0};
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/wp-config.php", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(sample, f);
    fclose(f);
    assert_int_equal(wpconfig_load(path, &c, err, sizeof(err)), 0);
    assert_string_equal(c.db_name, "database_name_here");
    wpconfig_clear(&c);

    /* Messages name the file. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("<?php\ndefine('DB_NAME', getenv('X'));\n", f);
    fclose(f);
    assert_int_equal(wpconfig_load(path, &c, err, sizeof(err)), ERR_WPCONFIG);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "wp-config.php:2: DB_NAME is not a plain string literal"));

    /* More than 1 MiB is refused. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("<?php\n", f);
    for (int i = 0; i < 1024 * 1024 / 63 + 1; i++)
        fputs("// padding padding padding padding padding padding padding pad\n", f);
    fclose(f);
    assert_int_equal(wpconfig_load(path, &c, err, sizeof(err)), ERR_WPCONFIG);
    assert_non_null(strstr(err, "larger than 1 MiB"));

    unlink(path);
    assert_int_equal(wpconfig_load(path, &c, err, sizeof(err)), UV_ENOENT);
    assert_non_null(strstr(err, path));
    rmdir(dir);
}

static void t_garbage(void **state)
{
    static const char *const texts[] = {
        "<?php define(",
        "<?php define('DB_NAME'",
        "<?php define('DB_NAME',",
        "<?php define('DB_NAME', 'x",
        "<?php define('DB_NAME', \"x\\",
        "<?php /* never closed",
        "<?php $s = <<<EOT\nno end",
        "<?php $s = <<<",
        "<?php $table_prefix =",
        "<?php \"\\u{",
        "<?php \"\\x",
    };
    wpconfig_t c;

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        assert_int_equal(parse(texts[i], &c), ERR_WPCONFIG);
    /* Bytes after a NUL are still read; NULs are not the end of the text. */
    static const char nul[] = "<?php\0define('DB_NAME', 'n');\n" DB_REST;
    assert_int_equal(wpconfig_parse(nul, sizeof(nul) - 1, &c, err, sizeof(err)), 0);
    wpconfig_clear(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_sample),
        cmocka_unit_test(t_debian_config),
        cmocka_unit_test(t_quote_styles),
        cmocka_unit_test(t_escapes),
        cmocka_unit_test(t_interpolation_refused),
        cmocka_unit_test(t_comments_ignored),
        cmocka_unit_test(t_first_define_wins),
        cmocka_unit_test(t_not_literal),
        cmocka_unit_test(t_missing),
        cmocka_unit_test(t_table_prefix),
        cmocka_unit_test(t_crlf_and_bom),
        cmocka_unit_test(t_db_host_forms),
        cmocka_unit_test(t_load),
        cmocka_unit_test(t_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
