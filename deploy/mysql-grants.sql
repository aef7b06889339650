-- The controller's own MariaDB account on the backup host.
--
-- Run as the database administrator on the backup:   mariadb < mysql-grants.sql
-- (edit the names first if your site is not "blog").
--
-- What the controller needs: to load the primary's tables into a schema of its own, check
-- them, and swap them in as the site's live database; so it creates, fills, renames and drops
-- schemas and tables. It does not need any global privilege, and it gets none: its account is
-- confined to the schemas whose names start with "understudy_", which holds
--   * the site's live database, [database] name in controller.conf (here understudy_blog;
--     at most 40 characters), and the schemas the controller creates next to it:
--   * understudy_blog_new<N>  the changed tables of generation N while it is received and
--                             until it is switched in (and after a rollback undid it),
--   * understudy_blog_meta    the manifest of the live generation (which tables, views and
--                             triggers it has, with the primary's digests),
--   * understudy_blog_old<N>  the tables generation N replaced (what a rollback puts back),
--                             kept until N is older than [retention] generations.
-- The switch is one multi-table RENAME TABLE across these schemas (atomic and crash-safe on
-- MariaDB >= 10.6), so they must all live on this server's one datadir.
-- A compromised controller (or primary feeding it) therefore cannot read or change any other
-- database on this server, nor the mysql schema, nor grant anything to anyone.
--
-- In GRANT, '_' and '%' are wildcards in a database name: the backslash makes the '_' after
-- "understudy" literal, and '%' matches the rest. Without it, `understudy_%` would also match
-- e.g. "understudyX".

-- Option 1 (recommended, [database] socket): MariaDB's unix_socket authentication. The server
-- checks that the connecting process runs as the system user "understudy" (the systemd unit's
-- User=); there is no password to store. Needs the unix_socket plugin, active by default since
-- MariaDB 10.4.
CREATE USER IF NOT EXISTS 'understudy'@'localhost' IDENTIFIED VIA unix_socket;

-- Option 2 ([database] host, or a server without unix_socket): a password, kept in the file
-- named by [database] password_file (mode 0600, owned by the understudy user). Use
-- mysql_native_password: it is the one authentication plugin compiled into every build of the
-- client, the statically linked agent's included.
-- CREATE USER IF NOT EXISTS 'understudy'@'127.0.0.1'
--     IDENTIFIED VIA mysql_native_password USING PASSWORD('change me');

-- ALL PRIVILEGES at the database level: SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER,
-- INDEX, CREATE VIEW, SHOW VIEW, TRIGGER, CREATE ROUTINE, ALTER ROUTINE, EXECUTE, EVENT, LOCK
-- TABLES, REFERENCES, CREATE TEMPORARY TABLES, DELETE HISTORY; not GRANT OPTION.
GRANT ALL PRIVILEGES ON `understudy\_%`.* TO 'understudy'@'localhost';
-- GRANT ALL PRIVILEGES ON `understudy\_%`.* TO 'understudy'@'127.0.0.1';

-- The bulk import uses LOAD DATA LOCAL INFILE fed from memory (no file is read on either
-- host): the server's local_infile must be ON (MariaDB's default). It needs no FILE privilege.

-- Not granted, on purpose:
--   * SET USER (SUPER before MariaDB 10.5.2): views, triggers, and with the agent's
--     [database] routines = yes stored procedures, functions and events, are recreated without
--     their DEFINER clause, as this account (their SQL SECURITY kept as on the primary: this is
--     also the account the backup's WordPress logs in with, so DEFINER and INVOKER run with the
--     same rights). With the binary log on, creating a function that may modify data needs
--     log_bin_trust_function_creators = 1 on this server (MariaDB error 1418 otherwise); events
--     keep the primary's ENABLE/DISABLE, and run only where event_scheduler = ON.
--   * FILE, PROCESS, RELOAD, REPLICATION ...: the controller reads and writes data over the
--     connection only.
--   * BINLOG ADMIN: with it the controller would import with sql_log_bin = 0; without it, on a
--     backup whose binary log is on, imports are logged like any other write.

-- The WordPress site itself, served from this backup after a failover: the controller writes
-- [database] user, the password from password_file, host:port (or localhost:socket) and name
-- into each generation's wp-config.php in place of the primary's. With unix_socket
-- authentication (option 1) PHP runs as another system user and cannot log in as
-- 'understudy': use option 2 on a backup that is to serve the site.
