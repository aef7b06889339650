/* Generations under [site] data, the journaled switch and rollback. See generation.h.
 *
 * The journal (data/journal) is one line, "switch N PREV" or "rollback N PREV", written (temp +
 * fsync + rename) before anything of a switch happens and removed once the docroot points at N.
 * The order within a switch is: journal, staging/gen renamed to generations/N, hooks->switch_db,
 * docroot symlink flip, journal removed. Recovery (gen_store_open) asks hooks->db_is_live(N):
 * 1 finishes the switch (flip to N), 0 undoes it (docroot back on PREV, a new generation N
 * removed). Without the hook the docroot itself decides: it already points at N only if the flip
 * happened, which is the last step, so the switch is finished; otherwise undone.
 */
#include "generation.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fault.h"
#include "genpriv.h"
#include "log.h"
#include "safefs.h"

#define JOURNAL "journal"

struct gen_store {
    gen_opts_t opts; /* strings point at the copies below */
    char *data, *docroot, *owner;
    gen_hooks_t hooks;
    int data_fd, gens_fd, staging_fd, lock_fd;
    uint64_t live;
    uint8_t live_digest[MF_HASH_LEN];
    bool have_digest;
    char *live_manifest;
    uid_t uid;
    gid_t gid;
    bool chown;
    /* The background job (genpriv.h): bg_started until joined. */
    pthread_t bg;
    bool bg_started;
    atomic_bool bg_done, bg_cancel, bg_interruptible;
    void (*bg_fn)(void *arg);
    void *bg_arg;
    /* The prepared tree's watch (genpriv.h), -1 when none. */
    int watch_fd;
    uint64_t watch_base;
    /* The live generation's content table (genpriv.h), NULL when none; under tab_mu. */
    pthread_mutex_t tab_mu;
    void *tab;
    uint64_t tab_base;
    void (*tab_free)(void *tab);
};

int set_err(char *err, size_t err_size, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return r;
}

const gen_opts_t *gen_store_opts(const gen_store_t *g)
{
    return &g->opts;
}

int gen_store_staging_fd(const gen_store_t *g)
{
    return g->staging_fd;
}

uint64_t gen_root_generation(const char *root)
{
    size_t len = strlen(root);
    if (len < 5 || strcmp(root + len - 5, "/root") != 0)
        return 0;
    const char *p = root + len - 5;
    while (p > root && p[-1] != '/')
        p--;
    return p > root ? strtoull(p, NULL, 10) : 0; /* the number stops at "/root" */
}

uint64_t gen_docroot_generation(const char *docroot)
{
    char real[PATH_MAX];
    return realpath(docroot, real) ? gen_root_generation(real) : 0;
}

uint64_t gen_store_live(const gen_store_t *g)
{
    return g->live;
}

const uint8_t *gen_store_live_digest(const gen_store_t *g)
{
    return g->live && g->have_digest ? g->live_digest : NULL;
}

const char *gen_store_live_manifest(const gen_store_t *g)
{
    return g->live ? g->live_manifest : NULL;
}

bool gen_store_owner(const gen_store_t *g, uid_t *ret_uid, gid_t *ret_gid)
{
    if (!g->chown)
        return false;
    *ret_uid = g->uid;
    *ret_gid = g->gid;
    return true;
}

void gen_store_chown_denied(gen_store_t *g)
{
    if (!g->chown)
        return;
    g->chown = false;
    log_warn("cannot give files to %s (not root and no CAP_CHOWN): they keep this process's "
             "owner; run the controller as root to have [site] owner applied",
             g->owner);
}

int gen_store_open_live_root(const gen_store_t *g)
{
    char name[64];
    if (!g->live)
        return -ENOENT;
    snprintf(name, sizeof(name), "%" PRIu64 "/root", g->live);
    int fd = openat(g->gens_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Parses a generation directory name: digits only, no leading zero, > 0. */
static bool parse_gen(const char *s, uint64_t *ret)
{
    uint64_t v = 0;
    if (!s[0] || s[0] == '0' || strlen(s) > 19)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *ret = v;
    return true;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* All generations on disk, newest first, in a malloc'd array. */
static int list_all(const gen_store_t *g, uint64_t **ret, size_t *ret_n)
{
    int fd = dup(g->gens_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;

    if (!d) {
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    rewinddir(d);
    while ((de = readdir(d))) {
        uint64_t gen;
        if (!parse_gen(de->d_name, &gen))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
        }
        v[n++] = gen;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof(*v), cmp_desc);
    *ret = v;
    *ret_n = n;
    return 0;
}

size_t gen_store_list(const gen_store_t *g, uint64_t *ret, size_t max)
{
    uint64_t *v = NULL;
    size_t n = 0;
    if (list_all(g, &v, &n) < 0)
        return 0;
    for (size_t i = 0; i < n && i < max; i++)
        ret[i] = v[i];
    free(v);
    return n < max ? n : max;
}

uint64_t gen_store_next(const gen_store_t *g)
{
    uint64_t *v = NULL, next = g->live + 1;
    size_t n = 0;
    if (list_all(g, &v, &n) == 0 && n && v[0] + 1 > next)
        next = v[0] + 1;
    free(v);
    return next;
}

/* The docroot's target for a generation. */
static char *target_of(const gen_store_t *g, uint64_t gen)
{
    char *t = NULL;
    if (asprintf(&t, "%s/generations/%" PRIu64 "/root", g->data, gen) < 0)
        return NULL;
    return t;
}

/* Reads which generation the docroot points at: 0 when it does not exist. */
static int read_docroot(const gen_store_t *g, uint64_t *ret, char *err, size_t err_size)
{
    char link[PATH_MAX + 1], prefix[PATH_MAX + 32];
    struct stat st;

    ssize_t n = readlink(g->docroot, link, sizeof(link) - 1);
    if (n < 0) {
        if (errno == ENOENT) {
            *ret = 0;
            return 0;
        }
        if (errno == EINVAL && lstat(g->docroot, &st) == 0)
            return set_err(err, err_size, ERR_CONFIG,
                           "[site] docroot %s exists and is not a symlink: move it away (the "
                           "controller makes it a symlink to the live generation)",
                           g->docroot);
        return set_err(err, err_size, -errno, "cannot read the docroot symlink %s: %s", g->docroot,
                       strerror(errno));
    }
    link[n] = '\0';
    int plen = snprintf(prefix, sizeof(prefix), "%s/generations/", g->data);
    char *end = NULL;
    if (strncmp(link, prefix, (size_t)plen) != 0 || !(end = strstr(link + plen, "/root")) ||
        strcmp(end, "/root") != 0)
        return set_err(err, err_size, ERR_CONFIG,
                       "the docroot symlink %s points at %s, not at a generation under %s: "
                       "remove it or fix [site] data",
                       g->docroot, link, g->data);
    *end = '\0';
    if (!parse_gen(link + plen, ret))
        return set_err(err, err_size, ERR_CONFIG, "the docroot symlink %s points at %s/root",
                       g->docroot, link);
    return 0;
}

/* fsyncs the directory holding path. */
static int fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    char *slash = strrchr(copy, '/');
    if (slash == copy)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    int fd = open(slash ? copy : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* Points the docroot at gen (0: removes it) with one atomic rename. */
static int flip(gen_store_t *g, uint64_t gen, char *err, size_t err_size)
{
    char *target = gen ? target_of(g, gen) : NULL;
    char *tmp = NULL;
    int r = 0;

    if (!gen) {
        if (unlink(g->docroot) < 0 && errno != ENOENT)
            return set_err(err, err_size, -errno, "cannot remove %s: %s", g->docroot,
                           strerror(errno));
        return fsync_parent(g->docroot);
    }
    if (!target || asprintf(&tmp, "%s.understudy-new", g->docroot) < 0) {
        free(target);
        return set_err(err, err_size, -ENOMEM, "out of memory");
    }
    unlink(tmp);
    if (symlink(target, tmp) < 0 || rename(tmp, g->docroot) < 0) {
        r = set_err(err, err_size, -errno, "cannot switch the docroot symlink %s: %s", g->docroot,
                    strerror(errno));
        unlink(tmp);
    } else {
        r = fsync_parent(g->docroot);
        if (r < 0)
            set_err(err, err_size, r, "cannot fsync the directory of %s", g->docroot);
    }
    free(tmp);
    free(target);
    return r;
}

/* Loads the live generation's digest from its meta file. */
static void load_live(gen_store_t *g)
{
    char name[64], text[512];
    free(g->live_manifest);
    g->live_manifest = NULL;
    g->have_digest = false;
    if (!g->live)
        return;
    if (asprintf(&g->live_manifest, "%s/generations/%" PRIu64 "/manifest", g->data, g->live) < 0)
        g->live_manifest = NULL;
    snprintf(name, sizeof(name), "%" PRIu64 "/meta", g->live);
    if (safefs_read_small(g->gens_fd, name, text, sizeof(text)) < 0)
        return;
    char *p = strstr(text, "digest ");
    if (!p)
        return;
    p += 7;
    for (int i = 0; i < MF_HASH_LEN; i++) {
        unsigned v;
        if (sscanf(p + 2 * i, "%2x", &v) != 1)
            return;
        g->live_digest[i] = (uint8_t)v;
    }
    g->have_digest = true;
}

static int journal_write(gen_store_t *g, const char *kind, uint64_t gen, uint64_t prev)
{
    char line[96];
    int n = snprintf(line, sizeof(line), "%s %" PRIu64 " %" PRIu64 "\n", kind, gen, prev);
    return safefs_write_atomic(g->data_fd, JOURNAL, line, (size_t)n, 0644);
}

static int journal_done(gen_store_t *g)
{
    if (unlinkat(g->data_fd, JOURNAL, 0) < 0 && errno != ENOENT)
        return -errno;
    return fsync(g->data_fd) < 0 ? -errno : 0;
}

/* Finishes or undoes a switch the journal shows was interrupted. 1 when it finished one, 0 when
 * there was nothing to do or it undid one, or a negative errno with err set. */
static int recover(gen_store_t *g, char *err, size_t err_size)
{
    char text[128], kind[16];
    uint64_t gen, prev, now;
    int r;

    ssize_t n = safefs_read_small(g->data_fd, JOURNAL, text, sizeof(text));
    if (n == -ENOENT)
        return 0;
    if (n < 0)
        return set_err(err, err_size, (int)n, "cannot read %s/" JOURNAL ": %s", g->data,
                       strerror((int)-n));
    if (sscanf(text, "%15s %" SCNu64 " %" SCNu64, kind, &gen, &prev) != 3 ||
        (strcmp(kind, "switch") && strcmp(kind, "rollback")))
        return set_err(err, err_size, ERR_CONFIG,
                       "%s/" JOURNAL " is corrupt; look at the docroot and remove it by hand",
                       g->data);
    r = read_docroot(g, &now, err, err_size);
    if (r < 0)
        return r;
    int live = g->hooks.db_is_live ? g->hooks.db_is_live(g->hooks.ctx, gen) : (now == gen);
    if (live < 0)
        return set_err(err, err_size, live,
                       "interrupted switch to generation %" PRIu64
                       ": cannot tell whether its database is live (%s); retry",
                       gen, err_str(live));
    char name[32];
    snprintf(name, sizeof(name), "%" PRIu64, gen);
    struct stat st;
    bool present = fstatat(g->gens_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    fault_point("controller.recover");
    if (live && present) {
        log_warn("finishing the interrupted %s to generation %" PRIu64, kind, gen);
        if (now != gen && (r = flip(g, gen, err, err_size)) < 0)
            return r;
    } else {
        log_warn("undoing the interrupted %s to generation %" PRIu64
                 " (the docroot stays on generation %" PRIu64 ")",
                 kind, gen, prev);
        if (now != prev && (r = flip(g, prev, err, err_size)) < 0)
            return r;
        if (!strcmp(kind, "switch") && gen != prev && present) {
            r = safefs_rm_tree(g->gens_fd, name);
            if (r < 0)
                log_warn("cannot remove the abandoned generation %" PRIu64 ": %s", gen,
                         strerror(-r));
        }
    }
    r = journal_done(g);
    if (r < 0)
        return set_err(err, err_size, r, "cannot remove %s/" JOURNAL ": %s", g->data, strerror(-r));
    return live && present && !strcmp(kind, "switch");
}

static void prune(gen_store_t *g);

static int resolve_owner(gen_store_t *g)
{
    char user[256], *group;
    g->chown = false;
    if (!g->owner || !g->owner[0])
        return 0;
    snprintf(user, sizeof(user), "%s", g->owner);
    group = strchr(user, ':');
    if (group)
        *group++ = '\0';
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        log_warn("[site] owner: no user '%s' on this host: files keep this process's owner", user);
        return 0;
    }
    g->uid = pw->pw_uid;
    g->gid = pw->pw_gid;
    if (group && group[0]) {
        struct group *gr = getgrnam(group);
        if (!gr) {
            log_warn("[site] owner: no group '%s' on this host: files keep this process's owner",
                     group);
            return 0;
        }
        g->gid = gr->gr_gid;
    }
    g->chown = true;
    return 0;
}

static int mkdir_at(int dirfd, const char *name)
{
    return mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

int gen_store_open(const gen_opts_t *opts, const gen_hooks_t *hooks, gen_store_t **ret, char *err,
                   size_t err_size)
{
    gen_store_t *g = calloc(1, sizeof(*g));
    int r;

    if (!g)
        return set_err(err, err_size, -ENOMEM, "out of memory");
    g->data_fd = g->gens_fd = g->staging_fd = g->lock_fd = g->watch_fd = -1;
    pthread_mutex_init(&g->tab_mu, NULL);
    if (!opts->data || opts->data[0] != '/' || !opts->docroot || opts->docroot[0] != '/') {
        r = set_err(err, err_size, ERR_CONFIG, "[site] data and docroot must be absolute paths");
        goto fail;
    }
    g->opts = *opts;
    g->data = strdup(opts->data);
    g->docroot = strdup(opts->docroot);
    g->owner = strdup(opts->owner ? opts->owner : "");
    if (!g->data || !g->docroot || !g->owner) {
        r = set_err(err, err_size, -ENOMEM, "out of memory");
        goto fail;
    }
    /* No trailing slashes: they would break the docroot target comparison. */
    for (char *s = g->data; strlen(s) > 1 && s[strlen(s) - 1] == '/';)
        s[strlen(s) - 1] = '\0';
    for (char *s = g->docroot; strlen(s) > 1 && s[strlen(s) - 1] == '/';)
        s[strlen(s) - 1] = '\0';
    g->opts.data = g->data;
    g->opts.docroot = g->docroot;
    g->opts.owner = g->owner;
    if (!g->opts.keep)
        g->opts.keep = 1;
    if (hooks)
        g->hooks = *hooks;
    if (mkdir(g->data, 0755) < 0 && errno != EEXIST) {
        r = set_err(err, err_size, -errno, "cannot create [site] data %s: %s", g->data,
                    strerror(errno));
        goto fail;
    }
    g->data_fd = open(g->data, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g->data_fd < 0 || (r = mkdir_at(g->data_fd, "generations")) < 0 ||
        (r = mkdir_at(g->data_fd, "staging")) < 0) {
        r = set_err(err, err_size, -errno, "cannot open or lay out [site] data %s: %s", g->data,
                    strerror(errno));
        goto fail;
    }
    g->gens_fd = openat(g->data_fd, "generations", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    g->staging_fd = openat(g->data_fd, "staging", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (g->gens_fd < 0 || g->staging_fd < 0) {
        r = set_err(err, err_size, -errno, "cannot open %s/generations or staging: %s", g->data,
                    strerror(errno));
        goto fail;
    }
    if (mkdir_at(g->staging_fd, GEN_OBJECTS) < 0 || mkdir_at(g->staging_fd, GEN_PARTIAL) < 0 ||
        mkdir_at(g->staging_fd, GEN_TMP) < 0) {
        r = set_err(err, err_size, -errno, "cannot lay out %s/staging: %s", g->data,
                    strerror(errno));
        goto fail;
    }
    resolve_owner(g);
    g->lock_fd = openat(g->data_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (g->lock_fd < 0) {
        r = set_err(err, err_size, -errno, "cannot open %s/lock: %s", g->data, strerror(errno));
        goto fail;
    }
    r = gen_store_lock(g, err, err_size);
    if (r < 0)
        goto fail;
    r = recover(g, err, err_size);
    if (r >= 0) {
        r = read_docroot(g, &g->live, err, err_size);
        if (r == 0)
            load_live(g);
        /* The retention pass (old generations, the dump of the live one) a crash may have
         * cut short, or that a switch finished by recover() never got to. Idempotent. */
        if (r == 0)
            prune(g);
    }
    gen_store_unlock(g);
    if (r < 0)
        goto fail;
    *ret = g;
    return 0;
fail:
    gen_store_close(g);
    return r;
}

static void *bg_main(void *arg)
{
    gen_store_t *g = arg;
    g->bg_fn(g->bg_arg);
    atomic_store(&g->bg_done, true);
    return NULL;
}

bool gen_store_bg_start(gen_store_t *g, void (*fn)(void *arg), void *arg)
{
    if (g->bg_started) {
        if (!atomic_load(&g->bg_done))
            return false;
        gen_store_bg_wait(g);
    }
    atomic_store(&g->bg_done, false);
    atomic_store(&g->bg_cancel, false);
    atomic_store(&g->bg_interruptible, false);
    g->bg_fn = fn;
    g->bg_arg = arg;
    if (pthread_create(&g->bg, NULL, bg_main, g) != 0)
        return false;
    g->bg_started = true;
    return true;
}

void gen_store_bg_wait(gen_store_t *g)
{
    if (!g->bg_started)
        return;
    pthread_join(g->bg, NULL);
    g->bg_started = false;
}

void gen_store_bg_interruptible(gen_store_t *g)
{
    atomic_store(&g->bg_interruptible, true);
}

void gen_store_bg_finish(gen_store_t *g)
{
    if (atomic_load(&g->bg_interruptible))
        atomic_store(&g->bg_cancel, true);
    gen_store_bg_wait(g);
}

const atomic_bool *gen_store_bg_cancel_flag(gen_store_t *g)
{
    return &g->bg_cancel;
}

bool gen_store_bg_cancelled(gen_store_t *g)
{
    return atomic_load(&g->bg_cancel);
}

void gen_store_put_watch(gen_store_t *g, int fd, uint64_t base)
{
    if (g->watch_fd >= 0)
        close(g->watch_fd);
    g->watch_fd = fd;
    g->watch_base = base;
}

int gen_store_take_watch(gen_store_t *g, uint64_t base)
{
    int fd = g->watch_fd;
    bool match = g->watch_base == base;
    g->watch_fd = -1;
    if (fd >= 0 && !match) {
        close(fd);
        fd = -1;
    }
    return fd;
}

void gen_store_put_tab(gen_store_t *g, void *tab, uint64_t base, void (*free_fn)(void *tab))
{
    pthread_mutex_lock(&g->tab_mu);
    void *old = g->tab;
    void (*old_free)(void *) = g->tab_free;
    g->tab = tab;
    g->tab_base = base;
    g->tab_free = free_fn;
    pthread_mutex_unlock(&g->tab_mu);
    if (old)
        old_free(old);
}

void *gen_store_take_tab(gen_store_t *g, uint64_t base)
{
    pthread_mutex_lock(&g->tab_mu);
    void *tab = g->tab;
    void (*free_fn)(void *) = g->tab_free;
    bool match = g->tab_base == base;
    g->tab = NULL;
    pthread_mutex_unlock(&g->tab_mu);
    if (tab && !match) {
        free_fn(tab);
        tab = NULL;
    }
    return tab;
}

void gen_store_close(gen_store_t *g)
{
    if (!g)
        return;
    atomic_store(&g->bg_cancel, true);
    gen_store_bg_wait(g);
    gen_store_put_tab(g, NULL, 0, NULL);
    pthread_mutex_destroy(&g->tab_mu);
    if (g->data_fd >= 0)
        close(g->data_fd);
    if (g->gens_fd >= 0)
        close(g->gens_fd);
    if (g->staging_fd >= 0)
        close(g->staging_fd);
    if (g->lock_fd >= 0)
        close(g->lock_fd);
    if (g->watch_fd >= 0)
        close(g->watch_fd);
    free(g->data);
    free(g->docroot);
    free(g->owner);
    free(g->live_manifest);
    free(g);
}

/* Removes generations beyond the newest opts.keep (never the live one). */
static void prune(gen_store_t *g)
{
    uint64_t *v = NULL, oldest = g->live;
    size_t n = 0;
    if (list_all(g, &v, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (i < g->opts.keep || v[i] == g->live) {
            if (v[i] < oldest)
                oldest = v[i];
            continue;
        }
        char name[32], old[48];
        snprintf(name, sizeof(name), "%" PRIu64, v[i]);
        snprintf(old, sizeof(old), GEN_OLD_PREFIX "%s", name);
        /* Out of generations/ at once; its files are removed in the background (a tree of a big
         * site takes as long to remove as a sync takes), or here when it cannot be moved. */
        safefs_rm_tree(g->staging_fd, old);
        int r = renameat(g->gens_fd, name, g->staging_fd, old) == 0
                    ? 0
                    : safefs_rm_tree(g->gens_fd, name);
        if (r < 0)
            log_warn("cannot remove old generation %s/generations/%s: %s", g->data, name,
                     strerror(-r));
    }
    free(v);
    if (g->hooks.prune && oldest)
        g->hooks.prune(g->hooks.ctx, oldest);
}

/* journal, [rename], switch_db, flip, done. */
static int do_switch(gen_store_t *g, const char *kind, uint64_t gen, bool rename_stage, char *err,
                     size_t err_size)
{
    char name[32];
    uint64_t prev = g->live;
    int r;

    snprintf(name, sizeof(name), "%" PRIu64, gen);
    r = journal_write(g, kind, gen, prev);
    if (r < 0)
        return set_err(err, err_size, r, "cannot write %s/" JOURNAL ": %s", g->data, strerror(-r));
    fault_point("controller.switch.journal");
    if (rename_stage) {
        if (renameat(g->staging_fd, GEN_STAGE_DIR, g->gens_fd, name) < 0) {
            r = set_err(err, err_size, -errno,
                        "cannot move the staged tree to %s/generations/%s: %s", g->data, name,
                        strerror(errno));
            goto undo;
        }
        if (fsync(g->gens_fd) < 0 || fsync(g->staging_fd) < 0) {
            r = set_err(err, err_size, -errno, "fsync %s/generations: %s", g->data,
                        strerror(errno));
            goto undo;
        }
        fault_point("controller.switch.renamed");
    }
    if (g->hooks.switch_db) {
        r = g->hooks.switch_db(g->hooks.ctx, gen, err, err_size);
        if (r < 0)
            goto undo;
        fault_point("controller.switch.db");
    }
    r = flip(g, gen, err, err_size);
    if (r < 0)
        goto undo; /* rename(2) is atomic: the docroot still points at prev */
    fault_point("controller.switch.flipped");
    r = journal_done(g);
    if (r < 0)
        log_warn("cannot remove %s/" JOURNAL " (%s): the next start finishes the switch", g->data,
                 strerror(-r));
    g->live = gen;
    load_live(g);
    return 0;
undo:
    /* The docroot was not flipped. The database may have been (switch_db failed half-way is its
     * business); put back what we can and leave the journal when that fails, for recovery. */
    if (g->hooks.switch_db && prev && r != 0) {
        char e2[256];
        if (g->hooks.db_is_live && g->hooks.db_is_live(g->hooks.ctx, gen) == 1 &&
            g->hooks.switch_db(g->hooks.ctx, prev, e2, sizeof(e2)) < 0) {
            log_error("switching the database back to generation %" PRIu64 " failed: %s", prev, e2);
            return r;
        }
    }
    if (rename_stage)
        safefs_rm_tree(g->gens_fd, name);
    journal_done(g);
    return r;
}

int gen_store_install(gen_store_t *g, uint64_t generation, const uint8_t digest[MF_HASH_LEN],
                      bool durable, char *err, size_t err_size)
{
    char hex[2 * MF_HASH_LEN + 1], meta[256];
    int r;

    mf_hash_hex(digest, hex);
    int n = snprintf(meta, sizeof(meta), "generation %" PRIu64 "\ndigest %s\napplied %lld\n",
                     generation, hex, (long long)time(NULL));
    int stage =
        openat(g->staging_fd, GEN_STAGE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (stage < 0)
        return set_err(err, err_size, -errno, "cannot open the staged generation: %s",
                       strerror(errno));
    r = safefs_write_atomic(stage, "meta", meta, (size_t)n, 0644);
    if (r < 0) {
        close(stage);
        return set_err(err, err_size, r, "cannot write the generation's meta: %s", strerror(-r));
    }
    if (!durable)
        r = syncfs(stage) < 0 ? set_err(err, err_size, -errno, "syncfs: %s", strerror(errno)) : 0;
    close(stage);
    if (r < 0)
        return r;
    r = do_switch(g, "switch", generation, true, err, err_size);
    if (r < 0)
        return r;
    fault_point("controller.switch.done");
    prune(g);
    return 0;
}

int gen_rollback(gen_store_t *g, uint64_t generation, char *err, size_t err_size)
{
    char name[64];
    struct stat st;

    gen_store_bg_wait(g);
    if (generation == g->live)
        return set_err(err, err_size, ERR_USAGE, "generation %" PRIu64 " is already live",
                       generation);
    snprintf(name, sizeof(name), "%" PRIu64 "/root", generation);
    if (!generation || fstatat(g->gens_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
        !S_ISDIR(st.st_mode))
        return set_err(err, err_size, ERR_USAGE,
                       "there is no generation %" PRIu64 " under %s/generations", generation,
                       g->data);
    snprintf(name, sizeof(name), "%" PRIu64 "/manifest", generation);
    if (fstatat(g->gens_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return set_err(err, err_size, ERR_USAGE,
                       "generation %" PRIu64 " is incomplete (no manifest)", generation);
    return do_switch(g, "rollback", generation, false, err, err_size);
}

int gen_store_lock(gen_store_t *g, char *err, size_t err_size)
{
    if (flock(g->lock_fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    if (errno == EWOULDBLOCK)
        return set_err(err, err_size, ERR_OVERLOADED,
                       "another sync or rollback is changing %s right now; try again later",
                       g->data);
    return set_err(err, err_size, -errno, "cannot lock %s/lock: %s", g->data, strerror(errno));
}

void gen_store_unlock(gen_store_t *g)
{
    flock(g->lock_fd, LOCK_UN);
}

int gen_store_refresh(gen_store_t *g, char *err, size_t err_size)
{
    uint64_t now;
    int r = read_docroot(g, &now, err, err_size);
    if (r < 0)
        return r;
    if (now != g->live) {
        g->live = now;
        load_live(g);
    }
    return 0;
}

int gen_store_prepare(gen_store_t *g, uint64_t generation, int root_fd, char *err, size_t err_size)
{
    return g->hooks.prepare ? g->hooks.prepare(g->hooks.ctx, generation, root_fd, err, err_size)
                            : 0;
}
