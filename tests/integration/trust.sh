#!/usr/bin/env bash
# `understudy-agent trust` and `understudy-controller trust`: the fingerprint lands in the right
# section of the config, after init's commented placeholder, with every other line kept byte for
# byte and the file's mode kept; any spelling of a fingerprint already there is not added again;
# an invalid fingerprint or a missing file is refused with exit 2 / 1 and the file untouched; a
# file without the section gets it appended; and the two sides then complete a check.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

tmpdir
T=$TEST_TMP
A=$UNDERSTUDY_AGENT
C=$UNDERSTUDY_CONTROLLER

out=$("$C" init --dir "$T/backup" 2>&1) || die "controller init: $out"
CFP=$(sed -n 's/^fingerprint: *//p' <<<"$out")
out=$("$A" init --dir "$T/primary" --controller 127.0.0.1:1 2>&1) || die "agent init: $out"
AFP=$(sed -n 's/^fingerprint: *//p' <<<"$out")
[[ -n $CFP && -n $AFP ]] || die "init printed no fingerprint"
CCONF=$T/backup/controller.conf
ACONF=$T/primary/agent.conf

# lines_without FILE LINE: the file minus that one line (to compare the rest byte for byte).
lines_without() {
    grep -vxF -- "$2" "$1"
}

# ---- controller: [agent] ----------------------------------------------------------------------
cp "$CCONF" "$T/controller.before"
chmod 640 "$CCONF"
code=0
"$C" trust --config "$CCONF" "$AFP" >"$T/out" 2>&1 || code=$?
check_eq "controller trust: exit 0" "$code" 0
grep -q "^added \[agent\] fingerprint $AFP" "$T/out" && pass "controller trust: says added" ||
    fail "controller trust: says added" "$(cat "$T/out")"
section=$(awk '/^\[/ { sec = $0 } $0 == "fingerprint = '"$AFP"'" { print sec }' "$CCONF")
check_eq "controller trust: the line is in [agent]" "$section" "[agent]"
prev=$(grep -B1 -xF "fingerprint = $AFP" "$CCONF" | head -n 1)
check_eq "controller trust: right after the commented placeholder" "$prev" "#fingerprint ="
if diff <(lines_without "$CCONF" "fingerprint = $AFP") "$T/controller.before" >/dev/null; then
    pass "controller trust: every other line kept"
else
    fail "controller trust: every other line kept" \
        "$(diff <(lines_without "$CCONF" "fingerprint = $AFP") "$T/controller.before")"
fi
check_eq "controller trust: mode kept" "$(stat -c %a "$CCONF")" 640

# The same fingerprint again, lower case and without colons: not added twice.
cp "$CCONF" "$T/controller.once"
lower=$(tr 'A-F' 'a-f' <<<"${AFP//:/}")
"$C" trust --config "$CCONF" "$lower" >"$T/out" 2>&1 || fail "trust again: exit 0"
grep -q '^already trusted' "$T/out" && pass "trust again: says already trusted" ||
    fail "trust again: says already trusted" "$(cat "$T/out")"
cmp -s "$CCONF" "$T/controller.once" && pass "trust again: file unchanged" ||
    fail "trust again: file unchanged"

# Invalid input: exit 2, a line saying what is expected, the file untouched.
for bad in "nope" "${AFP%:*}" "$AFP:00" "ZZ${AFP#??}"; do
    code=0
    "$C" trust --config "$CCONF" "$bad" >"$T/out" 2>&1 || code=$?
    if [[ $code == 2 ]] && grep -q 'not a certificate fingerprint' "$T/out" &&
        cmp -s "$CCONF" "$T/controller.once"; then
        pass "invalid fingerprint '${bad:0:12}...' refused (exit 2), file untouched"
    else
        fail "invalid fingerprint '$bad'" "exit $code: $(cat "$T/out")"
    fi
done
code=0
"$C" trust --config "$T/missing.conf" "$AFP" >"$T/out" 2>&1 || code=$?
[[ $code == 1 ]] && grep -q 'missing.conf' "$T/out" && pass "missing file: exit 1, named" ||
    fail "missing file" "exit $code: $(cat "$T/out")"
code=0
"$C" trust --config "$CCONF" >"$T/out" 2>&1 || code=$?
check_eq "no fingerprint: exit 2" "$code" 2

# ---- agent: [controller] ----------------------------------------------------------------------
"$A" trust --config "$ACONF" "sha256:$CFP" >"$T/out" 2>&1 || fail "agent trust: exit 0"
section=$(awk '/^\[/ { sec = $0 } $0 == "fingerprint = '"$CFP"'" { print sec }' "$ACONF")
check_eq "agent trust: normalised line in [controller]" "$section" "[controller]"

# A file without the section, and without a final newline: the section is appended.
printf '[controller]\naddress = 127.0.0.1:1\n\n[site]\nroot = /srv' >"$T/bare.conf"
"$C" trust --config "$T/bare.conf" "$AFP" >/dev/null 2>&1 || fail "trust into a bare file"
check_eq "missing section appended" "$(cat "$T/bare.conf")" \
    "$(printf '[controller]\naddress = 127.0.0.1:1\n\n[site]\nroot = /srv\n\n[agent]\nfingerprint = %s' "$AFP")"

# A second fingerprint (key rotation) goes right after the first.
"$C" trust --config "$CCONF" "$CFP" >/dev/null 2>&1 || fail "second fingerprint"
check_eq "second fingerprint follows the first" \
    "$(grep -A1 -xF "fingerprint = $AFP" "$CCONF" | tail -n 1)" "fingerprint = $CFP"

# Both configs now load: the pair completes a check (database part skipped).
start_controller "$CCONF" "$T/controller.log" || die "controller did not start"
set_agent_controller_address "$ACONF" "127.0.0.1:$CONTROLLER_PORT"
if "$A" check --config "$ACONF" --no-database >"$T/out" 2>&1; then
    pass "after trust on both sides, check passes"
else
    fail "after trust on both sides, check passes" "$(cat "$T/out")"
fi
stop_controller || fail "controller stops cleanly"
exit 0
