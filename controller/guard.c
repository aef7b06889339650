/* The write guard's latch. See guard.h. */
#include "guard.h"
#include "safefs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

#define GUARD_FILE_MAX (64 * 1024) /* the tripped and primary files are small */

struct guard {
    pthread_mutex_t mu;
    int dirfd;
    guard_info_t info;
    bool have_file;      /* info matches the tripped file described by file_st */
    struct stat file_st; /* of the tripped file last read or written */
};

static const char *const signal_names[GUARD_SIGNAL_COUNT_] = {
    [GUARD_SIGNAL_ACCESS_LOG] = "access-log",
    [GUARD_SIGNAL_DATABASE] = "database",
    [GUARD_SIGNAL_FILES] = "files",
    [GUARD_SIGNAL_MANUAL] = "manual",
};

const char *guard_signal_name(guard_signal_t signal)
{
    return (unsigned)signal < GUARD_SIGNAL_COUNT_ ? signal_names[signal] : "unknown";
}

char *guard_format_time(time_t t, char *out, size_t size)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, size, "@%lld", (long long)t);
    return out;
}

/* Copies text into out (size >= 8): printable ASCII as is, other bytes and backslash as \xNN,
 * cut with "..." when it does not fit. */
static void escape_line(const char *text, char *out, size_t size)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        bool plain = *p >= 0x20 && *p < 0x7f && *p != '\\';
        size_t need = plain ? 1 : 4;
        if (o + need + 1 > size) {
            o = o > size - 4 ? size - 4 : o;
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain)
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
    }
    out[o] = '\0';
}

/* Appends s as a JSON string (quotes included). */
static int json_string(buf_t *b, const char *s)
{
    int r = buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && r == 0; p++) {
        if (*p == '"' || *p == '\\')
            r = buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            r = buf_printf(b, "\\u%04x", *p);
        else
            r = buf_append(b, p, 1);
    }
    return r < 0 ? r : buf_append(b, "\"", 1);
}

/* Writes name in the guard directory through temp + fsync + rename + fsync(dir), mode 0600. */
/* The guard's and the outbox's files hold evidence and recipients: mode 0600. */
static int write_atomic(int dirfd, const char *name, const void *data, size_t len)
{
    return safefs_write_atomic(dirfd, name, data, len, 0600);
}

/* Appends one event line (a JSON object without its braces) to events. */
static int log_event(guard_t *g, time_t when, const char *event, const buf_t *fields)
{
    char ts[32];
    buf_t line = BUF_INIT;
    int r = buf_printf(&line, "{\"time\":\"%s\",\"event\":\"%s\"",
                       guard_format_time(when, ts, sizeof(ts)), event);
    if (r == 0 && fields && fields->len)
        r = buf_append(&line, ",", 1) ?: buf_append(&line, buf_data(fields), fields->len);
    if (r == 0)
        r = buf_append_str(&line, "}\n");
    if (r < 0) {
        buf_free(&line);
        return r;
    }
    int fd =
        openat(g->dirfd, "events", O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
    } else {
        ssize_t n = write(fd, buf_data(&line), line.len);
        if (n < 0)
            r = -errno;
        else if ((size_t)n != line.len)
            r = -EIO;
        if (r == 0 && fdatasync(fd) < 0)
            r = -errno;
        close(fd);
    }
    buf_free(&line);
    return r;
}

/* Writes the tripped file from g->info. */
static int save_tripped(guard_t *g)
{
    const guard_info_t *in = &g->info;
    char ts[32];
    buf_t b = BUF_INIT;
    int r =
        buf_printf(&b, "signal %s\nsince %lld %s\nsignals %u\ndropped %zu\n",
                   guard_signal_name(in->signal), (long long)in->since,
                   guard_format_time(in->since, ts, sizeof(ts)), in->signals, in->dropped_evidence);
    for (size_t i = 0; i < in->n_evidence && r == 0; i++)
        r = buf_printf(&b, "evidence %s\n", in->evidence[i]);
    if (r == 0)
        r = write_atomic(g->dirfd, "tripped", buf_data(&b), b.len);
    if (r == 0)
        g->have_file = fstatat(g->dirfd, "tripped", &g->file_st, AT_SYMLINK_NOFOLLOW) == 0;
    buf_free(&b);
    return r;
}

static int save_primary(guard_t *g)
{
    const guard_info_t *in = &g->info;
    char text[GUARD_DETAIL_LEN + 128];
    int n = snprintf(text, sizeof(text), "state %s\nsince %lld\ndetail %s\n",
                     in->primary == GUARD_PRIMARY_DOWN ? "down" : "up",
                     (long long)in->primary_since, in->primary_detail);
    return write_atomic(g->dirfd, "primary", text, (size_t)n);
}

/* Reads a small file into a malloc'ed NUL-terminated string. Returns length or negative errno. */
static ssize_t read_file(int dirfd, const char *name, char **ret)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char *text = malloc(GUARD_FILE_MAX + 1);
    size_t len = 0;
    ssize_t n = 0;
    if (!text) {
        close(fd);
        return -ENOMEM;
    }
    while (len < GUARD_FILE_MAX && (n = read(fd, text + len, GUARD_FILE_MAX - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    int e = n < 0 ? -errno : 0;
    close(fd);
    if (e < 0) {
        free(text);
        return e;
    }
    text[len] = '\0';
    *ret = text;
    return (ssize_t)len;
}

/* Parses the tripped file into g->info; anything malformed leaves a tripped latch with an
 * evidence line saying so. */
static void load_tripped(guard_t *g, const char *text)
{
    guard_info_t *in = &g->info;
    bool have_signal = false, have_since = false;
    char *copy = strdup(text);
    char *save = NULL;

    in->tripped = true;
    for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        long long v;
        if (!strncmp(line, "signal ", 7)) {
            for (int s = 0; s < GUARD_SIGNAL_COUNT_; s++)
                if (!strcmp(line + 7, signal_names[s])) {
                    in->signal = (guard_signal_t)s;
                    have_signal = true;
                }
        } else if (sscanf(line, "since %lld", &v) == 1) {
            in->since = (time_t)v;
            have_since = true;
        } else if (sscanf(line, "signals %lld", &v) == 1) {
            in->signals = (unsigned)v;
        } else if (sscanf(line, "dropped %lld", &v) == 1) {
            in->dropped_evidence = (size_t)v;
        } else if (!strncmp(line, "evidence ", 9) && in->n_evidence < GUARD_MAX_EVIDENCE) {
            snprintf(in->evidence[in->n_evidence++], GUARD_EVIDENCE_LEN, "%s", line + 9);
        }
    }
    free(copy);
    if (!have_signal || !have_since) {
        in->signal = GUARD_SIGNAL_MANUAL;
        if (!have_since)
            in->since = time(NULL);
        if (in->n_evidence == GUARD_MAX_EVIDENCE)
            in->n_evidence--;
        snprintf(in->evidence[in->n_evidence++], GUARD_EVIDENCE_LEN,
                 "the tripped file is corrupt; kept as tripped");
    }
    in->signals |= 1u << in->signal;
}

static void load_primary(guard_t *g, const char *text)
{
    guard_info_t *in = &g->info;
    long long v;
    const char *p;

    if (!strncmp(text, "state down\n", 11))
        in->primary = GUARD_PRIMARY_DOWN;
    else if (!strncmp(text, "state up\n", 9))
        in->primary = GUARD_PRIMARY_UP;
    if ((p = strstr(text, "\nsince ")) && sscanf(p + 7, "%lld", &v) == 1)
        in->primary_since = (time_t)v;
    if ((p = strstr(text, "\ndetail "))) {
        size_t n = strcspn(p + 8, "\n");
        snprintf(in->primary_detail, sizeof(in->primary_detail), "%.*s", (int)n, p + 8);
    }
}

/* Reads the time of the last clear. */
static void load_cleared(guard_t *g)
{
    char *text = NULL;
    long long v;
    if (read_file(g->dirfd, "cleared", &text) >= 0 && sscanf(text, "cleared %lld", &v) == 1)
        g->info.cleared_at = (time_t)v;
    free(text);
}

/* Clears the latch in memory, keeping the failover state. */
static void forget_trip(guard_info_t *in)
{
    in->tripped = false;
    in->signal = 0;
    in->since = 0;
    in->signals = 0;
    in->n_evidence = 0;
    in->dropped_evidence = 0;
}

/* Reads the tripped file (again). Caller holds the mutex. */
static void load_state(guard_t *g)
{
    char *text = NULL;
    ssize_t n = read_file(g->dirfd, "tripped", &text);

    forget_trip(&g->info);
    g->have_file = false;
    if (n >= 0) {
        load_tripped(g, text);
        free(text);
        g->have_file = fstatat(g->dirfd, "tripped", &g->file_st, AT_SYMLINK_NOFOLLOW) == 0;
    } else if (n != -ENOENT) {
        /* Present but unreadable: refuse syncs rather than guess. */
        g->info.tripped = true;
        g->info.signal = GUARD_SIGNAL_MANUAL;
        g->info.signals = 1u << GUARD_SIGNAL_MANUAL;
        g->info.since = time(NULL);
        snprintf(g->info.evidence[0], GUARD_EVIDENCE_LEN, "cannot read guard/tripped: %s",
                 strerror((int)-n));
        g->info.n_evidence = 1;
    }
    load_cleared(g);
}

/* Follows changes another process made to the tripped file. Caller holds the mutex. */
static void refresh(guard_t *g)
{
    struct stat st;
    bool exists = fstatat(g->dirfd, "tripped", &st, AT_SYMLINK_NOFOLLOW) == 0;

    if (exists) {
        if (!g->have_file || st.st_ino != g->file_st.st_ino || st.st_size != g->file_st.st_size ||
            st.st_mtim.tv_sec != g->file_st.st_mtim.tv_sec ||
            st.st_mtim.tv_nsec != g->file_st.st_mtim.tv_nsec)
            load_state(g);
    } else if (errno == ENOENT && g->have_file) {
        /* Cleared by another process (resolve). */
        forget_trip(&g->info);
        g->have_file = false;
        load_cleared(g);
    }
}

int guard_open(const char *data_dir, guard_t **ret, char *err, size_t err_size)
{
    char path[4096];
    char *text = NULL;
    guard_t *g;
    ssize_t n;

    if ((size_t)snprintf(path, sizeof(path), "%s/guard", data_dir) >= sizeof(path)) {
        snprintf(err, err_size, "%s: path too long", data_dir);
        return -ENAMETOOLONG;
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        int e = -errno;
        snprintf(err, err_size, "cannot create %s: %s", path, strerror(-e));
        return e;
    }
    g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, err_size, "out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (g->dirfd < 0) {
        int e = -errno;
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(-e));
        guard_free(g);
        return e;
    }
    load_state(g);
    text = NULL;
    n = read_file(g->dirfd, "primary", &text);
    if (n >= 0) {
        load_primary(g, text);
        free(text);
    }
    *ret = g;
    return 0;
}

void guard_free(guard_t *g)
{
    if (!g)
        return;
    if (g->dirfd >= 0)
        close(g->dirfd);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* Adds one evidence line; returns true if it was kept. */
static bool add_evidence(guard_info_t *in, guard_signal_t signal, const char *line)
{
    char esc[GUARD_EVIDENCE_LEN];
    char with[GUARD_EVIDENCE_LEN + 16];

    if (signal != in->signal) {
        snprintf(with, sizeof(with), "[%s] %s", guard_signal_name(signal), line);
        line = with;
    }
    escape_line(line, esc, sizeof(esc));
    for (size_t i = 0; i < in->n_evidence; i++)
        if (!strcmp(in->evidence[i], esc))
            return false; /* seen again (an access log read again after a restart) */
    if (in->n_evidence >= GUARD_MAX_EVIDENCE) {
        in->dropped_evidence++;
        return false;
    }
    memcpy(in->evidence[in->n_evidence++], esc, sizeof(esc));
    return true;
}

int guard_trip(guard_t *g, guard_signal_t signal, time_t when, const char *const *evidence,
               size_t n)
{
    guard_info_t *in = &g->info;
    bool first;
    size_t kept = 0;
    int r, e;

    pthread_mutex_lock(&g->mu);
    refresh(g);
    first = !in->tripped;
    if (first) {
        in->tripped = true;
        in->signal = signal;
        in->since = when;
        in->signals = 0;
        in->n_evidence = 0;
        in->dropped_evidence = 0;
    }
    in->signals |= 1u << signal;
    for (size_t i = 0; i < n; i++)
        kept += add_evidence(in, signal, evidence[i]);
    r = first || kept ? save_tripped(g) : 0;

    buf_t f = BUF_INIT;
    e = buf_printf(&f, "\"signal\":\"%s\",\"evidence\":[", guard_signal_name(signal));
    for (size_t i = 0; i < n && i < GUARD_MAX_EVIDENCE && e == 0; i++) {
        char esc[GUARD_EVIDENCE_LEN];
        escape_line(evidence[i], esc, sizeof(esc));
        e = (i ? buf_append(&f, ",", 1) : 0) ?: json_string(&f, esc);
    }
    if (e == 0)
        e = buf_printf(&f, "],\"more\":%zu", n > GUARD_MAX_EVIDENCE ? n - GUARD_MAX_EVIDENCE : 0);
    if (e == 0 && (first || kept))
        e = log_event(g, when, first ? "trip" : "evidence", &f);
    buf_free(&f);
    pthread_mutex_unlock(&g->mu);
    if (r == 0)
        r = e;
    return r < 0 ? r : first ? 1 : 0;
}

bool guard_is_tripped(guard_t *g, guard_info_t *ret_info)
{
    pthread_mutex_lock(&g->mu);
    refresh(g);
    bool t = g->info.tripped;
    if (ret_info)
        *ret_info = g->info;
    pthread_mutex_unlock(&g->mu);
    return t;
}

/* Appends text to out at *o, cutting with "..." at the end of out. */
static void put(char *out, size_t size, size_t *o, const char *text)
{
    size_t n = strlen(text);
    if (*o + 1 >= size)
        return;
    if (*o + n + 1 > size) {
        size_t room = size - 1 - *o;
        memcpy(out + *o, text, room);
        *o = size - 1;
        if (size >= 4)
            memcpy(out + size - 4, "...", 3);
        out[*o] = '\0';
        return;
    }
    memcpy(out + *o, text, n + 1);
    *o += n;
}

bool guard_reason_line(guard_t *g, char *buf, size_t size)
{
    guard_info_t in;
    char ts[32], tmp[GUARD_DETAIL_LEN + 128];
    size_t o = 0;

    if (size == 0)
        return false;
    buf[0] = '\0';
    pthread_mutex_lock(&g->mu);
    refresh(g);
    in = g->info;
    pthread_mutex_unlock(&g->mu);
    if (in.tripped) {
        snprintf(tmp, sizeof(tmp), "signal %s at %s", guard_signal_name(in.signal),
                 guard_format_time(in.since, ts, sizeof(ts)));
        put(buf, size, &o, tmp);
        for (size_t i = 0; i < in.n_evidence; i++) {
            put(buf, size, &o, i ? "; " : ": ");
            put(buf, size, &o, in.evidence[i]);
        }
        if (in.dropped_evidence) {
            snprintf(tmp, sizeof(tmp), " (+%zu more)", in.dropped_evidence);
            put(buf, size, &o, tmp);
        }
        return true;
    }
    if (in.primary == GUARD_PRIMARY_DOWN) {
        snprintf(tmp, sizeof(tmp),
                 "failover: the primary was reported DOWN at %s%s%s%s; the backup is serving",
                 guard_format_time(in.primary_since, ts, sizeof(ts)),
                 in.primary_detail[0] ? " (" : "", in.primary_detail,
                 in.primary_detail[0] ? ")" : "");
        put(buf, size, &o, tmp);
        return true;
    }
    return false;
}

int guard_clear(guard_t *g, const char *note)
{
    char esc[GUARD_EVIDENCE_LEN], text[64];
    buf_t f = BUF_INIT;
    time_t now = time(NULL);
    int r;

    pthread_mutex_lock(&g->mu);
    /* The clear time first: if we crash in between, a later restart still sees the trip. */
    int n = snprintf(text, sizeof(text), "cleared %lld\n", (long long)now);
    r = write_atomic(g->dirfd, "cleared", text, (size_t)n);
    if (r == 0)
        r = unlinkat(g->dirfd, "tripped", 0) < 0 && errno != ENOENT ? -errno : 0;
    if (r == 0 && fsync(g->dirfd) < 0)
        r = -errno;
    if (r == 0) {
        forget_trip(&g->info);
        g->have_file = false;
        g->info.cleared_at = now;
        escape_line(note ? note : "", esc, sizeof(esc));
        r = buf_append_str(&f, "\"note\":") ?: json_string(&f, esc);
        if (r == 0)
            r = log_event(g, now, "clear", &f);
    }
    pthread_mutex_unlock(&g->mu);
    buf_free(&f);
    return r;
}

int guard_note_primary(guard_t *g, guard_primary_t state, time_t when, const char *detail)
{
    buf_t f = BUF_INIT;
    int r, e;

    pthread_mutex_lock(&g->mu);
    g->info.primary = state == GUARD_PRIMARY_DOWN ? GUARD_PRIMARY_DOWN : GUARD_PRIMARY_UP;
    g->info.primary_since = when;
    escape_line(detail ? detail : "", g->info.primary_detail, sizeof(g->info.primary_detail));
    r = save_primary(g);
    e = buf_append_str(&f, "\"detail\":") ?: json_string(&f, g->info.primary_detail);
    if (e == 0)
        e = log_event(g, when,
                      g->info.primary == GUARD_PRIMARY_DOWN ? "primary-down" : "primary-up", &f);
    pthread_mutex_unlock(&g->mu);
    buf_free(&f);
    return r < 0 ? r : e;
}

bool guard_primary_down(guard_t *g)
{
    pthread_mutex_lock(&g->mu);
    bool down = g->info.primary == GUARD_PRIMARY_DOWN;
    pthread_mutex_unlock(&g->mu);
    return down;
}
