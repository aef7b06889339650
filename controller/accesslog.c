/* The access-log follower of the write guard. See accesslog.h. */
#include "accesslog.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "err.h"

#define AL_MAX_TOKENS 64
#define AL_READ_CHUNK (64 * 1024)

static const char combined_format[] = "$remote_addr $remote_ident $remote_user [$time_local] "
                                      "\"$request\" $status $body_bytes_sent \"$http_referer\" "
                                      "\"$http_user_agent\"";

typedef enum var {
    VAR_OTHER,
    VAR_REMOTE_ADDR,
    VAR_TIME_LOCAL,
    VAR_TIME_ISO8601,
    VAR_REQUEST,
    VAR_REQUEST_METHOD,
    VAR_REQUEST_URI,
    VAR_STATUS,
    VAR_CF_CONNECTING_IP,
    VAR_COUNT_
} var_t;

static const char *const var_names[VAR_COUNT_] = {
    [VAR_REMOTE_ADDR] = "remote_addr",
    [VAR_TIME_LOCAL] = "time_local",
    [VAR_TIME_ISO8601] = "time_iso8601",
    [VAR_REQUEST] = "request",
    [VAR_REQUEST_METHOD] = "request_method",
    [VAR_REQUEST_URI] = "request_uri",
    [VAR_STATUS] = "status",
    [VAR_CF_CONNECTING_IP] = "http_cf_connecting_ip",
};

typedef struct token {
    bool is_var;
    var_t var;
    char *text; /* literal */
    size_t len;
} token_t;

typedef struct rule {
    char method[16]; /* "*" for any */
    char *prefix;
} rule_t;

typedef struct al_file {
    char *path;
    const char *base; /* last component, for evidence */
    int fd;
    dev_t dev;
    ino_t ino;
    uint64_t off;
    char *line;
    size_t line_len;
    bool skipping;
} al_file_t;

struct accesslog {
    token_t tokens[AL_MAX_TOKENS];
    size_t n_tokens;
    rule_t rules[AL_MAX_RULES + 1];
    size_t n_rules;
    fw_list_t trusted;
    al_file_t *files;
    size_t n_files;
    time_t since;
    size_t budget; /* bytes read per file per poll */
    char error[512];
    char chunk[AL_READ_CHUNK];
};

/* ---- addresses --------------------------------------------------------------------------- */

bool accesslog_addr_in(const fw_list_t *list, const char *addr)
{
    uint8_t a[16];
    int family = AF_INET;

    if (!list || !addr)
        return false;
    if (inet_pton(AF_INET, addr, a) != 1) {
        if (inet_pton(AF_INET6, addr, a) != 1)
            return false;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!memcmp(a, mapped, 12))
            memmove(a, a + 12, 4);
        else
            family = AF_INET6;
    }
    for (size_t i = 0; i < list->n; i++) {
        const fw_cidr_t *c = &list->items[i];
        if (c->family != family)
            continue;
        unsigned bytes = c->prefix / 8, bits = c->prefix % 8;
        if (memcmp(a, c->addr, bytes) != 0)
            continue;
        if (bits && ((a[bytes] ^ c->addr[bytes]) & (uint8_t)(0xff << (8 - bits))))
            continue;
        return true;
    }
    return false;
}

/* ---- times ------------------------------------------------------------------------------- */

static int parse_digits(const char *p, size_t n, int *ret)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return UV_EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    *ret = v;
    return 0;
}

/* Applies a "+hhmm" / "-hhmm" / "+hh:mm" offset: local = UTC + offset. */
static int apply_offset(const char *p, size_t n, time_t *t)
{
    int hh, mm;
    if (n < 5 || (p[0] != '+' && p[0] != '-'))
        return UV_EINVAL;
    if (parse_digits(p + 1, 2, &hh) < 0)
        return UV_EINVAL;
    size_t m = p[3] == ':' ? 4 : 3;
    if (n != m + 2 || parse_digits(p + m, 2, &mm) < 0 || hh > 23 || mm > 59)
        return UV_EINVAL;
    long off = (hh * 60L + mm) * 60L;
    *t -= p[0] == '+' ? off : -off;
    return 0;
}

static int finish_time(struct tm *tm, const char *zone, size_t zone_len, time_t *ret)
{
    if (tm->tm_mday < 1 || tm->tm_mday > 31 || tm->tm_hour > 23 || tm->tm_min > 59 ||
        tm->tm_sec > 60)
        return UV_EINVAL;
    time_t t = timegm(tm);
    if (t == (time_t)-1)
        return UV_EINVAL;
    if (zone_len == 1 && zone[0] == 'Z') {
        *ret = t;
        return 0;
    }
    if (apply_offset(zone, zone_len, &t) < 0)
        return UV_EINVAL;
    *ret = t;
    return 0;
}

int accesslog_parse_time_local(const char *text, size_t len, time_t *ret)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm = {0};
    int y;

    /* 26/Nov/2026:01:02:03 +0100 */
    if (len != 26 || text[2] != '/' || text[6] != '/' || text[11] != ':' || text[14] != ':' ||
        text[17] != ':' || text[20] != ' ')
        return UV_EINVAL;
    if (parse_digits(text, 2, &tm.tm_mday) < 0 || parse_digits(text + 7, 4, &y) < 0 ||
        parse_digits(text + 12, 2, &tm.tm_hour) < 0 || parse_digits(text + 15, 2, &tm.tm_min) < 0 ||
        parse_digits(text + 18, 2, &tm.tm_sec) < 0)
        return UV_EINVAL;
    tm.tm_mon = -1;
    for (int m = 0; m < 12; m++)
        if (!memcmp(text + 3, months + 3 * m, 3))
            tm.tm_mon = m;
    if (tm.tm_mon < 0)
        return UV_EINVAL;
    tm.tm_year = y - 1900;
    return finish_time(&tm, text + 21, 5, ret);
}

/* 2026-11-26T01:02:03+00:00 */
static int parse_time_iso8601(const char *text, size_t len, time_t *ret)
{
    struct tm tm = {0};
    int y, mon;

    if (len < 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
        text[16] != ':')
        return UV_EINVAL;
    if (parse_digits(text, 4, &y) < 0 || parse_digits(text + 5, 2, &mon) < 0 ||
        parse_digits(text + 8, 2, &tm.tm_mday) < 0 || parse_digits(text + 11, 2, &tm.tm_hour) < 0 ||
        parse_digits(text + 14, 2, &tm.tm_min) < 0 || parse_digits(text + 17, 2, &tm.tm_sec) < 0 ||
        mon < 1 || mon > 12)
        return UV_EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    return finish_time(&tm, text + 19, len - 19, ret);
}

/* ---- configuration ----------------------------------------------------------------------- */

static int compile_format(accesslog_t *al, const char *fmt, char *err, size_t err_size)
{
    const char *p = fmt;

    while (*p) {
        if (al->n_tokens == AL_MAX_TOKENS) {
            snprintf(err, err_size, "log format has more than %d fields", AL_MAX_TOKENS / 2);
            return ERR_CONFIG;
        }
        token_t *t = &al->tokens[al->n_tokens];
        if (*p == '$') {
            const char *s = ++p;
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
            if (p == s) {
                snprintf(err, err_size, "log format: '$' without a variable name");
                return ERR_CONFIG;
            }
            if (al->n_tokens && al->tokens[al->n_tokens - 1].is_var) {
                snprintf(err, err_size,
                         "log format: $%.*s follows another variable without text between them",
                         (int)(p - s), s);
                return ERR_CONFIG;
            }
            t->is_var = true;
            t->var = VAR_OTHER;
            for (int v = 1; v < VAR_COUNT_; v++)
                if (strlen(var_names[v]) == (size_t)(p - s) && !memcmp(var_names[v], s, p - s))
                    t->var = (var_t)v;
        } else {
            const char *s = p;
            while (*p && *p != '$')
                p++;
            t->len = (size_t)(p - s);
            t->text = strndup(s, t->len);
            if (!t->text)
                return UV_ENOMEM;
        }
        al->n_tokens++;
    }
    bool have[VAR_COUNT_] = {0};
    for (size_t i = 0; i < al->n_tokens; i++)
        if (al->tokens[i].is_var)
            have[al->tokens[i].var] = true;
    if (!have[VAR_STATUS] ||
        !(have[VAR_REQUEST] || (have[VAR_REQUEST_METHOD] && have[VAR_REQUEST_URI]))) {
        snprintf(err, err_size,
                 "log format needs $status and $request (or $request_method and $request_uri)");
        return ERR_CONFIG;
    }
    return 0;
}

static int add_rule(accesslog_t *al, const char *text, char *err, size_t err_size)
{
    char method[16], path[1024];
    char extra;

    if (al->n_rules > AL_MAX_RULES) {
        snprintf(err, err_size, "more than %d ignore rules", AL_MAX_RULES);
        return ERR_CONFIG;
    }
    if (sscanf(text, "%15s %1023s %c", method, path, &extra) != 2 || path[0] != '/') {
        snprintf(err, err_size, "ignore rule \"%.200s\": expected METHOD /PATH-PREFIX", text);
        return ERR_CONFIG;
    }
    for (char *m = method; *m; m++) {
        if (!(isupper((unsigned char)*m) || (*m == '*' && m == method && !m[1]))) {
            snprintf(err, err_size,
                     "ignore rule \"%.200s\": the method must be upper case (POST) or '*'", text);
            return ERR_CONFIG;
        }
    }
    rule_t *r = &al->rules[al->n_rules];
    snprintf(r->method, sizeof(r->method), "%s", method);
    r->prefix = strdup(path);
    if (!r->prefix)
        return UV_ENOMEM;
    al->n_rules++;
    return 0;
}

int accesslog_new(const al_opts_t *opts, accesslog_t **ret, char *err, size_t err_size)
{
    accesslog_t *al = calloc(1, sizeof(*al));
    const char *fmt =
        opts->format && strcmp(opts->format, "combined") ? opts->format : combined_format;
    int r;

    if (!al)
        return UV_ENOMEM;
    al->budget = AL_POLL_BUDGET;
    r = compile_format(al, fmt, err, err_size);
    if (r == 0)
        r = add_rule(al, "POST /wp-cron.php", err, err_size);
    for (size_t i = 0; i < opts->n_ignore && r == 0; i++)
        r = add_rule(al, opts->ignore[i], err, err_size);
    for (size_t i = 0; opts->trusted && i < opts->trusted->n && r == 0; i++)
        r = fw_list_add(&al->trusted, &opts->trusted->items[i]);
    if (r == 0 && opts->n_paths) {
        al->files = calloc(opts->n_paths, sizeof(*al->files));
        r = al->files ? 0 : UV_ENOMEM;
    }
    for (size_t i = 0; i < opts->n_paths && r == 0; i++) {
        al_file_t *f = &al->files[al->n_files++];
        f->fd = -1;
        f->path = strdup(opts->paths[i]);
        f->line = malloc(AL_MAX_LINE);
        if (!f->path || !f->line) {
            r = UV_ENOMEM;
            break;
        }
        const char *slash = strrchr(f->path, '/');
        f->base = slash ? slash + 1 : f->path;
    }
    if (r < 0) {
        if (r == UV_ENOMEM)
            snprintf(err, err_size, "out of memory");
        accesslog_free(al);
        return r;
    }
    *ret = al;
    return 0;
}

void accesslog_free(accesslog_t *al)
{
    if (!al)
        return;
    for (size_t i = 0; i < al->n_tokens; i++)
        free(al->tokens[i].text);
    for (size_t i = 0; i < al->n_rules; i++)
        free(al->rules[i].prefix);
    for (size_t i = 0; i < al->n_files; i++) {
        if (al->files[i].fd >= 0)
            close(al->files[i].fd);
        free(al->files[i].path);
        free(al->files[i].line);
    }
    free(al->files);
    free(al->trusted.items);
    free(al);
}

void accesslog_set_since(accesslog_t *al, time_t since)
{
    al->since = since;
}

void accesslog_set_budget(accesslog_t *al, size_t bytes)
{
    al->budget = bytes ? bytes : AL_POLL_BUDGET;
}

const char *accesslog_last_error(const accesslog_t *al)
{
    return al->error;
}

/* ---- one line ---------------------------------------------------------------------------- */

typedef struct field {
    const char *p;
    size_t len;
} field_t;

/* Finds lit in [p, end), skipping backslash-escaped bytes. Returns its position or NULL. */
static const char *find_literal(const char *p, const char *end, const char *lit, size_t len)
{
    while (p + len <= end) {
        if (*p == '\\') {
            p += 2;
            continue;
        }
        if (!memcmp(p, lit, len))
            return p;
        p++;
    }
    return NULL;
}

static int split_fields(const accesslog_t *al, const char *line, size_t len, field_t *fields)
{
    const char *p = line, *end = line + len;

    for (size_t i = 0; i < al->n_tokens; i++) {
        const token_t *t = &al->tokens[i];
        if (!t->is_var) {
            if ((size_t)(end - p) < t->len || memcmp(p, t->text, t->len))
                return UV_EINVAL;
            p += t->len;
            continue;
        }
        const char *stop = end;
        if (i + 1 < al->n_tokens) {
            const token_t *next = &al->tokens[i + 1];
            stop = find_literal(p, end, next->text, next->len);
            if (!stop)
                return UV_EINVAL;
        }
        if (t->var != VAR_OTHER) {
            fields[t->var].p = p;
            fields[t->var].len = (size_t)(stop - p);
        }
        p = stop;
    }
    return 0;
}

static bool is_write_method(const field_t *m)
{
    static const char *const methods[] = {"POST", "PUT", "PATCH", "DELETE"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (m->len == strlen(methods[i]) && !memcmp(m->p, methods[i], m->len))
            return true;
    return false;
}

static bool field_eq(const field_t *f, const char *s)
{
    return f->len == strlen(s) && !memcmp(f->p, s, f->len);
}

/* Whether a query string holds the parameter name (followed by '='). */
static bool query_has(const field_t *q, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + n <= q->len; i++)
        if ((i == 0 || q->p[i - 1] == '&') && !memcmp(q->p + i, name, n))
            return true;
    return false;
}

/* Whether an ignore rule matches. A path with percent-escapes, "//" or dot segments is never
 * ignored (it could be a different script in disguise); a prefix matches whole segments. */
static bool ignored(const accesslog_t *al, const field_t *method, const field_t *path)
{
    for (size_t i = 0; i < path->len; i++)
        if (path->p[i] == '%' || (path->p[i] == '/' && i + 1 < path->len &&
                                  (path->p[i + 1] == '/' || path->p[i + 1] == '.')))
            return false;
    for (size_t i = 0; i < al->n_rules; i++) {
        const rule_t *r = &al->rules[i];
        size_t n = strlen(r->prefix);
        if (strcmp(r->method, "*") && !field_eq(method, r->method))
            continue;
        if (path->len < n || memcmp(path->p, r->prefix, n))
            continue;
        if (path->len == n || r->prefix[n - 1] == '/' || path->p[n] == '/')
            return true;
    }
    return false;
}

/* Copies a field for evidence: at most max bytes, non-printables as '?'. */
static void put_field(char *out, size_t size, const field_t *f, size_t max)
{
    size_t n = f->len < max ? f->len : max;
    if (n >= size)
        n = size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = isprint((unsigned char)f->p[i]) ? f->p[i] : '?';
    out[n] = '\0';
    if (f->len > n && n >= 3)
        memcpy(out + n - 3, "...", 3);
}

int accesslog_match_line(accesslog_t *al, const char *line, size_t len, const char *file,
                         al_hit_t *ret_hit)
{
    field_t f[VAR_COUNT_] = {{0}};
    field_t method = {0}, target = {0}, path, query = {0};
    time_t t = 0;
    bool have_time = false;
    int status;

    if (len && line[len - 1] == '\r')
        len--;
    if (split_fields(al, line, len, f) < 0)
        return UV_EINVAL;

    /* Method and target. */
    if (f[VAR_REQUEST].p) {
        const char *p = f[VAR_REQUEST].p, *end = p + f[VAR_REQUEST].len;
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp)
            return 0; /* "-" or garbage: nothing was served */
        method = (field_t){p, (size_t)(sp - p)};
        const char *sp2 = memchr(sp + 1, ' ', (size_t)(end - sp - 1));
        target = (field_t){sp + 1, (size_t)((sp2 ? sp2 : end) - sp - 1)};
    } else {
        method = f[VAR_REQUEST_METHOD];
        target = f[VAR_REQUEST_URI];
    }
    if (!method.len || !target.len)
        return 0;

    /* Status: 2xx and 3xx were served. */
    if (f[VAR_STATUS].len != 3 || parse_digits(f[VAR_STATUS].p, 3, &status) < 0)
        return 0;
    if (status < 200 || status > 399)
        return 0;

    /* The path, without scheme and host for absolute-form targets, and the query. */
    path = target;
    if (path.p[0] != '/') {
        const char *end = path.p + path.len;
        const char *sch = find_literal(path.p, end, "://", 3);
        if (sch) {
            const char *slash = memchr(sch + 3, '/', (size_t)(end - sch - 3));
            path = slash ? (field_t){slash, (size_t)(end - slash)} : (field_t){"/", 1};
        }
    }
    const char *q = memchr(path.p, '?', path.len);
    if (q) {
        query = (field_t){q + 1, (size_t)(path.p + path.len - q - 1)};
        path.len = (size_t)(q - path.p);
    }

    bool write = is_write_method(&method);
    if (!write && (field_eq(&method, "GET") || field_eq(&method, "HEAD")) && path.len >= 10 &&
        !memcmp(path.p, "/wp-admin/", 10) && query_has(&query, "_wpnonce="))
        write = true;
    if (!write || ignored(al, &method, &path))
        return 0;

    /* The time: counted only at or after since (unknown times count). */
    if (f[VAR_TIME_LOCAL].p)
        have_time = accesslog_parse_time_local(f[VAR_TIME_LOCAL].p, f[VAR_TIME_LOCAL].len, &t) == 0;
    else if (f[VAR_TIME_ISO8601].p)
        have_time = parse_time_iso8601(f[VAR_TIME_ISO8601].p, f[VAR_TIME_ISO8601].len, &t) == 0;
    if (have_time && t < al->since)
        return 0;
    if (!have_time)
        t = time(NULL);

    /* The client: CF-Connecting-IP only from a trusted proxy. */
    char client[64] = "?", peer[64] = "", cf[64] = "", m[16], tgt[160], ts[32];
    if (f[VAR_REMOTE_ADDR].p && f[VAR_REMOTE_ADDR].len < sizeof(peer))
        put_field(peer, sizeof(peer), &f[VAR_REMOTE_ADDR], sizeof(peer) - 1);
    if (f[VAR_CF_CONNECTING_IP].p && f[VAR_CF_CONNECTING_IP].len < sizeof(cf))
        put_field(cf, sizeof(cf), &f[VAR_CF_CONNECTING_IP], sizeof(cf) - 1);
    uint8_t tmp[16];
    if (cf[0] && accesslog_addr_in(&al->trusted, peer) &&
        (inet_pton(AF_INET, cf, tmp) == 1 || inet_pton(AF_INET6, cf, tmp) == 1))
        snprintf(client, sizeof(client), "%s", cf);
    else if (peer[0])
        snprintf(client, sizeof(client), "%s", peer);

    if (ret_hit) {
        struct tm tm;
        put_field(m, sizeof(m), &method, sizeof(m) - 1);
        put_field(tgt, sizeof(tgt), &target, sizeof(tgt) - 1);
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        ret_hit->time = t;
        snprintf(ret_hit->line, sizeof(ret_hit->line), "%s %s %d from %s at %s (%s)", m, tgt,
                 status, client, ts, file ? file : "-");
    }
    return 1;
}

/* ---- following files --------------------------------------------------------------------- */

typedef struct poll_out {
    al_hit_t *hits;
    size_t max;
    size_t n;
} poll_out_t;

static void take_line(accesslog_t *al, al_file_t *f, const char *line, size_t len, poll_out_t *o)
{
    al_hit_t hit;
    if (accesslog_match_line(al, line, len, f->base, o->n < o->max ? &hit : NULL) == 1) {
        if (o->n < o->max)
            o->hits[o->n] = hit;
        o->n++;
    }
}

/* Splits data into lines, keeping a partial last line in f->line. */
static void take_bytes(accesslog_t *al, al_file_t *f, const char *data, size_t len, poll_out_t *o)
{
    while (len) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        if (!f->skipping) {
            if (f->line_len + n > AL_MAX_LINE) {
                f->skipping = true;
                f->line_len = 0;
            } else if (f->line_len == 0 && nl) {
                take_line(al, f, data, n, o); /* whole line in the chunk: no copy */
            } else {
                memcpy(f->line + f->line_len, data, n);
                f->line_len += n;
                if (nl) {
                    take_line(al, f, f->line, f->line_len, o);
                    f->line_len = 0;
                }
            }
        }
        if (nl)
            f->skipping = false;
        data += n + (nl ? 1 : 0);
        len -= n + (nl ? 1 : 0);
    }
}

static void file_close(al_file_t *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    f->off = 0;
    f->line_len = 0;
    f->skipping = false;
}

/* Reads from f->off up to budget bytes; returns bytes read or a negative errno. */
static ssize_t file_read(accesslog_t *al, al_file_t *f, size_t budget, poll_out_t *o)
{
    char *chunk = al->chunk;
    size_t total = 0;

    while (total < budget) {
        size_t want = budget - total < AL_READ_CHUNK ? budget - total : AL_READ_CHUNK;
        ssize_t n = pread(f->fd, chunk, want, (off_t)f->off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        f->off += (uint64_t)n;
        total += (size_t)n;
        take_bytes(al, f, chunk, (size_t)n, o);
    }
    return (ssize_t)total;
}

static int file_open(accesslog_t *al, al_file_t *f)
{
    struct stat st;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = S_ISREG(st.st_mode) ? -errno : -EINVAL;
        close(fd);
        return e;
    }
    file_close(f);
    f->fd = fd;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    return 0;
}

static int file_poll(accesslog_t *al, al_file_t *f, poll_out_t *o)
{
    struct stat st, cur;
    ssize_t n;
    int r;

    if (f->fd < 0) {
        r = file_open(al, f);
        if (r == -ENOENT)
            return 0; /* not there yet (or between rename and reopen): retried next poll */
        if (r < 0) {
            snprintf(al->error, sizeof(al->error), "%s: %s", f->path, strerror(-r));
            return r;
        }
    }
    if (fstat(f->fd, &cur) < 0)
        return -errno;
    if ((uint64_t)cur.st_size < f->off) {
        /* copytruncate: the file was emptied in place; start again from its beginning. */
        f->off = 0;
        f->line_len = 0;
        f->skipping = false;
    }
    n = file_read(al, f, al->budget, o);
    if (n < 0) {
        snprintf(al->error, sizeof(al->error), "%s: %s", f->path, strerror((int)-n));
        return (int)n;
    }
    if (stat(f->path, &st) == 0 && (st.st_dev != f->dev || st.st_ino != f->ino) && n == 0) {
        /* Renamed away and drained (nothing new this poll): follow the new file. */
        file_close(f);
        r = file_open(al, f);
        if (r < 0 && r != -ENOENT) {
            snprintf(al->error, sizeof(al->error), "%s: %s", f->path, strerror(-r));
            return r;
        }
        if (r == 0) {
            n = file_read(al, f, al->budget, o);
            if (n < 0)
                return (int)n;
        }
    }
    return 0;
}

int accesslog_poll(accesslog_t *al, al_hit_t *hits, size_t max_hits, size_t *ret_n)
{
    poll_out_t o = {hits, max_hits, 0};
    int first = 0;

    al->error[0] = '\0';
    for (size_t i = 0; i < al->n_files; i++) {
        int r = file_poll(al, &al->files[i], &o);
        if (r < 0 && first == 0)
            first = r;
    }
    *ret_n = o.n;
    return first;
}
