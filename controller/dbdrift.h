/* Database drift: whether the live database ([database] name) still holds what the controller
 * applied, leaving out what WordPress writes by itself on plain GET traffic — the database signal
 * of the write guard.
 *
 * Mechanism. For every base table of the live schema, one query computes the row count and an
 * order-independent digest of the rows that no ignore rule matches:
 *   SELECT COUNT(*), BIT_XOR(CONV(LEFT(MD5(CONCAT_WS(',', IFNULL(HEX(CONCAT(c1)),'-'), ...)),
 *          16), 16, 10)) FROM L.t WHERE NOT (rule OR rule ...)
 * (HEX of CONCAT keeps every type exact, binary included; '-' marks NULL, which HEX never
 * produces). The first check after a new live generation (the docroot symlink changed) or after a
 * guard_clear stores these figures as the baseline in data/guard/db-baseline; every later check
 * compares with it, and a difference trips GUARD_SIGNAL_DATABASE naming the first tables that
 * differ ("wp_comments: 1 -> 2 rows", "wp_options: rows changed", "new table x", "table x
 * dropped").
 *
 * The window: writes between the switch (or the clear) and the first check after it (at most one
 * [guard] db_interval, the first one runs on the watch's next tick) become part of the baseline
 * and are not seen by this signal; the access-log signal covers that window.
 *
 * Ignore rules ([guard] db_ignore = TABLE_SUFFIX COLUMN LIKE-PATTERN, repeatable): rows of table
 * <prefix><TABLE_SUFFIX> whose COLUMN matches the SQL LIKE pattern are left out ('_' and '%' are
 * wildcards; write '\_' for a literal underscore). The prefix is the site's $table_prefix, read
 * from the live generation's wp-config.php (default "wp_"). Built in, always on (what a GET
 * request or WP-Cron writes):
 *   options  option_name  \_transient\_%        transients, _transient_doing_cron included
 *   options  option_name  \_site\_transient\_%  site transients (update checks)
 *   options  option_name  cron                  the WP-Cron schedule
 *   options  option_name  %\_children           term hierarchy caches (category_children),
 *                                                rebuilt by the first GET that needs them
 *   options  option_name  https\_detection\_errors, recovery\_keys,
 *                         health-check-site-status-result, rewrite\_rules,
 *                         auto\_updater.lock, core\_updater.lock
 *                                                core housekeeping WP-Cron runs on page views
 *                                                when its event is due (the synced schedule
 *                                                can hold overdue events)
 *   postmeta meta_key     \_edit\_lock          "someone is editing" marks, refreshed by viewing
 * A login writes usermeta session_tokens: deliberately not ignored (a login is a write).
 *
 * Blocking (MySQL): call from a worker thread.
 */
#ifndef UNDERSTUDY_CONTROLLER_DBDRIFT_H
#define UNDERSTUDY_CONTROLLER_DBDRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cfg.h"

#define DBDRIFT_MAX_EXAMPLES 10
#define DBDRIFT_EXAMPLE_LEN  200
#define DBDRIFT_MAX_RULES    64

typedef struct st_mysql MYSQL;

typedef struct dbdrift_rule {
    char table[64];    /* suffix after the prefix: "options" */
    char column[64];   /* "option_name" */
    char pattern[192]; /* LIKE pattern */
} dbdrift_rule_t;

typedef struct dbdrift_rules {
    dbdrift_rule_t v[DBDRIFT_MAX_RULES];
    size_t n;
} dbdrift_rules_t;

typedef struct dbdrift_report {
    bool baseline_written; /* this check stored a new baseline (nothing compared) */
    uint64_t live;         /* the live generation checked */
    uint64_t tables, differing;
    size_t n_examples;
    char examples[DBDRIFT_MAX_EXAMPLES][DBDRIFT_EXAMPLE_LEN];
} dbdrift_report_t;

/* The built-in rules followed by [guard] db_ignore. Returns 0, or ERR_CONFIG with err for a rule
 * that is not "TABLE_SUFFIX COLUMN PATTERN" with plain names. */
int dbdrift_rules_from_cfg(const cfg_t *cfg, dbdrift_rules_t *ret, char *err, size_t err_size);

/* Writes into out the SQL condition that keeps a row of table `table` (its full name) in the
 * comparison: "1" when no rule applies, else "NOT (IFNULL(`c`,'') LIKE 'p' OR ...)", the
 * columns qualified with alias when it is not NULL. Returns 0 or UV_ENOBUFS. */
int dbdrift_keep_clause(const dbdrift_rules_t *rules, const char *prefix, const char *table,
                        const char *alias, char *out, size_t size);

/* The live generation's $table_prefix ("wp_" when it cannot be read) from docroot/wp-config.php,
 * into out (at most 64 bytes of [A-Za-z0-9_]). */
void dbdrift_table_prefix(const char *docroot, char *out, size_t size);

/* Connects to the backup's MariaDB from [database] (password from password_file). Returns 0,
 * 1 when the config has no [database] name (nothing to check), or a negative code with err. */
int dbdrift_connect(const cfg_t *cfg, MYSQL **ret, char *err, size_t err_size);

/* One check: connects, reads the live generation from the docroot symlink, then writes the
 * baseline (a new generation, or baseline older than cleared_at) or compares with it. Returns
 * 0 with *ret filled (drift when ret->differing), 1 when there is nothing to check (no live
 * generation or no [database]), or a negative code with err. */
int dbdrift_check(const cfg_t *cfg, time_t cleared_at, dbdrift_report_t *ret, char *err,
                  size_t err_size);

#endif
