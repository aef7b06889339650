/* Adding a value to an existing INI configuration file in place, keeping everything else (the
 * comments of a template written by init, the order of sections) byte for byte.
 *
 * The file is compiled into each program's core library (agent/meson.build,
 * controller/meson.build) for their `trust` commands. */
#ifndef UNDERSTUDY_CFGEDIT_H
#define UNDERSTUDY_CFGEDIT_H

#include <stdbool.h>
#include <stddef.h>

/* Tells whether an existing value of the key is the same as the one being added (e.g. two
 * spellings of one fingerprint). */
typedef bool (*cfgedit_same_fn)(const char *existing, const char *value);

/* Adds "key = value" to [section] of the INI file at path, unless an uncommented line of that
 * section already holds a value that same() (strcmp when NULL) calls equal. The line goes right
 * after a commented-out placeholder of the key ("#key =", "; key = ...") in the first [section],
 * else after the last line of that section's content; a missing section is appended. The file is
 * rewritten through a temporary file in the same directory renamed over it, keeping its mode
 * (and its owner when we may). value must be one line without blanks at either end.
 *
 * Returns 0 and sets *ret_added (false when the value was already there), or a negative errno
 * (UV_EINVAL for a value that cannot be written, UV_EFBIG for a file over 1 MiB). */
int cfgedit_add_value(const char *path, const char *section, const char *key, const char *value,
                      cfgedit_same_fn same, bool *ret_added);

#endif
