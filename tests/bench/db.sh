#!/usr/bin/env bash
# Database sync benchmark, run by hand (not part of tests/run): understudy's database phase
# (tests/helpers/dbpipe: agent and controller sides over an in-memory pipe, two real MariaDB
# servers) against the seed's method, `mariadb-dump --single-transaction DB | mariadb DB`, on the
# same data in the same run.
#
#   tests/bench/db.sh [--quick] [--postmeta N]
#
# Dataset: WordPress core tables (wp_posts, wp_postmeta, wp_comments, wp_commentmeta, wp_options,
# wp_users, wp_usermeta, wp_terms...) as WordPress 6 creates them, filled with generated posts,
# comments and N wp_postmeta rows (default 1,000,000; --quick: 100,000). Cases: first sync,
# no-change sync, one new comment. Prints per case the wall time of both, their ratio, bytes
# on the wire (understudy: frames from the agent; seed: the SQL text the dump pipes), and the
# agent's peak RSS (a run of the agent's side alone, /usr/bin/time). Targets (Database sync
# issue): first sync <= 1.0x, no-change <= 0.1x, one comment <= 0.1x, agent RSS <= 32 MiB.
# The seed's ssh hop is left out (both run on this host), which favours the seed.
set -u -o pipefail
# shellcheck source=tests/helpers/lib.sh
source "$(dirname "$0")/../helpers/lib.sh"
# shellcheck source=tests/helpers/mariadb.sh
source "$(dirname "$0")/../helpers/mariadb.sh"
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/lib.sh"

POSTMETA=1000000
while (($#)); do
    case $1 in
    --quick) POSTMETA=100000 ;;
    --postmeta) POSTMETA=$2; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
    esac
    shift
done
DBPIPE=${UNDERSTUDY_DBPIPE:-$UNDERSTUDY_BUILD/tests/dbpipe}
[[ -x $DBPIPE ]] || die "build first: meson setup build && ninja -C build ($DBPIPE)"
[[ -x /usr/bin/time ]] || die "needs /usr/bin/time (Debian package time)"
POSTS=$((POSTMETA / 50 > 0 ? POSTMETA / 50 : 1))

tmpdir
mkdir -p "$TEST_TMP/tmp"
export TMPDIR=$TEST_TMP/tmp
P=$TEST_TMP/p
B=$TEST_TMP/b
MDB_OPTS="--innodb-buffer-pool-size=512M --innodb-log-file-size=256M --max-allowed-packet=64M" \
    mdb_start "$P" || die "primary"
MDB_OPTS="--innodb-buffer-pool-size=512M --innodb-log-file-size=256M --max-allowed-packet=64M" \
    mdb_start "$B" || die "backup"
mdb_create_site "$P" site wpuser wppass || die "site"
mdb_sql "$B" "CREATE USER 'understudy'@'localhost' IDENTIFIED BY 'ctl';
    GRANT ALL PRIVILEGES ON \`understudy\\_%\`.* TO 'understudy'@'localhost';
    CREATE DATABASE seed_site;" || die "backup account"
printf 'ctl\n' >"$TEST_TMP/pw"
chmod 600 "$TEST_TMP/pw"

echo "generating: $POSTS posts, $POSTMETA postmeta rows, $((POSTS * 2)) comments ..."
bench_fill_db "$P" site "$POSTMETA" || die "dataset"
mdb_sql "$P" "SELECT CONCAT(ROUND(SUM(data_length + index_length) / 1048576), ' MiB') FROM information_schema.TABLES WHERE table_schema = 'site'" |
    sed 's/^/database size: /'

SOCK_P=$(mdb_socket "$P")
SOCK_B=$(mdb_socket "$B")
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

# The seed's pipeline: the whole database every time.
seed() {
    local t0 t1
    t0=$(now)
    mariadb-dump --no-defaults --socket="$SOCK_P" --user=wpuser --password=wppass --single-transaction \
        --skip-lock-tables site | tee >(wc -c >"$TEST_TMP/seed.bytes") |
        mariadb --no-defaults --socket="$SOCK_B" --user=root seed_site || die "seed pipeline"
    t1=$(now)
    sleep 0.2
    SEED_S=$(secs "$t0" "$t1")
    SEED_BYTES=$(cat "$TEST_TMP/seed.bytes")
}

ours() { # ours GENERATION [dbpipe args...]
    local t0 t1 out gen=$1
    shift
    t0=$(now)
    out=$("$DBPIPE" --agent-socket "$SOCK_P" --agent-db site --agent-user wpuser --agent-password wppass \
        --backup-socket "$SOCK_B" --backup-user understudy --backup-password-file "$TEST_TMP/pw" \
        --backup-name understudy_site --generation "$gen" "$@" 2>"$TEST_TMP/err") ||
        die "dbpipe: $(cat "$TEST_TMP/err")"
    t1=$(now)
    OURS_S=$(secs "$t0" "$t1")
    OURS_BYTES=$(sed -n 's/.*agent_bytes=\([0-9]*\).*/\1/p' <<<"$out")
    OURS_ROWS=$(sed -n 's/.* rows=\([0-9]*\).*/\1/p' <<<"$out")
}

report() { # report CASE
    printf '%-16s understudy %8.2f s %12s B %9s rows | seed %8.2f s %12s B | time ratio %.3f\n' \
        "$1" "$OURS_S" "$OURS_BYTES" "$OURS_ROWS" "$SEED_S" "$SEED_BYTES" \
        "$(echo "$OURS_S / $SEED_S" | bc -l)"
}

# With --cache the agent keeps its row digests between syncs and rescans only tables whose
# UPDATE_TIME moved (dbsend_opts_t.digest_cache, opt-in); without it every table is scanned.
CACHE=(--cache "$TEST_TMP/digests")
sleep 1.1 # digests are cached only for UPDATE_TIMEs older than the snapshot's second
seed
ours 1 "${CACHE[@]}"
report "first sync"
seed
ours 2
report "no change, scan"
ours 3 "${CACHE[@]}"
report "no change, cache"
mdb_sql "$P" "INSERT INTO site.wp_comments (comment_post_ID, comment_author, comment_date, comment_date_gmt, comment_content) VALUES (1, 'Late reader', NOW(), NOW(), 'A new comment');
    UPDATE site.wp_posts SET comment_count = comment_count + 1 WHERE ID = 1" || die "comment"
seed
ours 4
report "1 comment, scan"
mdb_sql "$P" "INSERT INTO site.wp_comments (comment_post_ID, comment_author, comment_date, comment_date_gmt, comment_content) VALUES (2, 'Later reader', NOW(), NOW(), 'Another comment');
    UPDATE site.wp_posts SET comment_count = comment_count + 1 WHERE ID = 2" || die "comment"
ours 5 "${CACHE[@]}"
report "1 comment, cache"

/usr/bin/time -f '%M' -o "$TEST_TMP/rss" "$DBPIPE" --agent-only --agent-socket "$SOCK_P" \
    --agent-db site --agent-user wpuser --agent-password wppass >"$TEST_TMP/agent.out" ||
    die "agent-only run"
echo "agent alone, whole database: $(cat "$TEST_TMP/agent.out")"
echo "agent peak RSS: $(cat "$TEST_TMP/rss") KiB (process with an in-memory pipe and a stub controller)"
