//! `sluice binlog dump FILE` on binlog files written by a real server in settings that change
//! the file format.

use std::process::Command;

use sluice_testkit::MariaDbOptions;

/// An encrypted binlog (`encrypt_binlog=ON`) cannot be read from the file: the dump stops at
/// the START_ENCRYPTION event with an error that names the file, the offset and what to do,
/// and exits non-zero.
#[test]
fn an_encrypted_binlog_file_is_refused_at_its_start_encryption_event() {
    let keys = tempfile::NamedTempFile::new().unwrap();
    // file_key_management's format: key id; 256-bit key in hex.
    std::fs::write(
        keys.path(),
        "1;a7addd9adea9978fda19f21e6be987880e68ac92632ca052e5bb42b1a506939a\n",
    )
    .unwrap();
    let db = MariaDbOptions::new()
        .server_args([
            "--plugin-load-add=file_key_management".to_string(),
            format!("--file-key-management-filename={}", keys.path().display()),
            "--encrypt-binlog=ON".to_string(),
        ])
        .start();
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1);");
    let file = db.query_rows("SHOW MASTER STATUS")[0][0].clone();
    db.exec("FLUSH BINARY LOGS");
    let path = db.data_dir().join(&file);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["binlog", "dump", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an encrypted binlog must not dump successfully");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The file starts with the magic (4 bytes) and the FORMAT_DESCRIPTION event; the
    // START_ENCRYPTION event comes right after it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fde: serde_json::Value = serde_json::from_str(stdout.lines().next().expect("the FDE is dumped")).unwrap();
    assert_eq!(fde["type"], "FORMAT_DESCRIPTION");
    let offset = fde["log_pos"].as_u64().unwrap();
    assert!(
        stderr.contains(&format!("at offset {offset}")) && stderr.contains("START_ENCRYPTION"),
        "{stderr}"
    );
    assert!(stderr.contains("replication protocol"), "{stderr}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sluice-binlog/tests/fixtures/mysql-binlogs")
        .join(name)
}

fn dump(path: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["binlog", "dump", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// MySQL 8.0's GTID and PREVIOUS_GTIDS events are shown decoded.
#[test]
fn binlog_dump_shows_mysql_gtids() {
    let events = dump(&fixture("mysql_type_bit.000001"));
    let gtids: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "GTID")
        .map(|e| e["data"]["gtid"].as_str().unwrap())
        .collect();
    assert_eq!(
        gtids,
        [1, 2, 3].map(|n| format!("fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:{n}"))
    );
    let first = events.iter().find(|e| e["type"] == "GTID").unwrap();
    assert_eq!(first["data"]["immediate_server_version"], 80026);
    assert_eq!(first["data"]["transaction_length"], 335);

    let events = dump(&fixture("binlog_transaction_previous_GTID_no_tag.000001"));
    let previous = events.iter().find(|e| e["type"] == "PREVIOUS_GTIDS").unwrap();
    assert_eq!(previous["data"]["gtids"], "b9b88c66-0755-11f1-9899-4a9da94c4d71:1-2");
}

/// MySQL 8.0.26 with `binlog_row_metadata=FULL` writes COLUMN_VISIBILITY; the table has no
/// INVISIBLE column, so every column must read as visible (which also pins the bit's meaning:
/// set = visible).
#[test]
fn binlog_dump_shows_column_visibility() {
    let events = dump(&fixture("mysql_type_bit.000001"));
    let map = events.iter().find(|e| e["type"] == "TABLE_MAP").unwrap();
    let columns = map["data"]["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 3);
    assert!(columns.iter().all(|c| c["visible"] == true), "{columns:?}");
}
