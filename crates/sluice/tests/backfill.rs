//! Backfill: existing rows are copied while the stream runs, exactly, also with writes racing
//! the chunks, a kill -9 in the middle, composite and string keys, and tables added later.

mod common;

use std::time::{Duration, Instant};

use common::{same_rows, Env};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(10,2), note VARCHAR(40));
CREATE TABLE shop.lines (order_id INT, line_no SMALLINT, sku VARCHAR(20) CHARACTER SET utf8mb4, qty INT, PRIMARY KEY (order_id, line_no));
CREATE TABLE shop.tags (name VARCHAR(30) PRIMARY KEY, hits BIGINT UNSIGNED);
INSERT INTO shop.orders SELECT seq, seq % 97, seq * 1.25, CONCAT('n', seq) FROM shop.seq_1_to_5000;
INSERT INTO shop.lines SELECT seq DIV 4, seq % 4, CONCAT('sku-', seq), seq % 7 FROM shop.seq_4_to_3999;
INSERT INTO shop.tags SELECT CONCAT('tag-', LPAD(seq, 5, '0'), IF(seq % 3 = 0, '-ä', '')), seq FROM shop.seq_1_to_1500;
";

fn tables(chunk_rows: usize) -> String {
    format!("[[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = {chunk_rows}\n")
}

fn backfill_done(env: &Env, tables: usize) -> bool {
    let exists = !env
        .target_rows("SELECT name FROM sqlite_master WHERE name = '_sluice_backfill'")
        .is_empty();
    exists && env.target_rows("SELECT count(*) FROM _sluice_backfill WHERE done")[0][0] == tables.to_string()
}

fn wait_backfilled(env: &Env, sluice: &mut common::Sluice, tables: usize) {
    common::wait_for(env, sluice, "the backfill", || {
        env.target.exists() && backfill_done(env, tables)
    });
    env.wait_caught_up(sluice);
}

fn assert_equal(env: &Env) {
    same_rows(
        "orders",
        env.target_rows("SELECT id, customer, total, note FROM orders"),
        env.db.query_rows("SELECT id, customer, total, note FROM shop.orders"),
    );
    same_rows(
        "lines",
        env.target_rows("SELECT order_id, line_no, sku, qty FROM lines"),
        env.db.query_rows("SELECT order_id, line_no, sku, qty FROM shop.lines"),
    );
    same_rows(
        "tags",
        env.target_rows("SELECT name, hits FROM tags"),
        env.db.query_rows("SELECT name, hits FROM shop.tags"),
    );
}

#[test]
fn existing_rows_are_copied_on_first_start() {
    let env = Env::new(SETUP, &tables(700));
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 3);
    assert!(sluice.stop().success());
    assert_equal(&env);
    assert_eq!(env.target_rows("SELECT count(*) FROM orders"), vec![vec!["5000"]]);
}

/// Concurrent writers hammer the rows being copied (updates, deletes, re-inserts, key changes)
/// while chunks are small, so windows and chunk boundaries race the stream constantly.
#[test]
fn writes_racing_the_chunks_converge() {
    let env = Env::new(SETUP, &tables(97));
    let mut sluice = env.start();
    let port = env.db.port();
    let writers: Vec<_> = (0..3)
        .map(|c| {
            std::thread::spawn(move || {
                let sql: String = (0..120)
                    .map(|i| {
                        let id = 1 + (i * 41 + c * 13) % 5000;
                        format!(
                            "BEGIN;
                             UPDATE shop.orders SET total = total + 1, note = 'w{c}' WHERE id = {id};
                             DELETE FROM shop.orders WHERE id = {del};
                             INSERT IGNORE INTO shop.orders VALUES ({new}, {c}, 1.00, 'new');
                             UPDATE shop.orders SET id = {moved} WHERE id = {from};
                             UPDATE shop.lines SET qty = qty + 1 WHERE order_id = {lo};
                             DELETE FROM shop.lines WHERE order_id = {lo2} AND line_no = 2;
                             UPDATE shop.tags SET hits = hits + 1 WHERE name = 'tag-{tag:05}';
                             COMMIT;",
                            del = 1 + (i * 53 + c * 7) % 5000,
                            new = 10_000 + c * 1000 + i,
                            moved = 20_000 + c * 1000 + i,
                            from = 1 + (i * 59 + c * 17) % 5000,
                            lo = 1 + (i * 7 + c) % 999,
                            lo2 = 1 + (i * 11 + c) % 999,
                            tag = 1 + (i * 29 + c) % 1500,
                        )
                    })
                    .collect();
                let ok = std::process::Command::new("mariadb")
                    .args(["-h127.0.0.1", "-uroot", &format!("-P{port}"), "-e", &sql])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    wait_backfilled(&env, &mut sluice, 3);
    assert!(sluice.stop().success());
    assert_equal(&env);
}

/// A table without a primary key is keyed by the unique key on NOT NULL columns that the
/// server itself promotes (not by a nullable unique key): copied in that key's order, and
/// changes to it, including to the key's values, applied by it.
#[test]
fn a_table_keyed_by_a_not_null_unique_key_is_copied_and_streamed() {
    let setup = "
CREATE DATABASE shop;
CREATE TABLE shop.members (email VARCHAR(40) NULL, region CHAR(2) NOT NULL, handle VARCHAR(20) NOT NULL,
  points INT, UNIQUE KEY by_email (email), UNIQUE KEY by_handle (region, handle));
INSERT INTO shop.members SELECT IF(seq % 5 = 0, NULL, CONCAT('m', seq, '@x')), ELT(1 + seq % 3, 'eu', 'us', 'ap'),
  CONCAT('h', seq), seq FROM shop.seq_1_to_2000;
";
    let env = Env::new(
        setup,
        "[[tables]]\nmatch = \"shop.members\"\n\n[backfill]\nchunk_rows = 150\n",
    );
    let mut sluice = env.start();
    env.db.exec(
        "UPDATE shop.members SET points = -1 WHERE handle = 'h7';
         UPDATE shop.members SET handle = 'renamed' WHERE handle = 'h8';
         UPDATE shop.members SET region = 'zz' WHERE handle = 'h1999';
         DELETE FROM shop.members WHERE handle IN ('h9', 'h10');
         INSERT INTO shop.members VALUES (NULL, 'eu', 'h9', 9), ('new@x', 'us', 'fresh', 1)",
    );
    wait_backfilled(&env, &mut sluice, 1);
    // Once copied, the stream alone carries the changes (its row events name the key too).
    env.db.exec(
        "UPDATE shop.members SET points = -2 WHERE handle = 'h11';
         UPDATE shop.members SET handle = 'renamed-again', points = 0 WHERE handle = 'renamed';
         DELETE FROM shop.members WHERE handle = 'h12';
         INSERT INTO shop.members VALUES ('later@x', 'ap', 'later', 3)",
    );
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    same_rows(
        "members",
        env.target_rows("SELECT coalesce(email, '-'), region, handle, points FROM members"),
        env.db
            .query_rows("SELECT coalesce(email, '-'), region, handle, points FROM shop.members"),
    );
    // The target's key is the promoted unique key, in its column order.
    assert_eq!(
        env.target_rows("SELECT name FROM pragma_table_info('members') WHERE pk > 0 ORDER BY pk"),
        vec![vec!["region"], vec!["handle"]]
    );
}

#[test]
fn kill_9_during_a_backfill_resumes_from_the_last_chunk() {
    let env = Env::new(SETUP, &tables(50));
    let mut sluice = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copied = env
            .target_rows("SELECT coalesce(sum(rows_copied), 0) FROM _sluice_backfill")
            .first()
            .map(|r| r[0].parse::<u64>().unwrap_or(0))
            .unwrap_or(0);
        if copied >= 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backfill made no progress; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sluice.kill9();
    assert!(!backfill_done(&env, 3), "killed before the end");
    env.db.exec("UPDATE shop.orders SET note = 'after crash' WHERE id IN (1, 2500, 5000); DELETE FROM shop.tags WHERE name = 'tag-01499';");
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 3);
    assert!(sluice.stop().success());
    assert!(env.log().contains("resume=true"), "{}", env.log());
    assert_equal(&env);
}

#[test]
fn a_table_added_to_the_config_is_backfilled() {
    let env = Env::new(SETUP, "[[tables]]\nmatch = \"shop.orders\"\n");
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 1);
    assert!(sluice.stop().success());
    env.write_config(&tables(300), "");
    env.db.exec("UPDATE shop.tags SET hits = 0 WHERE name = 'tag-00001'");
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 3);
    assert!(sluice.stop().success());
    assert_equal(&env);
}

/// SIGHUP reloads the config in the running process: a table added to it is created and
/// copied while the stream goes on (writes keep arriving throughout), and a reload of a
/// broken config is refused with the reason while replication goes on with the old one.
#[test]
fn a_table_added_by_a_config_reload_is_copied_while_the_others_stream() {
    let env = Env::new(SETUP, "[[tables]]\nmatch = \"shop.orders\"\n");
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 1);
    let port = env.db.port();
    let stop_writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop_writing = stop_writing.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop_writing.load(std::sync::atomic::Ordering::SeqCst) {
                let sql = format!(
                    "UPDATE shop.orders SET total = total + 1 WHERE id = {};
                     UPDATE shop.tags SET hits = hits + 1 WHERE name = 'tag-{:05}'",
                    1 + i % 5000,
                    1 + i % 1500
                );
                let out = std::process::Command::new("mariadb")
                    .args(["-h127.0.0.1", "-uroot", &format!("-P{port}"), "-e", &sql])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "write {i} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                i += 7;
            }
        })
    };
    // A broken config is not taken: the running one goes on, not even restarted (the new
    // file is read and checked before anything stops).
    let connections = |log: &str| log.matches("streaming binlog").count();
    let streams_before = connections(&env.log());
    env.write_config("[[tables]]\nmatch = \"shop.orders\"\nbogus_key = 1\n", "");
    sluice.reload();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.log().contains("config not reloaded") {
        assert!(sluice.try_exit().is_none(), "sluice exited; log:\n{}", env.log());
        assert!(Instant::now() < deadline, "no refusal logged; log:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(env.log().contains("bogus_key"), "{}", env.log());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        connections(&env.log()),
        streams_before,
        "a refused reload restarted the pipeline; log:\n{}",
        env.log()
    );
    // Every table: the two new ones are copied by the same process. (Catching up is checked
    // only once the writes stop: the source's position moves on meanwhile.)
    env.write_config(&tables(300), "");
    sluice.reload();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(env.target.exists() && backfill_done(&env, 3)) {
        assert!(sluice.try_exit().is_none(), "sluice exited; log:\n{}", env.log());
        assert!(Instant::now() < deadline, "copies did not finish; log:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(env.log().contains("config reloaded"), "{}", env.log());
    stop_writing.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    assert_equal(&env);
}

/// A column added to a table's replicated columns is added at the target and filled in the
/// existing rows by a column-only copy, while writes race it: the other columns of existing
/// rows are not rewritten (a target-side change to one survives), status reports the column
/// not ready until the copy is done, and then every row equals the source.
#[test]
fn a_column_added_to_the_replicated_columns_is_backfilled_alone() {
    let without_note =
        "[[tables]]\nmatch = \"shop.orders\"\nexclude_columns = [\"note\"]\n\n[backfill]\nchunk_rows = 200\n";
    let env = Env::new(SETUP, without_note);
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 1);
    assert!(sluice.stop().success());
    assert_eq!(
        env.target_rows("SELECT count(*) FROM pragma_table_info('orders') WHERE name = 'note'"),
        vec![vec!["0"]]
    );
    // A change made at the target to a column that is already replicated: a copy of whole
    // rows would overwrite it, a column-only copy must not.
    sqlite_exec(&env, "UPDATE orders SET customer = -1 WHERE id = 4321");
    env.db
        .exec("UPDATE shop.orders SET note = 'changed while stopped' WHERE id = 17");

    // No longer excluded, the column is held (new columns are, by default) until released.
    env.write_config(
        "[[tables]]\nmatch = \"shop.orders\"\nrelease_columns = [\"note\"]\n\n[backfill]\nchunk_rows = 200\n",
        "",
    );
    let mut sluice = env.start();
    // Writes race the column copy: updates of the new column and of others, deletes, inserts.
    env.db.exec(
        "UPDATE shop.orders SET note = CONCAT(note, '+'), total = total + 1 WHERE id % 97 = 5;
         DELETE FROM shop.orders WHERE id % 101 = 3;
         INSERT INTO shop.orders VALUES (9001, 1, 2.50, 'new row'), (9002, 2, 3.50, NULL);",
    );
    // The earlier run's record says done until this run has recorded the column copy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.log().contains("columns added to the replicated columns") {
        assert!(Instant::now() < deadline, "no column copy planned; log:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_backfilled(&env, &mut sluice, 1);
    assert!(sluice.stop().success());
    let log = env.log();
    assert!(log.contains("columns added to the replicated columns"), "{log}");
    assert!(log.contains("column_only=true"), "{log}");

    let status = env.run_cmd(&["status", "-c", env.config.to_str().unwrap(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let orders = &status["tables"][0];
    assert_eq!(orders["backfill"], "ready", "{status}");
    assert_eq!(orders["backfill_columns"], serde_json::json!([]), "{status}");

    // The target-side change survived: only `note` was written into existing rows.
    assert_eq!(
        env.target_rows("SELECT customer, note FROM orders WHERE id = 4321"),
        vec![vec!["-1".to_owned(), "n4321".to_owned()]]
    );
    sqlite_exec(&env, "UPDATE orders SET customer = 4321 % 97 WHERE id = 4321");
    same_rows(
        "orders",
        env.target_rows("SELECT id, customer, total, note FROM orders"),
        env.db.query_rows("SELECT id, customer, total, note FROM shop.orders"),
    );
}

/// A table whose rows stop being readable while it is copied (its SELECT grant revoked
/// mid-copy) is marked failed with the reason, in status and the log, while the other tables
/// are copied and the stream goes on; after the grant, a restart copies it. (A table that is
/// unreadable from the start is refused by the preflight: see tests/refusals.rs.)
#[test]
fn a_failed_copy_is_reported_and_the_stream_goes_on() {
    // Enough rows of `tags`, in small chunks, that its copy is still under way when the
    // grant goes.
    let env = Env::new(
        &format!("{SETUP}\nINSERT INTO shop.tags SELECT CONCAT('bulk-', seq), seq FROM shop.seq_1_to_200000;"),
        "[[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = 100\nparallel_tables = 1\n",
    );
    // Table-level grants: unlike a global or database grant, revoking one takes effect on
    // the connections already open (sluice's copy connection among them).
    env.db.exec(
        "SET SESSION sql_log_bin = 0;
         REVOKE SELECT ON *.* FROM 'sluice_repl'@'%';
         GRANT SELECT ON shop.orders TO 'sluice_repl'@'%';
         GRANT SELECT ON shop.lines TO 'sluice_repl'@'%';
         GRANT SELECT, INSERT ON shop.tags TO 'sluice_repl'@'%';",
    );
    let mut sluice = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copying = env.target.exists()
            && !env
                .target_rows("SELECT 1 FROM sqlite_master WHERE name = '_sluice_backfill'")
                .is_empty()
            && env
                .target_rows("SELECT rows_copied FROM _sluice_backfill WHERE name = 'tags' AND NOT done")
                .first()
                .is_some_and(|r| r[0] != "0");
        if copying {
            break;
        }
        if let Some(exit) = sluice.try_exit() {
            panic!("sluice exited ({exit}); log:\n{}", env.log());
        }
        assert!(
            Instant::now() < deadline,
            "tags was never being copied; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    env.db
        .exec("SET SESSION sql_log_bin = 0; REVOKE SELECT ON shop.tags FROM 'sluice_repl'@'%';");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap(), "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let tags_failed = status["tables"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["target"] == "tags" && t["backfill"] == "failed"));
        let others_ready = status["tables"].as_array().is_some_and(|t| {
            t.iter()
                .filter(|t| t["target"] != "tags")
                .all(|t| t["backfill"] == "ready")
        });
        if tags_failed && others_ready {
            break status;
        }
        if let Some(exit) = sluice.try_exit() {
            panic!("sluice exited ({exit}) instead of going on; log:\n{}", env.log());
        }
        assert!(
            Instant::now() < deadline,
            "no failure reported: {status}; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tags = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "tags")
        .unwrap();
    let reason = tags["backfill_error"].as_str().unwrap();
    assert!(reason.contains("shop.tags") && reason.contains("denied"), "{reason}");
    // The stream goes on, for the failed table too.
    env.db.exec("UPDATE shop.orders SET note = 'streamed' WHERE id = 1; UPDATE shop.tags SET hits = 7 WHERE name = 'tag-00002';");
    env.wait_caught_up(&mut sluice);
    assert_eq!(
        env.target_rows("SELECT note FROM orders WHERE id = 1"),
        vec![vec!["streamed"]]
    );
    assert_eq!(
        env.target_rows("SELECT hits FROM tags WHERE name = 'tag-00002'"),
        vec![vec!["7"]]
    );
    assert!(sluice.stop().success());
    let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backfill failed") && text.contains("restart sluice to retry"),
        "{text}"
    );

    env.db
        .exec("SET SESSION sql_log_bin = 0; GRANT SELECT ON shop.tags TO 'sluice_repl'@'%';");
    let mut sluice = env.start();
    wait_backfilled(&env, &mut sluice, 3);
    assert!(sluice.stop().success());
    assert_equal(&env);
}

fn sqlite_exec(env: &Env, sql: &str) {
    let conn = rusqlite::Connection::open(&env.target).unwrap();
    conn.execute_batch(sql).unwrap();
}
