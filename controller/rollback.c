/* understudy-controller rollback / generations: list the kept generations and switch the docroot
 * (and, with a [database] section, the database) back to one of them at once. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controller.h"
#include "dbrecv.h"
#include "err.h"
#include "generation.h"
#include "log.h"

#define MAX_LIST 4096

static void rollback_usage(FILE *f)
{
    fprintf(f, "usage: understudy-controller rollback --config FILE [--to N] [--list]\n\n"
               "Switches the site back to an earlier generation with one atomic rename of the\n"
               "docroot symlink: by default the newest kept generation older than the live\n"
               "one, or generation N with --to N (newer generations stay, so a rollback can be\n"
               "undone with --to). --list (or the 'generations' command) only lists them.\n");
}

static int open_store(const char *config, cfg_t **ret_cfg, dbrecv_t **ret_db, gen_store_t **ret)
{
    char err[1024] = "";
    gen_hooks_t hooks = {0};
    int r = controller_load_config(config, ret_cfg);
    if (r < 0)
        return r;
    const cfg_t *cfg = *ret_cfg;
    r = dbrecv_open(cfg, ret_db, err, sizeof(err));
    if (r < 0) {
        log_error("%s", err[0] ? err : err_str(r));
        return r;
    }
    if (*ret_db)
        hooks = dbrecv_hooks(*ret_db);
    gen_opts_t opts = {
        .data = cfg_get(cfg, "site", "data"),
        .docroot = cfg_get(cfg, "site", "docroot"),
        .owner = cfg_get(cfg, "site", "owner"),
        .keep = (unsigned)cfg_get_uint(cfg, "retention", "generations", 10),
        .max_files = cfg_get_uint(cfg, "limits", "max_files", 1000000),
        .max_file_size = cfg_get_size(cfg, "limits", "max_file_size", 4ull << 30),
        .max_total_size = cfg_get_size(cfg, "limits", "max_total_size", 64ull << 30),
    };
    r = gen_store_open(&opts, &hooks, ret, err, sizeof(err));
    if (r < 0)
        log_error("%s", err[0] ? err : err_str(r));
    return r;
}

static void print_list(gen_store_t *g, const uint64_t *v, size_t n)
{
    if (!n) {
        printf("no generations yet\n");
        return;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s %" PRIu64 "\n", v[i] == gen_store_live(g) ? "*" : " ", v[i]);
}

static int run(const char *config, bool list, uint64_t to)
{
    cfg_t *cfg = NULL;
    dbrecv_t *db = NULL;
    gen_store_t *g = NULL;
    uint64_t *v = calloc(MAX_LIST, sizeof(*v));
    char err[1024] = "";
    int r;

    if (!v)
        return err_exit_code(-ENOMEM);
    r = open_store(config, &cfg, &db, &g);
    if (r < 0)
        goto out;
    size_t n = gen_store_list(g, v, MAX_LIST);
    uint64_t live = gen_store_live(g);
    if (list) {
        print_list(g, v, n);
        goto out;
    }
    if (!to) {
        for (size_t i = 0; i < n && !to; i++)
            if (v[i] < live)
                to = v[i];
        if (!to) {
            log_error("no generation older than the live one (%" PRIu64 ") is kept; the "
                      "generations are:",
                      live);
            print_list(g, v, n);
            r = ERR_USAGE;
            goto out;
        }
    }
    r = gen_store_lock(g, err, sizeof(err));
    if (r == 0) {
        r = gen_rollback(g, to, err, sizeof(err));
        gen_store_unlock(g);
    }
    if (r < 0) {
        log_error("rollback to generation %" PRIu64 " failed: %s", to, err[0] ? err : err_str(r));
        goto out;
    }
    printf("generation %" PRIu64 " is live (was %" PRIu64 ")\n", to, live);
out:
    gen_store_close(g);
    dbrecv_close(db);
    cfg_free(cfg);
    free(v);
    return err_exit_code(r);
}

static int parse_args(int argc, char **argv, bool allow_to, const char **config, bool *list,
                      uint64_t *to)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"to", required_argument, NULL, 't'},
        {"list", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:t:lh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            *config = optarg;
            break;
        case 't': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (!allow_to || errno || *end || !v || optarg[0] == '-') {
                log_error("--to needs a generation number (see --list)");
                return ERR_USAGE;
            }
            *to = v;
            break;
        }
        case 'l':
            *list = true;
            break;
        case 'h':
            rollback_usage(stdout);
            return 1;
        default:
            rollback_usage(stderr);
            return ERR_USAGE;
        }
    }
    if (!*config || optind != argc) {
        log_error("needs --config FILE (and no other arguments); see --help");
        return ERR_USAGE;
    }
    return 0;
}

int cmd_rollback(int argc, char **argv)
{
    const char *config = NULL;
    bool list = false;
    uint64_t to = 0;
    int r = parse_args(argc, argv, true, &config, &list, &to);
    if (r != 0)
        return r > 0 ? 0 : err_exit_code(r);
    return run(config, list, to);
}

int cmd_generations(int argc, char **argv)
{
    const char *config = NULL;
    bool list = true;
    uint64_t to = 0;
    int r = parse_args(argc, argv, false, &config, &list, &to);
    if (r != 0)
        return r > 0 ? 0 : err_exit_code(r);
    return run(config, true, 0);
}
