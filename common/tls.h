/* TLS 1.3 with mutual, pinned authentication, driven through memory BIOs.
 *
 * The engine knows nothing about sockets or libuv: ciphertext from the network goes in with
 * tls_engine_feed(), ciphertext to send comes out with tls_engine_take_output(), plaintext goes in
 * with tls_engine_write() and comes out of tls_engine_read() (the h2o model).
 *
 * Trust is by pinning, as in Syncthing: both sides present a certificate (usually self-signed) and
 * accept the peer only when the SHA-256 fingerprint of the peer's leaf certificate is one of the
 * configured pins; no CA is consulted. Validity dates are still enforced. Only TLS 1.3 is offered
 * or accepted, so there is no renegotiation.
 */
#ifndef UNDERSTUDY_TLS_H
#define UNDERSTUDY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* "AB:CD:..." : 32 bytes as upper-case hex pairs joined by ':' (as `openssl x509 -fingerprint
 * -sha256` prints), plus NUL. */
#define TLS_FP_LEN (32 * 3)

typedef struct tls_ctx tls_ctx_t;
typedef struct tls_engine tls_engine_t;

/* Creates a context from a PEM private key and certificate and the list of accepted peer
 * fingerprints (any accepted format, see tls_fingerprint_parse). Refuses a key file readable by
 * group or others (ERR_INSECURE_FILE). Returns 0 and *ret_ctx, or a negative code; *ret_error (if
 * not NULL) then receives a malloc'ed one-line explanation the caller frees. */
int tls_ctx_new(bool is_server, const char *key_path, const char *cert_path,
                const char *const *pins, size_t n_pins, tls_ctx_t **ret_ctx, char **ret_error);
void tls_ctx_free(tls_ctx_t *ctx);

/* Our own certificate's fingerprint, in display form. */
const char *tls_ctx_fingerprint(const tls_ctx_t *ctx);

/* Returns 0 while our own certificate is within its validity dates, else ERR_CERT_EXPIRED or
 * ERR_CERT_NOT_YET_VALID (the context still works; the peer will refuse us). */
int tls_ctx_check_validity(const tls_ctx_t *ctx);

/* Test hook: lets a client context offer only TLS 1.2 (to test the server's refusal). */
void tls_ctx_force_tls12_for_tests(tls_ctx_t *ctx);

/* Creates an engine (one connection). The client side starts the handshake on the first
 * tls_engine_read() or tls_engine_handshake() call. */
int tls_engine_new(tls_ctx_t *ctx, tls_engine_t **ret_engine);
void tls_engine_free(tls_engine_t *e);

/* Gives the engine ciphertext received from the peer. Returns 0 or UV_ENOMEM. */
int tls_engine_feed(tls_engine_t *e, const void *data, size_t len);

/* Advances the handshake. Returns 1 when it is complete, 0 when more input is needed (check
 * tls_engine_take_output for bytes to send), or a negative code: ERR_PEER_UNTRUSTED,
 * ERR_REJECTED_BY_PEER, ERR_NOT_TLS, ERR_TLS_VERSION, ERR_CERT_EXPIRED, ERR_CERT_NOT_YET_VALID,
 * ERR_TLS. Details in tls_engine_last_error(). */
int tls_engine_handshake(tls_engine_t *e);

/* Decrypts whatever plaintext is available and appends it to out (advancing the handshake first
 * if needed). Returns 0 (possibly with nothing appended), ERR_PEER_CLOSED after the peer's
 * close_notify, or a negative code as tls_engine_handshake. */
int tls_engine_read(tls_engine_t *e, buf_t *out);

/* Encrypts plaintext for sending; the handshake must be complete. Returns 0 or a negative code. */
int tls_engine_write(tls_engine_t *e, const void *data, size_t len);

/* Sends close_notify. */
int tls_engine_shutdown(tls_engine_t *e);

/* Number of ciphertext bytes waiting to be sent. */
size_t tls_engine_pending_output(const tls_engine_t *e);

/* Moves waiting ciphertext to the end of out. Returns 0 or UV_ENOMEM/UV_ENOBUFS. */
int tls_engine_take_output(tls_engine_t *e, buf_t *out);

/* Copies up to len waiting ciphertext bytes into dst and returns how many. */
size_t tls_engine_output(tls_engine_t *e, void *dst, size_t len);

bool tls_engine_handshake_done(const tls_engine_t *e);

/* After the handshake (or a fingerprint failure): the peer's fingerprint, or "" if unknown. */
const char *tls_engine_peer_fingerprint(const tls_engine_t *e);

/* Negotiated protocol name ("TLSv1.3"). */
const char *tls_engine_version(const tls_engine_t *e);

/* One line saying what went wrong last, or "". */
const char *tls_engine_last_error(const tls_engine_t *e);

/* Creates a new identity: an Ed25519 key (mode 0600) and a self-signed certificate valid from
 * now - not_before_days to now + days, with the given common name. Refuses to overwrite an
 * existing key unless force (ERR_EXISTS). Writes through temporary files renamed into place.
 * Fills ret_fp with the certificate's fingerprint. On failure *ret_error as in tls_ctx_new. */
int tls_identity_create(const char *key_path, const char *cert_path, const char *common_name,
                        int not_before_days, int days, bool force, char ret_fp[TLS_FP_LEN],
                        char **ret_error);

/* Reads a PEM certificate file and fills ret_fp with its fingerprint. */
int tls_cert_fingerprint(const char *cert_path, char ret_fp[TLS_FP_LEN]);

/* Normalises a fingerprint written as 64 hex digits, with or without ':' separators, in either
 * case, optionally prefixed "sha256:" / "SHA256:", into display form. Returns 0 or ERR_CONFIG. */
int tls_fingerprint_parse(const char *text, char ret_fp[TLS_FP_LEN]);

#endif
