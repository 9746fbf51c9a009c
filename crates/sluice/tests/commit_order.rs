//! `[apply] commit_order`: with four writers into a MariaDB target, a reader querying the
//! target throughout the apply must only ever see states the source had. The source inserts
//! a parent in one transaction and its child in the next (and later deletes the child, then
//! the parent, again in two transactions), so in every source state each child has its
//! parent. Parent and child are different rows: only source commit order keeps them.
//!
//! In `"source"` order the reader must never see a child without its parent. In `"key"` order
//! it can (writers commit independent transactions in any order); that run is `#[ignore]`d
//! and only reports what it saw, since an assertion that a race happens would be flaky.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{mariadb_positions, mariadb_target, Env};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.parent (id INT PRIMARY KEY, note VARCHAR(200));
CREATE TABLE shop.child (id INT PRIMARY KEY, parent_id INT NOT NULL, note VARCHAR(200));
";

/// Concurrent source clients, each with its own key range.
const CLIENTS: usize = 3;
/// Parent/child pairs per client.
const PAIRS: usize = 600;
/// A pair is deleted (child, then parent) this many pairs after it was inserted.
const KEEP: usize = 50;

/// What one reader saw: how many snapshots it checked, how many had a child without its
/// parent, and how many were taken mid-apply (some but not all pairs present).
#[derive(Debug, Default)]
struct Seen {
    checks: u64,
    violations: u64,
    mid_apply: u64,
}

/// One client's statements: every statement is a source transaction of its own (autocommit).
fn client_sql(c: usize) -> String {
    let mut sql = String::new();
    let pad = "x".repeat(150);
    for i in 0..PAIRS {
        let id = c * 100_000 + i;
        sql.push_str(&format!(
            "INSERT INTO shop.parent VALUES ({id}, '{pad}');\nINSERT INTO shop.child VALUES ({id}, {id}, 'c');\n"
        ));
        if i >= KEEP {
            let old = id - KEEP;
            sql.push_str(&format!(
                "DELETE FROM shop.child WHERE id = {old};\nDELETE FROM shop.parent WHERE id = {old};\n"
            ));
        }
    }
    sql
}

/// Runs the workload with `commit_order` and a reader on the target throughout; with
/// `restart_source`, the source restarts right after the load, while sluice is catching up (the
/// applier rolls back what it had not committed, writers waiting for their turn included).
fn run(commit_order: &str, restart_source: bool) -> Seen {
    let tables = format!(
        "[[tables]]\nmatch = \"shop.*\"\n\n[apply]\nwriters = 4\nbatch_max_rows = 20\ncommit_order = \"{commit_order}\"\n"
    );
    let mut env = Env::new(SETUP, &tables);
    let (target, target_toml) = mariadb_target(&env);
    env.write_config_with_target(&tables, "", &target_toml);
    let port = target.port();
    let positions = || mariadb_positions(port);
    let mut sluice = env.start_server_target(positions);
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.query_value(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edge' AND TABLE_NAME IN ('parent', 'child')",
    ) != "2"
    {
        assert!(Instant::now() < deadline, "target tables not created; log:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The reader: one session, one statement per snapshot (InnoDB reads a statement from one
    // consistent snapshot), as fast as the server answers.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut client = Command::new("mariadb")
                .args([
                    "-h127.0.0.1",
                    "-uroot",
                    &format!("-P{port}"),
                    "-N",
                    "-B",
                    "--unbuffered",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("mariadb client");
            let mut stdin = client.stdin.take().unwrap();
            let mut stdout = BufReader::new(client.stdout.take().unwrap());
            let mut seen = Seen::default();
            let mut line = String::new();
            while !done.load(Ordering::SeqCst) {
                writeln!(
                    stdin,
                    "SELECT (SELECT COUNT(*) FROM edge.child c LEFT JOIN edge.parent p ON p.id = c.parent_id WHERE p.id IS NULL), (SELECT COUNT(*) FROM edge.parent);"
                )
                .unwrap();
                line.clear();
                stdout.read_line(&mut line).unwrap();
                let mut fields = line.trim_end().split('\t').map(|f| f.parse::<u64>().unwrap());
                let (orphans, parents) = (fields.next().unwrap(), fields.next().unwrap());
                seen.checks += 1;
                if orphans > 0 {
                    seen.violations += 1;
                }
                if parents > 0 {
                    seen.mid_apply += 1;
                }
            }
            drop(stdin);
            let _ = client.wait();
            seen
        })
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let sql = client_sql(c);
            let source = env.db.port();
            std::thread::spawn(move || {
                let mut client = Command::new("mariadb")
                    .args(["-h127.0.0.1", "-uroot", &format!("-P{source}")])
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("mariadb client");
                client.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
                let ok = client.wait().unwrap().success();
                assert!(ok, "source workload failed");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut at_restart = Vec::new();
    if restart_source {
        at_restart = positions();
        env.db.restart();
    }
    env.wait_caught_up_with(&mut sluice, positions);
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    if restart_source {
        assert!(env.log().contains("reconnecting"), "{}", env.log());
        eprintln!("target positions when the source restarted: {at_restart:?}");
    }
    assert!(sluice.stop().success());
    // The end state is the source's.
    assert_eq!(
        target.query_value("SELECT COUNT(*) FROM edge.parent"),
        env.db.query_value("SELECT COUNT(*) FROM shop.parent")
    );
    assert_eq!(
        target.query_rows("SELECT id, parent_id FROM edge.child ORDER BY id"),
        env.db.query_rows("SELECT id, parent_id FROM shop.child ORDER BY id")
    );
    eprintln!("commit_order = {commit_order:?}: {seen:?}");
    seen
}

#[test]
fn in_source_commit_order_a_reader_never_sees_a_child_without_its_parent() {
    let seen = run("source", false);
    assert!(seen.mid_apply > 0, "the reader never ran during the apply: {seen:?}");
    assert_eq!(
        seen.violations, 0,
        "a reader saw a child without its parent in source commit order: {seen:?}"
    );
}

/// Reports (never asserts) how often a reader sees a child without its parent in key order.
#[test]
#[ignore = "measures a race: run by hand, see bench/README.md"]
fn in_key_order_a_reader_may_see_a_child_without_its_parent() {
    let seen = run("key", false);
    assert!(seen.mid_apply > 0, "the reader never ran during the apply: {seen:?}");
}

#[test]
fn in_source_commit_order_a_source_restart_mid_apply_keeps_the_order_and_loses_nothing() {
    let seen = run("source", true);
    assert_eq!(
        seen.violations, 0,
        "a reader saw a child without its parent in source commit order: {seen:?}"
    );
}
