/* The failover webhook: an HTTPS endpoint for Cloudflare Notifications (a "generic webhook"
 * destination with a secret) that records the primary's DOWN and UP health events in the guard
 * (guard_note_primary). While the primary is reported DOWN the backup is serving, and syncs are
 * refused even before any write is seen.
 *
 * HTTP, minimal and strict: one POST per connection (Connection: close), HTTP/1.0 or 1.1,
 * request line and headers at most WEBHOOK_MAX_HEAD bytes, a Content-Length body of at most
 * WEBHOOK_MAX_BODY bytes (chunked transfer coding is refused with 411), "Expect: 100-continue"
 * honoured, the whole request within the timeout. The secret arrives in the cf-webhook-auth
 * header and is compared in constant time (SHA-256 of both sides, CRYPTO_memcmp); a request
 * without it is answered 401 before its body is read.
 *
 * TLS: OpenSSL over memory BIOs on a libuv TCP stream (as common/conn.c), server-only (Cloudflare
 * presents no client certificate, so common/tls.c's pinned mutual engine does not fit), TLS 1.2
 * or 1.3 (Cloudflare's webhook client is not documented to do 1.3 only), renegotiation refused.
 *
 * Payload (Cloudflare's generic webhook schema): {"name", "text", "ts", "alert_type",
 * "alert_event", "data": {...}}. DOWN or UP comes from data's new_health / health / status
 * ("Unhealthy", "Healthy"), else from alert_event (ALERT_STATE_EVENT_START = down, _END = up) of
 * a health alert, else from the words "unhealthy" / "healthy" in text. With pools configured
 * ([guard] webhook_pool), only notifications naming one of them (data.pool_name,
 * data.origin_name or the text) count. Others, and Cloudflare's test message, are answered 200
 * and only logged.
 *
 * Loop thread only.
 */
#ifndef UNDERSTUDY_WEBHOOK_H
#define UNDERSTUDY_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cfg.h"
#include "guard.h"

#define WEBHOOK_MAX_HEAD   (16 * 1024)
#define WEBHOOK_MAX_BODY   (64 * 1024)
#define WEBHOOK_MAX_CONNS  32
#define WEBHOOK_TIMEOUT_MS 10000
#define WEBHOOK_MAX_POOLS  16

typedef struct webhook webhook_t;

typedef struct webhook_opts {
    const char *listen; /* HOST:PORT, numeric host; port 0 picks one (see webhook_port) */
    const char *cert_path, *key_path, *secret_file;
    const char *const *pools; /* [guard] webhook_pool */
    size_t n_pools;
    uint64_t timeout_ms; /* 0: WEBHOOK_TIMEOUT_MS */
} webhook_opts_t;

/* Called on the loop thread after a relevant DOWN or UP was recorded in the guard (e.g. to run
 * alert_check at once). */
typedef void (*webhook_event_fn)(void *ctx, guard_primary_t state, const char *detail);

/* What a notification says. */
typedef struct webhook_note {
    guard_primary_t state; /* GUARD_PRIMARY_UNKNOWN: says neither */
    bool relevant;         /* about a configured pool (always true without pools) */
    char detail[GUARD_DETAIL_LEN];
} webhook_note_t;

/* Fills *ret from a controller configuration's [guard] webhook_* keys (borrowed strings).
 * Returns false when webhook_listen is not set (no webhook). */
bool webhook_opts_from_cfg(const cfg_t *cfg, webhook_opts_t *ret);

/* Loads certificate, key (must be mode 0600 or stricter) and secret, binds and listens.
 * Notifications go to guard; on_event (may be NULL) is called after each recorded one. Returns
 * 0 and *ret, or a negative code with a one-line explanation in err. */
int webhook_start(uv_loop_t *loop, const webhook_opts_t *opts, guard_t *guard,
                  webhook_event_fn on_event, void *ctx, webhook_t **ret, char *err,
                  size_t err_size);

/* The bound port. */
int webhook_port(const webhook_t *w);

/* Closes the listener and every connection; the webhook is freed once their close callbacks have
 * run (keep running the loop). Accepts NULL. */
void webhook_stop(webhook_t *w);

/* Parses a notification body (strict JSON, nesting at most 16 deep, strings at most 4 KiB
 * kept). Returns 0 and *ret, or UV_EINVAL for a body that is not a JSON object. Pure; for the
 * tests and the fuzzer. */
int webhook_parse_note(const char *body, size_t len, const char *const *pools, size_t n_pools,
                       webhook_note_t *ret);

/* Compares a received secret with the expected one in constant time. */
bool webhook_secret_equal(const char *expected, const char *got, size_t got_len);

#endif
