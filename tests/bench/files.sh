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
# No change runs 3 x N times (short runs, noisier medians).
# The agent measured is the static one a primary runs (shipped_agent, tests/bench/lib.sh).
set -u -o pipefail
# shellcheck source=tests/helpers/lib.sh
source "$(dirname "$0")/../helpers/lib.sh"
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/lib.sh"

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
shipped_agent

make_tmpdir B
export B

# start_sshd, make_wordpress, make_scaled, small_change, median: tests/bench/lib.sh.
# shellcheck disable=SC2317 # called through bench_dataset
make_scaled_n() { make_scaled "$1" "$FILES_B"; }

# --- one run of each method ----------------------------------------------------------------------
# Each prints "SECONDS BYTES RSS_KIB" for the run. The clock is bash's EPOCHREALTIME read around
# the command alone: no process of the measurement's own runs inside the timed span (two
# date(1)s and a time(1) cost 3 ms here, as much as a twentieth of a no-change run), so the
# agent's peak RSS comes from its own --verbose report (getrusage, as time(1) takes it). The
# ${EPOCHREALTIME/,/.} is for locales whose decimal separator is a comma (bc wants a point).
# Each run starts once the controller syncing again (pair 0's) is idle and nothing is dirty in
# the page cache (settle, tests/bench/lib.sh).
SETTLE_PIDS=()
run_rsync() { # run_rsync SRC DEST
    local t0 t1 out
    mkdir -p "$2"
    settle "${SETTLE_PIDS[@]}"
    t0=${EPOCHREALTIME/,/.}
    out=$(rsync -rlptD --chown=www-data:www-data --stats -e "$SSH" "root@127.0.0.1:$1/" "$2/" 2>&1) ||
        die "rsync failed: $out"
    t1=${EPOCHREALTIME/,/.}
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
    settle "${SETTLE_PIDS[@]}"
    t0=${EPOCHREALTIME/,/.}
    out=$("$UNDERSTUDY_AGENT" sync --no-database --verbose --config "$dir/primary/agent.conf" 2>&1) ||
        die "understudy sync failed: $out"
    t1=${EPOCHREALTIME/,/.}
    rss=$(sed -n 's/^resources: .*peak memory \([0-9]*\) KiB$/\1/p' <<<"$out")
    [[ -n $rss ]] || die "the agent reported no peak memory: $out"
    wire_out=$(sed -n 's/.*on the wire: \([0-9]*\) bytes sent, \([0-9]*\) received.*/\1/p' <<<"$out")
    wire_in=$(sed -n 's/.*on the wire: \([0-9]*\) bytes sent, \([0-9]*\) received.*/\2/p' <<<"$out")
    printf '%s %s %s\n' "$(echo "$t1 - $t0" | bc)" "$((wire_out + wire_in))" "$rss"
}

controller_rss() { # controller_rss NAME: VmHWM of that controller, KiB
    awk '/^VmHWM:/ {print $2}' "/proc/$(cat "$B/$1/controller.pid")/status"
}

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
    local ut=() rt=() bytes_u bytes_r rss_a=0
    # First sync: fresh destinations each run, for both methods, none removed before the end
    # (ext4 without a journal skips inodes freed in the last minutes when it allocates, so a
    # tree removed just before a run would slow down whichever method came next).
    for ((i = 0; i < RUNS; i++)); do
        setup_understudy "$name-$i" "$B/src-$name"
        ((i == 0)) && SETTLE_PIDS=("$(cat "$B/$name-0/controller.pid")")
        run_understudy "$name-$i" >"$B/res" || exit 1; read -r t b m <"$B/res"; ut+=("$t"); bytes_u=$b; ((m > rss_a)) && rss_a=$m
        # Only pair 0 syncs again: the others' controllers would go on working in the
        # background (preparing the next tree, their first drift check) during later runs.
        ((i > 0)) && kill "$(cat "$B/$name-$i/controller.pid")" 2>/dev/null
        run_rsync "$B/src-$name" "$B/rsync-$name-$i" >"$B/res" || exit 1; read -r t b _ <"$B/res"; rt+=("$t"); bytes_r=$b
    done
    report "$name" "first sync" "${ut[*]}" "${rt[*]}" "$bytes_u" "$bytes_r" "$rss_a" "$(controller_rss "$name-0")"
    # No change: a run is a few tens of milliseconds, so a hiccup of the machine moves it by a
    # fifth (rsync's by a fiftieth); three times the runs steady the medians.
    ut=() rt=() rss_a=0
    for ((i = 0; i < 3 * RUNS; i++)); do
        run_understudy "$name-0" >"$B/res" || exit 1; read -r t b m <"$B/res"; ut+=("$t"); bytes_u=$b; ((m > rss_a)) && rss_a=$m
        run_rsync "$B/src-$name" "$B/rsync-$name-0" >"$B/res" || exit 1; read -r t b _ <"$B/res"; rt+=("$t"); bytes_r=$b
    done
    report "$name" "no change" "${ut[*]}" "${rt[*]}" "$bytes_u" "$bytes_r" "$rss_a" "$(controller_rss "$name-0")" "target <= 0.1x, <= 2 KB"
    # Small change.
    ut=() rt=() rss_a=0
    local zbytes
    for ((i = 0; i < RUNS; i++)); do
        zbytes=$(small_change "$B/src-$name") || exit 1
        run_understudy "$name-0" >"$B/res" || exit 1; read -r t b m <"$B/res"; ut+=("$t"); bytes_u=$b; ((m > rss_a)) && rss_a=$m
        run_rsync "$B/src-$name" "$B/rsync-$name-0" >"$B/res" || exit 1; read -r t b _ <"$B/res"; rt+=("$t"); bytes_r=$b
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
