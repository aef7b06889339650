#!/usr/bin/env bash
# File sync between real agent and controller processes on 127.0.0.1: a full first sync, an
# incremental one (changes, deletions, a directory replaced by a file and back, a delta on a
# 200 MiB file), unchanged, rollback, escaping symlinks, and SIGKILL of the controller and of the
# agent mid-transfer (the docroot stays on the old generation; the rerun resumes). The docroot is
# compared with the primary by rsync (an independent tool) after every sync.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

command -v rsync >/dev/null || skip "rsync is not installed"
tmpdir
SITE=$TEST_TMP/site
mkdir -p "$SITE"
make_pair "$TEST_TMP" --site-root "$SITE" || die "make_pair failed"
DOCROOT=$(sed -n 's/^docroot = //p' "$CONTROLLER_CONF" | tail -n 1)
DATA=$(sed -n 's/^data = //p' "$CONTROLLER_CONF" | tail -n 1)
[[ -n $DOCROOT && -n $DATA ]] || die "no [site] docroot / data in $CONTROLLER_CONF"
printf '\n[retention]\ngenerations = 4\n' >>"$CONTROLLER_CONF"
if ((EUID == 0)) && getent passwd www-data >/dev/null; then
    OWNER=www-data GROUP=www-data
else
    OWNER=$(id -un) GROUP=$(id -gn)
    printf '\n[site]\nowner = %s:%s\n' "$OWNER" "$GROUP" >>"$CONTROLLER_CONF"
fi
LOG=$TEST_TMP/controller.log
start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not start"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"

OUT=$TEST_TMP/out
SENT=0
# run_sync: one agent sync; sets SYNC_RC, SENT and RECEIVED (bytes on the wire).
run_sync() {
    SYNC_RC=0
    "$UNDERSTUDY_AGENT" sync --no-database --verbose --config "$AGENT_CONF" >"$OUT" 2>&1 ||
        SYNC_RC=$?
    SENT=$(grep -Eo 'on the wire: [0-9]+ bytes sent' "$OUT" | grep -Eo '[0-9]+' | head -n 1)
    SENT=${SENT:-0}
    RECEIVED=$(grep -Eo 'bytes sent, [0-9]+ received' "$OUT" | grep -Eo '[0-9]+' | head -n 1)
    RECEIVED=${RECEIVED:-0}
}
if ! "$UNDERSTUDY_AGENT" sync --no-database --config "$AGENT_CONF" --dry-run >"$OUT" 2>&1 &&
    grep -q 'not implemented yet' "$OUT"; then
    skip "understudy-agent sync: the agent's files phase is not implemented yet"
fi

generation() {
    local t
    t=$(readlink "$DOCROOT") || return 1
    t=${t%/root}
    printf '%s\n' "${t##*/}"
}
# same NAME: the docroot holds exactly the primary's tree, owned by [site] owner.
same() {
    local diff owners
    # The site root's own mtime is not part of a generation (the protocol lists no entry for
    # it): rsync's line for "./" alone is ignored.
    diff=$(rsync -rlpt --dry-run --checksum --itemize-changes --delete "$SITE/" "$DOCROOT/" 2>&1 |
        grep -v '^\.d\.\.t\.\.\.\.\.\. \./$')
    if [[ -z $diff ]]; then pass "$1: rsync finds no difference"; else
        fail "$1: rsync finds differences:"
        head -n 20 <<<"$diff" | sed 's/^/    /'
    fi
    owners=$(find "$DOCROOT/" \( ! -user "$OWNER" -o ! -group "$GROUP" \) -printf '%u:%g %p\n' |
        head -n 5)
    check_eq "$1: everything belongs to $OWNER:$GROUP" "$owners" ""
}
sync_ok() {
    run_sync
    if ((SYNC_RC == 0)); then pass "$1: sync succeeds"; else
        fail "$1: sync exit $SYNC_RC:"
        sed 's/^/    /' "$OUT"
        tail -n 5 "$LOG" | sed 's/^/    /'
    fi
}

# --- the tree ------------------------------------------------------------------------------------
mkdir -p "$SITE"/wp-content/plugins/akismet "$SITE"/wp-content/uploads/2024/01 "$SITE/empty" \
    "$SITE/nested/a/b/c" "$SITE/dir with space" "$SITE/olddir/sub" "$SITE/becomes-file/inner"
printf '<?php require "wp-blog-header.php";\n' >"$SITE/index.php"
printf '<?php /* secrets */\n' >"$SITE/wp-config.php"
printf '#!/bin/sh\necho cron\n' >"$SITE/cron.sh"
chmod 0644 "$SITE/index.php"
chmod 0600 "$SITE/wp-config.php"
chmod 0755 "$SITE/cron.sh"
printf 'unicode\n' >"$SITE/dir with space/café ☕.txt"
printf 'dash\n' >"$SITE/-leading-dash"
printf 'newline\n' >"$SITE/new"$'\n'"line"
printf 'akismet\n' >"$SITE/wp-content/plugins/akismet/akismet.php"
printf 'x\n' >"$SITE/olddir/sub/x"
printf 'inner\n' >"$SITE/becomes-file/inner/i"
printf 'file\n' >"$SITE/becomes-dir"
ln "$SITE/index.php" "$SITE/hardlink.php"
ln -s wp-content/plugins "$SITE/plugins-link"
ln -s ../../index.php "$SITE/wp-content/plugins/up-link"
ln -s no-such-file "$SITE/nested/dangling"
head -c $((200 << 20)) /dev/urandom >"$SITE/wp-content/uploads/big.bin"
chmod 0555 "$SITE/empty"

t0=$SECONDS
sync_ok "first sync"
check_eq "first sync: generation 1 is live" "$(generation)" 1
same "first sync"
printf 'first sync: %s s, %s bytes sent\n' $((SECONDS - t0)) "$SENT"

# --- changes ------------------------------------------------------------------------------------
cp "$SITE/index.php" "$TEST_TMP/index.v1"
printf '<?php /* v2 */ require "wp-blog-header.php";\n' >"$SITE/index.php" # hardlink.php too
rm "$SITE/cron.sh"
rm -r "$SITE/olddir"
mkdir -p "$SITE/newdir/inner"
printf 'n\n' >"$SITE/newdir/inner/n"
rm -r "$SITE/becomes-file"
printf 'now a file\n' >"$SITE/becomes-file"
rm "$SITE/becomes-dir"
mkdir "$SITE/becomes-dir"
printf 'd\n' >"$SITE/becomes-dir/d"
chmod 0640 "$SITE/wp-content/plugins/akismet/akismet.php"
touch -d '2020-01-02 03:04:05' "$SITE/-leading-dash"
head -c 1024 /dev/urandom >>"$SITE/wp-content/uploads/big.bin"
t0=$SECONDS
sync_ok "incremental sync"
check_eq "incremental sync: generation 2 is live" "$(generation)" 2
same "incremental sync"
printf 'incremental sync (1 KiB appended to 200 MiB, small changes): %s s, %s bytes sent, %s %s\n' \
    $((SECONDS - t0)) "$SENT" "$RECEIVED" "received"
if ((SENT < 1 << 20)); then pass "the 200 MiB file travels as a delta ($SENT bytes sent)"; else
    fail "the 200 MiB file travels as a delta" "$SENT bytes sent"
fi
check "generation 1 is untouched (old index.php)" \
    cmp -s "$TEST_TMP/index.v1" "$DATA/generations/1/root/index.php"
check "generation 1 keeps the deleted directory" test -f "$DATA/generations/1/root/olddir/sub/x"
check "generation 1 keeps its mode" test "$(stat -c %a \
    "$DATA/generations/1/root/wp-content/plugins/akismet/akismet.php")" = 644
ino1=$(stat -c %i "$DATA/generations/1/root/wp-config.php")
ino2=$(stat -c %i "$DATA/generations/2/root/wp-config.php")
check_eq "unchanged files are hard links between generations" "$ino2" "$ino1"

sync_ok "unchanged sync"
check_eq "unchanged sync: still generation 2" "$(generation)" 2
check "unchanged sync: prints unchanged" grep -q '^unchanged: generation 2;' "$OUT"
# Files only, the agent's tree is the live one: the Result answers SyncBegin, no files phase
# (SyncBegin.files_only), and a few hundred bytes cross.
check "unchanged sync: answered at SyncBegin" \
    grep -q "sync: the agent's tree is live generation 2, unchanged" "$LOG"
check "unchanged sync: under 2 KB on the wire ($((SENT + RECEIVED)) bytes)" \
    test $((SENT + RECEIVED)) -le 2048
# --verbose also reports what the run cost (what the benchmarks read for the agent's RSS).
check "unchanged sync: reports its CPU time and peak memory" \
    grep -Eq '^resources: [0-9]+\.[0-9]{3} s user, [0-9]+\.[0-9]{3} s system CPU; peak memory [1-9][0-9]* KiB$' "$OUT"

# --- rollback -----------------------------------------------------------------------------------
out=$("$UNDERSTUDY_CONTROLLER" rollback --config "$CONTROLLER_CONF" 2>&1)
check_eq "rollback: generation 1 is live" "$(generation)" 1
check "rollback: the old index.php is served" cmp -s "$TEST_TMP/index.v1" "$DOCROOT/index.php"
out=$("$UNDERSTUDY_CONTROLLER" generations --config "$CONTROLLER_CONF" 2>&1)
check_eq "generations lists 2 and 1 (live)" "$(tr -s ' \n' ' ' <<<"$out")" " 2 * 1 "
"$UNDERSTUDY_CONTROLLER" rollback --config "$CONTROLLER_CONF" --to 2 >/dev/null 2>&1
check_eq "rollback --to 2" "$(generation)" 2
"$UNDERSTUDY_CONTROLLER" rollback --config "$CONTROLLER_CONF" --to 1 >/dev/null 2>&1
printf 'after rollback\n' >"$SITE/after.txt"
sync_ok "sync after a rollback"
check_eq "sync after a rollback: generation 3" "$(generation)" 3
same "sync after a rollback"

# --- hostile symlinks ---------------------------------------------------------------------------
# Links that leave the site lexically are skipped by the agent (rsync's --safe-links) or refused
# by the controller; either way they never reach the docroot.
ln -s /etc "$SITE/evil-abs"
ln -s ../../../../../../etc "$SITE/wp-content/evil-up"
before=$(readlink "$DOCROOT")
run_sync
if ((SYNC_RC == 0)); then pass "escaping symlinks: skipped by the agent"; else
    check "escaping symlinks: refused naming the path" \
        grep -qE "refused '(evil-abs|wp-content/evil-up)'" "$LOG"
    check_eq "escaping symlinks: the docroot did not move" "$(readlink "$DOCROOT")" "$before"
fi
check "escaping symlinks: not in the docroot" \
    test ! -L "$DOCROOT/evil-abs" -a ! -L "$DOCROOT/wp-content/evil-up"
rm "$SITE/evil-abs" "$SITE/wp-content/evil-up"

# refused NAME LINKPATH: the sync fails naming LINKPATH, the docroot and staging are untouched.
refused() {
    before=$(readlink "$DOCROOT")
    run_sync
    if ((SYNC_RC != 0)); then pass "$1: sync refused (exit $SYNC_RC)"; else
        fail "$1: sync was accepted"
    fi
    if grep -qF "refused '$2'" "$LOG"; then pass "$1: the reason names '$2'"; else
        fail "$1: no \"refused '$2'\" in the controller log"
        tail -n 3 "$LOG" | sed 's/^/    /'
    fi
    check_eq "$1: the docroot did not move" "$(readlink "$DOCROOT")" "$before"
    check "$1: staging is clean" test ! -e "$DATA/staging/gen"
    check "$1: nothing landed in the docroot" test ! -L "$DOCROOT/$2"
}
# Lexically inside, but "self" is "." so it climbs three levels: the shared rule (any '..' after a
# name) makes the agent skip it; the controller would refuse it (tests/unit/test-generation.c).
ln -s . "$SITE/self"
ln -s self/self/self/../../.. "$SITE/chain"
sync_ok "symlink chained through an in-tree symlink: skipped by the agent"
check "chained symlink: not in the docroot" test ! -L "$DOCROOT/chain"
rm "$SITE/chain" "$SITE/self"
sync_ok "sync after the refusals"
same "sync after the refusals"

# --- SIGKILL mid-transfer -------------------------------------------------------------------------
# killed_mid_transfer NAME WHO SIZE_MIB: a new file of SIZE_MIB, a bandwidth-limited sync, and
# SIGKILL of WHO (controller or agent) once part of it is staged.
killed_mid_transfer() {
    local name=$1 who=$2 mib=$3 before conf pid partial size=0 deadline
    head -c $((mib << 20)) /dev/urandom >"$SITE/killed-$who.bin"
    before=$(readlink "$DOCROOT")
    conf=$TEST_TMP/slow.conf
    cp "$AGENT_CONF" "$conf"
    printf '\n[agent]\nbandwidth_limit = %sM\n' $((mib / 4)) >>"$conf"
    "$UNDERSTUDY_AGENT" sync --no-database --config "$conf" >"$TEST_TMP/slow.out" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        partial=$(find "$DATA/staging/objects" -type f -size +$((mib / 8))M 2>/dev/null | head -n 1)
        [[ -n $partial ]] && break
        pid_alive "$pid" || break
        sleep 0.05
    done
    if [[ -z $partial ]]; then
        fail "$name: no partial transfer seen to interrupt"
        wait "$pid"
        return
    fi
    if [[ $who == controller ]]; then
        kill -KILL "$CONTROLLER_PID"
        wait "$pid" 2>/dev/null
    else
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null
    fi
    size=$(stat -c %s "$partial")
    check_eq "$name: the docroot stays on the old generation" "$(readlink "$DOCROOT")" "$before"
    check "$name: the new file is not live" test ! -e "$DOCROOT/killed-$who.bin"
    if [[ $who == controller ]]; then
        LOG=$TEST_TMP/controller-restarted.log # a fresh log: start_controller reads its port
        start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not restart"
        set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
    else
        sleep 0.5 # the controller notices the lost connection
    fi
    t0=$SECONDS
    sync_ok "$name: rerun"
    same "$name: rerun"
    printf '%s: %s MiB staged before SIGKILL; the rerun sent %s bytes in %s s\n' "$name" \
        $((size >> 20)) "$SENT" $((SECONDS - t0))
    if ((SENT < (mib << 20) - size + (1 << 20))); then
        pass "$name: the rerun resumes ($SENT bytes sent, $size were staged)"
    else
        fail "$name: the rerun resumes" "$SENT bytes sent, $size were staged"
    fi
}
# --- SIGKILL while the next tree is prepared --------------------------------------------------
# After a switch the controller links a copy of the live tree under staging/next in the
# background. SIGKILL right after a sync (during that copy, or after it: either must be fine),
# then a restart: the docroot is one whole generation, the copy is finished or discarded, and
# the next sync (which patches a finished copy) still matches the primary.
mkdir -p "$SITE/many"
for i in $(seq 1 3000); do printf 'file %s\n' "$i" >"$SITE/many/f$i.txt"; done
sync_ok "many files"
kill -KILL "$CONTROLLER_PID"
wait "$CONTROLLER_PID" 2>/dev/null
same "many files, controller SIGKILLed after the sync"
LOG=$TEST_TMP/controller-prepkill.log
start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not restart"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
rm "$SITE/many/f7.txt"
printf 'changed\n' >"$SITE/many/f8.txt"
sync_ok "sync after SIGKILL during the preparation"
same "sync after SIGKILL during the preparation"
sync_ok "unchanged sync after the restart"
printf 'changed again\n' >"$SITE/many/f9.txt"
sync_ok "sync on the prepared tree"
same "sync on the prepared tree"
base=$(cat "$DATA/staging/next/base" 2>/dev/null)
[[ -z $base || $base == "$(generation)" ]] && pass "the prepared tree is of the live generation" ||
    fail "the prepared tree is of generation $base, not the live $(generation)"

killed_mid_transfer "controller SIGKILLed" controller 200
killed_mid_transfer "agent SIGKILLed" agent 64

# A scan that outlasts the agent's wait for it (forced here): the session that waited ends after
# Hello, and a second one carries the sync.
printf 'late\n' >"$SITE/late.txt"
connects=$(grep -c 'connected for site' "$LOG")
UNDERSTUDY_TEST_SCAN_WAIT=never sync_ok "sync whose scan outlasts the wait"
check_eq "sync whose scan outlasts the wait: two sessions" \
    "$(($(grep -c 'connected for site' "$LOG") - connects))" 2
same "sync whose scan outlasts the wait"

stop_controller || fail "controller stops cleanly"
