#!/bin/sh
# mkcommands.sh PROGRAM: prints, in roff, one subsection per command that "PROGRAM --help" lists,
# holding the command's summary and what "PROGRAM COMMAND --help" prints. Run by meson at build
# time (deploy/man/meson.build), so the COMMANDS section of a man page is always the program's
# own help: a command added to a program's table is documented by the next build.
set -eu
prog=$1

# Roff-escapes text lines read on stdin: backslashes, minus signs, and a leading '.' or '\''.
escape() {
    sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

help=$("$prog" --help)
# The lines between "Commands:" and the next blank line: "  NAME   SUMMARY".
printf '%s\n' "$help" | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on' |
    while read -r name summary; do
        printf '.SS "%s"\n' "$(printf '%s' "$name" | escape)"
        printf '%s\n' "$summary" | escape
        printf '.PP\n.RS 4\n.nf\n'
        # A command without --help still gets its section; the test suite reports it.
        out=$(timeout 10 "$prog" "$name" --help 2>&1 </dev/null) || true
        printf '%s\n' "${out:-(no help)}" | escape
        printf '.fi\n.RE\n'
    done
