#!/usr/bin/env bash
# A primary that tries to escape or exhaust the backup, through the real agent and controller:
# symlinks leading out of the site (absolute, climbing and chained through an in-tree symlink:
# the agent skips them by the shared rule of common/manifest.c, rsync --safe-links style, and the
# controller would refuse them), and trees over the controller's [limits]. Every refusal must fail the whole sync with a
# reason naming the path, leave the live generation and everything outside it untouched and the
# staging area clean. (Frames the real agent cannot produce -- '..' paths, writes through a
# symlink, lying hashes or sizes, out-of-order listings -- are tests/unit/test-generation.c's
# and the wire fuzzer's.)
set -u
source "$(dirname "$0")/../helpers/lib.sh"

tmpdir
SITE=$TEST_TMP/site
OUTSIDE=$TEST_TMP/outside
mkdir -p "$SITE" "$OUTSIDE"
printf 'canary\n' >"$OUTSIDE/canary"
make_pair "$TEST_TMP" --site-root "$SITE" || die "make_pair failed"
DOCROOT=$(sed -n 's/^docroot = //p' "$CONTROLLER_CONF" | tail -n 1)
DATA=$(sed -n 's/^data = //p' "$CONTROLLER_CONF" | tail -n 1)
printf '\n[limits]\nmax_files = 50\nmax_file_size = 1M\nmax_total_size = 3M\n' >>"$CONTROLLER_CONF"
LOG=$TEST_TMP/controller.log
start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not start"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"

OUT=$TEST_TMP/out
run_sync() {
    SYNC_RC=0
    "$UNDERSTUDY_AGENT" sync --no-database --config "$AGENT_CONF" >"$OUT" 2>&1 || SYNC_RC=$?
}
if ! "$UNDERSTUDY_AGENT" sync --no-database --config "$AGENT_CONF" --dry-run >"$OUT" 2>&1 &&
    grep -q 'not implemented yet' "$OUT"; then
    skip "understudy-agent sync: the agent's files phase is not implemented yet"
fi

printf '<?php\n' >"$SITE/index.php"
mkdir -p "$SITE/wp-content/uploads"
run_sync
check_eq "a normal first sync" "$SYNC_RC" 0
LIVE=$(readlink "$DOCROOT")
OUTSIDE_STATE=$(cd "$OUTSIDE" && find . -printf '%p %s %T@ %m\n' | sort)

# refused NAME PATH REASON_REGEX: the sync (already run) failed naming PATH; nothing changed.
refused() {
    local name=$1 path=$2 why=$3 line
    if ((SYNC_RC != 0)); then pass "$name: refused (exit $SYNC_RC)"; else
        fail "$name: the sync was accepted"
    fi
    line=$(grep -F "refused '$path'" "$LOG" | tail -n 1)
    if [[ -n $line ]] && grep -Eq -- "$why" <<<"$line"; then
        pass "$name: the reason names '$path'"
    else
        fail "$name: no \"refused '$path'\" matching /$why/ in the controller log"
        tail -n 3 "$LOG" | sed 's/^/    /'
    fi
    check_eq "$name: the live generation did not change" "$(readlink "$DOCROOT")" "$LIVE"
    check "$name: the staged tree is gone" test ! -e "$DATA/staging/gen"
    # staging/next is the controller's own link copy of the live tree (controller/files.c):
    # every file there is a hard link to a live one, never something this sender sent.
    check_eq "$name: staging keeps nothing from this sender" \
        "$(find "$DATA/staging" -path "$DATA/staging/next" -prune -o -type f -print | head -n 3)" ""
    check_eq "$name: the prepared tree holds only links to the live tree" \
        "$(find "$DATA/staging/next" -type f -links 1 ! -path "$DATA/staging/next/base" \
            2>/dev/null | head -n 3)" ""
    check_eq "$name: nothing outside changed" \
        "$(cd "$OUTSIDE" && find . -printf '%p %s %T@ %m\n' | sort)" "$OUTSIDE_STATE"
}

# skipped_or_refused NAME PATH: a link leaving the site lexically is skipped by the agent
# (rsync's --safe-links) or refused by the controller naming it; it never reaches the docroot.
skipped_or_refused() {
    run_sync
    if ((SYNC_RC == 0)); then pass "$1: skipped by the agent"; else
        refused "$1" "$2" '.'
    fi
    check "$1: not in the docroot" test ! -L "$DOCROOT/$2"
    check_eq "$1: nothing outside changed" \
        "$(cd "$OUTSIDE" && find . -printf '%p %s %T@ %m\n' | sort)" "$OUTSIDE_STATE"
    LIVE=$(readlink "$DOCROOT")
}

ln -s "$OUTSIDE" "$SITE/abs"
skipped_or_refused "absolute symlink" abs
rm "$SITE/abs"

ln -s ../../../outside "$SITE/wp-content/uploads/up"
skipped_or_refused "symlink climbing out of the site" wp-content/uploads/up
rm "$SITE/wp-content/uploads/up"
run_sync
LIVE=$(readlink "$DOCROOT")

# "self" -> "." is harmless alone; "self/self/self/../../.." reads as staying inside but climbs
# out through it.
ln -s . "$SITE/self"
ln -s self/self/self/../../.. "$SITE/chain"
skipped_or_refused "symlink chained through an in-tree symlink" chain
rm "$SITE/chain" "$SITE/self"

head -c $((2 << 20)) /dev/zero >"$SITE/wp-content/uploads/big.bin"
run_sync
refused "file over max_file_size" wp-content/uploads/big.bin 'max_file_size'
rm "$SITE/wp-content/uploads/big.bin"

for i in 1 2 3 4; do head -c $((900 << 10)) /dev/urandom >"$SITE/wp-content/uploads/f$i.bin"; done
run_sync
refused "files over max_total_size" wp-content/uploads/f4.bin 'max_total_size'
rm "$SITE"/wp-content/uploads/f*.bin

mkdir -p "$SITE/many"
for i in $(seq 1 60); do printf '%s\n' "$i" >"$SITE/many/$i"; done
run_sync
check "more than max_files entries: refused" test "$SYNC_RC" -ne 0
if grep -q 'max_files' "$LOG"; then pass "more than max_files: the reason says so"; else
    fail "more than max_files: no max_files in the controller log"
fi
check_eq "more than max_files: the live generation did not change" "$(readlink "$DOCROOT")" "$LIVE"
rm -r "$SITE/many"

run_sync
check_eq "a clean tree syncs again afterwards" "$SYNC_RC" 0
check "the canary outside is intact" grep -qx canary "$OUTSIDE/canary"

stop_controller || fail "controller stops cleanly"
