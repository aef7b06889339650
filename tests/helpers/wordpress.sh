# shellcheck shell=bash
# Real WordPress sites for tests and the demo: Debian's WordPress (package "wordpress") copied into
# a plain docroot, served by nginx + php-fpm that the test starts from a directory of its own (no
# system service, no docker, no network beyond loopback or the test's network namespaces), and
# stopped when the sourcing script exits, whether it succeeds, fails or is interrupted.
#
#   wp_tree DEST             copy Debian's WordPress into DEST as a shared host has it: every
#                            symlink resolved (no /etc/wordpress, /var/lib/wordpress or
#                            /usr/share/javascript indirection), a real wp-content with themes,
#                            plugins, languages, uploads/ and mu-plugins/understudy-test.php (see
#                            below; WP_TEST_MU_PLUGIN=0 leaves it out), the standard WordPress
#                            .htaccess, and no wp-config.php (wp_configure writes it)
#   wp_configure DOCROOT DBNAME USER PASSWORD DBHOST [PREFIX [URL]]
#                            write DOCROOT/wp-config.php: the standard defines (DB_HOST as given,
#                            e.g. localhost:/path/mysql.sock; a DBHOST starting with / is taken as
#                            a socket path), fresh salts, $table_prefix (default wp_), WP_HOME
#                            and WP_SITEURL, DISABLE_WP_CRON false, automatic updates off and
#                            WP_HTTP_BLOCK_EXTERNAL (WordPress may call only itself: no test waits
#                            on api.wordpress.org). URL defaults to $WP_SITE_URL; when both are
#                            empty the URL follows the request's Host header, so one site (and a
#                            synced copy of it) answers with its own links on any address:port
#   wp_serve DOCROOT DIR [ADDR[:PORT]]
#                            start php-fpm and nginx serving DOCROOT (which may be a symlink that
#                            is switched between generations: every request runs the files the
#                            link points to at that moment) on ADDR:PORT (default 127.0.0.1 and
#                            a free port; IPv6 as [::1]:PORT); waits until GET / answers
#                            (WP_START_TIMEOUT, default 30 s); exports WP_URL (http://ADDR:PORT)
#                            and WP_PORT, also written to DIR/url. Files in DIR:
#                              access.log    nginx access log, format $WP_LOG_FORMAT (below)
#                              error.log     nginx error log      php-error.log  PHP errors
#                              nginx.out     nginx stdout/stderr
#                              php-fpm.log   php-fpm master log   nginx.conf php-fpm.conf
#                              nginx.pid php-fpm.pid php-fpm.sock tmp/
#                            On failure prints the log tails and returns 1 (nothing left running).
#   wp_stop DIR              stop that site's nginx and php-fpm (and any worker left behind)
#   wp_stop_all              stop every site this shell started (run by on_exit at exit)
#   wp_url DIR               print the URL of the site served from DIR
#   wp_pids DIR              print the pids of that site's nginx and php-fpm processes
#   wp_install URL TITLE ADMIN_USER ADMIN_PASS EMAIL
#                            install WordPress through wp-admin/install.php?step=2 (as a browser
#                            would; Debian 12 has no wp-cli) and check that the front page
#                            answers 200 with TITLE in its <title> (WordPress texturizes quotes
#                            and "--" in titles: keep TITLE plain). With the test mu-plugin,
#                            comment moderation and "comment author must have a previously
#                            approved comment" are switched off in the install.
#   wp_login URL USER PASS COOKIEJAR
#                            log in through wp-login.php (test cookie first); COOKIEJAR (a file,
#                            created or updated) then holds the session
#   wp_nonce URL COOKIEJAR   print a REST API nonce for the logged-in session (admin-ajax.php
#                            ?action=rest-nonce, what the block editor uses)
#   wp_new_post URL COOKIEJAR TITLE BODY
#                            create and publish a post through the REST API (POST
#                            ?rest_route=/wp/v2/posts, X-WP-Nonce); prints its ID
#   wp_comment URL POST_ID AUTHOR EMAIL TEXT
#                            post a comment as an anonymous visitor (wp-comments-post.php); prints
#                            the comment ID. It is visible at once only when moderation is off
#                            (the test mu-plugin does that; see below)
#   wp_upload URL COOKIEJAR FILE
#                            upload FILE to the media library (POST ?rest_route=/wp/v2/media);
#                            prints "ID PATH", PATH relative to the docroot
#                            (wp-content/uploads/YYYY/MM/NAME)
#   wp_crawl URL N           N anonymous GETs, round robin over the front page, the links it
#                            shows (posts, pages, archives), feeds, search, a 404, the login form,
#                            wp-cron.php, the REST index and static files; fails (naming the
#                            URLs) on any 5xx or connection failure. Sends no POST itself.
#   wp_log_requests LOG [FIRST_LINE]
#                            print "METHOD TARGET STATUS" for each line of an access log in
#                            combined, cloudflare or understudy format, from line FIRST_LINE
#                            (default 1)
#
# What WordPress itself adds to the access log (write detection must expect it): WP-Cron's
# loopback "POST /wp-cron.php?doing_wp_cron=..." from the server's own address (User-Agent
# "WordPress/6.1.9; <site URL>", status usually 499: the sender hangs up after 0.01 s); during the
# install a GET of the first post (the installer turns pretty permalinks on when that works, as it
# does here: posts are /YYYY/MM/DD/slug/); and from cron's HTTPS detection a TLS ClientHello sent
# to the plain-HTTP port, logged as a 400 whose request line is escaped binary ("...").
#
# Environment:
#   WP_LOG_FORMAT   access log format: combined (default; nginx's predefined one), cloudflare
#                   (combined + "$http_cf_connecting_ip" as a last quoted field), understudy (the
#                   format proposed in the install notes: $remote_addr $http_cf_connecting_ip
#                   [$time_iso8601] "$request" $status $request_method $host "$http_user_agent"
#                   $wp_logged_in, the last 1 when a wordpress_logged_in_ cookie came), or any
#                   nginx log_format string (it contains a "$"; no ' in it)
#   WP_OPCACHE      0: PHP opcache off. Default 1: on, checking every file's mtime on every
#                   request (revalidate_freq=0; files younger than 2 s are not cached), so code
#                   changed or switched under the docroot is never served stale; 4x faster
#   WP_NGINX_SERVER_EXTRA, WP_NGINX_HTTP_EXTRA
#                   nginx directives added to the server block / the http block (e.g. a
#                   read-only guard: 'if ($request_method !~ ^(GET|HEAD)$) { return 503; }')
#   WP_NETNS        run the servers (wp_serve) and every request the helpers make inside this
#                   network namespace ("ip netns exec"); unneeded when the whole script already
#                   runs inside one
#   WP_CURL_OPTS    (bash array) extra curl options for every request the helpers make, e.g.
#                   (-H 'CF-Connecting-IP: 203.0.113.9')
#   WP_USER_AGENT   User-Agent of those requests (default: a Firefox on Linux string)
#   WP_HTTP_TIMEOUT per-request timeout in seconds (default 60)
#   WP_TEST_MU_PLUGIN
#                   0: wp_tree leaves out wp-content/mu-plugins/understudy-test.php, which
#                   turns comment moderation off when WordPress is installed and drops the
#                   comment flood throttle (every test comment comes from one IP within seconds)
#
# php-fpm and nginx run as the user running the test, as PHP runs as the site owner on a shared
# host (as root: php-fpm -R and nginx "user root"; the temp dirs are 0700 so www-data could not
# read them anyway). Call wp_serve and wp_stop in the main shell, not inside $(...), so the
# cleanup registry sees them; the request helpers may run anywhere. Several sites may run at once
# (one DIR each). DIR/php-fpm.sock must fit in 107 bytes; DOCROOT and DIR may not contain
# whitespace, quotes, '$', ';', '{', '}' or '\' (they go into nginx.conf).

if [[ -n ${_UNDERSTUDY_WORDPRESS_SH:-} ]]; then
    return 0
fi
_UNDERSTUDY_WORDPRESS_SH=1

# shellcheck source=tests/helpers/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${WP_SOURCE:=/usr/share/wordpress}"
: "${WP_CONTENT_SOURCE:=/var/lib/wordpress/wp-content}"
: "${WP_PHP_FPM:=$(command -v php-fpm8.2 || command -v /usr/sbin/php-fpm8.2 ||
    command -v php-fpm || echo php-fpm8.2)}"
: "${WP_NGINX:=$(command -v nginx || command -v /usr/sbin/nginx || echo nginx)}"

# Sites started, by directory: nginx and php-fpm pids, the shell ($BASHPID) that started them
# (a ( ... ) subshell stops only its own sites) and the URL (to find logs from a URL).
declare -gA _WP_NGINX_PID=() _WP_FPM_PID=() _WP_OWNER=() _WP_URL=()
_WP_TRAP_SET=

# ---------------------------------------------------------------------------------------------
# Small helpers.

_wp_abs() {
    mkdir -p -- "$1" && (cd -- "$1" && pwd -P)
}

# _wp_ns CMD...: runs CMD inside $WP_NETNS when set.
_wp_ns() {
    if [[ -n ${WP_NETNS:-} ]]; then
        ip netns exec "$WP_NETNS" "$@"
    else
        "$@"
    fi
}

# _wp_tail FILE...: prints the last lines of each FILE, indented, on stderr, leaving out the
# warnings every test site logs (Debian's install.php reads an $upload_path only its
# /etc/wordpress configs set; the update checks fail under WP_HTTP_BLOCK_EXTERNAL).
_wp_tail() {
    local f lines
    for f in "$@"; do
        [[ -s $f ]] || continue
        lines=$(grep -vE 'Undefined variable .upload(_url)?_path|wrong with WordPress\.org' -- "$f" |
            tail -n 20 | sed 's/^/    /')
        [[ -n $lines ]] || continue
        printf '  last lines of %s:\n%s\n' "$f" "$lines" >&2
    done
}

_wp_fail() {
    local dir=$1
    shift
    printf 'wordpress (%s): %s\n' "$dir" "$*" >&2
    _wp_tail "$dir/error.log" "$dir/nginx.out" "$dir/php-fpm.log" "$dir/php-error.log"
    return 1
}

# _wp_safe_path WHAT PATH: PATH goes into nginx.conf and php-fpm.conf unquoted-safe.
_wp_safe_path() {
    if [[ $2 =~ [[:space:]\"\'\$\;\{\}\\] ]]; then
        printf 'wordpress: %s has a character nginx.conf cannot take: %s\n' "$1" "$2" >&2
        return 1
    fi
}

# _wp_php_str S: S as a single-quoted PHP string literal.
_wp_php_str() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\\\'}"
}

# _wp_json FIELD... <JSON: prints JSON[FIELD][FIELD]... (scalars as is, the rest as JSON);
# fails when the path is absent or the input is not JSON.
_wp_json() {
    # shellcheck disable=SC2016 # PHP code
    php -r '
        $v = json_decode(stream_get_contents(STDIN), true);
        if ($v === null) exit(2);
        foreach (array_slice($argv, 1) as $k) {
            if (!is_array($v) || !array_key_exists($k, $v)) exit(1);
            $v = $v[$k];
        }
        echo is_scalar($v) ? $v : json_encode($v), "\n";' -- "$@"
}

# _wp_text: HTML on stdin to one line of text (tags stripped, entities decoded), at most 400
# characters: what an error page says.
_wp_text() {
    # shellcheck disable=SC2016 # PHP code
    php -r '
        $h = stream_get_contents(STDIN);
        $h = preg_replace("#<(script|style|head)\b.*?</\\1>#si", " ", $h);
        $t = html_entity_decode(strip_tags($h), ENT_QUOTES | ENT_HTML5, "UTF-8");
        $t = trim(preg_replace("/\s+/u", " ", $t));
        echo preg_replace("/^(.{400}).+$/us", "\$1...", $t), "\n";'
}

# _wp_dir_for_url URL: prints the DIR of the site this shell serves at URL, if any.
_wp_dir_for_url() {
    local dir
    for dir in "${!_WP_URL[@]}"; do
        if [[ $1 == "${_WP_URL[$dir]}" || $1 == "${_WP_URL[$dir]}"/* ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

# _wp_http_fail WHO WHAT: reports a failed request made by WHO (what was sent: WHAT) with the
# status, the page's text and, when the site is ours, the server logs.
_wp_http_fail() {
    local who=$1 what=$2 dir text
    text=$(_wp_text <<<"$_WP_BODY" 2>/dev/null)
    if [[ $_WP_STATUS == 000 ]]; then
        printf '%s: %s: no HTTP answer (%s)\n' "$who" "$what" "$_WP_CURL_ERR" >&2
    else
        printf '%s: %s answered %s%s\n' "$who" "$what" "$_WP_STATUS" \
            "${_WP_LOCATION:+ (Location: $_WP_LOCATION)}" >&2
        printf '  page text: %s\n' "${text:-(none)}" >&2
    fi
    if dir=$(_wp_dir_for_url "$_WP_REQ_URL"); then
        _wp_tail "$dir/error.log" "$dir/php-error.log"
    fi
    return 1
}

# _wp_http CURL_ARGS... URL: one request (no redirect following). Sets _WP_STATUS ("000" when
# there was no answer), _WP_BODY, _WP_LOCATION (the redirect target, if any), _WP_CURL_ERR and
# _WP_REQ_URL. Returns 0 when an HTTP answer came, whatever its status.
_wp_http() {
    local out trailer rc=0
    _WP_REQ_URL=${*: -1}
    # The trailer: a newline, then status, redirect target and curl's error separated by \x1f
    # (not a tab: read would merge the tabs around an empty field).
    out=$(_wp_ns curl --silent --noproxy '*' -H 'Expect:' --max-time "${WP_HTTP_TIMEOUT:-60}" \
        --user-agent "${WP_USER_AGENT:-Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0}" \
        "${WP_CURL_OPTS[@]}" \
        --write-out $'\n%{http_code}\x1f%{redirect_url}\x1f%{errormsg}' "$@") || rc=$?
    trailer=${out##*$'\n'}
    _WP_BODY=${out%$'\n'*}
    [[ $out == *$'\n'* ]] || _WP_BODY=
    IFS=$'\x1f' read -r _WP_STATUS _WP_LOCATION _WP_CURL_ERR <<<"$trailer"
    [[ ${_WP_STATUS:-} =~ ^[0-9]{3}$ ]] || _WP_STATUS=000
    [[ $_WP_STATUS != 000 || -n ${_WP_CURL_ERR:-} ]] || _WP_CURL_ERR="curl exit status $rc"
    ((rc == 0)) || [[ $_WP_STATUS != 000 ]]
}

# ---------------------------------------------------------------------------------------------
# The tree and its configuration.

wp_tree() {
    local dest=$1 links
    if [[ ! -f $WP_SOURCE/wp-settings.php || ! -d $WP_CONTENT_SOURCE ]]; then
        printf 'wp_tree: no WordPress in %s and %s (install the Debian package "wordpress")\n' \
            "$WP_SOURCE" "$WP_CONTENT_SOURCE" >&2
        return 1
    fi
    if [[ -e $dest && -n $(ls -A -- "$dest" 2>/dev/null) ]]; then
        printf 'wp_tree: %s exists and is not empty\n' "$dest" >&2
        return 1
    fi
    mkdir -p -- "$dest" || return 1
    # -L: Debian's tree links wp-includes/js/* to /usr/share/javascript, wp-includes/ID3 to
    # /usr/share/php/getid3, the CA bundle to /etc/ssl, themes and plugins from
    # /var/lib/wordpress/wp-content back to /usr/share/wordpress: copy what they point to.
    if ! cp -RL --preserve=mode,timestamps -- "$WP_SOURCE/." "$dest/" ||
        ! cp -RL --preserve=mode,timestamps -- "$WP_CONTENT_SOURCE/." "$dest/wp-content/"; then
        printf 'wp_tree: copying %s into %s failed\n' "$WP_SOURCE" "$dest" >&2
        return 1
    fi
    # Debian's wp-config.php only loads /etc/wordpress/config-<host>.php; its .htaccess is a
    # commented-out sample from /etc/wordpress.
    rm -f -- "$dest/wp-config.php"
    cat >"$dest/.htaccess" <<'EOF'
# BEGIN WordPress

RewriteEngine On
RewriteRule .* - [E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]
RewriteBase /
RewriteRule ^index\.php$ - [L]
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule . /index.php [L]

# END WordPress
EOF
    mkdir -p -- "$dest/wp-content/uploads" "$dest/wp-content/upgrade" || return 1
    if [[ ${WP_TEST_MU_PLUGIN:-1} != 0 ]]; then
        mkdir -p -- "$dest/wp-content/mu-plugins" || return 1
        cat >"$dest/wp-content/mu-plugins/understudy-test.php" <<'EOF'
<?php
/**
 * Plugin Name: understudy test site
 * Description: Written by understudy's tests/helpers/wordpress.sh. Anonymous test comments
 * appear at once: comment moderation is switched off when WordPress is installed (as a site
 * owner would in Settings > Discussion; tests may switch it back on in wp_options), and the
 * comment flood throttle is dropped because every test comment comes from one IP within seconds.
 */
add_action( 'wp_install', function () {
	update_option( 'comment_moderation', 0 );
	update_option( 'comment_previously_approved', 0 );
} );
remove_action( 'check_comment_flood', 'check_comment_flood_db', 10 );
add_filter( 'wp_is_comment_flood', '__return_false', PHP_INT_MAX );
EOF
    fi
    links=$(find "$dest" -type l -print -quit)
    if [[ -n $links ]]; then
        printf 'wp_tree: a symlink is left in the copy: %s\n' "$links" >&2
        return 1
    fi
}

# _wp_salt: 64 random characters for the keys and salts (no quote or backslash).
_wp_salt() {
    local s
    s=$(LC_ALL=C tr -dc 'A-Za-z0-9!#%&()*+,./:;<=>?@[]^_{|}~-' </dev/urandom | head -c 64)
    printf '%s' "$s"
}

wp_configure() {
    local docroot=$1 db=$2 user=$3 password=$4 dbhost=$5 prefix=${6:-wp_}
    local url=${7:-${WP_SITE_URL:-}} k home
    if (($# < 5)); then
        printf 'usage: wp_configure DOCROOT DBNAME USER PASSWORD DBHOST [PREFIX [URL]]\n' >&2
        return 1
    fi
    if [[ ! -f $docroot/wp-settings.php ]]; then
        printf 'wp_configure: %s is not a WordPress tree (no wp-settings.php)\n' "$docroot" >&2
        return 1
    fi
    if [[ ! $prefix =~ ^[A-Za-z0-9_]+$ ]]; then
        printf 'wp_configure: table prefix must be [A-Za-z0-9_]+ (got %s)\n' "$prefix" >&2
        return 1
    fi
    [[ $dbhost == /* ]] && dbhost=localhost:$dbhost
    url=${url%/}
    if [[ -n $url ]]; then
        home="define( 'WP_HOME', $(_wp_php_str "$url") );
define( 'WP_SITEURL', $(_wp_php_str "$url") );"
    else
        # shellcheck disable=SC2016 # PHP variables
        home='/* The site answers on whatever address and port it is asked on (a test harness
 * habit: the primary and a synced standby serve the same files on different ports). */
if ( isset( $_SERVER['"'"'HTTP_HOST'"'"'] ) ) {
	define( '"'"'WP_HOME'"'"', '"'"'http://'"'"' . $_SERVER['"'"'HTTP_HOST'"'"'] );
	define( '"'"'WP_SITEURL'"'"', '"'"'http://'"'"' . $_SERVER['"'"'HTTP_HOST'"'"'] );
}'
    fi
    {
        cat <<EOF
<?php
/**
 * The base configuration for WordPress
 *
 * Written by understudy's tests/helpers/wordpress.sh, following wp-config-sample.php.
 */

// ** Database settings - You can get this info from your web host ** //
/** The name of the database for WordPress */
define( 'DB_NAME', $(_wp_php_str "$db") );

/** Database username */
define( 'DB_USER', $(_wp_php_str "$user") );

/** Database password */
define( 'DB_PASSWORD', $(_wp_php_str "$password") );

/** Database hostname */
define( 'DB_HOST', $(_wp_php_str "$dbhost") );

/** Database charset to use in creating database tables. */
define( 'DB_CHARSET', 'utf8mb4' );

/** The database collate type. Don't change this if in doubt. */
define( 'DB_COLLATE', '' );

/**#@+
 * Authentication unique keys and salts.
 */
EOF
        for k in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY AUTH_SALT SECURE_AUTH_SALT \
            LOGGED_IN_SALT NONCE_SALT; do
            printf "define( '%s', %s );\n" "$k" "$(_wp_php_str "$(_wp_salt)")"
        done
        cat <<EOF
/**#@-*/

/**
 * WordPress database table prefix.
 */
\$table_prefix = '$prefix';

define( 'WP_DEBUG', false );

$home

/* WP-Cron runs on page loads (a loopback POST to wp-cron.php), as on most shared hosts. */
define( 'DISABLE_WP_CRON', false );

/* No automatic updates, and no HTTP requests except to the site itself. */
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_AUTO_UPDATE_CORE', false );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );

/* That's all, stop editing! Happy publishing. */

/** Absolute path to the WordPress directory. */
if ( ! defined( 'ABSPATH' ) ) {
	define( 'ABSPATH', __DIR__ . '/' );
}

/** Sets up WordPress vars and included files. */
require_once ABSPATH . 'wp-settings.php';
EOF
    } >"$docroot/wp-config.php.tmp" || {
        rm -f -- "$docroot/wp-config.php.tmp"
        printf 'wp_configure: cannot write %s/wp-config.php\n' "$docroot" >&2
        return 1
    }
    chmod 640 "$docroot/wp-config.php.tmp" && mv -f -- "$docroot/wp-config.php.tmp" \
        "$docroot/wp-config.php"
}

# ---------------------------------------------------------------------------------------------
# Serving.

# _wp_log_format: prints the log_format body for $WP_LOG_FORMAT (empty for combined).
_wp_log_format() {
    case ${WP_LOG_FORMAT:-combined} in
    combined) ;;
    cloudflare)
        # shellcheck disable=SC2016 # nginx variables
        printf '%s' '$remote_addr - $remote_user [$time_local] "$request" $status '
        # shellcheck disable=SC2016
        printf '%s' '$body_bytes_sent "$http_referer" "$http_user_agent" "$http_cf_connecting_ip"'
        ;;
    understudy)
        # shellcheck disable=SC2016
        printf '%s' '$remote_addr $http_cf_connecting_ip [$time_iso8601] "$request" $status '
        # shellcheck disable=SC2016
        printf '%s' '$request_method $host "$http_user_agent" $wp_logged_in'
        ;;
    *'$'*)
        if [[ $WP_LOG_FORMAT == *"'"* ]]; then
            printf "wp_serve: WP_LOG_FORMAT may not contain ': %s\n" "$WP_LOG_FORMAT" >&2
            return 1
        fi
        printf '%s' "$WP_LOG_FORMAT"
        ;;
    *)
        printf 'wp_serve: unknown WP_LOG_FORMAT %s (combined, cloudflare, understudy or an nginx format string)\n' \
            "$WP_LOG_FORMAT" >&2
        return 1
        ;;
    esac
}

_wp_write_fpm_conf() {
    local dir=$1 pool=$2
    {
        printf '; Written by tests/helpers/wordpress.sh.\n[global]\n'
        printf 'pid = %s/php-fpm.pid\nerror_log = %s/php-fpm.log\n' "$dir" "$dir"
        printf 'daemonize = no\nprocess_control_timeout = 5s\n\n[%s]\n' "$pool"
        if ((EUID == 0)); then
            printf 'user = root\ngroup = root\n'
        fi
        cat <<EOF
listen = $dir/php-fpm.sock
listen.mode = 0660
pm = dynamic
pm.max_children = 8
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 4
catch_workers_output = yes
decorate_workers_output = no
security.limit_extensions = .php
php_admin_flag[log_errors] = on
php_admin_flag[display_errors] = off
php_admin_value[error_log] = $dir/php-error.log
php_admin_value[upload_tmp_dir] = $dir/tmp
php_admin_value[sys_temp_dir] = $dir/tmp
php_admin_value[upload_max_filesize] = 64M
php_admin_value[post_max_size] = 64M
php_admin_value[memory_limit] = 256M
php_admin_flag[opcache.validate_timestamps] = on
php_admin_value[opcache.revalidate_freq] = 0
php_admin_value[opcache.file_update_protection] = 2
EOF
        # Only "off" can be set per pool: "on" warns on every request (php.ini has it on).
        if [[ ${WP_OPCACHE:-1} == 0 ]]; then
            printf 'php_admin_flag[opcache.enable] = off\n'
        fi
    } >"$dir/php-fpm.conf"
}

_wp_write_nginx_conf() {
    local docroot=$1 dir=$2 listen=$3 format
    format=$(_wp_log_format) || return 1
    {
        printf '# Written by tests/helpers/wordpress.sh.\n'
        ((EUID == 0)) && printf 'user root root;\n'
        cat <<EOF
daemon off;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 256;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 30s;
    server_tokens off;
    client_max_body_size 64m;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

    map \$http_cookie \$wp_logged_in {
        ~wordpress_logged_in_ 1;
        default 0;
    }
EOF
        if [[ -n $format ]]; then
            printf "    log_format wp_test '%s';\n" "$format"
            printf '    access_log %s/access.log wp_test;\n' "$dir"
        else
            printf '    access_log %s/access.log combined;\n' "$dir"
        fi
        [[ -n ${WP_NGINX_HTTP_EXTRA:-} ]] && printf '    %s\n' "$WP_NGINX_HTTP_EXTRA"
        cat <<EOF

    server {
        listen $listen;
        server_name _;
        root $docroot;
        index index.php index.html;
EOF
        [[ -n ${WP_NGINX_SERVER_EXTRA:-} ]] && printf '        %s\n' "$WP_NGINX_SERVER_EXTRA"
        # Not Debian's /etc/nginx/fastcgi_params: its stable updates pass HTTP_HOST as $host,
        # dropping the port, and WordPress builds its URLs from it.
        cat <<EOF

        location / {
            try_files \$uri \$uri/ /index.php?\$args;
        }

        location ~ /\.ht {
            deny all;
        }

        location ~ \.php\$ {
            try_files \$uri =404;
            fastcgi_pass unix:$dir/php-fpm.sock;
            fastcgi_index index.php;
            fastcgi_read_timeout 300s;
            fastcgi_param QUERY_STRING \$query_string;
            fastcgi_param REQUEST_METHOD \$request_method;
            fastcgi_param CONTENT_TYPE \$content_type;
            fastcgi_param CONTENT_LENGTH \$content_length;
            fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
            fastcgi_param REQUEST_URI \$request_uri;
            fastcgi_param DOCUMENT_URI \$document_uri;
            fastcgi_param SERVER_PROTOCOL \$server_protocol;
            fastcgi_param REQUEST_SCHEME \$scheme;
            fastcgi_param HTTPS \$https if_not_empty;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/\$nginx_version;
            fastcgi_param REMOTE_ADDR \$remote_addr;
            fastcgi_param REMOTE_PORT \$remote_port;
            fastcgi_param SERVER_ADDR \$server_addr;
            fastcgi_param SERVER_PORT \$server_port;
            fastcgi_param SERVER_NAME \$server_name;
            fastcgi_param REDIRECT_STATUS 200;
            # The docroot may be a symlink switched between generations: resolve it for each
            # request, so PHP runs one generation's files from start to end.
            fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
            fastcgi_param DOCUMENT_ROOT \$realpath_root;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
}

# _wp_descendants PID: prints the pids of PID's descendants (children first).
_wp_descendants() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        printf '%s\n' "$child"
        _wp_descendants "$child"
    done
}

# _wp_stop_tree PID TIMEOUT: stops PID (SIGTERM, SIGKILL after TIMEOUT s; at once with SIGKILL
# when the script is exiting on a signal) and then kills any of its descendants still alive
# (workers are not told when their master is SIGKILLed).
_wp_stop_tree() {
    local pid=$1 timeout=$2 kids p status=0
    [[ -n $pid ]] || return 0
    if ! pid_alive "$pid"; then
        wait "$pid" 2>/dev/null
        return 0
    fi
    kids=$(_wp_descendants "$pid")
    if [[ -n ${_LIB_SIGNAL:-} ]]; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    else
        _lib_stop_pid "$pid" "$timeout" || status=$?
    fi
    for p in $kids; do
        pid_alive "$p" && kill -KILL "$p" 2>/dev/null
    done
    ((status == 124)) && return 124
    return 0
}

wp_url() {
    local dir
    dir=$(cd -- "$1" 2>/dev/null && pwd -P) || dir=$1
    if [[ -n ${_WP_URL[$dir]:-} ]]; then
        printf '%s\n' "${_WP_URL[$dir]}"
    elif [[ -s $dir/url ]]; then
        cat -- "$dir/url"
    else
        printf 'wp_url: no site served from %s\n' "$1" >&2
        return 1
    fi
}

wp_pids() {
    local dir pid
    dir=$(cd -- "$1" 2>/dev/null && pwd -P) || dir=$1
    for pid in "${_WP_NGINX_PID[$dir]:-$(cat -- "$dir/nginx.pid" 2>/dev/null)}" \
        "${_WP_FPM_PID[$dir]:-$(cat -- "$dir/php-fpm.pid" 2>/dev/null)}"; do
        if [[ -z $pid ]] || ! pid_alive "$pid"; then
            continue
        fi
        printf '%s\n' "$pid"
        _wp_descendants "$pid"
    done
}

# _wp_pick_port ADDR: prints a TCP port nothing listens on (20000-31999, below the ephemeral
# range, so outgoing connections do not take it meanwhile).
_wp_pick_port() {
    local i port
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        if [[ -z $(_wp_ns ss -Htln "sport = :$port" 2>/dev/null) ]]; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    printf 'wp_serve: no free port found\n' >&2
    return 1
}

wp_serve() {
    local docroot=$1 dir=$2 where=${3:-127.0.0.1} addr port fixed_port=1 host
    local fpm_pid nginx_pid sock deadline attempt f fpm_opts=()
    if (($# < 2)); then
        printf 'usage: wp_serve DOCROOT DIR [ADDR[:PORT]]\n' >&2
        return 1
    fi
    [[ $docroot == /* ]] || docroot=$PWD/$docroot
    docroot=${docroot%/}
    if [[ ! -d $docroot ]]; then
        printf 'wp_serve: docroot %s is not a directory\n' "$docroot" >&2
        return 1
    fi
    dir=$(_wp_abs "$dir") || {
        printf 'wp_serve: cannot create %s\n' "$2" >&2
        return 1
    }
    _wp_safe_path docroot "$docroot" && _wp_safe_path "the state dir" "$dir" || return 1
    sock=$dir/php-fpm.sock
    if ((${#sock} > 107)); then
        printf 'wp_serve: socket path too long for a unix socket (%s bytes): %s\n' \
            "${#sock}" "$sock" >&2
        return 1
    fi
    if [[ -n ${_WP_NGINX_PID[$dir]:-} ]] && pid_alive "${_WP_NGINX_PID[$dir]}"; then
        printf 'wp_serve: a site is already served from %s (nginx pid %s)\n' "$dir" \
            "${_WP_NGINX_PID[$dir]}" >&2
        return 1
    fi
    # ADDR[:PORT], [IPv6][:PORT] or PORT.
    if [[ $where =~ ^\[([0-9A-Fa-f:.]+)\](:([0-9]+))?$ ]]; then
        addr=${BASH_REMATCH[1]}
        port=${BASH_REMATCH[3]}
        host="[$addr]"
    elif [[ $where =~ ^([0-9]+)$ ]]; then
        addr=127.0.0.1
        port=$where
        host=$addr
    elif [[ $where =~ ^([^:]+)(:([0-9]+))?$ ]]; then
        addr=${BASH_REMATCH[1]}
        port=${BASH_REMATCH[3]}
        host=$addr
    else
        printf 'wp_serve: cannot read the address %s (ADDR, ADDR:PORT, [IPv6]:PORT)\n' \
            "$where" >&2
        return 1
    fi
    if [[ -z $port || $port == 0 ]]; then
        fixed_port=0
    fi
    for f in "$WP_PHP_FPM" "$WP_NGINX"; do
        command -v "$f" >/dev/null || {
            printf 'wp_serve: %s not found (install the Debian packages nginx and php8.2-fpm)\n' \
                "$f" >&2
            return 1
        }
    done
    mkdir -p -- "$dir/tmp" || return 1
    rm -f -- "$sock" "$dir/nginx.pid" "$dir/php-fpm.pid" "$dir/url"

    if [[ $_WP_TRAP_SET != "$BASHPID" ]]; then
        _WP_TRAP_SET=$BASHPID
        on_exit wp_stop_all
    fi

    # php-fpm first: nginx answers 502 until its socket is there.
    local pool=site_${dir##*/}
    pool=${pool//[^A-Za-z0-9_]/_}
    _wp_write_fpm_conf "$dir" "$pool" || return 1
    ((EUID == 0)) && fpm_opts=(-R)
    # Not through the _wp_ns function: a function in the background is a subshell, and $! must
    # be the server itself (ip netns exec execs it).
    local ns=()
    [[ -n ${WP_NETNS:-} ]] && ns=(ip netns exec "$WP_NETNS")
    "${ns[@]}" "$WP_PHP_FPM" -F -y "$dir/php-fpm.conf" "${fpm_opts[@]}" \
        >>"$dir/php-fpm.log" 2>&1 </dev/null &
    fpm_pid=$!
    _WP_FPM_PID[$dir]=$fpm_pid
    _WP_OWNER[$dir]=$BASHPID
    deadline=$((SECONDS + ${WP_START_TIMEOUT:-30}))
    until [[ -S $sock ]]; do
        if ! pid_alive "$fpm_pid"; then
            wait "$fpm_pid" 2>/dev/null
            unset '_WP_FPM_PID[$dir]'
            _wp_fail "$dir" "php-fpm exited during startup"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            wp_stop "$dir"
            _wp_fail "$dir" "php-fpm made no socket within ${WP_START_TIMEOUT:-30} s"
            return 1
        fi
        sleep 0.05
    done

    for ((attempt = 1; ; attempt++)); do
        if ((!fixed_port)); then
            port=$(_wp_pick_port "$addr") || {
                wp_stop "$dir"
                return 1
            }
        fi
        _wp_write_nginx_conf "$docroot" "$dir" "$host:$port" || {
            wp_stop "$dir"
            return 1
        }
        : >>"$dir/error.log"
        : >>"$dir/nginx.out"
        local errlines outlines
        errlines=$(wc -l <"$dir/error.log")
        outlines=$(wc -l <"$dir/nginx.out")
        "${ns[@]}" "$WP_NGINX" -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" \
            >>"$dir/nginx.out" 2>&1 </dev/null &
        nginx_pid=$!
        _WP_NGINX_PID[$dir]=$nginx_pid
        _WP_URL[$dir]=http://$host:$port
        while :; do
            # nginx writes its pid file once it has bound the port: an answer before that
            # would come from another server on the port.
            if [[ -s $dir/nginx.pid ]] && _wp_http -o /dev/null "${_WP_URL[$dir]}/" &&
                [[ $_WP_STATUS != 502 ]]; then
                break 2
            fi
            if ! pid_alive "$nginx_pid"; then
                wait "$nginx_pid" 2>/dev/null
                unset '_WP_NGINX_PID[$dir]' '_WP_URL[$dir]'
                if ((!fixed_port && attempt < 5)) &&
                    { tail -n "+$((errlines + 1))" "$dir/error.log" &&
                        tail -n "+$((outlines + 1))" "$dir/nginx.out"; } |
                    grep -q 'Address already in use'; then
                    continue 2 # another process took the port meanwhile
                fi
                wp_stop "$dir"
                _wp_fail "$dir" "nginx exited during startup"
                return 1
            fi
            if ((SECONDS >= deadline)); then
                wp_stop "$dir"
                _wp_fail "$dir" "GET / on $host:$port did not answer within ${WP_START_TIMEOUT:-30} s (last: status $_WP_STATUS ${_WP_CURL_ERR})"
                return 1
            fi
            sleep 0.05
        done
    done
    printf '%s\n' "${_WP_URL[$dir]}" >"$dir/url"
    WP_URL=${_WP_URL[$dir]}
    WP_PORT=$port
    export WP_URL WP_PORT
}

wp_stop() {
    local dir status=0 nginx fpm
    dir=$(cd -- "$1" 2>/dev/null && pwd -P) || dir=$1
    nginx=${_WP_NGINX_PID[$dir]:-}
    fpm=${_WP_FPM_PID[$dir]:-}
    # A site started by another shell: its pid files.
    [[ -z $nginx && -s $dir/nginx.pid ]] && nginx=$(cat -- "$dir/nginx.pid")
    [[ -z $fpm && -s $dir/php-fpm.pid ]] && fpm=$(cat -- "$dir/php-fpm.pid")
    unset '_WP_NGINX_PID[$dir]' '_WP_FPM_PID[$dir]' '_WP_OWNER[$dir]' '_WP_URL[$dir]'
    _wp_stop_tree "$nginx" 10 || status=$?
    _wp_stop_tree "$fpm" 10 || status=$?
    rm -f -- "$dir/php-fpm.sock"
    if ((status == 124)); then
        printf 'wordpress (%s): nginx or php-fpm ignored SIGTERM for 10 s and was killed\n' \
            "$dir" >&2
        return 1
    fi
    return 0
}

wp_stop_all() {
    local dir
    for dir in "${!_WP_OWNER[@]}"; do
        [[ ${_WP_OWNER[$dir]:-} == "$BASHPID" ]] && wp_stop "$dir"
    done
    return 0
}

# ---------------------------------------------------------------------------------------------
# Talking to the site as a browser would.

wp_install() {
    local url=${1%/} title=$2 user=$3 pass=$4 email=$5 got
    if (($# < 5)); then
        printf 'usage: wp_install URL TITLE ADMIN_USER ADMIN_PASS EMAIL\n' >&2
        return 1
    fi
    _wp_http -X POST --data-urlencode "weblog_title=$title" --data-urlencode "user_name=$user" \
        --data-urlencode "admin_password=$pass" --data-urlencode "admin_password2=$pass" \
        --data-urlencode pw_weak=on --data-urlencode "admin_email=$email" \
        --data-urlencode blog_public=1 --data-urlencode language= \
        "$url/wp-admin/install.php?step=2" || true
    if [[ $_WP_STATUS != 200 || $_WP_BODY != *'<h1>Success!</h1>'* ]]; then
        _wp_http_fail wp_install "POST $url/wp-admin/install.php?step=2"
        return 1
    fi
    _wp_http "$url/" || true
    if [[ $_WP_STATUS != 200 ]]; then
        _wp_http_fail wp_install "GET $url/ after the install"
        return 1
    fi
    # shellcheck disable=SC2016 # PHP code
    got=$(php -r '
        if (!preg_match("#<title[^>]*>(.*?)</title>#si", stream_get_contents(STDIN), $m)) exit(1);
        echo html_entity_decode($m[1], ENT_QUOTES | ENT_HTML5, "UTF-8");' <<<"$_WP_BODY")
    if [[ $got != *"$title"* ]]; then
        printf 'wp_install: the front page title is "%s", not one with "%s" (WordPress texturizes quotes and dashes)\n' \
            "$got" "$title" >&2
        return 1
    fi
}

wp_login() {
    local url=${1%/} user=$2 pass=$3 jar=$4
    if (($# < 4)); then
        printf 'usage: wp_login URL USER PASS COOKIEJAR\n' >&2
        return 1
    fi
    # The GET sets wordpress_test_cookie; without it the POST says cookies are blocked.
    _wp_http -o /dev/null -b "$jar" -c "$jar" "$url/wp-login.php" || {
        _wp_http_fail wp_login "GET $url/wp-login.php"
        return 1
    }
    _wp_http -b "$jar" -c "$jar" -X POST --data-urlencode "log=$user" \
        --data-urlencode "pwd=$pass" --data-urlencode 'wp-submit=Log In' \
        --data-urlencode "redirect_to=$url/wp-admin/" --data-urlencode testcookie=1 \
        "$url/wp-login.php" || true
    if [[ $_WP_STATUS != 302 ]] || ! grep -q 'wordpress_logged_in_' "$jar" 2>/dev/null; then
        _wp_http_fail wp_login "POST $url/wp-login.php as $user"
        return 1
    fi
}

wp_nonce() {
    local url=${1%/} jar=$2
    _wp_http -b "$jar" -c "$jar" "$url/wp-admin/admin-ajax.php?action=rest-nonce" || true
    if [[ $_WP_STATUS != 200 || ! $_WP_BODY =~ ^[0-9a-f]{10}$ ]]; then
        printf 'wp_nonce: no REST nonce from %s (status %s, body "%s"): not logged in? (wp_login first)\n' \
            "$url/wp-admin/admin-ajax.php?action=rest-nonce" "$_WP_STATUS" "${_WP_BODY:0:80}" >&2
        return 1
    fi
    printf '%s\n' "$_WP_BODY"
}

wp_new_post() {
    local url=${1%/} jar=$2 title=$3 body=$4 nonce id
    if (($# < 4)); then
        printf 'usage: wp_new_post URL COOKIEJAR TITLE BODY\n' >&2
        return 1
    fi
    nonce=$(wp_nonce "$url" "$jar") || return 1
    _wp_http -b "$jar" -c "$jar" -H "X-WP-Nonce: $nonce" -X POST \
        --data-urlencode "title=$title" --data-urlencode "content=$body" \
        --data-urlencode status=publish "$url/?rest_route=/wp/v2/posts" || true
    if [[ $_WP_STATUS != 201 ]] || ! id=$(_wp_json id <<<"$_WP_BODY"); then
        _wp_http_fail wp_new_post "POST $url/?rest_route=/wp/v2/posts"
        printf '  body: %s\n' "${_WP_BODY:0:300}" >&2
        return 1
    fi
    printf '%s\n' "$id"
}

wp_comment() {
    local url=${1%/} post=$2 author=$3 email=$4 text=$5
    if (($# < 5)); then
        printf 'usage: wp_comment URL POST_ID AUTHOR EMAIL TEXT\n' >&2
        return 1
    fi
    _wp_http -X POST --data-urlencode "comment=$text" --data-urlencode "author=$author" \
        --data-urlencode "email=$email" --data-urlencode url= \
        --data-urlencode 'submit=Post Comment' --data-urlencode "comment_post_ID=$post" \
        --data-urlencode comment_parent=0 "$url/wp-comments-post.php" || true
    # Success is a redirect to the post, ending in #comment-ID (with "unapproved=ID" in the
    # query when the comment waits for moderation).
    if [[ $_WP_STATUS != 302 || ! $_WP_LOCATION =~ \#comment-([0-9]+)$ ]]; then
        _wp_http_fail wp_comment "POST $url/wp-comments-post.php on post $post"
        return 1
    fi
    printf '%s\n' "${BASH_REMATCH[1]}"
    if [[ $_WP_LOCATION == *unapproved=* ]]; then
        printf 'wp_comment: comment %s waits for moderation (comment_moderation is on)\n' \
            "${BASH_REMATCH[1]}" >&2
    fi
}

wp_upload() {
    local url=${1%/} jar=$2 file=$3 nonce id src path
    if (($# < 3)); then
        printf 'usage: wp_upload URL COOKIEJAR FILE\n' >&2
        return 1
    fi
    [[ -f $file && -r $file ]] || {
        printf 'wp_upload: cannot read %s\n' "$file" >&2
        return 1
    }
    nonce=$(wp_nonce "$url" "$jar") || return 1
    _wp_http -b "$jar" -c "$jar" -H "X-WP-Nonce: $nonce" -F "file=@$file" \
        "$url/?rest_route=/wp/v2/media" || true
    if [[ $_WP_STATUS != 201 ]] || ! id=$(_wp_json id <<<"$_WP_BODY") ||
        ! src=$(_wp_json source_url <<<"$_WP_BODY"); then
        _wp_http_fail wp_upload "POST $url/?rest_route=/wp/v2/media with $file"
        printf '  body: %s\n' "${_WP_BODY:0:300}" >&2
        return 1
    fi
    # http://host:port/wp-content/uploads/... -> wp-content/uploads/...
    path=${src#*://}
    path=${path#*/}
    printf '%s %s\n' "$id" "$path"
}

wp_crawl() {
    local url=${1%/} n=$2 i links=() targets=() args=() line bad=() status target
    if [[ $# -lt 2 || ! $n =~ ^[0-9]+$ ]]; then
        printf 'usage: wp_crawl URL N\n' >&2
        return 1
    fi
    ((n > 0)) || return 0
    _wp_http "$url/" || true
    if [[ $_WP_STATUS != 200 ]]; then
        _wp_http_fail wp_crawl "GET $url/"
        return 1
    fi
    # Same-site links of the front page (posts, pages, archives, feeds), minus wp-admin and
    # anything carrying a nonce.
    # shellcheck disable=SC2016 # PHP code
    mapfile -t links < <(php -r '
        $base = $argv[1];
        preg_match_all("#href=[\"\x27]([^\"\x27]+)[\"\x27]#i", stream_get_contents(STDIN), $m);
        $seen = [];
        foreach ($m[1] as $h) {
            $h = html_entity_decode($h, ENT_QUOTES | ENT_HTML5, "UTF-8");
            $h = preg_replace("/#.*/", "", $h);
            if (strpos($h, $base . "/") !== 0 || isset($seen[$h])) continue;
            if (preg_match("#/wp-admin/|_wpnonce=|action=logout#", $h)) continue;
            $seen[$h] = 1;
            echo $h, "\n";
            if (count($seen) >= 30) break;
        }' -- "$url" <<<"$_WP_BODY")
    targets=("$url/" "${links[@]}" "$url/?feed=rss2" "$url/?feed=comments-rss2"
        "$url/?s=hello" "$url/?p=1" "$url/?page_id=2" "$url/?author=1" "$url/?cat=1"
        "$url/understudy-no-such-page/" "$url/wp-login.php" "$url/wp-cron.php"
        "$url/?rest_route=/" "$url/wp-includes/css/dashicons.min.css"
        "$url/wp-content/themes/twentytwentythree/style.css")
    # One curl for all: a keep-alive connection, as a crawler has. The front page fetched above
    # counts as the first request.
    for ((i = 1; i < n; i++)); do
        args+=(-o /dev/null "${targets[i % ${#targets[@]}]}")
    done
    ((${#args[@]})) || return 0
    while read -r status target; do
        if [[ ! $status =~ ^[1-4][0-9][0-9]$ ]]; then
            bad+=("$status $target")
        fi
    done < <(_wp_ns curl --silent --noproxy '*' --max-time "${WP_HTTP_TIMEOUT:-60}" \
        --user-agent "${WP_USER_AGENT:-Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0}" \
        "${WP_CURL_OPTS[@]}" --write-out '%{http_code} %{url_effective}\n' "${args[@]}")
    if ((${#bad[@]})); then
        printf 'wp_crawl: %s of %s requests failed:\n' "${#bad[@]}" "$n" >&2
        printf '    %s\n' "${bad[@]:0:10}" >&2
        if line=$(_wp_dir_for_url "$url"); then
            _wp_tail "$line/error.log" "$line/php-error.log"
        fi
        return 1
    fi
}

wp_log_requests() {
    local log=$1 first=${2:-1}
    # combined: ADDR - USER [TIME] "REQUEST" STATUS BYTES "REF" "UA" ["CF-IP"]
    tail -n "+$first" -- "$log" | awk -F'"' '{
        split($2, r, " ")
        split($3, s, " ")
        printf "%s %s %s\n", (r[1] == "" ? "-" : r[1]), (r[2] == "" ? "-" : r[2]), s[1]
    }'
}
