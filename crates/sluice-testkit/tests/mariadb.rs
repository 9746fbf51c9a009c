//! Integration tests: these start real MariaDB servers.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use sluice_testkit::{MariaDb, MariaDbOptions};

#[test]
fn default_server_has_row_based_binlog_and_gtid_strict_mode() {
    let db = MariaDb::start();
    let settings = db.query_rows(
        "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, \
         @@gtid_strict_mode, @@server_id, @@port, @@bind_address",
    );
    assert_eq!(
        settings,
        vec![vec![
            "1".to_owned(),
            "ROW".to_owned(),
            "FULL".to_owned(),
            "FULL".to_owned(),
            "1".to_owned(),
            db.server_id().to_string(),
            db.port().to_string(),
            "127.0.0.1".to_owned(),
        ]]
    );
    assert_ne!(db.port(), 3306);
    assert!(db.data_dir().join("mysql-bin.index").exists());
    assert!(db.error_log().exists());
    assert!(db.socket_path().exists());
    // Starting a server must not write anything to its binlog.
    assert_eq!(db.query_value("SELECT @@gtid_binlog_pos"), "");
}

#[tokio::test]
async fn async_connection_works_inside_a_tokio_runtime() {
    // start() is blocking but must not trip over the caller's runtime.
    let db = MariaDb::start();
    let mut conn = db.conn().await;
    let answer: Option<i64> = conn.query_first("SELECT 6 * 7").await.unwrap();
    assert_eq!(answer, Some(42));
    conn.disconnect().await.unwrap();

    // The documented URL works over plain TCP as root without a password.
    let url = format!("{}?prefer_socket=false", db.url());
    let mut tcp_conn = mysql_async::Conn::from_url(url).await.unwrap();
    let user: Option<String> = tcp_conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("root@127.0.0.1"));
    tcp_conn.disconnect().await.unwrap();
}

#[test]
fn servers_started_in_parallel_get_distinct_ports_and_server_ids() {
    let servers: Vec<MariaDb> = (0..3)
        .map(|_| thread::spawn(MariaDb::start))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    for (index, db) in servers.iter().enumerate() {
        assert_eq!(db.query_value("SELECT @@port"), db.port().to_string());
        for other in &servers[index + 1..] {
            assert_ne!(db.port(), other.port());
            assert_ne!(db.server_id(), other.server_id());
            assert_ne!(db.data_dir(), other.data_dir());
        }
    }
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    if std::env::var_os("SLUICE_KEEP_TESTDB").is_some() {
        return; // The directory is meant to survive then.
    }
    let db = MariaDb::start();
    let dir = db.data_dir().parent().unwrap().to_path_buf();
    let pid = db.pid().unwrap();
    let port = db.port();
    drop(db);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!process_alive(pid), "mariadbd {pid} still running");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn restart_keeps_port_data_and_binlog() {
    let mut db = MariaDb::start();
    db.exec("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT)");
    db.exec("INSERT INTO shop.items VALUES (1, 'apple')");
    let port = db.port();
    let old_pid = db.pid().unwrap();
    let gtid_before = db.query_value("SELECT @@gtid_binlog_pos");

    db.restart();

    assert_eq!(db.port(), port);
    assert_ne!(db.pid().unwrap(), old_pid);
    assert_eq!(db.query_value("SELECT @@gtid_binlog_pos"), gtid_before);
    db.exec("INSERT INTO shop.items VALUES (2, NULL)");
    assert_eq!(
        db.query_rows("SELECT id, name FROM shop.items ORDER BY id"),
        vec![vec!["1", "apple"], vec!["2", "NULL"]]
    );
}

#[test]
fn stop_kill_and_start_again_simulate_outages() {
    let mut db = MariaDb::start();
    db.exec("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
    db.stop();
    assert!(!db.is_running());
    assert!(TcpStream::connect(("127.0.0.1", db.port())).is_err());
    db.start_again();

    db.exec("INSERT INTO app.t VALUES (1)");
    db.kill();
    db.start_again();
    assert_eq!(db.query_value("SELECT COUNT(*) FROM app.t"), "1");
}

#[test]
fn start_again_waits_for_its_port_to_be_released() {
    let mut db = MariaDb::start();
    let port = db.port();
    db.stop();
    let squatter = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_secs(1));
        drop(squatter);
    });
    db.start_again();
    releaser.join().unwrap();
    assert_eq!(db.port(), port);
    assert_eq!(db.query_value("SELECT @@port"), port.to_string());
}

#[test]
fn options_override_defaults() {
    let db = MariaDbOptions::new()
        .server_arg("--binlog-row-image=MINIMAL")
        .server_id(4242)
        .binlog(false)
        .start();
    assert_eq!(db.server_id(), 4242);
    assert_eq!(
        db.query_rows("SELECT @@log_bin, @@binlog_row_image, @@server_id"),
        vec![vec!["0", "MINIMAL", "4242"]]
    );
}

#[test]
fn query_rows_returns_strings_with_null_as_text() {
    let db = MariaDb::start();
    assert_eq!(
        db.query_rows("SELECT 1, NULL, 'a b', '' UNION ALL SELECT 2, 'x', 'ü😀', 'z'"),
        vec![vec!["1", "NULL", "a b", ""], vec!["2", "x", "ü😀", "z"]]
    );
    assert!(db.query_rows("SELECT 1 FROM DUAL WHERE FALSE").is_empty());
    assert_eq!(db.query_rows("SELECT ''"), vec![vec![""]]);
}

#[test]
#[should_panic(expected = "doesn't exist")]
fn exec_panics_with_the_server_error() {
    let db = MariaDb::start();
    db.exec("SELECT * FROM test.no_such_table");
}

#[tokio::test]
async fn create_user_grants_privileges_without_binlogging() {
    let db = MariaDb::start();
    db.create_user(
        "repl",
        "s3cr'et",
        &["REPLICATION SLAVE, REPLICATION CLIENT", "SELECT ON mysql.*"],
    );
    assert_eq!(db.query_value("SELECT @@gtid_binlog_pos"), "");

    let url = format!("mysql://repl:s3cr%27et@127.0.0.1:{}/?prefer_socket=false", db.port());
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap();
    let grants = grants.join("\n");
    assert!(grants.contains("REPLICATION SLAVE"), "{grants}");
    assert!(grants.contains("ON `mysql`.*"), "{grants}");
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn root_login_over_tcp_is_restored_on_restart() {
    let mut db = MariaDb::start();
    db.exec("SET sql_log_bin = 0; DROP USER 'root'@'127.0.0.1'");
    db.restart();
    let url = format!("{}?prefer_socket=false", db.url());
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(user.as_deref(), Some("root@127.0.0.1"));
    conn.disconnect().await.unwrap();
}

const ORPHAN_CHILD_ENV: &str = "SLUICE_TESTKIT_ORPHAN_CHILD";

/// A test process that dies without unwinding must not leave its server
/// running: the test re-runs itself in a child process that aborts.
#[test]
fn server_dies_with_an_aborted_test_process() {
    if std::env::var_os(ORPHAN_CHILD_ENV).is_some() {
        let db = MariaDb::start();
        println!(
            "ORPHAN pid={} dir={}",
            db.pid().unwrap(),
            db.data_dir().parent().unwrap().display()
        );
        std::process::abort();
    }

    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "server_dies_with_an_aborted_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.split_once("ORPHAN ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child printed no ORPHAN line; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let (pid, dir) = line.split_once(' ').unwrap();
    let pid: u32 = pid.strip_prefix("pid=").unwrap().parse().unwrap();
    let dir = PathBuf::from(dir.strip_prefix("dir=").unwrap());

    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let alive = process_alive(pid);
    // The aborted child could not delete its directory; do it for it.
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!alive, "mariadbd {pid} outlived its test process");
}

/// Whether `pid` is a live (non-zombie) process.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Tests share servers across threads and tasks (e.g. in an `Arc`).
#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MariaDb>();
    assert_send_sync::<MariaDbOptions>();
}
