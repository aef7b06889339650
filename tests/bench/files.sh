#!/usr/bin/env bash
# File sync benchmark, run by hand (not part of tests/run): understudy against the seed's method,
# `rsync -rlptD --chown=www-data:www-data` over ssh to localhost, on the same data in the same run.
#
#   tests/bench/files.sh [--quick] [--runs N] [--out FILE]
#
# Datasets: (a) Debian's wordpress package tree plus ~20 MB of generated uploads, (b) a scaled
# tree of 50,000 files. Cases: first sync, no-change sync, small change (10 files edited and one
# new 1 MiB upload). Prints per case the median wall-time ratio understudy/rsync, bytes on the
# wire for each (understudy: TLS bytes both ways as the agent counts them on its socket; rsync:
# its --stats "sent" + "received"), and peak RSS of agent and controller. Targets (File sync
# issue): no-change <= 0.1x rsync's time and <= 2 KB; small change <= 0.3x and <= 1.2x the
# zstd-compressed changed bytes; first sync <= 1.2x; agent RSS <= 32 MiB at 50k files.
# --quick: 5,000 files instead of 50,000 and one run per case (a smoke run of the script).
set -u -o pipefail
source "$(dirname "$0")/../helpers/lib.sh"

RUNS=3
FILES_B=50000
OUT=
while (($#)); do
    case $1 in
    --quick) RUNS=1 FILES_B=5000 ;;
    --runs) RUNS=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
    esac
    shift
done

ensure_packages "$UNDERSTUDY_SOURCE/tests/bench/packages.txt" || die "cannot install the bench packages"
[[ -x $UNDERSTUDY_AGENT ]] || die "build first: meson setup build && ninja -C build"
TIME=/usr/bin/time

make_tmpdir B
export B

# --- the seed's transport: sshd on a loopback port, root's key ---------------------------------
start_sshd() {
    mkdir -p "$B/ssh"
    ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/host" >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$B/ssh/client" >/dev/null
    SSH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$B/ssh/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $B/ssh/host
AuthorizedKeysFile $B/ssh/client.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
PidFile $B/ssh/sshd.pid
StrictModes no
UsePAM no
EOF
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$B/ssh/sshd_config" -E "$B/ssh/sshd.log" || die "sshd did not start"
    on_exit "kill \$(cat $B/ssh/sshd.pid) 2>/dev/null"
    SSH="ssh -p $SSH_PORT -i $B/ssh/client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
}

# --- datasets ------------------------------------------------------------------------------------
make_wordpress() { # make_wordpress DIR: Debian's wordpress tree, plain, plus ~20 MB of uploads
    mkdir -p "$1"
    cp -rL /usr/share/wordpress/. "$1/" 2>/dev/null
    mkdir -p "$1/wp-content/uploads/2026/11"
    python3 - "$1/wp-content/uploads/2026/11" <<'EOF'
import os, random, sys
random.seed(7)
d = sys.argv[1]
for i in range(100):   # 100 x 200 KiB: photos do not compress
    with open(os.path.join(d, "photo-%03d.jpg" % i), "wb") as f:
        f.write(random.randbytes(200 * 1024))
EOF
}

make_scaled() { # make_scaled DIR N: N small files in N/100 directories
    python3 - "$1" "$2" <<'EOF'
import os, random, sys
random.seed(11)
root, n = sys.argv[1], int(sys.argv[2])
words = [b"wordpress", b"understudy", b"function", b"return", b"array", b"<?php", b"echo"]
for i in range(n):
    d = os.path.join(root, "dir%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    size = random.randint(1, 8) * 1024
    body = b" ".join(random.choice(words) for _ in range(size // 6))
    with open(os.path.join(d, "file%05d.php" % i), "wb") as f:
        f.write(body[:size])
EOF
}

make_scaled_n() { make_scaled "$1" "$FILES_B"; }

small_change() { # small_change DIR: edit 10 files, add one 1 MiB upload; prints changed bytes (zstd)
    python3 - "$1" <<'EOF'
import os, random, subprocess, sys
root = sys.argv[1]
files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".php"))
random.seed()  # a different change every run: a repeated upload would be reused by hash
changed = random.sample(files, 10)
for p in changed:
    with open(p, "ab") as f:
        f.write(b"\n/* edited */\n")
up = os.path.join(root, "wp-content", "uploads", "new-%d.bin" % random.randrange(10**9))
os.makedirs(os.path.dirname(up), exist_ok=True)
with open(up, "wb") as f:
    f.write(os.urandom(1 << 20))
total = 0
for p in changed + [up]:
    total += len(subprocess.run(["zstd", "-3", "-c", p], capture_output=True).stdout)
print(total)
EOF
}

# --- one run of each method ----------------------------------------------------------------------
# Each prints "SECONDS BYTES RSS_KIB" for the run.
run_rsync() { # run_rsync SRC DEST
    local t0 t1 out
    mkdir -p "$2"
    t0=$(date +%s.%N)
    out=$(rsync -rlptD --chown=www-data:www-data --stats -e "$SSH" "root@127.0.0.1:$1/" "$2/" 2>&1) ||
        die "rsync failed: $out"
    t1=$(date +%s.%N)
    local sent recv
    sent=$(sed -n 's/^Total bytes sent: \([0-9,]*\).*/\1/p' <<<"$out" | tr -d ,)
    recv=$(sed -n 's/^Total bytes received: \([0-9,]*\).*/\1/p' <<<"$out" | tr -d ,)
    printf '%s %s %s\n' "$(echo "$t1 - $t0" | bc)" "$((sent + recv))" 0
}

setup_understudy() { # setup_understudy NAME SRC: a pair whose agent syncs SRC
    local dir=$B/$1
    make_pair "$dir" --site-root "$2" >/dev/null || die "make_pair"
    printf '\n[limits]\nmax_total_size = 64G\n' >>"$dir/backup/controller.conf"
    start_controller "$dir/backup/controller.conf" "$dir/controller.log" || die "controller"
    set_agent_controller_address "$dir/primary/agent.conf" "127.0.0.1:$CONTROLLER_PORT"
    printf '%s\n' "$CONTROLLER_PID" >"$dir/controller.pid"
}

run_understudy() { # run_understudy NAME
    local dir=$B/$1 t0 t1 out rss wire_out wire_in
    t0=$(date +%s.%N)
    out=$($TIME -f 'rss %M' "$UNDERSTUDY_AGENT" sync --no-database --verbose \
        --config "$dir/primary/agent.conf" 2>&1) || die "understudy sync failed: $out"
    t1=$(date +%s.%N)
    rss=$(sed -n 's/^rss //p' <<<"$out")
    wire_out=$(sed -n 's/.*on the wire: \([0-9]*\) bytes sent, \([0-9]*\) received.*/\1/p' <<<"$out")
    wire_in=$(sed -n 's/.*on the wire: \([0-9]*\) bytes sent, \([0-9]*\) received.*/\2/p' <<<"$out")
    printf '%s %s %s\n' "$(echo "$t1 - $t0" | bc)" "$((wire_out + wire_in))" "$rss"
}

controller_rss() { # controller_rss NAME: VmHWM of that controller, KiB
    awk '/^VmHWM:/ {print $2}' "/proc/$(cat "$B/$1/controller.pid")/status"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

ROWS=()
report() { # report DATASET CASE "u_times" "r_times" u_bytes r_bytes agent_rss ctl_rss [extra]
    local ut rt
    ut=$(tr ' ' '\n' <<<"$3" | median)
    rt=$(tr ' ' '\n' <<<"$4" | median)
    ROWS+=("$(printf '| %s | %s | %.2f | %.2f | %.3f | %s | %s | %s MiB | %s MiB | %s |' "$1" "$2" \
        "$ut" "$rt" "$(echo "$ut / $rt" | bc -l)" "$5" "$6" "$(($7 / 1024))" "$(($8 / 1024))" "${9:-}")")
    printf '%s\n' "${ROWS[-1]}"
}

bench_dataset() { # bench_dataset NAME MAKER...
    local name=$1
    shift
    printf '\n== dataset %s\n' "$name" >&2
    "$@" "$B/src-$name"
    local ut=() rt=() u r bytes_u bytes_r rss_a=0
    # First sync: fresh destinations each run.
    for ((i = 0; i < RUNS; i++)); do
        setup_understudy "$name-$i" "$B/src-$name"
        run_understudy "$name-$i" >"$B/res" || exit 1; read -r t b m <"$B/res"; ut+=("$t"); bytes_u=$b; ((m > rss_a)) && rss_a=$m
        rm -rf "$B/rsync-$name"
        run_rsync "$B/src-$name" "$B/rsync-$name" >"$B/res" || exit 1; read -r t b _ <"$B/res"; rt+=("$t"); bytes_r=$b
    done
    report "$name" "first sync" "${ut[*]}" "${rt[*]}" "$bytes_u" "$bytes_r" "$rss_a" "$(controller_rss "$name-0")"
    # No change.
    ut=() rt=() rss_a=0
    for ((i = 0; i < RUNS; i++)); do
        run_understudy "$name-0" >"$B/res" || exit 1; read -r t b m <"$B/res"; ut+=("$t"); bytes_u=$b; ((m > rss_a)) && rss_a=$m
        run_rsync "$B/src-$name" "$B/rsync-$name" >"$B/res" || exit 1; read -r t b _ <"$B/res"; rt+=("$t"); bytes_r=$b
    done
    report "$name" "no change" "${ut[*]}" "${rt[*]}" "$bytes_u" "$bytes_r" "$rss_a" "$(controller_rss "$name-0")" "target <= 0.1x, <= 2 KB"
    # Small change.
    ut=() rt=() rss_a=0
    local zbytes
    for ((i = 0; i < RUNS; i++)); do
        zbytes=$(small_change "$B/src-$name") || exit 1
        run_understudy "$name-0" >"$B/res" || exit 1; read -r t b m <"$B/res"; ut+=("$t"); bytes_u=$b; ((m > rss_a)) && rss_a=$m
        run_rsync "$B/src-$name" "$B/rsync-$name" >"$B/res" || exit 1; read -r t b _ <"$B/res"; rt+=("$t"); bytes_r=$b
    done
    report "$name" "small change" "${ut[*]}" "${rt[*]}" "$bytes_u" "$bytes_r" "$rss_a" "$(controller_rss "$name-0")" \
        "changed bytes zstd: $zbytes ($(echo "scale=2; $bytes_u / $zbytes" | bc)x)"
}

start_sshd
{
    printf '| dataset | case | understudy s | rsync s | ratio | understudy bytes | rsync bytes | agent RSS | controller RSS | note |\n'
    printf '|---|---|---|---|---|---|---|---|---|---|\n'
} >"$B/table"
bench_dataset wordpress make_wordpress
bench_dataset "scaled-$FILES_B" make_scaled_n
printf '%s\n' "${ROWS[@]}" >>"$B/table"
printf '\nmachine: %s, %s cores, %s\n' "$(uname -srm)" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
cat "$B/table"
[[ -n $OUT ]] && cp "$B/table" "$OUT"
exit 0
