//! Fail closed: wrong server settings, missing grants, purged binlogs, bad configs, and source
//! changes sluice cannot follow all stop it with a clear error and nothing half-written.

mod common;

use std::time::Duration;

use common::Env;
use sluice_testkit::MariaDbOptions;

const SHOP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(10,2), note TEXT, secret VARCHAR(50));
CREATE TABLE shop.nokey (a INT, b INT);
CREATE TABLE shop.nullable_unique (a INT, b INT, UNIQUE KEY (a));
";

const ORDERS: &str = "
[[tables]]
match = \"shop.orders\"
columns = [\"id\", \"customer_id\", \"total\", \"note\"]
";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

#[test]
fn check_passes_on_a_good_source() {
    let env = Env::new(SHOP, ORDERS);
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("shop.orders -> orders (4 of 5 columns)"), "{text}");
    assert!(!text.contains(common::REPL_PASSWORD));
}

#[test]
fn minimal_row_image_is_refused_by_preflight() {
    let env = Env::with_options(
        MariaDbOptions::new().server_arg("--binlog-row-image=MINIMAL"),
        SHOP,
        ORDERS,
    );
    for cmd in ["check", "run"] {
        let out = env.run_cmd(&[cmd, "-c", env.config.to_str().unwrap()]);
        assert!(!out.status.success());
        let text = stderr(&out);
        assert!(
            text.contains("binlog_row_image is MINIMAL") && text.contains("FULL"),
            "{cmd}: {text}"
        );
    }
    assert!(
        !env.target.exists() || env.checkpoint().is_none(),
        "nothing may be written on refusal"
    );
}

#[test]
fn statement_format_is_refused_by_preflight() {
    let env = Env::with_options(
        MariaDbOptions::new().server_arg("--binlog-format=STATEMENT"),
        SHOP,
        ORDERS,
    );
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("binlog_format is STATEMENT"), "{}", stderr(&out));
}

#[test]
fn missing_replication_grant_is_named() {
    let env = Env::new(SHOP, ORDERS);
    env.db.exec("REVOKE REPLICATION SLAVE ON *.* FROM 'sluice_repl'@'%'");
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("lacks REPLICATION SLAVE") && text.contains("GRANT REPLICATION SLAVE"),
        "{text}"
    );
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let env = Env::new(SHOP, ORDERS);
    std::fs::write(env.dir.path().join("password"), "wrong-password-xyz\n").unwrap();
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("cannot connect to the source") && text.contains("Access denied"),
        "{text}"
    );
    assert!(!text.contains("wrong-password-xyz"));
}

#[test]
fn bad_configs_name_the_key() {
    let env = Env::new(SHOP, ORDERS);
    let cases = [
        ("[[tables]]\nmatch = \"shop.orders\"\ncolums = [\"id\"]\n", "colums"),
        ("[[tables]]\nmatch = \"shop.[orders\"\n", "tables[0].match"),
        ("[[tables]]\nmatch = \"orders\"\n", "tables[0].match"),
        // Valid TOML whose secrets cannot be had: refused before "config: ok" too.
        (
            "[[tables]]\nmatch = \"shop.orders\"\n[tables.transforms]\nnote = \"hmac\"\n",
            "transforms.hmac_key_file",
        ),
        (
            "[[tables]]\nmatch = \"shop.orders\"\n[transforms]\nhmac_key_file = \"no-such-key\"\n",
            "transforms.hmac_key_file",
        ),
    ];
    for (tables, key) in cases {
        env.write_config(tables, "");
        let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(key), "expected {key} in: {}", stderr(&out));
        assert!(!stderr(&out).contains("config: ok"), "{}", stderr(&out));
    }
    let password = env.dir.path().join("password");
    std::fs::rename(&password, env.dir.path().join("password.moved")).unwrap();
    env.write_config(ORDERS, "");
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    std::fs::rename(env.dir.path().join("password.moved"), &password).unwrap();
    let text = stderr(&out);
    assert!(!out.status.success() && text.contains("source.password_file"), "{text}");
    assert!(!text.contains("config: ok"), "{text}");
    env.write_config(ORDERS, "bogus_key = 1");
    let out = env.run_cmd(&["run", "-c", env.config.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("bogus_key"),
        "{}",
        stderr(&out)
    );
    assert!(!env.target.exists());
}

#[test]
fn a_table_without_primary_key_is_refused_with_advice() {
    let env = Env::new(SHOP, "[[tables]]\nmatch = \"shop.*\"\n");
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = stderr(&out);
    // A unique key with a nullable column does not identify a row: refused too.
    for table in ["shop.nokey", "shop.nullable_unique"] {
        assert!(
            text.contains(&format!(
                "{table} has no primary key and no unique key on NOT NULL columns"
            )),
            "{text}"
        );
    }
    assert!(text.contains("Add a primary key on the source"), "{text}");
}

#[test]
fn excluding_a_key_column_is_refused() {
    let env = Env::new(
        SHOP,
        "[[tables]]\nmatch = \"shop.orders\"\nexclude_columns = [\"id\"]\n",
    );
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("primary key column id is not replicated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn purged_binlog_past_the_checkpoint_is_refused() {
    let env = Env::new(SHOP, ORDERS);
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.orders VALUES (1, 1, 1.00, 'a', 's')");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let checkpoint = env.checkpoint().unwrap();
    env.db
        .exec("INSERT INTO shop.orders VALUES (2, 1, 1.00, 'b', 's'); FLUSH BINARY LOGS;");
    let newest = env.db.query_rows("SHOW BINARY LOGS").last().unwrap()[0].clone();
    // MariaDB keeps a binlog until its transactions are durable in InnoDB (and while a dump
    // thread still reads it), so retry until the purge has really happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        env.db.exec(&format!("PURGE BINARY LOGS TO '{newest}'"));
        if env.db.query_rows("SHOW BINARY LOGS").len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source would not purge its binlogs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = env.run_cmd(&["run", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("purged") && text.contains(&checkpoint), "{text}");
    assert_eq!(env.checkpoint().unwrap(), checkpoint, "the checkpoint must not move");
    assert_eq!(env.target_rows("SELECT count(*) FROM orders"), vec![vec!["1"]]);
}

#[test]
fn dropping_a_replicated_column_stops_at_the_ddl() {
    let env = Env::new(SHOP, ORDERS);
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.orders VALUES (1, 1, 1.00, 'a', 's')");
    env.wait_caught_up(&mut sluice);
    let before = env.checkpoint().unwrap();
    env.db.exec("ALTER TABLE shop.orders DROP COLUMN note");
    let ddl_gtid = env.source_position();
    env.db.exec("INSERT INTO shop.orders VALUES (2, 1, 1.00, 's')");
    let status = sluice.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = env.log();
    assert!(log.contains("changes replicated table shop.orders"), "{log}");
    assert!(log.contains("drops replicated column note"), "{log}");
    assert!(log.contains("ALTER TABLE shop.orders DROP COLUMN note"), "{log}");
    assert!(
        log.contains(&ddl_gtid),
        "the error must name the GTID {ddl_gtid}: {log}"
    );
    assert_eq!(env.checkpoint().unwrap(), before);
    assert_eq!(env.target_rows("SELECT count(*) FROM orders"), vec![vec!["1"]]);
    // It stays stopped on restart rather than skipping the change (the startup check of the
    // source's current tables refuses first, naming the column).
    let out = env.run_cmd(&["run", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("column note"), "{}", stderr(&out));
    assert_eq!(env.checkpoint().unwrap(), before);
}

#[test]
fn unreplicated_column_changes_are_followed() {
    let env = Env::new(SHOP, ORDERS);
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.orders VALUES (1, 1, 1.00, 'a', 's')");
    env.wait_caught_up(&mut sluice);
    env.db.exec(
        "ALTER TABLE shop.orders ADD COLUMN extra INT FIRST, DROP COLUMN secret;
         INSERT INTO shop.orders (extra, id, customer_id, total, note) VALUES (5, 2, 2, 2.00, 'b');
         UPDATE shop.orders SET total = 3.00 WHERE id = 1;",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_eq!(
        env.target_rows("SELECT id, customer_id, total, note FROM orders ORDER BY id"),
        env.db
            .query_rows("SELECT id, customer_id, total, note FROM shop.orders ORDER BY id")
    );
}

/// A rename of a replicated table stops sluice before it, naming the way to resume
/// (TRUNCATE, once a stop here, is followed: tests/schema_changes.rs).
#[test]
fn rename_of_a_replicated_table_stops() {
    let env = Env::new(SHOP, ORDERS);
    let mut sluice = env.start();
    env.db
        .exec("INSERT INTO shop.orders VALUES (1, 1, 1.00, 'a', 's'); RENAME TABLE shop.orders TO shop.orders_old;");
    let status = sluice.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = env.log();
    assert!(log.contains("it renames the table to shop.orders_old"), "{log}");
    assert!(log.contains("leave shop.orders out of the config"), "{log}");
    assert_eq!(env.target_rows("SELECT count(*) FROM orders"), vec![vec!["1"]]);
}

#[test]
fn a_session_with_minimal_row_image_is_refused_when_its_events_arrive() {
    let env = Env::new(SHOP, ORDERS);
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.orders VALUES (1, 1, 1.00, 'a', 's')");
    env.wait_caught_up(&mut sluice);
    let before = env.checkpoint().unwrap();
    env.db
        .exec("SET SESSION binlog_row_image = 'MINIMAL'; UPDATE shop.orders SET total = 9.00 WHERE id = 1;");
    let status = sluice.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(env.log().contains("binlog_row_image=FULL"), "{}", env.log());
    assert_eq!(env.checkpoint().unwrap(), before);
    assert_eq!(env.target_rows("SELECT total FROM orders"), vec![vec!["1.00"]]);
}

#[test]
fn source_restart_is_survived() {
    let mut env = Env::new(SHOP, ORDERS);
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.orders VALUES (1, 1, 1.00, 'a', 's')");
    env.wait_caught_up(&mut sluice);
    env.db.restart();
    env.db.exec("INSERT INTO shop.orders VALUES (2, 1, 1.00, 'b', 's')");
    env.wait_caught_up(&mut sluice);
    assert!(env.log().contains("reconnecting"), "{}", env.log());
    assert!(sluice.stop().success());
    assert_eq!(env.target_rows("SELECT count(*) FROM orders"), vec![vec!["2"]]);
}

/// Without SELECT every tool used to report success on an incomplete target (check: "no
/// table matches yet", verify: nothing printed, exit 0). Now check, run and verify refuse,
/// and list every missing grant at once as a statement to run.
#[test]
fn missing_grants_are_all_listed_and_refused_by_check_run_and_verify() {
    let env = Env::new(SHOP, ORDERS);
    env.db
        .exec("REVOKE SELECT ON *.* FROM 'sluice_repl'@'%'; REVOKE REPLICATION SLAVE ON *.* FROM 'sluice_repl'@'%';");
    for cmd in ["check", "run", "verify"] {
        let out = env.run_cmd(&[cmd, "-c", env.config.to_str().unwrap()]);
        assert!(!out.status.success(), "{cmd} passed without grants");
        let text = stderr(&out);
        assert!(
            text.contains("GRANT REPLICATION SLAVE ON *.* TO 'sluice_repl'@'%'")
                && text.contains("GRANT SELECT ON `shop`.`orders` TO 'sluice_repl'@'%'"),
            "{cmd}: {text}"
        );
    }
    assert!(
        !env.target.exists() || env.checkpoint().is_none(),
        "nothing may be written on refusal"
    );
}

/// information_schema lists a table the user holds any privilege on; a table it cannot read
/// (INSERT only, or SELECT on some columns only) is named by check and run, all at once.
#[test]
fn a_selected_table_the_user_cannot_read_is_named() {
    let env = Env::new(
        "CREATE DATABASE crm;
         CREATE TABLE crm.people (id INT PRIMARY KEY, name TEXT);
         CREATE TABLE crm.notes (id INT PRIMARY KEY, body TEXT);
         CREATE TABLE crm.tags (id INT PRIMARY KEY, label TEXT);",
        "[[tables]]\nmatch = \"crm.*\"\n",
    );
    env.db.exec(
        "REVOKE SELECT ON *.* FROM 'sluice_repl'@'%';
         GRANT SELECT ON crm.people TO 'sluice_repl'@'%';
         GRANT INSERT ON crm.notes TO 'sluice_repl'@'%';
         GRANT SELECT (id) ON crm.tags TO 'sluice_repl'@'%';",
    );
    for cmd in ["check", "run"] {
        let out = env.run_cmd(&[cmd, "-c", env.config.to_str().unwrap()]);
        assert!(!out.status.success(), "{cmd} passed");
        let text = stderr(&out);
        assert!(
            text.contains("cannot read 2 selected table(s)")
                && text.contains("crm.notes")
                && text.contains("crm.tags")
                && !text.contains("crm.people ("),
            "{cmd}: {text}"
        );
    }
    assert!(!env.target.exists() || env.checkpoint().is_none());
    // Once granted, check passes and names the heartbeat grants it would still like.
    env.db
        .exec("GRANT SELECT ON crm.notes TO 'sluice_repl'@'%'; GRANT SELECT ON crm.tags TO 'sluice_repl'@'%';");
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("GRANT SELECT, INSERT, UPDATE, CREATE ON `sluice`.* TO 'sluice_repl'@'%'"),
        "{text}"
    );
}

/// A verify that compared nothing never reports success.
#[test]
fn verify_that_compares_nothing_fails() {
    let env = Env::new(SHOP, "[[tables]]\nmatch = \"shop.not_there\"\n");
    let out = env.run_cmd(&["verify", "-c", env.config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nothing was compared"), "{}", stderr(&out));
}
