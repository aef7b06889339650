#!/usr/bin/env bash
# The install story of README.md, run exactly as written: the fenced blocks marked
# "<!-- install-story: N HOST -->" (HOST: backup or primary), in the order of N, on two hosts made
# of network namespaces joined by a veth pair (backup 198.18.0.1, primary 198.18.0.2; benchmark
# range, assigned inside our namespaces only). The only substitutions are the README's three
# placeholders: BACKUP_ADDRESS, CONTROLLER_FINGERPRINT (the last "fingerprint: ..." line a backup
# block printed) and AGENT_FINGERPRINT (the same from a primary block).
#
# Each host also has its own mount namespace in which /etc, /usr/local, /var and /home are
# overlays on this machine's (changes land in the temp dir) and /run is empty, so the blocks
# install packages' files, users and services there without touching this machine, and see no
# systemd: the controller starts the way the README says it does without systemd. The backup
# blocks run as root in the source tree, the primary blocks as "wpsite", an unprivileged user
# that exists only in the primary's /etc, with a MariaDB of its own (tests/helpers/mariadb.sh).
# What the primary cannot do here is faked by programs early in its PATH, nothing else: "scp"
# copies from the backup's /usr/local overlay, "crontab" keeps the table in ~/.fake-crontab.
#
# deploy/install-backup builds in UNDERSTUDY_INSTALL_BUILD, which defaults here to the build
# under test (and its static-agent/ subdirectory, which static-agent.sh shares), so nothing is
# compiled twice. Checks: at most five commands per README section; each block succeeds; the
# installed agent is static; install-backup is idempotent; the controller runs as "understudy"
# with CAP_CHOWN and CAP_FOWNER only; `check` passes across the veth; the crontab line; and a
# sync, unless the agent reports that sync is not implemented yet (then skipped with a note).
set -u
source "$(dirname "$0")/../helpers/lib.sh"
source "$(dirname "$0")/../helpers/mariadb.sh"

((EUID == 0)) || skip "needs root (namespaces, overlay mounts)"
for tool in ip nsenter unshare setpriv useradd mariadbd; do
    command -v "$tool" >/dev/null || skip "$tool not installed (see deploy/packages.txt)"
done
: "${UNDERSTUDY_INSTALL_BUILD:=$UNDERSTUDY_BUILD}"
export UNDERSTUDY_INSTALL_BUILD

README=$UNDERSTUDY_SOURCE/README.md
BACKUP_ADDRESS=198.18.0.1
PRIMARY_ADDRESS=198.18.0.2
SITE_USER=wpsite
T0=$SECONDS

tmpdir
T=$TEST_TMP
chmod 755 "$T"

# ---- the README's blocks ----------------------------------------------------------------------
mkdir -p "$T/blocks"
# Writes each marked block to $T/blocks/N.HOST; prints "N HOST SECTION" per block.
awk -v dir="$T/blocks" '
    /^## / { section = substr($0, 4) }
    /^<!-- install-story: [0-9]+ (backup|primary) -->$/ { n = $3; host = $4; want = 1; next }
    want && /^```/ { inblock = 1; want = 0; file = dir "/" n "." host; printf "" > file
                     print n, host, section; next }
    want && !/^$/ { want = 0 }
    inblock && /^```$/ { inblock = 0; close(file); next }
    inblock { print > file }
' "$README" >"$T/blocks/index" || die "cannot read $README"
mapfile -t BLOCKS < <(sort -n "$T/blocks/index")
if ((${#BLOCKS[@]} < 2)); then
    die "no <!-- install-story: N backup|primary --> blocks in README.md"
fi
dups=$(cut -d' ' -f1 "$T/blocks/index" | sort | uniq -d)
[[ -z $dups ]] || die "README.md: install-story block numbers used twice: $dups"
pass "README: ${#BLOCKS[@]} install-story blocks"
for section in "Install the backup" "Install the agent on the primary"; do
    n=0
    while read -r num host sec; do
        [[ $sec == "$section" ]] || continue
        n=$((n + $(grep -cvE '^[[:space:]]*(#|$)' "$T/blocks/$num.$host")))
    done <"$T/blocks/index"
    if ((n >= 1 && n <= 5)); then
        pass "README \"$section\": $n commands (at most 5)"
    else
        fail "README \"$section\": $n commands, want 1 to 5"
    fi
done

# ---- two hosts --------------------------------------------------------------------------------
ID=$$
NSB=us-isb$ID
NSP=us-isp$ID
declare -A ANCHOR=()
# shellcheck disable=SC2317 # called by on_exit
cleanup() {
    local ns pid
    for ns in "$NSB" "$NSP"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    return 0
}
ip netns add "$NSB" 2>/dev/null || skip "cannot create network namespaces"
on_exit cleanup
ip netns add "$NSP" || die "ip netns add failed"
ip link add "isb$ID" type veth peer name "isp$ID" || die "cannot create a veth pair"
ip link set "isb$ID" netns "$NSB" || die "cannot move the veth into $NSB"
ip link set "isp$ID" netns "$NSP" || die "cannot move the veth into $NSP"
ip -n "$NSB" link set lo up && ip -n "$NSP" link set lo up
ip -n "$NSB" addr add "$BACKUP_ADDRESS/24" dev "isb$ID" && ip -n "$NSB" link set "isb$ID" up
ip -n "$NSP" addr add "$PRIMARY_ADDRESS/24" dev "isp$ID" && ip -n "$NSP" link set "isp$ID" up

# start_host NAME NETNS: a process that holds the host's mount namespace (overlays on /etc,
# /usr/local, /var and /home; an empty /run) inside NETNS; its pid goes to ANCHOR[NAME].
start_host() {
    local name=$1 ns=$2 d mounts="" deadline pid
    for d in etc usr/local var home; do
        mkdir -p "$T/$name/${d//\//-}.up" "$T/$name/${d//\//-}.work"
        mounts+="mount -t overlay overlay -o lowerdir=/$d,upperdir=$T/$name/${d//\//-}.up"
        mounts+=",workdir=$T/$name/${d//\//-}.work /$d && "
    done
    chmod 755 "$T/$name" "$T/$name"/*.up
    ip netns exec "$ns" unshare --mount --propagation private bash -c \
        "$mounts mount -t tmpfs -o mode=755 tmpfs /run && echo \$\$ >$T/$name.ready && exec sleep 3600" \
        >"$T/$name.anchor.log" 2>&1 </dev/null &
    pid=$!
    disown "$pid" # killed by cleanup, without a "Killed" line from bash
    deadline=$((SECONDS + 10))
    until [[ -s $T/$name.ready ]]; do
        if ((SECONDS >= deadline)) || ! pid_alive "$pid"; then
            die "$name host: $(cat "$T/$name.anchor.log")"
        fi
        sleep 0.05
    done
    ANCHOR[$name]=$(cat "$T/$name.ready")
}
start_host backup "$NSB"
start_host primary "$NSP"

on() { # on HOST CMD...: runs CMD as root in HOST's namespaces
    local host=$1
    shift
    nsenter -t "${ANCHOR[$host]}" -m -n -- "$@"
}

# The primary's site user, its site and its database.
on primary useradd --create-home --user-group --shell /bin/bash "$SITE_USER" ||
    die "useradd $SITE_USER in the primary's /etc failed"
HOME_DIR=/home/$SITE_USER
mdb_start "$T/pdb" || die "MariaDB did not start"
chmod 755 "$T/pdb"
mdb_create_site "$T/pdb" wpdb wpuser 's3cret-pw' || die "cannot create the site's database"
mdb_sql "$T/pdb" "CREATE TABLE wpdb.wp_options (option_id INT PRIMARY KEY, option_value TEXT);
    INSERT INTO wpdb.wp_options VALUES (1, 'install story')" || die "cannot fill the database"

mkdir -p "$T/fakebin"
cat >"$T/fakebin/scp" <<EOT
#!/bin/sh
# scp root@$BACKUP_ADDRESS:/usr/local/PATH DEST: copies from the backup's /usr/local overlay.
case "\$1" in
root@$BACKUP_ADDRESS:/usr/local/*) ;;
*) echo "fake scp: only root@$BACKUP_ADDRESS:/usr/local/... is known here: \$1" >&2; exit 1 ;;
esac
exec cp "$T/backup/usr-local.up/\${1#root@$BACKUP_ADDRESS:/usr/local/}" "\$2"
EOT
cat >"$T/fakebin/crontab" <<'EOT'
#!/bin/sh
# crontab -l / crontab -: the user's table in ~/.fake-crontab.
case "$1" in
-l) [ -f "$HOME/.fake-crontab" ] && exec cat "$HOME/.fake-crontab"
    echo "no crontab for $USER" >&2; exit 1 ;;
-) exec cat >"$HOME/.fake-crontab" ;;
*) echo "fake crontab: only -l and - are known here" >&2; exit 2 ;;
esac
EOT
chmod 755 "$T/fakebin" "$T/fakebin/scp" "$T/fakebin/crontab"

# The sanitizer options of an ASan build (tests/run) reach the programs through "env -i".
SAN_ENV=()
[[ -n ${ASAN_OPTIONS:-} ]] && SAN_ENV+=("ASAN_OPTIONS=$ASAN_OPTIONS")
[[ -n ${UBSAN_OPTIONS:-} ]] && SAN_ENV+=("UBSAN_OPTIONS=$UBSAN_OPTIONS")

as_site_user() { # as_site_user SCRIPT: runs bash SCRIPT in the primary as the site user, in ~
    on primary setpriv --reuid="$SITE_USER" --regid="$SITE_USER" --init-groups \
        env -i HOME="$HOME_DIR" USER="$SITE_USER" LOGNAME="$SITE_USER" LC_ALL=C.UTF-8 \
        "${SAN_ENV[@]}" \
        PATH="$T/fakebin:/usr/local/bin:/usr/bin:/bin" \
        bash -o pipefail -c "cd ~ && $1"
}
as_site_user "mkdir -p public_html && cat >public_html/wp-config.php && echo '<?php echo 1;' \
    >public_html/index.php" <<EOF || die "cannot create the primary's site"
<?php
define( 'DB_NAME', 'wpdb' );
define( 'DB_USER', 'wpuser' );
define( 'DB_PASSWORD', 's3cret-pw' );
define( 'DB_HOST', 'localhost:$(mdb_socket "$T/pdb")' );
\$table_prefix = 'wp_';
EOF
pass "two hosts ready ($((SECONDS - T0))s)"

# ---- the blocks, in order -----------------------------------------------------------------------
CONTROLLER_FINGERPRINT=
AGENT_FINGERPRINT=
# As if pasted into a shell, stopping at the first command that fails: the ERR trap (unlike
# "set -e") sees only the commands of the block itself, not those inside a ( ... ) of the block.
STOP_ON_ERROR="trap 'exit \$?' ERR && set -x"
# run_block N HOST: runs block N (placeholders substituted) on HOST; output in $T/out.N.
run_block() {
    local n=$1 host=$2 script t0=$SECONDS status=0 fp
    script=$(sed -e "s/BACKUP_ADDRESS/$BACKUP_ADDRESS/g" \
        -e "s/CONTROLLER_FINGERPRINT/${CONTROLLER_FINGERPRINT:-CONTROLLER_FINGERPRINT}/g" \
        -e "s/AGENT_FINGERPRINT/${AGENT_FINGERPRINT:-AGENT_FINGERPRINT}/g" "$T/blocks/$n.$host")
    if [[ $script == *_FINGERPRINT* ]]; then
        fail "block $n ($host)" "a fingerprint placeholder has no value yet: $script"
        return 1
    fi
    if [[ $host == backup ]]; then
        on backup env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LC_ALL=C.UTF-8 UNDERSTUDY_INSTALL_BUILD="$UNDERSTUDY_INSTALL_BUILD" \
            "${SAN_ENV[@]}" \
            bash -o pipefail -c "cd \"\$1\" && $STOP_ON_ERROR && $script" bash "$UNDERSTUDY_SOURCE" \
            >"$T/out.$n" 2>&1 </dev/null || status=$?
    else
        as_site_user "$STOP_ON_ERROR && $script" >"$T/out.$n" 2>&1 </dev/null || status=$?
    fi
    if ((status != 0)); then
        fail "block $n ($host)" "exit $status after $((SECONDS - t0))s; output:"
        sed 's/^/    /' "$T/out.$n" | tail -n 40
        return 1
    fi
    pass "block $n ($host) ($((SECONDS - t0))s)"
    fp=$(sed -n 's/^fingerprint: *//p' "$T/out.$n" | tail -n 1)
    if [[ -n $fp && $host == backup ]]; then
        CONTROLLER_FINGERPRINT=$fp
    elif [[ -n $fp ]]; then
        AGENT_FINGERPRINT=$fp
    fi
}
for b in "${BLOCKS[@]}"; do
    read -r num host _ <<<"$b"
    run_block "$num" "$host" || die "the install story stops at block $num"
done

# ---- the result ---------------------------------------------------------------------------------
AGENT_BIN=$T/backup/usr-local.up/lib/understudy/understudy-agent
if ldd "$AGENT_BIN" 2>&1 | grep -q 'not a dynamic executable'; then
    pass "the agent copied to the primary is static"
else
    fail "the agent copied to the primary is static" "$(ldd "$AGENT_BIN" 2>&1 | head -n 3)"
fi
if grep -q '^tls: TLSv1.3' "$T"/out.*; then
    pass "check: TLS 1.3 across the veth"
else
    fail "check reports TLS 1.3"
fi
if grep -q '^database: connected as wpuser@' "$T"/out.*; then
    pass "check: the site's database"
else
    fail "check reports the database"
fi

# The controller: running as understudy, with the unit's two capabilities and no others.
pid=$(on backup cat /run/understudy-controller.pid 2>/dev/null)
if [[ -n $pid ]] && pid_alive "$pid"; then
    check_eq "controller runs as user understudy" \
        "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")" "$(on backup id -u understudy)"
    check_eq "controller's effective capabilities: CAP_CHOWN, CAP_FOWNER" \
        "$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")" 0000000000000009
else
    fail "controller running (pid file /run/understudy-controller.pid)"
fi

# Idempotence: install-backup again keeps the identity and the config.
sum=$(md5sum <"$T/backup/etc.up/understudy/controller.conf")
run_block 1 backup
check_eq "install-backup again keeps the fingerprint" \
    "$(sed -n 's/^fingerprint: *//p' "$T/out.1" | tail -n 1)" "$CONTROLLER_FINGERPRINT"
check_eq "install-backup again keeps controller.conf" \
    "$(md5sum <"$T/backup/etc.up/understudy/controller.conf")" "$sum"

# The crontab: the sync line, with absolute paths.
cron=$(cat "$T/primary/home.up/$SITE_USER/.fake-crontab" 2>/dev/null)
want="^[0-9]+ \*/[0-9]+ \* \* \* $HOME_DIR/understudy-agent sync --config"
want+=" $HOME_DIR/.understudy/agent.conf\$"
if grep -Eq "$want" <<<"$cron"; then
    pass "crontab: the sync line"
else
    fail "crontab: the sync line" "got: $cron"
fi

# A sync, once the agent implements it.
status=0
# shellcheck disable=SC2088 # the tilde is for the site user's shell
as_site_user "~/understudy-agent sync --config ~/.understudy/agent.conf" >"$T/out.sync" 2>&1 ||
    status=$?
if grep -qi 'not implemented' "$T/out.sync"; then
    printf 'note: sync skipped: %s\n' "$(grep -i -m1 'not implemented' "$T/out.sync")"
elif ((status == 0)); then
    pass "a sync succeeds across the veth"
    # Compared with the tools of the backup, not ours: the served tree and the live database.
    if on backup cmp -s /var/www/understudy/docroot/index.php \
        "$T/primary/home.up/$SITE_USER/public_html/index.php"; then
        pass "sync: the docroot serves the primary's index.php"
    else
        fail "sync: the docroot serves the primary's index.php" \
            "$(on backup ls -la /var/www/understudy/ 2>&1)"
    fi
    check_eq "sync: the backup's live database holds the primary's row" \
        "$(on backup mariadb --socket=/run/mysqld/mysqld.sock -N \
            -e 'SELECT option_value FROM understudy_wordpress.wp_options' 2>&1)" "install story"
else
    fail "a sync" "exit $status:"$'\n'"$(sed 's/^/    /' "$T/out.sync" | tail -n 20)"
fi
printf 'install story: %ss\n' "$((SECONDS - T0))"
exit 0
