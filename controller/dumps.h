/* Retained database dumps: each applied generation's database, also kept as a zstd-compressed
 * plain SQL file that the stock client restores (zstd -dc FILE | mariadb DB), for [retention]
 * days. Files live in [site] data/dumps/gen<N>.sql.zst (written as a temp file, then renamed).
 */
#ifndef UNDERSTUDY_CONTROLLER_DUMPS_H
#define UNDERSTUDY_CONTROLLER_DUMPS_H

#include <stddef.h>
#include <stdint.h>

typedef struct st_mysql MYSQL;

/* Writes the dump of schema (tables with their rows, views, triggers; DEFINER clauses left out
 * so any account with rights on the target database can restore it) for generation gen into
 * dir (created if missing). The connection's current database becomes schema. Returns 0 or a
 * negative code with err. */
int dumps_write(MYSQL *db, const char *schema, const char *dir, uint64_t gen, char *err,
                size_t err_size);

/* Removes dumps in dir older than days (the newest is always kept). Returns how many it
 * removed, or a negative errno. */
int dumps_prune(const char *dir, unsigned days);

#endif
