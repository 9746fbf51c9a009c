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
    assert!(rows.len() >= 2, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        rows[0]["after"],
        serde_json::json!({"id": 7, "name": "seven", "price": "7.25"})
    );
    assert_eq!(rows[1]["before"]["price"], "7.25");
    assert_eq!(rows[1]["after"]["price"], "8.50");
    assert!(events.iter().any(|e| e["type"] == "MARIADB_GTID"));
    // The stream's first event, an artificial ROTATE, names the file without checksum bytes.
    assert_eq!(events[0]["type"], "ROTATE");
    let first_file = events[0]["data"]["next_file"].as_str().unwrap();
    assert!(
        first_file.starts_with("mysql-bin.") && first_file.len() == "mysql-bin.000001".len(),
        "{first_file:?}"
    );

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

/// `binlog dump -c` shows rows as the config sends them (selected tables, their columns,
/// row filter and transforms), so it never prints a scrubbed value unless `--raw` asks; a
/// closed pipe ends it quietly.
#[test]
fn binlog_dump_from_a_server_applies_the_configs_rules_unless_raw() {
    let env = Env::new(
        "CREATE DATABASE shop;
         CREATE TABLE shop.people (id INT PRIMARY KEY, email VARCHAR(40), ssn VARCHAR(11), region CHAR(2));
         CREATE TABLE shop.other (id INT PRIMARY KEY, secret VARCHAR(20));",
        "[[tables]]\nmatch = \"shop.people\"\nexclude_columns = [\"ssn\"]\nwhere = \"region = 'eu'\"\n[tables.transforms]\nemail = \"mask:3\"\n",
    );
    let start = env.source_position();
    env.db.exec(
        "INSERT INTO shop.people VALUES (1, 'ann@example.com', '123-45-6789', 'eu'), (2, 'bob@example.com', '987-65-4321', 'us');
         INSERT INTO shop.other VALUES (1, 'hunter2');",
    );
    let config = env.config.to_str().unwrap();
    let dump = |extra: &[&str]| {
        let mut args = vec!["binlog", "dump", "-c", config, "--from", &start, "--limit", "14"];
        args.extend_from_slice(extra);
        env.run_cmd(&args)
    };
    let out = dump(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for secret in [
        "123-45-6789",
        "987-65-4321",
        "ann@example.com",
        "bob@example.com",
        "hunter2",
    ] {
        assert!(!text.contains(secret), "the dump printed {secret}: {text}");
    }
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["data"]["rows"].is_array() || e["data"]["rows_omitted"].is_string())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(
        rows[0]["data"]["rows"],
        serde_json::json!([{"after": {"id": 1, "email": "************com", "region": "eu"}}]),
        "{text}"
    );
    assert_eq!(rows[0]["data"]["rows_filtered"], 1);
    assert_eq!(rows[1]["data"]["rows_omitted"], "table not selected by the config");

    let out = dump(&["--raw"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("123-45-6789"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--raw shows every table's rows"));

    // `| head -1`: the reader goes away after one line; sluice ends quietly and successfully.
    let mut child = env
        .sluice()
        .args(["binlog", "dump", "-c", config, "--from", &start])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    assert!(first.contains("ROTATE"), "{first}");
    // More events (heartbeats at the latest) must be written after the pipe closed.
    env.db.exec("INSERT INTO shop.other VALUES (2, 'x')");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-c` falls back to `SLUICE_CONFIG`, and `SLUICE_LOG=trace` gives trace lines (each applied
/// source transaction); a source that is not there is named with its address and the
/// operating system's reason, once.
#[test]
fn sluice_config_env_trace_logs_and_plain_connection_errors() {
    let env = Env::new(SETUP, TABLES);
    let out = env
        .sluice()
        .env("SLUICE_CONFIG", &env.config)
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config: ok"));

    let mut sluice = env.start_with_log_level("trace");
    env.db.exec("INSERT INTO shop.items VALUES (9, 'nine', 9.00)");
    env.wait_caught_up(&mut sluice);
    assert!(sluice.stop().success());
    let log = env.log();
    assert!(
        log.lines()
            .any(|l| l.contains("TRACE") && l.contains("applying a source transaction")),
        "{log}"
    );

    // Nothing listens on the port any more.
    let port = env.db.port();
    let mut db = env.db;
    db.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env.dir.path())
        .args(["check", "-c", env.config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "cannot connect to the source 127.0.0.1:{port} as sluice_repl: Connection refused"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("Input/output error"), "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}
