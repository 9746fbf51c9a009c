//! One writer per target: a second `sluice run` on a target another live instance writes is
//! refused within seconds, naming the other (host, pid, since), whatever its config says; the
//! first goes on untouched; a kill -9'd holder's lock goes with it.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use sluice_testkit::PostgresServer;

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(40));
";
const TABLES: &str = "[[tables]]\nmatch = \"shop.orders\"\n";

/// Runs `sluice run` on `config` and expects it to be refused quickly, naming `holder_pid`.
fn second_run_is_refused(env: &Env, config: &std::path::Path, holder_pid: u32) {
    let started = Instant::now();
    let out = env
        .sluice()
        .args(["run", "-c"])
        .arg(config)
        .output()
        .expect("run sluice");
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the second writer ran: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused only after {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("another sluice is writing") && text.contains(&format!("pid {holder_pid}")),
        "{text}"
    );
}

#[test]
fn a_second_writer_on_a_sqlite_target_is_refused_and_a_killed_holder_is_replaced() {
    let env = Env::new(SETUP, TABLES);
    let mut first = env.start();
    // The same config, and a copy with another server_id (another "replica" of the source).
    second_run_is_refused(&env, &env.config, first.pid());
    let other = env.dir.path().join("other.toml");
    let text = std::fs::read_to_string(&env.config).unwrap() + "";
    std::fs::write(
        &other,
        text.replace("heartbeat_ms = 500", "heartbeat_ms = 500\nserver_id = 99"),
    )
    .unwrap();
    second_run_is_refused(&env, &other, first.pid());
    // The first goes on untouched.
    env.db.exec("INSERT INTO shop.orders VALUES (1, 'one')");
    env.wait_caught_up(&mut first);
    assert_eq!(env.target_rows("SELECT note FROM orders"), vec![vec!["one"]]);
    // A holder killed with -9 leaves no lock behind.
    first.kill9();
    let mut next = env.start();
    env.db.exec("INSERT INTO shop.orders VALUES (2, 'two')");
    env.wait_caught_up(&mut next);
    assert!(next.stop().success(), "{}", env.log());
    assert_eq!(
        env.target_rows("SELECT id, note FROM orders ORDER BY id"),
        vec![vec!["1", "one"], vec!["2", "two"]]
    );
}

#[test]
fn a_second_writer_on_a_postgres_target_is_refused() {
    let env = Env::new(SETUP, TABLES);
    let pg = PostgresServer::start();
    pg.exec("CREATE DATABASE edge");
    env.write_config_with_target(
        TABLES,
        "",
        &format!(
            "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
            pg.port()
        ),
    );
    let positions = || common::postgres_positions(&pg, "public");
    let mut first = env.start_server_target(positions);
    second_run_is_refused(&env, &env.config, first.pid());
    env.db.exec("INSERT INTO shop.orders VALUES (1, 'one')");
    env.wait_caught_up_with(&mut first, positions);
    assert!(first.stop().success(), "{}", env.log());
}

#[test]
fn a_second_writer_on_a_mariadb_target_is_refused() {
    let env = Env::new(SETUP, TABLES);
    let (target, toml) = common::mariadb_target(&env);
    env.write_config_with_target(TABLES, "", &toml);
    let positions = || common::mariadb_positions(target.port());
    let mut first = env.start_server_target(positions);
    let started = Instant::now();
    let out = env.run_cmd(&["run", "-c", env.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && started.elapsed() < Duration::from_secs(20),
        "{text}"
    );
    // MariaDB's lock names the holding connection, not the process.
    assert!(
        text.contains("another sluice is writing") && text.contains("held by connection"),
        "{text}"
    );
    env.db.exec("INSERT INTO shop.orders VALUES (1, 'one')");
    env.wait_caught_up_with(&mut first, positions);
    assert!(first.stop().success(), "{}", env.log());
}
