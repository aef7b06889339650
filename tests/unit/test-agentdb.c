/* Unit tests for agent/db: reading SHOW GRANTS output (no server needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "db.h"
#include "err.h"

#define USAGE "GRANT USAGE ON *.* TO `wp`@`localhost` IDENTIFIED BY PASSWORD '*ABC'"
#define ALL4  "ALL PRIVILEGES, SELECT, LOCK TABLES, SHOW VIEW, TRIGGER"

/* Checks grant lines against db, expecting result r and the missing list want. */
static void expect(const char *const *lines, size_t n, const char *db, int r, const char *want)
{
    char missing[128] = "garbage";
    int got = agentdb_check_privileges((char **)lines, n, db, missing, sizeof(missing));

    if (got != r || strcmp(missing, want) != 0)
        fail_msg("db %s: got %d \"%s\", want %d \"%s\"", db, got, missing, r, want);
}

#define EXPECT(db, r, want, ...)                                                                   \
    do {                                                                                           \
        const char *const lines_[] = {__VA_ARGS__};                                                \
        expect(lines_, sizeof(lines_) / sizeof(lines_[0]), db, r, want);                           \
    } while (0)

static void t_global(void **state)
{
    EXPECT("wordpress", 0, "",
           "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION");
    EXPECT("anything", 0, "", "GRANT SELECT, LOCK TABLES, SHOW VIEW, TRIGGER ON *.* TO `u`@`%`");
    EXPECT("wordpress", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER", USAGE);
    expect(NULL, 0, "wordpress", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER");
}

static void t_database(void **state)
{
    /* What Debian's setup-mysql and most hosts grant. */
    EXPECT("wordpress", 0, "", USAGE,
           "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, CREATE TEMPORARY "
           "TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, "
           "EVENT, TRIGGER ON `wordpress`.* TO `wordpress`@`localhost`");
    EXPECT("wordpress", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `wordpress`.* TO `wp`@`localhost`");
    EXPECT("wordpress", 0, "", USAGE, "grant all on wordpress.* to wp@localhost");
    EXPECT("wordpress", ERR_DB_PRIVILEGE, "SHOW VIEW, TRIGGER", USAGE,
           "GRANT SELECT, INSERT, UPDATE, DELETE, LOCK TABLES ON `wordpress`.* TO `wp`@`h`");
    /* Another database's grants do not count. */
    EXPECT("wordpress", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER", USAGE,
           "GRANT ALL PRIVILEGES ON `wordpress2`.* TO `wp`@`localhost`",
           "GRANT ALL PRIVILEGES ON `wordpres`.* TO `wp`@`localhost`");
    /* Global and database privileges add up. */
    EXPECT("wordpress", 0, "", "GRANT SELECT ON *.* TO `wp`@`localhost`",
           "GRANT LOCK TABLES, SHOW VIEW, TRIGGER ON `wordpress`.* TO `wp`@`localhost`");
}

static void t_patterns(void **state)
{
    /* An escaped underscore is literal; a bare one matches any character. */
    EXPECT("wp_site", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `wp\\_site`.* TO `wp`@`localhost`");
    EXPECT("wpXsite", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER", USAGE,
           "GRANT ALL PRIVILEGES ON `wp\\_site`.* TO `wp`@`localhost`");
    EXPECT("wpXsite", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `wp_site`.* TO `wp`@`localhost`");
    EXPECT("wp_site", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `wp_site`.* TO `wp`@`localhost`");
    /* % matches any run, including none. */
    EXPECT("wp_site", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `wp%`.* TO `u`@`%`");
    EXPECT("wp", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `wp%`.* TO `u`@`%`");
    EXPECT("shop_wp_7", 0, "", USAGE, "GRANT ALL PRIVILEGES ON `%\\_wp\\_%`.* TO `u`@`%`");
    EXPECT("shopwp", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER", USAGE,
           "GRANT ALL PRIVILEGES ON `%\\_wp\\_%`.* TO `u`@`%`");
    EXPECT("anything", 0, "", USAGE, "GRANT " ALL4 " ON `%`.* TO `u`@`%`");
    EXPECT("a%b", 0, "", USAGE, "GRANT ALL ON `a\\%b`.* TO `u`@`%`");
    EXPECT("axb", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER", USAGE,
           "GRANT ALL ON `a\\%b`.* TO `u`@`%`");
    /* Quoting: a doubled backtick is one backtick; ANSI double quotes work too. */
    EXPECT("we`ird", 0, "", "GRANT ALL ON `we``ird`.* TO `u`@`%`");
    EXPECT("d.b", 0, "", "GRANT ALL ON \"d.b\".* TO \"u\"@\"%\"");
}

static void t_most_specific_wins(void **state)
{
    /* The server uses the most specific matching database grant, not the union. */
    EXPECT("wordpress", ERR_DB_PRIVILEGE, "LOCK TABLES, SHOW VIEW, TRIGGER", USAGE,
           "GRANT ALL PRIVILEGES ON `word%`.* TO `wp`@`localhost`",
           "GRANT SELECT ON `wordpress`.* TO `wp`@`localhost`");
    EXPECT("wordpress", 0, "", USAGE, "GRANT SELECT ON `w%`.* TO `wp`@`localhost`",
           "GRANT ALL PRIVILEGES ON `word%`.* TO `wp`@`localhost`");
}

static void t_ignored_lines(void **state)
{
    /* Table, column, routine, proxy and role grants give nothing database-wide. */
    EXPECT("wordpress", ERR_DB_PRIVILEGE, "SELECT, LOCK TABLES, SHOW VIEW, TRIGGER", USAGE,
           "GRANT ALL PRIVILEGES ON `wordpress`.`wp_posts` TO `wp`@`localhost`",
           "GRANT SELECT (`ID`, `post_title`), INSERT ON `wordpress`.`wp_posts` TO `wp`@`h`",
           "GRANT EXECUTE ON PROCEDURE `wordpress`.`p` TO `wp`@`localhost`",
           "GRANT EXECUTE ON FUNCTION `wordpress`.`f` TO `wp`@`localhost`",
           "GRANT PROXY ON ''@'%' TO 'wp'@'localhost' WITH GRANT OPTION",
           "GRANT `backup_role` TO `wp`@`localhost`", "", "garbage", "GRANT", "GRANT ON",
           "GRANT ALL ON `unterminated", "GRANT ALL ON `db`", "GRANT ALL ON *");
    /* ON TABLE `db`.* is a database grant written with the optional keyword. */
    EXPECT("wordpress", 0, "", "GRANT ALL ON TABLE `wordpress`.* TO `wp`@`localhost`");
}

static void t_missing_buffer(void **state)
{
    const char *const lines[] = {USAGE};
    char small[8];

    assert_int_equal(agentdb_check_privileges((char **)lines, 1, "db", NULL, 0), ERR_DB_PRIVILEGE);
    assert_int_equal(agentdb_check_privileges((char **)lines, 1, "db", small, sizeof(small)),
                     ERR_DB_PRIVILEGE);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_int_equal(agentdb_check_privileges(NULL, 0, "db", small, sizeof(small)),
                     ERR_DB_PRIVILEGE);
    agentdb_free_lines(NULL, 0);
    agentdb_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_global),        cmocka_unit_test(t_database),
        cmocka_unit_test(t_patterns),      cmocka_unit_test(t_most_specific_wins),
        cmocka_unit_test(t_ignored_lines), cmocka_unit_test(t_missing_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
