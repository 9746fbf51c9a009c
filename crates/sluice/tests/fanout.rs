//! Fan-out through NATS JetStream: `sluice publish` reads a real MariaDB source into a real
//! `nats-server` (started by the test kit), and edges (`[source] kind = "nats"`) apply the
//! log into SQLite and PostgreSQL. Every test compares whole tables with the source, and the
//! log's entries with the source's transactions (each once, none missing, none twice).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{postgres_positions, wait_for, Env, Sluice};
use sluice_engine::config::NatsLogConfig;
use sluice_engine::log::nats::NatsLog;
use sluice_engine::log::{Body, LogCursor, TransactionLog};
use sluice_testkit::{NatsServer, PostgresServer};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(100), qty INT, note TEXT);
CREATE TABLE shop.other (id INT PRIMARY KEY);
INSERT INTO shop.items SELECT seq, CONCAT('item-', seq), seq, NULL FROM shop.seq_1_to_50;
";

/// The publisher's rules and settings: the whole binlog from its start (the log carries no
/// copy of existing rows), no heartbeat rows (so every entry is a source transaction).
const PUBLISHER_TABLES: &str =
    "[backfill]\nenabled = false\n\n[lag]\nheartbeat = false\n\n[[tables]]\nmatch = \"shop.items\"\n";
const STREAM: &str = "shop";
const PUBLISH_LOG: &str = "publish.log";

fn publisher_env(nats: &NatsServer) -> Env {
    let env = Env::new(SETUP, PUBLISHER_TABLES);
    env.write_config_with_target(
        PUBLISHER_TABLES,
        "start = \"earliest\"",
        &format!(
            "[target]\nkind = \"nats\"\nurl = \"{}\"\nstream = \"{STREAM}\"\n",
            nats.url()
        ),
    );
    env
}

/// Writes an edge's config (`name`) reading the log into `target_toml`.
fn edge_config(env: &Env, nats: &NatsServer, name: &str, target_toml: &str) -> String {
    let path = env.dir.path().join(name);
    std::fs::write(
        &path,
        format!(
            "[source]\nkind = \"nats\"\nurl = \"{}\"\nstream = \"{STREAM}\"\n\n{target_toml}\n[apply]\nwriters = 1\n",
            nats.url()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn sqlite_edge(env: &Env, nats: &NatsServer) -> String {
    edge_config(
        env,
        nats,
        "edge.toml",
        "[target]\nkind = \"sqlite\"\npath = \"edge.sqlite\"\n",
    )
}

fn start_publisher(env: &Env) -> Sluice {
    let before = env.log_of(PUBLISH_LOG).matches("streaming binlog").count();
    let mut publisher = env.spawn(&["publish", "-c", env.config.to_str().unwrap()], PUBLISH_LOG);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.log_of(PUBLISH_LOG).matches("streaming binlog").count() == before {
        if let Some(status) = publisher.try_exit() {
            panic!("sluice publish exited ({status}); log:\n{}", env.log_of(PUBLISH_LOG));
        }
        assert!(
            Instant::now() < deadline,
            "publisher did not start; log:\n{}",
            env.log_of(PUBLISH_LOG)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    publisher
}

/// Starts `sluice run` of an edge; its log is the env's `sluice.log` (all edges share it).
fn start_edge(env: &Env, config: &str) -> Sluice {
    env.spawn(&["run", "-c", config], "sluice.log")
}

/// One batch of source transactions on `shop.items`, keys from `base` (batches run together
/// need bases 10 000 apart): small transactions
/// of inserts, updates and deletes, some writing only the unselected `shop.other`, one over
/// 512 rows (streamed in parts) and one over a megabyte in fewer rows (a log message holds
/// at most 1 MB).
fn workload_sql(base: u32, transactions: u32) -> String {
    let mut sql = String::new();
    for i in 0..transactions {
        let id = base + i;
        sql.push_str(&format!(
            "BEGIN; INSERT INTO shop.items VALUES ({id}, 'n{id}', {i}, NULL); UPDATE shop.items SET qty = qty + 1 WHERE id = {}; COMMIT;\n",
            i % 50 + 1
        ));
        if i % 10 == 9 {
            sql.push_str(&format!("DELETE FROM shop.items WHERE id = {};\n", id - 5));
        }
        if i % 7 == 0 {
            sql.push_str(&format!("INSERT INTO shop.other VALUES ({id});\n"));
        }
        if i == transactions / 2 {
            sql.push_str(&format!(
                "INSERT INTO shop.items SELECT {base} + 100000 + seq, 'bulk', seq, NULL FROM shop.seq_1_to_1500;\n\
                 INSERT INTO shop.items SELECT {base} + 200000 + seq, 'wide', seq, REPEAT('w', 3000) FROM shop.seq_1_to_400;\n"
            ));
        }
    }
    // The last source transaction is one the log carries, so an edge's checkpoint reaches
    // the source's position.
    sql.push_str(&format!("UPDATE shop.items SET name = 'last-{base}' WHERE id = 1;\n"));
    sql
}

const ITEMS: &str = "SELECT id, name, qty, note FROM shop.items ORDER BY id";
const EDGE_ITEMS: &str = "SELECT id, name, qty, note FROM items ORDER BY id";

fn source_items(env: &Env) -> Vec<Vec<String>> {
    env.db.query_rows(ITEMS)
}

fn wait_edge_caught_up(env: &Env, edge: &mut Sluice) {
    let want = env.source_position();
    wait_for(env, edge, &format!("the edge to reach {want}"), || {
        env.checkpoint().as_deref() == Some(want.as_str())
    });
}

/// The GTIDs of the source's transactions that wrote rows of `shop.items`, from the binlog.
fn source_transactions(env: &Env) -> BTreeSet<String> {
    let mut gtids = BTreeSet::new();
    for log in env.db.query_rows("SHOW BINARY LOGS") {
        let mut current = None;
        for event in env.db.query_rows(&format!("SHOW BINLOG EVENTS IN '{}'", log[0])) {
            let (kind, info) = (&event[2], &event[5]);
            if kind == "Gtid" {
                // "BEGIN GTID 0-1-5", with " cid=N" after it for a group commit.
                current = info
                    .split_whitespace()
                    .skip_while(|w| *w != "GTID")
                    .nth(1)
                    .map(str::to_owned);
            } else if kind == "Table_map" && info.replace('`', "").contains("(shop.items)") {
                gtids.extend(current.clone());
            }
        }
    }
    gtids
}

/// The ids of every entry the stream holds, in order, and the GTIDs of the transactions with
/// rows.
fn log_entries(nats: &NatsServer) -> (Vec<String>, BTreeSet<String>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = connect_log(nats).await.unwrap();
        let (count, _) = log.entries().await.unwrap();
        let mut cursor = log.read_from(1).await.unwrap();
        let mut ids = Vec::new();
        let mut transactions = BTreeSet::new();
        for _ in 0..count {
            let (_, entry) = cursor.next().await.unwrap();
            // A transaction's first part, or a whole one with rows (empty ones carry only the
            // source's position to the edges).
            let first_with_rows = match &entry.body {
                Body::Txn { ops, .. } => !ops.is_empty(),
                Body::Part { part, .. } => *part == 0,
                Body::Ddl { .. } => true,
            };
            if first_with_rows {
                transactions.insert(entry.gtid.to_string());
            }
            ids.push(entry.id());
        }
        (ids, transactions)
    })
}

/// Each source transaction on `shop.items` is in the log exactly once (its parts once each).
fn assert_log_exact(env: &Env, nats: &NatsServer) {
    let (ids, transactions) = log_entries(nats);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an entry is in the log twice");
    let source = source_transactions(env);
    let missing: Vec<_> = source.difference(&transactions).take(5).collect();
    let extra: Vec<_> = transactions.difference(&source).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "log vs source transactions: missing {missing:?}, extra {extra:?}"
    );
    let parts = ids.iter().filter(|id| id.contains('/')).count();
    assert!(parts > 0, "the large transactions went in parts");
}

#[test]
fn publish_and_consume_into_sqlite_under_concurrent_writes() {
    let nats = NatsServer::start();
    let env = publisher_env(&nats);
    let edge_toml = sqlite_edge(&env, &nats);
    let mut publisher = start_publisher(&env);
    let mut edge = start_edge(&env, &edge_toml);
    // Writes while both run; a second batch from two clients at once.
    env.db.exec(&workload_sql(1_000, 150));
    std::thread::scope(|s| {
        s.spawn(|| env.db.exec(&workload_sql(10_000, 100)));
        s.spawn(|| env.db.exec(&workload_sql(20_000, 100)));
    });
    env.db.exec("UPDATE shop.items SET qty = -1 WHERE id = 2");
    wait_edge_caught_up(&env, &mut edge);
    common::same_rows("items", env.target_rows(EDGE_ITEMS), source_items(&env));
    assert!(edge.stop().success(), "edge log:\n{}", env.log());
    assert!(
        publisher.stop().success(),
        "publisher log:\n{}",
        env.log_of(PUBLISH_LOG)
    );
    assert_log_exact(&env, &nats);
    // The edge's checkpoint is in the target with the rows: a restart applies nothing twice.
    let mut edge = start_edge(&env, &edge_toml);
    let mut publisher = start_publisher(&env);
    env.db.exec(&workload_sql(30_000, 20));
    wait_edge_caught_up(&env, &mut edge);
    common::same_rows("items after restarts", env.target_rows(EDGE_ITEMS), source_items(&env));
    assert!(edge.stop().success());
    assert!(publisher.stop().success());
    assert_log_exact(&env, &nats);

    // `sluice verify` of the edge: the publisher's source and rules, the edge as the target.
    let out = env.run_cmd(&["verify", "-c", &edge_toml]);
    assert_eq!(out.status.code(), Some(1), "verify refuses the log as its source");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Verifying an edge"));
    env.write_config_with_target(
        PUBLISHER_TABLES,
        "",
        "[target]\nkind = \"sqlite\"\npath = \"edge.sqlite\"\n",
    );
    let verify = || env.run_cmd(&["verify", "-c", env.config.to_str().unwrap()]);
    let out = verify();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let edge_db = rusqlite::Connection::open(&env.target).unwrap();
    edge_db
        .execute("UPDATE items SET qty = qty + 1000 WHERE id = 7", [])
        .unwrap();
    drop(edge_db);
    assert_eq!(verify().status.code(), Some(4), "the changed row is found");
}

#[test]
fn kill_9_of_publisher_and_edge_and_a_nats_restart_under_load_lose_and_repeat_nothing() {
    let mut nats = NatsServer::start();
    let env = publisher_env(&nats);
    let edge_toml = sqlite_edge(&env, &nats);
    let mut publisher = start_publisher(&env);
    let mut edge = start_edge(&env, &edge_toml);
    // The load runs until every fault has happened (and at least three rounds).
    let faults_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut round = 0;
            while round < 3 || !faults_done.load(Ordering::SeqCst) {
                round += 1;
                env.db.exec(&workload_sql(1_000_000 * round, 120));
            }
        });
        // Each fault once the log has grown by 150 entries since the last one.
        let grown = |nats: &NatsServer, entries: &mut u64| {
            let deadline = Instant::now() + Duration::from_secs(90);
            while log_count(nats) < *entries + 150 {
                assert!(
                    Instant::now() < deadline,
                    "the log does not grow; publisher log:\n{}",
                    env.log_of(PUBLISH_LOG)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            *entries = log_count(nats);
        };
        let mut entries = 0;
        grown(&nats, &mut entries);
        publisher.kill9();
        publisher = start_publisher(&env);
        grown(&nats, &mut entries);
        edge.kill9();
        edge = start_edge(&env, &edge_toml);
        grown(&nats, &mut entries);
        nats.kill();
        std::thread::sleep(Duration::from_millis(500));
        nats.start_again();
        grown(&nats, &mut entries);
        faults_done.store(true, Ordering::SeqCst);
        load.join().unwrap();
    });
    env.db.exec("UPDATE shop.items SET qty = -1 WHERE id = 3");
    wait_edge_caught_up(&env, &mut edge);
    common::same_rows("items", env.target_rows(EDGE_ITEMS), source_items(&env));
    assert!(edge.stop().success(), "edge log:\n{}", env.log());
    assert!(
        publisher.stop().success(),
        "publisher log:\n{}",
        env.log_of(PUBLISH_LOG)
    );
    assert_log_exact(&env, &nats);
}

/// The number of entries in the stream (0 while the server is away).
fn log_count(nats: &NatsServer) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(5), connect_log(nats)).await {
            Ok(Ok(log)) => log.entries().await.map(|(n, _)| n).unwrap_or(0),
            _ => 0,
        }
    })
}

/// The test's stream, opened as an edge opens it.
async fn connect_log(nats: &NatsServer) -> Result<NatsLog, sluice_engine::log::LogError> {
    let config = NatsLogConfig {
        url: nats.url(),
        stream: STREAM.into(),
        credentials_file: None,
    };
    NatsLog::connect(&config, false).await
}

#[test]
fn two_edges_sqlite_and_postgres_read_one_stream() {
    let nats = NatsServer::start();
    let env = publisher_env(&nats);
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    let sqlite_toml = sqlite_edge(&env, &nats);
    let pg_toml = edge_config(
        &env,
        &nats,
        "edge-pg.toml",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\nschema = \"shop_edge\"\n",
            pg.port()
        ),
    );
    let mut publisher = start_publisher(&env);
    let mut sqlite_edge = start_edge(&env, &sqlite_toml);
    env.db.exec(&workload_sql(10_000, 80));
    // The second edge joins while the first is streaming: it reads the log from its start.
    let mut pg_edge = start_edge(&env, &pg_toml);
    env.db.exec(&workload_sql(20_000, 80));
    wait_edge_caught_up(&env, &mut sqlite_edge);
    let want = env.source_position();
    wait_for(&env, &mut pg_edge, "the PostgreSQL edge to catch up", || {
        postgres_positions(&pg, "shop_edge").contains(&want)
    });
    let source = source_items(&env);
    common::same_rows("sqlite edge", env.target_rows(EDGE_ITEMS), source.clone());
    let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let pg_rows: Vec<Vec<String>> = client
        .query(
            "SELECT id::text, coalesce(name, 'NULL'), qty::text, coalesce(note, 'NULL') FROM shop_edge.items ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (0..4).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    common::same_rows("postgres edge", pg_rows, source);
    for edge in [&mut sqlite_edge, &mut pg_edge, &mut publisher] {
        assert!(edge.stop().success(), "log:\n{}", env.log());
    }
    assert_log_exact(&env, &nats);
}

#[test]
fn an_edge_refuses_a_stream_that_does_not_exist() {
    let nats = NatsServer::start();
    let env = publisher_env(&nats);
    let edge_toml = sqlite_edge(&env, &nats);
    let out = env.run_cmd(&["run", "-c", &edge_toml]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the log stream shop does not exist") && stderr.contains("sluice publish"),
        "{stderr}"
    );
}
