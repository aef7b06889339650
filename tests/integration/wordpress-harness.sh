#!/usr/bin/env bash
# Tests tests/helpers/wordpress.sh itself: a real WordPress (Debian's package) on MariaDB, nginx
# and php-fpm from temp dirs — install, login, a post, an anonymous comment, an upload, a crawl
# that writes nothing but WP-Cron's own POSTs, a docroot symlink switched between generations,
# and nothing left running afterwards. Then the same again inside a network namespace (the whole
# script under "ip netns exec"), and once more driven from outside one (WP_NETNS).
set -u

# shellcheck source=tests/helpers/mariadb.sh
source "$(dirname "${BASH_SOURCE[0]}")/../helpers/mariadb.sh"
# shellcheck source=tests/helpers/wordpress.sh
source "$(dirname "${BASH_SOURCE[0]}")/../helpers/wordpress.sh"

for cmd in mariadbd nginx "$WP_PHP_FPM" php curl; do
    command -v "$cmd" >/dev/null ||
        skip "$cmd not installed (tests/run installs the packages of deploy/packages.txt)"
done
[[ -f $WP_SOURCE/wp-settings.php ]] || skip "Debian's wordpress package is not installed"

INNER=${WP_HARNESS_INNER:-}
label=${INNER:+netns: }
started=$SECONDS

tmpdir
T=$TEST_TMP
DB=wp_harness
DB_USER=wp_harness
DB_PASSWORD="pa'ss\"word"
TITLE="Understudy Harness Blog"
ADMIN=editor
ADMIN_PASSWORD='correct horse battery staple'

# http_get URL OUT [CURL_ARGS...]: prints the status of a GET (following redirects), body in OUT.
# Plain curl, independent of the helpers under test.
http_get() {
    local url=$1 out=$2
    shift 2
    curl --silent --noproxy '*' --max-time 30 --location -o "$out" -w '%{http_code}' "$@" "$url"
}

mdb_start "$T/db" || die "cannot start MariaDB"
mdb_create_site "$T/db" "$DB" "$DB_USER" "$DB_PASSWORD" || die "mdb_create_site failed"

# --- The tree: plain, self-contained, generation 1 behind a docroot symlink. ------------------
wp_tree "$T/gen1" || die "wp_tree failed"
check_eq "${label}tree has no symlink" "$(find "$T/gen1" -type l | wc -l)" 0
check_eq "${label}tree names no /etc/wordpress or /var/lib/wordpress" \
    "$(grep -rlE '/etc/wordpress|/var/lib/wordpress' "$T/gen1" --include='*.php' | wc -l)" 0
check "${label}tree has real themes, plugins and uploads" test -f \
    "$T/gen1/wp-content/themes/twentytwentythree/style.css" -a -d \
    "$T/gen1/wp-content/plugins/akismet" -a -d "$T/gen1/wp-content/uploads" -a ! -e \
    "$T/gen1/wp-config.php"
ln -s gen1 "$T/site"
wp_configure "$T/site" "$DB" "$DB_USER" "$DB_PASSWORD" "$(mdb_socket "$T/db")" ||
    die "wp_configure failed"
php_lint() {
    php -l "$1" >/dev/null
}
check "${label}wp-config.php is valid PHP" php_lint "$T/site/wp-config.php"
check "${label}wp-config.php has DB_HOST localhost:socket" grep -qF \
    "define( 'DB_HOST', 'localhost:$T/db/mysql.sock' );" "$T/site/wp-config.php"

# --- Serving and installing. ------------------------------------------------------------------
format=combined
[[ -n $INNER ]] && format=cloudflare
WP_LOG_FORMAT=$format wp_serve "$T/site" "$T/web" || die "wp_serve failed"
URL=$WP_URL
printf '%ssite at %s (access log format %s)\n' "$label" "$URL" "$format"
wp_install "$URL" "$TITLE" "$ADMIN" "$ADMIN_PASSWORD" editor@example.com || die "wp_install failed"
status=$(http_get "$URL/" "$T/front.html")
check_eq "${label}front page answers 200" "$status" 200
check "${label}front page shows the title" grep -qF "$TITLE" "$T/front.html"
check_eq "${label}moderation is off after the install" "$(mdb_sql "$T/db" "SELECT option_value \
    FROM $DB.wp_options WHERE option_name IN ('comment_moderation', 'comment_previously_approved') \
    ORDER BY option_name")" $'0\n0'

# --- An editor: login, dashboard, a post. -----------------------------------------------------
jar=$T/editor.cookies
wp_login "$URL" "$ADMIN" "$ADMIN_PASSWORD" "$jar" || die "wp_login failed"
status=$(http_get "$URL/wp-admin/" "$T/dashboard.html" -b "$jar")
check_eq "${label}dashboard answers 200 with the cookie" "$status" 200
check "${label}dashboard is the dashboard" grep -q '<title>Dashboard' "$T/dashboard.html"
status=$(curl --silent --noproxy '*' -o /dev/null -w '%{http_code}' "$URL/wp-admin/")
check_eq "${label}dashboard without the cookie redirects to the login" "$status" 302

post_title="Standby notes $RANDOM"
post_id=$(wp_new_post "$URL" "$jar" "$post_title" "<p>Written through the REST API.</p>") ||
    die "wp_new_post failed"
http_get "$URL/" "$T/front2.html" >/dev/null
check "${label}the post is on the front page" grep -qF "$post_title" "$T/front2.html"
check_eq "${label}the post is published in the database" "$(mdb_sql "$T/db" "SELECT post_status \
    FROM $DB.wp_posts WHERE ID = $post_id")" publish

# --- A visitor's comment. ---------------------------------------------------------------------
comment_text="A visitor was here $RANDOM"
comment_id=$(wp_comment "$URL" "$post_id" "Vera Visitor" vera@example.org "$comment_text") ||
    die "wp_comment failed"
status=$(http_get "$URL/?p=$post_id" "$T/post.html")
check_eq "${label}the post page answers 200" "$status" 200
check "${label}the comment is on the post page" grep -qF "$comment_text" "$T/post.html"
check_eq "${label}the comment is approved in the database" "$(mdb_sql "$T/db" "SELECT \
    comment_approved FROM $DB.wp_comments WHERE comment_ID = $comment_id")" 1
second_id=$(wp_comment "$URL" "$post_id" "Vera Visitor" vera@example.org "And again $RANDOM") ||
    die "a second comment at once failed (flood throttle?)"
check "${label}a second comment at once is accepted" test "$second_id" -gt "$comment_id"

# --- An upload. -------------------------------------------------------------------------------
head -c 3000 /dev/urandom | base64 >"$T/notes.txt"
read -r media_id media_path < <(wp_upload "$URL" "$jar" "$T/notes.txt") ||
    die "wp_upload failed"
printf '%supload %s at %s\n' "$label" "$media_id" "$media_path"
check "${label}the upload lands in wp-content/uploads" test -f "$T/site/$media_path" -a \
    "${media_path#wp-content/uploads/}" != "$media_path"
check "${label}the uploaded file is intact" cmp -s "$T/notes.txt" "$T/site/$media_path"
http_get "$URL/$media_path" "$T/fetched.txt" >/dev/null
check "${label}the upload is served" cmp -s "$T/notes.txt" "$T/fetched.txt"

# --- A crawl writes nothing (WP-Cron's own loopback POSTs aside). ------------------------------
log=$T/web/access.log
first=$(($(wc -l <"$log") + 1))
wp_crawl "$URL" 50 || fail "${label}crawl answered without 5xx"
sleep 0.5 # WP-Cron's loopback POST may still be running
mapfile -t lines < <(wp_log_requests "$log" "$first")
gets=0 cron=0 other=()
for line in "${lines[@]}"; do
    read -r method target _ <<<"$line"
    case $method in
    GET) gets=$((gets + 1)) ;;
    POST) [[ $target == /wp-cron.php* ]] && cron=$((cron + 1)) || other+=("$line") ;;
    *) other+=("$line") ;;
    esac
done
check_eq "${label}crawl logged 50 GETs" "$gets" 50
check_eq "${label}crawl logged no write but wp-cron.php" "${other[*]:-}" ""
printf '%scrawl: %s GETs, %s POST /wp-cron.php from WordPress itself (%s in the whole log)\n' \
    "$label" "$gets" "$cron" "$(grep -c '"POST /wp-cron.php?doing_wp_cron=' "$log")"
if [[ $format == cloudflare ]]; then
    check "${label}cloudflare format ends with the CF-Connecting-IP field" \
        grep -qE '" "-"$' "$log"
fi

# --- The docroot symlink switched to another generation. --------------------------------------
cp -al "$T/gen1" "$T/gen2"
for g in gen1 gen2; do
    printf '<?php echo basename( __DIR__ ), "\\n";\n' >"$T/$g/understudy-gen.php"
done
http_get "$URL/understudy-gen.php" "$T/gen.out" >/dev/null
check_eq "${label}PHP runs generation 1" "$(cat "$T/gen.out")" gen1
ln -s gen2 "$T/site.new" && mv -T "$T/site.new" "$T/site"
http_get "$URL/understudy-gen.php" "$T/gen.out" >/dev/null
check_eq "${label}PHP runs generation 2 after the switch" "$(cat "$T/gen.out")" gen2
status=$(http_get "$URL/?p=$post_id" "$T/post2.html")
check "${label}WordPress answers from generation 2" test "$status" = 200 -a -s "$T/post2.html"

# --- Cleanups: on exit of a subshell that never called wp_stop, and wp_stop itself. -----------
(
    wp_serve "$T/site" "$T/web2" >/dev/null || exit 1
    wp_pids "$T/web2" >"$T/web2.pids"
)
check "${label}a second site started in a subshell" test -s "$T/web2.pids"
alive=$(while read -r p; do pid_alive "$p" && echo "$p"; done <"$T/web2.pids")
check_eq "${label}exit of the subshell stopped its site" "$alive" ""

wp_pids "$T/web" >"$T/web.pids"
db_pid=$(cat "$T/db/mariadb.pid")
wp_stop "$T/web" || fail "${label}wp_stop"
mdb_stop "$T/db" || fail "${label}mdb_stop"
alive=$(while read -r p; do pid_alive "$p" && echo "$p"; done <"$T/web.pids")
check_eq "${label}no nginx or php-fpm process left" "$alive" ""
check "${label}php-fpm stopped cleanly on SIGTERM" grep -q 'exiting, bye-bye' "$T/web/php-fpm.log"
check "${label}nginx stopped cleanly (removed its pid file)" test ! -e "$T/web/nginx.pid"
check "${label}mariadbd stopped" test ! -d "/proc/$db_pid"
check_eq "${label}no process runs from the temp dir" "$(pgrep -f -- "$T" | tr '\n' ' ')" ""
check "${label}php-fpm logged no fatal error" bash -c "! grep -q 'PHP Fatal' '$T/web/php-error.log'"
printf '%sdone in %s s\n' "$label" "$((SECONDS - started))"

[[ -n $INNER ]] && exit 0

# --- Inside a network namespace: this script again, under "ip netns exec". --------------------
if ((EUID != 0)) || ! ip netns add "understudy-wp-$$" 2>/dev/null; then
    printf 'network namespace runs skipped: need root and "ip netns add"\n'
    exit 0
fi
NS=understudy-wp-$$
on_exit "ip netns del $NS"
ip netns exec "$NS" ip link set lo up || die "cannot bring up lo in $NS"
# In the background: "wait" returns on a signal (a foreground child would delay the traps), and
# the inner run is stopped first at exit, so that its sites are gone before the namespace.
ip netns exec "$NS" env WP_HARNESS_INNER=1 bash "${BASH_SOURCE[0]}" &
inner=$!
on_exit "kill -TERM $inner 2>/dev/null; wait $inner 2>/dev/null"
if wait "$inner"; then
    pass "the harness works inside a network namespace"
else
    fail "the harness works inside a network namespace"
fi

# --- Driven from outside: WP_NETNS. -----------------------------------------------------------
make_tmpdir U
mdb_start "$U/db" || die "cannot start MariaDB"
mdb_create_site "$U/db" "$DB" "$DB_USER" "$DB_PASSWORD" || die "mdb_create_site failed"
wp_tree "$U/site" || die "wp_tree failed"
wp_configure "$U/site" "$DB" "$DB_USER" "$DB_PASSWORD" "$(mdb_socket "$U/db")" || die "wp_configure"
export WP_NETNS=$NS
wp_serve "$U/site" "$U/web" || die "wp_serve with WP_NETNS failed"
wp_install "$WP_URL" "$TITLE" "$ADMIN" "$ADMIN_PASSWORD" editor@example.com ||
    die "wp_install with WP_NETNS failed"
wp_login "$WP_URL" "$ADMIN" "$ADMIN_PASSWORD" "$U/jar" || die "wp_login with WP_NETNS failed"
ns_post=$(wp_new_post "$WP_URL" "$U/jar" "From outside" "<p>x</p>") || die "wp_new_post failed"
check "WP_NETNS: a post through the helpers" test "$ns_post" -gt 0
check_eq "WP_NETNS: the site listens in the namespace only" "$(curl --silent --noproxy '*' \
    -o /dev/null -w '%{http_code}' --max-time 5 "$WP_URL/")" 000
wp_pids "$U/web" >"$U/web.pids"
wp_stop "$U/web" || fail "WP_NETNS: wp_stop"
unset WP_NETNS
alive=$(while read -r p; do pid_alive "$p" && echo "$p"; done <"$U/web.pids")
check_eq "WP_NETNS: nothing left running" "$alive" ""
printf 'all done in %s s\n' "$((SECONDS - started))"
