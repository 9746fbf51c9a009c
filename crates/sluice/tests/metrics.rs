//! `[metrics] listen`: `sluice run` serves `GET /metrics` in the Prometheus text format,
//! end to end against a throwaway MariaDB source: metric names and types, counters that grow
//! with the load, the lag histogram fed, backfill figures per table, wrong paths and bad
//! input answered without harm, a taken port refused at startup by name, and `/status` (the
//! JSON of `sluice status --json`) and the status page beside them.

mod common;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{free_port, http_get as get, http_raw as raw, Env};

const SETUP: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40));
INSERT INTO shop.items SELECT seq, CONCAT('existing ', seq) FROM shop.seq_1_to_20;
";

fn tables(port: u16) -> String {
    format!("[[tables]]\nmatch = \"shop.*\"\nwhere = \"id < 5000\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
}

fn scrape(port: u16) -> String {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

/// The value of the sample line `series` (name with labels, exactly as printed).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a number"))
    })
}

/// Scrapes until `ready` holds for the page (or fails after 60 s with the page and the log).
fn scrape_until(env: &Env, sluice: &mut common::Sluice, port: u16, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = scrape(port);
        if ready(&page) {
            return page;
        }
        if let Some(status) = sluice.try_exit() {
            panic!("sluice exited ({status}); log:\n{}", env.log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed; last page:\n{page}\nlog:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_are_served_and_grow_with_the_load() {
    let port = free_port();
    let env = Env::new(SETUP, &tables(port));
    let mut sluice = env.start();

    // Types and names, and the copy of the 20 existing rows.
    let page = scrape_until(&env, &mut sluice, port, "the finished copy of items", |p| {
        sample(p, "sluice_backfill_rows_copied_total{table=\"items\"}") == Some(20.0)
            && sample(p, "sluice_backfill_table_state{table=\"items\",state=\"ready\"}") == Some(1.0)
    });
    for line in [
        "# TYPE sluice_apply_lag_seconds histogram",
        "# TYPE sluice_rows_applied_total counter",
        "# TYPE sluice_source_transactions_applied_total counter",
        "# TYPE sluice_target_commits_total counter",
        "# TYPE sluice_backfill_rows_copied_total counter",
        "# TYPE sluice_backfill_table_state gauge",
        "# TYPE sluice_build_info gauge",
        "sluice_apply_lag_seconds_bucket{le=\"1\"}",
        "sluice_apply_lag_seconds_bucket{le=\"60\"}",
        "sluice_apply_lag_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(page.contains(line), "no `{line}` in:\n{page}");
    }
    assert_eq!(
        sample(
            &page,
            &format!("sluice_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "sluice_backfill_table_state{table=\"items\",state=\"copying\"}"),
        Some(0.0),
        "{page}"
    );
    let rows_before = sample(&page, "sluice_rows_applied_total").expect("rows applied");
    let txns_before = sample(&page, "sluice_source_transactions_applied_total").expect("txns");

    // Load: 30 source transactions of 5 rows each.
    for t in 0..30 {
        let values: Vec<String> = (0..5)
            .map(|r| {
                let id = 1000 + t * 5 + r;
                format!("({id}, 'new {id}')")
            })
            .collect();
        env.db
            .exec(&format!("INSERT INTO shop.items VALUES {}", values.join(", ")));
    }
    // And 3 rows the row filter keeps from the target.
    env.db
        .exec("INSERT INTO shop.items VALUES (9001, 'x'), (9002, 'y'), (9003, 'z')");
    let page = scrape_until(&env, &mut sluice, port, "150 more rows applied, 3 filtered", |p| {
        sample(p, "sluice_rows_applied_total").unwrap_or(0.0) >= rows_before + 150.0
            && sample(p, "sluice_stream_rows_filtered_total{table=\"items\"}") == Some(3.0)
    });
    assert_eq!(
        sample(&page, "sluice_stream_rows_received_total{table=\"items\"}"),
        Some(153.0),
        "{page}"
    );
    // (A table's stream counters appear with its first rows event.)
    assert!(
        page.contains("# TYPE sluice_stream_rows_received_total counter"),
        "{page}"
    );
    assert!(
        page.contains("# TYPE sluice_stream_rows_filtered_total counter"),
        "{page}"
    );
    assert!(
        sample(&page, "sluice_source_transactions_applied_total").unwrap() >= txns_before + 30.0,
        "{page}"
    );
    assert!(sample(&page, "sluice_target_commits_total").unwrap() >= 1.0, "{page}");
    // Lag samples were taken as those transactions committed (event timestamps here: the
    // test user may not write the heartbeat).
    let page = scrape_until(&env, &mut sluice, port, "lag samples", |p| {
        sample(p, "sluice_apply_lag_seconds_count").unwrap_or(0.0) >= 1.0
    });
    let count = sample(&page, "sluice_apply_lag_seconds_count").unwrap();
    assert_eq!(
        sample(&page, "sluice_apply_lag_seconds_bucket{le=\"+Inf\"}"),
        Some(count),
        "{page}"
    );
    // No row values in the page.
    assert!(!page.contains("new 10"), "{page}");

    // `/status` is `sluice status --json` (the same fields, from the same code; the live one
    // adds its figures), and `/` the page.
    let (status, body) = get(port, "/status");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let live: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let cli = common::status_json(&env);
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&live), keys(&cli), "{live:#}");
    assert_eq!(live["liveness"], "running", "{live:#}");
    let (status, body) = get(port, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("<script src=\"/page.js\""), "{body}");

    // Wrong paths, wrong methods and garbage: answered, and the server carries on.
    assert_eq!(get(port, "/metricsx").0, "HTTP/1.1 404 Not Found");
    assert!(raw(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(raw(port, b"\xff\xfe garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(raw(port, &[b'A'; 20_000]).starts_with("HTTP/1.1 431"));
    {
        // A client that connects and hangs up without a word.
        let _ = TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
    assert!(sluice.try_exit().is_none(), "log:\n{}", env.log());
    assert!(scrape(port).contains("# TYPE sluice_rows_applied_total counter"));

    assert!(sluice.stop().success(), "log:\n{}", env.log());
}

#[test]
fn a_taken_port_is_a_startup_error_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = Env::new(SETUP, &tables(port));
    let out = env.run_cmd(&["run", "-c", env.config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("metrics"),
        "{stderr}"
    );
    drop(taken);
}
