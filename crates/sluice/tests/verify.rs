//! `sluice verify`: tampering of every kind is found and repaired on every target, while
//! replication runs; no false alarm under a sustained concurrent workload; a table still
//! being backfilled is reported not ready, never as differing.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Env;
use sluice_testkit::{MariaDb, PostgresServer};

/// Every type family sluice maps (in `items`, keyed by an integer: verified by key range), a
/// text key (`tags`: by key list, as collations differ across engines) and a row filter with
/// an hmac-transformed column (`people`).
const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id BIGINT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2), weight FLOAT, ratio DOUBLE,
  made DATETIME(6), seen TIMESTAMP(3) NULL DEFAULT NULL, dur TIME, tags SET('a','b','c'), colour ENUM('red','green'),
  doc JSON, raw VARBINARY(16), yr YEAR, flags BIT(5), big BIGINT UNSIGNED);
CREATE TABLE shop.tags (code VARCHAR(20) PRIMARY KEY, label VARCHAR(40));
CREATE TABLE shop.people (id INT PRIMARY KEY, email VARCHAR(80), region VARCHAR(4));
";

const TABLES: &str = "[[tables]]
match = \"shop.items\"

[[tables]]
match = \"shop.tags\"

[[tables]]
match = \"shop.people\"
where = \"region = 'eu'\"
[tables.transforms]
email = \"hmac\"

[transforms]
hmac_key_file = \"hmac-key\"

[apply]
writers = 2
";

fn insert_rows(env: &Env, from: u32, to: u32) {
    env.db.exec(&format!(
        "INSERT INTO shop.items SELECT seq, CONCAT('item-', seq), seq * 1.25, seq / 3, seq / 7,
           '2024-01-02 03:04:05.000006' + INTERVAL seq SECOND, FROM_UNIXTIME(1700000000 + seq + 0.5),
           SEC_TO_TIME(CAST(seq AS SIGNED) * 37 - 5000), 'a,c', IF(seq % 2, 'red', 'green'),
           JSON_OBJECT('n', seq, 'k', 'v'), UNHEX(LPAD(HEX(seq), 8, '0')), 2000 + seq % 50, seq % 32,
           18446744073709551615 - seq
         FROM shop.seq_{from}_to_{to};
         INSERT INTO shop.tags SELECT CONCAT('Tag-', seq), CONCAT('label ', seq) FROM shop.seq_{from}_to_{to};
         INSERT INTO shop.people SELECT seq, CONCAT('p', seq, '@example.com'), IF(seq % 3 = 0, 'us', 'eu')
         FROM shop.seq_{from}_to_{to};"
    ));
}

fn new_env() -> Env {
    let env = Env::new(SETUP, TABLES);
    std::fs::write(env.dir.path().join("hmac-key"), "verify-k3y-verify-k3y\n").unwrap();
    insert_rows(&env, 1, 150);
    env
}

fn verify(env: &Env, extra: &[&str]) -> (i32, serde_json::Value, Output) {
    let config = env.config.display().to_string();
    let mut args = vec!["verify", "-c", config.as_str(), "--json", "--catch-up-timeout", "60"];
    args.extend_from_slice(extra);
    let out = env.run_cmd(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, out)
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report
        .as_array()
        .and_then(|a| a.iter().find(|t| t["table"] == name))
        .unwrap_or_else(|| panic!("no report for {name}: {report:#}"))
}

fn counts(report: &serde_json::Value, name: &str) -> (u64, u64, u64) {
    let t = table(report, name);
    (
        t["missing"].as_u64().unwrap(),
        t["extra"].as_u64().unwrap(),
        t["different"].as_u64().unwrap(),
    )
}

/// The whole scenario on one target: equal after replication, tampering found, repaired while
/// replication runs, equal afterwards. `tamper` runs SQL on the target.
fn tampering_is_found_and_repaired(
    env: &Env,
    mut sluice: common::Sluice,
    items_method: &str,
    caught_up: impl Fn(&mut common::Sluice),
    tamper: impl Fn(&str),
) {
    insert_rows(env, 151, 300);
    env.db.exec("UPDATE shop.items SET name = 'renamed', doc = JSON_OBJECT('z', 1, 'a', 2) WHERE id = 3; DELETE FROM shop.tags WHERE code = 'Tag-9';");
    caught_up(&mut sluice);

    let (code, report, out) = verify(env, &[]);
    assert_eq!(
        code,
        0,
        "a faithful copy verifies equal: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Off a terminal, progress goes to the log: at least the closing figures, which count
    // every table and every source row compared.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tables = report.as_array().unwrap().len();
    let rows: u64 = report
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source_rows"].as_u64().unwrap())
        .sum();
    assert!(
        stderr.contains(&format!(
            "verify progress: finished tables_done={tables} tables={tables} rows={rows}"
        )),
        "{stderr}"
    );
    // MariaDB targets compare `items` by SQL checksums, whose text forms of every type here
    // must agree with the source's (a chunk that disagrees is compared row by row).
    let items = table(&report, "items");
    assert_eq!(items["method"], items_method, "{report:#}");
    assert_eq!(items["checksum_mismatches"], 0, "{report:#}");
    assert_eq!(table(&report, "tags")["method"], "key_list");
    assert_eq!(table(&report, "items")["source_rows"], 300);
    assert_eq!(table(&report, "people")["source_rows"], 200, "the row filter applies");

    // Behind sluice's back: a changed value, a deleted row and an added row in each table,
    // and a changed value of a transformed column.
    tamper("UPDATE items SET name = 'tampered' WHERE id = 7");
    tamper("UPDATE items SET price = 99.99 WHERE id = 250");
    tamper("DELETE FROM items WHERE id = 8");
    tamper("INSERT INTO items (id, name) VALUES (100000, 'ghost')");
    tamper("UPDATE tags SET label = 'tampered' WHERE code = 'Tag-5'");
    tamper("DELETE FROM tags WHERE code = 'Tag-6'");
    tamper("INSERT INTO tags (code, label) VALUES ('zz-ghost', 'ghost')");
    tamper("UPDATE people SET email = 'not-the-digest' WHERE id = 1");
    tamper("DELETE FROM people WHERE id = 2");
    // Replication keeps running: a write after the tampering is not a difference.
    env.db.exec("UPDATE shop.items SET name = 'fresh' WHERE id = 11");
    caught_up(&mut sluice);

    let (code, report, out) = verify(env, &[]);
    assert_eq!(
        code,
        4,
        "differences exit with 4: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts(&report, "items"), (1, 1, 2), "{report:#}");
    assert_eq!(counts(&report, "tags"), (1, 1, 1), "{report:#}");
    assert_eq!(counts(&report, "people"), (1, 0, 1), "{report:#}");
    let keys: Vec<String> = table(&report, "items")["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("{} {}", k["difference"].as_str().unwrap(), k["key"].as_str().unwrap()))
        .collect();
    for want in ["different [7]", "different [250]", "missing [8]", "extra [100000]"] {
        assert!(keys.contains(&want.to_owned()), "{want} in {keys:?}");
    }
    // Only one table when asked.
    let (code, report, _) = verify(env, &["--table", "shop.tags"]);
    assert_eq!(code, 4);
    assert_eq!(report.as_array().unwrap().len(), 1);

    let (code, report, out) = verify(env, &["--repair"]);
    assert_eq!(
        code,
        0,
        "repaired: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(table(&report, "items")["repaired"], 4, "{report:#}");
    assert_eq!(table(&report, "items")["outcome"], "repaired");
    assert_eq!(table(&report, "people")["repaired"], 2, "{report:#}");

    // The stream still applies on top of repaired rows.
    env.db
        .exec("UPDATE shop.items SET name = 'after-repair' WHERE id = 7; DELETE FROM shop.items WHERE id = 8;");
    caught_up(&mut sluice);
    let (code, report, _) = verify(env, &[]);
    assert_eq!(code, 0, "{report:#}");
    for t in ["items", "tags", "people"] {
        assert_eq!(table(&report, t)["outcome"], "equal", "{report:#}");
    }
    assert!(sluice.stop().success());
}

#[test]
fn tampering_is_found_and_repaired_on_sqlite() {
    let env = new_env();
    let sluice = env.start();
    let target = env.target.clone();
    tampering_is_found_and_repaired(
        &env,
        sluice,
        "key_range",
        |s| env.wait_caught_up(s),
        |sql| {
            let conn = rusqlite::Connection::open(&target).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch(sql).unwrap();
        },
    );
}

#[test]
fn tampering_is_found_and_repaired_on_mariadb() {
    let env = new_env();
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
        if target.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edge' AND TABLE_NAME = '_sluice_checkpoint'") == "0" {
            return Vec::new();
        }
        target
            .query_rows("SELECT position FROM edge._sluice_checkpoint")
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let sluice = env.start_server_target(positions);
    tampering_is_found_and_repaired(
        &env,
        sluice,
        "sql_checksum",
        |s| env.wait_caught_up_with(s, positions),
        |sql| target.exec(&format!("USE edge; {sql}")),
    );
}

#[test]
fn tampering_is_found_and_repaired_on_postgres() {
    let env = new_env();
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    let conn = pg.conn_string_for("edge");
    env.write_config_with_target(
        TABLES,
        "",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
            pg.port()
        ),
    );
    let positions = || -> Vec<String> {
        let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        client
            .query("SELECT position FROM public._sluice_checkpoint", &[])
            .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
            .unwrap_or_default()
    };
    let sluice = env.start_server_target(positions);
    tampering_is_found_and_repaired(
        &env,
        sluice,
        "key_range",
        |s| env.wait_caught_up_with(s, positions),
        |sql| {
            let mut client = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            client.batch_execute(sql).unwrap();
        },
    );
}

/// Verification runs again and again while clients write hot rows, change keys, delete and
/// re-insert: it must never report a difference. `SLUICE_SOAK_SECS` sets the length (default
/// 40 s, to keep CI short; the closing notes record longer runs).
#[test]
fn no_false_alarm_under_a_sustained_concurrent_workload() {
    let env = new_env();
    let mut sluice = env.start();
    wait_status(&env, &mut sluice, "backfill done", |s| {
        s["tables"]
            .as_array()
            .is_some_and(|t| t.len() == 3 && t.iter().all(|t| t["backfill"] == "ready"))
    });
    let secs: u64 = std::env::var("SLUICE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|c| {
            let stop = stop.clone();
            let port = env.db.port();
            std::thread::spawn(move || {
                let mut round = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let id = 1000 + c * 100_000 + round;
                    let hot = 1 + round % 5;
                    let sql = format!(
                        "BEGIN;
                         UPDATE shop.items SET name = CONCAT('hot-', {round}), price = price + 1 WHERE id = {hot};
                         INSERT INTO shop.items (id, name, made) VALUES ({id}, 'new', NOW(6));
                         UPDATE shop.items SET id = id + 50000 WHERE id = {prev};
                         DELETE FROM shop.items WHERE id = {old};
                         REPLACE INTO shop.tags VALUES (CONCAT('Tag-', {hot}), CONCAT('l', {round}));
                         UPDATE shop.people SET region = IF(region = 'eu', 'us', 'eu') WHERE id = {person};
                         COMMIT;",
                        prev = id - 1,
                        old = id + 50000 - 3,
                        person = 1 + (round * 7 + c) % 150,
                    );
                    let ok = std::process::Command::new("mariadb")
                        .args(["-h127.0.0.1", "-uroot", &format!("-P{port}"), "-e", &sql])
                        .status()
                        .unwrap()
                        .success();
                    assert!(ok);
                }
                round
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut passes = 0;
    let mut suspects = 0;
    while Instant::now() < deadline {
        let (code, report, out) = verify(&env, &["--chunk-rows", "40"]);
        assert_eq!(
            code,
            0,
            "false alarm during concurrent writes (pass {passes}): {report:#}\n{}\nsluice log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.log()
        );
        passes += 1;
        suspects += report
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["suspects"].as_u64().unwrap())
            .sum::<u64>();
        if let Some(status) = sluice.try_exit() {
            panic!("sluice exited ({status}); log:\n{}", env.log());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    env.wait_caught_up(&mut sluice);
    let (code, report, _) = verify(&env, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(passes >= 2, "only {passes} verification passes ran");
    assert!(rounds >= 20, "only {rounds} write transactions ran");
    eprintln!(
        "{passes} verification passes over {secs} s beside {rounds} client transactions: no false alarm \
         ({suspects} keys differed at first sight and were cleared by re-checks)"
    );
    assert!(sluice.stop().success());
}

#[test]
fn a_table_still_being_backfilled_is_not_ready_rather_than_different() {
    let env = Env::new(
        "CREATE DATABASE shop;
         CREATE TABLE shop.big (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO shop.big SELECT seq, CONCAT('v', seq) FROM shop.seq_1_to_20000;
         CREATE TABLE shop.small (id INT PRIMARY KEY);",
        "[[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = 50\n",
    );
    let mut sluice = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copied = env
            .target_rows("SELECT coalesce(sum(rows_copied), 0) FROM _sluice_backfill WHERE name = 'big'")
            .first()
            .map(|r| r[0].parse::<u64>().unwrap_or(0))
            .unwrap_or(0);
        if copied >= 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backfill made no progress; log:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Frozen mid-copy: the target holds only part of `big`.
    sluice.kill9();
    let (code, report, out) = verify(&env, &[]);
    assert_eq!(
        code,
        3,
        "not ready exits with 3: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big = table(&report, "big");
    assert_eq!(big["outcome"], "not_ready", "{report:#}");
    assert!(big["note"].as_str().unwrap().contains("backfill"), "{report:#}");
    // Whatever else it says, nothing is reported as differing.
    for t in report.as_array().unwrap() {
        assert_ne!(t["outcome"], "differs", "{report:#}");
    }
}

const SIMPLE: &str = "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40));";

fn status(env: &Env) -> serde_json::Value {
    let config = env.config.display().to_string();
    let out = env.run_cmd(&["status", "--json", "-c", config.as_str()]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

/// Waits until `sluice status` satisfies `done`.
fn wait_status(
    env: &Env,
    sluice: &mut common::Sluice,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(env);
        if done(&s) {
            return s;
        }
        if let Some(code) = sluice.try_exit() {
            panic!("sluice exited ({code}) waiting for {what}; log:\n{}", env.log());
        }
        assert!(Instant::now() < deadline, "no {what}: {s:#}; log:\n{}", env.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A trigger on the target rewrites every row sluice inserts: what sluice reads back is not
/// what it wrote.
fn add_tampering_trigger(env: &Env) {
    let conn = rusqlite::Connection::open(&env.target).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER tamper AFTER INSERT ON items WHEN NEW.id >= 100 BEGIN UPDATE items SET name = 'tampered' WHERE id = NEW.id; END;",
    )
    .unwrap();
}

#[test]
fn the_verified_position_follows_the_applied_one() {
    let env = Env::new(SIMPLE, "[[tables]]\nmatch = \"shop.*\"\n");
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.items SELECT seq, CONCAT('n', seq) FROM shop.seq_1_to_500; UPDATE shop.items SET name = 'x' WHERE id < 50; DELETE FROM shop.items WHERE id > 450;");
    env.wait_caught_up(&mut sluice);
    let want = env.source_position();
    let s = wait_status(&env, &mut sluice, "verified position", |s| {
        s["verified"] == want.as_str()
    });
    assert_eq!(s["verify_mismatches"], 0, "{s:#}");
    assert!(env.log().contains("incremental_verification=true"), "{}", env.log());
    assert!(sluice.stop().success());
}

#[test]
fn a_row_changed_behind_sluices_back_stops_replication_by_default() {
    let env = Env::new(SIMPLE, "[[tables]]\nmatch = \"shop.*\"\n");
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.items VALUES (1, 'first')");
    env.wait_caught_up(&mut sluice);
    add_tampering_trigger(&env);
    env.db.exec("INSERT INTO shop.items VALUES (100, 'secret-value')");
    let exit = sluice.wait_exit(Duration::from_secs(60));
    assert!(!exit.success(), "sluice must stop; log:\n{}", env.log());
    let log = env.log();
    assert!(
        log.contains("incremental verification") && log.contains("items"),
        "{log}"
    );
    assert!(
        !log.contains("secret-value") && !log.contains("tampered"),
        "no values in the log: {log}"
    );
    let s = status(&env);
    assert_eq!(s["verify_mismatches"], 1, "{s:#}");
}

#[test]
fn report_policy_counts_and_goes_on_repair_policy_rewrites() {
    let env = Env::new(
        SIMPLE,
        "[[tables]]\nmatch = \"shop.*\"\n\n[verify]\non_mismatch = \"report\"\n",
    );
    let mut sluice = env.start();
    env.db.exec("INSERT INTO shop.items VALUES (1, 'first')");
    env.wait_caught_up(&mut sluice);
    add_tampering_trigger(&env);
    env.db.exec("INSERT INTO shop.items VALUES (100, 'a'), (101, 'b')");
    env.wait_caught_up(&mut sluice);
    let want = env.source_position();
    let s = wait_status(&env, &mut sluice, "verified position", |s| {
        s["verified"] == want.as_str()
    });
    assert_eq!(s["verify_mismatches"], 2, "{s:#}");
    assert_eq!(
        env.target_rows("SELECT name FROM items WHERE id = 100"),
        vec![vec!["tampered"]]
    );
    assert!(sluice.stop().success());

    // Now repair: the expected row is written again (an upsert, which the insert trigger
    // does not fire on).
    env.write_config(
        "[[tables]]\nmatch = \"shop.*\"\n\n[verify]\non_mismatch = \"repair\"\n",
        "",
    );
    let mut sluice = env.start();
    env.db.exec("UPDATE shop.items SET name = 'c' WHERE id = 1; DELETE FROM shop.items WHERE id = 101; INSERT INTO shop.items VALUES (102, 'd');");
    env.wait_caught_up(&mut sluice);
    let want = env.source_position();
    let s = wait_status(&env, &mut sluice, "verified position", |s| {
        s["verified"] == want.as_str()
    });
    assert_eq!(s["verify_mismatches"], 3, "{s:#}");
    assert_eq!(
        env.target_rows("SELECT name FROM items WHERE id = 102"),
        vec![vec!["d"]]
    );
    assert!(sluice.stop().success());
}
