//! `sluice check`'s MySQL source checks against sluice-testkit's MySQL protocol test server
//! (no MySQL server can be installed here): the server answers the `SELECT @@…`, `SHOW GRANTS`
//! and `CURRENT_USER()` queries as a MySQL 8 source would, and preflight fails closed on a
//! wrong setting, naming it and the fix.

use std::path::PathBuf;

use sluice_engine::config::Config;
use sluice_engine::ops::preflight::{MYSQL_COMPRESSION_QUERY, MYSQL_SETTINGS_QUERY};
use sluice_testkit::mysql_protocol::ResultSet;
use sluice_testkit::{MysqlProtocolServer, MysqlProtocolServerOptions};

const GOOD: [&str; 8] = [
    "1",
    "ON",
    "ON",
    "ROW",
    "FULL",
    "FULL",
    "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100",
    "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-20",
];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sluice-binlog/tests/fixtures/mysql-binlogs/mysql_type_bit.000001")
}

fn grants(lines: &[&str]) -> ResultSet {
    ResultSet {
        columns: vec!["Grants for repl@%".into()],
        rows: lines.iter().map(|l| vec![Some(l.to_string())]).collect(),
    }
}

/// What a MySQL 8.0.40 source whose settings are `settings` (in MYSQL_SETTINGS_QUERY's order)
/// answers, its user holding what sluice needs.
fn source_queries(settings: [&str; 8]) -> Vec<(String, ResultSet)> {
    let names = [
        "log_bin",
        "gtid_mode",
        "enforce_gtid_consistency",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "gtid_executed",
        "gtid_purged",
    ];
    let pairs: Vec<(&str, &str)> = names.into_iter().zip(settings).collect();
    vec![
        ("SELECT @@version".into(), ResultSet::row(&[("@@version", "8.0.40")])),
        (MYSQL_SETTINGS_QUERY.into(), ResultSet::row(&pairs)),
        (
            MYSQL_COMPRESSION_QUERY.into(),
            ResultSet::row(&[("Variable_name", "binlog_transaction_compression"), ("Value", "OFF")]),
        ),
        (
            "SHOW GRANTS".into(),
            grants(&[
                "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `repl`@`%`",
                "GRANT SELECT ON `shop`.* TO `repl`@`%`",
            ]),
        ),
        (
            "SELECT CURRENT_USER()".into(),
            ResultSet::row(&[("CURRENT_USER()", "repl@%")]),
        ),
    ]
}

fn serve(queries: Vec<(String, ResultSet)>) -> MysqlProtocolServer {
    let mut o = MysqlProtocolServerOptions::new(fixture());
    o.queries = queries;
    MysqlProtocolServer::start(o)
}

fn config(server: &MysqlProtocolServer, dir: &std::path::Path) -> Config {
    let password = dir.join("password");
    std::fs::write(&password, "repl-pw").unwrap();
    Config::parse(&format!(
        r#"
[source]
host = "127.0.0.1"
port = {port}
user = "repl"
password_file = "{password}"
server_id = 4242

[target]
kind = "sqlite"
path = "{target}"

[lag]
heartbeat = false

[[tables]]
match = "shop.orders"
"#,
        port = server.port,
        password = password.display(),
        target = dir.join("edge.sqlite").display(),
    ))
    .unwrap()
}

async fn check(settings: [&str; 8]) -> (String, Vec<String>) {
    let server = serve(source_queries(settings));
    let dir = tempfile::tempdir().unwrap();
    let err = sluice_engine::pipeline::check(&config(&server, dir.path()))
        .await
        .expect_err("a wrongly set MySQL source is refused");
    (err.to_string(), server.received().queries)
}

#[tokio::test]
async fn a_well_set_mysql_source_passes_the_mysql_checks() {
    let mut queries = source_queries(GOOD);
    // The catalog, asked next: no tables (the test server runs no SQL).
    queries.push((
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
         AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
         ORDER BY TABLE_SCHEMA, TABLE_NAME"
            .into(),
        ResultSet {
            columns: vec!["TABLE_SCHEMA".into(), "TABLE_NAME".into()],
            rows: Vec::new(),
        },
    ));
    let server = serve(queries);
    let dir = tempfile::tempdir().unwrap();
    let (info, plans) = sluice_engine::pipeline::check(&config(&server, dir.path()))
        .await
        .expect("a well-set MySQL source passes `check`");
    assert_eq!(info.flavor, sluice_binlog::SourceFlavor::Mysql);
    // Where a fresh target starts with `start = "current"`: the source's gtid_executed.
    assert_eq!(info.binlog_position.to_string(), GOOD[6]);
    assert!(plans.is_empty());
    let queries = server.received().queries;
    assert!(queries.iter().any(|q| q == MYSQL_SETTINGS_QUERY), "{queries:?}");
    assert!(queries.iter().any(|q| q == "SHOW GRANTS"), "{queries:?}");
}

#[tokio::test]
async fn gtid_mode_off_is_refused_naming_the_setting_and_the_fix() {
    let mut settings = GOOD;
    settings[1] = "OFF";
    let (err, _) = check(settings).await;
    assert!(err.contains("gtid_mode is OFF"), "{err}");
    assert!(err.contains("SET PERSIST gtid_mode = OFF_PERMISSIVE"), "{err}");
    assert!(!err.contains("pass sluice's checks"), "{err}");
}

#[tokio::test]
async fn minimal_row_metadata_is_refused_naming_the_setting_and_the_fix() {
    let mut settings = GOOD;
    settings[5] = "MINIMAL";
    settings[2] = "OFF";
    let (err, _) = check(settings).await;
    assert!(err.contains("binlog_row_metadata is MINIMAL"), "{err}");
    assert!(err.contains("SET PERSIST binlog_row_metadata = 'FULL'"), "{err}");
    // Every wrong setting at once.
    assert!(err.contains("enforce_gtid_consistency is OFF"), "{err}");
}

#[tokio::test]
async fn a_missing_replication_client_grant_is_named_in_mysqls_terms() {
    let mut queries = source_queries(GOOD);
    for (q, rs) in &mut queries {
        if q == "SHOW GRANTS" {
            *rs = grants(&[
                "GRANT REPLICATION SLAVE ON *.* TO `repl`@`%`",
                "GRANT SELECT ON `shop`.* TO `repl`@`%`",
            ]);
        }
    }
    let server = serve(queries);
    let dir = tempfile::tempdir().unwrap();
    let err = sluice_engine::pipeline::check(&config(&server, dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GRANT REPLICATION CLIENT ON *.* TO"), "{err}");
    assert!(!err.contains("BINLOG MONITOR"), "{err}");
}

/// The checkpoint checks with a checkpoint GTID set, against the GOOD source's
/// `gtid_executed` (…:1-100) and `gtid_purged` (…:1-20), read over the protocol.
#[tokio::test]
async fn a_checkpoint_set_is_checked_against_gtid_purged_and_gtid_executed() {
    use sluice_binlog::MysqlGtidSet;
    use sluice_engine::ops::preflight::check_mysql_source;
    let server = serve(source_queries(GOOD));
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, dir.path());
    let opts = sluice_engine::source_rows::source_opts(&config).unwrap();
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let set = |text: String| -> MysqlGtidSet { text.parse().unwrap() };

    let settings = check_mysql_source(&mut conn, &config, Some(&set(format!("{uuid}:1-60"))))
        .await
        .unwrap();
    assert_eq!(settings.gtid_executed.to_string(), format!("{uuid}:1-100"));

    let purged = check_mysql_source(&mut conn, &config, Some(&set(format!("{uuid}:1-10"))))
        .await
        .unwrap_err()
        .to_string();
    assert!(purged.contains(&format!("it purged {uuid}:11-20")), "{purged}");

    let diverged = check_mysql_source(&mut conn, &config, Some(&set(format!("{uuid}:1-120"))))
        .await
        .unwrap_err()
        .to_string();
    assert!(diverged.contains("diverged"), "{diverged}");
    assert!(
        diverged.contains(&format!("the checkpoint holds {uuid}:101-120")),
        "{diverged}"
    );
    conn.disconnect().await.unwrap();
}

/// Stores `position` as the checkpoint of the SQLite target `config` names.
fn store_checkpoint(dir: &std::path::Path, position: &str) {
    use sluice_engine::target::{Checkpoint, Target};
    let mut target = sluice_engine::target::sqlite::SqliteTarget::open(&dir.join("edge.sqlite")).unwrap();
    target.prepare(&[]).unwrap();
    target.begin().unwrap();
    target
        .commit(&Checkpoint {
            position: position.parse().unwrap(),
            ..Checkpoint::default()
        })
        .unwrap();
}

/// `check` hands the target's stored checkpoint to MySQL's checks: a set the source purged
/// part of is refused, and so is a MariaDB position (a target never moves between flavours).
#[tokio::test]
async fn the_stored_checkpoint_is_checked_in_the_sources_flavour() {
    let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    for (stored, expected) in [
        (format!("{uuid}:1-10"), format!("it purged {uuid}:11-20")),
        (
            "0-1-5".to_string(),
            "cannot move between MariaDB and MySQL sources".to_string(),
        ),
    ] {
        let server = serve(source_queries(GOOD));
        let dir = tempfile::tempdir().unwrap();
        store_checkpoint(dir.path(), &stored);
        let err = sluice_engine::pipeline::check(&config(&server, dir.path()))
            .await
            .expect_err("refused")
            .to_string();
        assert!(err.contains(&expected), "{stored}: {err}");
    }
}
