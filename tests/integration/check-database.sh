#!/usr/bin/env bash
# `understudy-agent check` against a real MariaDB: credentials read from the site's wp-config.php,
# cPanel-style grants listed and judged, missing privileges and bad credentials named, and the
# password never on a command line.
set -u
source "$(dirname "$0")/../helpers/lib.sh"
source "$(dirname "$0")/../helpers/mariadb.sh"

tmpdir
mdb_start "$TEST_TMP/db" || die "MariaDB did not start"
mdb_create_site "$TEST_TMP/db" wpsite wpuser 'p4ss"w0rd'\''$x' || die "create site"
SOCK=$(mdb_socket "$TEST_TMP/db")

mkdir -p "$TEST_TMP/site"
make_pair "$TEST_TMP" --site-root "$TEST_TMP/site" || die "make_pair failed"
start_controller "$CONTROLLER_CONF" "$TEST_TMP/controller.log" || die "controller did not start"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"

# A wp-config.php as WordPress writes it, with a password that needs escaping in PHP.
write_wp_config() { # write_wp_config USER PASSWORD_PHP_LITERAL
    cat >"$TEST_TMP/site/wp-config.php" <<EOF
<?php
/** The name of the database for WordPress */
define( 'DB_NAME', 'wpsite' );
// define( 'DB_NAME', 'not-this-one' );
define( 'DB_USER', '$1' );
define( 'DB_PASSWORD', $2 );
define( 'DB_HOST', 'localhost:$SOCK' );
define( 'DB_CHARSET', 'utf8mb4' );
\$table_prefix = 'wp_';
require_once ABSPATH . 'wp-settings.php';
EOF
}
write_wp_config wpuser "'p4ss\"w0rd\\'\$x'"

OUT=$TEST_TMP/out
code=0
"$UNDERSTUDY_AGENT" check --config "$AGENT_CONF" >"$OUT" 2>&1 &
pid=$!
# While it runs, the password must not appear in any process's command line.
leak=0
for _ in 1 2 3 4 5; do
    if grep -qs 'p4ss' /proc/[0-9]*/cmdline; then leak=1; fi
    sleep 0.05
done
wait $pid || code=$?
((leak == 0)) && pass "password never in a command line" || fail "password visible in /proc/*/cmdline"
if [[ $code == 0 ]]; then pass "check with cPanel grants succeeds"; else
    fail "check with cPanel grants" "exit $code"
    sed 's/^/    /' "$OUT"
fi
grep -q '^database: connected as wpuser@' "$OUT" && pass "reports the database user" ||
    fail "reports the database user"
grep -q "^grant: GRANT .*LOCK TABLES.* ON \`wpsite\`\.\* TO \`wpuser\`@\`localhost\`" "$OUT" &&
    pass "lists the grants" || fail "lists the grants" "$(cat "$OUT")"
grep -q '^wp-config: .* (database wpsite, table prefix wp_)' "$OUT" && pass "reads wp-config.php" ||
    fail "reads wp-config.php"
grep -q 'p4ss' "$OUT" && fail "password printed" || pass "password not printed"

# A user without LOCK TABLES: the missing privilege is named, exit 32.
mdb_sql "$TEST_TMP/db" "CREATE USER 'weak'@'localhost' IDENTIFIED BY 'weakpw';
    GRANT SELECT, SHOW VIEW, TRIGGER ON wpsite.* TO 'weak'@'localhost'"
write_wp_config weak "'weakpw'"
code=0
"$UNDERSTUDY_AGENT" check --config "$AGENT_CONF" >"$OUT" 2>&1 || code=$?
[[ $code == 32 ]] && grep -q 'LOCK TABLES' "$OUT" && pass "missing LOCK TABLES named (exit 32)" ||
    { fail "missing privilege" "exit $code"; sed 's/^/    /' "$OUT"; }

# Wrong password: a connection error naming user and host, never the password.
write_wp_config wpuser "'wrong-secret'"
code=0
"$UNDERSTUDY_AGENT" check --config "$AGENT_CONF" >"$OUT" 2>&1 || code=$?
[[ $code == 31 ]] && grep -q 'wpuser' "$OUT" && ! grep -q 'wrong-secret' "$OUT" &&
    pass "bad credentials: exit 31, user named, password not" ||
    { fail "bad credentials" "exit $code"; sed 's/^/    /' "$OUT"; }

# A wp-config.php whose password comes from the environment cannot be used without PHP.
write_wp_config wpuser "getenv('WP_DB_PASSWORD')"
code=0
"$UNDERSTUDY_AGENT" check --config "$AGENT_CONF" >"$OUT" 2>&1 || code=$?
[[ $code == 30 ]] && grep -q 'DB_PASSWORD' "$OUT" && pass "non-literal DB_PASSWORD named (exit 30)" ||
    { fail "non-literal DB_PASSWORD" "exit $code"; sed 's/^/    /' "$OUT"; }

# The controller part still passed in all of these: the failure is the database's alone.
grep -q '^tls: TLSv1.3' "$OUT" && pass "controller check unaffected" || fail "controller check"

stop_controller || fail "controller stops cleanly"
exit 0
