#!/usr/bin/env bash
# 'understudy-controller firewall' against the kernel: two network namespaces joined by a veth
# pair, "backup" (the ruleset, listeners on 80, 443, 22, the agent and webhook ports) and
# "clients" (one address per role). All addresses are from the benchmark range 198.18.0.0/15
# and the documentation range 2001:db8::/32, assigned inside our namespaces: no packet leaves
# them. The test "Cloudflare" list comes from a --cloudflare-ranges file.
#
# Covers: the allow/deny matrix per source and port (IPv4 and IPv6, neighbour discovery with
# drop policies), outbound policy, --check of the shipped list, iptables-restore output checked
# with --test, an unconfirmed --apply rolling back by itself, confirm refused from the applying
# SSH connection and accepted from another, a confirmed apply staying, 'firewall rollback', and
# the iptables-restore format applied and rolled back. Exit 77 (skipped) without root or netns.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

skip() {
    printf 'skipped: %s\n' "$*"
    exit 77
}
((EUID == 0)) || skip "needs root (network namespaces, nft)"
for tool in ip nft iptables-restore ip6tables-restore iptables-save curl; do
    command -v "$tool" >/dev/null || skip "$tool not installed (see deploy/packages.txt)"
done
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3) || skip "python3 not installed"

CTL=$UNDERSTUDY_CONTROLLER
ID=$$
B=ufw-b$ID # the backup
C=ufw-c$ID # the clients
VB=ufwb$ID # veth ends (interface names: at most 15 characters)
VC=ufwc$ID

cleanup() {
    local ns pid
    for ns in "$B" "$C"; do
        # Our listeners and rollback timers: every process inside our namespaces.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "$VB" 2>/dev/null
    return 0
}
ip netns add "$B" 2>/dev/null || skip "cannot create network namespaces"
on_exit cleanup
ip netns add "$C" || die "ip netns add $C failed"
tmpdir
T=$TEST_TMP

inb() { ip netns exec "$B" "$@"; }
inc() { ip netns exec "$C" "$@"; }

# ---- the network ------------------------------------------------------------------------------
BACKUP4=198.18.0.1
BACKUP6=2001:db8:f::1
CF4=198.18.8.2        # inside the test Cloudflare range 198.18.8.0/24
CF6=2001:db8:f::cf:2  # inside the test Cloudflare range 2001:db8:f::cf:0/112
ADMIN4=198.19.1.2
ADMIN6=2001:db8:f::a
PRIMARY4=198.19.2.2
OUT4=198.19.3.2       # nobody in particular
OUT6=2001:db8:f::99
AGENT_PORT=7443
WEBHOOK_PORT=8443

ip link add "$VB" type veth peer name "$VC" || die "cannot create a veth pair"
ip link set "$VB" netns "$B" || die "cannot move $VB into $B"
ip link set "$VC" netns "$C" || die "cannot move $VC into $C"
inb ip link set lo up
inc ip link set lo up
inb ip addr add "$BACKUP4/15" dev "$VB"
inb ip -6 addr add "$BACKUP6/64" dev "$VB" nodad
for a in $CF4 $ADMIN4 $PRIMARY4 $OUT4; do
    inc ip addr add "$a/15" dev "$VC"
done
for a in $CF6 $ADMIN6 $OUT6; do
    inc ip -6 addr add "$a/64" dev "$VC" nodad
done
inb ip link set "$VB" up
inc ip link set "$VC" up

# ---- listeners --------------------------------------------------------------------------------
mkdir -p "$T/www" "$T/data" "$T/docroot"
echo "understudy standby" >"$T/www/index.html"
cat >"$T/listen.py" <<'EOF'
# Accepts and closes TCP connections on the given ports, IPv4 and IPv6.
import select, socket, sys
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(64)
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        c, _ = s.accept()
        c.close()
EOF
cat >"$T/probe.py" <<'EOF'
# probe.py SRC DST PORT: exit 0 when a TCP connection from SRC to DST:PORT opens within 1.5 s.
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1.5)
s.bind((src, 0))
try:
    s.connect((dst, port))
except OSError:
    sys.exit(1)
EOF
inb "$PY" -m http.server 80 --bind :: --directory "$T/www" >"$T/http.log" 2>&1 &
inb "$PY" "$T/listen.py" 443 22 "$AGENT_PORT" "$WEBHOOK_PORT" >"$T/listen.log" 2>&1 &
inc "$PY" "$T/listen.py" 80 2222 >"$T/listen-c.log" 2>&1 &

# probe NS SRC DST PORT
probe() {
    ip netns exec "$1" "$PY" "$T/probe.py" "$2" "$3" "$4"
}
for port in 80 443 22 $AGENT_PORT $WEBHOOK_PORT; do
    for ((i = 0; i < 50; i++)); do
        probe "$B" 127.0.0.1 127.0.0.1 "$port" && break
        sleep 0.1
    done
done
for ((i = 0; i < 50; i++)); do
    probe "$C" "$OUT4" "$OUT4" 2222 && break
    sleep 0.1
done

# expect_open NAME NS SRC DST PORT / expect_closed ...
expect_open() {
    if probe "$2" "$3" "$4" "$5"; then pass "$1"; else fail "$1" "$3 -> [$4]:$5 did not connect"; fi
}
expect_closed() {
    if probe "$2" "$3" "$4" "$5"; then fail "$1" "$3 -> [$4]:$5 connected"; else pass "$1"; fi
}

# Without a firewall everything connects, so a refused probe later is the firewall's doing.
for src in $CF4 $ADMIN4 $PRIMARY4 $OUT4; do
    for port in 80 22 $AGENT_PORT; do
        expect_open "no firewall: $src reaches port $port" "$C" "$src" "$BACKUP4" "$port"
    done
done
expect_open "no firewall: $OUT6 reaches port 80" "$C" "$OUT6" "$BACKUP6" 80
expect_open "no firewall: backup reaches an outside port 2222" "$B" "$BACKUP4" "$OUT4" 2222

# ---- configuration ----------------------------------------------------------------------------
cat >"$T/ranges.txt" <<EOF
# test "Cloudflare" ranges: benchmark and documentation addresses inside our namespaces
198.18.8.0/24
2001:db8:f::cf:0/112   # IPv6
EOF
# write_conf FILE ADMIN...: a controller.conf with these [firewall] admin entries.
write_conf() {
    local file=$1 a
    shift
    {
        printf '[listen]\naddress = 0.0.0.0:%s\n' "$AGENT_PORT"
        printf '[identity]\nkey = %s/key.pem\ncert = %s/cert.pem\n' "$T" "$T"
        printf '[agent]\nfingerprint = %s\n' \
            0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
        printf '[site]\ndocroot = %s/docroot\ndata = %s/data\n' "$T" "$T"
        printf '[firewall]\nprimary = %s\nwebhook_port = %s\n' "$PRIMARY4" "$WEBHOOK_PORT"
        printf 'cloudflare_ranges = %s/ranges.txt\n' "$T"
        for a in "$@"; do
            printf 'admin = %s\n' "$a"
        done
    } >"$file"
}
CONF=$T/controller.conf
write_conf "$CONF" "$ADMIN4" "$ADMIN6"
OTHER=$T/other.conf # admin is the outsider: a different ruleset
write_conf "$OTHER" "$OUT4"
THIRD=$T/third.conf
write_conf "$THIRD" "$ADMIN4" 198.19.1.9

OUT=$T/out
# run NAME WANT_EXIT CMD...: runs CMD with output in $OUT and checks its exit status.
run() {
    local name=$1 want=$2 got=0
    shift 2
    "$@" >"$OUT" 2>&1 || got=$?
    if [[ $got == "$want" ]]; then
        pass "$name (exit $got)"
    else
        fail "$name" "exit $got, expected $want; output:"
        sed 's/^/    /' "$OUT"
    fi
}
expect_out() {
    if grep -Eq -- "$2" "$OUT"; then pass "$1"; else
        fail "$1" "output lacks /$2/:"
        sed 's/^/    /' "$OUT"
    fi
}
has_table() { inb nft list tables 2>/dev/null | grep -qx 'table inet understudy'; }
no_table() { ! has_table; }
table_text() { inb nft list table inet understudy 2>/dev/null; }

# ---- refusals (nothing is loaded) ---------------------------------------------------------------
NOADMIN=$T/noadmin.conf
write_conf "$NOADMIN"
run "no admin: refused" 3 "$CTL" firewall --config "$NOADMIN"
expect_out "no admin: the lock-out message" \
    'refusing to generate a ruleset that locks SSH: set \[firewall\] admin = YOUR.IP'
BADADMIN=$T/badadmin.conf
write_conf "$BADADMIN" 198.19.1.0/33
run "bad admin: refused" 3 "$CTL" firewall --config "$BADADMIN"
expect_out "bad admin: names the file and key" "$BADADMIN: \[firewall\] admin: .*198.19.1.0/33"
printf '198.18.8.0/24\n# fine\n2001:db8::1/64\n' >"$T/bad-ranges.txt"
run "bad ranges line: refused" 3 "$CTL" firewall --config "$CONF" \
    --cloudflare-ranges "$T/bad-ranges.txt"
expect_out "bad ranges line: names the file and line" "$T/bad-ranges.txt:3: "
printf '# nothing\n' >"$T/empty-ranges.txt"
run "empty ranges: refused" 3 "$CTL" firewall --config "$CONF" \
    --cloudflare-ranges "$T/empty-ranges.txt"
run "unknown format: usage error" 2 "$CTL" firewall --config "$CONF" --format pf
check "nothing loaded by the refusals" no_table

# ---- --check and the iptables-restore formats ---------------------------------------------------
run "--check, built-in list" 0 inb "$CTL" firewall --config "$CONF" --check \
    --cloudflare-ranges "$UNDERSTUDY_SOURCE/deploy/cloudflare-ips-v4.txt" \
    --cloudflare-ranges "$UNDERSTUDY_SOURCE/deploy/cloudflare-ips-v6.txt"
expect_out "--check of the shipped list passes nft -c" "passes 'nft -c'"
run "print with the shipped list" 0 "$CTL" firewall --config "$CONF" \
    --cloudflare-ranges "$UNDERSTUDY_SOURCE/deploy/cloudflare-ips-v4.txt" \
    --cloudflare-ranges "$UNDERSTUDY_SOURCE/deploy/cloudflare-ips-v6.txt"
cp "$OUT" "$T/shipped.nft"
check "shipped IPv4 list in the ruleset" grep -q '173\.245\.48\.0/20' "$T/shipped.nft"
check "shipped IPv6 list in the ruleset" grep -q '2c0f:f248::/32' "$T/shipped.nft"
run "nft -c on the printed script" 0 inb nft -c -f "$T/shipped.nft"
for fmt in iptables-restore ip6tables-restore; do
    run "$fmt: print" 0 "$CTL" firewall --config "$CONF" --format "$fmt"
    cp "$OUT" "$T/rules.$fmt"
    run "$fmt --test accepts it" 0 inb "$fmt" --test "$T/rules.$fmt"
    run "$fmt: --check" 0 inb "$CTL" firewall --config "$CONF" --format "$fmt" --check
done
if grep -q ':' <(grep -- '^-A INPUT -s' "$T/rules.iptables-restore"); then
    fail "iptables-restore output is IPv4 only"
else pass "iptables-restore output is IPv4 only"; fi
check "ip6tables-restore output has neighbour discovery" \
    grep -q 'neighbour-solicitation' "$T/rules.ip6tables-restore"
check "nothing loaded by --check" no_table

# ---- an unconfirmed --apply with no table before: rolled back to no table ------------------------
run "apply, not confirmed" 0 inb "$CTL" firewall --config "$CONF" --apply --confirm-within 3
expect_out "apply prints the deadline" 'ROLLBACK at .* \(in 3 s'
expect_out "apply prints what was applied" 'SSH port 22 from 198\.19\.1\.2, 2001:db8:f::a'
check "the table is loaded" has_table
check "previous state saved" test -s "$T/data/firewall/previous.nft"
check "data/firewall is 0700" test "$(stat -c %a "$T/data/firewall")" = 700
sleep 5
check "unconfirmed apply rolled back (table gone)" no_table
check "rollback logged" grep -q 'NOT confirmed within 3 s: rolled back' "$T/data/firewall/log"
expect_open "after the rollback $OUT4 reaches port 22 again" "$C" "$OUT4" "$BACKUP4" 22

# ---- apply, probe the matrix, confirm ------------------------------------------------------------
S1="$ADMIN4 50022 $BACKUP4 22"
run "apply from SSH connection S1" 0 env SSH_CONNECTION="$S1" \
    ip netns exec "$B" "$CTL" firewall --config "$CONF" --apply --confirm-within 120
check "pending records S1" grep -qx "ssh_connection=$S1" "$T/data/firewall/pending"
run "second apply while one is pending: refused" 50 inb "$CTL" firewall --config "$CONF" --apply

expect_open "cloudflare $CF4 -> 80" "$C" "$CF4" "$BACKUP4" 80
expect_open "cloudflare $CF4 -> 443" "$C" "$CF4" "$BACKUP4" 443
expect_open "cloudflare $CF4 -> webhook $WEBHOOK_PORT" "$C" "$CF4" "$BACKUP4" "$WEBHOOK_PORT"
check "cloudflare $CF4: HTTP GET through the firewall" bash -c \
    "ip netns exec $C curl -fsS --max-time 3 --interface $CF4 http://$BACKUP4/ | grep -q standby"
expect_closed "outsider $OUT4 -> 80 dropped" "$C" "$OUT4" "$BACKUP4" 80
expect_closed "outsider $OUT4 -> webhook dropped" "$C" "$OUT4" "$BACKUP4" "$WEBHOOK_PORT"
expect_closed "admin $ADMIN4 -> 80 dropped (not Cloudflare)" "$C" "$ADMIN4" "$BACKUP4" 80
expect_open "admin $ADMIN4 -> SSH" "$C" "$ADMIN4" "$BACKUP4" 22
expect_closed "outsider $OUT4 -> SSH dropped" "$C" "$OUT4" "$BACKUP4" 22
expect_closed "cloudflare $CF4 -> SSH dropped" "$C" "$CF4" "$BACKUP4" 22
expect_closed "primary $PRIMARY4 -> SSH dropped" "$C" "$PRIMARY4" "$BACKUP4" 22
expect_open "primary $PRIMARY4 -> agent port" "$C" "$PRIMARY4" "$BACKUP4" "$AGENT_PORT"
expect_closed "admin $ADMIN4 -> agent port dropped" "$C" "$ADMIN4" "$BACKUP4" "$AGENT_PORT"
expect_closed "outsider $OUT4 -> agent port dropped" "$C" "$OUT4" "$BACKUP4" "$AGENT_PORT"
# IPv6, with empty neighbour caches: works only if neighbour discovery passes both chains.
inb ip -6 neigh flush all
inc ip -6 neigh flush all
expect_open "IPv6 cloudflare $CF6 -> 80 (neighbour discovery works)" "$C" "$CF6" "$BACKUP6" 80
expect_open "IPv6 admin $ADMIN6 -> SSH" "$C" "$ADMIN6" "$BACKUP6" 22
expect_closed "IPv6 outsider $OUT6 -> 80 dropped" "$C" "$OUT6" "$BACKUP6" 80
expect_closed "IPv6 outsider $OUT6 -> SSH dropped" "$C" "$OUT6" "$BACKUP6" 22
# Outbound: HTTP allowed, other ports dropped.
expect_open "backup -> outside port 80 (outbound HTTP)" "$B" "$BACKUP4" "$OUT4" 80
expect_closed "backup -> outside port 2222 dropped" "$B" "$BACKUP4" "$OUT4" 2222
expect_open "backup -> outside [$OUT6]:80 (outbound HTTP, IPv6)" "$B" "$BACKUP6" "$OUT6" 80

run "confirm from the same SSH connection: refused" 50 env SSH_CONNECTION="$S1" \
    "$CTL" firewall confirm --config "$CONF"
expect_out "confirm refusal says why" 'refusing to confirm from the SSH connection that ran'
run "confirm from a new SSH connection" 0 env SSH_CONNECTION="$ADMIN4 50023 $BACKUP4 22" \
    "$CTL" firewall confirm --config "$CONF"
for ((i = 0; i < 30; i++)); do
    [[ -e $T/data/firewall/pending ]] || break
    sleep 0.1
done
check "the timer stood down" test ! -e "$T/data/firewall/pending"
run "confirm again: nothing pending" 50 "$CTL" firewall confirm --config "$CONF"
check "confirmed table loaded" has_table
table_text >"$T/confirmed.nft"

# ---- unconfirmed apply over a confirmed ruleset: the previous ruleset comes back -----------------
run "apply another ruleset, not confirmed" 0 inb "$CTL" firewall --config "$OTHER" --apply \
    --confirm-within 3
check "the other ruleset is loaded" bash -c \
    "ip netns exec $B nft list set inet understudy admin_v4 | grep -q $OUT4"
sleep 5
table_text >"$T/after-rollback.nft"
check "previous ruleset restored after the deadline" diff -u "$T/confirmed.nft" \
    "$T/after-rollback.nft"
expect_open "admin $ADMIN4 -> SSH again" "$C" "$ADMIN4" "$BACKUP4" 22

# ---- confirmed from a console: stays past the deadline; then 'firewall rollback' -----------------
run "apply a third ruleset" 0 inb env -u SSH_CONNECTION "$CTL" firewall --config "$THIRD" \
    --apply --confirm-within 3
run "confirm from a console (no SSH_CONNECTION)" 0 env -u SSH_CONNECTION \
    "$CTL" firewall confirm --config "$THIRD"
sleep 5
check "confirmed ruleset stays past the deadline" bash -c \
    "ip netns exec $B nft list set inet understudy admin_v4 | grep -q 198.19.1.9"
run "firewall rollback" 0 inb "$CTL" firewall rollback --config "$THIRD"
table_text >"$T/after-manual.nft"
check "rollback restored the ruleset before the last apply" diff -u "$T/confirmed.nft" \
    "$T/after-manual.nft"

# Back to no table: restore the very first saved state by hand, as the admin would.
inb nft delete table inet understudy
check "table removed" no_table

# ---- the iptables-restore format, applied and rolled back ----------------------------------------
run "iptables-restore: apply" 0 inb "$CTL" firewall --config "$CONF" \
    --format iptables-restore --apply --confirm-within 4
expect_open "iptables: cloudflare $CF4 -> 80" "$C" "$CF4" "$BACKUP4" 80
expect_closed "iptables: outsider $OUT4 -> 80 dropped" "$C" "$OUT4" "$BACKUP4" 80
sleep 5
check "iptables: rolled back" grep -q 'rolled back to previous-iptables.rules' \
    "$T/data/firewall/log"
check "iptables: INPUT policy ACCEPT again" bash -c \
    "ip netns exec $B iptables-save -t filter | grep -q '^:INPUT ACCEPT'"
expect_open "iptables: outsider $OUT4 -> 80 after the rollback" "$C" "$OUT4" "$BACKUP4" 80

