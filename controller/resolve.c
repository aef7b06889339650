/* understudy-controller resolve --discard-local: saves the diverged state of the backup under
 * [site] data/diverged/<UTC time>/, and only once that snapshot is on disk (fsynced) clears the
 * write guard's latch, so the next sync applies over the local writes.
 *
 * The snapshot:
 *   gen<N>.sql.zst  the live database as it is now (dumps.h format: zstd -dc FILE | mariadb DB)
 *   files.tar.zst   every file of the live tree written since the generation went live (GNU
 *                   tar --newer-mtime: the modification time; not the status change time, which
 *                   the controller's own hard links to the live files — the prepared next tree
 *                   — move for every file), with its path below the root
 *   reason.txt      why the guard tripped, with its evidence
 * Deleted files need no copy: they are the primary's own, and the next sync brings them back.
 */
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
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "controller.h"
#include "db.h"
#include "dbdrift.h"
#include "dumps.h"
#include "err.h"
#include "generation.h"
#include "guard.h"
#include "log.h"
#include "safefs.h"
#include "sync.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: understudy-controller resolve --discard-local --config FILE [--note TEXT]\n\n"
            "Ends a fence: the write guard refuses syncs because the backup took writes of\n"
            "its own (see 'status'). Before clearing it, resolve saves the diverged state —\n"
            "a dump of the live database and an archive of the files changed since the live\n"
            "generation — under [site] data/diverged/<time>/ (listed by 'status'); then the\n"
            "next sync applies and replaces the local writes with the primary's site.\n\n"
            "To keep the local writes, first run 'export-local-changes' and apply its output\n"
            "on the primary. --discard-local is required: it says that you know the next sync\n"
            "overwrites what was written here (the snapshot keeps a copy).\n");
}

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return r;
}

/* Runs argv (no shell), waits; 0 when it exited 0. */
static int run_tool(char *const argv[], char *err, size_t err_size)
{
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, err_size, "cannot start %s: %s", argv[0], strerror(errno));
        return -errno;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, err_size, "waiting for %s: %s", argv[0], strerror(errno));
            return -errno;
        }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    snprintf(err, err_size, "%s failed (%s %d)", argv[0], WIFEXITED(st) ? "exit status" : "signal",
             WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return ERR_INTERNAL;
}

static uint64_t live_root(const char *docroot, char *root, size_t size)
{
    char real[PATH_MAX];
    if (!realpath(docroot, real))
        return 0;
    snprintf(root, size, "%s", real);
    return gen_root_generation(real);
}

/* Makes data/diverged/<time>[-k] (0700). */
static int make_snapshot_dir(const char *data, char *out, size_t size)
{
    char parent[PATH_MAX], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(parent, sizeof(parent), "%s/diverged", data);
    if (mkdir(parent, 0700) < 0 && errno != EEXIST)
        return -errno;
    for (int k = 0; k < 100; k++) {
        int n = k ? snprintf(out, size, "%s/%s-%d", parent, stamp, k)
                  : snprintf(out, size, "%s/%s", parent, stamp);
        if (n < 0 || (size_t)n >= size)
            return UV_ENAMETOOLONG;
        if (mkdir(out, 0700) == 0)
            return 0;
        if (errno != EEXIST)
            return -errno;
    }
    return UV_EEXIST;
}

static int write_reason(guard_t *g, const char *dir)
{
    char path[PATH_MAX], t[32], line[2048];
    guard_info_t info;
    guard_is_tripped(g, &info);
    guard_reason_line(g, line, sizeof(line));
    snprintf(path, sizeof(path), "%s/reason.txt", dir);
    FILE *f = fopen(path, "we");
    if (!f)
        return -errno;
    fprintf(f, "%s\n", line);
    if (info.tripped) {
        fprintf(f, "tripped by %s at %s\n", guard_signal_name(info.signal),
                guard_format_time(info.since, t, sizeof(t)));
        for (size_t i = 0; i < info.n_evidence; i++)
            fprintf(f, "  %s\n", info.evidence[i]);
    }
    int r = fflush(f) == 0 && fsync(fileno(f)) == 0 ? 0 : -errno;
    return fclose(f) == 0 ? r : -errno;
}

static int snapshot(const cfg_t *cfg, guard_t *g, char *dir, size_t dir_size, char *err,
                    size_t err_size)
{
    const char *data = cfg_get(cfg, "site", "data");
    char root[PATH_MAX], path[PATH_MAX + 64], after[32];
    struct stat st;
    int r = make_snapshot_dir(data, dir, dir_size);
    if (r < 0) {
        dir[0] = '\0'; /* nothing of ours to mark incomplete */
        snprintf(err, err_size, "cannot create %s/diverged/...: %s", data, err_str(r));
        return r;
    }
    r = write_reason(g, dir);
    if (r < 0) {
        snprintf(err, err_size, "cannot write %s/reason.txt: %s", dir, err_str(r));
        return r;
    }
    uint64_t live = live_root(cfg_get(cfg, "site", "docroot"), root, sizeof(root));

    /* The database. */
    MYSQL *db = NULL;
    r = dbdrift_connect(cfg, &db, err, err_size);
    if (r < 0)
        return r;
    if (r == 0) {
        r = dumps_write(db, cfg_get(cfg, "database", "name"), dir, live, err, err_size);
        ctldb_close(db);
        if (r < 0)
            return r;
        snprintf(path, sizeof(path), "%s/gen%" PRIu64 ".sql.zst", dir, live);
        r = fsync_path(path, false);
        if (r < 0) {
            snprintf(err, err_size, "cannot fsync %.900s: %s", path, err_str(r));
            return r;
        }
        printf("saved the live database: %s\n", path);
    }

    /* The files created or changed since the generation went live. */
    if (live && lstat(cfg_get(cfg, "site", "docroot"), &st) == 0) {
        snprintf(after, sizeof(after), "@%lld", (long long)st.st_mtime - 1);
        snprintf(path, sizeof(path), "%s/files.tar.zst", dir);
        char *argv[] = {"tar", "--zstd",        "-cf", path, "-C",
                        root,  "--newer-mtime", after, ".",  NULL};
        r = run_tool(argv, err, err_size);
        if (r == 0)
            r = fsync_path(path, false);
        if (r < 0) {
            if (!err[0])
                snprintf(err, err_size, "cannot fsync %.900s: %s", path, err_str(r));
            return r;
        }
        printf("saved the files changed since generation %" PRIu64 " went live: %s\n", live, path);
    }
    r = fsync_path(dir, true);
    if (r == 0) {
        snprintf(path, sizeof(path), "%s/diverged", data);
        r = fsync_path(path, true);
    }
    if (r < 0)
        snprintf(err, err_size, "cannot fsync %s: %s", dir, err_str(r));
    return r;
}

int cmd_resolve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"discard-local", no_argument, NULL, 'd'},
        {"note", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *note = NULL;
    bool discard = false;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:dn:h", opts, NULL)) != -1) {
        if (opt == 'c') {
            config = optarg;
        } else if (opt == 'd') {
            discard = true;
        } else if (opt == 'n') {
            note = optarg;
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
    guard_t *g = NULL;
    char err[1024] = "", dir[PATH_MAX] = "", line[1024];
    r = guard_open(cfg_get(cfg, "site", "data"), &g, err, sizeof(err));
    if (r < 0) {
        log_error("cannot read the write guard's state: %s", err);
        goto out;
    }
    if (!guard_is_tripped(g, NULL)) {
        if (guard_reason_line(g, line, sizeof(line)))
            printf("the write guard is not tripped, but syncs are refused: %s\nThat ends with the "
                   "primary's UP notification.\n",
                   line);
        else
            printf("the write guard is not tripped: syncs apply; nothing to resolve\n");
        goto out;
    }
    if (!discard) {
        guard_reason_line(g, line, sizeof(line));
        log_error("refusing: the backup has local changes (%s). 'resolve --discard-local' "
                  "saves them under [site] data/diverged/ and lets the next sync overwrite "
                  "them; to keep them, run 'export-local-changes' and apply its output on the "
                  "primary first",
                  line);
        r = ERR_USAGE;
        goto out;
    }
    r = snapshot(cfg, g, dir, sizeof(dir), err, sizeof(err));
    if (r < 0) {
        log_error("the diverged state could not be saved, so the guard stays tripped: %s",
                  err[0] ? err : err_str(r));
        if (dir[0]) { /* keep what was written, marked as such */
            char bad[PATH_MAX + 16];
            snprintf(bad, sizeof(bad), "%s.incomplete", dir);
            rename(dir, bad);
        }
        goto out;
    }
    /* The next sync must replace what the backup changed, not only what the primary did. */
    int data_fd = open(cfg_get(cfg, "site", "data"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    r = data_fd < 0 ? -errno
                    : safefs_write_atomic(data_fd, SYNC_RESYNC_FILE, dir, strlen(dir), 0600);
    if (data_fd >= 0)
        close(data_fd);
    if (r < 0) {
        log_error("cannot mark %s/%s for the next sync: %s; the guard stays tripped",
                  cfg_get(cfg, "site", "data"), SYNC_RESYNC_FILE, err_str(r));
        goto out;
    }
    char full_note[PATH_MAX + 300];
    snprintf(full_note, sizeof(full_note), "resolve --discard-local; snapshot %s%s%s", dir,
             note ? "; " : "", note ? note : "");
    r = guard_clear(g, full_note);
    if (r < 0) {
        log_error("cannot clear the write guard in %s/guard: %s (the snapshot is in %s)",
                  cfg_get(cfg, "site", "data"), err_str(r), dir);
        goto out;
    }
    printf("snapshot of the diverged backup: %s\nthe write guard is cleared: the next sync "
           "applies and replaces every table and every file changed on the backup\n",
           dir);
out:
    guard_free(g);
    cfg_free(cfg);
    return err_exit_code(r);
}
