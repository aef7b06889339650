#!/usr/bin/env bash
# The man pages built in deploy/man/ render without a groff warning, document every command each
# program's --help lists, every key of both configuration schemas and every exit code of
# common/err.h, and are installed by meson. The expectations come from the programs and the
# source tables, not from deploy/man/mkman.c, which generated the pages.
set -u
source "$(dirname "$0")/../helpers/lib.sh"

command -v man >/dev/null || skip "man not installed (man-db, see deploy/packages.txt)"
MAN_DIR=$UNDERSTUDY_BUILD/deploy/man
AGENT_PAGE=$MAN_DIR/understudy-agent.1
CONTROLLER_PAGE=$MAN_DIR/understudy-controller.8
CONF_PAGE=$MAN_DIR/understudy.conf.5
tmpdir

# render PAGE: groff's warnings (all of them: man --warnings is groff -ww) for an 80-column ASCII
# terminal into $TEST_TMP/NAME.warnings, and the plain text into $TEST_TMP/NAME.txt, rendered
# 1000 columns wide so that no line the checks look for is wrapped or hyphenated.
render() {
    local name
    name=$(basename "$1")
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E ascii -l "$1" 2>"$TEST_TMP/$name.warnings" \
        >/dev/null
    LC_ALL=C.UTF-8 MANWIDTH=1000 man -E ascii -l "$1" 2>/dev/null | col -bx >"$TEST_TMP/$name.txt"
}

for page in "$AGENT_PAGE" "$CONTROLLER_PAGE" "$CONF_PAGE"; do
    name=$(basename "$page")
    if [[ ! -s $page ]]; then
        fail "$name built" "missing: $page (run ninja -C $UNDERSTUDY_BUILD)"
        continue
    fi
    render "$page"
    if [[ -s $TEST_TMP/$name.warnings ]]; then
        fail "$name renders without warnings" "$(cat "$TEST_TMP/$name.warnings")"
    elif [[ ! -s $TEST_TMP/$name.txt ]]; then
        fail "$name renders" "no output"
    else
        pass "$name renders without warnings"
    fi
    grep -qE '^@[A-Za-z0-9_.-]+@$|@VERSION@' "$page" && fail "$name: a placeholder was left" \
        "$(grep -nE '^@[A-Za-z0-9_.-]+@$|@VERSION@' "$page")"
done
[[ $(failures) == 0 ]] || exit 1

# section_of TEXT HEADING: the lines of a rendered page from the heading line to the next one.
section_of() {
    awk -v h="$2" '/^[A-Z]/ { on = ($0 == h); next } on' "$1"
}

# ---- commands: each command --help lists is a subsection of COMMANDS, with its own --help -----
check_commands() { # check_commands PROGRAM PAGE
    local prog=$1 page name cmds missing=() nohelp=() n=0
    page=$TEST_TMP/$(basename "$2").txt
    name=$(basename "$prog")
    cmds=$("$prog" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on { print $1 }')
    [[ -n $cmds ]] || { fail "$name --help lists commands"; return; }
    section_of "$page" COMMANDS >"$TEST_TMP/$name.commands"
    for c in $cmds; do
        n=$((n + 1))
        grep -qx "   $c" "$TEST_TMP/$name.commands" || missing+=("$c")
        timeout 10 "$prog" "$c" --help >/dev/null 2>&1 </dev/null || nohelp+=("$c")
    done
    if ((${#missing[@]})); then
        fail "$name: every command of --help in its page" "missing: ${missing[*]}"
    else
        pass "$name: all $n commands of --help in COMMANDS"
    fi
    if ((${#nohelp[@]})); then
        fail "$name: every command has --help (exit 0)" "not: ${nohelp[*]}"
    else
        pass "$name: every command answers --help"
    fi
    # The summary line of each command is the one --help shows.
    local bad=()
    while read -r c summary; do
        grep -qxF "       $summary" "$TEST_TMP/$name.commands" || bad+=("$c")
    done < <("$prog" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on')
    ((${#bad[@]} == 0)) && pass "$name: command summaries match --help" ||
        fail "$name: command summaries match --help" "differ: ${bad[*]}"
}
check_commands "$UNDERSTUDY_AGENT" "$AGENT_PAGE"
check_commands "$UNDERSTUDY_CONTROLLER" "$CONTROLLER_PAGE"

# ---- configuration keys: every {"section", "key", ...} of both schema tables ------------------
# schema_keys FILE: "section key" for each entry of the *_schema[] table of a config.c.
schema_keys() {
    awk '/_schema\[\] = \{/ { on = 1; next } on && /^\};/ { on = 0 } on' "$1" |
        grep -oE '\{"[a-z0-9_]+", *"[a-z0-9_]+"' |
        sed -E 's/^\{"([a-z0-9_]+)", *"([a-z0-9_]+)"$/\1 \2/' | sort -u
}
# page_keys HEADING: "section key" for each "key = TYPE" under a [section] in that part of
# understudy.conf(5).
page_keys() {
    section_of "$TEST_TMP/understudy.conf.5.txt" "$1" | awk '
        /^   \[[a-z0-9_]+\]$/ { sec = $1; gsub(/[][]/, "", sec); next }
        sec != "" && /^       [a-z0-9_]+ = [A-Z:]+$/ { print sec, $1 }' | sort -u
}
check_keys() { # check_keys NAME CONFIG_C HEADING
    local schema page missing extra
    schema=$(schema_keys "$UNDERSTUDY_SOURCE/$2")
    page=$(page_keys "$3")
    [[ -n $schema ]] || { fail "$1: schema entries found in $2"; return; }
    missing=$(comm -23 <(printf '%s\n' "$schema") <(printf '%s\n' "$page"))
    extra=$(comm -13 <(printf '%s\n' "$schema") <(printf '%s\n' "$page"))
    if [[ -z $missing && -z $extra ]]; then
        pass "$1: all $(wc -l <<<"$schema") keys of $2 in understudy.conf(5) $3"
    else
        fail "$1: keys of $2 in understudy.conf(5) $3" \
            "missing: ${missing//$'\n'/, }; not in the schema: ${extra//$'\n'/, }"
    fi
}
check_keys agent agent/config.c AGENT.CONF
check_keys controller controller/config.c CONTROLLER.CONF

# ---- exit codes: 0, 1 and every code of ERR_MAP, with its message -----------------------------
check_exit_codes() { # check_exit_codes PAGE
    local name text missing=() code msg
    name=$(basename "$1")
    text=$(section_of "$TEST_TMP/$name.txt" "EXIT STATUS" | tr -s ' \n' '  ')
    for code in 0 1; do
        [[ $text == *" $code "* ]] || missing+=("$code")
    done
    while IFS=$'\t' read -r code msg; do
        [[ $text == *" $code "*"$msg"* ]] || missing+=("$code ($msg)")
    done < <(sed -nE 's/^ *X\([A-Z_]+, *([0-9]+), *"([^"]*)"\).*/\1\t\2/p' \
        "$UNDERSTUDY_SOURCE/common/err.h")
    if ((${#missing[@]})); then
        fail "$name: every exit code of common/err.h" "missing: ${missing[*]}"
    else
        pass "$name: every exit code of common/err.h in EXIT STATUS"
    fi
}
[[ $(grep -cE '^ *X\([A-Z_]+, *[0-9]+,' "$UNDERSTUDY_SOURCE/common/err.h") -gt 10 ]] ||
    fail "ERR_MAP rows found in common/err.h"
check_exit_codes "$AGENT_PAGE"
check_exit_codes "$CONTROLLER_PAGE"

# ---- installed by meson -----------------------------------------------------------------------
if meson install -C "$UNDERSTUDY_BUILD" --no-rebuild --destdir "$TEST_TMP/dest" \
    >"$TEST_TMP/install.log" 2>&1; then
    missing=()
    for want in man1/understudy-agent.1 man8/understudy-controller.8 man5/understudy.conf.5; do
        found=$(find "$TEST_TMP/dest" -path "*/man/$want" | head -n 1)
        if [[ -z $found ]]; then
            missing+=("$want")
        elif ! cmp -s "$found" "$MAN_DIR/$(basename "$want")"; then
            missing+=("$want (differs from the build's)")
        fi
    done
    ((${#missing[@]} == 0)) && pass "meson install puts the three pages under share/man" ||
        fail "meson install installs the man pages" "missing: ${missing[*]}"
else
    fail "meson install --destdir" "$(tail -n 20 "$TEST_TMP/install.log")"
fi
exit 0
