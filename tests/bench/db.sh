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
source "$(dirname "$0")/../helpers/lib.sh"
source "$(dirname "$0")/../helpers/mariadb.sh"

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
mdb_client "$P" site <<SQL || die "dataset"
CREATE TABLE wp_posts (
  ID bigint(20) unsigned NOT NULL AUTO_INCREMENT, post_author bigint(20) unsigned NOT NULL DEFAULT 0,
  post_date datetime NOT NULL DEFAULT '0000-00-00 00:00:00', post_date_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_content longtext NOT NULL, post_title text NOT NULL, post_excerpt text NOT NULL,
  post_status varchar(20) NOT NULL DEFAULT 'publish', comment_status varchar(20) NOT NULL DEFAULT 'open',
  ping_status varchar(20) NOT NULL DEFAULT 'open', post_password varchar(255) NOT NULL DEFAULT '',
  post_name varchar(200) NOT NULL DEFAULT '', to_ping text NOT NULL, pinged text NOT NULL,
  post_modified datetime NOT NULL DEFAULT '0000-00-00 00:00:00', post_modified_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_content_filtered longtext NOT NULL, post_parent bigint(20) unsigned NOT NULL DEFAULT 0,
  guid varchar(255) NOT NULL DEFAULT '', menu_order int(11) NOT NULL DEFAULT 0,
  post_type varchar(20) NOT NULL DEFAULT 'post', post_mime_type varchar(100) NOT NULL DEFAULT '',
  comment_count bigint(20) NOT NULL DEFAULT 0,
  PRIMARY KEY (ID), KEY post_name (post_name(191)), KEY type_status_date (post_type,post_status,post_date,ID),
  KEY post_parent (post_parent), KEY post_author (post_author)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_postmeta (
  meta_id bigint(20) unsigned NOT NULL AUTO_INCREMENT, post_id bigint(20) unsigned NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL, meta_value longtext,
  PRIMARY KEY (meta_id), KEY post_id (post_id), KEY meta_key (meta_key(191))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_comments (
  comment_ID bigint(20) unsigned NOT NULL AUTO_INCREMENT, comment_post_ID bigint(20) unsigned NOT NULL DEFAULT 0,
  comment_author tinytext NOT NULL, comment_author_email varchar(100) NOT NULL DEFAULT '',
  comment_author_url varchar(200) NOT NULL DEFAULT '', comment_author_IP varchar(100) NOT NULL DEFAULT '',
  comment_date datetime NOT NULL DEFAULT '0000-00-00 00:00:00', comment_date_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  comment_content text NOT NULL, comment_karma int(11) NOT NULL DEFAULT 0,
  comment_approved varchar(20) NOT NULL DEFAULT '1', comment_agent varchar(255) NOT NULL DEFAULT '',
  comment_type varchar(20) NOT NULL DEFAULT 'comment', comment_parent bigint(20) unsigned NOT NULL DEFAULT 0,
  user_id bigint(20) unsigned NOT NULL DEFAULT 0,
  PRIMARY KEY (comment_ID), KEY comment_post_ID (comment_post_ID),
  KEY comment_approved_date_gmt (comment_approved,comment_date_gmt), KEY comment_date_gmt (comment_date_gmt),
  KEY comment_parent (comment_parent), KEY comment_author_email (comment_author_email(10))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_commentmeta (
  meta_id bigint(20) unsigned NOT NULL AUTO_INCREMENT, comment_id bigint(20) unsigned NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL, meta_value longtext,
  PRIMARY KEY (meta_id), KEY comment_id (comment_id), KEY meta_key (meta_key(191))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_options (
  option_id bigint(20) unsigned NOT NULL AUTO_INCREMENT, option_name varchar(191) NOT NULL DEFAULT '',
  option_value longtext NOT NULL, autoload varchar(20) NOT NULL DEFAULT 'yes',
  PRIMARY KEY (option_id), UNIQUE KEY option_name (option_name), KEY autoload (autoload)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_users (
  ID bigint(20) unsigned NOT NULL AUTO_INCREMENT, user_login varchar(60) NOT NULL DEFAULT '',
  user_pass varchar(255) NOT NULL DEFAULT '', user_nicename varchar(50) NOT NULL DEFAULT '',
  user_email varchar(100) NOT NULL DEFAULT '', user_url varchar(100) NOT NULL DEFAULT '',
  user_registered datetime NOT NULL DEFAULT '0000-00-00 00:00:00', user_activation_key varchar(255) NOT NULL DEFAULT '',
  user_status int(11) NOT NULL DEFAULT 0, display_name varchar(250) NOT NULL DEFAULT '',
  PRIMARY KEY (ID), KEY user_login_key (user_login), KEY user_nicename (user_nicename), KEY user_email (user_email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_usermeta (
  umeta_id bigint(20) unsigned NOT NULL AUTO_INCREMENT, user_id bigint(20) unsigned NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL, meta_value longtext,
  PRIMARY KEY (umeta_id), KEY user_id (user_id), KEY meta_key (meta_key(191))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_terms (
  term_id bigint(20) unsigned NOT NULL AUTO_INCREMENT, name varchar(200) NOT NULL DEFAULT '',
  slug varchar(200) NOT NULL DEFAULT '', term_group bigint(10) NOT NULL DEFAULT 0,
  PRIMARY KEY (term_id), KEY slug (slug(191)), KEY name (name(191))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
CREATE TABLE wp_term_relationships (
  object_id bigint(20) unsigned NOT NULL DEFAULT 0, term_taxonomy_id bigint(20) unsigned NOT NULL DEFAULT 0,
  term_order int(11) NOT NULL DEFAULT 0,
  PRIMARY KEY (object_id,term_taxonomy_id), KEY term_taxonomy_id (term_taxonomy_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
SET SESSION sql_mode = '';
INSERT INTO wp_users VALUES (1, 'admin', '\$P\$Bxxxxxxxx', 'admin', 'a@example.org', '', NOW(), '', 0, 'admin');
INSERT INTO wp_usermeta (user_id, meta_key, meta_value) SELECT 1, concat('key', seq), repeat('v', seq % 40) FROM seq_1_to_30;
INSERT INTO wp_options (option_name, option_value) SELECT concat('option_', seq), repeat('o', seq % 300) FROM seq_1_to_500;
INSERT INTO wp_terms (name, slug) SELECT concat('Term ', seq), concat('term-', seq) FROM seq_1_to_50;
INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, guid)
  SELECT 1, '2024-01-01' + INTERVAL seq MINUTE, '2024-01-01' + INTERVAL seq MINUTE,
         concat('<!-- wp:paragraph --><p>Post ', seq, ' ', repeat('lorem ipsum dolor sit amet ', 20 + seq % 60), '</p><!-- /wp:paragraph -->'),
         concat('Post number ', seq), '', concat('post-', seq), '', '', NOW(), NOW(), '', concat('https://example.org/?p=', seq)
  FROM seq_1_to_$POSTS;
INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) SELECT seq, 1 + seq % 50 FROM seq_1_to_$POSTS;
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
  SELECT 1 + seq DIV 50, concat('_meta_', seq % 50), concat('value ', seq, ' ', repeat('m', seq % 80)) FROM seq_0_to_$((POSTMETA - 1));
INSERT INTO wp_comments (comment_post_ID, comment_author, comment_author_email, comment_date, comment_date_gmt, comment_content)
  SELECT 1 + seq % $POSTS, concat('Reader ', seq), concat('r', seq, '@example.org'), NOW(), NOW(), concat('Comment ', seq, ' ', repeat('nice ', seq % 30))
  FROM seq_1_to_$((POSTS * 2));
SQL
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
