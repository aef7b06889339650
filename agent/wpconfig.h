/* Reads a WordPress wp-config.php without running PHP.
 *
 * Understands define('NAME', 'value') / define("NAME", "value") calls (any spacing, either quote
 * style, PHP escape rules for each: single quotes unescape only \' and \\; double quotes unescape
 * \n \t \r \v \e \f \\ \$ \" \xHH \u{...} and octal), `$table_prefix = '...';`, and skips //,
 * # and block comments and everything it does not recognise. Values that are not string literals
 * (constants, concatenation, getenv()) are reported as not understood for the keys we need.
 */
#ifndef UNDERSTUDY_WPCONFIG_H
#define UNDERSTUDY_WPCONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct wpconfig {
    char *db_name;
    char *db_user;
    char *db_password;
    char *db_host;      /* as written: "localhost", "db.example:3307", "localhost:/run/x.sock" */
    char *db_charset;   /* DB_CHARSET, NULL if absent */
    char *table_prefix; /* $table_prefix, "wp_" if absent */
    /* DB_HOST split up: */
    char *host;    /* NULL when connecting over a socket */
    uint16_t port; /* 0 = default */
    char *socket;  /* unix socket path, or NULL */
} wpconfig_t;

/* Parses the text of a wp-config.php. Returns 0 and fills *ret (free with wpconfig_clear), or
 * ERR_WPCONFIG with a one-line reason in err (naming the constant that is missing or not a plain
 * string, and the line). */
int wpconfig_parse(const char *text, size_t len, wpconfig_t *ret, char *err, size_t err_size);

/* Reads and parses a file (at most 1 MiB). Same returns, plus a negative errno when it cannot be
 * read. */
int wpconfig_load(const char *path, wpconfig_t *ret, char *err, size_t err_size);

/* Splits a DB_HOST value into host/port/socket as WordPress does (wpdb::parse_db_host):
 * "host", "host:port", "host:/path/to.sock", "[::1]:3306", ":/path.sock"; "localhost" with no
 * port or socket means the client library's default socket. Returns 0 or ERR_WPCONFIG. */
int wpconfig_parse_db_host(const char *value, char **ret_host, uint16_t *ret_port,
                           char **ret_socket);

void wpconfig_clear(wpconfig_t *c);

#endif
