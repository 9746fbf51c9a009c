//! Lag measured with a heartbeat row (and the fallback to event timestamps), end to end
//! against throwaway MariaDB sources and real targets.

mod common;

use std::time::{Duration, Instant};

use common::{grant_heartbeat, status_json, Env, Sluice};
use sluice_binlog::GtidPosition;
use sluice_testkit::{MariaDb, PostgresServer};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40));
";
/// The second rule matches the heartbeat table: sluice must still never replicate it.
const TABLES: &str = "[[tables]]\nmatch = \"shop.*\"\n\n[[tables]]\nmatch = \"sluice.*\"\n";

/// sluice's default replica server id (the heartbeat row's id).
const SERVER_ID: &str = "4207001";

/// Writes a few source transactions while sluice runs, until status reports at least
/// `samples` lag samples from `source`; returns that status.
fn wait_for_lag(env: &Env, sluice: &mut Sluice, source: &str, samples: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut id = 0;
    loop {
        id += 1;
        env.db
            .exec(&format!("REPLACE INTO shop.items VALUES ({id}, 'item {id}')"));
        let status = status_json(env);
        if status["lag"]["source"] == source && status["lag"]["samples"].as_u64().unwrap_or(0) >= samples {
            return status;
        }
        if let Some(code) = sluice.try_exit() {
            panic!("sluice exited ({code}); log:\n{}", env.log());
        }
        assert!(
            Instant::now() < deadline,
            "no lag from {source} in status: {status:#}; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn assert_plausible(lag: &serde_json::Value, max_p50_us: u64) {
    let get = |k: &str| lag[k].as_u64().unwrap_or_else(|| panic!("{k} in {lag}"));
    let (p50, p99, p999, max) = (get("p50_us"), get("p99_us"), get("p999_us"), get("max_us"));
    assert!(p50 > 0 && p50 <= max_p50_us, "p50 {p50} µs out of range: {lag}");
    assert!(
        p50 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {lag}"
    );
    assert!(get("window_ms") > 0, "{lag}");
}

/// Waits until the target's merged checkpoint covers `want` (heartbeats keep moving the
/// source's position, so "equal" would race).
fn wait_checkpoint_covers(env: &Env, want: &str) {
    let want: GtidPosition = want.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(cp) = env.checkpoint() {
            if cp.parse::<GtidPosition>().unwrap().covers(&want) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint never covered {want}; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn heartbeat_lag_in_status_and_heartbeat_table_never_replicated() {
    let env = Env::new(SETUP, TABLES);
    grant_heartbeat(&env);
    let mut sluice = env.start();
    let status = wait_for_lag(&env, &mut sluice, "heartbeat", 4);
    // sluice, source and target share this machine: a heartbeat is applied within seconds.
    assert_plausible(&status["lag"], 5_000_000);
    assert!(env.log().contains("lag measured from heartbeats"), "{}", env.log());

    // The heartbeat row is on the source, keyed by sluice's server id, with a microsecond
    // timestamp from sluice's clock (close to now).
    let row = env.db.query_rows("SELECT id, ts_us FROM sluice.sluice_heartbeat");
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(row[0][0], SERVER_ID);
    let ts_us: u64 = row[0][1].parse().unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(now_us.abs_diff(ts_us) < 30_000_000, "ts_us {ts_us} vs now {now_us}");

    // Heartbeat transactions advance the checkpoint like any unselected transaction.
    let source = env.source_position();
    wait_checkpoint_covers(&env, &source);

    // The human-readable status shows the percentiles too.
    let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lag p50/p99/p99.9:") && text.contains("from heartbeat"),
        "{text}"
    );
    assert!(sluice.stop().success());

    // Although a rule matches `sluice.*`, the heartbeat table never reached the target.
    let tables = env.target_rows("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
    assert!(
        !tables.iter().any(|t| t[0].contains("heartbeat")),
        "heartbeat table in the target: {tables:?}"
    );
    assert!(tables.iter().any(|t| t[0] == "items"), "{tables:?}");
    assert!(tables.iter().any(|t| t[0] == "_sluice_lag"), "{tables:?}");
    let recorded = env.target_rows("SELECT source_name FROM _sluice_tables");
    assert_eq!(recorded, vec![vec!["shop.items".to_string()]]);
    assert_eq!(
        env.target_rows("SELECT source, samples > 0 FROM _sluice_lag"),
        vec![vec!["heartbeat".to_string(), "1".to_string()]]
    );
}

#[test]
fn falls_back_to_event_timestamps_without_the_grant() {
    // The replication user has no CREATE/INSERT anywhere (REPL_GRANTS).
    let env = Env::new(SETUP, TABLES);
    let mut sluice = env.start();
    let status = wait_for_lag(&env, &mut sluice, "event-timestamps", 3);
    // 1-second resolution: a transaction applied at once shows as up to ~1 s.
    assert_plausible(&status["lag"], 5_000_000);
    let log = env.log();
    assert!(
        log.contains("lag falls back to event timestamps")
            && log.contains("GRANT CREATE, INSERT, UPDATE ON `sluice`.*"),
        "{log}"
    );
    // Nothing was created on the source.
    assert_eq!(
        env.db
            .query_value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'sluice'"),
        "0"
    );
    let out = env.run_cmd(&["status", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from event-timestamps"), "{text}");
    assert!(sluice.stop().success());
}

#[test]
fn check_and_status_never_write_heartbeats() {
    let env = Env::new(SETUP, TABLES);
    grant_heartbeat(&env);
    let before = env.source_position();
    let out = env.run_cmd(&["check", "-c", env.config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = status_json(&env);
    assert!(status["lag"].is_null(), "{status:#}");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(env.source_position(), before);
    assert_eq!(
        env.db
            .query_value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'sluice'"),
        "0"
    );
}

#[test]
fn heartbeat_lag_with_server_targets() {
    // MariaDB target.
    let env = Env::new(SETUP, TABLES);
    grant_heartbeat(&env);
    let target = MariaDb::start();
    target.create_user("edge", "edge-pw", &["ALL PRIVILEGES"]);
    std::fs::write(env.dir.path().join("target-password"), "edge-pw\n").unwrap();
    env.write_config_with_target(
        TABLES,
        "",
        &format!(
            "[target]\nkind = \"mariadb\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"edge\"\npassword_file = \"target-password\"\ndatabase = \"edge\"\n",
            target.port()
        ),
    );
    let positions = || -> Vec<String> {
        let exists = target.query_value(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edge' AND TABLE_NAME = '_sluice_checkpoint'",
        );
        if exists == "0" {
            return Vec::new();
        }
        target
            .query_rows("SELECT position FROM edge._sluice_checkpoint")
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let mut sluice = env.start_server_target(positions);
    let status = wait_for_lag(&env, &mut sluice, "heartbeat", 4);
    assert_plausible(&status["lag"], 5_000_000);
    // Running or stopped, told by the server target's writer lock.
    assert_eq!(status["liveness"], "running", "{status:#}");
    assert!(status["writer"].as_str().is_some_and(|w| !w.is_empty()), "{status:#}");
    assert!(sluice.stop().success());
    assert_eq!(status_json(&env)["liveness"], "stopped");
    assert_eq!(
        target.query_rows(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edge' AND TABLE_NAME LIKE '%heartbeat%'"
        ),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        target.query_rows("SELECT source FROM edge._sluice_lag"),
        vec![vec!["heartbeat".to_string()]]
    );
    drop(sluice);

    // PostgreSQL target, same source (its heartbeat table already exists).
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    std::fs::remove_file(env.dir.path().join("sluice.log")).ok();
    env.write_config_with_target(
        TABLES,
        "",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\nschema = \"edge\"\n",
            pg.port()
        ),
    );
    let pg_positions = || -> Vec<String> {
        let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
        client
            .query("SELECT position FROM edge._sluice_checkpoint", &[])
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
            .unwrap_or_default()
    };
    let mut sluice = env.start_server_target(pg_positions);
    let status = wait_for_lag(&env, &mut sluice, "heartbeat", 4);
    assert_plausible(&status["lag"], 5_000_000);
    // Running or stopped, told by the server target's writer lock.
    assert_eq!(status["liveness"], "running", "{status:#}");
    assert!(status["writer"].as_str().is_some_and(|w| !w.is_empty()), "{status:#}");
    assert!(sluice.stop().success());
    assert_eq!(status_json(&env)["liveness"], "stopped");
    let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let heartbeat_tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename LIKE '%heartbeat%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(heartbeat_tables, 0);
    let source: String = client
        .query_one("SELECT source FROM edge._sluice_lag", &[])
        .unwrap()
        .get(0);
    assert_eq!(source, "heartbeat");
}
