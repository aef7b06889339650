/* Exclude patterns: see exclude.h for the rules. */
#include "exclude.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

typedef struct pattern {
    char *glob;
    bool negate, dir_only, anchored;
} pattern_t;

struct excl {
    pattern_t *p;
    size_t n;
};

static bool glob_match(const char *p, const char *s);

/* Matches a "[...]" class at p against byte c; sets *end past the class. Returns -1 when p does
 * not start a well-formed class (then '[' is a literal byte). */
static int class_match(const char *p, unsigned char c, const char **end)
{
    const char *q = p + 1;
    bool neg = false, hit = false;

    if (*q == '!' || *q == '^') {
        neg = true;
        q++;
    }
    const char *first = q;
    while (*q && (*q != ']' || q == first)) {
        unsigned char lo, hi;
        if (*q == '\\' && q[1])
            q++;
        lo = hi = (unsigned char)*q;
        if (q[1] == '-' && q[2] && q[2] != ']') {
            hi = (unsigned char)q[2];
            q += 2;
        }
        if (c >= lo && c <= hi)
            hit = true;
        q++;
    }
    if (*q != ']')
        return -1;
    *end = q + 1;
    return hit != neg;
}

static bool star_match(const char *p, const char *s, bool cross_slash)
{
    for (const char *q = s;; q++) {
        if (glob_match(p, q))
            return true;
        if (!*q || (*q == '/' && !cross_slash))
            return false;
    }
}

static bool glob_match(const char *p, const char *s)
{
    for (;;) {
        switch (*p) {
        case '\0':
            return *s == '\0';
        case '*':
            if (p[1] != '*')
                return star_match(p + 1, s, false);
            while (*p == '*')
                p++;
            if (*p == '/') {
                /* "**" + "/": zero or more whole directories. */
                if (glob_match(p + 1, s))
                    return true;
                for (const char *q = s; *q; q++)
                    if (*q == '/' && glob_match(p + 1, q + 1))
                        return true;
                return false;
            }
            return star_match(p, s, true);
        case '?':
            if (!*s || *s == '/')
                return false;
            p++;
            s++;
            break;
        case '[': {
            const char *end;
            int m = *s && *s != '/' ? class_match(p, (unsigned char)*s, &end) : 0;
            if (m == 1) {
                p = end;
                s++;
                break;
            }
            if (m == 0)
                return false;
            if (*s != '[')
                return false;
            p++;
            s++;
            break;
        }
        case '\\':
            if (p[1])
                p++;
            if (*p != *s)
                return false;
            p++;
            s++;
            break;
        default:
            if (*p != *s)
                return false;
            p++;
            s++;
            break;
        }
    }
}

int excl_new(const char *const *patterns, size_t n, excl_t **ret)
{
    excl_t *x = calloc(1, sizeof(*x));
    if (!x || (n && !(x->p = calloc(n, sizeof(*x->p))))) {
        free(x);
        return UV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *src = patterns[i];
        pattern_t pt = {0};
        size_t len;

        if (!src || !*src || *src == '#')
            continue;
        if (*src == '!') {
            pt.negate = true;
            src++;
        } else if (src[0] == '\\' && (src[1] == '!' || src[1] == '#')) {
            src++;
        }
        len = strlen(src);
        while (len && src[len - 1] == ' ' && !(len >= 2 && src[len - 2] == '\\'))
            len--;
        if (len && src[len - 1] == '/') {
            pt.dir_only = true;
            while (len && src[len - 1] == '/')
                len--;
        }
        if (len && *src == '/') {
            pt.anchored = true;
            while (len && *src == '/')
                src++, len--;
        }
        if (!len)
            continue;
        if (memchr(src, '/', len))
            pt.anchored = true;
        pt.glob = strndup(src, len);
        if (!pt.glob) {
            excl_free(x);
            return UV_ENOMEM;
        }
        x->p[x->n++] = pt;
    }
    *ret = x;
    return 0;
}

bool excl_match(const excl_t *x, const char *path, bool is_dir)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    bool excluded = false;

    for (size_t i = 0; i < x->n; i++) {
        const pattern_t *pt = &x->p[i];
        if (pt->dir_only && !is_dir)
            continue;
        if (pt->negate != excluded)
            continue; /* cannot change the outcome */
        if (glob_match(pt->glob, pt->anchored ? path : base))
            excluded = !pt->negate;
    }
    return excluded;
}

void excl_free(excl_t *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n; i++)
        free(x->p[i].glob);
    free(x->p);
    free(x);
}
