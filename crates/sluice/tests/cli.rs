//! The status and binlog dump commands against a real source.

mod common;

use common::Env;

const SETUP: &str =
    "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(6,2));";
const TABLES: &str = "[[tables]]\nmatch = \"shop.items\"\n";

#[test]
fn status_shows_checkpoint_lag_and_tables() {
    let env = Env::new(SETUP, TABLES);
    let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("never started"));

    let mut sluice = env.start();
    env.db
        .exec("INSERT INTO shop.items VALUES (1, 'a', 1.00), (2, 'b', 2.00)");
    env.wait_caught_up(&mut sluice);
    let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["checkpoint"], serde_json::json!(env.source_position()));
    assert_eq!(json["caught_up"], serde_json::json!(true));
    assert_eq!(json["lag_seconds"], serde_json::json!(0));
    assert_eq!(json["tables"][0]["target"], "items");
    assert_eq!(json["tables"][0]["rows"], 2);

    // Stopped with work pending: behind.
    assert!(sluice.stop().success());
    env.db.exec("INSERT INTO shop.items VALUES (3, 'c', 3.00)");
    let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["caught_up"], serde_json::json!(false));
}

#[test]
fn binlog_dump_reads_the_server_and_its_files() {
    let env = Env::new(SETUP, TABLES);
    let start = env.source_position();
    env.db
        .exec("INSERT INTO shop.items VALUES (7, 'seven', 7.25); UPDATE shop.items SET price = 8.50 WHERE id = 7;");
    let out = env.run_cmd(&[
        "binlog",
        "dump",
        "-c",
        env.config.to_str().unwrap(),
        "--from",
        &start,
        "--limit",
        "16",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["data"]["rows"].is_array())
        .flat_map(|e| e["data"]["rows"].as_array().unwrap())
        .collect();
    assert_eq!(
        rows[0]["after"],
        serde_json::json!({"id": 7, "name": "seven", "price": "7.25"})
    );
    assert_eq!(rows[1]["before"]["price"], "7.25");
    assert_eq!(rows[1]["after"]["price"], "8.50");
    assert!(events.iter().any(|e| e["type"] == "MARIADB_GTID"));

    // The same events from the binlog file on disk.
    let file = env.db.data_dir().join("mysql-bin.000001");
    let out = env.run_cmd(&["binlog", "dump", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""price":"8.50""#), "{text}");
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}
