#!/usr/bin/env bash
# Tests tests/helpers/mariadb.sh itself: two throwaway servers at once, a cPanel-style site user
# with exactly the per-database grants and nothing more, servers stopped by mdb_stop and by the
# exit cleanup when a script fails or is killed.
set -u

# shellcheck source=tests/helpers/mariadb.sh
source "$(dirname "${BASH_SOURCE[0]}")/../helpers/mariadb.sh"

tmpdir
A=$TEST_TMP/a
B=$TEST_TMP/b
DB=wp_site
USER_NAME=wp_user
PASSWORD="s3cret'pa\"ss"

mdb_start "$A" || die "cannot start server A"
mdb_start "$B" || die "cannot start server B"
pid_a=$(cat "$A/mariadb.pid")
pid_b=$(cat "$B/mariadb.pid")
check "two servers run at once" pid_alive "$pid_a"
check "second server runs" pid_alive "$pid_b"
check_eq "each server has its own datadir" "$(mdb_sql "$A" 'SELECT @@datadir')$(mdb_sql "$B" \
    'SELECT @@datadir')" "$A/data/$B/data/"
check_eq "no TCP without MDB_PORT" "$(mdb_sql "$A" 'SELECT @@skip_networking')" 1

mdb_create_site "$A" "$DB" "$USER_NAME" "$PASSWORD" || die "mdb_create_site failed"
mdb_sql "$A" "CREATE DATABASE other_site; CREATE TABLE other_site.secret (v TEXT);
    INSERT INTO other_site.secret VALUES ('hidden')" || die "cannot create other_site"

# Grants, as SHOW GRANTS prints them: one USAGE line (no global privilege) and one line on db.*.
sorted_privs() {
    tr ',' '\n' | sed 's/^ *//; s/ *$//' | sed '/^$/d' | LC_ALL=C sort
}
expected=$(sorted_privs <<<"$MDB_SITE_GRANTS")
grants=$(mdb_sql "$A" "SHOW GRANTS FOR '$USER_NAME'@'localhost'") || die "SHOW GRANTS failed"
printf '%s\n' "$grants" | sed 's/PASSWORD .*/PASSWORD .../; s/^/    /'
if [[ $(wc -l <<<"$grants") -eq 2 ]] &&
    grep -Eq "^GRANT USAGE ON \*\.\* TO \`$USER_NAME\`@\`localhost\`( IDENTIFIED BY PASSWORD '[^']*')?$" \
        <<<"$grants"; then
    pass "no global privilege"
else
    fail "no global privilege" "unexpected SHOW GRANTS output"
fi
db_line=$(grep -E "^GRANT .* ON \`$DB\`\.\* TO \`$USER_NAME\`@\`localhost\`$" <<<"$grants")
got=$(sed -E 's/^GRANT (.*) ON .*/\1/' <<<"$db_line" | sorted_privs)
if [[ -n $db_line && $got == "$expected" ]]; then
    pass "exactly the cPanel privileges on $DB.*"
else
    fail "exactly the cPanel privileges on $DB.*" "got: $(tr '\n' ',' <<<"$got")"
fi
# The same seen through information_schema, an independent view of the grant tables.
schema_privs=$(mdb_sql "$A" "SELECT privilege_type FROM information_schema.SCHEMA_PRIVILEGES
    WHERE grantee = \"'$USER_NAME'@'localhost'\" AND table_schema = '$DB'" | LC_ALL=C sort)
check_eq "information_schema agrees" "$schema_privs" "$expected"
other_privs=$(mdb_sql "$A" "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES
    WHERE grantee = \"'$USER_NAME'@'localhost'\" AND privilege_type <> 'USAGE'")
check_eq "no global privilege in USER_PRIVILEGES" "$other_privs" 0

# What the site user can and cannot do.
as_user() { mdb_sql_as "$A" "$USER_NAME" "$PASSWORD" "$@"; }
check "user works in its own database" as_user "CREATE TABLE $DB.wp_options (v TEXT);
    INSERT INTO $DB.wp_options VALUES ('x'); CREATE VIEW $DB.v AS SELECT * FROM $DB.wp_options;
    LOCK TABLES $DB.wp_options READ; UNLOCK TABLES"
check_eq "user reads its view" "$(as_user "SELECT v FROM $DB.v")" x
out=$TEST_TMP/outfile.txt
if err=$(as_user "SELECT * FROM $DB.wp_options INTO OUTFILE '$out'" 2>&1); then
    fail "user cannot SELECT INTO OUTFILE" "it succeeded"
elif [[ -e $out ]]; then
    fail "user cannot SELECT INTO OUTFILE" "$out was written"
else
    pass "user cannot SELECT INTO OUTFILE ($(grep ERROR <<<"$err"))"
fi
dbs=$(as_user 'SHOW DATABASES' | LC_ALL=C sort | tr '\n' ' ')
check_eq "user sees only its schema" "$dbs" "information_schema $DB "
if as_user 'SELECT * FROM other_site.secret' >/dev/null 2>&1; then
    fail "user cannot read another schema"
else
    pass "user cannot read another schema"
fi
if as_user 'CREATE DATABASE wp_other' >/dev/null 2>&1; then
    fail "user cannot create a database"
else
    pass "user cannot create a database"
fi
if mdb_sql "$B" "SELECT 1 FROM information_schema.SCHEMATA WHERE schema_name = '$DB'" |
    grep -q 1; then
    fail "servers are independent" "$DB exists on B"
else
    pass "servers are independent"
fi

# TCP when asked, with the site user reachable over 127.0.0.1.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
C=$TEST_TMP/c
if MDB_PORT=$port mdb_start "$C" && MDB_PORT=$port mdb_create_site "$C" wp_tcp tcp_user pw; then
    got=$(mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P "$port" -u tcp_user -ppw \
        --batch --skip-column-names -e 'SELECT DATABASE()' wp_tcp 2>&1)
    check_eq "MDB_PORT listens on 127.0.0.1" "$got" wp_tcp
    mdb_stop "$C"
else
    fail "MDB_PORT listens on 127.0.0.1" "server C did not start"
fi

# mdb_stop stops both, removing their sockets.
mdb_stop "$A"
mdb_stop "$B"
if pid_alive "$pid_a" || pid_alive "$pid_b" || [[ -e $A/mysql.sock || -e $B/mysql.sock ]]; then
    fail "mdb_stop stops both servers"
else
    pass "mdb_stop stops both servers"
fi

# A script that fails, or is killed, still stops its servers.
# shellcheck disable=SC2016 # expanded by the child shell
child_script='
    set -u
    source "$1/tests/helpers/mariadb.sh"
    mdb_start "$2" || exit 99
    cat "$2/mariadb.pid" >"$2.pid"
    if [[ $3 == fail ]]; then false; exit 1; fi
    # (A background child holding our stdout would keep meson waiting after we exit.)
    sleep 60 >/dev/null 2>&1 </dev/null &
    on_exit "kill $!"
    wait
'
# child DIR MODE: starts a server in DIR, writes its pid to DIR.pid, then fails or waits.
child() {
    bash -c "$child_script" child "$UNDERSTUDY_SOURCE" "$1" "$2"
}
child "$TEST_TMP/d" fail
status=$?
pid_d=$(cat "$TEST_TMP/d.pid" 2>/dev/null)
if [[ $status == 1 && -n $pid_d ]] && ! pid_alive "$pid_d"; then
    pass "cleanup stops the server when a script fails"
else
    fail "cleanup stops the server when a script fails" "status $status, pid ${pid_d:-none}"
fi
bash -c "$child_script" child "$UNDERSTUDY_SOURCE" "$TEST_TMP/e" wait &
child_pid=$!
wait_for_log "$TEST_TMP/e.pid" '^[0-9]+$' 30 "$child_pid" || true
pid_e=$(cat "$TEST_TMP/e.pid" 2>/dev/null)
kill -TERM "$child_pid"
wait "$child_pid"
status=$?
if [[ $status == 143 && -n $pid_e ]] && ! pid_alive "$pid_e"; then
    pass "cleanup stops the server when a script gets SIGTERM"
else
    fail "cleanup stops the server when a script gets SIGTERM" "status $status, pid ${pid_e:-none}"
fi

exit 0
