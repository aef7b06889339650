#!/usr/bin/env bash
# The controller's systemd unit, as meson generates it, passes 'systemd-analyze verify' (offline;
# systemd need not be running) and keeps its hardening: exposure score at most 3.0 ("OK").
# Exit 77 (skipped) where systemd-analyze is not installed. (--threshold counts in tenths.)
set -u
source "$(dirname "$0")/../helpers/lib.sh"

command -v systemd-analyze >/dev/null || {
    echo "skipped: systemd-analyze not installed (Debian package systemd)"
    exit 77
}
UNIT=$UNDERSTUDY_BUILD/deploy/understudy-controller.service
[[ -f $UNIT ]] || die "no $UNIT (build first)"

# verify checks that ExecStart= is executable: point it at the controller just built.
tmpdir
sed "s|^ExecStart=[^ ]*|ExecStart=$UNDERSTUDY_CONTROLLER|" "$UNIT" \
    >"$TEST_TMP/understudy-controller.service"
cd "$TEST_TMP" || die "cannot cd to $TEST_TMP"
if out=$(systemd-analyze verify --man=no ./understudy-controller.service 2>&1) && [[ -z $out ]]; then
    pass "systemd-analyze verify"
else
    fail "systemd-analyze verify" "$out"
fi
if out=$(systemd-analyze security --offline=true --threshold=30 --no-pager \
    ./understudy-controller.service 2>&1); then
    pass "systemd-analyze security: $(grep -o 'exposure level.*' <<<"$out")"
else
    fail "systemd-analyze security --threshold=30 (exposure 3.0)" "$(tail -n 3 <<<"$out")"
fi
