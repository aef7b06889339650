#!/usr/bin/env bash
# SIGKILL of the controller at every step of a sync that changes a row and a file, then a
# restart: the backup must hold one whole generation (the docroot and the database both the old
# one or both the new one, views and triggers present), and the next sync must complete and make
# both sides equal (mariadb-dump of both schemas, diff -r of the trees). The kill comes from the
# test-only fault points of common/fault.h (UNDERSTUDY_TEST_FAULT), never from timing.
# One MariaDB server holds both sides: the primary's schema `site` (a cPanel-style user) and the
# controller's `understudy_site` (the account of deploy/mysql-grants.sql).
set -u
source "$(dirname "$0")/../helpers/lib.sh"
source "$(dirname "$0")/../helpers/mariadb.sh"

command -v mariadbd >/dev/null || skip "MariaDB server not installed"
command -v mariadb-dump >/dev/null || skip "mariadb-dump not installed"

tmpdir
T=$TEST_TMP
mkdir -p "$T/tmp"
export TMPDIR=$T/tmp
mdb_start "$T/db" || die "MariaDB did not start"
SOCK=$(mdb_socket "$T/db")
mdb_create_site "$T/db" site wpuser 'wp pass' || die "create site"
mdb_sql "$T/db" "CREATE USER 'understudy'@'localhost' IDENTIFIED BY 'ctl-pw';
    GRANT ALL PRIVILEGES ON \`understudy\\_%\`.* TO 'understudy'@'localhost';" ||
    die "controller account"
printf 'ctl-pw\n' >"$T/ctl.pw"
chmod 600 "$T/ctl.pw"
B=understudy_site

mdb_client "$T/db" --default-character-set=utf8mb4 site <<'SQL' || die "primary schema"
CREATE TABLE wp_options (option_id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  option_name varchar(191) NOT NULL DEFAULT '', option_value longtext NOT NULL,
  PRIMARY KEY (option_id), UNIQUE KEY option_name (option_name)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO wp_options (option_name, option_value) VALUES ('blogname', 'gen 0'), ('other', 'x');
CREATE TABLE wp_posts (ID bigint(20) unsigned NOT NULL AUTO_INCREMENT, title text NOT NULL,
  n int NOT NULL DEFAULT 0, PRIMARY KEY (ID)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO wp_posts (title, n) SELECT concat('post ', seq), seq FROM seq_1_to_200;
CREATE TABLE wp_log (id int NOT NULL AUTO_INCREMENT, what varchar(40), PRIMARY KEY (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE VIEW v_opts AS SELECT option_name, option_value FROM wp_options;
CREATE VIEW v_v AS SELECT option_name FROM v_opts WHERE option_name <> 'other';
CREATE TRIGGER trg_opts AFTER UPDATE ON wp_options FOR EACH ROW INSERT INTO wp_log (what) VALUES (NEW.option_name);
CREATE TRIGGER trg_posts BEFORE INSERT ON wp_posts FOR EACH ROW SET NEW.n = NEW.n + 1;
SQL
# A stored function a view uses ([database] routines = yes below), created by the site's user.
mdb_sql_as "$T/db" wpuser 'wp pass' "CREATE FUNCTION site.f_len(s TEXT) RETURNS int(11)
    DETERMINISTIC RETURN CHAR_LENGTH(s); CREATE VIEW site.v_len AS SELECT site.f_len(option_value)
    AS n FROM site.wp_options" || die "primary routine"

SITE=$T/site
mkdir -p "$SITE/wp-content/uploads"
cat >"$SITE/wp-config.php" <<EOF
<?php
define( 'DB_NAME', 'site' );
define( 'DB_USER', 'wpuser' );
define( 'DB_PASSWORD', 'wp pass' );
define( 'DB_HOST', 'localhost:$SOCK' );
\$table_prefix = 'wp_';
EOF
printf '<?php /* index */\n' >"$SITE/index.php"
printf 'gen 0\n' >"$SITE/wp-content/uploads/state.txt"

make_pair "$T/pair" --site-root "$SITE" || die "make_pair failed"
DOCROOT=$(sed -n 's/^docroot = //p' "$CONTROLLER_CONF" | tail -n 1)
DATA=$(sed -n 's/^data = //p' "$CONTROLLER_CONF" | tail -n 1)
[[ -n $DOCROOT && -n $DATA ]] || die "no [site] docroot / data in $CONTROLLER_CONF"
{
    if ! { ((EUID == 0)) && getent passwd www-data >/dev/null; }; then
        printf '\n[site]\nowner = %s:%s\n' "$(id -un)" "$(id -gn)"
    fi
    printf '\n[database]\nsocket = %s\nuser = understudy\npassword_file = %s\nname = %s\n' \
        "$SOCK" "$T/ctl.pw" "$B"
} >>"$CONTROLLER_CONF"
printf '\n[database]\nroutines = yes\n' >>"$AGENT_CONF"

STARTS=0
LOG=
# start [FAULT]: the controller, with UNDERSTUDY_TEST_FAULT=FAULT when given.
start() {
    STARTS=$((STARTS + 1))
    LOG=$T/controller.$STARTS.log
    if [[ -n ${1:-} ]]; then
        export UNDERSTUDY_TEST_FAULT=$1
    fi
    start_controller "$CONTROLLER_CONF" "$LOG"
    local rc=$?
    unset UNDERSTUDY_TEST_FAULT
    ((rc == 0)) && set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
    return $rc
}
OUT=$T/out
sync_rc() { # one agent sync; prints its exit status
    local rc=0
    "$UNDERSTUDY_AGENT" sync --verbose --config "$AGENT_CONF" >"$OUT" 2>&1 || rc=$?
    cat "$OUT" >>"$T/agent.log"
    printf '%s\n' "$rc"
}
dump() { # dump SCHEMA: its mariadb-dump, normalised for the schema name and the definer
    mariadb-dump --no-defaults --socket="$SOCK" --user=root --skip-dump-date --skip-comments \
        --triggers "$1" |
        sed -e "s/\`$1\`/\`DB\`/g" -e 's/DEFINER=`[^`]*`@`[^`]*`/DEFINER=X/g'
}
# tree_is DIR: the docroot holds DIR's tree (wp-config.php is the controller's rewrite).
tree_is() {
    diff -r -x wp-config.php "$1" "$DOCROOT/" >/dev/null 2>&1
}
objects() { # the backup's views, triggers and routines, one line
    mdb_sql "$T/db" "SELECT GROUP_CONCAT(n ORDER BY n) FROM (
        SELECT TABLE_NAME n FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '$B' UNION ALL
        SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '$B' UNION ALL
        SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '$B') x"
}
blogname() {
    mdb_sql "$T/db" "SELECT option_value FROM $B.wp_options WHERE option_name = 'blogname'"
}
compare() { # compare NAME: both schemas and both trees identical
    dump site >"$T/p.sql"
    dump "$B" >"$T/b.sql"
    if diff -u "$T/p.sql" "$T/b.sql" >"$T/diff"; then
        pass "$1: mariadb-dump of both sides identical"
    else
        fail "$1: mariadb-dump differs"
        head -40 "$T/diff" | sed 's/^/    /'
    fi
    if tree_is "$SITE"; then
        pass "$1: diff -r finds the primary's tree"
    else
        fail "$1: the docroot differs from the primary" \
            "$(diff -r -x wp-config.php "$SITE" "$DOCROOT/" | head -5)"
    fi
}

start || die "controller did not start: $(tail -5 "$LOG")"
rc=$(sync_rc)
[[ $rc == 0 ]] || die "first sync failed (exit $rc): $(tail -5 "$OUT"; tail -5 "$LOG")"
OBJECTS=$(objects)
check_eq "first sync: views, triggers and the function" "$OBJECTS" \
    "f_len,trg_opts,trg_posts,v_len,v_opts,v_v"
compare "first sync"
stop_controller || fail "controller stops cleanly"

K=0
# kill_at POINT [RECOVER]: one change of a row and a file, a sync killed at POINT; with RECOVER
# the first restart is killed again inside the recovery (controller.recover).
kill_at() {
    local point=$1 recover=${2:-} name=$1 old new got rc
    [[ -n $recover ]] && name="$1 + $recover"
    K=$((K + 1))
    old=$(blogname)
    rm -rf "$T/old" && cp -a "$SITE" "$T/old"
    new="gen $K"
    mdb_sql "$T/db" "UPDATE site.wp_options SET option_value = '$new'
        WHERE option_name = 'blogname'" || die "update"
    printf 'gen %s\n' "$K" >"$SITE/wp-content/uploads/state.txt"
    printf 'file %s\n' "$K" >"$SITE/wp-content/uploads/added-$K.txt"

    start "$point" || die "$name: controller did not start: $(tail -5 "$LOG")"
    local pid=$CONTROLLER_PID
    rc=$(sync_rc)
    # Every point is before the controller's Result (the dump is written inside the switch):
    # the agent cannot know the outcome and must not report success.
    if [[ $rc != 0 ]]; then
        pass "$name: the sync fails (exit $rc)"
    else
        fail "$name: the agent exited 0 although the controller died" "$(tail -3 "$OUT")"
    fi
    # The agent has seen the connection drop: the controller is gone or going.
    for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
    wait "$pid" 2>/dev/null
    if grep -q "understudy fault: $point@1" "$LOG" && ! pid_alive "$pid"; then
        pass "$name: the controller died at $point"
    else
        fail "$name: the controller did not die at $point" "$(tail -3 "$LOG")"
        _lib_stop_pid "$pid" 5
    fi
    CONTROLLER_PID=

    if [[ -n $recover ]]; then
        if start "$recover"; then
            fail "$name: the controller was to die during the recovery"
            stop_controller
        else
            grep -q "understudy fault: $recover@1" "$LOG" &&
                pass "$name: the restarted controller died in the recovery" ||
                fail "$name: the restarted controller did not die at $recover" "$(tail -3 "$LOG")"
        fi
    fi
    start || die "$name: the controller does not start after the kill: $(tail -5 "$LOG")"

    # One whole generation: files and database both old or both new.
    got=$(blogname)
    if tree_is "$T/old" && [[ $got == "$old" ]]; then
        pass "$name: after the restart the old generation is whole (files and row)"
    elif tree_is "$SITE" && [[ $got == "$new" ]]; then
        pass "$name: after the restart the new generation is whole (files and row)"
    else
        local t_old=no t_new=no
        tree_is "$T/old" && t_old=yes
        tree_is "$SITE" && t_new=yes
        fail "$name: files and database disagree after the restart" \
            "row '$got' (old '$old', new '$new'); tree old: $t_old, new: $t_new"
    fi
    check_eq "$name: views, triggers and the function exist after the restart" "$(objects)" \
        "$OBJECTS"
    check "$name: no switch journal left" test ! -e "$DATA/journal"
    # The retention pass a kill cut short is made up at the start: the live generation's dump
    # is kept, and no dump cut short is left behind.
    local live
    live=$(readlink "$DOCROOT" | sed -n 's|.*generations/\([0-9]*\)/root.*|\1|p')
    check "$name: the live generation $live has its dump" test -s "$DATA/dumps/gen$live.sql.zst"
    check "$name: no partial dump left" \
        test -z "$(find "$DATA/dumps" -name '.gen*.tmp' 2>/dev/null)"

    rc=$(sync_rc)
    if [[ $rc == 0 ]]; then
        pass "$name: the next sync completes"
    else
        fail "$name: the next sync fails (exit $rc)" "$(tail -3 "$OUT")"
    fi
    # Every point is after the files arrived: they are reused, not sent again.
    check_eq "$name: the next sync sends no file again" \
        "$(grep -Eo '[0-9]+ files sent' "$OUT")" "0 files sent"
    compare "$name: after the next sync"
    stop_controller || fail "$name: controller stops cleanly"
}

for point in controller.db.table controller.db.verified controller.files.verified \
    controller.switch.journal controller.switch.renamed controller.db.renamed \
    controller.switch.db controller.switch.flipped controller.switch.done controller.dump; do
    kill_at "$point"
done
kill_at controller.db.renamed controller.recover
kill_at controller.switch.renamed controller.recover
