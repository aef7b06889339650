/* The failover webhook endpoint. See webhook.h.
 *
 * One listener struct owns the TCP listener, the TLS context and the list of connections; one
 * connection struct per client holds its TLS session, its plaintext input, a timer and an explicit
 * state. Callbacks only translate libuv events into calls of the named steps below; every
 * failure ends in conn_close_now(), which closes both handles; the struct is freed when the last
 * close callback ran.
 */
#include "webhook.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "buf.h"
#include "err.h"
#include "log.h"

#define JSON_MAX_DEPTH    16
#define JSON_MAX_FIELDS   32
#define JSON_VALUE_LEN    512
#define SECRET_MAX        1024
#define WEBHOOK_LINGER_MS 2000

/* ---- the notification body: a small strict JSON scanner ---------------------------------- */

typedef struct jfield {
    char key[64];
    char val[JSON_VALUE_LEN];
} jfield_t;

typedef struct jscan {
    const char *p, *end;
    jfield_t top[JSON_MAX_FIELDS], data[JSON_MAX_FIELDS];
    size_t n_top, n_data;
} jscan_t;

enum { CTX_TOP, CTX_DATA, CTX_OTHER };

static void j_ws(jscan_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(const char *p, unsigned *ret)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *ret = v;
    return 0;
}

/* Appends a code point as UTF-8 to out (cut silently at size - 1). */
static void put_utf8(char *out, size_t size, size_t *o, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (*o + n < size) {
        memcpy(out + *o, b, n);
        *o += n;
    }
}

/* Parses a string at j->p (which is '"'), keeping at most size - 1 bytes of it in out (NULL:
 * none). Returns 0 or -1. */
static int j_string(jscan_t *j, char *out, size_t size)
{
    size_t o = 0;
    j->p++;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            if (out && o + 1 < size)
                out[o++] = (char)c;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2)
            return -1;
        char e = j->p[1];
        j->p += 2;
        unsigned cp;
        switch (e) {
        case '"':
            cp = '"';
            break;
        case '\\':
            cp = '\\';
            break;
        case '/':
            cp = '/';
            break;
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            if (j->end - j->p < 4 || hex4(j->p, &cp) < 0)
                return -1;
            j->p += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                    hex4(j->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                j->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                return -1;
            }
            break;
        default:
            return -1;
        }
        if (out)
            put_utf8(out, size, &o, cp);
    }
    if (j->p >= j->end)
        return -1;
    j->p++;
    if (out)
        out[o] = '\0';
    return 0;
}

static int j_number(jscan_t *j, char *out, size_t size)
{
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p))
        return -1;
    if (*j->p == '0')
        j->p++;
    else
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || !isdigit((unsigned char)*j->p))
            return -1;
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !isdigit((unsigned char)*j->p))
            return -1;
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    }
    if (out)
        snprintf(out, size, "%.*s", (int)(j->p - s), s);
    return 0;
}

static int j_value(jscan_t *j, int depth, int ctx, char *out, size_t size);

static int j_object(jscan_t *j, int depth, int ctx)
{
    char key[64];
    j->p++;
    j_ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        j_ws(j);
        if (j->p >= j->end || *j->p != '"' || j_string(j, key, sizeof(key)) < 0)
            return -1;
        j_ws(j);
        if (j->p >= j->end || *j->p++ != ':')
            return -1;
        j_ws(j);
        jfield_t *f = NULL;
        int inner = CTX_OTHER;
        if (ctx == CTX_TOP && !strcmp(key, "data"))
            inner = CTX_DATA;
        else if (ctx == CTX_TOP && j->n_top < JSON_MAX_FIELDS)
            f = &j->top[j->n_top];
        else if (ctx == CTX_DATA && j->n_data < JSON_MAX_FIELDS)
            f = &j->data[j->n_data];
        if (f)
            f->val[0] = '\0';
        if (j_value(j, depth + 1, inner, f ? f->val : NULL, f ? sizeof(f->val) : 0) < 0)
            return -1;
        if (f) {
            snprintf(f->key, sizeof(f->key), "%s", key);
            if (ctx == CTX_TOP)
                j->n_top++;
            else
                j->n_data++;
        }
        j_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return 0;
        }
        return -1;
    }
}

static int j_array(jscan_t *j, int depth)
{
    j->p++;
    j_ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        j_ws(j);
        if (j_value(j, depth + 1, CTX_OTHER, NULL, 0) < 0)
            return -1;
        j_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return 0;
        }
        return -1;
    }
}

static int j_literal(jscan_t *j, const char *word, char *out, size_t size)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n))
        return -1;
    j->p += n;
    if (out)
        snprintf(out, size, "%s", word);
    return 0;
}

/* Parses one value; scalars are copied to out (if given). Objects in CTX_DATA collect fields. */
static int j_value(jscan_t *j, int depth, int ctx, char *out, size_t size)
{
    if (depth > JSON_MAX_DEPTH || j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '{':
        return j_object(j, depth, ctx == CTX_DATA ? CTX_DATA : CTX_OTHER);
    case '[':
        return j_array(j, depth);
    case '"':
        return j_string(j, out, size);
    case 't':
        return j_literal(j, "true", out, size);
    case 'f':
        return j_literal(j, "false", out, size);
    case 'n':
        return j_literal(j, "null", out, size);
    default:
        return j_number(j, out, size);
    }
}

static const char *field(const jfield_t *fs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(fs[i].key, key))
            return fs[i].val;
    return NULL;
}

/* Whether text holds word (case-insensitive) not preceded by a letter. */
static bool has_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; p && *p; p++)
        if (!strncasecmp(p, word, n) && (p == text || !isalpha((unsigned char)p[-1])))
            return true;
    return false;
}

static guard_primary_t health_word(const char *v)
{
    if (!v)
        return GUARD_PRIMARY_UNKNOWN;
    if (!strcasecmp(v, "unhealthy") || !strcasecmp(v, "down") || !strcasecmp(v, "critical"))
        return GUARD_PRIMARY_DOWN;
    if (!strcasecmp(v, "healthy") || !strcasecmp(v, "up"))
        return GUARD_PRIMARY_UP;
    return GUARD_PRIMARY_UNKNOWN;
}

int webhook_parse_note(const char *body, size_t len, const char *const *pools, size_t n_pools,
                       webhook_note_t *ret)
{
    jscan_t *j = calloc(1, sizeof(*j));
    if (!j)
        return UV_ENOMEM;
    j->p = body;
    j->end = body + len;
    j_ws(j);
    int r = j->p < j->end && *j->p == '{' ? j_object(j, 1, CTX_TOP) : -1;
    if (r == 0) {
        j_ws(j);
        if (j->p != j->end)
            r = -1;
    }
    if (r < 0) {
        free(j);
        return UV_EINVAL;
    }
    const char *text = field(j->top, j->n_top, "text");
    const char *type = field(j->top, j->n_top, "alert_type");
    const char *event = field(j->top, j->n_top, "alert_event");
    const char *pool = field(j->data, j->n_data, "pool_name");
    const char *origin = field(j->data, j->n_data, "origin_name");
    guard_primary_t s = health_word(field(j->data, j->n_data, "new_health"));
    if (s == GUARD_PRIMARY_UNKNOWN)
        s = health_word(field(j->data, j->n_data, "health"));
    if (s == GUARD_PRIMARY_UNKNOWN)
        s = health_word(field(j->data, j->n_data, "status"));
    if (s == GUARD_PRIMARY_UNKNOWN && event && type && strstr(type, "health")) {
        if (!strcmp(event, "ALERT_STATE_EVENT_START"))
            s = GUARD_PRIMARY_DOWN;
        else if (!strcmp(event, "ALERT_STATE_EVENT_END"))
            s = GUARD_PRIMARY_UP;
    }
    if (s == GUARD_PRIMARY_UNKNOWN && text) {
        if (has_word(text, "unhealthy"))
            s = GUARD_PRIMARY_DOWN;
        else if (has_word(text, "healthy"))
            s = GUARD_PRIMARY_UP;
    }
    ret->state = s;
    ret->relevant = n_pools == 0;
    for (size_t i = 0; i < n_pools && !ret->relevant; i++)
        ret->relevant = (pool && !strcmp(pool, pools[i])) ||
                        (origin && !strcmp(origin, pools[i])) || (text && strstr(text, pools[i]));
    char raw[3 * JSON_VALUE_LEN + 8];
    snprintf(raw, sizeof(raw), "%s%s%s%s%s", type ? type : "", type ? ": " : "", pool ? pool : "",
             pool ? ": " : "", text ? text : "");
    /* One printable line. */
    size_t o = 0;
    for (const char *p = raw; *p && o + 1 < sizeof(ret->detail); p++)
        ret->detail[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    ret->detail[o] = '\0';
    free(j);
    return 0;
}

bool webhook_secret_equal(const char *expected, const char *got, size_t got_len)
{
    unsigned char a[32], b[32];
    unsigned int la = 0, lb = 0;
    if (!EVP_Digest(expected, strlen(expected), a, &la, EVP_sha256(), NULL) ||
        !EVP_Digest(got, got_len, b, &lb, EVP_sha256(), NULL))
        return false;
    return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

/* ---- the server -------------------------------------------------------------------------- */

typedef struct wconn wconn_t;

struct webhook {
    uv_loop_t *loop;
    uv_tcp_t listener;
    SSL_CTX *ssl_ctx;
    guard_t *guard;
    webhook_event_fn on_event;
    void *ctx;
    char secret[SECRET_MAX];
    char **pools;
    size_t n_pools;
    uint64_t timeout_ms;
    int port;
    unsigned n_conns;
    wconn_t *conns;
    bool stopping;
    bool listener_closed;
    char rbuf[16 * 1024];
};

enum conn_state { CS_TLS, CS_HEAD, CS_BODY, CS_DONE };

struct wconn {
    webhook_t *w;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    enum conn_state state;
    SSL *ssl;
    BIO *rbio, *wbio;
    buf_t in;
    size_t head_len, content_length;
    bool expect_continue;
    char peer[64];
    wconn_t *prev, *next;
};

typedef struct wwrite {
    uv_write_t req;
    char data[];
} wwrite_t;

static void webhook_maybe_free(webhook_t *w)
{
    if (w->stopping && w->listener_closed && w->n_conns == 0) {
        for (size_t i = 0; i < w->n_pools; i++)
            free(w->pools[i]);
        free(w->pools);
        SSL_CTX_free(w->ssl_ctx);
        OPENSSL_cleanse(w->secret, sizeof(w->secret));
        free(w);
    }
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    wconn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    webhook_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    SSL_free(c->ssl); /* frees both BIOs */
    buf_free(&c->in);
    free(c);
    webhook_maybe_free(w);
}

static void conn_close_now(wconn_t *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_write_done(uv_write_t *req, int status)
{
    free(req);
}

/* Sends whatever ciphertext the TLS session produced. */
static int conn_flush(wconn_t *c)
{
    int pending = (int)BIO_ctrl_pending(c->wbio);
    if (pending <= 0 || uv_is_closing((uv_handle_t *)&c->tcp))
        return 0;
    wwrite_t *wr = malloc(sizeof(*wr) + (size_t)pending);
    if (!wr)
        return UV_ENOMEM;
    int n = BIO_read(c->wbio, wr->data, pending);
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)(n > 0 ? n : 0));
    int r = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write_done);
    if (r < 0)
        free(wr);
    return r;
}

static void on_timeout(uv_timer_t *t);

/* The response is written and our side shut down: keep reading (and discarding) until the client
 * closes or a short linger time passes, so that unread request bytes do not make the kernel
 * reset the connection before the client read the response. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    wconn_t *c = req->data;
    free(req);
    if (status < 0) {
        conn_close_now(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, WEBHOOK_LINGER_MS, 0);
}

/* Writes the response, close_notify, and closes once it is written. */
static void conn_respond(wconn_t *c, int status, const char *reason, const char *json)
{
    char resp[512];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason, strlen(json), json);
    c->state = CS_DONE;
    if (SSL_is_init_finished(c->ssl)) {
        SSL_write(c->ssl, resp, n);
        SSL_shutdown(c->ssl);
    }
    uv_shutdown_t *sr = malloc(sizeof(*sr));
    if (conn_flush(c) < 0 || !sr) {
        free(sr);
        conn_close_now(c);
        return;
    }
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(sr);
        conn_close_now(c);
    }
}

/* Parses the request line and headers in c->in (c->head_len bytes, ending "\r\n\r\n").
 * Returns 0, or an HTTP status to answer with. */
static int conn_parse_head(wconn_t *c, const char **ret_reason)
{
    char *head = (char *)buf_data(&c->in);
    char *end = head + c->head_len - 2; /* keep the last line's CRLF */
    char *line = head, *eol;
    bool have_length = false, authorized = false;

    *ret_reason = "Bad Request";
    eol = memmem(line, (size_t)(end - line), "\r\n", 2);
    if (!eol)
        return 400;
    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    char *sp1 = memchr(line, ' ', (size_t)(eol - line));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp2 == sp1 + 1 || sp1[1] != '/')
        return 400;
    if ((size_t)(eol - sp2 - 1) != 8 ||
        (memcmp(sp2 + 1, "HTTP/1.1", 8) && memcmp(sp2 + 1, "HTTP/1.0", 8))) {
        *ret_reason = "HTTP Version Not Supported";
        return 505;
    }
    if (sp1 - line != 4 || memcmp(line, "POST", 4)) {
        *ret_reason = "Method Not Allowed";
        return 405;
    }
    for (line = eol + 2; line < end; line = eol + 2) {
        eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        if (!eol)
            return 400;
        char *colon = memchr(line, ':', (size_t)(eol - line));
        if (!colon || colon == line)
            return 400; /* also obsolete line folding (a line starting with a blank) */
        for (char *p = line; p < colon; p++)
            if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
                return 400;
        size_t nlen = (size_t)(colon - line);
        char *v = colon + 1, *vend = eol;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        for (char *p = v; p < vend; p++)
            if ((unsigned char)*p < 0x20 && *p != '\t')
                return 400;
        size_t vlen = (size_t)(vend - v);
        if (nlen == 14 && !strncasecmp(line, "Content-Length", 14)) {
            size_t n = 0;
            if (have_length || vlen == 0 || vlen > 7)
                return 400;
            for (size_t i = 0; i < vlen; i++) {
                if (!isdigit((unsigned char)v[i]))
                    return 400;
                n = n * 10 + (size_t)(v[i] - '0');
            }
            have_length = true;
            c->content_length = n;
        } else if (nlen == 17 && !strncasecmp(line, "Transfer-Encoding", 17)) {
            *ret_reason = "Length Required";
            return 411;
        } else if (nlen == 6 && !strncasecmp(line, "Expect", 6)) {
            if (vlen != 12 || strncasecmp(v, "100-continue", 12)) {
                *ret_reason = "Expectation Failed";
                return 417;
            }
            c->expect_continue = true;
        } else if (nlen == 15 && !strncasecmp(line, "cf-webhook-auth", 15)) {
            if (authorized)
                return 400;
            authorized = webhook_secret_equal(c->w->secret, v, vlen);
        }
    }
    if (!authorized) {
        *ret_reason = "Unauthorized";
        return 401;
    }
    if (!have_length) {
        *ret_reason = "Length Required";
        return 411;
    }
    if (c->content_length > WEBHOOK_MAX_BODY) {
        *ret_reason = "Content Too Large";
        return 413;
    }
    return 0;
}

static void conn_handle_body(wconn_t *c)
{
    webhook_t *w = c->w;
    webhook_note_t note;
    const char *body = (const char *)buf_data(&c->in) + c->head_len;
    int r = webhook_parse_note(body, c->content_length, (const char *const *)w->pools, w->n_pools,
                               &note);
    if (r < 0) {
        log_warn("webhook: %s sent a body that is not a JSON object; ignored", c->peer);
        conn_respond(c, 400, "Bad Request", "{\"ok\":false,\"error\":\"not a JSON object\"}");
        return;
    }
    if (note.state == GUARD_PRIMARY_UNKNOWN || !note.relevant) {
        log_info("webhook: notification %s: %s",
                 note.relevant ? "without a health state" : "about another pool", note.detail);
        conn_respond(c, 200, "OK", "{\"ok\":true,\"recorded\":\"nothing\"}");
        return;
    }
    r = guard_note_primary(w->guard, note.state, time(NULL), note.detail);
    if (r < 0)
        log_error("webhook: cannot record the primary %s: %s (kept in memory)",
                  note.state == GUARD_PRIMARY_DOWN ? "DOWN" : "UP", err_str(r));
    if (note.state == GUARD_PRIMARY_DOWN)
        log_warn("webhook: Cloudflare reports the primary DOWN (%s); syncs are refused until it "
                 "is reported UP",
                 note.detail);
    else
        log_info("webhook: Cloudflare reports the primary UP (%s)", note.detail);
    if (w->on_event)
        w->on_event(w->ctx, note.state, note.detail);
    conn_respond(c, 200, "OK",
                 note.state == GUARD_PRIMARY_DOWN ? "{\"ok\":true,\"recorded\":\"down\"}"
                                                  : "{\"ok\":true,\"recorded\":\"up\"}");
}

/* Moves decrypted input on: headers, then body. */
static void conn_process(wconn_t *c)
{
    if (c->state == CS_HEAD) {
        size_t scan = c->in.len < WEBHOOK_MAX_HEAD ? c->in.len : WEBHOOK_MAX_HEAD;
        char *hit = scan ? memmem(buf_data(&c->in), scan, "\r\n\r\n", 4) : NULL;
        if (!hit) {
            if (c->in.len >= WEBHOOK_MAX_HEAD)
                conn_respond(c, 431, "Request Header Fields Too Large",
                             "{\"ok\":false,\"error\":\"headers too large\"}");
            return;
        }
        c->head_len = (size_t)(hit + 4 - (char *)buf_data(&c->in));
        const char *reason;
        int status = conn_parse_head(c, &reason);
        if (status) {
            char json[128];
            snprintf(json, sizeof(json), "{\"ok\":false,\"error\":\"%s\"}", reason);
            if (status == 401)
                log_warn("webhook: %s: request without the right cf-webhook-auth secret", c->peer);
            conn_respond(c, status, reason, json);
            return;
        }
        c->state = CS_BODY;
        if (c->expect_continue && c->in.len == c->head_len) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            SSL_write(c->ssl, cont, sizeof(cont) - 1);
        }
    }
    if (c->state == CS_BODY && c->in.len - c->head_len >= c->content_length)
        conn_handle_body(c);
}

/* Feeds ciphertext through the TLS session. */
static void conn_input(wconn_t *c, const char *data, size_t len)
{
    char plain[4096];
    int n;

    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        conn_close_now(c);
        return;
    }
    if (c->state == CS_TLS) {
        n = SSL_do_handshake(c->ssl);
        if (n != 1) {
            int e = SSL_get_error(c->ssl, n);
            conn_flush(c);
            if (e != SSL_ERROR_WANT_READ) {
                log_debug("webhook: %s: TLS handshake failed", c->peer);
                ERR_clear_error();
                conn_close_now(c);
            }
            return;
        }
        c->state = CS_HEAD;
    }
    while (c->state == CS_HEAD || c->state == CS_BODY) {
        n = SSL_read(c->ssl, plain, sizeof(plain));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                conn_close_now(c);
                return;
            }
            break;
        }
        size_t room = WEBHOOK_MAX_HEAD + WEBHOOK_MAX_BODY - c->in.len;
        if (buf_append(&c->in, plain, (size_t)n < room ? (size_t)n : room) < 0) {
            conn_close_now(c);
            return;
        }
        conn_process(c);
    }
    if (c->state != CS_DONE)
        conn_flush(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    wconn_t *c = h->data;
    *b = uv_buf_init(c->w->rbuf, sizeof(c->w->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    wconn_t *c = s->data;
    if (nread < 0) {
        conn_close_now(c);
        return;
    }
    if (nread > 0 && c->state != CS_DONE)
        conn_input(c, b->base, (size_t)nread);
}

static void on_timeout(uv_timer_t *t)
{
    wconn_t *c = t->data;
    log_debug("webhook: %s: request not complete within %llu ms", c->peer,
              (unsigned long long)c->w->timeout_ms);
    conn_close_now(c);
}

static void webhook_accept(webhook_t *w)
{
    wconn_t *c = calloc(1, sizeof(*c));
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    if (!c)
        return;
    c->w = w;
    c->state = CS_TLS;
    buf_init(&c->in, WEBHOOK_MAX_HEAD + WEBHOOK_MAX_BODY);
    uv_tcp_init(w->loop, &c->tcp);
    uv_timer_init(w->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&c->tcp) < 0) {
        conn_close_now(c);
        return;
    }
    if (w->n_conns > WEBHOOK_MAX_CONNS) {
        log_warn("webhook: more than %d connections; refusing one", WEBHOOK_MAX_CONNS);
        conn_close_now(c);
        return;
    }
    snprintf(c->peer, sizeof(c->peer), "peer");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        char name[INET6_ADDRSTRLEN] = "";
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof(name));
        else
            uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof(name));
        snprintf(c->peer, sizeof(c->peer), "%s", name);
    }
    c->ssl = SSL_new(w->ssl_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        conn_close_now(c);
        return;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    uv_timer_start(&c->timer, on_timeout, w->timeout_ms, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_close_now(c);
}

static void on_connection(uv_stream_t *l, int status)
{
    if (status == 0)
        webhook_accept(l->data);
}

static void on_listener_closed(uv_handle_t *h)
{
    webhook_t *w = h->data;
    w->listener_closed = true;
    webhook_maybe_free(w);
}

bool webhook_opts_from_cfg(const cfg_t *cfg, webhook_opts_t *ret)
{
    *ret = (webhook_opts_t){
        .listen = cfg_get(cfg, "guard", "webhook_listen"),
        .cert_path = cfg_get(cfg, "guard", "webhook_cert"),
        .key_path = cfg_get(cfg, "guard", "webhook_key"),
        .secret_file = cfg_get(cfg, "guard", "webhook_secret_file"),
    };
    ret->n_pools = cfg_get_all(cfg, "guard", "webhook_pool", &ret->pools);
    return ret->listen != NULL;
}

static int load_secret(webhook_t *w, const char *path, char *err, size_t err_size)
{
    char why[512];
    int r = cfg_check_secret_file(path, why, sizeof(why));
    if (r < 0) {
        snprintf(err, err_size, "[guard] webhook_secret_file: %s", why);
        return r;
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        r = -errno;
        snprintf(err, err_size, "cannot read %s: %s", path, strerror(-r));
        return r;
    }
    if (!fgets(w->secret, sizeof(w->secret), f))
        w->secret[0] = '\0';
    fclose(f);
    w->secret[strcspn(w->secret, "\r\n")] = '\0';
    if (strlen(w->secret) < 16) {
        snprintf(err, err_size,
                 "%s: the webhook secret must be at least 16 characters on its first line", path);
        return ERR_CONFIG;
    }
    return 0;
}

static int load_tls(webhook_t *w, const webhook_opts_t *o, char *err, size_t err_size)
{
    char why[512];
    int r = cfg_check_secret_file(o->key_path, why, sizeof(why));
    if (r < 0) {
        snprintf(err, err_size, "[guard] webhook_key: %s", why);
        return r;
    }
    w->ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!w->ssl_ctx) {
        snprintf(err, err_size, "cannot create a TLS context");
        return ERR_TLS;
    }
    SSL_CTX_set_min_proto_version(w->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(w->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                        SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_verify(w->ssl_ctx, SSL_VERIFY_NONE, NULL);
    if (SSL_CTX_use_certificate_chain_file(w->ssl_ctx, o->cert_path) != 1) {
        snprintf(err, err_size, "[guard] webhook_cert %s: cannot load the certificate chain (%s)",
                 o->cert_path, ERR_reason_error_string(ERR_get_error()));
        ERR_clear_error();
        return ERR_TLS;
    }
    if (SSL_CTX_use_PrivateKey_file(w->ssl_ctx, o->key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(w->ssl_ctx) != 1) {
        snprintf(err, err_size,
                 "[guard] webhook_key %s: cannot load the key, or it does not match %s (%s)",
                 o->key_path, o->cert_path, ERR_reason_error_string(ERR_get_error()));
        ERR_clear_error();
        return ERR_TLS;
    }
    return 0;
}

int webhook_start(uv_loop_t *loop, const webhook_opts_t *o, guard_t *guard,
                  webhook_event_fn on_event, void *ctx, webhook_t **ret, char *err, size_t err_size)
{
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    int len = sizeof(ss), r;

    if (!o->listen || !o->cert_path || !o->key_path || !o->secret_file) {
        snprintf(err, err_size,
                 "[guard] webhook_listen needs webhook_cert, webhook_key and "
                 "webhook_secret_file");
        return ERR_CONFIG;
    }
    if (o->n_pools > WEBHOOK_MAX_POOLS) {
        snprintf(err, err_size, "[guard] webhook_pool: at most %d", WEBHOOK_MAX_POOLS);
        return ERR_CONFIG;
    }
    r = cfg_parse_address(o->listen, host, sizeof(host), &port);
    if (r == 0)
        r = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss)
                              : uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (r < 0) {
        snprintf(err, err_size,
                 "[guard] webhook_listen must be a numeric IP and port, got "
                 "\"%.200s\"",
                 o->listen);
        return ERR_CONFIG;
    }
    webhook_t *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, err_size, "out of memory");
        return UV_ENOMEM;
    }
    w->loop = loop;
    w->guard = guard;
    w->on_event = on_event;
    w->ctx = ctx;
    w->timeout_ms = o->timeout_ms ? o->timeout_ms : WEBHOOK_TIMEOUT_MS;
    w->pools = calloc(o->n_pools ? o->n_pools : 1, sizeof(*w->pools));
    for (size_t i = 0; w->pools && i < o->n_pools; i++)
        if ((w->pools[i] = strdup(o->pools[i])))
            w->n_pools++;
    if (!w->pools || w->n_pools != o->n_pools) {
        snprintf(err, err_size, "out of memory");
        r = UV_ENOMEM;
    }
    if (r == 0)
        r = load_secret(w, o->secret_file, err, err_size);
    if (r == 0)
        r = load_tls(w, o, err, err_size);
    if (r < 0) {
        w->stopping = w->listener_closed = true;
        webhook_maybe_free(w);
        return r;
    }
    uv_tcp_init(loop, &w->listener);
    w->listener.data = w;
    r = uv_tcp_bind(&w->listener, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&w->listener, 64, on_connection);
    if (r < 0) {
        snprintf(err, err_size, "cannot listen on %s: %s", o->listen, uv_strerror(r));
        w->stopping = true;
        uv_close((uv_handle_t *)&w->listener, on_listener_closed);
        return r;
    }
    uv_tcp_getsockname(&w->listener, (struct sockaddr *)&ss, &len);
    w->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    *ret = w;
    return 0;
}

int webhook_port(const webhook_t *w)
{
    return w->port;
}

void webhook_stop(webhook_t *w)
{
    if (!w || w->stopping)
        return;
    w->stopping = true;
    uv_close((uv_handle_t *)&w->listener, on_listener_closed);
    for (wconn_t *c = w->conns; c; c = c->next)
        conn_close_now(c);
}
