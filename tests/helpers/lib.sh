# shellcheck shell=bash
# Common bash helpers for understudy's integration tests, tests/run and deploy/demo.
#
# Source it; it defines functions and variables only (no traps, no `set -e`, no output) until a
# function is called. Functions that start processes or register cleanups must run in the main
# shell, not in a $(...) subshell, or the cleanup is registered in the subshell and lost.
#
#   on_exit CMD           run CMD (eval'd) when the script exits, last registered first; also on
#                         SIGINT/SIGTERM/SIGHUP, which end the script with status 130/143/129
#   die MSG...            print "<name>: error: MSG" on stderr, exit 1
#   skip WHY...           print "skipped: WHY", exit 77 (meson counts the test as skipped)
#   pass NAME / fail NAME [WHY...]
#                         print "PASS: NAME" / "FAIL: NAME: WHY"; after any fail the script exits
#                         non-zero even if it reaches its end normally
#   check NAME CMD...     run CMD; pass NAME if it succeeds, fail NAME otherwise
#   check_eq NAME GOT WANT  pass NAME if GOT equals WANT, fail showing both otherwise
#   tmpdir                create a temp dir, store its path in TEST_TMP (exported), remove it at
#                         exit (kept when UNDERSTUDY_KEEP_TMP=1); make_tmpdir VAR: same into VAR
#   wait_for_log FILE REGEX TIMEOUT [PID]
#                         wait until a line of FILE matches the extended REGEX (seconds; fails
#                         early if PID is given and that process has exited)
#   start_controller CONF LOGFILE / stop_controller
#   make_pair DIR [AGENT_INIT_ARGS...] / set_agent_controller_address CONF HOSTPORT
#   ensure_packages PKGFILE
#                         install the Debian packages listed in PKGFILE that are missing
#
# Environment (set by meson for integration tests; defaulted here so scripts run by hand):
#   UNDERSTUDY_SOURCE (repo root), UNDERSTUDY_BUILD (default $UNDERSTUDY_SOURCE/build),
#   UNDERSTUDY_AGENT, UNDERSTUDY_CONTROLLER (the two programs in UNDERSTUDY_BUILD).

if [[ -n ${_UNDERSTUDY_LIB_SH:-} ]]; then
    return 0
fi
_UNDERSTUDY_LIB_SH=1

: "${UNDERSTUDY_SOURCE:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)}"
: "${UNDERSTUDY_BUILD:=$UNDERSTUDY_SOURCE/build}"
: "${UNDERSTUDY_AGENT:=$UNDERSTUDY_BUILD/agent/understudy-agent}"
: "${UNDERSTUDY_CONTROLLER:=$UNDERSTUDY_BUILD/controller/understudy-controller}"
: "${UNDERSTUDY_MKCERT:=$UNDERSTUDY_BUILD/tests/mkcert}"
export UNDERSTUDY_SOURCE UNDERSTUDY_BUILD UNDERSTUDY_AGENT UNDERSTUDY_CONTROLLER UNDERSTUDY_MKCERT

: "${TEST_NAME:=$(basename "$0" .sh)}"

# ---------------------------------------------------------------------------------------------
# Exit handlers.

_LIB_EXIT_HANDLERS=()
_LIB_FAILURES=0
_LIB_TRAPS_SET=
_LIB_SIGNAL=

_lib_run_exit_handlers() {
    local status=$? i
    trap - EXIT
    set +e
    for ((i = ${#_LIB_EXIT_HANDLERS[@]} - 1; i >= 0; i--)); do
        eval "${_LIB_EXIT_HANDLERS[i]}"
    done
    _LIB_EXIT_HANDLERS=()
    if ((status == 0 && _LIB_FAILURES > 0)); then
        status=1
    fi
    exit "$status"
}

_lib_set_traps() {
    [[ $_LIB_TRAPS_SET == "$BASHPID" ]] && return 0
    # First use in this process. In a ( ... ) subshell the parent's traps are gone and its
    # handlers are the parent's business (its temp dirs must outlive the subshell): start afresh.
    if [[ -n $_LIB_TRAPS_SET ]]; then
        _LIB_EXIT_HANDLERS=()
    fi
    _LIB_TRAPS_SET=$BASHPID
    trap _lib_run_exit_handlers EXIT
    # An untrapped signal would kill bash without running the EXIT trap: turn it into an exit.
    # _LIB_SIGNAL tells cleanups to be quick: meson SIGKILLs a timed-out test 0.5 s after SIGTERM.
    trap '_LIB_SIGNAL=INT; exit 130' INT
    trap '_LIB_SIGNAL=TERM; exit 143' TERM
    trap '_LIB_SIGNAL=HUP; exit 129' HUP
}

# on_exit CMD: run CMD (a string, eval'd) at exit, after every handler registered later. In a
# ( ... ) subshell, CMD runs when the subshell exits.
on_exit() {
    _lib_set_traps
    _LIB_EXIT_HANDLERS+=("$1")
}

# ---------------------------------------------------------------------------------------------
# Reporting.

die() {
    printf '%s: error: %s\n' "$TEST_NAME" "$*" >&2
    exit 1
}

skip() {
    printf 'skipped: %s\n' "$*"
    exit 77
}

pass() {
    printf 'PASS: %s\n' "$1"
}

fail() {
    local name=$1
    shift
    _lib_set_traps
    _LIB_FAILURES=$((_LIB_FAILURES + 1))
    if (($#)); then
        printf 'FAIL: %s: %s\n' "$name" "$*"
    else
        printf 'FAIL: %s\n' "$name"
    fi
    return 1
}

# failures: prints how many times fail was called.
failures() {
    printf '%s\n' "$_LIB_FAILURES"
}

# check_eq NAME GOT WANT: pass NAME if GOT equals WANT, fail showing both otherwise.
check_eq() {
    if [[ $2 == "$3" ]]; then
        pass "$1"
    else
        fail "$1" "got '$2', want '$3'"
    fi
}

check() {
    local name=$1
    shift
    if "$@"; then
        pass "$name"
    else
        fail "$name" "command failed: $*"
    fi
}

# ---------------------------------------------------------------------------------------------
# Temp dirs and waiting.

tmpdir() {
    make_tmpdir TEST_TMP
}

make_tmpdir() {
    local var=$1 dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/understudy-${TEST_NAME//[^A-Za-z0-9_.-]/_}.XXXXXX") ||
        die "cannot create a temp dir"
    printf -v "$var" '%s' "$dir"
    export "${var?}"
    # shellcheck disable=SC2016 # expanded when the handler runs
    on_exit "_lib_rm_tmpdir $(printf '%q' "$dir")"
}

_lib_rm_tmpdir() {
    if [[ ${UNDERSTUDY_KEEP_TMP:-0} == 1 ]]; then
        printf '%s: keeping %s (UNDERSTUDY_KEEP_TMP=1)\n' "$TEST_NAME" "$1" >&2
    else
        rm -rf -- "$1"
    fi
}

# pid_alive PID: true while PID runs (a zombie — exited, not yet reaped — counts as gone).
pid_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

wait_for_log() {
    local file=$1 regex=$2 timeout=$3 pid=${4:-} deadline
    deadline=$((SECONDS + timeout))
    while :; do
        if [[ -f $file ]] && grep -Eq -- "$regex" "$file"; then
            return 0
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            printf '%s: process %s exited before %s showed /%s/; its tail:\n' \
                "$TEST_NAME" "$pid" "$file" "$regex" >&2
            tail -n 20 "$file" 2>/dev/null | sed 's/^/    /' >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            printf '%s: no line matching /%s/ in %s after %ss; its tail:\n' \
                "$TEST_NAME" "$regex" "$file" "$timeout" >&2
            tail -n 20 "$file" 2>/dev/null | sed 's/^/    /' >&2
            return 1
        fi
        sleep 0.1
    done
}

# _lib_stop_pid PID TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL. Reaps PID when
# it is our child. Returns the exit status when known (our child), 0 otherwise, 124 when it had
# to be killed.
_lib_stop_pid() {
    local pid=$1 timeout=$2 deadline status=0
    kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + timeout))
    while pid_alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if pid_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return 124
    fi
    wait "$pid" 2>/dev/null || status=$?
    # wait says 127 for a process that is not our child: its status is unknown.
    ((status == 127)) && status=0
    return "$status"
}

# ---------------------------------------------------------------------------------------------
# The controller.

# start_controller CONF LOGFILE: runs "$UNDERSTUDY_CONTROLLER serve --config CONF" in the
# background (stdout and stderr appended to LOGFILE), waits for "listening on HOST:PORT" and
# exports CONTROLLER_PID, CONTROLLER_HOST, CONTROLLER_PORT. Registers a kill at exit in case the
# test never calls stop_controller. Returns non-zero (after printing the log tail) on failure.
start_controller() {
    local conf=$1 log=$2 line
    [[ -x $UNDERSTUDY_CONTROLLER ]] || {
        printf '%s: no controller at %s (build first)\n' "$TEST_NAME" "$UNDERSTUDY_CONTROLLER" >&2
        return 1
    }
    "$UNDERSTUDY_CONTROLLER" serve --config "$conf" >>"$log" 2>&1 </dev/null &
    CONTROLLER_PID=$!
    export CONTROLLER_PID
    on_exit "_lib_kill_controller $CONTROLLER_PID"
    wait_for_log "$log" 'listening on [^ ]+:[0-9]+' "${CONTROLLER_START_TIMEOUT:-15}" \
        "$CONTROLLER_PID" || {
        _lib_kill_controller "$CONTROLLER_PID"
        CONTROLLER_PID=
        return 1
    }
    line=$(grep -Eo 'listening on [^ ]+:[0-9]+' "$log" | tail -n 1)
    line=${line#listening on }
    CONTROLLER_PORT=${line##*:}
    CONTROLLER_HOST=${line%:*}
    export CONTROLLER_PORT CONTROLLER_HOST
}

_lib_kill_controller() {
    pid_alive "$1" && _lib_stop_pid "$1" 5
    return 0
}

# stop_controller: SIGTERM the controller started by start_controller, wait for it (10 s, then
# SIGKILL) and return 0 only if it exited with status 0 (prints why otherwise).
stop_controller() {
    local status=0
    [[ -n ${CONTROLLER_PID:-} ]] || {
        printf '%s: stop_controller: no controller running\n' "$TEST_NAME" >&2
        return 1
    }
    _lib_stop_pid "$CONTROLLER_PID" 10 || status=$?
    CONTROLLER_PID=
    case $status in
    0) return 0 ;;
    124) printf '%s: controller ignored SIGTERM for 10 s and was killed\n' "$TEST_NAME" >&2 ;;
    *) printf '%s: controller exited with status %s after SIGTERM\n' "$TEST_NAME" "$status" >&2 ;;
    esac
    return 1
}

# ---------------------------------------------------------------------------------------------
# Identities.

# make_pair DIR [AGENT_INIT_ARGS...]: creates DIR/backup (controller identity) and DIR/primary
# (agent identity; extra args go to "understudy-agent init", e.g. --site-root PATH) and writes
# each side's fingerprint into the other's config. Exports CONTROLLER_CONF, AGENT_CONF,
# CONTROLLER_FINGERPRINT, AGENT_FINGERPRINT. Returns non-zero after printing the output of a
# failed init.
make_pair() {
    local dir=$1 out
    shift
    mkdir -p "$dir" || return 1
    out=$("$UNDERSTUDY_CONTROLLER" init --dir "$dir/backup" 2>&1) || {
        printf '%s: understudy-controller init --dir %s failed:\n%s\n' "$TEST_NAME" \
            "$dir/backup" "$out" >&2
        return 1
    }
    CONTROLLER_FINGERPRINT=$(sed -n 's/^fingerprint: *//p' <<<"$out" | tail -n 1)
    out=$("$UNDERSTUDY_AGENT" init --dir "$dir/primary" "$@" 2>&1) || {
        printf '%s: understudy-agent init --dir %s failed:\n%s\n' "$TEST_NAME" \
            "$dir/primary" "$out" >&2
        return 1
    }
    AGENT_FINGERPRINT=$(sed -n 's/^fingerprint: *//p' <<<"$out" | tail -n 1)
    if [[ -z $CONTROLLER_FINGERPRINT || -z $AGENT_FINGERPRINT ]]; then
        printf '%s: init printed no "fingerprint: ..." line (controller: "%s", agent: "%s")\n' \
            "$TEST_NAME" "$CONTROLLER_FINGERPRINT" "$AGENT_FINGERPRINT" >&2
        return 1
    fi
    CONTROLLER_CONF=$dir/backup/controller.conf
    AGENT_CONF=$dir/primary/agent.conf
    export CONTROLLER_CONF AGENT_CONF CONTROLLER_FINGERPRINT AGENT_FINGERPRINT
    printf '\n[agent]\nfingerprint = %s\n' "$AGENT_FINGERPRINT" >>"$CONTROLLER_CONF" || return 1
    printf '\n[controller]\nfingerprint = %s\n' "$CONTROLLER_FINGERPRINT" >>"$AGENT_CONF"
}

# set_agent_controller_address CONF HOSTPORT: sets "address = HOSTPORT" in the last [controller]
# section of the agent config CONF (appending such a section if there is none), removing any
# other uncommented address line in [controller] sections, so it can be called again.
set_agent_controller_address() {
    local conf=$1 hostport=$2 tmp
    tmp=$(mktemp "$conf.XXXXXX") || return 1
    awk -v addr="$hostport" '
        { lines[NR] = $0 }
        /^[ \t]*\[controller\][ \t]*$/ { last = NR }
        END {
            section = ""
            for (i = 1; i <= NR; i++) {
                l = lines[i]
                if (l ~ /^[ \t]*\[[^]]*\][ \t]*$/) {
                    section = l
                    gsub(/[ \t\[\]]/, "", section)
                }
                if (section == "controller" && l ~ /^[ \t]*address[ \t]*=/)
                    continue
                print l
                if (i == last)
                    print "address = " addr
            }
            if (!last)
                printf "\n[controller]\naddress = %s\n", addr
        }' "$conf" >"$tmp" || {
        rm -f "$tmp"
        return 1
    }
    chmod --reference="$conf" "$tmp" && mv -f "$tmp" "$conf"
}

# ---------------------------------------------------------------------------------------------
# Packages.

# packages_list PKGFILE: prints the package names of PKGFILE (one per line; # starts a comment).
packages_list() {
    sed -e 's/#.*//' -e 's/[[:space:]]\+/\n/g' "$1" | sed '/^$/d'
}

# packages_missing PKGFILE: prints the listed packages that dpkg does not have installed.
packages_missing() {
    local pkg status
    while read -r pkg; do
        status=$(dpkg-query -W -f='${db:Status-Status}\n' "$pkg" 2>/dev/null | head -n 1)
        [[ $status == installed ]] || printf '%s\n' "$pkg"
    done < <(packages_list "$1")
}

_LIB_POLICY_RC=/usr/sbin/policy-rc.d
_LIB_POLICY_MARK='# understudy: temporary, keeps services from starting during apt-get install'

# ensure_packages PKGFILE: installs the missing packages of PKGFILE with apt-get (running
# "apt-get update" first, once, only when something is missing). Services are kept from starting
# during the install (a temporary /usr/sbin/policy-rc.d that exits 101, removed afterwards, when
# there is none already), so installing mariadb-server leaves no system server running. Not root
# and something missing: prints the command to run as root and returns 1.
ensure_packages() {
    local pkgfile=$1 missing
    mapfile -t missing < <(packages_missing "$pkgfile")
    ((${#missing[@]})) || return 0
    local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
    cmd+=" --no-install-recommends ${missing[*]}"
    if ((EUID != 0)); then
        printf 'Missing Debian packages: %s\nRun as root:\n\n    %s\n\n' "${missing[*]}" "$cmd" >&2
        return 1
    fi
    printf 'Installing missing Debian packages: %s\n' "${missing[*]}" >&2
    (
        set -e
        if [[ ! -e $_LIB_POLICY_RC ]] || grep -qF "$_LIB_POLICY_MARK" "$_LIB_POLICY_RC"; then
            trap 'rm -f "$_LIB_POLICY_RC"' EXIT
            trap 'exit 130' INT
            trap 'exit 143' TERM
            printf '#!/bin/sh\n%s\nexit 101\n' "$_LIB_POLICY_MARK" >"$_LIB_POLICY_RC"
            chmod 755 "$_LIB_POLICY_RC"
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
            -o Dpkg::Options::=--force-confold)
        apt-get "${apt_opts[@]}" update
        apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
    ) || {
        printf 'apt-get failed; to retry by hand, run as root:\n\n    %s\n\n' "$cmd" >&2
        return 1
    }
    mapfile -t missing < <(packages_missing "$pkgfile")
    if ((${#missing[@]})); then
        printf 'still missing after apt-get install: %s\n' "${missing[*]}" >&2
        return 1
    fi
}
