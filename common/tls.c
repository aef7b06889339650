/* TLS 1.3 engine over memory BIOs, with certificate pinning. See tls.h.
 *
 * OpenSSL never sees a socket: rbio holds ciphertext fed from the network, wbio collects
 * ciphertext to send. Peer certificates are not checked against any CA; the verify callback
 * accepts the leaf certificate only when its SHA-256 fingerprint is pinned and its validity dates
 * cover now, and after the handshake the pin is checked once more on the certificate the session
 * actually holds, so no OpenSSL code path can let an unpinned peer through.
 */
#include "tls.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "cfg.h"
#include "err.h"

#define TLS_READ_CHUNK 16384

struct tls_ctx {
    SSL_CTX *ssl_ctx;
    bool is_server;
    char fingerprint[TLS_FP_LEN];
    char (*pins)[TLS_FP_LEN];
    size_t n_pins;
};

struct tls_engine {
    tls_ctx_t *ctx;
    SSL *ssl;
    BIO *rbio; /* network -> OpenSSL */
    BIO *wbio; /* OpenSSL -> network */
    bool handshake_done;
    bool seen_input; /* the peer sent at least one byte */
    bool seen_tls;   /* ... and its first byte looked like a TLS record */
    int verify_err;  /* ERR_* decided by the verify callback, 0 if none */
    char peer_fp[TLS_FP_LEN];
    char error[512];
};

static int engine_ex_index = -1;

static char *dup_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *dup_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    return strdup(line);
}

/* Returns the first queued OpenSSL error as text and clears the queue. */
static const char *openssl_error(char *out, size_t size)
{
    unsigned long e = ERR_peek_error();
    if (e == 0) {
        snprintf(out, size, "unknown OpenSSL error");
    } else {
        const char *reason = ERR_reason_error_string(e);
        snprintf(out, size, "%s", reason ? reason : "unknown OpenSSL error");
    }
    ERR_clear_error();
    return out;
}

static void fp_format(const unsigned char *md, char ret_fp[TLS_FP_LEN])
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < 32; i++) {
        ret_fp[3 * i] = hex[md[i] >> 4];
        ret_fp[3 * i + 1] = hex[md[i] & 15];
        ret_fp[3 * i + 2] = i == 31 ? '\0' : ':';
    }
}

static int x509_fingerprint(const X509 *cert, char ret_fp[TLS_FP_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!X509_digest(cert, EVP_sha256(), md, &len) || len != 32)
        return ERR_TLS;
    fp_format(md, ret_fp);
    return 0;
}

int tls_fingerprint_parse(const char *text, char ret_fp[TLS_FP_LEN])
{
    unsigned char md[32];
    size_t n = 0;
    int half = -1;

    if (!strncasecmp(text, "sha256:", 7))
        text += 7;
    for (const char *p = text; *p; p++) {
        int v;
        if (*p >= '0' && *p <= '9')
            v = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            v = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            v = *p - 'A' + 10;
        else if (*p == ':' && half < 0)
            continue;
        else
            return ERR_CONFIG;
        if (half < 0) {
            half = v;
            continue;
        }
        if (n == sizeof(md))
            return ERR_CONFIG;
        md[n++] = (unsigned char)(half << 4 | v);
        half = -1;
    }
    if (n != sizeof(md) || half >= 0)
        return ERR_CONFIG;
    fp_format(md, ret_fp);
    return 0;
}

int tls_cert_fingerprint(const char *cert_path, char ret_fp[TLS_FP_LEN])
{
    FILE *f = fopen(cert_path, "r");
    if (!f)
        return -errno;
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!cert) {
        ERR_clear_error();
        return ERR_TLS;
    }
    int r = x509_fingerprint(cert, ret_fp);
    X509_free(cert);
    return r;
}

static bool ctx_is_pinned(const tls_ctx_t *ctx, const char *fp)
{
    for (size_t i = 0; i < ctx->n_pins; i++)
        if (!strcmp(ctx->pins[i], fp))
            return true;
    return false;
}

/* Decides on the peer's leaf certificate; ignores CA chain errors (there is no CA). */
static int on_verify(int preverify_ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_engine_t *e = ssl ? SSL_get_ex_data(ssl, engine_ex_index) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);

    if (!e || !cert)
        return 0;
    if (X509_STORE_CTX_get_error_depth(store) > 0)
        return 1; /* intermediates are irrelevant: only the pinned leaf counts */
    if (x509_fingerprint(cert, e->peer_fp) < 0) {
        e->verify_err = ERR_TLS;
        return 0;
    }
    if (!ctx_is_pinned(e->ctx, e->peer_fp)) {
        e->verify_err = ERR_PEER_UNTRUSTED;
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
        return 0;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
        e->verify_err = ERR_CERT_EXPIRED;
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_HAS_EXPIRED);
        return 0;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0) {
        e->verify_err = ERR_CERT_NOT_YET_VALID;
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_NOT_YET_VALID);
        return 0;
    }
    (void)preverify_ok; /* self-signed and unknown-issuer errors are expected and overridden */
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
}

static int load_identity(SSL_CTX *ssl_ctx, const char *key_path, const char *cert_path,
                         char ret_fp[TLS_FP_LEN], char **ret_error)
{
    char why[256];
    char detail[512];

    int r = cfg_check_secret_file(key_path, detail, sizeof(detail));
    if (r < 0) {
        if (r == ERR_INSECURE_FILE)
            *ret_error = strdup(detail);
        else
            *ret_error = dup_error("cannot read private key %s: %s", key_path, err_str(r));
        return r;
    }
    if (SSL_CTX_use_certificate_file(ssl_ctx, cert_path, SSL_FILETYPE_PEM) != 1) {
        *ret_error =
            dup_error("cannot load certificate %s: %s", cert_path, openssl_error(why, sizeof(why)));
        return ERR_CONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        *ret_error =
            dup_error("cannot load private key %s: %s", key_path, openssl_error(why, sizeof(why)));
        return ERR_CONFIG;
    }
    if (SSL_CTX_check_private_key(ssl_ctx) != 1) {
        ERR_clear_error();
        *ret_error = dup_error("private key %s does not match certificate %s", key_path, cert_path);
        return ERR_CONFIG;
    }
    X509 *own = SSL_CTX_get0_certificate(ssl_ctx);
    return x509_fingerprint(own, ret_fp);
}

int tls_ctx_new(bool is_server, const char *key_path, const char *cert_path,
                const char *const *pins, size_t n_pins, tls_ctx_t **ret_ctx, char **ret_error)
{
    char *scratch = NULL;
    char **error = ret_error ? ret_error : &scratch;
    tls_ctx_t *ctx;
    int r;

    *error = NULL;
    if (engine_ex_index < 0)
        engine_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return UV_ENOMEM;
    ctx->is_server = is_server;
    ctx->pins = calloc(n_pins ? n_pins : 1, sizeof(*ctx->pins));
    ctx->ssl_ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (!ctx->pins || !ctx->ssl_ctx) {
        r = UV_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n_pins; i++) {
        if (tls_fingerprint_parse(pins[i], ctx->pins[i]) < 0) {
            *error = dup_error("invalid fingerprint \"%s\"", pins[i]);
            r = ERR_CONFIG;
            goto fail;
        }
    }
    ctx->n_pins = n_pins;

    SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx->ssl_ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx->ssl_ctx,
                        SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx->ssl_ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, on_verify);
    r = load_identity(ctx->ssl_ctx, key_path, cert_path, ctx->fingerprint, error);
    if (r < 0)
        goto fail;
    *ret_ctx = ctx;
    return 0;

fail:
    free(scratch);
    tls_ctx_free(ctx);
    return r;
}

int tls_ctx_check_validity(const tls_ctx_t *ctx)
{
    X509 *own = SSL_CTX_get0_certificate(ctx->ssl_ctx);
    if (X509_cmp_current_time(X509_get0_notAfter(own)) <= 0)
        return ERR_CERT_EXPIRED;
    if (X509_cmp_current_time(X509_get0_notBefore(own)) >= 0)
        return ERR_CERT_NOT_YET_VALID;
    return 0;
}

void tls_ctx_free(tls_ctx_t *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx->pins);
    free(ctx);
}

const char *tls_ctx_fingerprint(const tls_ctx_t *ctx)
{
    return ctx->fingerprint;
}

void tls_ctx_force_tls12_for_tests(tls_ctx_t *ctx)
{
    SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
}

int tls_engine_new(tls_ctx_t *ctx, tls_engine_t **ret_engine)
{
    tls_engine_t *e = calloc(1, sizeof(*e));
    if (!e)
        return UV_ENOMEM;
    e->ctx = ctx;
    e->ssl = SSL_new(ctx->ssl_ctx);
    e->rbio = BIO_new(BIO_s_mem());
    e->wbio = BIO_new(BIO_s_mem());
    if (!e->ssl || !e->rbio || !e->wbio) {
        BIO_free(e->rbio);
        BIO_free(e->wbio);
        SSL_free(e->ssl);
        free(e);
        ERR_clear_error();
        return UV_ENOMEM;
    }
    /* An empty read BIO means "no data yet", not end of file. */
    BIO_set_mem_eof_return(e->rbio, -1);
    SSL_set_bio(e->ssl, e->rbio, e->wbio);
    SSL_set_ex_data(e->ssl, engine_ex_index, e);
    if (ctx->is_server)
        SSL_set_accept_state(e->ssl);
    else
        SSL_set_connect_state(e->ssl);
    *ret_engine = e;
    return 0;
}

void tls_engine_free(tls_engine_t *e)
{
    if (!e)
        return;
    SSL_free(e->ssl); /* frees both BIOs */
    free(e);
}

int tls_engine_feed(tls_engine_t *e, const void *data, size_t len)
{
    if (len > 0 && !e->seen_input) {
        /* A TLS record starts with content type 20..24 and major version 3. */
        const unsigned char *p = data;
        e->seen_input = true;
        e->seen_tls = p[0] >= 20 && p[0] <= 24 && (len < 2 || p[1] == 3);
    }
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int n = BIO_write(e->rbio, data, chunk);
        if (n <= 0)
            return UV_ENOMEM;
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    return 0;
}

static const char *alert_reason(int reason)
{
    switch (reason) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
        return "bad_certificate";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
        return "certificate_unknown";
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return "certificate_expired";
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return "certificate_required";
    default:
        return "";
    }
}

/* Turns an OpenSSL failure into one of our codes and a sentence. */
static int engine_fail(tls_engine_t *e, int ssl_error)
{
    char why[256];
    unsigned long code = ERR_peek_error();
    int reason = ERR_GET_REASON(code);

    if (e->verify_err) {
        int r = e->verify_err;
        ERR_clear_error();
        if (r == ERR_PEER_UNTRUSTED)
            snprintf(e->error, sizeof(e->error),
                     "peer certificate fingerprint %s is not trusted; if this peer is yours, add "
                     "it to the config: fingerprint = %s",
                     e->peer_fp, e->peer_fp);
        else if (r == ERR_CERT_EXPIRED)
            snprintf(e->error, sizeof(e->error), "peer certificate %s has expired", e->peer_fp);
        else if (r == ERR_CERT_NOT_YET_VALID)
            snprintf(e->error, sizeof(e->error),
                     "peer certificate %s is not yet valid (check both clocks)", e->peer_fp);
        else
            snprintf(e->error, sizeof(e->error), "cannot read the peer certificate");
        return r;
    }
    if (ssl_error == SSL_ERROR_SYSCALL && code == 0) {
        snprintf(e->error, sizeof(e->error), "peer closed the connection during the handshake");
        return e->seen_input && !e->seen_tls ? ERR_NOT_TLS : ERR_PEER_CLOSED;
    }
    openssl_error(why, sizeof(why));
    switch (reason) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED: {
        /* The alert is generic; our own dates say whether validity was the reason. */
        int own = tls_ctx_check_validity(e->ctx);
        if (own < 0) {
            snprintf(e->error, sizeof(e->error),
                     "the peer rejected our certificate %s, which %s; check the clocks or "
                     "renew it with 'init --force'",
                     e->ctx->fingerprint,
                     own == ERR_CERT_EXPIRED ? "has expired" : "is not yet valid");
            return own;
        }
        if (reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED) {
            snprintf(e->error, sizeof(e->error),
                     "the peer says our certificate %s has expired; check the clocks",
                     e->ctx->fingerprint);
            return ERR_CERT_EXPIRED;
        }
        snprintf(e->error, sizeof(e->error),
                 "the peer rejected our certificate %s (alert %s): give the peer's admin this "
                 "fingerprint to trust",
                 e->ctx->fingerprint, alert_reason(reason));
        return ERR_REJECTED_BY_PEER;
    }
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_WRONG_SSL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
        snprintf(e->error, sizeof(e->error),
                 "the peer does not speak TLS 1.3 (%s); understudy requires TLS 1.3", why);
        return ERR_TLS_VERSION;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
        if (!e->handshake_done) {
            snprintf(e->error, sizeof(e->error), "the peer does not speak TLS (%s)", why);
            return ERR_NOT_TLS;
        }
        break;
    default:
        break;
    }
    if (e->seen_input && !e->seen_tls) {
        snprintf(e->error, sizeof(e->error), "the peer does not speak TLS (%s)", why);
        return ERR_NOT_TLS;
    }
    snprintf(e->error, sizeof(e->error), "TLS failure: %s", why);
    return ERR_TLS;
}

/* Checks the pin once more on the certificate the session holds. */
static int engine_check_peer(tls_engine_t *e)
{
    X509 *peer = SSL_get0_peer_certificate(e->ssl);
    if (!peer) {
        snprintf(e->error, sizeof(e->error), "the peer presented no certificate");
        return ERR_PEER_UNTRUSTED;
    }
    if (x509_fingerprint(peer, e->peer_fp) < 0 || !ctx_is_pinned(e->ctx, e->peer_fp)) {
        snprintf(e->error, sizeof(e->error), "peer certificate fingerprint %s is not trusted",
                 e->peer_fp);
        return ERR_PEER_UNTRUSTED;
    }
    if (SSL_version(e->ssl) != TLS1_3_VERSION) {
        snprintf(e->error, sizeof(e->error), "negotiated %s instead of TLS 1.3",
                 SSL_get_version(e->ssl));
        return ERR_TLS_VERSION;
    }
    return 0;
}

int tls_engine_handshake(tls_engine_t *e)
{
    if (e->handshake_done)
        return 1;
    ERR_clear_error();
    int n = SSL_do_handshake(e->ssl);
    if (n == 1) {
        int r = engine_check_peer(e);
        if (r < 0)
            return r;
        e->handshake_done = true;
        return 1;
    }
    int err = SSL_get_error(e->ssl, n);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return 0;
    return engine_fail(e, err);
}

int tls_engine_read(tls_engine_t *e, buf_t *out)
{
    int r = tls_engine_handshake(e);
    if (r <= 0)
        return r;
    for (;;) {
        uint8_t *p = buf_reserve(out, TLS_READ_CHUNK);
        if (!p)
            return UV_ENOBUFS;
        ERR_clear_error();
        int n = SSL_read(e->ssl, p, TLS_READ_CHUNK);
        if (n > 0) {
            buf_commit(out, (size_t)n);
            continue;
        }
        int err = SSL_get_error(e->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            return 0;
        if (err == SSL_ERROR_ZERO_RETURN) {
            snprintf(e->error, sizeof(e->error), "the peer closed the connection");
            return ERR_PEER_CLOSED;
        }
        return engine_fail(e, err);
    }
}

int tls_engine_write(tls_engine_t *e, const void *data, size_t len)
{
    if (!e->handshake_done)
        return ERR_TLS;
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        ERR_clear_error();
        int n = SSL_write(e->ssl, data, chunk);
        if (n <= 0)
            return engine_fail(e, SSL_get_error(e->ssl, n));
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    return 0;
}

int tls_engine_shutdown(tls_engine_t *e)
{
    ERR_clear_error();
    if (SSL_shutdown(e->ssl) < 0)
        ERR_clear_error();
    return 0;
}

size_t tls_engine_pending_output(const tls_engine_t *e)
{
    return BIO_ctrl_pending(e->wbio);
}

int tls_engine_take_output(tls_engine_t *e, buf_t *out)
{
    size_t pending = BIO_ctrl_pending(e->wbio);
    while (pending > 0) {
        int chunk = pending > INT_MAX ? INT_MAX : (int)pending;
        uint8_t *p = buf_reserve(out, (size_t)chunk);
        if (!p)
            return UV_ENOBUFS;
        int n = BIO_read(e->wbio, p, chunk);
        if (n <= 0)
            break;
        buf_commit(out, (size_t)n);
        pending -= (size_t)n;
    }
    return 0;
}

size_t tls_engine_output(tls_engine_t *e, void *dst, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t want = len - done;
        int n = BIO_read(e->wbio, (char *)dst + done, want > INT_MAX ? INT_MAX : (int)want);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    return done;
}

bool tls_engine_handshake_done(const tls_engine_t *e)
{
    return e->handshake_done;
}

const char *tls_engine_peer_fingerprint(const tls_engine_t *e)
{
    return e->peer_fp;
}

const char *tls_engine_version(const tls_engine_t *e)
{
    return SSL_get_version(e->ssl);
}

const char *tls_engine_last_error(const tls_engine_t *e)
{
    return e->error;
}

/* Writes a PEM object to path through a temp file in the same directory, renamed into place. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return UV_ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int r = -errno;
        close(fd);
        unlink(tmp);
        return r;
    }
    int ok =
        key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        ERR_clear_error();
        return UV_EIO;
    }
    return 0;
}

static X509 *make_cert(EVP_PKEY *key, const char *common_name, int not_before_days, int days)
{
    X509 *cert = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    X509_NAME *name;

    if (!cert || RAND_bytes(serial, sizeof(serial)) != 1)
        goto fail;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)))
        goto fail;
    X509_set_version(cert, X509_VERSION_3);
    if (!X509_gmtime_adj(X509_getm_notBefore(cert), -(long)not_before_days * 86400L) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400L))
        goto fail;
    name = X509_get_subject_name(cert);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name,
                                    -1, -1, 0) ||
        !X509_set_issuer_name(cert, name) || !X509_set_pubkey(cert, key))
        goto fail;
    if (!X509_sign(cert, key, NULL))
        goto fail;
    BN_free(bn);
    return cert;
fail:
    BN_free(bn);
    X509_free(cert);
    return NULL;
}

int tls_identity_create(const char *key_path, const char *cert_path, const char *common_name,
                        int not_before_days, int days, bool force, char ret_fp[TLS_FP_LEN],
                        char **ret_error)
{
    char *scratch = NULL;
    char **error = ret_error ? ret_error : &scratch;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    char why[256];
    int r;

    *error = NULL;
    if (!force && access(key_path, F_OK) == 0) {
        *error = dup_error("%s already exists; keeping it (use --force to replace this "
                           "identity, then update the peer's fingerprint)",
                           key_path);
        return ERR_EXISTS;
    }
    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (key)
        cert = make_cert(key, common_name, not_before_days, days);
    if (!key || !cert) {
        *error =
            dup_error("cannot create a key and certificate: %s", openssl_error(why, sizeof(why)));
        r = ERR_TLS;
        goto out;
    }
    r = write_pem(key_path, 0600, key, NULL);
    if (r < 0) {
        *error = dup_error("cannot write %s: %s", key_path, err_str(r));
        goto out;
    }
    r = write_pem(cert_path, 0644, NULL, cert);
    if (r < 0) {
        *error = dup_error("cannot write %s: %s", cert_path, err_str(r));
        goto out;
    }
    r = x509_fingerprint(cert, ret_fp);
out:
    free(scratch);
    EVP_PKEY_free(key);
    X509_free(cert);
    return r;
}
