//! `sluice run` from a MySQL source into SQLite.
//!
//! No MySQL server can be installed here, so the source is sluice-testkit's MySQL protocol
//! test server: it streams the real MySQL 8.0.26 binlog `mysql_type_bit.000001` over
//! `COM_BINLOG_DUMP_GTID` (leaving out the transactions in the replica's GTID set), answers
//! the GTID variables and MySQL's settings and grants with canned rows, and relays every other
//! query (catalog, table probes, backfill chunk reads as prepared statements) to a throwaway
//! MariaDB that holds tables shaped like the binlog's. What is MySQL's here: the handshake,
//! the binlog bytes (GTID, TABLE_MAP with full metadata, WRITE_ROWS v2, XID, CRC32), the GTID
//! set the replica sends, and `gtid_executed` as the backfill's high marks and the stop's
//! drain target. What is not: the SQL server answering the catalog and chunk reads (MariaDB).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, Env};
use sluice_binlog::gtid::Uuid;
use sluice_binlog::mysql_gtid::decode_gtid_set;
use sluice_binlog::MysqlGtidSet;
use sluice_engine::ops::preflight::{MYSQL_COMPRESSION_QUERY, MYSQL_SETTINGS_QUERY};
use sluice_testkit::mysql_protocol::ResultSet;
use sluice_testkit::{MariaDb, MysqlProtocolServer, MysqlProtocolServerOptions};

/// The fixture's server: its three transactions are `ALTER USER`, `CREATE TABLE mysql.foo`
/// and an `INSERT INTO mysql.foo` of `(b'100', 'foo', b'00100000')`.
const UUID: &str = "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sluice-binlog/tests/fixtures/mysql-binlogs/mysql_type_bit.000001")
}

/// The fixture with one change: the fixture's table has no primary key, and sluice (rightly)
/// refuses to apply a table it cannot apply by key, so its TABLE_MAP gets MySQL's
/// `SIMPLE_PRIMARY_KEY` metadata field naming column 0 (`a`), as MySQL writes it for a table
/// with `PRIMARY KEY (a)` under `binlog_row_metadata = FULL`: field type 8, length 1, index
/// 0. Event lengths, the `log_pos` of every later event and the changed event's CRC32 follow;
/// every other byte is MySQL's. (The GTID event's `transaction_length` is left as it was:
/// nothing sluice reads uses it.)
fn fixture_with_a_primary_key(dir: &std::path::Path) -> PathBuf {
    const TABLE_MAP: u8 = 19;
    const SIMPLE_PRIMARY_KEY: [u8; 3] = [8, 1, 0];
    let bytes = std::fs::read(fixture()).unwrap();
    let mut out = bytes[..4].to_vec();
    let mut at = 4;
    let mut shift = 0u32;
    while at < bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        let mut event = bytes[at..at + size].to_vec();
        if event[4] == TABLE_MAP {
            let crc_at = event.len() - 4;
            event.splice(crc_at..crc_at, SIMPLE_PRIMARY_KEY);
            shift += SIMPLE_PRIMARY_KEY.len() as u32;
            let size = event.len() as u32;
            event[9..13].copy_from_slice(&size.to_le_bytes());
        }
        if shift > 0 {
            let log_pos = u32::from_le_bytes(event[13..17].try_into().unwrap()) + shift;
            event[13..17].copy_from_slice(&log_pos.to_le_bytes());
            let crc_at = event.len() - 4;
            let crc = crc32fast::hash(&event[..crc_at]);
            event[crc_at..].copy_from_slice(&crc.to_le_bytes());
        }
        out.extend_from_slice(&event);
        at += size;
    }
    assert_eq!(shift, 3, "one TABLE_MAP in the fixture");
    let path = dir.join("mysql_type_bit_with_key.000001");
    std::fs::write(&path, out).unwrap();
    path
}

/// A MySQL 8.0.26 source with every transaction of the fixture executed and nothing purged,
/// its user holding what sluice needs; everything else is relayed to `db`.
fn source(db: &MariaDb, binlog: PathBuf) -> MysqlProtocolServer {
    let executed = format!("{UUID}:1-3");
    let settings = [
        ("log_bin", "1"),
        ("gtid_mode", "ON"),
        ("enforce_gtid_consistency", "ON"),
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
        ("gtid_executed", executed.as_str()),
        ("gtid_purged", ""),
    ];
    let mut o = MysqlProtocolServerOptions::new(binlog);
    o.server_version = "8.0.26".into();
    o.queries = vec![
        ("SELECT @@version".into(), ResultSet::row(&[("@@version", "8.0.26")])),
        (MYSQL_SETTINGS_QUERY.into(), ResultSet::row(&settings)),
        (
            MYSQL_COMPRESSION_QUERY.into(),
            ResultSet::row(&[("Variable_name", "binlog_transaction_compression"), ("Value", "OFF")]),
        ),
        (
            "SELECT @@global.gtid_executed".into(),
            ResultSet::row(&[("@@global.gtid_executed", executed.as_str())]),
        ),
        (
            "SHOW GRANTS".into(),
            ResultSet {
                columns: vec!["Grants for repl@%".into()],
                rows: vec![
                    vec![Some(
                        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `repl`@`%`".into(),
                    )],
                    vec![Some("GRANT SELECT ON *.* TO `repl`@`%`".into())],
                ],
            },
        ),
        (
            "SELECT CURRENT_USER()".into(),
            ResultSet::row(&[("CURRENT_USER()", "repl@%")]),
        ),
    ];
    // As a MySQL source decides: the transaction's GTID (raw GTID event: header 19, flags 1,
    // UUID 16, number 8) is in the dump's set.
    o.has_transaction = Some(Arc::new(|set: &[u8], event: &[u8]| {
        let set = decode_gtid_set(set).expect("the replica's GTID set decodes");
        let uuid = Uuid::from_bytes(event[20..36].try_into().unwrap());
        let gno = u64::from_le_bytes(event[36..44].try_into().unwrap());
        set.contains_gtid(&uuid, None, gno)
    }));
    o.forward_to = Some(db.port());
    MysqlProtocolServer::start(o)
}

fn env(db: MariaDb, dir: tempfile::TempDir, source: &MysqlProtocolServer, start: &str) -> Env {
    std::fs::write(dir.path().join("password"), "repl-pw\n").unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            r#"[source]
host = "127.0.0.1"
port = {port}
user = "repl"
password_file = "password"
heartbeat_ms = 500
start = "{start}"

[target]
kind = "sqlite"
path = "edge.sqlite"

[lag]
heartbeat = false

[[tables]]
match = "shop.items"

[[tables]]
match = "mysql.foo"
"#,
            port = source.port
        ),
    )
    .unwrap();
    let target = dir.path().join("edge.sqlite");
    Env {
        db,
        dir,
        config,
        target,
    }
}

/// The GTID set of each `COM_BINLOG_DUMP_GTID` the source received, as text.
fn dump_sets(source: &MysqlProtocolServer) -> Vec<String> {
    source
        .received()
        .dumps
        .iter()
        .map(|(_, set)| decode_gtid_set(set).unwrap().to_string())
        .collect()
}

/// The source and a config starting at `start`, with the MariaDB the source relays to
/// holding tables shaped like the fixture's (with the key its TABLE_MAP is given) and a
/// table with existing rows to copy.
fn setup(start: &str) -> (Env, MysqlProtocolServer) {
    setup_streaming(start, fixture_with_a_primary_key)
}

/// [`setup`] streaming the binlog `binlog` writes into the test directory.
fn setup_streaming(start: &str, binlog: fn(&std::path::Path) -> PathBuf) -> (Env, MysqlProtocolServer) {
    let db = MariaDb::start();
    db.exec(
        "CREATE TABLE mysql.foo (a BIT(3) NOT NULL PRIMARY KEY, b TEXT, c BIT(8)); \
         CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20)); \
         INSERT INTO shop.items VALUES (1, 'apple'), (2, 'pear'), (3, NULL)",
    );
    let dir = tempfile::tempdir().unwrap();
    let server = source(&db, binlog(dir.path()));
    (env(db, dir, &server, start), server)
}

/// Waits until the target holds every transaction of the fixture, its row and the copy.
fn wait_applied(env: &Env, sluice: &mut common::Sluice) {
    let want = format!("{UUID}:1-3");
    wait_for(env, sluice, "the MySQL transactions and the copy", || {
        env.checkpoint().as_deref() == Some(want.as_str())
            && env.target.exists()
            && env
                .target_rows("SELECT count(*) FROM sqlite_master WHERE name IN ('foo', 'items')")
                .first()
                .is_some_and(|r| r[0] == "2")
            && env.target_rows("SELECT count(*) FROM items") == vec![vec!["3".to_string()]]
            && env.target_rows("SELECT count(*) FROM foo") == vec![vec!["1".to_string()]]
    });
}

#[test]
fn run_from_a_mysql_source_applies_its_rows_and_resumes_from_the_stored_set() {
    // Past the fixture's ALTER USER and CREATE TABLE: from a configured MySQL set.
    let (env, server) = setup(&format!("{UUID}:1-2"));
    let config = env.config.to_str().unwrap().to_owned();

    let mut sluice = env.spawn(&["run", "-c", &config], "sluice.log");
    let want = format!("{UUID}:1-3");
    wait_applied(&env, &mut sluice);
    // The row of the MySQL WRITE_ROWS event, decoded and applied by key.
    assert_eq!(
        env.target_rows("SELECT a, b, c FROM foo"),
        vec![vec!["4".to_string(), "foo".into(), "32".into()]]
    );
    // The copy of the existing rows, read through the prepared-statement chunk reads and
    // handed over once the stream passed its `gtid_executed` high mark.
    common::same_rows(
        "items",
        env.target_rows("SELECT id, name FROM items"),
        vec![
            vec!["1".into(), "apple".into()],
            vec!["2".into(), "pear".into()],
            vec!["3".into(), "NULL".into()],
        ],
    );
    // The first dump asked for everything after the configured start set.
    assert_eq!(dump_sets(&server), vec![format!("{UUID}:1-2")]);
    let status = sluice.stop();
    assert!(status.success(), "clean stop; log:\n{}", env.log());
    // `sluice status` reads gtid_executed and compares it with everything applied.
    let report = common::status_json(&env);
    assert_eq!(report["source_position"], want.as_str(), "{report}");
    assert_eq!(report["at_source_position"], true, "{report}");
    // `sluice verify` compares the copied table (the source read through the relay, its
    // position as gtid_executed): equal, then one row changed on the target is found.
    let verify = || {
        let out = env.run_cmd(&["verify", "-c", &config, "--json", "--catch-up-timeout", "30"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("verify: {}", String::from_utf8_lossy(&out.stderr)));
        let items = report
            .as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == "items").cloned())
            .unwrap_or_else(|| panic!("no report for items: {report:#}"));
        (
            out.status.success(),
            items["different"].as_u64(),
            items["missing"].as_u64(),
        )
    };
    assert_eq!(verify(), (true, Some(0), Some(0)));
    rusqlite::Connection::open(&env.target)
        .unwrap()
        .execute("UPDATE items SET name = 'tampered' WHERE id = 2", [])
        .unwrap();
    assert_eq!(verify(), (false, Some(1), Some(0)));
    assert!(
        env.log().contains(&format!("position={UUID}:1-2")),
        "the start is logged as a MySQL set; log:\n{}",
        env.log()
    );

    // A restart resumes from the set the target stored: the source is asked for what comes
    // after every transaction applied, sends none of them again, and nothing changes.
    let mut sluice = env.spawn(&["run", "-c", &config], "sluice.log");
    wait_for(&env, &mut sluice, "the second dump", || dump_sets(&server).len() == 2);
    assert_eq!(dump_sets(&server)[1], want);
    // Heartbeats only from here on; the checkpoint stays where it was.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(sluice.try_exit().is_none(), "sluice exited; log:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.checkpoint().as_deref(), Some(want.as_str()));
    assert_eq!(
        env.target_rows("SELECT a, b, c FROM foo"),
        vec![vec!["4".to_string(), "foo".into(), "32".into()]]
    );
    assert_eq!(
        env.target_rows("SELECT count(*) FROM items"),
        vec![vec!["3".to_string()]]
    );
    let status = sluice.stop();
    assert!(status.success(), "clean stop; log:\n{}", env.log());
    let stored: MysqlGtidSet = env.checkpoint().unwrap().parse().unwrap();
    assert_eq!(stored.to_string(), want);
}

/// From the empty set: the source sends all three transactions. The first two are DDL, which
/// MySQL writes without BEGIN (and without a standalone flag, unlike MariaDB), so each ends
/// with its statement: were they left open, the checkpoint would lack them (`…:3` only).
#[test]
fn ddl_transactions_without_begin_are_committed_in_the_set() {
    let (env, server) = setup("earliest");
    let config = env.config.to_str().unwrap().to_owned();
    let mut sluice = env.spawn(&["run", "-c", &config], "sluice.log");
    wait_applied(&env, &mut sluice);
    assert_eq!(dump_sets(&server), vec![String::new()]);
    assert_eq!(
        env.target_rows("SELECT a, b, c FROM foo"),
        vec![vec!["4".to_string(), "foo".into(), "32".into()]]
    );
    let status = sluice.stop();
    assert!(status.success(), "clean stop; log:\n{}", env.log());
}

/// A transaction without a GTID (MySQL 8.0.22's `json.binlog.000001`, written with
/// `gtid_mode = OFF`: ANONYMOUS_GTID events) cannot be recorded in a GTID set, so the reader
/// stops before applying it, naming why, and the checkpoint stays where it was.
#[test]
fn an_anonymous_transaction_stops_the_run() {
    fn anonymous(_: &std::path::Path) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../sluice-binlog/tests/fixtures/mysql-binlogs/json.binlog.000001")
    }
    let (env, _server) = setup_streaming("earliest", anonymous);
    let config = env.config.to_str().unwrap().to_owned();
    let mut sluice = env.spawn(&["run", "-c", &config], "sluice.log");
    let status = sluice.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "log:\n{}", env.log());
    assert!(
        env.log()
            .contains("without a GTID (ANONYMOUS_GTID): the source's gtid_mode must be ON"),
        "log:\n{}",
        env.log()
    );
    assert_eq!(env.checkpoint().as_deref(), Some(""));
    assert_eq!(
        env.target_rows("SELECT count(*) FROM sqlite_master WHERE name = 'foo'"),
        vec![vec!["0".to_string()]]
    );
}
