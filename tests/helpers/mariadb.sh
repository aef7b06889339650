# shellcheck shell=bash
# Throwaway MariaDB servers for tests and the demo: each lives in its own directory, listens on a
# unix socket only (no system service, no docker, no TCP unless MDB_PORT is set) and is stopped
# when the sourcing script exits, whether it succeeds, fails or is interrupted.
#
#   mdb_start DIR            initialize DIR/data (first time only) and start a server:
#                              DIR/mysql.sock  socket      DIR/mariadb.log  server log
#                              DIR/mariadb.pid pid file    DIR/install.log  mariadb-install-db log
#                            waits until it accepts connections (MDB_START_TIMEOUT, default 30 s);
#                            on failure prints the log tail and returns 1.
#                            MDB_PORT=N: also listen on 127.0.0.1:N. MDB_OPTS: extra mariadbd
#                            options (word-split).
#   mdb_stop DIR             stop that server (SIGTERM, then SIGKILL after 30 s; at once with
#                            SIGKILL when the script is exiting on a signal)
#   mdb_stop_all             stop every server this shell started (run by on_exit at exit)
#   mdb_socket DIR           print the socket path
#   mdb_sql DIR [SQL...]     run SQL as root over the socket (arguments joined by spaces; several
#                            statements separated by ";"; none: read SQL from stdin); prints rows
#                            tab-separated without column names
#   mdb_sql_as DIR USER PASSWORD [SQL...]
#                            the same as USER
#   mdb_client DIR [ARGS...] run the mariadb client as root over the socket with ARGS as given
#   mdb_create_site DIR DBNAME USER PASSWORD
#                            create the database and USER@localhost (and USER@127.0.0.1 when
#                            MDB_PORT is set) with cPanel's per-database grants ($MDB_SITE_GRANTS
#                            ON DBNAME.*) and no global privilege
#
# Call mdb_start and mdb_stop in the main shell, not inside $(...), so the cleanup registry sees
# them. Several servers may run at once (one DIR each). The socket path must fit in 107 bytes.

if [[ -n ${_UNDERSTUDY_MARIADB_SH:-} ]]; then
    return 0
fi
_UNDERSTUDY_MARIADB_SH=1

# shellcheck source=tests/helpers/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MDB_SITE_GRANTS='SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, LOCK TABLES,'
MDB_SITE_GRANTS+=' CREATE VIEW, SHOW VIEW, TRIGGER, EVENT, CREATE ROUTINE, ALTER ROUTINE, EXECUTE'

# Servers started, by directory: their pid and the shell ($BASHPID) that started them, so that
# a ( ... ) subshell stops only its own servers when it exits.
declare -gA _MDB_PID=() _MDB_OWNER=()
_MDB_TRAP_SET=

_mdb_abs() {
    mkdir -p -- "$1" && (cd -- "$1" && pwd -P)
}

_mdb_fail() {
    local dir=$1 log=$2
    shift 2
    printf 'mariadb (%s): %s\n' "$dir" "$*" >&2
    if [[ -s $log ]]; then
        printf '  last lines of %s:\n' "$log" >&2
        tail -n 25 "$log" | sed 's/^/    /' >&2
    fi
    return 1
}

mdb_socket() {
    printf '%s/mysql.sock\n' "$1"
}

mdb_start() {
    local dir pid sock deadline
    dir=$(_mdb_abs "$1") || {
        printf 'mariadb: cannot create %s\n' "$1" >&2
        return 1
    }
    sock=$dir/mysql.sock
    if ((${#sock} > 107)); then
        printf 'mariadb: socket path too long for a unix socket (%s bytes): %s\n' \
            "${#sock}" "$sock" >&2
        return 1
    fi
    if [[ -n ${_MDB_PID[$dir]:-} ]] && pid_alive "${_MDB_PID[$dir]}"; then
        printf 'mariadb: a server already runs in %s (pid %s)\n' "$dir" "${_MDB_PID[$dir]}" >&2
        return 1
    fi
    if [[ -s $dir/mariadb.pid ]] && pid_alive "$(cat "$dir/mariadb.pid")"; then
        printf 'mariadb: a server already runs in %s (pid %s, not ours)\n' "$dir" \
            "$(cat "$dir/mariadb.pid")" >&2
        return 1
    fi
    rm -f -- "$dir/mariadb.pid" "$sock"

    local common=(--no-defaults --datadir="$dir/data" --innodb-buffer-pool-size=64M
        --innodb-log-file-size=16M --character-set-server=utf8mb4
        --collation-server=utf8mb4_general_ci --skip-name-resolve)
    if ((EUID == 0)); then
        common+=(--user=root)
    fi
    if [[ ! -d $dir/data/mysql ]]; then
        mkdir -p -- "$dir/data"
        if ! mariadb-install-db "${common[@]}" --auth-root-authentication-method=normal \
            --skip-test-db >"$dir/install.log" 2>&1 </dev/null; then
            _mdb_fail "$dir" "$dir/install.log" "mariadb-install-db failed"
            return 1
        fi
    fi

    local net=(--skip-networking)
    if [[ -n ${MDB_PORT:-} ]]; then
        net=(--port="$MDB_PORT" --bind-address=127.0.0.1)
    fi
    local extra=()
    # shellcheck disable=SC2206 # MDB_OPTS is documented as word-split
    [[ -n ${MDB_OPTS:-} ]] && extra=($MDB_OPTS)

    if [[ $_MDB_TRAP_SET != "$BASHPID" ]]; then
        _MDB_TRAP_SET=$BASHPID
        on_exit mdb_stop_all
    fi
    mariadbd "${common[@]}" --socket="$sock" --pid-file="$dir/mariadb.pid" \
        --log-error="$dir/mariadb.log" "${net[@]}" "${extra[@]}" \
        >>"$dir/mariadb.log" 2>&1 </dev/null &
    pid=$!
    _MDB_PID[$dir]=$pid
    _MDB_OWNER[$dir]=$BASHPID

    deadline=$((SECONDS + ${MDB_START_TIMEOUT:-30}))
    while :; do
        if [[ -S $sock ]] && mdb_sql "$dir" 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        if ! pid_alive "$pid"; then
            wait "$pid" 2>/dev/null
            unset '_MDB_PID[$dir]' '_MDB_OWNER[$dir]'
            _mdb_fail "$dir" "$dir/mariadb.log" "mariadbd exited during startup"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            _lib_stop_pid "$pid" 5
            unset '_MDB_PID[$dir]' '_MDB_OWNER[$dir]'
            _mdb_fail "$dir" "$dir/mariadb.log" \
                "mariadbd did not accept connections within ${MDB_START_TIMEOUT:-30} s"
            return 1
        fi
        sleep 0.1
    done
}

mdb_stop() {
    local dir pid status=0
    dir=$(cd -- "$1" 2>/dev/null && pwd -P) || dir=$1
    pid=${_MDB_PID[$dir]:-}
    if [[ -z $pid && -s $dir/mariadb.pid ]]; then
        pid=$(cat "$dir/mariadb.pid")
    fi
    unset '_MDB_PID[$dir]' '_MDB_OWNER[$dir]'
    if [[ -z $pid ]] || ! pid_alive "$pid"; then
        [[ -n $pid ]] && wait "$pid" 2>/dev/null
        return 0
    fi
    if [[ -n ${_LIB_SIGNAL:-} ]]; then
        # Interrupted: no time for a clean shutdown (a throwaway server recovers anyway).
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return 0
    fi
    _lib_stop_pid "$pid" 30 || status=$?
    if ((status == 124)); then
        printf 'mariadb (%s): did not stop within 30 s, killed\n' "$dir" >&2
        return 1
    fi
    return 0
}

mdb_stop_all() {
    local dir
    for dir in "${!_MDB_PID[@]}"; do
        [[ ${_MDB_OWNER[$dir]:-} == "$BASHPID" ]] && mdb_stop "$dir"
    done
    return 0
}

mdb_client() {
    local dir=$1
    shift
    mariadb --no-defaults --socket="$dir/mysql.sock" --user=root "$@"
}

mdb_sql() {
    local dir=$1
    shift
    if (($#)); then
        mdb_client "$dir" --batch --skip-column-names -e "$*"
    else
        mdb_client "$dir" --batch --skip-column-names
    fi
}

mdb_sql_as() {
    local dir=$1 user=$2 password=$3
    shift 3
    local args=(--no-defaults --socket="$dir/mysql.sock" --user="$user" --password="$password"
        --batch --skip-column-names)
    if (($#)); then
        mariadb "${args[@]}" -e "$*"
    else
        mariadb "${args[@]}"
    fi
}

# _mdb_quote STRING: STRING as a single-quoted SQL literal.
_mdb_quote() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}

mdb_create_site() {
    local dir=$1 db=$2 user=$3 password=$4 hosts=(localhost) host sql pw
    if [[ ! $db =~ ^[A-Za-z0-9_]{1,64}$ || ! $user =~ ^[A-Za-z0-9_]{1,80}$ ]]; then
        printf 'mdb_create_site: database and user names must be [A-Za-z0-9_]+ (got %s, %s)\n' \
            "$db" "$user" >&2
        return 1
    fi
    [[ -n ${MDB_PORT:-} ]] && hosts+=(127.0.0.1)
    pw=$(_mdb_quote "$password")
    sql="CREATE DATABASE \`$db\`;"
    for host in "${hosts[@]}"; do
        sql+=" CREATE USER '$user'@'$host' IDENTIFIED BY $pw;"
        sql+=" GRANT $MDB_SITE_GRANTS ON \`$db\`.* TO '$user'@'$host';"
    done
    mdb_sql "$dir" "$sql"
}
