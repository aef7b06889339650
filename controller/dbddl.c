/* Statements built from typed definitions, and strict checks of the little SQL text the agent
 * sends (view bodies, trigger bodies, generation expressions). See dbddl.h.
 *
 * The checks work on tokens, with MariaDB's lexical rules for the default sql_mode (backslash
 * escapes in strings, `quoted` identifiers with `` for a backtick). Comments of every kind are
 * refused outright: an executable comment ("/" "*!...") would run. Qualified names are where
 * another schema could be named; a name a.b or a.b.c is accepted only when a is the primary's
 * schema (then the qualifier is dropped and the name resolves in the target schema), NEW/OLD in a
 * trigger, one of the site's own tables or views, or an alias the statement declares (an identifier
 * right after a table reference or a closing parenthesis). Behind these checks the controller's
 * account has rights only on its own schemas (deploy/mysql-grants.sql), so the server refuses what
 * slips through.
 */
#include "dbddl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "err.h"

#define REFUSE(...)                                                                                \
    do {                                                                                           \
        snprintf(err, err_size, __VA_ARGS__);                                                      \
        return ERR_REFUSED;                                                                        \
    } while (0)

int dbddl_ident(buf_t *out, const char *name)
{
    int r = buf_append(out, "`", 1);
    for (const char *p = name; r == 0 && *p; p++)
        r = *p == '`' ? buf_append(out, "``", 2) : buf_append(out, p, 1);
    return r < 0 ? r : buf_append(out, "`", 1);
}

int dbddl_literal(buf_t *out, const char *s)
{
    int r = buf_append(out, "'", 1);
    for (const char *p = s; r == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            r = buf_append(out, "\\", 1);
        if (r == 0)
            r = buf_append(out, p, 1);
    }
    return r < 0 ? r : buf_append(out, "'", 1);
}

int dbddl_check_name(const char *name, char *err, size_t err_size)
{
    size_t n = strlen(name);

    if (n == 0 || n > 64)
        REFUSE("refused: object name \"%.80s\" is empty or longer than 64 bytes", name);
    if (name[n - 1] == ' ' || strpbrk(name, "/\\.") || strchr(name, 0xff))
        REFUSE("refused: object name \"%s\" has a character not allowed here", name);
    if (!strncmp(name, DBDDL_MARKER_PREFIX, strlen(DBDDL_MARKER_PREFIX)))
        REFUSE("refused: object name \"%s\" is reserved by understudy", name);
    return 0;
}

bool dbddl_sql_mode_ok(const char *mode)
{
    for (const char *p = mode; *p; p++)
        if (!(isupper((unsigned char)*p) || *p == '_' || *p == ','))
            return false;
    return true;
}

bool dbddl_charset_ok(const char *name)
{
    if (!*name || strlen(name) > 64)
        return false;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return false;
    return true;
}

/* ---- tokens ---- */

typedef enum tok_kind { T_END, T_WORD, T_QIDENT, T_STRING, T_NUMBER, T_PUNCT, T_BAD } tok_kind_t;

typedef struct tok {
    tok_kind_t kind;
    const char *s; /* start in the text */
    size_t len;
    char val[260]; /* identifiers: the name, unquoted (truncated names never match) */
} tok_t;

/* Reads the token at *pp. Comments and unterminated quotes are T_BAD. */
static tok_t next_tok(const char **pp)
{
    const char *p = *pp;
    tok_t t = {.kind = T_END};

    while (*p && isspace((unsigned char)*p))
        p++;
    t.s = p;
    if (!*p) {
        t.len = 0;
        *pp = p;
        return t;
    }
    if ((p[0] == '/' && p[1] == '*') || (p[0] == '-' && p[1] == '-') || p[0] == '#') {
        t.kind = T_BAD;
    } else if (*p == '`') {
        size_t o = 0;
        t.kind = T_QIDENT;
        for (p++;; p++) {
            if (!*p) {
                t.kind = T_BAD;
                break;
            }
            if (*p == '`' && p[1] != '`') {
                p++;
                break;
            }
            if (*p == '`')
                p++;
            if (o + 1 < sizeof(t.val))
                t.val[o++] = *p;
        }
        t.val[o] = '\0';
    } else if (*p == '\'' || *p == '"') {
        char q = *p++;
        t.kind = T_STRING;
        for (;; p++) {
            if (!*p) {
                t.kind = T_BAD;
                break;
            }
            if (*p == '\\' && p[1]) {
                p++;
            } else if (*p == q && p[1] == q) {
                p++;
            } else if (*p == q) {
                p++;
                break;
            }
        }
    } else if (isdigit((unsigned char)*p)) {
        t.kind = T_NUMBER;
        while (isalnum((unsigned char)*p) || *p == '.' || *p == '_')
            p++;
    } else if (isalpha((unsigned char)*p) || *p == '_' || *p == '$' || (unsigned char)*p >= 0x80) {
        size_t o = 0;
        t.kind = T_WORD;
        while (isalnum((unsigned char)*p) || *p == '_' || *p == '$' || (unsigned char)*p >= 0x80) {
            if (o + 1 < sizeof(t.val))
                t.val[o++] = *p;
            p++;
        }
        t.val[o] = '\0';
    } else if (p[0] == '@' && p[1] == '@') {
        t.kind = T_PUNCT;
        p += 2;
    } else {
        t.kind = T_PUNCT;
        p++;
    }
    t.len = (size_t)(p - t.s);
    *pp = p;
    return t;
}

static bool is_ident(const tok_t *t)
{
    return t->kind == T_WORD || t->kind == T_QIDENT;
}

static bool is_word(const tok_t *t, const char *w)
{
    return t->kind == T_WORD && !strcasecmp(t->val, w);
}

static bool is_punct(const tok_t *t, char c)
{
    return t->kind == T_PUNCT && t->len == 1 && t->s[0] == c;
}

/* Tokenizes text into a malloc'ed array ending with T_END. */
static int tokenize(const char *text, tok_t **ret, size_t *ret_n, char *err, size_t err_size,
                    const char *what)
{
    size_t n = 0, cap = 64;
    tok_t *v = malloc(cap * sizeof(*v));
    const char *p = text;

    if (!v)
        return UV_ENOMEM;
    for (;;) {
        if (n == cap) {
            tok_t *nv = cap > 1000000 ? NULL : realloc(v, (cap *= 2) * sizeof(*v));
            if (!nv) {
                free(v);
                return UV_ENOMEM;
            }
            v = nv;
        }
        v[n] = next_tok(&p);
        if (v[n].kind == T_BAD) {
            free(v);
            REFUSE("refused: %s contains a comment or an unterminated quote", what);
        }
        if (v[n++].kind == T_END)
            break;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i]))
            return true;
    return false;
}

/* Keywords refused in any body: they reach files, other accounts, server state or run
 * dynamic SQL. */
static const char *const denied_words[] = {
    "DEFINER", "OUTFILE",   "DUMPFILE",   "LOAD_FILE", "LOAD",     "GRANT",  "REVOKE",
    "PREPARE", "EXECUTE",   "DEALLOCATE", "CALL",      "SHUTDOWN", "KILL",   "GLOBAL",
    "INSTALL", "UNINSTALL", "FLUSH",      "RENAME",    "DROP",     "ALTER",  "TRUNCATE",
    "CREATE",  "HANDLER",   "SYSTEM",     "PASSWORD",  "USER",     "ROLE",   "SERVER",
    "LOCK",    "UNLOCK",    "PURGE",      "RESET",     "CHANGE",   "MASTER", "SLAVE",
    "BINLOG",  "SONAME",    "DATABASE",   "SCHEMA",    "FILE",     "SLEEP",  "BENCHMARK",
};

static const char *const system_schemas[] = {"mysql", "information_schema", "performance_schema",
                                             "sys"};

typedef struct body_ctx {
    const char *src;
    const char *dst; /* what src becomes (NULL: the qualifier is dropped) */
    const char *const *names;
    size_t n_names;
    bool trigger;
    bool compound;    /* ';' allowed: a BEGIN ... END body of a trigger, routine or event */
    const char *what; /* for messages */
} body_ctx_t;

/* Checks tokens [from, to) of a body and appends its text from body_start, with the source
 * schema's qualifiers removed, to out. */
static int check_body(const tok_t *v, size_t from, size_t to, const body_ctx_t *c, buf_t *out,
                      char *err, size_t err_size)
{
    const char *copy_from = v[from].s;
    char **aliases = NULL;
    size_t n_aliases = 0;
    int r = 0;

    /* Pass 1: declared aliases. */
    for (size_t i = from + 1; i < to; i++) {
        size_t k = i - 1;
        if (!is_ident(&v[i]) || is_punct(&v[i + 1], '.') || is_punct(&v[i + 1], '('))
            continue;
        if (is_word(&v[k], "AS") && k > from)
            k--;
        bool after_ref = is_punct(&v[k], ')') ||
                         (is_ident(&v[k]) && k >= from + 2 && is_punct(&v[k - 1], '.') &&
                          is_ident(&v[k - 2]) && !strcmp(v[k - 2].val, c->src)) ||
                         (is_ident(&v[k]) && in_list(v[k].val, c->names, c->n_names));
        if (!after_ref)
            continue;
        char **na = realloc(aliases, (n_aliases + 1) * sizeof(*na));
        if (!na) {
            r = UV_ENOMEM;
            goto out;
        }
        aliases = na;
        aliases[n_aliases++] = (char *)v[i].val;
    }

    /* Pass 2: every token. */
    for (size_t i = from; i < to; i++) {
        const tok_t *t = &v[i];
        if (t->kind == T_WORD) {
            /* Two words are fine in one shape each: CALL of one of the site's own routines
             * (unqualified: it resolves in the target schema), and DECLARE ... HANDLER. */
            if (is_word(t, "CALL") && is_ident(&v[i + 1]) && !is_punct(&v[i + 2], '.') &&
                in_list(v[i + 1].val, c->names, c->n_names))
                continue;
            if (is_word(t, "HANDLER") && i > from &&
                (is_word(&v[i - 1], "CONTINUE") || is_word(&v[i - 1], "EXIT") ||
                 is_word(&v[i - 1], "UNDO")))
                continue;
            for (size_t j = 0; j < sizeof(denied_words) / sizeof(denied_words[0]); j++)
                if (!strcasecmp(t->val, denied_words[j])) {
                    snprintf(err, err_size, "refused: %s uses %s", c->what, denied_words[j]);
                    r = ERR_REFUSED;
                    goto out;
                }
        }
        if (t->kind == T_PUNCT && t->len == 2) {
            snprintf(err, err_size, "refused: %s reads or sets a server variable (@@)", c->what);
            r = ERR_REFUSED;
            goto out;
        }
        if (is_punct(t, ';') && !c->compound) {
            snprintf(err, err_size, "refused: %s holds more than one statement", c->what);
            r = ERR_REFUSED;
            goto out;
        }
        if (!is_ident(t) || !is_punct(&v[i + 1], '.') || (i > from && is_punct(&v[i - 1], '.')))
            continue;
        /* The start of a qualified name. */
        size_t parts = 1;
        while (is_punct(&v[i + 2 * parts - 1], '.') && is_ident(&v[i + 2 * parts]))
            parts++;
        bool ok;
        if (!strcmp(t->val, c->src)) {
            ok = true;
            r = buf_append(out, copy_from, (size_t)(t->s - copy_from));
            if (r == 0 && c->dst)
                r = dbddl_ident(out, c->dst);
            if (r < 0)
                goto out;
            copy_from = c->dst ? v[i + 1].s : v[i + 2].s; /* "`src`." becomes "`dst`." or goes */
        } else if (parts >= 3 || in_list(t->val, system_schemas, 4) ||
                   !strncmp(t->val, "understudy", 10)) {
            ok = false;
        } else {
            ok = (c->trigger && (!strcasecmp(t->val, "NEW") || !strcasecmp(t->val, "OLD"))) ||
                 in_list(t->val, c->names, c->n_names) ||
                 in_list(t->val, (const char *const *)aliases, n_aliases);
        }
        if (!ok) {
            snprintf(err, err_size, "refused: %s refers to %s.%s, outside the site's schema",
                     c->what, t->val, v[i + 2].val);
            r = ERR_REFUSED;
            goto out;
        }
    }
    if (to > from)
        r = buf_append(out, copy_from, (size_t)(v[to - 1].s + v[to - 1].len - copy_from));
out:
    free(aliases);
    return r;
}

static const char *kind_word(int kind)
{
    switch (kind) {
    case WIRE_TABLE_VIEW:
        return "view";
    case WIRE_TABLE_TRIGGER:
        return "trigger";
    case WIRE_TABLE_ROUTINE:
        return "procedure";
    case WIRE_TABLE_FUNCTION:
        return "function";
    case WIRE_TABLE_EVENT:
        return "event";
    default:
        return "table";
    }
}

/* Words a data type may carry after its name and arguments (RETURNS ...). */
static const char *const type_words[] = {"UNSIGNED", "SIGNED",  "ZEROFILL", "BINARY",
                                         "ASCII",    "UNICODE", "BYTE"};

/* Words an event's schedule may use before DO: SHOW CREATE EVENT writes it as
 * ON SCHEDULE {AT ts | EVERY n unit [STARTS ts] [ENDS ts]} ON COMPLETION [NOT] PRESERVE
 * {ENABLE | DISABLE | DISABLE ON SLAVE} [COMMENT 'text'], times as quoted literals. */
static const char *const schedule_words[] = {"ON",
                                             "SCHEDULE",
                                             "AT",
                                             "EVERY",
                                             "STARTS",
                                             "ENDS",
                                             "INTERVAL",
                                             "COMPLETION",
                                             "NOT",
                                             "PRESERVE",
                                             "ENABLE",
                                             "DISABLE",
                                             "SLAVE",
                                             "COMMENT",
                                             "CURRENT_TIMESTAMP",
                                             "YEAR",
                                             "QUARTER",
                                             "MONTH",
                                             "WEEK",
                                             "DAY",
                                             "HOUR",
                                             "MINUTE",
                                             "SECOND",
                                             "MICROSECOND",
                                             "YEAR_MONTH",
                                             "DAY_HOUR",
                                             "DAY_MINUTE",
                                             "DAY_SECOND",
                                             "HOUR_MINUTE",
                                             "HOUR_SECOND",
                                             "MINUTE_SECOND",
                                             "DAY_MICROSECOND",
                                             "HOUR_MICROSECOND",
                                             "MINUTE_MICROSECOND",
                                             "SECOND_MICROSECOND"};

static bool in_words(const tok_t *t, const char *const *list, size_t n)
{
    for (size_t i = 0; t->kind == T_WORD && i < n; i++)
        if (!strcasecmp(t->val, list[i]))
            return true;
    return false;
}

/* CREATE PROCEDURE / FUNCTION / EVENT, from the token after CREATE (v[i]) to end. The header is
 * checked token by token against the shapes SHOW CREATE prints; the body like a trigger's. The
 * statement is emitted as CREATE OR REPLACE (ensure_objects re-runs it) with the header as
 * written: every token of it was checked. */
static int check_routine(const wire_table_def_t *t, const tok_t *v, size_t i, size_t end,
                         body_ctx_t *c, buf_t *out, char *err, size_t err_size)
{
    const char *what = c->what;
    size_t head = i;
    const char *word = t->kind == WIRE_TABLE_EVENT      ? "EVENT"
                       : t->kind == WIRE_TABLE_FUNCTION ? "FUNCTION"
                                                        : "PROCEDURE";

    if (!is_word(&v[i], word))
        REFUSE("refused: %s: CREATE %s expected", what, word);
    i++;
    if (!is_ident(&v[i]) || is_punct(&v[i + 1], '.') || strcmp(v[i].val, t->name) != 0)
        REFUSE("refused: %s: the statement creates another object or schema", what);
    i++;
    if (t->kind == WIRE_TABLE_EVENT) {
        if (!is_word(&v[i], "ON") || !is_word(&v[i + 1], "SCHEDULE"))
            REFUSE("refused: %s: ON SCHEDULE expected", what);
        for (; i < end && !is_word(&v[i], "DO"); i++)
            if (!(in_words(&v[i], schedule_words,
                           sizeof(schedule_words) / sizeof(schedule_words[0])) ||
                  v[i].kind == T_NUMBER || v[i].kind == T_STRING || is_punct(&v[i], '+') ||
                  is_punct(&v[i], '-')))
                REFUSE("refused: %s: unexpected \"%.*s\" in its schedule", what,
                       (int)(v[i].len > 40 ? 40 : v[i].len), v[i].s);
        if (i == end)
            REFUSE("refused: %s: DO expected", what);
        i++; /* DO */
    } else {
        /* The parameter list: names, types and their arguments, nothing qualified. */
        int depth = 0;
        if (!is_punct(&v[i], '('))
            REFUSE("refused: %s: a parameter list expected", what);
        do {
            const tok_t *p = &v[i];
            if (is_punct(p, '('))
                depth++;
            else if (is_punct(p, ')'))
                depth--;
            else if (!(p->kind == T_WORD || p->kind == T_QIDENT || p->kind == T_NUMBER ||
                       p->kind == T_STRING || is_punct(p, ',')) ||
                     in_words(p, denied_words, sizeof(denied_words) / sizeof(denied_words[0])))
                REFUSE("refused: %s: unexpected \"%.*s\" in its parameters", what,
                       (int)(p->len > 40 ? 40 : p->len), p->s);
            i++;
        } while (depth > 0 && i < end);
        if (depth != 0)
            REFUSE("refused: %s: unbalanced parameter list", what);
        if (t->kind == WIRE_TABLE_FUNCTION) {
            if (!is_word(&v[i], "RETURNS") || v[i + 1].kind != T_WORD)
                REFUSE("refused: %s: RETURNS type expected", what);
            i += 2;
            if (is_punct(&v[i], '(')) {
                for (i++; i < end && !is_punct(&v[i], ')'); i++)
                    if (!(v[i].kind == T_NUMBER || v[i].kind == T_STRING || is_punct(&v[i], ',')))
                        REFUSE("refused: %s: bad RETURNS type arguments", what);
                if (i++ == end)
                    REFUSE("refused: %s: bad RETURNS type arguments", what);
            }
            for (;;) {
                if (in_words(&v[i], type_words, sizeof(type_words) / sizeof(type_words[0]))) {
                    i++;
                } else if ((is_word(&v[i], "CHARSET") || is_word(&v[i], "COLLATE")) &&
                           is_ident(&v[i + 1]) && dbddl_charset_ok(v[i + 1].val)) {
                    i += 2;
                } else if (is_word(&v[i], "CHARACTER") && is_word(&v[i + 1], "SET") &&
                           is_ident(&v[i + 2]) && dbddl_charset_ok(v[i + 2].val)) {
                    i += 3;
                } else {
                    break;
                }
            }
        }
        /* Characteristics. */
        for (;;) {
            if (is_word(&v[i], "LANGUAGE") && is_word(&v[i + 1], "SQL"))
                i += 2;
            else if (is_word(&v[i], "NOT") && is_word(&v[i + 1], "DETERMINISTIC"))
                i += 2;
            else if (is_word(&v[i], "DETERMINISTIC"))
                i++;
            else if ((is_word(&v[i], "CONTAINS") || is_word(&v[i], "NO")) &&
                     is_word(&v[i + 1], "SQL"))
                i += 2;
            else if ((is_word(&v[i], "READS") || is_word(&v[i], "MODIFIES")) &&
                     is_word(&v[i + 1], "SQL") && is_word(&v[i + 2], "DATA"))
                i += 3;
            else if (is_word(&v[i], "SQL") && is_word(&v[i + 1], "SECURITY") &&
                     (is_word(&v[i + 2], "DEFINER") || is_word(&v[i + 2], "INVOKER")))
                i += 3;
            else if (is_word(&v[i], "COMMENT") && v[i + 1].kind == T_STRING)
                i += 2;
            else
                break;
        }
    }
    if (end <= i)
        REFUSE("refused: %s: empty body", what);
    c->compound = is_word(&v[i], "BEGIN") && is_word(&v[end - 1], "END");
    for (size_t j = i; j < end; j++)
        if (!c->compound && is_punct(&v[j], ';'))
            REFUSE("refused: %s holds more than one statement", what);
    int r = buf_append_str(out, "CREATE OR REPLACE ");
    if (r == 0)
        r = buf_append(out, v[head].s, (size_t)(v[i - 1].s + v[i - 1].len - v[head].s));
    if (r == 0)
        r = buf_append(out, " ", 1);
    if (r == 0)
        r = check_body(v, i, end, c, out, err, err_size);
    return r;
}

int dbddl_check_object(const wire_table_def_t *t, const char *src_schema, const char *dst_schema,
                       const char *const *site_names, size_t n_site_names,
                       const char *const *site_tables, size_t n_site_tables, buf_t *out, char *err,
                       size_t err_size)
{
    char what[128];
    tok_t *v = NULL;
    size_t n = 0, i = 0, end;
    int r;

    snprintf(what, sizeof(what), "%s %.64s", kind_word(t->kind), t->name);
    if (t->kind == WIRE_TABLE_BASE)
        REFUSE("refused: %s: a table has no statement to check", t->name);
    if ((r = dbddl_check_name(t->name, err, err_size)) < 0)
        return r;
    if (!dbddl_sql_mode_ok(t->sql_mode ? t->sql_mode : "") || !dbddl_charset_ok(t->charset) ||
        !dbddl_charset_ok(t->collation))
        REFUSE("refused: %s: bad sql_mode, character set or collation", what);
    r = tokenize(t->create_sql ? t->create_sql : "", &v, &n, err, err_size, what);
    if (r < 0)
        return r;
    end = n - 1; /* T_END */
    if (end > 0 && is_punct(&v[end - 1], ';'))
        end--; /* one trailing ';' */
    body_ctx_t c = {.src = src_schema,
                    .dst = dst_schema,
                    .names = site_names,
                    .n_names = n_site_names,
                    .trigger = t->kind == WIRE_TABLE_TRIGGER,
                    .compound = t->kind == WIRE_TABLE_TRIGGER,
                    .what = what};
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf(err, err_size, __VA_ARGS__);                                                  \
            r = ERR_REFUSED;                                                                       \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
    EXPECT(is_word(&v[i++], "CREATE"), "refused: %s: not a CREATE statement", what);
    if (t->kind == WIRE_TABLE_ROUTINE || t->kind == WIRE_TABLE_FUNCTION ||
        t->kind == WIRE_TABLE_EVENT) {
        EXPECT(!is_word(&v[i], "DEFINER"), "refused: %s has a DEFINER clause", what);
        r = check_routine(t, v, i, end, &c, out, err, err_size);
    } else if (t->kind == WIRE_TABLE_VIEW) {
        const char *algorithm = "UNDEFINED", *security = "DEFINER", *check = NULL;
        if (is_word(&v[i], "ALGORITHM")) {
            EXPECT(is_punct(&v[i + 1], '=') &&
                       (is_word(&v[i + 2], "UNDEFINED") || is_word(&v[i + 2], "MERGE") ||
                        is_word(&v[i + 2], "TEMPTABLE")),
                   "refused: %s: bad ALGORITHM", what);
            algorithm = v[i + 2].val;
            i += 3;
        }
        EXPECT(!is_word(&v[i], "DEFINER"), "refused: %s has a DEFINER clause", what);
        if (is_word(&v[i], "SQL")) {
            EXPECT(is_word(&v[i + 1], "SECURITY") &&
                       (is_word(&v[i + 2], "DEFINER") || is_word(&v[i + 2], "INVOKER")),
                   "refused: %s: bad SQL SECURITY", what);
            security = v[i + 2].val;
            i += 3;
        }
        EXPECT(is_word(&v[i], "VIEW"), "refused: %s: CREATE VIEW expected", what);
        i++;
        EXPECT(is_ident(&v[i]) && !is_punct(&v[i + 1], '.') && !strcmp(v[i].val, t->name),
               "refused: %s: the statement creates another object or schema", what);
        i++;
        EXPECT(is_word(&v[i], "AS"), "refused: %s: AS expected", what);
        i++;
        if (end >= i + 4 && is_word(&v[end - 1], "OPTION") && is_word(&v[end - 2], "CHECK") &&
            (is_word(&v[end - 3], "CASCADED") || is_word(&v[end - 3], "LOCAL")) &&
            is_word(&v[end - 4], "WITH")) {
            check = v[end - 3].val;
            end -= 4;
        }
        EXPECT(end > i && (is_word(&v[i], "SELECT") || is_punct(&v[i], '(') ||
                           is_word(&v[i], "WITH") || is_word(&v[i], "VALUES")),
               "refused: %s: the body is not a query", what);
        r = buf_printf(out, "CREATE OR REPLACE ALGORITHM=%s SQL SECURITY %s VIEW ", algorithm,
                       security);
        if (r == 0)
            r = dbddl_ident(out, t->name);
        if (r == 0)
            r = buf_append_str(out, " AS ");
        if (r == 0)
            r = check_body(v, i, end, &c, out, err, err_size);
        if (r == 0 && check)
            r = buf_printf(out, " WITH %s CHECK OPTION", check);
    } else {
        EXPECT(!is_word(&v[i], "DEFINER"), "refused: %s has a DEFINER clause", what);
        EXPECT(is_word(&v[i], "TRIGGER"), "refused: %s: CREATE TRIGGER expected", what);
        i++;
        EXPECT(is_ident(&v[i]) && !is_punct(&v[i + 1], '.') && !strcmp(v[i].val, t->name),
               "refused: %s: the statement creates another object or schema", what);
        i++;
        EXPECT(is_word(&v[i], "BEFORE") || is_word(&v[i], "AFTER"),
               "refused: %s: BEFORE or AFTER expected", what);
        EXPECT(is_word(&v[i + 1], "INSERT") || is_word(&v[i + 1], "UPDATE") ||
                   is_word(&v[i + 1], "DELETE"),
               "refused: %s: INSERT, UPDATE or DELETE expected", what);
        EXPECT(is_word(&v[i + 2], "ON"), "refused: %s: ON expected", what);
        EXPECT(is_ident(&v[i + 3]) && !is_punct(&v[i + 4], '.') &&
                   in_list(v[i + 3].val, site_tables, n_site_tables),
               "refused: %s is not on one of the site's own tables", what);
        EXPECT(is_word(&v[i + 4], "FOR") && is_word(&v[i + 5], "EACH") && is_word(&v[i + 6], "ROW"),
               "refused: %s: FOR EACH ROW expected", what);
        const tok_t *timing = &v[i], *event = &v[i + 1], *table = &v[i + 3];
        i += 7;
        EXPECT(end > i, "refused: %s: empty body", what);
        bool compound = is_word(&v[i], "BEGIN") && is_word(&v[end - 1], "END");
        for (size_t j = i; j < end; j++)
            EXPECT(compound || !is_punct(&v[j], ';'), "refused: %s holds more than one statement",
                   what);
        /* The header as written (every token of it was checked above): the server keeps the
         * statement's text, and mariadb-dump of both sides should agree. */
        (void)timing;
        (void)event;
        (void)table;
        r = buf_append(out, v[0].s, (size_t)(v[i - 1].s + v[i - 1].len - v[0].s));
        if (r == 0)
            r = buf_append(out, " ", 1);
        if (r == 0)
            r = check_body(v, i, end, &c, out, err, err_size);
    }
#undef EXPECT
out:
    free(v);
    return r;
}

/* ---- CREATE TABLE ---- */

static const char *const column_types[] = {
    "tinyint",      "smallint",
    "mediumint",    "int",
    "integer",      "bigint",
    "decimal",      "numeric",
    "float",        "double",
    "real",         "bit",
    "bool",         "boolean",
    "date",         "datetime",
    "timestamp",    "time",
    "year",         "char",
    "varchar",      "binary",
    "varbinary",    "tinytext",
    "text",         "mediumtext",
    "longtext",     "tinyblob",
    "blob",         "mediumblob",
    "longblob",     "enum",
    "set",          "json",
    "geometry",     "point",
    "linestring",   "polygon",
    "multipoint",   "multilinestring",
    "multipolygon", "geometrycollection",
    "inet4",        "inet6",
    "uuid",
};

/* type := word [ '(' arg {',' arg} ')' ] { unsigned | signed | zerofill } */
static int check_column_type(const char *type, const char *what, char *err, size_t err_size)
{
    const char *p = type;
    tok_t t = next_tok(&p);
    bool known = false;

    if (t.kind == T_WORD)
        for (size_t i = 0; i < sizeof(column_types) / sizeof(column_types[0]); i++)
            known |= !strcasecmp(t.val, column_types[i]);
    if (!known)
        REFUSE("refused: %s: column type \"%.80s\" is not one understudy accepts", what, type);
    t = next_tok(&p);
    if (is_punct(&t, '(')) {
        for (;;) {
            t = next_tok(&p);
            if (t.kind != T_NUMBER && t.kind != T_STRING)
                REFUSE("refused: %s: bad column type arguments in \"%.80s\"", what, type);
            t = next_tok(&p);
            if (is_punct(&t, ')'))
                break;
            if (!is_punct(&t, ','))
                REFUSE("refused: %s: bad column type arguments in \"%.80s\"", what, type);
        }
        t = next_tok(&p);
    }
    while (is_word(&t, "unsigned") || is_word(&t, "signed") || is_word(&t, "zerofill"))
        t = next_tok(&p);
    if (t.kind != T_END)
        REFUSE("refused: %s: unexpected \"%.40s\" in column type", what, t.s);
    return 0;
}

/* A default: NULL, a number, one string literal, b'...', x'...', current_timestamp([n]). */
static bool default_ok(const char *d)
{
    const char *p = d;
    tok_t t = next_tok(&p), u;

    if (t.kind == T_STRING || t.kind == T_NUMBER || is_word(&t, "NULL")) {
        return next_tok(&p).kind == T_END;
    }
    if (is_punct(&t, '-')) {
        t = next_tok(&p);
        return t.kind == T_NUMBER && next_tok(&p).kind == T_END;
    }
    if ((is_word(&t, "b") || is_word(&t, "x")) && t.len == 1) {
        u = next_tok(&p);
        return u.kind == T_STRING && u.s == t.s + 1 && next_tok(&p).kind == T_END;
    }
    if (is_word(&t, "current_timestamp") || is_word(&t, "now")) {
        u = next_tok(&p);
        if (u.kind == T_END)
            return true;
        if (!is_punct(&u, '('))
            return false;
        u = next_tok(&p);
        if (u.kind == T_NUMBER)
            u = next_tok(&p);
        return is_punct(&u, ')') && next_tok(&p).kind == T_END;
    }
    return false;
}

/* EXTRA: "", auto_increment, on update current_timestamp([n]). */
static bool extra_ok(const char *e)
{
    const char *p = e;
    tok_t t = next_tok(&p);

    if (t.kind == T_END)
        return true;
    if (is_word(&t, "auto_increment"))
        return next_tok(&p).kind == T_END;
    if (!is_word(&t, "on") || !is_word((t = next_tok(&p), &t), "update"))
        return false;
    return default_ok(p);
}

static const char *const engines[] = {"InnoDB", "MyISAM", "Aria", "MEMORY"};

/* Appends an expression of a table definition (a generated column's, a CHECK clause) after
 * checking it like a view body with no schema at all: no qualified name, no second statement,
 * no dangerous word, no server variable. */
static int append_expr(buf_t *out, const char *expr, const char *what, const char *kind, char *err,
                       size_t err_size)
{
    tok_t *v;
    size_t n;
    body_ctx_t bc = {.src = "", .what = what};
    int r = tokenize(expr, &v, &n, err, err_size, what);
    if (r < 0)
        return r;
    if (n < 2) {
        free(v);
        REFUSE("refused: %s: empty %s", what, kind);
    }
    for (size_t j = 0; r == 0 && j + 1 < n; j++)
        if (is_punct(&v[j], ';') || is_punct(&v[j], '.'))
            r = ERR_REFUSED;
    if (r < 0) {
        free(v);
        REFUSE("refused: %s: %s names another object", what, kind);
    }
    r = check_body(v, 0, n - 1, &bc, out, err, err_size);
    free(v);
    return r;
}

/* The CHECK constraints of column (NULL: the table-level ones), as SHOW CREATE TABLE writes
 * them: " CHECK (...)" after a column, ",\n  CONSTRAINT `name` CHECK (...)" after the keys. */
static int append_checks(buf_t *out, const wire_table_def_t *t, const char *column,
                         const char *what, char *err, size_t err_size)
{
    int r = 0;
    for (size_t i = 0; r == 0 && i < t->n_checks; i++) {
        const wire_check_def_t *k = &t->checks[i];
        if (column ? strcmp(k->column, column) != 0 : k->column[0] != '\0')
            continue;
        if (!k->name[0] || strlen(k->name) > 64)
            REFUSE("refused: %s: a CHECK constraint has a bad name", what);
        if (column) {
            r = buf_append_str(out, " CHECK (");
        } else {
            r = buf_append_str(out, ",\n  CONSTRAINT ");
            if (r == 0)
                r = dbddl_ident(out, k->name);
            if (r == 0)
                r = buf_append_str(out, " CHECK (");
        }
        if (r == 0)
            r = append_expr(out, k->clause, what, "CHECK clause", err, err_size);
        if (r == 0)
            r = buf_append(out, ")", 1);
    }
    return r;
}

int dbddl_create_table(const wire_table_def_t *t, const char *schema, buf_t *out, char *err,
                       size_t err_size)
{
    char what[96];
    bool engine_ok = false;
    int r;

    snprintf(what, sizeof(what), "table %.64s", t->name);
    if (t->kind != WIRE_TABLE_BASE)
        REFUSE("refused: %s is not a base table", what);
    if ((r = dbddl_check_name(t->name, err, err_size)) < 0)
        return r;
    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++)
        engine_ok |= !strcasecmp(t->engine, engines[i]);
    if (!engine_ok)
        REFUSE("refused: %s uses ENGINE=%.40s (only InnoDB, MyISAM, Aria and MEMORY are "
               "accepted)",
               what, t->engine);
    if ((t->charset[0] && !dbddl_charset_ok(t->charset)) ||
        (t->collation[0] && !dbddl_charset_ok(t->collation)))
        REFUSE("refused: %s: bad character set or collation", what);
    if (t->n_columns == 0 || t->n_columns > 4096)
        REFUSE("refused: %s has no columns or too many", what);

    r = buf_append_str(out, "CREATE TABLE ");
    if (r == 0 && schema) {
        r = dbddl_ident(out, schema);
        if (r == 0)
            r = buf_append(out, ".", 1);
    }
    if (r == 0)
        r = dbddl_ident(out, t->name);
    if (r == 0)
        r = buf_append_str(out, " (\n");
    for (size_t i = 0; r == 0 && i < t->n_columns; i++) {
        const wire_column_def_t *c = &t->columns[i];
        char cwhat[200];
        snprintf(cwhat, sizeof(cwhat), "%s column %.64s", what, c->name);
        if (!c->name[0] || strlen(c->name) > 64)
            REFUSE("refused: %s: bad column name", what);
        if ((r = check_column_type(c->column_type, cwhat, err, err_size)) < 0)
            return r;
        if ((c->charset[0] && !dbddl_charset_ok(c->charset)) ||
            (c->collation[0] && !dbddl_charset_ok(c->collation)))
            REFUSE("refused: %s: bad character set or collation", cwhat);
        r = buf_append_str(out, i ? ",\n  " : "  ");
        if (r == 0)
            r = dbddl_ident(out, c->name);
        if (r == 0)
            r = buf_printf(out, " %s", c->column_type);
        if (r == 0 && c->charset[0])
            r = buf_printf(out, " CHARACTER SET %s", c->charset);
        if (r == 0 && c->collation[0])
            r = buf_printf(out, " COLLATE %s", c->collation);
        if (r == 0 && c->generated) {
            r = buf_append_str(out, " GENERATED ALWAYS AS (");
            if (r == 0)
                r = append_expr(out, c->generation_expression, cwhat, "generation expression", err,
                                err_size);
            if (r == 0)
                r = buf_append_str(out, c->stored ? ") STORED" : ") VIRTUAL");
            if (r == 0)
                r = append_checks(out, t, c->name, cwhat, err, err_size);
            if (r < 0)
                return r;
            continue;
        }
        if (r == 0 && !c->nullable)
            r = buf_append_str(out, " NOT NULL");
        if (r == 0 && c->has_default) {
            if (!default_ok(c->default_value))
                REFUSE("refused: %s: default \"%.80s\" is not a literal", cwhat, c->default_value);
            r = buf_printf(out, " DEFAULT %s", c->default_value);
        }
        if (r == 0 && c->extra[0]) {
            if (!extra_ok(c->extra))
                REFUSE("refused: %s: \"%.80s\" is not accepted", cwhat, c->extra);
            r = buf_printf(out, " %s", c->extra);
        }
        if (r == 0 && c->sql_type == 245 /* MYSQL_TYPE_JSON */) {
            r = buf_append_str(out, " CHECK (json_valid(");
            if (r == 0)
                r = dbddl_ident(out, c->name);
            if (r == 0)
                r = buf_append_str(out, "))");
        }
        if (r == 0)
            r = append_checks(out, t, c->name, cwhat, err, err_size);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < t->n_checks; i++) {
        bool found = !t->checks[i].column[0];
        for (size_t j = 0; j < t->n_columns && !found; j++)
            found = !strcmp(t->columns[j].name, t->checks[i].column);
        if (!found)
            REFUSE("refused: %s: CHECK constraint %.64s is on a column the table does not have",
                   what, t->checks[i].name);
    }
    for (size_t i = 0; r == 0 && i < t->n_indexes; i++) {
        const wire_index_def_t *x = &t->indexes[i];
        bool primary = !strcmp(x->name, "PRIMARY");
        if (!x->name[0] || strlen(x->name) > 64 || x->n_columns == 0 || x->n_columns > 32)
            REFUSE("refused: %s: bad index", what);
        if (primary)
            r = buf_append_str(out, ",\n  PRIMARY KEY (");
        else if (!strcasecmp(x->index_type, "FULLTEXT") || !strcasecmp(x->index_type, "SPATIAL"))
            r = buf_printf(out, ",\n  %s KEY ",
                           !strcasecmp(x->index_type, "FULLTEXT") ? "FULLTEXT" : "SPATIAL");
        else if (!strcasecmp(x->index_type, "BTREE") || !strcasecmp(x->index_type, "HASH") ||
                 !x->index_type[0])
            r = buf_append_str(out, x->unique ? ",\n  UNIQUE KEY " : ",\n  KEY ");
        else
            REFUSE("refused: %s: index type %.20s", what, x->index_type);
        if (r == 0 && !primary) {
            r = dbddl_ident(out, x->name);
            if (r == 0)
                r = buf_append_str(out, " (");
        }
        for (size_t j = 0; r == 0 && j < x->n_columns; j++) {
            r = j ? buf_append(out, ",", 1) : 0;
            if (r == 0)
                r = dbddl_ident(out, x->columns[j]);
            if (r == 0 && x->n_prefix_lengths && x->prefix_lengths[j])
                r = buf_printf(out, "(%u)", x->prefix_lengths[j]);
        }
        if (r == 0)
            r = buf_append(out, ")", 1);
        if (r == 0 && !strcasecmp(x->index_type, "HASH"))
            r = buf_append_str(out, " USING HASH");
    }
    if (r == 0)
        r = append_checks(out, t, NULL, what, err, err_size);
    if (r == 0)
        r = buf_printf(out, "\n) ENGINE=%s", t->engine);
    if (r == 0 && t->auto_increment)
        r = buf_printf(out, " AUTO_INCREMENT=%llu", (unsigned long long)t->auto_increment);
    if (r == 0 && t->charset[0])
        r = buf_printf(out, " DEFAULT CHARSET=%s", t->charset);
    if (r == 0 && t->collation[0])
        r = buf_printf(out, " COLLATE=%s", t->collation);
    if (r == 0 && t->comment[0]) {
        r = buf_append_str(out, " COMMENT=");
        if (r == 0)
            r = dbddl_literal(out, t->comment);
    }
    return r;
}

/* ---- digest ---- */

int dbddl_digest_sql(const wire_table_def_t *t, const char *schema, buf_t *out)
{
    bool first = true;
    int r = buf_append_str(out, "SELECT COUNT(*), IFNULL(SUM(CAST(CONV(LEFT(MD5(CONCAT(");
    for (size_t i = 0; r == 0 && i < t->n_columns; i++) {
        const wire_column_def_t *c = &t->columns[i];
        if (c->generated)
            continue;
        r = buf_append_str(out, first ? "IFNULL(CONCAT(LENGTH(" : ",IFNULL(CONCAT(LENGTH(");
        if (r == 0)
            r = dbddl_ident(out, c->name);
        if (r == 0)
            r = buf_append_str(out, "),':',CAST(");
        if (r == 0)
            r = dbddl_ident(out, c->name);
        if (r == 0)
            r = buf_append_str(out, " AS BINARY)),'-')");
        first = false;
    }
    if (r == 0 && first)
        r = buf_append_str(out, "''");
    if (r == 0)
        r = buf_append_str(out, ")),16),16,10) AS UNSIGNED)),0) FROM ");
    if (r == 0 && schema) {
        r = dbddl_ident(out, schema);
        if (r == 0)
            r = buf_append(out, ".", 1);
    }
    if (r == 0)
        r = dbddl_ident(out, t->name);
    return r;
}

/* ---- wp-config.php ---- */

/* PHP single-quoted literal. */
static int php_literal(buf_t *out, const char *s)
{
    int r = buf_append(out, "'", 1);
    for (const char *p = s; r == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            r = buf_append(out, "\\", 1);
        if (r == 0)
            r = buf_append(out, p, 1);
    }
    return r < 0 ? r : buf_append(out, "'", 1);
}

/* Skips a PHP string literal starting at p[i] (a quote); returns the index after it. */
static size_t skip_php_string(const char *p, size_t i, size_t len)
{
    char q = p[i++];
    while (i < len && p[i] != q) {
        if (p[i] == '\\')
            i++;
        i++;
    }
    return i < len ? i + 1 : len;
}

/* Inserts a define of DISABLE_WP_CRON on the line after the opening "<?php" of out. */
static int add_cron_define(buf_t *out, char *err, size_t err_size)
{
    static const char line[] = "define( 'DISABLE_WP_CRON', true ); /* understudy: no scheduled "
                               "jobs on the backup ([site] wp_cron) */\n";
    const char *text = (const char *)buf_data(out);
    const char *tag = memmem(text, out->len, "<?php", 5);
    if (!tag)
        REFUSE("wp-config.php has no \"<?php\" opening tag; it is not the PHP file WordPress "
               "reads");
    size_t at = (size_t)(tag - text) + 5;
    const char *nl = memchr(text + at, '\n', out->len - at);
    at = nl ? (size_t)(nl - text) + 1 : out->len;
    buf_t tail = BUF_INIT;
    int r = buf_append(&tail, text + at, out->len - at);
    if (r == 0) {
        out->len = at;
        if (!nl)
            r = buf_append(out, "\n", 1);
        if (r == 0)
            r = buf_append(out, line, sizeof(line) - 1);
        if (r == 0)
            r = buf_append(out, buf_data(&tail), tail.len);
    }
    buf_free(&tail);
    return r;
}

int dbddl_rewrite_wpconfig(const char *p, size_t len, const dbddl_wp_t *vals, buf_t *out, char *err,
                           size_t err_size)
{
    /* The four DB_ values are strings; DISABLE_WP_CRON (key 4) is rewritten only when asked,
     * to the PHP constant true. */
    enum { N_DB_KEYS = 4, KEY_CRON = 4 };
    static const char *const keys[] = {"DB_NAME", "DB_USER", "DB_PASSWORD", "DB_HOST",
                                       "DISABLE_WP_CRON"};
    const char *const values[] = {vals->name, vals->user, vals->password, vals->host, NULL};
    const int n_keys = vals->disable_wp_cron ? 5 : 4;
    unsigned seen = 0;
    size_t i = 0, copied = 0;
    int r = 0;

    while (r == 0 && i < len) {
        if (p[i] == '#' || (p[i] == '/' && i + 1 < len && p[i + 1] == '/')) {
            while (i < len && p[i] != '\n')
                i++;
        } else if (p[i] == '/' && i + 1 < len && p[i + 1] == '*') {
            const char *e = memmem(p + i + 2, len - i - 2, "*/", 2);
            i = e ? (size_t)(e - p) + 2 : len;
        } else if (p[i] == '\'' || p[i] == '"') {
            i = skip_php_string(p, i, len);
        } else if ((i == 0 || !(isalnum((unsigned char)p[i - 1]) || p[i - 1] == '_')) &&
                   len - i >= 6 && !strncasecmp(p + i, "define", 6)) {
            size_t j = i + 6, k, vstart;
            int key = -1, depth = 0;
            while (j < len && isspace((unsigned char)p[j]))
                j++;
            if (j >= len || p[j] != '(') {
                i += 6;
                continue;
            }
            j++;
            while (j < len && isspace((unsigned char)p[j]))
                j++;
            if (j >= len || (p[j] != '\'' && p[j] != '"')) {
                i = j;
                continue;
            }
            k = skip_php_string(p, j, len);
            for (int n = 0; n < n_keys; n++)
                if (k - j - 2 == strlen(keys[n]) && !memcmp(p + j + 1, keys[n], strlen(keys[n])))
                    key = n;
            j = k;
            while (j < len && isspace((unsigned char)p[j]))
                j++;
            if (key < 0 || j >= len || p[j] != ',') {
                i = j;
                continue;
            }
            j++;
            while (j < len && isspace((unsigned char)p[j]))
                j++;
            vstart = j;
            /* The value runs to the ')' closing define( (or a second ',' at depth 0). */
            while (j < len) {
                if (p[j] == '\'' || p[j] == '"') {
                    j = skip_php_string(p, j, len);
                    continue;
                }
                if (p[j] == '(')
                    depth++;
                else if (p[j] == ')' && depth-- == 0)
                    break;
                else if (p[j] == ',' && depth == 0)
                    break;
                j++;
            }
            if (j >= len)
                REFUSE("wp-config.php: unterminated define('%s', ...)", keys[key]);
            size_t vend = j;
            while (vend > vstart && isspace((unsigned char)p[vend - 1]))
                vend--;
            r = buf_append(out, p + copied, vstart - copied);
            if (r == 0 && key == KEY_CRON)
                r = buf_append_str(out, "true");
            else if (r == 0)
                r = php_literal(out, values[key] ? values[key] : "");
            copied = vend;
            seen |= 1u << key;
            i = j;
        } else {
            i++;
        }
    }
    if (r == 0)
        r = buf_append(out, p + copied, len - copied);
    if (r == 0 && vals->disable_wp_cron && !(seen & (1u << KEY_CRON)))
        r = add_cron_define(out, err, err_size);
    for (int n = 0; r == 0 && n < N_DB_KEYS; n++)
        if (!(seen & (1u << n)))
            REFUSE("wp-config.php does not define %s as WordPress expects; the backup's "
                   "connection settings cannot be put in",
                   keys[n]);
    return r;
}
