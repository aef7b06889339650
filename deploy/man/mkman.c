/* mkman: prints the sections of the man pages that must follow the code, in roff, so they cannot
 * drift from it (deploy/man/meson.build assembles the pages at build time).
 *
 *   mkman config        every [section] and key of this program's configuration schema, with
 *                       its type, default, whether it is required or repeatable, and its help
 *   mkman exit-status   the exit status table: 0, 1 and each code of common/err.h's ERR_MAP
 *
 * Built twice: with -DMKMAN_AGENT against agent_schema, without against controller_schema. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "err.h"

#ifdef MKMAN_AGENT
#include "agent.h"
#define SCHEMA agent_schema
#else
#include "controller.h"
#define SCHEMA controller_schema
#endif

/* Writes text for roff: backslashes and minus signs escaped, and a leading '.' or '\'' kept from
 * being read as a request. */
static void put_text(const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", stdout);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else if (*s == '\n')
            fputs("\n.br\n", stdout);
        else
            putchar(*s);
    }
}

/* The placeholder shown for a value of each type; understudy.conf(5) explains them. */
static const char *type_word(cfg_type_t type)
{
    switch (type) {
    case CFG_STRING:
        return "TEXT";
    case CFG_PATH:
        return "PATH";
    case CFG_ADDRESS:
        return "HOST:PORT";
    case CFG_FINGERPRINT:
        return "FINGERPRINT";
    case CFG_UINT:
        return "NUMBER";
    case CFG_BOOL:
        return "BOOLEAN";
    case CFG_SIZE:
        return "SIZE";
    case CFG_DURATION:
        return "DURATION";
    case CFG_OWNER:
        return "USER:GROUP";
    }
    return "VALUE";
}

static bool section_seen_before(const cfg_key_t *schema, const cfg_key_t *k)
{
    for (const cfg_key_t *p = schema; p < k; p++)
        if (!strcmp(p->section, k->section))
            return true;
    return false;
}

/* Sections in the order they first appear, each with all of its keys in schema order. */
static int print_config(const cfg_key_t *schema)
{
    for (const cfg_key_t *s = schema; s->section; s++) {
        if (section_seen_before(schema, s))
            continue;
        printf(".SS \"[");
        put_text(s->section);
        printf("]\"\n");
        for (const cfg_key_t *k = s; k->section; k++) {
            if (strcmp(k->section, s->section))
                continue;
            printf(".TP\n\\fB");
            put_text(k->key);
            printf("\\fR = \\fI");
            put_text(type_word(k->type));
            printf("\\fR\n");
            put_text(k->help);
            printf(".\n.br\n");
            if (k->flags & CFG_REQUIRED)
                printf("Required.");
            else if (k->default_value) {
                printf("Default: \\fB");
                put_text(k->default_value);
                printf("\\fR.");
            } else {
                printf("Optional.");
            }
            if (k->flags & CFG_MULTI)
                printf(" May be repeated.");
            printf("\n");
        }
    }
    return 0;
}

static const struct {
    int code;
    const char *name;
    const char *message;
} errors[] = {
#define ERR_ROW_(name, exit_code, msg) {exit_code, #name, msg},
    ERR_MAP(ERR_ROW_)
#undef ERR_ROW_
};

static void print_status_row(int code)
{
    bool first = true;
    printf(".TP\n.B %d\n", code);
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        if (errors[i].code != code)
            continue;
        /* Codes shared by several errors are listed once. */
        if (!first)
            printf(";\n");
        put_text(errors[i].message);
        printf(" (ERR_");
        put_text(errors[i].name);
        printf(")");
        first = false;
    }
    printf("\n");
}

static int print_exit_status(void)
{
    int last = 1;
    printf(".TP\n.B 0\nsuccess\n");
    printf(".TP\n.B 1\na system error (file, memory, socket); the message names the cause\n");
    for (;;) {
        /* The next larger code in the table: prints rows in order of code, each once. */
        int next = -1;
        for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
            if (errors[i].code > last && (next < 0 || errors[i].code < next))
                next = errors[i].code;
        if (next < 0)
            break;
        print_status_row(next);
        last = next;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "config"))
        return print_config(SCHEMA);
    if (argc == 2 && !strcmp(argv[1], "exit-status"))
        return print_exit_status();
    fprintf(stderr, "usage: mkman config|exit-status\n");
    return 2;
}
