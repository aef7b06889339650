/* understudy-agent cron: prints the crontab line that runs the agent; and the priority drop that
 * keeps a scheduled sync from competing with the web server. */
#include "agent.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<linux/ioprio.h>)
#include <linux/ioprio.h>
#endif
#endif

#include "err.h"
#include "log.h"

/* Older kernel headers lack linux/ioprio.h; these values are the kernel ABI. */
#ifndef IOPRIO_CLASS_SHIFT
#define IOPRIO_CLASS_SHIFT 13
#endif
#ifndef IOPRIO_PRIO_VALUE
#define IOPRIO_PRIO_VALUE(class, data) (((class) << IOPRIO_CLASS_SHIFT) | (data))
#define IOPRIO_CLASS_IDLE              3
#define IOPRIO_WHO_PROCESS             1
#endif

#define CRON_DEFAULT_EVERY 4

void agent_lower_priority(void)
{
    if (setpriority(PRIO_PROCESS, 0, 19) < 0)
        log_debug("cannot lower the CPU priority: %s", strerror(errno));
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)) < 0)
        log_debug("cannot lower the I/O priority: %s", strerror(errno));
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: understudy-agent cron --config FILE [--every HOURS] [--binary PATH]\n\n"
            "Prints the crontab lines that run 'understudy-agent sync' for this site; add them\n"
            "with 'crontab -e' as the user that owns the site's files.\n\n"
            "  --config FILE   the agent's configuration (required; made absolute)\n"
            "  --every HOURS   hours between syncs, 1 to 24 (default %d)\n"
            "  --binary PATH   the agent to run (default: this program)\n\n"
            "The minute is chosen from a hash of the host name and the config path, so the\n"
            "line is the same each time it is printed and sites do not all sync at once.\n",
            CRON_DEFAULT_EVERY);
}

/* Parses "--every" as whole hours in 1..24. Returns 0 or ERR_USAGE. */
static int parse_every(const char *text, unsigned *ret_every)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno || v < 1 || v > 24) {
        log_error("--every: expected whole hours from 1 to 24, got \"%s\"", text);
        return ERR_USAGE;
    }
    *ret_every = (unsigned)v;
    return 0;
}

/* Resolves path to an absolute one without symlinks into ret_path (PATH_MAX bytes). Returns 0
 * or ERR_USAGE after logging what is wrong. */
static int resolve(const char *what, const char *path, char *ret_path)
{
    char resolved[PATH_MAX];
    if (!realpath(path, resolved)) {
        log_error("%s %s: %s", what, path, strerror(errno));
        return ERR_USAGE;
    }
    if (strchr(resolved, '\n')) {
        log_error("%s %s: a path with a newline cannot appear in a crontab", what, path);
        return ERR_USAGE;
    }
    memcpy(ret_path, resolved, strlen(resolved) + 1);
    return 0;
}

/* Minute 0..59 that is stable for one site: FNV-1a of the host name and the config path. */
static unsigned site_minute(const char *config)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0)
        host[0] = '\0';
    uint32_t h = 2166136261u;
    for (const char *p = host;; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
        if (!*p)
            break;
    }
    for (const char *p = config; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % 60;
}

/* Writes one word of a crontab command: as it is when it is plainly safe, else in single quotes
 * for /bin/sh. Cron turns an unescaped '%' into a newline, so '%' is written as "\%" (cron
 * removes the backslash before the shell sees it). */
static void put_word(FILE *f, const char *s)
{
    if (*s &&
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-+,:@=") ==
            strlen(s)) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", f);
        else if (*s == '%')
            fputs("\\%", f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
}

int cmd_cron(int argc, char **argv)
{
    const char *config_arg = NULL, *binary_arg = "/proc/self/exe";
    unsigned every = CRON_DEFAULT_EVERY;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = NULL;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            return 0;
        }
        static const char *const with_value[] = {"--config", "--every", "--binary"};
        size_t k, n = 0;
        for (k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++) {
            n = strlen(with_value[k]);
            if (!strncmp(opt, with_value[k], n) && (opt[n] == '\0' || opt[n] == '='))
                break;
        }
        if (k == sizeof(with_value) / sizeof(with_value[0])) {
            log_error("cron: unknown option '%s'; run 'understudy-agent cron --help'", opt);
            return err_exit_code(ERR_USAGE);
        }
        if (opt[n] == '=') {
            val = opt + n + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            log_error("cron: %s needs a value; run 'understudy-agent cron --help'", opt);
            return err_exit_code(ERR_USAGE);
        }
        if (k == 0) {
            config_arg = val;
        } else if (k == 1) {
            int r = parse_every(val, &every);
            if (r < 0)
                return err_exit_code(r);
        } else {
            binary_arg = val;
        }
    }
    if (!config_arg) {
        log_error("cron: --config FILE is required; run 'understudy-agent cron --help'");
        return err_exit_code(ERR_USAGE);
    }

    char config[PATH_MAX], binary[PATH_MAX];
    int r = resolve("--config", config_arg, config);
    if (r >= 0)
        r = resolve("--binary", binary_arg, binary);
    if (r < 0)
        return err_exit_code(r);
    if (access(binary, X_OK) < 0) {
        log_error("--binary %s: not executable: %s", binary, strerror(errno));
        return err_exit_code(ERR_USAGE);
    }

    /* Loading the configuration catches mistakes now rather than in cron mail hours later. */
    cfg_t *cfg;
    r = agent_load_config(config, &cfg);
    if (r < 0)
        return err_exit_code(r);

    if (24 % every)
        log_warn("24 is not a multiple of %u: cron starts counting again at midnight, so the "
                 "last interval of each day is %u hours",
                 every, 24 % every);

    /* Hour field: every hour, once a day at midnight, or every N hours from midnight. */
    char hours[16];
    if (every == 1)
        snprintf(hours, sizeof(hours), "*");
    else if (every == 24)
        snprintf(hours, sizeof(hours), "0");
    else
        snprintf(hours, sizeof(hours), "*/%u", every);

    const char *site = cfg_get(cfg, "site", "id");
    printf("# understudy: sync %s every ", site ? site : "default");
    if (every == 1)
        printf("hour");
    else
        printf("%u hours", every);
    printf(" (installed with: crontab -e)\n");
    printf("%u %s * * * ", site_minute(config), hours);
    put_word(stdout, binary);
    fputs(" sync --config ", stdout);
    put_word(stdout, config);
    fputc('\n', stdout);
    cfg_free(cfg);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("cannot write the crontab line: %s", strerror(errno));
        return err_exit_code(-EIO);
    }
    return 0;
}
