/* Reads the database settings out of wp-config.php with a small PHP lexer.
 *
 * The lexer knows enough PHP to never mistake a comment, a string or a heredoc for code: inline
 * HTML outside <?php ... ?>, // # and block comments (PHP 8's #[attributes] are skipped like
 * comments, as PHP 7 did), single- and double-quoted strings with PHP's escape rules, backticks,
 * heredoc and nowdoc. A tiny state machine over the tokens then recognises
 *   define( 'NAME', 'value' [, ...] )     (the first define of a name wins, as in PHP)
 *   $table_prefix = 'value';              (the last assignment wins, as in PHP)
 * Everything else is skipped. `const NAME = 'v';` is deliberately ignored: WordPress uses
 * define().
 */
#include "wpconfig.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "err.h"

#define WPCONFIG_MAX_FILE (1024 * 1024)

enum tok_kind {
    TOK_EOF,
    TOK_IDENT,  /* name or keyword; text/len */
    TOK_VAR,    /* $name; text/len without the '$' */
    TOK_STRING, /* string literal; value decoded when plain */
    TOK_NUMBER,
    TOK_PUNCT, /* operator or punctuation; text/len */
};

enum str_kind {
    STR_PLAIN,        /* a constant string: value holds its bytes */
    STR_INTERPOLATED, /* double quotes or heredoc with variables, or backticks */
    STR_HEREDOC,      /* heredoc or nowdoc: skipped, not decoded */
    STR_NUL,          /* decodes to text with a NUL byte */
    STR_INVALID,      /* unterminated, or a bad \u{} escape */
};

typedef struct tok {
    enum tok_kind kind;
    unsigned line;
    const char *text;
    size_t len;
    enum str_kind str;
    char *value; /* TOK_STRING with STR_PLAIN: malloc'ed, NUL-terminated */
} tok_t;

typedef struct lexer {
    const char *p;
    const char *end;
    unsigned line;
    bool in_php;
    bool nomem;
} lexer_t;

/* What the parse found for one constant (or $table_prefix). */
typedef struct wp_value {
    const char *name;
    bool seen;
    bool literal;
    unsigned line;
    char *value;
} wp_value_t;

enum { V_DB_NAME, V_DB_USER, V_DB_PASSWORD, V_DB_HOST, V_DB_CHARSET, V_PREFIX, V_COUNT };

enum parse_state {
    S_IDLE,
    S_DEF_OPEN,  /* saw define */
    S_DEF_NAME,  /* saw define( */
    S_DEF_COMMA, /* saw define('NAME' */
    S_DEF_VALUE, /* saw define('NAME', */
    S_DEF_END,   /* saw define('NAME', 'value' */
    S_TP_EQ,     /* saw $table_prefix */
    S_TP_VALUE,  /* saw $table_prefix = */
    S_TP_END,    /* saw $table_prefix = 'value' */
};

typedef struct parser {
    enum parse_state state;
    wp_value_t vals[V_COUNT];
    int target;       /* index into vals for the statement being matched, or -1 */
    unsigned line;    /* line of the statement being matched */
    char *pending;    /* its string value, until the statement is complete */
    bool prev_blocks; /* the previous token makes a following `define` not the function */
} parser_t;

/* ---- characters ---- */

static bool is_ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static bool is_ident_char(unsigned char c)
{
    return is_ident_start(c) || isdigit(c);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool lex_starts(const lexer_t *lx, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(lx->end - lx->p) >= n && !memcmp(lx->p, s, n);
}

/* Advances one byte, counting lines. */
static void lex_advance(lexer_t *lx)
{
    if (*lx->p == '\n')
        lx->line++;
    lx->p++;
}

/* ---- skipping ---- */

/* Skips inline HTML up to and including the next PHP open tag. */
static void lex_skip_html(lexer_t *lx)
{
    while (lx->p < lx->end) {
        if (lex_starts(lx, "<?")) {
            const char *q = lx->p + 2;
            if (lx->end - q >= 3 && !strncasecmp(q, "php", 3) &&
                (lx->end - q == 3 || isspace((unsigned char)q[3])))
                q += 3;
            else if (q < lx->end && *q == '=')
                q++;
            lx->p = q;
            lx->in_php = true;
            return;
        }
        lex_advance(lx);
    }
}

/* Skips a // or # comment: it ends at the newline or just before ?>. */
static void lex_skip_line_comment(lexer_t *lx)
{
    while (lx->p < lx->end && *lx->p != '\n' && !lex_starts(lx, "?>"))
        lx->p++;
}

static void lex_skip_block_comment(lexer_t *lx)
{
    lx->p += 2;
    while (lx->p < lx->end && !lex_starts(lx, "*/"))
        lex_advance(lx);
    lx->p = lx->p < lx->end ? lx->p + 2 : lx->end;
}

/* Skips blanks and comments; returns with lx->p at a token, ?>, or the end. */
static void lex_skip_space(lexer_t *lx)
{
    while (lx->p < lx->end) {
        if (isspace((unsigned char)*lx->p))
            lex_advance(lx);
        else if (*lx->p == '#' || lex_starts(lx, "//"))
            lex_skip_line_comment(lx);
        else if (lex_starts(lx, "/*"))
            lex_skip_block_comment(lx);
        else
            return;
    }
}

/* ---- strings ---- */

/* Finds the closing quote; returns false if the string is unterminated. */
static bool lex_string_end(lexer_t *lx, char quote, const char **ret_end)
{
    const char *p = lx->p + 1;

    while (p < lx->end && *p != quote) {
        if (*p == '\\' && p + 1 < lx->end)
            p++;
        p++;
    }
    if (p >= lx->end)
        return false;
    *ret_end = p;
    return true;
}

/* Appends the UTF-8 encoding of cp (at most 0x10FFFF) to out. */
static size_t utf8_put(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a \u{...} escape starting at *pp (just after the 'u'). Returns the bytes written, 0
 * when it is not an escape (PHP keeps "\u" literally), -1 when it is a malformed one (a PHP
 * compile error). */
static int decode_unicode(const char **pp, const char *end, char *out)
{
    const char *p = *pp;
    unsigned long cp = 0;
    size_t digits = 0;

    if (p >= end || *p != '{')
        return 0;
    for (p++; p < end && hex_value((unsigned char)*p) >= 0; p++, digits++)
        if ((cp = cp * 16 + (unsigned long)hex_value((unsigned char)*p)) > 0x10FFFF)
            return -1;
    if (digits == 0 || p >= end || *p != '}')
        return -1;
    *pp = p + 1;
    return (int)utf8_put(cp, out);
}

/* Decodes one escape of a double-quoted string; *pp is just after the backslash. Writes the
 * bytes to out and returns their count, or -1 for a malformed \u{}. */
static int decode_double_escape(const char **pp, const char *end, char *out)
{
    static const char simple[] = "n\nt\tr\rv\ve\x1b"
                                 "f\f\\\\$$\"\"";
    const char *p = *pp;
    unsigned char e = (unsigned char)*p++;
    int v = 0, n = 0;

    for (size_t i = 0; simple[i]; i += 2) {
        if (simple[i] == (char)e) {
            *pp = p;
            out[0] = simple[i + 1];
            return 1;
        }
    }
    if (e >= '0' && e <= '7') {
        for (v = e - '0'; n < 2 && p < end && *p >= '0' && *p <= '7'; n++, p++)
            v = v * 8 + (*p - '0');
        *pp = p;
        out[0] = (char)(v & 0xFF);
        return 1;
    }
    if (e == 'x' && p < end && hex_value((unsigned char)*p) >= 0) {
        for (; n < 2 && p < end && hex_value((unsigned char)*p) >= 0; n++, p++)
            v = v * 16 + hex_value((unsigned char)*p);
        *pp = p;
        out[0] = (char)v;
        return 1;
    }
    if (e == 'u' && (n = decode_unicode(&p, end, out)) != 0) {
        *pp = p;
        return n;
    }
    /* Not an escape: PHP keeps the backslash. */
    out[0] = '\\';
    return 1;
}

/* Whether an unescaped '$' or '{' at p starts a PHP interpolation. */
static bool starts_interpolation(const char *p, const char *end)
{
    if (p + 1 >= end)
        return false;
    if (*p == '$')
        return is_ident_start((unsigned char)p[1]) || p[1] == '{';
    return *p == '{' && p[1] == '$';
}

/* Decodes the body [s, end) of a quoted string into tok->value (or sets tok->str). The decoded
 * text is never longer than the source. */
static int decode_string(const char *s, const char *end, char quote, tok_t *tok)
{
    char *out = malloc((size_t)(end - s) + 1);
    size_t o = 0;

    if (!out)
        return UV_ENOMEM;
    tok->str = STR_PLAIN;
    for (const char *p = s; p < end;) {
        if (quote != '\'' && starts_interpolation(p, end))
            tok->str = STR_INTERPOLATED;
        if (*p != '\\' || p + 1 >= end) {
            out[o++] = *p++;
        } else if (quote == '\'') {
            p++;
            if (*p != '\'' && *p != '\\')
                out[o++] = '\\';
            out[o++] = *p++;
        } else {
            p++;
            int n = decode_double_escape(&p, end, out + o);
            if (n < 0) {
                tok->str = STR_INVALID;
                break;
            }
            o += (size_t)n;
        }
    }
    out[o] = '\0';
    if (tok->str == STR_PLAIN && memchr(out, '\0', o))
        tok->str = STR_NUL;
    if (tok->str != STR_PLAIN) {
        free(out);
        return 0;
    }
    tok->value = out;
    return 0;
}

static int lex_quoted(lexer_t *lx, tok_t *tok)
{
    char quote = *lx->p;
    const char *close;
    int r = 0;

    tok->kind = TOK_STRING;
    if (!lex_string_end(lx, quote, &close)) {
        tok->str = STR_INVALID;
        while (lx->p < lx->end)
            lex_advance(lx);
        return 0;
    }
    if (quote == '`')
        tok->str = STR_INTERPOLATED;
    else
        r = decode_string(lx->p + 1, close, quote, tok);
    while (lx->p <= close)
        lex_advance(lx);
    return r;
}

/* At "<<<": if a heredoc/nowdoc label follows, skips the whole literal and returns true. */
static bool lex_heredoc(lexer_t *lx, tok_t *tok)
{
    const char *p = lx->p + 3, *label;
    size_t len;
    char quote = 0;

    while (p < lx->end && (*p == ' ' || *p == '\t'))
        p++;
    if (p < lx->end && (*p == '\'' || *p == '"'))
        quote = *p++;
    label = p;
    while (p < lx->end && is_ident_char((unsigned char)*p))
        p++;
    len = (size_t)(p - label);
    if (len == 0 || isdigit((unsigned char)*label))
        return false;
    if (quote && (p >= lx->end || *p++ != quote))
        return false;
    if (p < lx->end && *p == '\r')
        p++;
    if (p >= lx->end || *p != '\n')
        return false;
    /* The body ends at a line holding, after optional blanks, the label and no more of a name. */
    for (;;) {
        while (lx->p < p)
            lex_advance(lx);
        if (lx->p >= lx->end)
            break;
        lex_advance(lx); /* the newline */
        p = lx->p;
        while (p < lx->end && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t)(lx->end - p) >= len && !memcmp(p, label, len) &&
            (p + len == lx->end || !is_ident_char((unsigned char)p[len]))) {
            p += len;
            while (lx->p < p)
                lex_advance(lx);
            break;
        }
        p = memchr(lx->p, '\n', (size_t)(lx->end - lx->p));
        if (!p)
            p = lx->end;
    }
    tok->kind = TOK_STRING;
    tok->str = STR_HEREDOC;
    return true;
}

/* ---- other tokens ---- */

static void lex_punct(lexer_t *lx, tok_t *tok)
{
    static const char *const ops[] = {
        "?->", "===", "!==", "<=>", "**=", "...", "<<=", ">>=", "?\?=", "==", "!=", "<>",
        "<=",  ">=",  "=>",  "->",  "::",  "++",  "--",  "+=",  "-=",   "*=", "/=", ".=",
        "%=",  "&=",  "|=",  "^=",  "&&",  "||",  "??",  "<<",  ">>",   "**", NULL,
    };
    size_t n = 1;

    for (size_t i = 0; ops[i]; i++) {
        if (ops[i][0] == *lx->p && lex_starts(lx, ops[i])) {
            n = strlen(ops[i]);
            break;
        }
    }
    tok->kind = TOK_PUNCT;
    tok->len = n;
    lx->p += n;
}

/* Reads the next token. Returns 0 or UV_ENOMEM; at the end, tok->kind is TOK_EOF. The caller
 * frees tok->value. */
static int lex_next(lexer_t *lx, tok_t *tok)
{
    memset(tok, 0, sizeof(*tok));
    for (;;) {
        if (!lx->in_php)
            lex_skip_html(lx);
        lex_skip_space(lx);
        tok->line = lx->line;
        tok->text = lx->p;
        if (lx->p >= lx->end) {
            tok->kind = TOK_EOF;
            return 0;
        }
        if (!lex_starts(lx, "?>"))
            break;
        /* A closing tag ends the statement, like ';'. */
        lx->p += 2;
        lx->in_php = false;
        tok->kind = TOK_PUNCT;
        tok->text = ";";
        tok->len = 1;
        return 0;
    }

    unsigned char c = (unsigned char)*lx->p;
    if (c == '\'' || c == '"' || c == '`')
        return lex_quoted(lx, tok);
    if (lex_starts(lx, "<<<") && lex_heredoc(lx, tok))
        return 0;
    if (c == '$' && lx->p + 1 < lx->end && is_ident_start((unsigned char)lx->p[1])) {
        tok->kind = TOK_VAR;
        tok->text = ++lx->p;
    } else if (is_ident_start(c)) {
        tok->kind = TOK_IDENT;
    } else if (isdigit(c)) {
        tok->kind = TOK_NUMBER;
    } else {
        lex_punct(lx, tok);
        return 0;
    }
    while (lx->p < lx->end &&
           (is_ident_char((unsigned char)*lx->p) || (tok->kind == TOK_NUMBER && *lx->p == '.')))
        lx->p++;
    tok->len = (size_t)(lx->p - tok->text);
    return 0;
}

/* ---- the statements we look for ---- */

static bool tok_is(const tok_t *t, enum tok_kind kind, const char *text)
{
    return t->kind == kind && t->len == strlen(text) && !strncmp(t->text, text, t->len);
}

static bool tok_is_plain_string(const tok_t *t)
{
    return t->kind == TOK_STRING && t->str == STR_PLAIN;
}

static int find_constant(const parser_t *ps, const char *name)
{
    for (int i = 0; i < V_PREFIX; i++)
        if (!strcmp(ps->vals[i].name, name))
            return i;
    return -1;
}

/* Records the statement being matched: a string value (taking *value) or, when value is NULL, a
 * value that is not a plain literal. Constants keep their first definition, $table_prefix its
 * last assignment. */
static void parser_record(parser_t *ps, char **value)
{
    wp_value_t *v = &ps->vals[ps->target];

    if (ps->target != V_PREFIX && v->seen)
        return;
    free(v->value);
    v->value = value ? *value : NULL;
    if (value)
        *value = NULL;
    v->seen = true;
    v->literal = value != NULL;
    v->line = ps->line;
}

/* Moves the state machine on by one token. Returns false when the token does not continue the
 * statement being matched (the caller then offers it again from S_IDLE). */
static bool parser_step(parser_t *ps, tok_t *t)
{
    switch (ps->state) {
    case S_IDLE:
        if (t->kind == TOK_IDENT && t->len == 6 && !strncasecmp(t->text, "define", 6) &&
            !ps->prev_blocks) {
            ps->state = S_DEF_OPEN;
            ps->line = t->line;
        } else if (tok_is(t, TOK_VAR, "table_prefix")) {
            ps->state = S_TP_EQ;
            ps->target = V_PREFIX;
            ps->line = t->line;
        }
        return true;
    case S_DEF_OPEN:
        ps->state = S_DEF_NAME;
        return tok_is(t, TOK_PUNCT, "(");
    case S_DEF_NAME:
        ps->target = tok_is_plain_string(t) ? find_constant(ps, t->value) : -1;
        ps->state = ps->target >= 0 ? S_DEF_COMMA : S_IDLE;
        return tok_is_plain_string(t);
    case S_DEF_COMMA:
        ps->state = S_DEF_VALUE;
        return tok_is(t, TOK_PUNCT, ",");
    case S_DEF_VALUE:
    case S_TP_VALUE:
        if (!tok_is_plain_string(t)) {
            parser_record(ps, NULL);
            return false;
        }
        free(ps->pending);
        ps->pending = t->value;
        t->value = NULL;
        ps->state = ps->state == S_DEF_VALUE ? S_DEF_END : S_TP_END;
        return true;
    case S_DEF_END:
    case S_TP_END: {
        bool end = ps->state == S_DEF_END ? tok_is(t, TOK_PUNCT, ")") || tok_is(t, TOK_PUNCT, ",")
                                          : tok_is(t, TOK_PUNCT, ";");
        parser_record(ps, end ? &ps->pending : NULL);
        ps->state = S_IDLE;
        return end;
    }
    case S_TP_EQ:
        ps->state = S_TP_VALUE;
        return tok_is(t, TOK_PUNCT, "=");
    }
    return false;
}

static void parser_feed(parser_t *ps, tok_t *t)
{
    if (!parser_step(ps, t)) {
        ps->state = S_IDLE;
        (void)parser_step(ps, t);
    }
    ps->prev_blocks = tok_is(t, TOK_PUNCT, "->") || tok_is(t, TOK_PUNCT, "?->") ||
                      tok_is(t, TOK_PUNCT, "::") ||
                      (t->kind == TOK_IDENT && t->len == 8 && !strncasecmp(t->text, "function", 8));
}

/* ---- results ---- */

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_size, const char *fmt,
                                                      ...)
{
    va_list ap;

    if (err && err_size) {
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return ERR_WPCONFIG;
}

/* Checks that a needed constant was found as a usable string. */
static int check_constant(const wp_value_t *v, bool may_be_empty, const char *file, char *err,
                          size_t err_size)
{
    if (!v->seen)
        return fail(err, err_size, "%s: %s is not defined; expected define( '%s', '...' );", file,
                    v->name, v->name);
    if (!v->literal)
        return fail(err, err_size,
                    "%s:%u: %s is not a plain string literal; understudy reads wp-config.php "
                    "without running PHP, so getenv(), constants, concatenation and variables "
                    "are not understood: write define( '%s', '...' );",
                    file, v->line, v->name, v->name);
    if (!may_be_empty && !v->value[0])
        return fail(err, err_size, "%s:%u: %s is empty", file, v->line, v->name);
    return 0;
}

static int check_prefix(const wp_value_t *v, const char *file, char *err, size_t err_size)
{
    if (!v->seen)
        return 0;
    if (!v->literal)
        return fail(err, err_size,
                    "%s:%u: $table_prefix is not a plain string literal; understudy reads "
                    "wp-config.php without running PHP: write $table_prefix = 'wp_';",
                    file, v->line);
    if (!v->value[0] || strspn(v->value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_") != strlen(v->value))
        return fail(err, err_size,
                    "%s:%u: $table_prefix may only hold letters, digits and underscores "
                    "(WordPress refuses it too)",
                    file, v->line);
    return 0;
}

static char *take(wp_value_t *v)
{
    char *s = v->value;
    v->value = NULL;
    return s;
}

/* Fills ret from the parser's findings once every check has passed. */
static int build_result(parser_t *ps, const char *file, wpconfig_t *ret, char *err, size_t err_size)
{
    wpconfig_t c = {0};
    int r;

    r = wpconfig_parse_db_host(ps->vals[V_DB_HOST].value, &c.host, &c.port, &c.socket);
    if (r == UV_ENOMEM)
        return r;
    if (r < 0)
        return fail(err, err_size,
                    "%s:%u: DB_HOST '%s' is not understood (expected host, "
                    "host:port, host:/path/to/socket or [ipv6]:port)",
                    file, ps->vals[V_DB_HOST].line, ps->vals[V_DB_HOST].value);
    c.table_prefix = ps->vals[V_PREFIX].seen ? take(&ps->vals[V_PREFIX]) : strdup("wp_");
    if (!c.table_prefix) {
        wpconfig_clear(&c);
        return UV_ENOMEM;
    }
    c.db_name = take(&ps->vals[V_DB_NAME]);
    c.db_user = take(&ps->vals[V_DB_USER]);
    c.db_password = take(&ps->vals[V_DB_PASSWORD]);
    c.db_host = take(&ps->vals[V_DB_HOST]);
    c.db_charset = ps->vals[V_DB_CHARSET].literal ? take(&ps->vals[V_DB_CHARSET]) : NULL;
    *ret = c;
    return 0;
}

static int check_all(parser_t *ps, const char *file, char *err, size_t err_size)
{
    static const int needed[] = {V_DB_NAME, V_DB_USER, V_DB_PASSWORD, V_DB_HOST};
    int r;

    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        r = check_constant(&ps->vals[needed[i]], needed[i] == V_DB_PASSWORD, file, err, err_size);
        if (r < 0)
            return r;
    }
    return check_prefix(&ps->vals[V_PREFIX], file, err, err_size);
}

static void parser_init(parser_t *ps)
{
    static const char *const names[V_COUNT] = {
        "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_HOST", "DB_CHARSET", "$table_prefix",
    };

    memset(ps, 0, sizeof(*ps));
    ps->target = -1;
    for (int i = 0; i < V_COUNT; i++)
        ps->vals[i].name = names[i];
}

static void parser_free(parser_t *ps)
{
    for (int i = 0; i < V_COUNT; i++)
        free(ps->vals[i].value);
    free(ps->pending);
}

/* Parses text, naming it `file` in messages. */
static int parse_named(const char *text, size_t len, const char *file, wpconfig_t *ret, char *err,
                       size_t err_size)
{
    lexer_t lx = {.p = text, .end = text + len, .line = 1};
    parser_t ps;
    tok_t tok;
    int r = 0;

    if (len > WPCONFIG_MAX_FILE)
        return fail(err, err_size, "%s: larger than 1 MiB; not a wp-config.php", file);
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3))
        lx.p += 3;
    parser_init(&ps);
    do {
        r = lex_next(&lx, &tok);
        if (r == 0)
            parser_feed(&ps, &tok);
        free(tok.value);
    } while (r == 0 && tok.kind != TOK_EOF);
    if (r == 0)
        r = check_all(&ps, file, err, err_size);
    if (r == 0)
        r = build_result(&ps, file, ret, err, err_size);
    if (r == UV_ENOMEM)
        fail(err, err_size, "%s: out of memory", file);
    parser_free(&ps);
    return r;
}

int wpconfig_parse(const char *text, size_t len, wpconfig_t *ret, char *err, size_t err_size)
{
    return parse_named(text, len, "wp-config.php", ret, err, err_size);
}

/* Reads at most WPCONFIG_MAX_FILE + 1 bytes of a file into a malloc'ed buffer. */
static int read_capped(const char *path, char **ret_text, size_t *ret_len)
{
    size_t len = 0, cap = WPCONFIG_MAX_FILE + 1;
    char *text;
    int fd, r = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    text = malloc(cap);
    if (!text) {
        close(fd);
        return UV_ENOMEM;
    }
    while (len < cap) {
        ssize_t n = read(fd, text + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            r = -errno;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (r < 0) {
        free(text);
        return r;
    }
    *ret_text = text;
    *ret_len = len;
    return 0;
}

int wpconfig_load(const char *path, wpconfig_t *ret, char *err, size_t err_size)
{
    char *text = NULL;
    size_t len = 0;
    int r = read_capped(path, &text, &len);

    if (r < 0) {
        if (err && err_size)
            snprintf(err, err_size, "%s: %s", path, uv_strerror(r));
        return r;
    }
    r = parse_named(text, len, path, ret, err, err_size);
    free(text);
    return r;
}

/* Copies [s, s + n) into a new string. */
static int dup_part(const char *s, size_t n, char **ret)
{
    char *d = strndup(s, n);
    if (!d)
        return UV_ENOMEM;
    *ret = d;
    return 0;
}

/* The port of DB_HOST as wpdb reads it: the leading digits of port_text, absent or 0 meaning
 * the default. */
static int parse_port(const char *p, const char *end, uint16_t *ret_port)
{
    unsigned long v = 0;

    *ret_port = 0;
    for (; p < end && isdigit((unsigned char)*p); p++)
        if ((v = v * 10 + (unsigned long)(*p - '0')) > 65535)
            return ERR_WPCONFIG;
    *ret_port = (uint16_t)v;
    return 0;
}

int wpconfig_parse_db_host(const char *value, char **ret_host, uint16_t *ret_port,
                           char **ret_socket)
{
    const char *sock = strstr(value, ":/");
    const char *end = sock ? sock : value + strlen(value), *h = value, *p;
    char *host = NULL, *socket = NULL;
    size_t colons = 0, n;
    uint16_t port = 0;

    for (p = value; p < end; p++)
        colons += *p == ':';
    if (colons > 1) {
        /* IPv6: #^(?:\[)?(?P<host>[0-9a-fA-F:]+)(?:\]:(?P<port>[\d]+))?# */
        h += *h == '[';
        for (n = 0; h + n < end && (hex_value((unsigned char)h[n]) >= 0 || h[n] == ':'); n++)
            ;
        if (n == 0)
            return ERR_WPCONFIG;
        p = h + n;
        if (end - p >= 3 && p[0] == ']' && p[1] == ':' && isdigit((unsigned char)p[2]) &&
            parse_port(p + 2, end, &port) < 0)
            return ERR_WPCONFIG;
    } else {
        /* #^(?P<host>[^:/]*)(?::(?P<port>[\d]+))?# */
        n = strcspn(h, ":/");
        n = h + n < end ? n : (size_t)(end - h);
        p = h + n;
        if (p < end && *p == ':' && parse_port(p + 1, end, &port) < 0)
            return ERR_WPCONFIG;
    }
    /* Over a socket, or with no host at all, the client library connects to localhost. */
    if (n > 0 && !(sock && n == 9 && !strncmp(h, "localhost", 9)) && dup_part(h, n, &host) < 0)
        return UV_ENOMEM;
    if (sock && dup_part(sock + 1, strlen(sock + 1), &socket) < 0) {
        free(host);
        return UV_ENOMEM;
    }
    *ret_host = host;
    *ret_port = port;
    *ret_socket = socket;
    return 0;
}

void wpconfig_clear(wpconfig_t *c)
{
    if (!c)
        return;
    free(c->db_name);
    free(c->db_user);
    free(c->db_password);
    free(c->db_host);
    free(c->db_charset);
    free(c->table_prefix);
    free(c->host);
    free(c->socket);
    memset(c, 0, sizeof(*c));
}
