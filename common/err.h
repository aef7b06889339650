/* understudy error codes.
 *
 * Functions that can fail return an int: >= 0 on success, a negative code on failure. libuv's
 * codes (negated errno values, -1 .. -4095) pass through unchanged; the project's own codes live
 * above ERR_BASE (far below libuv's range) and are listed once in ERR_MAP with their name, their
 * process exit code and a message. Every program exits with err_exit_code() of the error it stops
 * on, so the exit codes documented in README.md and the man pages are this table.
 */
#ifndef UNDERSTUDY_ERR_H
#define UNDERSTUDY_ERR_H

#define ERR_BASE (-20000)

/* X(name, exit code, message). Exit codes are stable: scripts and cron mail depend on them. */
#define ERR_MAP(X)                                                                                 \
    X(USAGE, 2, "invalid command line")                                                            \
    X(CONFIG, 3, "invalid configuration")                                                          \
    X(INSECURE_FILE, 4, "secret file is readable by group or others")                              \
    X(EXISTS, 5, "refusing to overwrite an existing file")                                         \
    X(UNREACHABLE, 10, "controller unreachable")                                                   \
    X(HANDSHAKE_TIMEOUT, 11, "TLS handshake timed out")                                            \
    X(PEER_UNTRUSTED, 12, "peer certificate fingerprint is not trusted")                           \
    X(REJECTED_BY_PEER, 13, "the peer rejected our certificate")                                   \
    X(NOT_TLS, 14, "peer does not speak TLS")                                                      \
    X(TLS_VERSION, 15, "peer does not support TLS 1.3")                                            \
    X(CERT_EXPIRED, 16, "certificate has expired")                                                 \
    X(CERT_NOT_YET_VALID, 17, "certificate is not yet valid")                                      \
    X(PROTO_VERSION, 18, "protocol version mismatch")                                              \
    X(PROTOCOL, 19, "protocol violation")                                                          \
    X(FRAME_TOO_LARGE, 19, "frame exceeds the size limit")                                         \
    X(TLS, 20, "TLS failure")                                                                      \
    X(IDLE_TIMEOUT, 21, "connection idle for too long")                                            \
    X(PEER_CLOSED, 22, "connection closed by the peer")                                            \
    X(OVERLOADED, 23, "too many connections or too much pending output")                           \
    X(WPCONFIG, 30, "wp-config.php could not be read")                                             \
    X(DB_CONNECT, 31, "database connection failed")                                                \
    X(DB_PRIVILEGE, 32, "database user lacks a required privilege")                                \
    X(DB, 33, "database error")                                                                    \
    X(REFUSED, 40, "sync refused by the controller")                                               \
    X(FIREWALL, 50, "firewall ruleset could not be checked or applied")                            \
    X(INTERNAL, 70, "internal error")

enum {
    ERR_FIRST_ = ERR_BASE, /* project codes are ERR_BASE + 1, + 2, ...: all below libuv's range */
#define ERR_ENUM_(name, exit_code, msg) ERR_##name,
    ERR_MAP(ERR_ENUM_)
#undef ERR_ENUM_
        ERR_LAST_
};

/* Returns the symbolic name ("ERR_PEER_UNTRUSTED", "ECONNREFUSED") of an error code. */
const char *err_name(int code);

/* Returns a short human message for an error code (project or libuv/errno). */
const char *err_str(int code);

/* Returns the process exit code for an error: 0 for code >= 0, the table's code for project
 * errors, 1 for system errors (negative errno). */
int err_exit_code(int code);

#endif
