/* Unit tests for the database phase's pure parts (controller/dbddl.c, agent/db.c's type map):
 * statements built from typed definitions, refusal of hostile DDL, wp-config.php rewrite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "db.h"
#include "dbddl.h"
#include "err.h"

static const char *const site_names[] = {"wp_posts", "wp_options", "v_posts"};
static const char *const site_tables[] = {"wp_posts", "wp_options"};

/* Checks a view/trigger statement; returns the result and leaves the output in *out. */
static int check(wire_table_kind_t kind, const char *name, const char *sql, buf_t *out, char *err,
                 size_t err_size)
{
    wire_table_def_t t = {.name = name,
                          .kind = kind,
                          .create_sql = sql,
                          .sql_mode = "STRICT_TRANS_TABLES",
                          .charset = "utf8mb4",
                          .collation = "utf8mb4_general_ci",
                          .engine = "",
                          .comment = ""};
    buf_reset(out);
    return dbddl_check_object(&t, "site", NULL, site_names, 3, site_tables, 2, out, err, err_size);
}

static void expect_refused(wire_table_kind_t kind, const char *name, const char *sql,
                           const char *why)
{
    buf_t out = BUF_INIT;
    char err[512] = "";
    int r = check(kind, name, sql, &out, err, sizeof(err));
    if (r != ERR_REFUSED || !strstr(err, why))
        fail_msg("%s: got %d \"%s\", want refusal mentioning \"%s\"", sql, r, err, why);
    buf_free(&out);
}

static void expect_ok(wire_table_kind_t kind, const char *name, const char *sql, const char *want)
{
    buf_t out = BUF_INIT;
    char err[512] = "";
    int r = check(kind, name, sql, &out, err, sizeof(err));
    if (r != 0)
        fail_msg("%s: refused: %s", sql, err);
    buf_append(&out, "", 1);
    if (strcmp((const char *)buf_data(&out), want) != 0)
        fail_msg("%s:\n got %s\nwant %s", sql, (const char *)buf_data(&out), want);
    buf_free(&out);
}

static void test_view_ok(void **state)
{
    expect_ok(WIRE_TABLE_VIEW, "v_posts",
              "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v_posts` AS select `p`.`ID` "
              "AS `ID` from (`site`.`wp_posts` `p` join `site`.`wp_options` `o` on(`p`.`ID` = "
              "`o`.`option_id`))",
              "CREATE OR REPLACE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v_posts` AS select "
              "`p`.`ID` AS `ID` from (`wp_posts` `p` join `wp_options` `o` on(`p`.`ID` = "
              "`o`.`option_id`))");
    expect_ok(WIRE_TABLE_VIEW, "v_posts",
              "CREATE ALGORITHM=MERGE SQL SECURITY INVOKER VIEW `v_posts` AS select "
              "`site`.`wp_posts`.`ID` AS `ID` from `site`.`wp_posts` WITH CASCADED CHECK OPTION",
              "CREATE OR REPLACE ALGORITHM=MERGE SQL SECURITY INVOKER VIEW `v_posts` AS select "
              "`wp_posts`.`ID` AS `ID` from `wp_posts` WITH CASCADED CHECK OPTION");
}

static void test_routines(void **state)
{
    /* As SHOW CREATE prints them, the agent having removed the DEFINER clause. */
    expect_ok(WIRE_TABLE_ROUTINE, "p",
              "CREATE PROCEDURE `p`(IN lim INT, OUT n DECIMAL(10,2))\n    READS SQL DATA\n"
              "    COMMENT 'counts ''x'''\nBEGIN\n  DECLARE done INT DEFAULT 0;\n  DECLARE "
              "CONTINUE HANDLER FOR NOT FOUND SET done = 1;\n  SELECT COUNT(*) INTO n FROM "
              "`site`.`wp_posts` WHERE ID <= lim;\n  CALL v_posts(1);\nEND",
              "CREATE OR REPLACE PROCEDURE `p`(IN lim INT, OUT n DECIMAL(10,2))\n    READS SQL "
              "DATA\n    COMMENT 'counts ''x''' BEGIN\n  DECLARE done INT DEFAULT 0;\n  DECLARE "
              "CONTINUE HANDLER FOR NOT FOUND SET done = 1;\n  SELECT COUNT(*) INTO n FROM "
              "`wp_posts` WHERE ID <= lim;\n  CALL v_posts(1);\nEND");
    expect_ok(WIRE_TABLE_FUNCTION, "f",
              "CREATE FUNCTION `f`(x INT) RETURNS varchar(20) CHARSET utf8mb4 COLLATE "
              "utf8mb4_bin\n    DETERMINISTIC\nRETURN concat('x', x)",
              "CREATE OR REPLACE FUNCTION `f`(x INT) RETURNS varchar(20) CHARSET utf8mb4 COLLATE "
              "utf8mb4_bin\n    DETERMINISTIC RETURN concat('x', x)");
    expect_ok(WIRE_TABLE_EVENT, "e",
              "CREATE EVENT `e` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' ON "
              "COMPLETION PRESERVE DISABLE ON SLAVE DO DELETE FROM wp_options WHERE option_id = 0",
              "CREATE OR REPLACE EVENT `e` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' "
              "ON COMPLETION PRESERVE DISABLE ON SLAVE DO DELETE FROM wp_options WHERE "
              "option_id = 0");

    expect_refused(WIRE_TABLE_ROUTINE, "p",
                   "CREATE DEFINER=`root`@`localhost` PROCEDURE `p`() SELECT 1", "DEFINER");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE FUNCTION `p`() RETURNS INT RETURN 1",
                   "CREATE PROCEDURE expected");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `q`() SELECT 1", "another object");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `other`.`p`() SELECT 1",
                   "another object");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `p`() SELECT x FROM other.secret",
                   "refers to other.secret");
    expect_refused(WIRE_TABLE_ROUTINE, "p",
                   "CREATE PROCEDURE `p`() BEGIN PREPARE s FROM 'DROP TABLE t'; EXECUTE s; END",
                   "uses PREPARE");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `p`() SELECT 1; DROP TABLE wp_posts",
                   "more than one statement");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `p`() CALL mysql.proc_x()",
                   "uses CALL");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `p`() CALL elsewhere()", "uses CALL");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `p`() HANDLER wp_posts OPEN",
                   "uses HANDLER");
    expect_refused(WIRE_TABLE_ROUTINE, "p",
                   "CREATE PROCEDURE `p`(x INT DEFAULT (SELECT a FROM other.t)) SELECT 1",
                   "parameters");
    expect_refused(WIRE_TABLE_ROUTINE, "p", "CREATE PROCEDURE `p`() /*!50000 DROP TABLE x */",
                   "comment");
    expect_refused(WIRE_TABLE_FUNCTION, "f",
                   "CREATE FUNCTION `f`() RETURNS INT READS SQL DATA RETURN (SELECT COUNT(*) FROM "
                   "information_schema.tables)",
                   "outside the site's schema");
    expect_refused(WIRE_TABLE_EVENT, "e",
                   "CREATE EVENT `e` ON SCHEDULE AT (SELECT MAX(x) FROM other.t) DO SELECT 1",
                   "schedule");
    expect_refused(WIRE_TABLE_EVENT, "e", "CREATE EVENT `e` DO SELECT 1", "ON SCHEDULE");
    expect_refused(WIRE_TABLE_EVENT, "e",
                   "CREATE EVENT `e` ON SCHEDULE EVERY 1 DAY DO GRANT ALL ON *.* TO x",
                   "uses GRANT");
}

static void test_qualifier_rewritten(void **state)
{
    /* With a target schema the primary's qualifier becomes the target's, not dropped: the server
     * keeps a view's or routine's function calls as written. */
    wire_table_def_t t = {.name = "v_posts",
                          .kind = WIRE_TABLE_VIEW,
                          .create_sql = "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW "
                                        "`v_posts` AS select `site`.`f`(`p`.`ID`) AS `n` from "
                                        "`site`.`wp_posts` `p`",
                          .sql_mode = "",
                          .charset = "utf8mb4",
                          .collation = "utf8mb4_general_ci",
                          .engine = "",
                          .comment = ""};
    buf_t out = BUF_INIT;
    char err[512] = "";
    assert_int_equal(dbddl_check_object(&t, "site", "understudy_site", site_names, 3, site_tables,
                                        2, &out, err, sizeof(err)),
                     0);
    buf_append(&out, "", 1);
    assert_string_equal((const char *)buf_data(&out),
                        "CREATE OR REPLACE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v_posts` "
                        "AS select `understudy_site`.`f`(`p`.`ID`) AS `n` from "
                        "`understudy_site`.`wp_posts` `p`");
    buf_free(&out);
}

static void test_view_refused(void **state)
{
    expect_refused(WIRE_TABLE_VIEW, "v",
                   "CREATE DEFINER=`root`@`localhost` VIEW `v` AS select 1 AS `1`", "DEFINER");
    expect_refused(WIRE_TABLE_VIEW, "v",
                   "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`%` SQL SECURITY DEFINER VIEW `v` "
                   "AS select 1",
                   "DEFINER");
    expect_refused(WIRE_TABLE_VIEW, "v",
                   "CREATE VIEW `v` AS select `u`.`authentication_string` from `mysql`.`user` `u`",
                   "outside the site's schema");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select * from `other`.`secrets`",
                   "outside the site's schema");
    expect_refused(WIRE_TABLE_VIEW, "v",
                   "CREATE VIEW `v` AS select `other`.`secrets`.`x` from `site`.`wp_posts`",
                   "outside the site's schema");
    expect_refused(WIRE_TABLE_VIEW, "v",
                   "CREATE VIEW `v` AS select * from `other`.`secrets` `other`",
                   "outside the site's schema");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select 1; DROP TABLE wp_posts",
                   "more than one statement");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select 1; select 2",
                   "more than one statement");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select 1 /*!50000 , 2 */", "comment");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select 1 -- x", "comment");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `w` AS select 1", "another object");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `x`.`v` AS select 1", "another object");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select load_file('/etc/shadow')",
                   "LOAD_FILE");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select @@global.secure_file_priv",
                   "@@");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE TABLE `v` (a int) DATA DIRECTORY='/tmp'",
                   "VIEW expected");
    expect_refused(WIRE_TABLE_VIEW, "v", "CREATE VIEW `v` AS select 'unterminated", "unterminated");
    expect_refused(WIRE_TABLE_VIEW, "understudy~gen1", "CREATE VIEW `understudy~gen1` AS select 1",
                   "reserved");
}

static void test_trigger(void **state)
{
    expect_ok(WIRE_TABLE_TRIGGER, "tr",
              "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW set "
              "new.post_title=concat(new.post_title,'!')",
              "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW set "
              "new.post_title=concat(new.post_title,'!')");
    expect_ok(WIRE_TABLE_TRIGGER, "tr",
              "CREATE TRIGGER `tr` AFTER DELETE ON `wp_posts` FOR EACH ROW BEGIN DELETE FROM "
              "site.wp_options WHERE option_id = OLD.ID; UPDATE wp_options SET option_value = 1; "
              "END",
              "CREATE TRIGGER `tr` AFTER DELETE ON `wp_posts` FOR EACH ROW BEGIN DELETE FROM "
              "wp_options WHERE option_id = OLD.ID; UPDATE wp_options SET option_value = 1; END");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE DEFINER=`root`@`localhost` TRIGGER `tr` BEFORE INSERT ON `wp_posts` "
                   "FOR EACH ROW set new.a = 1",
                   "DEFINER");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE TRIGGER `tr` BEFORE INSERT ON `mysql`.`user` FOR EACH ROW set new.a=1",
                   "not on one of the site's own tables");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW insert into "
                   "other.log values (1)",
                   "outside the site's schema");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW set new.a=1; "
                   "GRANT ALL ON *.* TO x",
                   "more than one statement");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW BEGIN set "
                   "new.a=1; GRANT ALL ON *.* TO x; END",
                   "GRANT");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW set new.a=1; "
                   "set new.b=2",
                   "more than one statement");
    expect_refused(WIRE_TABLE_TRIGGER, "tr",
                   "CREATE TRIGGER `tr` BEFORE INSERT ON `wp_posts` FOR EACH ROW select 1 into "
                   "outfile '/tmp/x'",
                   "OUTFILE");
}

static wire_column_def_t col(const char *name, const char *type)
{
    wire_column_def_t c = {.name = name,
                           .column_type = type,
                           .nullable = true,
                           .charset = "",
                           .collation = "",
                           .default_value = "",
                           .extra = "",
                           .generation_expression = ""};
    return c;
}

static int create(const wire_column_def_t *cols, size_t n, const char *engine, buf_t *out,
                  char *err)
{
    static const char *const pk[] = {"id"};
    wire_index_def_t idx = {
        .name = "PRIMARY", .unique = true, .columns = pk, .n_columns = 1, .index_type = "BTREE"};
    wire_table_def_t t = {.name = "wp_t",
                          .kind = WIRE_TABLE_BASE,
                          .engine = engine,
                          .charset = "utf8mb4",
                          .collation = "utf8mb4_unicode_ci",
                          .auto_increment = 7,
                          .columns = cols,
                          .n_columns = n,
                          .indexes = &idx,
                          .n_indexes = 1,
                          .create_sql = "",
                          .comment = "it's"};
    buf_reset(out);
    int r = dbddl_create_table(&t, "st", out, err, 512);
    buf_append(out, "", 1);
    return r;
}

static void test_checks(void **state)
{
    static const char *const pk[] = {"id"};
    wire_index_def_t idx = {
        .name = "PRIMARY", .unique = true, .columns = pk, .n_columns = 1, .index_type = "BTREE"};
    wire_column_def_t c[2] = {col("id", "int(11)"), col("qty", "int(11)")};
    wire_check_def_t k[2] = {{"qty", "`qty` >= 0", "qty"}, {"range_ok", "`id` < 100", ""}};
    wire_table_def_t t = {.name = "wp_t",
                          .kind = WIRE_TABLE_BASE,
                          .engine = "InnoDB",
                          .charset = "",
                          .collation = "",
                          .columns = c,
                          .n_columns = 2,
                          .indexes = &idx,
                          .n_indexes = 1,
                          .checks = k,
                          .n_checks = 2,
                          .create_sql = "",
                          .comment = ""};
    buf_t out = BUF_INIT;
    char err[512] = "";
    assert_int_equal(dbddl_create_table(&t, NULL, &out, err, sizeof(err)), 0);
    buf_append(&out, "", 1);
    assert_string_equal((const char *)buf_data(&out), "CREATE TABLE `wp_t` (\n"
                                                      "  `id` int(11),\n"
                                                      "  `qty` int(11) CHECK (`qty` >= 0),\n"
                                                      "  PRIMARY KEY (`id`),\n"
                                                      "  CONSTRAINT `range_ok` CHECK (`id` < 100)\n"
                                                      ") ENGINE=InnoDB");

    /* Hostile clauses: another object, a second statement, a comment, a server variable. */
    const char *const bad[] = {
        "`id` IN (SELECT x FROM other.t)", "1); DROP TABLE wp_t; (1",          "1 /*!50000 OR 1 */",
        "@@global.read_only = 0",          "LOAD_FILE('/etc/passwd') IS NULL", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        k[1].clause = bad[i];
        buf_reset(&out);
        if (dbddl_create_table(&t, NULL, &out, err, sizeof(err)) != ERR_REFUSED)
            fail_msg("CHECK (%s) was accepted", bad[i]);
    }
    k[1].clause = "`id` < 100";
    k[0].column = "nope";
    buf_reset(&out);
    assert_int_equal(dbddl_create_table(&t, NULL, &out, err, sizeof(err)), ERR_REFUSED);
    assert_non_null(strstr(err, "column the table does not have"));
    buf_free(&out);
}

static void test_create_table(void **state)
{
    buf_t out = BUF_INIT;
    char err[512];
    wire_column_def_t c[4] = {col("id", "bigint(20) unsigned"), col("we`ird", "enum('a','b''c')"),
                              col("j", "longtext"), col("g", "int(11)")};
    c[0].nullable = false;
    c[0].extra = "auto_increment";
    c[1].has_default = true;
    c[1].default_value = "'a'";
    c[1].charset = "utf8mb4";
    c[1].collation = "utf8mb4_bin";
    c[2].sql_type = 245;
    c[3].generated = true;
    c[3].stored = true;
    c[3].generation_expression = "`id` + 1";
    assert_int_equal(create(c, 4, "InnoDB", &out, err), 0);
    assert_string_equal((const char *)buf_data(&out),
                        "CREATE TABLE `st`.`wp_t` (\n"
                        "  `id` bigint(20) unsigned NOT NULL auto_increment,\n"
                        "  `we``ird` enum('a','b''c') CHARACTER SET utf8mb4 COLLATE utf8mb4_bin "
                        "DEFAULT 'a',\n"
                        "  `j` longtext CHECK (json_valid(`j`)),\n"
                        "  `g` int(11) GENERATED ALWAYS AS (`id` + 1) STORED,\n"
                        "  PRIMARY KEY (`id`)\n"
                        ") ENGINE=InnoDB AUTO_INCREMENT=7 DEFAULT CHARSET=utf8mb4 "
                        "COLLATE=utf8mb4_unicode_ci COMMENT='it\\'s'");

    /* Engines that reach outside the server's own storage. */
    assert_int_equal(create(c, 1, "CONNECT", &out, err), ERR_REFUSED);
    assert_non_null(strstr(err, "ENGINE=CONNECT"));
    assert_int_equal(create(c, 1, "FEDERATED", &out, err), ERR_REFUSED);
    assert_int_equal(create(c, 1, "SPIDER", &out, err), ERR_REFUSED);
    assert_int_equal(create(c, 1, "InnoDB DATA DIRECTORY='/tmp'", &out, err), ERR_REFUSED);

    /* SQL smuggled into typed fields. */
    wire_column_def_t bad = col("id", "int) DATA DIRECTORY='/tmp' (");
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);
    bad = col("id", "int; DROP DATABASE x");
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);
    bad = col("id", "varchar(10)");
    bad.charset = "utf8mb4 DATA DIRECTORY='/tmp'";
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);
    bad = col("id", "varchar(10)");
    bad.has_default = true;
    bad.default_value = "(select 1)";
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);
    bad.default_value = "'a' COMMENT 'x'";
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);
    bad = col("id", "int");
    bad.extra = "auto_increment, ADD COLUMN y int";
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);
    bad = col("id", "int");
    bad.generated = true;
    bad.generation_expression = "(select `x` from `mysql`.`user`)";
    assert_int_equal(create(&bad, 1, "InnoDB", &out, err), ERR_REFUSED);

    /* Defaults that are literals pass. */
    const char *const good_defaults[] = {
        "NULL", "0", "-1.5", "'x''y'", "b'101'", "current_timestamp()", "current_timestamp(6)"};
    for (size_t i = 0; i < sizeof(good_defaults) / sizeof(good_defaults[0]); i++) {
        wire_column_def_t g = col("id", "int");
        g.has_default = true;
        g.default_value = good_defaults[i];
        if (create(&g, 1, "InnoDB", &out, err) != 0)
            fail_msg("default %s refused: %s", good_defaults[i], err);
    }
    buf_free(&out);
}

static void test_names(void **state)
{
    char err[256];
    assert_int_equal(dbddl_check_name("wp_posts", err, sizeof(err)), 0);
    assert_int_equal(dbddl_check_name("we`ird name", err, sizeof(err)), 0);
    assert_int_equal(dbddl_check_name("", err, sizeof(err)), ERR_REFUSED);
    assert_int_equal(dbddl_check_name("a.b", err, sizeof(err)), ERR_REFUSED);
    assert_int_equal(dbddl_check_name("../x", err, sizeof(err)), ERR_REFUSED);
    assert_int_equal(
        dbddl_check_name("x123456789012345678901234567890123456789012345678901234567890123456", err,
                         sizeof(err)),
        ERR_REFUSED);
    assert_true(dbddl_sql_mode_ok("STRICT_TRANS_TABLES,NO_ZERO_DATE"));
    assert_false(dbddl_sql_mode_ok("x'; DROP"));
    assert_true(dbddl_charset_ok("utf8mb4_0900_ai_ci"));
    assert_false(dbddl_charset_ok("utf8 COLLATE x"));
}

static void test_type_map(void **state)
{
    assert_int_equal(agentdb_type_code("varchar"), 253);
    assert_int_equal(agentdb_type_code("BIGINT"), 8);
    assert_int_equal(agentdb_type_code("decimal"), 246);
    assert_int_equal(agentdb_type_code("bit"), 16);
    assert_int_equal(agentdb_type_code("nonsense"), 0);
}

static void test_digest_sql(void **state)
{
    wire_column_def_t c[2] = {col("a", "int"), col("g", "int")};
    c[1].generated = true;
    wire_table_def_t t = {.name = "t`x", .columns = c, .n_columns = 2};
    buf_t out = BUF_INIT;
    assert_int_equal(dbddl_digest_sql(&t, "s", &out), 0);
    buf_append(&out, "", 1);
    assert_string_equal((const char *)buf_data(&out),
                        "SELECT COUNT(*), IFNULL(SUM(CAST(CONV(LEFT(MD5(CONCAT(IFNULL(CONCAT("
                        "LENGTH(`a`),':',CAST(`a` AS BINARY)),'-'))),16),16,10) AS UNSIGNED)),0) "
                        "FROM `s`.`t``x`");
    buf_free(&out);
}

static const char wp_in[] = "<?php\n"
                            "// define('DB_NAME', 'commented');\n"
                            "define( 'DB_NAME', 'primary_db' );\n"
                            "define(\"DB_USER\", \"prim\" . \"ary\");\n"
                            "define( 'DB_PASSWORD', 'se\\'cret, with (parens)' );\n"
                            "/* define('DB_HOST', 'x'); */\n"
                            "define( 'DB_HOST', getenv('DB_HOST') ?: 'localhost' );\n"
                            "define( 'DB_CHARSET', 'utf8mb4' );\n"
                            "define( 'AUTH_KEY', 'k$y\"\\'' );\n"
                            "$table_prefix = 'wp_';\n";

static const char wp_out[] = "<?php\n"
                             "// define('DB_NAME', 'commented');\n"
                             "define( 'DB_NAME', 'understudy_site' );\n"
                             "define(\"DB_USER\", 'understudy');\n"
                             "define( 'DB_PASSWORD', 'p\\'w\\\\' );\n"
                             "/* define('DB_HOST', 'x'); */\n"
                             "define( 'DB_HOST', 'localhost:/run/mysqld/mysqld.sock' );\n"
                             "define( 'DB_CHARSET', 'utf8mb4' );\n"
                             "define( 'AUTH_KEY', 'k$y\"\\'' );\n"
                             "$table_prefix = 'wp_';\n";

static void test_wpconfig(void **state)
{
    dbddl_wp_t vals = {"understudy_site", "understudy", "p'w\\",
                       "localhost:/run/mysqld/mysqld.sock"};
    buf_t out = BUF_INIT;
    char err[256];

    assert_int_equal(dbddl_rewrite_wpconfig(wp_in, strlen(wp_in), &vals, &out, err, sizeof(err)),
                     0);
    buf_append(&out, "", 1);
    assert_string_equal((const char *)buf_data(&out), wp_out);
    buf_reset(&out);
    const char missing[] = "<?php define('DB_NAME', 'x'); define('DB_USER','u');";
    assert_int_equal(
        dbddl_rewrite_wpconfig(missing, strlen(missing), &vals, &out, err, sizeof(err)),
        ERR_REFUSED);
    assert_non_null(strstr(err, "DB_PASSWORD"));

    /* [site] wp_cron = no: an existing define becomes true, or one is added after "<?php". */
    vals.disable_wp_cron = true;
    const char with[] = "<?php\ndefine('DB_NAME','a'); define('DB_USER','b');\n"
                        "define('DB_PASSWORD','c'); define('DB_HOST','d');\n"
                        "define( 'DISABLE_WP_CRON', false );\n";
    buf_reset(&out);
    assert_int_equal(dbddl_rewrite_wpconfig(with, strlen(with), &vals, &out, err, sizeof(err)), 0);
    buf_append(&out, "", 1);
    assert_non_null(strstr((const char *)buf_data(&out), "define( 'DISABLE_WP_CRON', true );\n"));
    assert_null(strstr((const char *)buf_data(&out), "false"));
    buf_reset(&out);
    size_t without = strlen(with) - strlen("define( 'DISABLE_WP_CRON', false );\n");
    assert_int_equal(dbddl_rewrite_wpconfig(with, without, &vals, &out, err, sizeof(err)), 0);
    buf_append(&out, "", 1);
    const char *o = (const char *)buf_data(&out);
    static const char head[] = "<?php\ndefine( 'DISABLE_WP_CRON', true );";
    assert_true(!strncmp(o, head, sizeof(head) - 1));
    assert_non_null(strstr(o, "define('DB_HOST','localhost:/run/mysqld/mysqld.sock');"));
    const char notag[] = "define('DB_NAME','a'); define('DB_USER','b'); define('DB_PASSWORD','c'); "
                         "define('DB_HOST','d');";
    buf_reset(&out);
    assert_int_equal(dbddl_rewrite_wpconfig(notag, strlen(notag), &vals, &out, err, sizeof(err)),
                     ERR_REFUSED);
    assert_non_null(strstr(err, "<?php"));
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_ok),      cmocka_unit_test(test_view_refused),
        cmocka_unit_test(test_routines),     cmocka_unit_test(test_qualifier_rewritten),
        cmocka_unit_test(test_checks),       cmocka_unit_test(test_trigger),
        cmocka_unit_test(test_create_table), cmocka_unit_test(test_names),
        cmocka_unit_test(test_type_map),     cmocka_unit_test(test_digest_sql),
        cmocka_unit_test(test_wpconfig),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
