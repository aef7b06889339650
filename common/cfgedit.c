#include "cfgedit.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define CFGEDIT_MAX_FILE (1024 * 1024)

/* Reads the whole file into a NUL-terminated malloc'ed buffer. */
static int read_file(int fd, char **ret_text, size_t *ret_len)
{
    size_t len = 0, cap = 4096;
    char *text = malloc(cap + 1);
    if (!text)
        return UV_ENOMEM;
    for (;;) {
        if (len == cap) {
            if (cap >= CFGEDIT_MAX_FILE) {
                free(text);
                return UV_EFBIG;
            }
            cap *= 2;
            char *bigger = realloc(text, cap + 1);
            if (!bigger) {
                free(text);
                return UV_ENOMEM;
            }
            text = bigger;
        }
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = -errno;
            free(text);
            return r;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > CFGEDIT_MAX_FILE) {
        free(text);
        return UV_EFBIG;
    }
    text[len] = '\0';
    *ret_text = text;
    *ret_len = len;
    return 0;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Trims [*b, *e) of blanks at both ends. */
static void trim(const char **b, const char **e)
{
    while (*b < *e && is_blank(**b))
        (*b)++;
    while (*e > *b && is_blank((*e)[-1]))
        (*e)--;
}

/* If [b, e) is "[name]", returns true and the name's bounds. */
static bool section_header(const char *b, const char *e, const char **ret_nb, const char **ret_ne)
{
    trim(&b, &e);
    if (e - b < 2 || *b != '[' || e[-1] != ']')
        return false;
    b++;
    e--;
    trim(&b, &e);
    *ret_nb = b;
    *ret_ne = e;
    return true;
}

static bool span_is(const char *b, const char *e, const char *s)
{
    return (size_t)(e - b) == strlen(s) && !memcmp(b, s, (size_t)(e - b));
}

/* If [b, e) is "key = value" for our key, returns true and the value's bounds. */
static bool key_line(const char *b, const char *e, const char *key, const char **ret_vb,
                     const char **ret_ve)
{
    const char *eq = memchr(b, '=', (size_t)(e - b));
    if (!eq)
        return false;
    const char *kb = b, *ke = eq, *vb = eq + 1, *ve = e;
    trim(&kb, &ke);
    trim(&vb, &ve);
    if (!span_is(kb, ke, key))
        return false;
    *ret_vb = vb;
    *ret_ve = ve;
    return true;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes head + line + tail to a temporary file beside path and renames it over path, with the
 * mode (and owner, when allowed) of st. */
static int replace_file(const char *path, const struct stat *st, const char *head, size_t head_len,
                        const char *line, const char *tail, size_t tail_len)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
        return UV_ENAMETOOLONG;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (fchmod(fd, st->st_mode & 07777) < 0)
        r = -errno;
    /* Root editing a file the service user owns must leave it to that user. */
    if (r == 0 && (st->st_uid != geteuid() || st->st_gid != getegid()) &&
        fchown(fd, st->st_uid, st->st_gid) < 0 && errno != EPERM)
        r = -errno;
    if (r == 0)
        r = write_all(fd, head, head_len);
    if (r == 0)
        r = write_all(fd, line, strlen(line));
    if (r == 0)
        r = write_all(fd, tail, tail_len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    /* Make the rename itself durable. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

int cfgedit_add_value(const char *path, const char *section, const char *key, const char *value,
                      cfgedit_same_fn same, bool *ret_added)
{
    size_t vlen = strlen(value);
    if (!vlen || strpbrk(value, "\r\n") || is_blank(value[0]) || is_blank(value[vlen - 1]))
        return UV_EINVAL;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return UV_EINVAL;
    }
    char *text = NULL;
    size_t len = 0;
    int r = read_file(fd, &text, &len);
    close(fd);
    if (r < 0)
        return r;

    /* Offsets into text: where a new line would go. */
    size_t after_placeholder = 0, after_value = 0, after_content = 0;
    bool in_section = false, seen_section = false, done_first = false;
    const char *end = text + len;
    for (const char *b = text; b < end;) {
        const char *nl = memchr(b, '\n', (size_t)(end - b));
        const char *e = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        const char *tb = b, *te = e, *nb, *ne, *vb, *ve;
        trim(&tb, &te);
        if (section_header(tb, te, &nb, &ne)) {
            if (in_section)
                done_first = true;
            in_section = span_is(nb, ne, section);
            if (in_section && !seen_section) {
                seen_section = true;
                after_content = (size_t)(next - text);
            }
        } else if (in_section && tb < te) {
            bool comment = *tb == '#' || *tb == ';';
            if (comment) {
                const char *cb = tb + 1;
                if (!done_first && key_line(cb, te, key, &vb, &ve) && !after_placeholder)
                    after_placeholder = (size_t)(next - text);
            } else if (key_line(tb, te, key, &vb, &ve)) {
                char *existing = strndup(vb, (size_t)(ve - vb));
                if (!existing) {
                    free(text);
                    return UV_ENOMEM;
                }
                bool equal = same ? same(existing, value) : !strcmp(existing, value);
                free(existing);
                if (equal) {
                    free(text);
                    *ret_added = false;
                    return 0;
                }
                if (!done_first)
                    after_value = (size_t)(next - text);
            }
            if (!done_first)
                after_content = (size_t)(next - text);
        }
        b = next;
    }

    char *line = NULL;
    size_t at;
    int n;
    if (seen_section) {
        at = after_value ? after_value : after_placeholder ? after_placeholder : after_content;
        /* The section's last line may lack its newline (end of file). */
        bool need_nl = at > 0 && text[at - 1] != '\n';
        n = asprintf(&line, "%s%s = %s\n", need_nl ? "\n" : "", key, value);
    } else {
        at = len;
        n = asprintf(&line, "%s\n[%s]\n%s = %s\n", len && text[len - 1] != '\n' ? "\n" : "",
                     section, key, value);
    }
    if (n < 0) {
        free(text);
        return UV_ENOMEM;
    }
    r = replace_file(path, &st, text, at, line, text + at, len - at);
    free(line);
    free(text);
    if (r < 0)
        return r;
    *ret_added = true;
    return 0;
}
