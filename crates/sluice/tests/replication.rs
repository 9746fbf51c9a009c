//! End to end: a real MariaDB source, the real `sluice` binary, a SQLite target.

mod common;

use common::Env;

const SHOP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200), phone VARCHAR(40));
CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(10,2), note TEXT);
CREATE TABLE shop.audit (id INT PRIMARY KEY, msg TEXT);
CREATE DATABASE other;
CREATE TABLE other.things (id INT PRIMARY KEY, v INT);
";

const TABLES: &str = "
[[tables]]
match = \"shop.customers\"
exclude_columns = [\"email\", \"phone\"]

[[tables]]
match = \"shop.ord*\"
";

#[test]
fn replicates_filtered_tables_and_columns() {
    let env = Env::new(SHOP, TABLES);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    env.db.exec(
        "INSERT INTO shop.customers VALUES (1, 'Ann', 'ann@example.com', '555-1'), (2, 'Bob', 'bob@example.com', NULL);
         INSERT INTO shop.orders VALUES (10, 1, 12.50, 'first'), (11, 2, NULL, NULL);
         INSERT INTO shop.audit VALUES (1, 'not replicated');
         INSERT INTO other.things VALUES (1, 1);
         UPDATE shop.orders SET total = 99.99 WHERE id = 10;
         UPDATE shop.customers SET id = 3 WHERE id = 2;
         DELETE FROM shop.orders WHERE id = 11;",
    );
    env.wait_caught_up(&mut sluice);
    assert_eq!(
        env.target_rows("SELECT id, name FROM customers ORDER BY id"),
        vec![vec!["1", "Ann"], vec!["3", "Bob"]]
    );
    assert_eq!(
        env.target_rows("SELECT id, customer_id, total, note FROM orders"),
        vec![vec!["10", "1", "99.99", "first"]]
    );
    let cols: Vec<String> = env
        .target_rows("SELECT name FROM pragma_table_info('customers')")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(cols, vec!["id", "name"], "PII columns must not exist at the target");
    let tables = env.target_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_sluice%' ESCAPE '\\' ORDER BY name",
    );
    assert_eq!(tables, vec![vec!["customers"], vec!["orders"]]);
    let log = env.log();
    assert!(
        !log.contains("ann@example.com") && !log.contains(common::REPL_PASSWORD),
        "log leaks PII or the password:\n{log}"
    );
    assert!(sluice.stop().success());
}

/// Number of source transactions a `sluice run` reported applying when it stopped.
fn applied_txns_at_stop(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("stopped") && l.contains("source_txns="))
        .map(|l| {
            let rest = &l[l.find("source_txns=").unwrap() + "source_txns=".len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn stop_and_start_resume_exactly_once() {
    let env = Env::new(SHOP, TABLES);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    for i in 0..20 {
        env.db
            .exec(&format!("INSERT INTO shop.orders VALUES ({i}, {i}, {i}.25, 'n{i}')"));
    }
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    // Written while sluice is down: 15 transactions, including deletes and re-inserts that
    // would show up as resurrected or missing rows if anything were applied twice or skipped.
    for i in 0..5 {
        env.db.exec(&format!("DELETE FROM shop.orders WHERE id = {i}"));
        env.db.exec(&format!(
            "INSERT INTO shop.orders VALUES ({}, 7, 1.00, 'again')",
            100 + i
        ));
        env.db.exec(&format!(
            "UPDATE shop.orders SET id = {} WHERE id = {}",
            200 + i,
            100 + i
        ));
    }
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let counts = applied_txns_at_stop(&env.log());
    assert_eq!(
        counts,
        vec![20, 15],
        "applied transaction counts per run; log:\n{}",
        env.log()
    );
    let target = env.target_rows("SELECT id, customer_id, total, note FROM orders ORDER BY id");
    let source = env
        .db
        .query_rows("SELECT id, customer_id, total, note FROM shop.orders ORDER BY id");
    assert_eq!(target, source);
    assert_eq!(target.len(), 20);
}

#[test]
fn a_multi_statement_transaction_appears_all_at_once() {
    let env = Env::new(SHOP, TABLES);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    // One source transaction touching two tables with many rows (several apply chunks).
    env.db.exec(
        "BEGIN;
         INSERT INTO shop.orders SELECT seq, seq, 1.50, NULL FROM shop.seq_1_to_30000;
         INSERT INTO shop.customers SELECT seq, CONCAT('c', seq), NULL, NULL FROM shop.seq_1_to_3000;
         UPDATE shop.orders SET total = 2.50 WHERE id <= 100;
         COMMIT;",
    );
    // While it is applied, a reader must never see part of it.
    let target = env.target.clone();
    let observed = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let rows = common::sqlite_rows(
                &target,
                "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM customers), (SELECT count(*) FROM orders WHERE total = '2.50')",
            );
            let state = (rows[0][0].clone(), rows[0][1].clone(), rows[0][2].clone());
            let done = state.0 == "30000";
            seen.insert(state);
            if done {
                break;
            }
        }
        seen
    });
    env.wait_caught_up(&mut sluice);
    let seen = observed.join().unwrap();
    let allowed: std::collections::BTreeSet<_> = [("0", "0", "0"), ("30000", "3000", "100")]
        .into_iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert!(seen.is_subset(&allowed), "a reader saw a partial transaction: {seen:?}");
    assert!(seen.contains(&("30000".into(), "3000".into(), "100".into())));
    assert!(sluice.stop().success());
}

#[test]
fn kill_9_in_a_large_transaction_then_restart_is_exact() {
    let env = Env::new(SHOP, TABLES);
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    env.db.exec("INSERT INTO shop.orders VALUES (0, 0, 0.00, 'before')");
    env.wait_caught_up(&mut sluice);
    env.db
        .exec("INSERT INTO shop.orders SELECT seq, seq % 97, seq / 100, 'bulk' FROM shop.seq_1_to_200000");
    // Wait until the applier is inside the big transaction, then crash it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.log().contains("large target transaction in progress") {
        assert!(
            std::time::Instant::now() < deadline,
            "never saw the large transaction start:\n{}",
            env.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    sluice.kill9();
    // Nothing of the large transaction is visible; the checkpoint is before it.
    assert_eq!(env.target_rows("SELECT count(*) FROM orders"), vec![vec!["1"]]);
    env.db.exec("UPDATE shop.orders SET note = 'after' WHERE id = 0");
    let mut sluice = env.start();
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let target = env.target_rows("SELECT count(*), sum(customer_id), group_concat(DISTINCT note) FROM orders");
    let source = env
        .db
        .query_rows("SELECT count(*), sum(customer_id), group_concat(DISTINCT note ORDER BY note) FROM shop.orders");
    assert_eq!(target[0][0], source[0][0]);
    assert_eq!(target[0][1], source[0][1]);
    assert_eq!(
        env.target_rows("SELECT note FROM orders WHERE id = 0"),
        vec![vec!["after"]]
    );
    assert_eq!(
        env.target_rows("SELECT id, total FROM orders WHERE id IN (1, 199999) ORDER BY id"),
        env.db
            .query_rows("SELECT id, total FROM shop.orders WHERE id IN (1, 199999) ORDER BY id")
    );
}

#[test]
fn without_full_row_metadata_names_and_keys_come_from_the_catalog() {
    let env = Env::with_options(
        sluice_testkit::MariaDbOptions::new().server_arg("--binlog-row-metadata=MINIMAL"),
        SHOP,
        TABLES,
    );
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("binlog_row_metadata is MINIMAL"));
    let mut sluice = env.start();
    env.db.exec(
        "INSERT INTO shop.customers VALUES (1, 'Ann', 'ann@example.com', NULL);
         INSERT INTO shop.orders VALUES (10, 1, 12.50, 'x');
         UPDATE shop.orders SET id = 11, total = -3.25 WHERE id = 10;",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_eq!(
        env.target_rows("SELECT id, name FROM customers"),
        vec![vec!["1", "Ann"]]
    );
    assert_eq!(
        env.target_rows("SELECT id, total, note FROM orders"),
        vec![vec!["11", "-3.25", "x"]]
    );
}

#[test]
fn parallel_writers_with_hot_rows_equal_the_source() {
    let env = Env::new(
        "CREATE DATABASE shop;
         CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL);
         CREATE TABLE shop.items (id INT PRIMARY KEY, owner INT, v VARCHAR(20));
         INSERT INTO shop.counters VALUES (1, 0), (2, 0), (3, 0);",
        "[[tables]]\nmatch = \"shop.*\"\n",
    );
    env.write_config(
        "[[tables]]\nmatch = \"shop.*\"\n\n[apply]\nwriters = 4\nbatch_max_rows = 50\n",
        "",
    );
    let mut sluice = env.start();
    // Four concurrent clients: every transaction bumps a hot counter (conflicts) and touches
    // its own items (mostly disjoint), with key changes, deletes and re-inserts.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let sql: String = (0..150)
                .map(|i| {
                    let id = c * 10_000 + i;
                    format!(
                        "BEGIN; UPDATE shop.counters SET n = n + 1 WHERE id = {hot};
                         INSERT INTO shop.items VALUES ({id}, {c}, 'v{i}');
                         UPDATE shop.items SET id = id + 5000, v = 'moved' WHERE id = {prev};
                         DELETE FROM shop.items WHERE id = {old};
                         COMMIT;",
                        hot = 1 + (i % 3),
                        prev = id - 1,
                        old = id + 5000 - 3,
                    )
                })
                .collect();
            let port = env.db.port();
            std::thread::spawn(move || {
                let status = std::process::Command::new("mariadb")
                    .args(["-h127.0.0.1", "-uroot", &format!("-P{port}"), "-e", &sql])
                    .status()
                    .unwrap();
                assert!(status.success());
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert!(env.log().contains("writers=4"), "{}", env.log());
    assert_eq!(
        env.target_rows("SELECT id, n FROM counters ORDER BY id"),
        env.db.query_rows("SELECT id, n FROM shop.counters ORDER BY id")
    );
    assert_eq!(
        env.target_rows("SELECT id, owner, v FROM items ORDER BY id"),
        env.db.query_rows("SELECT id, owner, v FROM shop.items ORDER BY id")
    );
    let total: i64 = env.target_rows("SELECT sum(n) FROM counters")[0][0].parse().unwrap();
    assert_eq!(total, 600);
}

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_million_row_transaction_streams_in_bounded_memory() {
    let env = Env::new(SHOP, TABLES);
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.orders SELECT seq, seq % 1000, seq / 100, 'bulk row with some text' FROM shop.seq_1_to_1000000");
    env.wait_caught_up(&mut sluice);
    let peak_mib = peak_rss_kib(sluice.pid()) / 1024;
    assert!(sluice.stop().success());
    eprintln!("peak RSS of sluice applying a 1,000,000-row transaction: {peak_mib} MiB");
    assert!(peak_mib < 256, "peak RSS {peak_mib} MiB");
    assert_eq!(
        env.target_rows("SELECT count(*), sum(customer_id) FROM orders"),
        env.db.query_rows("SELECT count(*), sum(customer_id) FROM shop.orders")
    );
}
