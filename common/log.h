/* Leveled logging to stderr, for the programs (common/ modules do not log: they return codes and
 * keep details on their objects).
 *
 * Lines look like "understudy-controller: error: <message>". With log_set_timestamps(true) (the
 * controller's serve loop) each line starts with an ISO-8601 UTC time.
 */
#ifndef UNDERSTUDY_LOG_H
#define UNDERSTUDY_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_init(const char *program, enum log_level level);
void log_set_level(enum log_level level);
void log_set_timestamps(bool on);
enum log_level log_get_level(void);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_DEBUG)                                                          \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
