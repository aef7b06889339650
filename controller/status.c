/* understudy-controller status: one screen answering "is the backup current, how stale, is it
 * fenced and why", and the last-sync record it reads (status.h). Read-only: it opens nothing
 * that would recover or change the generation store. */
#include "status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "controller.h"
#include "err.h"
#include "generation.h"
#include "guard.h"
#include "log.h"

#define STATUS_MAX_LIST   64 /* generations, dumps and snapshots shown */
#define STATUS_MAX_EVENTS 8  /* newest failover/guard events shown */

/* ---- the last-sync record ---------------------------------------------------------------- */

static void one_line(char *out, size_t size, const char *in)
{
    size_t o = 0;
    for (const char *p = in ? in : ""; *p && o + 1 < size; p++)
        out[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    out[o] = '\0';
}

void status_record_sync(const char *data_dir, const char *result, time_t when, uint64_t generation,
                        const char *peer, const char *reason)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8], clean_reason[1024], clean_peer[128];
    snprintf(path, sizeof(path), "%s/last-sync", data_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    one_line(clean_reason, sizeof(clean_reason), reason);
    one_line(clean_peer, sizeof(clean_peer), peer);
    FILE *f = fopen(tmp, "we");
    int r = f ? 0 : -errno;
    if (f) {
        fprintf(f, "result=%s\ntime=%lld\ngeneration=%" PRIu64 "\npeer=%s\nreason=%s\n", result,
                (long long)when, generation, clean_peer, clean_reason);
        if (fflush(f) != 0 || fsync(fileno(f)) != 0)
            r = -errno;
        if (fclose(f) != 0 && r == 0)
            r = -errno;
        if (r == 0 && rename(tmp, path) != 0)
            r = -errno;
        if (r < 0)
            unlink(tmp);
    }
    if (r < 0)
        log_warn("cannot record the sync's outcome in %s: %s ('status' shows an older one)", path,
                 err_str(r));
}

/* ---- gathering --------------------------------------------------------------------------- */

typedef struct entry {
    char name[256];
    uint64_t num;
    time_t mtime;
    long long size;
} entry_t;

typedef struct list {
    entry_t v[STATUS_MAX_LIST];
    size_t n;
    size_t total;
} list_t;

static int cmp_desc(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    if (x->num != y->num)
        return x->num < y->num ? 1 : -1;
    return strcmp(y->name, x->name);
}

/* Entries of dir whose names start with prefix and end with suffix, numbered by the digits in
 * between (or 0), newest first. */
static void list_dir(const char *dir, const char *prefix, const char *suffix, bool numeric,
                     list_t *out)
{
    out->n = out->total = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    size_t pl = strlen(prefix), sl = strlen(suffix);
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < pl + sl || strncmp(de->d_name, prefix, pl) ||
            strcmp(de->d_name + len - sl, suffix) || len >= sizeof(out->v[0].name))
            continue;
        char *end;
        unsigned long long num = strtoull(de->d_name + pl, &end, 10);
        if (numeric && (end != de->d_name + len - sl || end == de->d_name + pl))
            continue;
        out->total++;
        if (out->n == STATUS_MAX_LIST)
            continue;
        entry_t *e = &out->v[out->n++];
        snprintf(e->name, sizeof(e->name), "%s", de->d_name);
        e->num = numeric ? num : 0;
        struct stat st;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (stat(p, &st) == 0) {
            e->mtime = st.st_mtime;
            e->size = st.st_size;
        }
    }
    closedir(d);
    qsort(out->v, out->n, sizeof(out->v[0]), cmp_desc);
}

typedef struct last_sync {
    char result[32], peer[128], reason[1024];
    long long time;
    uint64_t generation;
} last_sync_t;

static bool read_last_sync(const char *data, last_sync_t *ls)
{
    char path[PATH_MAX], line[1200];
    memset(ls, 0, sizeof(*ls));
    snprintf(path, sizeof(path), "%s/last-sync", data);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, "result=", 7))
            snprintf(ls->result, sizeof(ls->result), "%.30s", line + 7);
        else if (!strncmp(line, "time=", 5))
            ls->time = atoll(line + 5);
        else if (!strncmp(line, "generation=", 11))
            ls->generation = strtoull(line + 11, NULL, 10);
        else if (!strncmp(line, "peer=", 5))
            snprintf(ls->peer, sizeof(ls->peer), "%.120s", line + 5);
        else if (!strncmp(line, "reason=", 7))
            snprintf(ls->reason, sizeof(ls->reason), "%.1000s", line + 7);
    }
    fclose(f);
    return ls->result[0] != '\0';
}

/* The last success time from the alerts' history (data/alerts/history), or 0. */
static long long last_success(const char *data)
{
    char path[PATH_MAX], line[600];
    long long v = 0, t;
    snprintf(path, sizeof(path), "%s/alerts/history", data);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "success %lld", &t) == 1)
            v = t;
    fclose(f);
    return v;
}

/* The newest n lines of data/guard/events. */
static size_t read_events(const char *data, char lines[][600], size_t max)
{
    char path[PATH_MAX], line[600];
    size_t n = 0, total = 0;
    snprintf(path, sizeof(path), "%s/guard/events", data);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (n == max) {
            memmove(lines[0], lines[1], (max - 1) * sizeof(lines[0]));
            n--;
        }
        snprintf(lines[n++], sizeof(lines[0]), "%s", line);
        total++;
    }
    fclose(f);
    return n;
}

/* ---- output ------------------------------------------------------------------------------ */

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static void ago(long long t, long long now, char *out, size_t size)
{
    long long d = now - t;
    if (!t)
        snprintf(out, size, "never");
    else if (d < 0)
        snprintf(out, size, "in the future");
    else if (d < 120)
        snprintf(out, size, "%llds ago", d);
    else if (d < 7200)
        snprintf(out, size, "%lldm ago", d / 60);
    else if (d < 172800)
        snprintf(out, size, "%lldh %lldm ago", d / 3600, d % 3600 / 60);
    else
        snprintf(out, size, "%lldd %lldh ago", d / 86400, d % 86400 / 3600);
}

static const char *primary_name(guard_primary_t p)
{
    return p == GUARD_PRIMARY_DOWN ? "down" : p == GUARD_PRIMARY_UP ? "up" : "unknown";
}

typedef struct report {
    const char *site, *data, *docroot;
    uint64_t live;
    time_t switched;
    bool have_sync;
    last_sync_t sync;
    long long success;
    guard_info_t g;
    bool fenced;
    char reason[1024];
    list_t gens, dumps, diverged;
    char events[STATUS_MAX_EVENTS][600];
    size_t n_events;
    time_t now;
} report_t;

static void print_text(const report_t *r)
{
    char t[32], a[64];
    printf("site:             %s\n", r->site);
    if (r->live) {
        ago(r->switched, r->now, a, sizeof(a));
        printf("live generation:  %" PRIu64 " (switched %s, %s)\n", r->live,
               guard_format_time(r->switched, t, sizeof(t)), a);
    } else {
        printf("live generation:  none yet (%s is not a generation)\n", r->docroot);
    }
    if (r->have_sync) {
        ago(r->sync.time, r->now, a, sizeof(a));
        printf("last sync:        %s at %s (%s), generation %" PRIu64 ", from %s\n", r->sync.result,
               guard_format_time((time_t)r->sync.time, t, sizeof(t)), a, r->sync.generation,
               r->sync.peer[0] ? r->sync.peer : "?");
        if (r->sync.reason[0])
            printf("                  %s\n", r->sync.reason);
    } else {
        printf("last sync:        none recorded\n");
    }
    ago(r->success, r->now, a, sizeof(a));
    printf("last success:     %s%s%s\n",
           r->success ? guard_format_time(r->success, t, sizeof(t)) : "", r->success ? ", " : "",
           a);
    if (r->fenced) {
        printf("FENCED:           syncs are refused: %s\n", r->reason);
    } else {
        printf("fenced:           no (syncs apply)\n");
    }
    if (r->g.tripped) {
        printf("guard:            tripped by %s at %s; signals seen:",
               guard_signal_name(r->g.signal), guard_format_time(r->g.since, t, sizeof(t)));
        for (int s = 0; s < GUARD_SIGNAL_COUNT_; s++)
            if (r->g.signals & (1u << s))
                printf(" %s", guard_signal_name((guard_signal_t)s));
        printf("\n");
        for (size_t i = 0; i < r->g.n_evidence; i++)
            printf("    %s\n", r->g.evidence[i]);
        if (r->g.dropped_evidence)
            printf("    (+%zu more)\n", r->g.dropped_evidence);
        printf("                  keep the local writes: 'export-local-changes DIR', apply them on "
               "the primary;\n                  then 'resolve --discard-local' (saves a "
               "snapshot first)\n");
    }
    if (r->g.cleared_at)
        printf("last resolved:    %s\n", guard_format_time(r->g.cleared_at, t, sizeof(t)));
    printf("primary:          %s", primary_name(r->g.primary));
    if (r->g.primary != GUARD_PRIMARY_UNKNOWN)
        printf(" since %s (%s)", guard_format_time(r->g.primary_since, t, sizeof(t)),
               r->g.primary_detail);
    printf("\n");
    printf("generations:      ");
    for (size_t i = 0; i < r->gens.n; i++)
        printf("%s%" PRIu64 "%s", i ? " " : "", r->gens.v[i].num,
               r->gens.v[i].num == r->live ? "*" : "");
    printf("%s\n", r->gens.n ? "" : "none");
    printf("database dumps:%s\n", r->dumps.n ? "" : "   none");
    for (size_t i = 0; i < r->dumps.n; i++)
        printf("    %s/dumps/%s  %lld bytes  %s\n", r->data, r->dumps.v[i].name, r->dumps.v[i].size,
               guard_format_time(r->dumps.v[i].mtime, t, sizeof(t)));
    printf("diverged snapshots (saved by resolve):%s\n", r->diverged.n ? "" : " none");
    for (size_t i = 0; i < r->diverged.n; i++)
        printf("    %s/diverged/%s\n", r->data, r->diverged.v[i].name);
    if (r->n_events) {
        printf("recent guard events:\n");
        for (size_t i = 0; i < r->n_events; i++)
            printf("    %s\n", r->events[i]);
    }
}

static void json_list(const char *key, const list_t *l, const char *data, const char *sub)
{
    char p[PATH_MAX + 300], t[32];
    printf(",\"%s\":[", key);
    for (size_t i = 0; i < l->n; i++) {
        snprintf(p, sizeof(p), "%s/%s/%s", data, sub, l->v[i].name);
        printf("%s{\"path\":", i ? "," : "");
        json_str(p);
        printf(",\"bytes\":%lld,\"time\":\"%s\"}", l->v[i].size,
               guard_format_time(l->v[i].mtime, t, sizeof(t)));
    }
    printf("]");
}

static void print_json(const report_t *r)
{
    char t[32];
    printf("{\"site\":");
    json_str(r->site);
    printf(",\"live_generation\":%" PRIu64 ",\"switched\":", r->live);
    if (r->live)
        printf("\"%s\",\"age_seconds\":%lld", guard_format_time(r->switched, t, sizeof(t)),
               (long long)(r->now - r->switched));
    else
        printf("null,\"age_seconds\":null");
    printf(",\"last_sync\":");
    if (r->have_sync) {
        printf("{\"result\":");
        json_str(r->sync.result);
        printf(",\"time\":\"%s\",\"generation\":%" PRIu64 ",\"peer\":",
               guard_format_time((time_t)r->sync.time, t, sizeof(t)), r->sync.generation);
        json_str(r->sync.peer);
        printf(",\"reason\":");
        json_str(r->sync.reason);
        printf("}");
    } else {
        printf("null");
    }
    printf(",\"last_success\":");
    if (r->success)
        printf("\"%s\"", guard_format_time(r->success, t, sizeof(t)));
    else
        printf("null");
    printf(",\"fenced\":%s,\"reason\":", r->fenced ? "true" : "false");
    json_str(r->reason);
    printf(",\"tripped\":%s", r->g.tripped ? "true" : "false");
    if (r->g.tripped) {
        printf(",\"signal\":\"%s\",\"since\":\"%s\",\"signals\":[", guard_signal_name(r->g.signal),
               guard_format_time(r->g.since, t, sizeof(t)));
        bool first = true;
        for (int s = 0; s < GUARD_SIGNAL_COUNT_; s++)
            if (r->g.signals & (1u << s)) {
                printf("%s\"%s\"", first ? "" : ",", guard_signal_name((guard_signal_t)s));
                first = false;
            }
        printf("],\"evidence\":[");
        for (size_t i = 0; i < r->g.n_evidence; i++) {
            printf("%s", i ? "," : "");
            json_str(r->g.evidence[i]);
        }
        printf("],\"more_evidence\":%zu", r->g.dropped_evidence);
    }
    printf(",\"last_resolved\":");
    if (r->g.cleared_at)
        printf("\"%s\"", guard_format_time(r->g.cleared_at, t, sizeof(t)));
    else
        printf("null");
    printf(",\"primary\":{\"state\":\"%s\",\"since\":", primary_name(r->g.primary));
    if (r->g.primary != GUARD_PRIMARY_UNKNOWN)
        printf("\"%s\"", guard_format_time(r->g.primary_since, t, sizeof(t)));
    else
        printf("null");
    printf(",\"detail\":");
    json_str(r->g.primary_detail);
    printf("},\"generations\":[");
    for (size_t i = 0; i < r->gens.n; i++)
        printf("%s%" PRIu64, i ? "," : "", r->gens.v[i].num);
    printf("]");
    json_list("dumps", &r->dumps, r->data, "dumps");
    json_list("diverged", &r->diverged, r->data, "diverged");
    printf(",\"events\":[");
    for (size_t i = 0; i < r->n_events; i++)
        printf("%s%s", i ? "," : "", r->events[i][0] == '{' ? r->events[i] : "null");
    printf("]}\n");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: understudy-controller status --config FILE [--json]\n\n"
               "Shows whether the backup is current and whether it is fenced: the live\n"
               "generation and its age, the last sync's outcome, the write guard's signals\n"
               "with their evidence, failover notifications, kept generations, database dumps\n"
               "and the snapshots 'resolve' saved. --json prints the same as one JSON object.\n\n"
               "Exit status: 0 when syncs apply; 40 when the backup is fenced (the write guard\n"
               "is tripped or the primary was reported down), so monitoring scripts can test\n"
               "it; other codes for errors (bad config: 3).\n");
}

int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool json = false;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:jh", opts, NULL)) != -1) {
        if (opt == 'c') {
            config = optarg;
        } else if (opt == 'j') {
            json = true;
        } else {
            usage(opt == 'h' ? stdout : stderr);
            return opt == 'h' ? 0 : err_exit_code(ERR_USAGE);
        }
    }
    if (!config || optind != argc) {
        log_error("needs --config FILE; see --help");
        return err_exit_code(ERR_USAGE);
    }
    cfg_t *cfg;
    int r = controller_load_config(config, &cfg);
    if (r < 0)
        return err_exit_code(r);
    report_t *rep = calloc(1, sizeof(*rep));
    guard_t *g = NULL;
    char err[512] = "", dir[PATH_MAX];
    if (!rep) {
        cfg_free(cfg);
        return err_exit_code(UV_ENOMEM);
    }
    rep->site = cfg_get(cfg, "site", "id");
    rep->data = cfg_get(cfg, "site", "data");
    rep->docroot = cfg_get(cfg, "site", "docroot");
    rep->now = time(NULL);
    r = guard_open(rep->data, &g, err, sizeof(err));
    if (r < 0) {
        log_error("cannot read the write guard's state: %s", err);
        goto out;
    }
    rep->live = gen_docroot_generation(rep->docroot);
    struct stat st;
    if (rep->live && lstat(rep->docroot, &st) == 0)
        rep->switched = st.st_mtime;
    rep->have_sync = read_last_sync(rep->data, &rep->sync);
    rep->success = last_success(rep->data);
    guard_is_tripped(g, &rep->g);
    rep->fenced = guard_reason_line(g, rep->reason, sizeof(rep->reason));
    snprintf(dir, sizeof(dir), "%s/generations", rep->data);
    list_dir(dir, "", "", true, &rep->gens);
    snprintf(dir, sizeof(dir), "%s/dumps", rep->data);
    list_dir(dir, "gen", ".sql.zst", true, &rep->dumps);
    snprintf(dir, sizeof(dir), "%s/diverged", rep->data);
    list_dir(dir, "", "", false, &rep->diverged);
    rep->n_events = read_events(rep->data, rep->events, STATUS_MAX_EVENTS);
    if (json)
        print_json(rep);
    else
        print_text(rep);
    r = rep->fenced ? ERR_REFUSED : 0;
out:
    guard_free(g);
    free(rep);
    cfg_free(cfg);
    return err_exit_code(r);
}
