#!/usr/bin/env bash
# The database phase against two real MariaDB servers: a primary whose site user has exactly
# cPanel's grants, and a backup with the controller's account from deploy/mysql-grants.sql.
# tests/helpers/dbpipe runs the agent's and the controller's sides over an in-memory pipe and
# then the switch hooks. The result is compared with an independent tool (mariadb-dump of both
# sides, normalised for the schema name and the definer).
set -u
source "$(dirname "$0")/../helpers/lib.sh"
source "$(dirname "$0")/../helpers/mariadb.sh"

DBPIPE=${UNDERSTUDY_DBPIPE:-$UNDERSTUDY_BUILD/tests/dbpipe}
[[ -x $DBPIPE ]] || skip "dbpipe not built ($DBPIPE)"
command -v mariadbd >/dev/null || skip "MariaDB server not installed"

tmpdir
# A private temp dir for the servers (their temp file names are only unique per host).
mkdir -p "$TEST_TMP/tmp"
export TMPDIR=$TEST_TMP/tmp
P=$TEST_TMP/p
B=$TEST_TMP/b
mdb_start "$P" || die "primary MariaDB did not start"
mdb_start "$B" || die "backup MariaDB did not start"
mdb_create_site "$P" site wpuser 'wp pass' || die "create site"

# The controller's account, as deploy/mysql-grants.sql documents it (password variant).
mdb_sql "$B" "CREATE USER 'understudy'@'localhost' IDENTIFIED BY 'ctl-pw';
    GRANT ALL PRIVILEGES ON \`understudy\\_%\`.* TO 'understudy'@'localhost';" ||
    die "controller account"
printf 'ctl-pw\n' >"$TEST_TMP/pw"
chmod 600 "$TEST_TMP/pw"

mdb_client "$P" --default-character-set=utf8mb4 site <<'SQL' || die "primary schema"
SET SESSION sql_mode = '';
CREATE TABLE types (
  id int(10) unsigned NOT NULL AUTO_INCREMENT,
  t4 varchar(191) COLLATE utf8mb4_unicode_ci DEFAULT NULL,
  lat varchar(50) CHARACTER SET latin1 COLLATE latin1_swedish_ci DEFAULT 'x',
  bin varbinary(64) DEFAULT NULL,
  blb longblob,
  txt longtext NOT NULL,
  zd datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  zdt date DEFAULT NULL,
  ts timestamp NULL DEFAULT NULL,
  tm time(3) DEFAULT NULL,
  b bit(10) DEFAULT b'101',
  j json DEFAULT NULL,
  d decimal(65,30) DEFAULT NULL,
  f float DEFAULT NULL,
  dbl double DEFAULT NULL,
  e enum('a','b','c''q') NOT NULL DEFAULT 'a',
  s set('x','y','z') DEFAULT NULL,
  g bigint(20) GENERATED ALWAYS AS (char_length(txt)) VIRTUAL,
  gs varchar(20) GENERATED ALWAYS AS (concat('g', e)) STORED,
  y year(4) DEFAULT NULL,
  upd timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (id),
  UNIQUE KEY u_bin (bin),
  KEY k_t4 (t4(20), lat),
  FULLTEXT KEY ft (txt)
) ENGINE=InnoDB AUTO_INCREMENT=1000 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci COMMENT='every type';
INSERT INTO types (id, t4, lat, bin, blb, txt, zd, zdt, ts, tm, b, j, d, f, dbl, e, s, y) VALUES
 (1, 'emoji 😀 𝄞 and ü', CONVERT(_utf8mb4'café' USING latin1), 0x00FF00FE0A0D09, 0x00FFFEC328,
  '', '0000-00-00 00:00:00', '0000-00-00', '2024-02-29 12:34:56', '-838:59:59.999', b'1010101010',
  '{"a": [1, 2, {"b": null}], "é": "😀"}', '12345678901234567890123456789012345.123456789012345678901234567890',
  0.1, 1.7976931348623157e308, 'c''q', 'x,z', 2155),
 (2, '', NULL, '', '', 'tab\there\nnewline \\ backslash \\N', '1000-01-01 00:00:00', NULL, NULL, NULL,
  b'0', 'null', -0.000000000000000000000000000001, -3.4e38, 2.2250738585072014e-308, 'a', '', 1901),
 (3, NULL, '', NULL, NULL, 'x', '2024-01-01 00:00:00', '2024-01-01', NULL, '00:00:00', NULL, NULL,
  NULL, NULL, NULL, 'b', NULL, NULL);
CREATE TABLE legacy (k varchar(20) NOT NULL, v text, PRIMARY KEY (k)) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4;
INSERT INTO legacy VALUES ('a', 'myisam row'), ('b', NULL);
CREATE TABLE arialog (id int NOT NULL, msg varchar(40) DEFAULT NULL, PRIMARY KEY (id)) ENGINE=Aria DEFAULT CHARSET=utf8mb4;
INSERT INTO arialog VALUES (1, 'aria');
CREATE TABLE nopk (a int(11) DEFAULT NULL, b varchar(10) DEFAULT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO nopk VALUES (1, 'x'), (1, 'x'), (NULL, ''), (NULL, NULL);
CREATE TABLE `we``ird ta-ble` (`sel ect` int(11) NOT NULL, `from` varchar(5) DEFAULT NULL, PRIMARY KEY (`sel ect`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `we``ird ta-ble` VALUES (1, 'q`"\'');
CREATE TABLE big (id int(11) NOT NULL, v varchar(100) DEFAULT NULL, n int(11) DEFAULT NULL, PRIMARY KEY (id), KEY n (n)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO big SELECT seq, concat('row ', seq, ' ', repeat('x', seq % 50)), seq * 7 FROM seq_1_to_100000;
CREATE TABLE empty_t (id int(11) NOT NULL AUTO_INCREMENT, PRIMARY KEY (id)) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4;
CREATE VIEW v_types AS SELECT t.id, t.t4, b.v FROM types t JOIN big b ON b.id = t.id;
CREATE VIEW v_v AS SELECT id FROM v_types WHERE id > 1;
CREATE TRIGGER trg_nopk BEFORE INSERT ON nopk FOR EACH ROW SET NEW.b = IFNULL(NEW.b, 'dflt');
DELIMITER //
CREATE TRIGGER trg_types BEFORE UPDATE ON types FOR EACH ROW BEGIN
  IF NEW.e = 'b' THEN SET NEW.s = 'y'; END IF;
END//
DELIMITER ;
SQL

SOCK_P=$(mdb_socket "$P")
SOCK_B=$(mdb_socket "$B")
mkdir -p "$TEST_TMP/root" "$TEST_TMP/data"
cat >"$TEST_TMP/root/wp-config.php" <<'EOF'
<?php
define( 'DB_NAME', 'site' );
define( 'DB_USER', 'wpuser' );
define( 'DB_PASSWORD', 'wp pass' );
define( 'DB_HOST', 'localhost' );
define( 'AUTH_KEY', 'keep me' );
$table_prefix = 'wp_';
EOF

run_pipe() { # run_pipe GENERATION [dbpipe args...]
    local gen=$1
    shift
    "$DBPIPE" --agent-socket "$SOCK_P" --agent-db site --agent-user wpuser --agent-password 'wp pass' \
        --backup-socket "$SOCK_B" --backup-user understudy --backup-password-file "$TEST_TMP/pw" \
        --backup-name understudy_site --generation "$gen" --data "$TEST_TMP/data" \
        --cache "$TEST_TMP/digests" "$@"
}

dump() { # dump DIR DB: the schema dump, normalised
    mdb_client "$1" --batch -e "SELECT 1" >/dev/null
    mariadb-dump --no-defaults --socket="$1/mysql.sock" --user=root --skip-dump-date \
        --skip-comments --triggers "$2" |
        sed -e "s/\`$2\`/\`DB\`/g" -e 's/DEFINER=`[^`]*`@`[^`]*`/DEFINER=X/g'
}

compare() { # compare NAME [BACKUP_SCHEMA]; keeps the primary's dump as p-<NAME>.sql
    dump "$P" site >"$TEST_TMP/p.sql"
    cp "$TEST_TMP/p.sql" "$TEST_TMP/p-${1%%:*}.sql"
    dump "$B" "${2:-understudy_site}" >"$TEST_TMP/b.sql"
    if diff -u "$TEST_TMP/p.sql" "$TEST_TMP/b.sql" >"$TEST_TMP/diff"; then
        pass "$1: mariadb-dump of both sides identical"
    else
        fail "$1: mariadb-dump differs"
        head -60 "$TEST_TMP/diff" | sed 's/^/    /'
    fi
}

field() { # field NAME LINE: the value of NAME=... in a dbpipe figures line
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

# ---- first sync: everything ----
sleep 1.1 # the digest cache trusts only UPDATE_TIMEs older than the snapshot's second
if out=$(run_pipe 1 --root "$TEST_TMP/root" 2>"$TEST_TMP/err"); then
    pass "first sync"
else
    fail "first sync" "$(cat "$TEST_TMP/err")"
fi
echo "    $out"
check_eq "first sync sends every table, view and trigger" "$(field sent "$out")" "11"
check_eq "non-transactional tables named" "$(sed -n 's/.*nontx=\[\(.*\)\]/\1/p' <<<"$out")" \
    "arialog, legacy"
compare "first sync"
check_eq "row count of big" "$(mdb_sql "$B" 'SELECT COUNT(*) FROM understudy_site.big')" 100000
check_eq "generated columns computed" \
    "$(mdb_sql "$B" 'SELECT g, gs FROM understudy_site.types WHERE id = 3')" "$(printf '1\tgb')"
check_eq "4-byte UTF-8 intact" \
    "$(mdb_sql "$B" 'SELECT HEX(t4) FROM understudy_site.types WHERE id = 1')" \
    "$(printf 'emoji 😀 𝄞 and ü' | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
check_eq "binary with NUL and invalid UTF-8 intact" \
    "$(mdb_sql "$B" 'SELECT HEX(bin), HEX(blb) FROM understudy_site.types WHERE id = 1')" \
    "$(printf '00FF00FE0A0D09\t00FFFEC328')"
check_eq "NULL and empty string kept apart" \
    "$(mdb_sql "$B" 'SELECT COUNT(*) FROM understudy_site.nopk WHERE b IS NULL')$(mdb_sql "$B" \
        "SELECT COUNT(*) FROM understudy_site.nopk WHERE b = ''")" "11"

# wp-config.php now names the backup's database; everything else as it was.
W=$TEST_TMP/root/wp-config.php
check "wp-config DB_NAME rewritten" grep -q "define( 'DB_NAME', 'understudy_site' );" "$W"
check "wp-config DB_USER rewritten" grep -q "define( 'DB_USER', 'understudy' );" "$W"
check "wp-config DB_PASSWORD rewritten" grep -q "define( 'DB_PASSWORD', 'ctl-pw' );" "$W"
check "wp-config DB_HOST rewritten" grep -q "define( 'DB_HOST', 'localhost:$SOCK_B' );" "$W"
check "wp-config keeps the rest" grep -q "define( 'AUTH_KEY', 'keep me' );" "$W"

# The applied snapshot is also kept as a plain SQL dump that the stock client restores.
DUMP1=$TEST_TMP/data/dumps/gen1.sql.zst
check "retained dump of generation 1 written" test -s "$DUMP1"
mdb_sql "$B" "CREATE DATABASE understudy_restored" || die "restore schema"
if zstd -dc "$DUMP1" | mdb_client "$B" understudy_restored 2>"$TEST_TMP/err"; then
    compare "retained dump restored with zstd -dc | mariadb" understudy_restored
else
    fail "retained dump restores" "$(cat "$TEST_TMP/err")"
fi
mdb_sql "$B" "DROP DATABASE understudy_restored"

# ---- no change: digests only ----
# Without the digest cache: the first sync digested every table from its rows as they were
# sent (nothing asked the controller for those digests first), this one has the server digest
# them in the snapshot; the two must agree for every column type.
mv "$TEST_TMP/digests" "$TEST_TMP/digests.kept"
out=$(run_pipe 2 2>"$TEST_TMP/err") || fail "no-change sync" "$(cat "$TEST_TMP/err")"
mv "$TEST_TMP/digests.kept" "$TEST_TMP/digests"
echo "    $out"
check_eq "no-change sync sends no table (digests from the stream equal the server's)" \
    "$(field sent "$out")" 0
check_eq "no-change sync imports no row" "$(field rows "$out")" 0
NOCHANGE_BYTES=$(field agent_bytes "$out")
((NOCHANGE_BYTES < 4096)) && pass "no-change sync: $NOCHANGE_BYTES bytes from the agent" ||
    fail "no-change sync bytes" "$NOCHANGE_BYTES"
compare "no-change sync"

# ---- one row changed: only that table ----
mdb_client "$P" --default-character-set=utf8mb4 -e \
    "UPDATE site.types SET e = 'b', t4 = 'changed 🎉' WHERE id = 3" || die "update"
out=$(run_pipe 3 2>"$TEST_TMP/err") || fail "one-row sync" "$(cat "$TEST_TMP/err")"
echo "    $out"
check_eq "one changed row sends one table" "$(field sent "$out")" 1
# Every base table but types (changed) and empty_t (never written since the server started: no
# UPDATE_TIME) from the cache the first sync wrote.
check_eq "one changed row: the unchanged tables are not scanned (UPDATE_TIME unchanged)" \
    "$(field cached "$out")" 5
check_eq "one changed row: the table's rows only" "$(field rows "$out")" 3
compare "one-row sync (trigger on a moved table recreated)"
check_eq "previous generation archived" \
    "$(mdb_sql "$B" 'SELECT COUNT(*) FROM understudy_site_old3.types')" 3

# ---- a MyISAM change, a dropped table, a new table ----
mdb_client "$P" site -e "INSERT INTO legacy VALUES ('c', 'new'); DROP TABLE empty_t;
    CREATE TABLE added (x int(11) NOT NULL, PRIMARY KEY (x)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
    INSERT INTO added VALUES (5)" || die "changes"
out=$(run_pipe 4 2>"$TEST_TMP/err") || fail "sync with dropped/added tables" "$(cat "$TEST_TMP/err")"
echo "    $out"
check_eq "MyISAM change and new table sent" "$(field sent "$out")" 2
compare "dropped and added tables"

# ---- rollback: back two generations (4 -> 3 -> 2), one RENAME each ----
if "$DBPIPE" --agent-socket "$SOCK_P" --agent-db site --agent-user wpuser --agent-password x \
    --backup-socket "$SOCK_B" --backup-user understudy --backup-password-file "$TEST_TMP/pw" \
    --backup-name understudy_site --rollback-to 2 2>"$TEST_TMP/err"; then
    pass "database rolled back to generation 2"
else
    fail "database rollback" "$(cat "$TEST_TMP/err")"
fi
dump "$B" understudy_site >"$TEST_TMP/b.sql"
diff -q "$TEST_TMP/p-no-change sync.sql" "$TEST_TMP/b.sql" >/dev/null &&
    pass "rolled-back database equals the primary as of generation 2" ||
    fail "rolled-back database" "$(diff "$TEST_TMP/p-no-change sync.sql" "$TEST_TMP/b.sql" | head -20)"

# ---- hostile DDL from the primary: refused, nothing applied ----
mdb_sql "$P" "CREATE DATABASE other; CREATE TABLE other.secret (x int); INSERT INTO other.secret VALUES (7);
    CREATE VIEW site.v_evil AS SELECT x FROM other.secret" || die "evil view"
if run_pipe 5 >/dev/null 2>"$TEST_TMP/err"; then
    fail "view on another schema refused"
else
    grep -q "outside the site's schema" "$TEST_TMP/err" && pass "view on another schema refused" ||
        fail "view on another schema refused" "$(cat "$TEST_TMP/err")"
fi
check_eq "refused sync left the live generation" \
    "$(mdb_sql "$B" "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'understudy_site' AND TABLE_NAME = 'v_evil'")" 0
mdb_sql "$P" "DROP VIEW site.v_evil" || die "drop evil view"

# ---- wp-config.php as a symlink is not followed ----
mkdir -p "$TEST_TMP/root2"
ln -s /etc/passwd "$TEST_TMP/root2/wp-config.php"
if run_pipe 6 --root "$TEST_TMP/root2" >/dev/null 2>"$TEST_TMP/err"; then
    fail "symlinked wp-config.php refused"
else
    pass "symlinked wp-config.php refused"
fi
run_pipe 6 >/dev/null 2>"$TEST_TMP/err" || fail "sync after refusals" "$(cat "$TEST_TMP/err")"
compare "after refusals"
check_eq "old archives pruned" \
    "$(mdb_sql "$B" "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('understudy_site_old1', 'understudy_site_old3')")" 0

# ---- the agent alone: memory on the 100k-row table ----
if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "$DBPIPE" --agent-only --agent-socket "$SOCK_P" --agent-db site \
        --agent-user wpuser --agent-password 'wp pass' >"$TEST_TMP/agent.out" 2>"$TEST_TMP/time" ||
        fail "agent-only run" "$(cat "$TEST_TMP/time")"
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$TEST_TMP/time")
    echo "    agent alone: $(cat "$TEST_TMP/agent.out"); peak RSS ${rss} KiB"
    if [[ ${UNDERSTUDY_SANITIZE:-none} != none ]]; then
        echo "    (memory bound not checked in a ${UNDERSTUDY_SANITIZE} build)"
    elif ((rss < 32768)); then
        pass "agent peak RSS ${rss} KiB < 32 MiB"
    else
        fail "agent RSS" "$rss KiB"
    fi
fi

# ---- chunks: an update, a delete and a far insert in the 100k-row table send three chunks ----
mdb_sql "$P" "UPDATE site.big SET v = 'changed' WHERE id = 50000; DELETE FROM site.big WHERE id = 7;
    INSERT INTO site.big VALUES (200000, 'far away', 1)" || die "big changes"
out=$(run_pipe 7 2>"$TEST_TMP/err") || fail "chunked sync" "$(cat "$TEST_TMP/err")"
echo "    $out"
check_eq "chunked sync sends one table" "$(field sent "$out")" 1
rows=$(field rows "$out")
((rows > 0 && rows <= 3 * 4096)) && pass "chunked sync sends only the changed chunks ($rows of 100000 rows)" ||
    fail "chunked sync rows" "$rows"
compare "chunked sync"

# ---- DDL on the primary during the dump: that sync fails cleanly, the next one works ----
UNDERSTUDY_TEST_DBSEND_PAUSE_MS=1500 run_pipe 8 >/dev/null 2>"$TEST_TMP/err" &
pid=$!
sleep 0.7
mdb_sql "$P" "TRUNCATE TABLE site.big" || die "truncate"
if wait $pid; then
    fail "DDL during the dump fails the sync"
else
    grep -q "definition changed during the dump" "$TEST_TMP/err" &&
        pass "DDL during the dump fails the sync cleanly" ||
        fail "DDL during the dump fails the sync" "$(cat "$TEST_TMP/err")"
fi
check_eq "the backup kept the whole previous generation" \
    "$(mdb_sql "$B" 'SELECT COUNT(*) FROM understudy_site.big')" 100000
check_eq "no staging schema left" "$(mdb_sql "$B" "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'understudy\\_site\\_new%'")" 0
run_pipe 8 >/dev/null 2>"$TEST_TMP/err" || fail "sync after DDL" "$(cat "$TEST_TMP/err")"
compare "after DDL during a dump"

# ---- stored routines and events ([database] routines = yes) ----
# Created by the site's user, as on a shared host (MariaDB shows a routine's body to its definer).
mdb_sql_as "$P" wpuser 'wp pass' <<'SQL' || die "routines"
USE site;
CREATE FUNCTION f_double(x INT) RETURNS int(11) DETERMINISTIC RETURN x * 2;
CREATE FUNCTION p_count(x INT) RETURNS int(11) NO SQL RETURN x + 1;
DELIMITER //
CREATE PROCEDURE p_count(IN lim INT, OUT n INT) READS SQL DATA COMMENT 'counts ''big'''
BEGIN
  DECLARE done INT DEFAULT 0;
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1;
  SELECT COUNT(*) INTO n FROM types WHERE id <= lim;
END//
CREATE PROCEDURE p_call() SQL SECURITY INVOKER BEGIN CALL p_count(10, @x); SELECT @x; END//
DELIMITER ;
CREATE EVENT ev_clean ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
  ON COMPLETION PRESERVE DISABLE DO DELETE FROM legacy WHERE k = 'zzz';
CREATE VIEW v_f AS SELECT f_double(id) AS d FROM types;
SQL
ROUTINES="--routines --events --skip-triggers --no-create-info --no-data --skip-opt"
dump_routines() { # dump_routines DIR DB: procedures, functions and events only, normalised
    mariadb-dump --no-defaults --socket="$1/mysql.sock" --user=root --skip-dump-date \
        --skip-comments $ROUTINES "$2" |
        sed -e "s/\`$2\`/\`DB\`/g" -e 's/DEFINER=`[^`]*`@`[^`]*`/DEFINER=X/g'
}
compare_routines() { # compare_routines NAME [BACKUP_SCHEMA]
    dump_routines "$P" site >"$TEST_TMP/pr.sql"
    dump_routines "$B" "${2:-understudy_site}" >"$TEST_TMP/br.sql"
    if diff -u "$TEST_TMP/pr.sql" "$TEST_TMP/br.sql" >"$TEST_TMP/diff"; then
        pass "$1: routines and events of both sides identical (mariadb-dump --routines --events)"
    else
        fail "$1: routines or events differ"
        head -40 "$TEST_TMP/diff" | sed 's/^/    /'
    fi
}
out=$(run_pipe 9 --routines 2>"$TEST_TMP/err") || fail "sync with routines" "$(cat "$TEST_TMP/err")"
echo "    $out"
check_eq "routines sync sends the procedures, functions, event and the new view" \
    "$(field sent "$out")" 6
compare "routines sync"
compare_routines "routines sync"
check_eq "a function the view calls works on the backup" \
    "$(mdb_sql "$B" 'SELECT understudy_site.f_double(21), understudy_site.p_count(1)')" \
    "$(printf '42\t2')"
check_eq "a procedure calling another works on the backup" \
    "$(mdb_sql "$B" 'CALL understudy_site.p_call()')" 3
check_eq "routines are created as the controller's account" \
    "$(mdb_sql "$B" "SELECT GROUP_CONCAT(DISTINCT DEFINER) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'understudy_site'")" \
    "understudy@localhost"
out=$(run_pipe 10 --routines 2>"$TEST_TMP/err") || fail "no-change sync with routines" "$(cat "$TEST_TMP/err")"
check_eq "no-change sync with routines sends nothing" "$(field sent "$out")" 0

# Hostile definitions: another schema's table, dynamic SQL. Refused, nothing applied.
mdb_sql_as "$P" wpuser 'wp pass' "CREATE PROCEDURE site.p_evil() SELECT x FROM other.secret" ||
    die "evil procedure"
if run_pipe 11 --routines >/dev/null 2>"$TEST_TMP/err"; then
    fail "procedure reading another schema refused"
else
    grep -q "procedure p_evil refers to other.secret, outside the site's schema" "$TEST_TMP/err" &&
        pass "procedure reading another schema refused" ||
        fail "procedure reading another schema refused" "$(cat "$TEST_TMP/err")"
fi
mdb_sql_as "$P" wpuser 'wp pass' "DROP PROCEDURE site.p_evil" || die "drop evil procedure"
mdb_sql_as "$P" wpuser 'wp pass' <<'SQL' || die "dynamic procedure"
USE site;
DELIMITER //
CREATE PROCEDURE p_dyn() BEGIN PREPARE s FROM 'DROP TABLE big'; EXECUTE s; END//
DELIMITER ;
SQL
if run_pipe 11 --routines >/dev/null 2>"$TEST_TMP/err"; then
    fail "procedure with dynamic SQL refused"
else
    grep -q "procedure p_dyn uses PREPARE" "$TEST_TMP/err" &&
        pass "procedure with dynamic SQL refused" ||
        fail "procedure with dynamic SQL refused" "$(cat "$TEST_TMP/err")"
fi
check_eq "refused routines left the live generation" \
    "$(mdb_sql "$B" "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'understudy_site' AND ROUTINE_NAME IN ('p_evil', 'p_dyn')")" 0

# A dropped routine goes; the event's change comes.
mdb_sql_as "$P" wpuser 'wp pass' "DROP PROCEDURE site.p_dyn; DROP PROCEDURE site.p_call;
    ALTER EVENT site.ev_clean ON SCHEDULE EVERY 2 HOUR STARTS '2031-06-01 12:00:00'" ||
    die "routine changes"
out=$(run_pipe 11 --routines 2>"$TEST_TMP/err") || fail "sync after routine changes" "$(cat "$TEST_TMP/err")"
compare_routines "dropped procedure and changed event"
mdb_sql "$B" "CREATE DATABASE understudy_restored" || die "restore schema"
if zstd -dc "$TEST_TMP/data/dumps/gen11.sql.zst" | mdb_client "$B" understudy_restored 2>"$TEST_TMP/err"; then
    compare_routines "retained dump with routines restored" understudy_restored
else
    fail "retained dump with routines restores" "$(cat "$TEST_TMP/err")"
fi
mdb_sql "$B" "DROP DATABASE understudy_restored"

# ---- chunks of a table with AUTO_INCREMENT: the staged table (created like the live one) ----
# ---- gets the primary's counter, past the highest key ----
mdb_sql "$P" "USE site; CREATE TABLE site.aitab (id int(11) NOT NULL AUTO_INCREMENT, v varchar(20) DEFAULT NULL,
    PRIMARY KEY (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
    INSERT INTO site.aitab (v) SELECT concat('r', seq) FROM seq_1_to_20000;
    DELETE FROM site.aitab WHERE id > 19990" || die "aitab"
run_pipe 12 --routines >/dev/null 2>"$TEST_TMP/err" || fail "sync of aitab" "$(cat "$TEST_TMP/err")"
mdb_sql "$P" "UPDATE site.aitab SET v = 'changed' WHERE id = 5" || die "aitab update"
out=$(run_pipe 13 --routines 2>"$TEST_TMP/err") || fail "chunked sync of aitab" "$(cat "$TEST_TMP/err")"
echo "    $out"
rows=$(field rows "$out")
((rows > 0 && rows <= 4096)) && pass "chunked sync of a table with AUTO_INCREMENT sends one chunk ($rows rows)" ||
    fail "chunked sync of aitab rows" "$rows"
compare "chunked sync of a table with AUTO_INCREMENT"

# ---- CHECK constraints (other than JSON's json_valid) carried over ----
mdb_sql "$P" "CREATE TABLE site.chk (id int(11) NOT NULL, qty int(11) DEFAULT NULL CHECK (qty >= 0),
    lo int(11) DEFAULT NULL, hi int(11) DEFAULT NULL, j json DEFAULT NULL, PRIMARY KEY (id),
    CONSTRAINT range_ok CHECK (lo <= hi), CONSTRAINT CONSTRAINT_2 CHECK (char_length(cast(hi as char)) < 9))
    ENGINE=InnoDB DEFAULT CHARSET=utf8mb4; INSERT INTO site.chk VALUES (1, 2, 3, 4, '{}')" || die "chk"
out=$(run_pipe 14 --routines 2>"$TEST_TMP/err") || fail "sync of CHECK constraints" "$(cat "$TEST_TMP/err")"
compare "CHECK constraints"
check_eq "a CHECK constraint holds on the backup" \
    "$(mdb_sql "$B" "INSERT INTO understudy_site.chk VALUES (2, 0, 5, 1, NULL)" 2>&1 | grep -c 'CONSTRAINT .range_ok. failed')" 1
