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
