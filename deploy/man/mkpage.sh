#!/bin/sh
# mkpage.sh OUTPUT VERSION TEMPLATE [FRAGMENT...]: writes TEMPLATE to OUTPUT with each line that
# reads exactly "@NAME@" replaced by the content of the FRAGMENT whose file name is NAME, and
# "@VERSION@" anywhere replaced by VERSION. A placeholder without its fragment is an error, so a
# template cannot silently lose a generated section.
set -eu
out=$1 version=$2 template=$3
shift 3
awk -v version="$version" '
    BEGIN {
        # The fragments: their lines under their base names; then only the template is read.
        for (i = 1; i < ARGC - 1; i++) {
            name = ARGV[i]
            sub(/.*\//, "", name)
            seen[name] = 1
            text[name] = ""
            while ((r = (getline line < ARGV[i])) > 0)
                text[name] = text[name] line "\n"
            if (r < 0) {
                printf "mkpage: cannot read %s\n", ARGV[i] > "/dev/stderr"
                exit 1
            }
            close(ARGV[i])
            ARGV[i] = ""
        }
    }
    /^@[A-Za-z0-9_.-]+@$/ {
        name = substr($0, 2, length($0) - 2)
        if (!(name in seen)) {
            printf "mkpage: %s: no fragment for %s\n", FILENAME, $0 > "/dev/stderr"
            exit 1
        }
        printf "%s", text[name]
        next
    }
    { gsub(/@VERSION@/, version); print }
' "$@" "$template" >"$out.tmp" || { rm -f "$out.tmp"; exit 1; }
mv -f "$out.tmp" "$out"
