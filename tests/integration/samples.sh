#!/usr/bin/env bash
# The commented sample configurations in deploy/ document every key of the schemas in
# agent/config.c and controller/config.c, each in its own section, and no key the schemas do not
# have. A key counts when set ("key = value") or shown commented out ("# key = value").
set -u
source "$(dirname "$0")/../helpers/lib.sh"

# schema_keys FILE: "section key" for each {"section", "key", ...} entry of the *_schema[] table.
schema_keys() {
    awk '/_schema\[\] = \{/ { on = 1; next } on && /^\};/ { on = 0 } on' "$1" |
        grep -oE '\{"[a-z0-9_]+", *"[a-z0-9_]+"' |
        sed -E 's/^\{"([a-z0-9_]+)", *"([a-z0-9_]+)"$/\1 \2/' | sort -u
}

# sample_keys FILE: "section key" for each key set or shown commented out in an INI sample.
sample_keys() {
    awk '
        /^[ \t]*\[[a-z0-9_]+\][ \t]*$/ { sec = $0; gsub(/[][ \t]/, "", sec); next }
        {
            line = $0
            sub(/^[ \t]*[#;][ \t]*/, "", line)
            if (sec != "" && line ~ /^[a-z0-9_]+[ \t]*=/) {
                sub(/[ \t]*=.*/, "", line)
                print sec, line
            }
        }' "$1" | sort -u
}

# compare NAME CONFIG_C SAMPLE
compare() {
    local name=$1 schema sample missing extra
    schema=$(schema_keys "$UNDERSTUDY_SOURCE/$2")
    sample=$(sample_keys "$UNDERSTUDY_SOURCE/$3")
    [[ -n $schema ]] || die "no schema entries found in $2 (has its table's layout changed?)"
    missing=$(comm -23 <(printf '%s\n' "$schema") <(printf '%s\n' "$sample"))
    extra=$(comm -13 <(printf '%s\n' "$schema") <(printf '%s\n' "$sample"))
    if [[ -z $missing ]]; then
        pass "$name: all $(wc -l <<<"$schema") schema keys documented in $3"
    else
        fail "$name: keys of $2 missing from $3 (as [section] key):" $'\n'"$missing"
    fi
    if [[ -z $extra ]]; then
        pass "$name: $3 has no key unknown to $2"
    else
        fail "$name: keys in $3 that $2 does not know (as [section] key):" $'\n'"$extra"
    fi
}

compare agent agent/config.c deploy/agent.conf.sample
compare controller controller/config.c deploy/controller.conf.sample

# The agent's sample also loads with the real parser: values of the right type and every
# required key. ('cron' loads the config and prints a line; it needs nothing else.)
if out=$("$UNDERSTUDY_AGENT" cron --config "$UNDERSTUDY_SOURCE/deploy/agent.conf.sample" \
    --binary /bin/sh 2>&1); then
    pass "agent.conf.sample loads"
else
    fail "agent.conf.sample loads" "$out"
fi
