#!/usr/bin/env bash
# The agent against a controller that lies (tests/helpers/fakecontroller.py, with the real
# controller's identity, so the pinned handshake succeeds). A files-only sync of an unchanged tree
# ends when the controller answers SyncBegin with the Result UNCHANGED for the agent's own base
# generation; any other Result in that place (another generation, APPLIED with nothing sent) is a
# protocol violation: exit 19 with one line naming it, and the agent's saved state untouched, so
# the next sync with the real controller goes on from where it was.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

command -v python3 >/dev/null || skip "python3 is not installed"
FAKE=$UNDERSTUDY_SOURCE/tests/helpers/fakecontroller.py
tmpdir
SITE=$TEST_TMP/site
mkdir -p "$SITE/wp-content/uploads"
printf '<?php\n' >"$SITE/index.php"
printf 'x\n' >"$SITE/wp-content/uploads/a.txt"
make_pair "$TEST_TMP" --site-root "$SITE" || die "make_pair failed"
if ((EUID != 0)) || ! getent passwd www-data >/dev/null; then
    printf '\n[site]\nowner = %s:%s\n' "$(id -un)" "$(id -gn)" >>"$CONTROLLER_CONF"
fi
DOCROOT=$(sed -n 's/^docroot = //p' "$CONTROLLER_CONF" | tail -n 1)
CERT=$(sed -n 's/^cert = //p' "$CONTROLLER_CONF" | tail -n 1)
KEY=$(sed -n 's/^key = //p' "$CONTROLLER_CONF" | tail -n 1)
STATE=$(dirname "$AGENT_CONF")/state
LOG=$TEST_TMP/controller.log
OUT=$TEST_TMP/out

run_sync() {
    SYNC_RC=0
    "$UNDERSTUDY_AGENT" sync --no-database --verbose --config "$AGENT_CONF" >"$OUT" 2>&1 ||
        SYNC_RC=$?
}

# state_sum: a digest of what the agent saved of its last sync (files.c: the manifest of the
# tree applied, and the generation file with its number and tree digest). The directory cache
# (dirs) is the scan's, kept whatever the sync's outcome.
state_sum() {
    cat "$STATE/manifest" "$STATE/generation" | sha256sum
}

start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not start"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
run_sync
check_eq "first sync with the real controller" "$SYNC_RC" 0
run_sync
check_eq "second sync with the real controller" "$SYNC_RC" 0
check "it was unchanged, generation 1" grep -q '^unchanged: generation 1;' "$OUT"
LIVE=$(readlink "$DOCROOT")
stop_controller || fail "the controller did not stop cleanly"
BEFORE=$(state_sum)

# fake CASE: one agent sync against fakecontroller.py answering SyncBegin as CASE says; sets
# SYNC_RC, and FAKE_SAW to what the fake read from the agent's SyncBegin.
fake() {
    local portfile=$TEST_TMP/fake.port pid i
    rm -f "$portfile"
    python3 "$FAKE" "$portfile" "$CERT" "$KEY" "$1" >"$TEST_TMP/fake.out" 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $portfile ]] && break
        sleep 0.1
    done
    [[ -s $portfile ]] || die "fakecontroller.py did not start: $(cat "$TEST_TMP/fake.out")"
    set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$(cat "$portfile")"
    run_sync
    wait "$pid" || fail "$1: fakecontroller.py failed: $(cat "$TEST_TMP/fake.out")"
    FAKE_SAW=$(cat "$TEST_TMP/fake.out")
}

fake unchanged-other
check_eq "UNCHANGED for another generation: the fake saw a files-only SyncBegin from generation 1" \
    "$FAKE_SAW" "base_generation 1 files_only 1"
check_eq "UNCHANGED for another generation: exit 19 (protocol violation)" "$SYNC_RC" 19
check "UNCHANGED for another generation: the line names the Result" \
    grep -q 'answered SyncBegin with a Result (status 1, generation 8) where SyncReady was expected' "$OUT"
check_eq "UNCHANGED for another generation: one line on stderr" "$(wc -l <"$OUT")" 1
check_eq "UNCHANGED for another generation: the agent's state is untouched" "$(state_sum)" "$BEFORE"

fake applied
check_eq "APPLIED in place of SyncReady: exit 19" "$SYNC_RC" 19
check "APPLIED in place of SyncReady: the line names the Result" \
    grep -q 'answered SyncBegin with a Result (status 0, generation 1) where SyncReady was expected' "$OUT"
check_eq "APPLIED in place of SyncReady: the agent's state is untouched" "$(state_sum)" "$BEFORE"

# The fake speaks the protocol well enough: the one right answer is taken.
fake unchanged
check_eq "UNCHANGED for the agent's generation: accepted" "$SYNC_RC" 0
check "UNCHANGED for the agent's generation: reported as such" \
    grep -q '^unchanged: generation 1;' "$OUT"

# Back to the real controller: the sync goes on from generation 1, and a change is applied.
: >"$LOG"
start_controller "$CONTROLLER_CONF" "$LOG" || die "controller did not restart"
set_agent_controller_address "$AGENT_CONF" "127.0.0.1:$CONTROLLER_PORT"
run_sync
check_eq "the real controller again: unchanged" "$SYNC_RC" 0
check "the real controller again: generation 1" grep -q '^unchanged: generation 1;' "$OUT"
check_eq "the live generation did not move" "$(readlink "$DOCROOT")" "$LIVE"
printf 'y\n' >"$SITE/wp-content/uploads/b.txt"
run_sync
check_eq "a change after the lies is applied" "$SYNC_RC" 0
check "as generation 2" grep -q '^applied: generation 2;' "$OUT"
check "the new file is live" cmp -s "$SITE/wp-content/uploads/b.txt" "$DOCROOT/wp-content/uploads/b.txt"
stop_controller || fail "the controller did not stop cleanly"
failures
