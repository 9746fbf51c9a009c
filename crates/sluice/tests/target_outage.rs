//! A server target that goes away under load (killed, down for a few seconds, then back) does
//! not end sluice: it runs again from the target's own checkpoint once the target is back,
//! and the target ends equal to the source, nothing lost or applied twice. Meanwhile the live
//! status says since when the target is unreachable.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, http_get, Env};
use sluice_testkit::{MariaDb, PostgresServer};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.counters (id INT PRIMARY KEY, n BIGINT NOT NULL, note VARCHAR(40));
INSERT INTO shop.counters SELECT seq, 0, 'start' FROM shop.seq_1_to_50;
";
const TABLES: &str = "[[tables]]\nmatch = \"shop.counters\"\n\n[apply]\nwriters = 2\n";

/// The live status (`GET /status` of `[metrics] listen`) once `ready` holds (30 s at most).
fn live_status_until(port: u16, what: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(port, "/status");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        if ready(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "no {what} in the live status: {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn load(env: &Env, from: usize, to: usize) {
    for i in from..to {
        env.db.exec(&format!(
            "UPDATE shop.counters SET n = n + 1, note = 'w{i}' WHERE id = {}; INSERT INTO shop.counters VALUES ({}, {i}, 'new');",
            1 + i % 50,
            1000 + i
        ));
    }
}

/// Load before, during and after an outage of the target `server` (`down`, then `up`):
/// sluice must still be running while the target is down, when `while_down` runs.
fn load_through_an_outage<T>(
    env: &Env,
    sluice: &mut common::Sluice,
    server: &mut T,
    down: fn(&mut T),
    up: fn(&mut T),
    while_down: impl FnOnce(),
) {
    load(env, 0, 100);
    down(server);
    // Changes keep coming while the target is down.
    load(env, 100, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sluice.try_exit().is_none(),
        "sluice ended with its target down:\n{}",
        env.log()
    );
    while_down();
    up(server);
    load(env, 200, 300);
}

#[test]
fn a_mariadb_target_killed_and_restarted_under_load_ends_equal() {
    let env = Env::new(SETUP, TABLES);
    let (mut target, toml) = common::mariadb_target(&env);
    let metrics = free_port();
    let tables = format!("{TABLES}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n");
    env.write_config_with_target(&tables, "", &toml);
    let port = target.port();
    let positions = move || common::mariadb_positions(port);
    let mut sluice = env.start_server_target(positions);
    load_through_an_outage(
        &env,
        &mut sluice,
        &mut target,
        MariaDb::kill,
        MariaDb::start_again,
        || {
            let down = live_status_until(metrics, "target_unreachable_since", |s| {
                s["target_unreachable_since_unix"].is_u64()
            });
            assert_eq!(down["liveness"], "running", "{down:#}");
            assert!(down["source_error"].is_null(), "{down:#}");
        },
    );
    env.wait_caught_up_with(&mut sluice, positions);
    // (The live status is reused for up to a second, so the change may take that long.)
    let back = live_status_until(metrics, "the target back", |s| {
        s["target_unreachable_since_unix"].is_null()
    });
    assert!(back["target_error"].is_null(), "{back:#}");
    assert!(sluice.stop().success(), "{}", env.log());
    assert!(env.log().contains("target unreachable"), "{}", env.log());
    assert_eq!(
        target.query_rows("SELECT id, n, note FROM edge.counters ORDER BY id"),
        env.db.query_rows("SELECT id, n, note FROM shop.counters ORDER BY id")
    );
}

#[test]
fn a_postgres_target_restarted_under_load_ends_equal() {
    let env = Env::new(SETUP, TABLES);
    let mut pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    let toml = format!(
        "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
        pg.port()
    );
    env.write_config_with_target(TABLES, "", &toml);
    let mut sluice = env.start_server_target(|| common::postgres_positions(&pg, "public"));
    load_through_an_outage(
        &env,
        &mut sluice,
        &mut pg,
        PostgresServer::shut_down,
        PostgresServer::start_again,
        || {},
    );
    env.wait_caught_up_with(&mut sluice, || common::postgres_positions(&pg, "public"));
    assert!(sluice.stop().success(), "{}", env.log());
    assert!(env.log().contains("target unreachable"), "{}", env.log());
    let mut client = postgres::Client::connect(&pg.conn_string_for("edge"), postgres::NoTls).unwrap();
    let target: Vec<Vec<String>> = client
        .query(
            "SELECT id::text, n::text, note FROM public.counters ORDER BY counters.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (0..3).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    assert_eq!(
        target,
        env.db.query_rows("SELECT id, n, note FROM shop.counters ORDER BY id")
    );
}
