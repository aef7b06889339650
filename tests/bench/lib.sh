# shellcheck shell=bash
# Shared by the benchmarks (tests/bench/files.sh, db.sh, report): the seed's ssh transport, the
# datasets and a median. Source it after tests/helpers/lib.sh (and mariadb.sh for bench_fill_db).
#
#   start_sshd               sshd on a loopback port for root's throwaway key, in $B/ssh; sets
#                            SSH_PORT and SSH (the command rsync -e and the seed's ssh use)
#   make_wordpress DIR       Debian's wordpress tree, plain, plus ~20 MB of generated uploads
#   make_scaled DIR N        N small files in N/100 directories
#   small_change DIR         edits 10 .php files, adds one 1 MiB upload; prints the changed
#                            bytes, zstd-compressed
#   bench_fill_db MDBDIR DB POSTMETA
#                            WordPress 6's core tables in DB, with POSTMETA/50 posts, twice as
#                            many comments and POSTMETA wp_postmeta rows
#   settle PID...            waits until the processes are idle, then syncs (before a timed run)
#   shipped_agent            points UNDERSTUDY_AGENT at the agent README installs on the primary
#                            (the static build); UNDERSTUDY_BENCH_AGENT=build keeps the build's
#   median                   the median of the numbers on stdin, one a line

# The agent the benchmarks measure is the one a primary runs: README's install copies the
# single-file static build (deploy/install-backup) to the shared host. It is built here the way
# install-backup and tests/integration/static-agent.sh build it, in $UNDERSTUDY_BUILD/static-agent
# (only what changed is rebuilt). A host that cannot link statically measures the build's agent,
# and says so. Same compiler options either way (the project's default buildtype).
shipped_agent() {
    local dir=$UNDERSTUDY_BUILD/static-agent log=$UNDERSTUDY_BUILD/static-agent.log
    if [[ ${UNDERSTUDY_BENCH_AGENT:-} == build ]]; then
        printf 'agent: %s (UNDERSTUDY_BENCH_AGENT=build)\n' "$UNDERSTUDY_AGENT" >&2
        return 0
    fi
    if { [[ -f $dir/build.ninja ]] ||
        meson setup "$dir" "$UNDERSTUDY_SOURCE" -Dstatic_agent=true -Dtests=false >"$log" 2>&1; } &&
        ninja -C "$dir" agent/understudy-agent >>"$log" 2>&1; then
        UNDERSTUDY_AGENT=$dir/agent/understudy-agent
        printf 'agent: %s (static, as installed on a primary)\n' "$UNDERSTUDY_AGENT" >&2
    else
        printf 'agent: %s (the static agent does not build here, see %s)\n' "$UNDERSTUDY_AGENT" "$log" >&2
    fi
    export UNDERSTUDY_AGENT
}

start_sshd() {
    mkdir -p "$B/ssh"
    ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/host" >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/client" >/dev/null
    SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$B/ssh/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $B/ssh/host
AuthorizedKeysFile $B/ssh/client.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
PidFile $B/ssh/sshd.pid
StrictModes no
UsePAM no
EOF
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$B/ssh/sshd_config" -E "$B/ssh/sshd.log" || die "sshd did not start"
    on_exit "kill \$(cat $B/ssh/sshd.pid) 2>/dev/null"
    # shellcheck disable=SC2034 # for the scripts that source this file
    SSH="ssh -p $SSH_PORT -i $B/ssh/client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
}

make_wordpress() { # make_wordpress DIR: Debian's wordpress tree, plain, plus ~20 MB of uploads
    mkdir -p "$1"
    cp -rL /usr/share/wordpress/. "$1/" 2>/dev/null
    mkdir -p "$1/wp-content/uploads/2026/11"
    python3 - "$1/wp-content/uploads/2026/11" <<'EOF'
import os, random, sys
random.seed(7)
d = sys.argv[1]
for i in range(100):   # 100 x 200 KiB: photos do not compress
    with open(os.path.join(d, "photo-%03d.jpg" % i), "wb") as f:
        f.write(random.randbytes(200 * 1024))
EOF
}

make_scaled() { # make_scaled DIR N: N small files in N/100 directories
    python3 - "$1" "$2" <<'EOF'
import os, random, sys
random.seed(11)
root, n = sys.argv[1], int(sys.argv[2])
words = [b"wordpress", b"understudy", b"function", b"return", b"array", b"<?php", b"echo"]
for i in range(n):
    d = os.path.join(root, "dir%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    size = random.randint(1, 8) * 1024
    body = b" ".join(random.choice(words) for _ in range(size // 6))
    with open(os.path.join(d, "file%05d.php" % i), "wb") as f:
        f.write(body[:size])
EOF
}

small_change() { # small_change DIR: edit 10 files, add one 1 MiB upload; prints changed bytes (zstd)
    python3 - "$1" <<'EOF'
import os, random, subprocess, sys
root = sys.argv[1]
files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".php"))
random.seed()  # a different change every run: a repeated upload would be reused by hash
changed = random.sample(files, 10)
for p in changed:
    with open(p, "ab") as f:
        f.write(b"\n/* edited */\n")
up = os.path.join(root, "wp-content", "uploads", "new-%d.bin" % random.randrange(10**9))
os.makedirs(os.path.dirname(up), exist_ok=True)
with open(up, "wb") as f:
    f.write(os.urandom(1 << 20))
total = 0
for p in changed + [up]:
    total += len(subprocess.run(["zstd", "-3", "-c", p], capture_output=True).stdout)
print(total)
EOF
}

bench_fill_db() {
    local dir=$1 db=$2 postmeta=$3 posts
    posts=$((postmeta / 50 > 0 ? postmeta / 50 : 1))
    mdb_client "$dir" "$db" <<SQL
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
  FROM seq_1_to_$posts;
INSERT INTO wp_term_relationships (object_id, term_taxonomy_id) SELECT seq, 1 + seq % 50 FROM seq_1_to_$posts;
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
  SELECT 1 + seq DIV 50, concat('_meta_', seq % 50), concat('value ', seq, ' ', repeat('m', seq % 80)) FROM seq_0_to_$((postmeta - 1));
INSERT INTO wp_comments (comment_post_ID, comment_author, comment_author_email, comment_date, comment_date_gmt, comment_content)
  SELECT 1 + seq % $posts, concat('Reader ', seq), concat('r', seq, '@example.org'), NOW(), NOW(), concat('Comment ', seq, ' ', repeat('nice ', seq % 30))
  FROM seq_1_to_$((posts * 2));
SQL
}

cpu_of() { # cpu_of PID...: user + system clock ticks of the live ones among them
    local t=0 p
    for p; do [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}

# settle PID...: waits (at most 60 s) until these processes are idle (together under 20 ms of
# CPU in half a second), then syncs. Called before every timed run of either method: the
# controller goes on working after a sync (it prepares the next tree, checks for drift) and
# MariaDB after an import, which would otherwise land in whichever run comes next; between two
# cron runs hours apart that work is long done. The sync leaves nothing dirty for the next
# run's syncfs to write back (rsync never syncs).
settle() {
    local deadline=$((SECONDS + 60)) a b
    while ((SECONDS < deadline)); do
        a=$(cpu_of "$@")
        sleep 0.5
        b=$(cpu_of "$@")
        ((b - a < 2)) && break
    done
    sync
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
