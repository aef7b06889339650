#!/usr/bin/env bash
# The static agent (-Dstatic_agent=true): builds it in its own build dir (kept under the build
# root, so later runs only rebuild what changed), checks that it is one self-contained file, and
# runs it in a chroot holding nothing but the binary, /etc/hosts and /etc/passwd: --version,
# --help, init (key generation) and check against a closed port on 127.0.0.1, by number and by
# a name from /etc/hosts, which must fail with the "unreachable" exit code 10.
#
# Exit 77 (meson: skipped) with a "skipped:" line when this host cannot link statically (no
# meson, no static archives) or cannot chroot.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

skip() {
    printf 'skipped: %s\n' "$*"
    exit 77
}

if ! command -v meson >/dev/null || ! command -v ninja >/dev/null; then
    skip "meson or ninja not installed"
fi

BUILD=$UNDERSTUDY_BUILD/static-agent
LOG=$UNDERSTUDY_BUILD/static-agent.log
if [[ ! -f $BUILD/build.ninja ]]; then
    rm -rf "$BUILD"
    meson setup "$BUILD" "$UNDERSTUDY_SOURCE" -Dstatic_agent=true -Dtests=false >"$LOG" 2>&1 || {
        tail -n 5 "$LOG"
        rm -rf "$BUILD"
        skip "meson setup -Dstatic_agent=true failed (static libraries missing?); see $LOG"
    }
fi
if ! ninja -C "$BUILD" agent/understudy-agent >"$LOG" 2>&1; then
    # A missing static archive is this host's limitation; anything else is a bug.
    if grep -Eq 'cannot find -l|attempted static link of dynamic object' "$LOG"; then
        grep -E 'cannot find -l|attempted static link' "$LOG" | head -n 3
        skip "a library has no static archive on this host; see $LOG"
    fi
    grep -E 'error|FAILED' "$LOG" | head -n 20
    die "the static agent does not build; see $LOG"
fi
BIN=$BUILD/agent/understudy-agent
pass "static build ($(stat -c %s "$BIN") bytes)"

# One self-contained file: no program interpreter, nothing for ldd to list.
if readelf -lW "$BIN" | grep -q INTERP; then
    fail "no ELF interpreter" "$(readelf -lW "$BIN" | grep -A1 INTERP)"
else
    pass "no ELF interpreter"
fi
ldd_out=$(ldd "$BIN" 2>&1)
if grep -q 'not a dynamic executable' <<<"$ldd_out"; then
    pass "ldd: not a dynamic executable"
else
    fail "ldd: not a dynamic executable" "$ldd_out"
fi
if command -v file >/dev/null; then
    file_out=$(file -b "$BIN")
    if grep -q 'statically linked' <<<"$file_out"; then
        pass "file: statically linked"
    else
        fail "file: statically linked" "$file_out"
    fi
fi

# A root with nothing but the agent: no shared libraries, no /dev, /proc or /tmp, no NSS modules.
tmpdir
ROOT=$TEST_TMP/root
mkdir -p "$ROOT/etc" "$ROOT/site"
cp "$BIN" "$ROOT/understudy-agent"
printf '127.0.0.1\tlocalhost\n127.0.0.1\tcontroller.understudy.test\n' >"$ROOT/etc/hosts"
printf 'root:x:0:0:root:/:/nonexistent\n' >"$ROOT/etc/passwd"

# in_root CMD...: runs CMD inside ROOT (chroot needs root, else an unprivileged user namespace).
if [[ $(id -u) == 0 ]]; then
    in_root() { chroot "$ROOT" "$@"; }
elif unshare -r true 2>/dev/null; then
    in_root() { unshare -r chroot "$ROOT" "$@"; }
else
    skip "chroot needs root or unprivileged user namespaces"
fi

out=$(in_root /understudy-agent --version 2>&1)
check_eq "--version in an empty chroot" "$out" "$("$UNDERSTUDY_AGENT" --version 2>&1)"
if out=$(in_root /understudy-agent --help 2>&1) && grep -q '^usage: understudy-agent' <<<"$out"; then
    check_eq "--help in an empty chroot" "$out" "$("$UNDERSTUDY_AGENT" --help 2>&1)"
else
    fail "--help in an empty chroot" "$out"
fi

# init generates the key with the statically linked OpenSSL (getrandom(), no /dev/urandom).
if out=$(in_root /understudy-agent init --dir /etc/understudy --site-root /site 2>&1); then
    pass "init in an empty chroot"
else
    fail "init in an empty chroot" "$out"
fi
# Our own config with init's key: any well-formed pin will do, the connection is refused before
# TLS starts.
[[ -f $ROOT/etc/understudy/agent.key && -f $ROOT/etc/understudy/agent.crt ]] ||
    die "init made no /etc/understudy/agent.key and agent.crt in the chroot"
cat >"$ROOT/etc/understudy/agent.conf" <<EOF
[controller]
address = 127.0.0.1:1
fingerprint = $(printf '%064d' 0)
[identity]
key = /etc/understudy/agent.key
cert = /etc/understudy/agent.crt
[site]
root = /site
EOF

# A closed port on 127.0.0.1 (nothing may listen on it, or the test would say nothing).
port=1
while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
done

# run_check NAME HOSTPORT REGEX: check must exit 10 (ERR_UNREACHABLE) saying REGEX.
run_check() {
    local name=$1 got=0
    set_agent_controller_address "$ROOT/etc/understudy/agent.conf" "$2" ||
        die "cannot edit the agent's config"
    out=$(in_root /understudy-agent check --no-database --config /etc/understudy/agent.conf \
        2>&1) || got=$?
    if [[ $got == 10 ]] && grep -Eq -- "$3" <<<"$out"; then
        pass "$name (exit 10)"
    else
        fail "$name" "exit $got, expected 10 and /$3/; output:"
        sed 's/^/    /' <<<"$out"
    fi
}
run_check "check, closed port by number" "127.0.0.1:$port" "cannot connect to 127\.0\.0\.1"
# The name comes from the chroot's /etc/hosts: glibc's static "files" lookup, no libnss needed.
run_check "check, closed port by /etc/hosts name" "controller.understudy.test:$port" \
    "cannot connect to controller\.understudy\.test"

if (($(failures) == 0)); then
    echo "static-agent: all passed"
fi
