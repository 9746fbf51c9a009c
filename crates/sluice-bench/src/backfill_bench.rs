//! `sluice-bench backfill`: how fast sluice copies an existing table into each target, beside
//! that target's bulk-ingest ceiling for the same rows, and what a running copy does to the
//! stream's lag, all in one run.
//!
//! One throwaway MariaDB source gets a sysbench-shaped table (`bench.sbtest1`: `id` INT primary
//! key, `k` INT, `c` CHAR(120), `pad` CHAR(60)) of `--rows` rows, written without the binary
//! log (rows that exist before sluice starts), and four small `bench.load1..4` tables of the
//! same shape for the write load.
//!
//! 1. **Copy speed.** For each target, the real `sluice run` starts on an empty target with the
//!    table selected and is timed until `sluice status` says the table is ready and the target
//!    caught up (start-up included). Beside it, the target's bulk-ingest ceiling for the same
//!    rows (read from the source into memory first, so the ceiling is the target's alone):
//!    MariaDB prepared multi-row INSERTs, PostgreSQL `COPY`, SQLite prepared INSERTs, each in
//!    one transaction (the apply benchmark's ceilings).
//! 2. **Lag.** A fixed-rate oltp_write_only-shaped load (per transaction: an indexed-column
//!    update, a non-indexed update, a delete and an insert, on `bench.load1..4`) is streamed
//!    by sluice with its heartbeat every 100 ms into a fresh target; the stream's lag
//!    percentiles over the load come from sluice's own report. Once with only the load tables
//!    selected (copied before the load starts), once with `bench.sbtest1` selected too on a
//!    fresh target, so that its copy runs while the load does.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql::prelude::Queryable;
use sluice_testkit::MariaDb;

use crate::verify_bench;

pub struct Options {
    pub sluice: std::path::PathBuf,
    pub rows: u64,
    pub targets: Vec<String>,
    /// `[backfill]` settings (`key = value` lines) for every sluice run.
    pub settings: Vec<String>,
    pub lag_seconds: u64,
    /// Offered load, transactions per second.
    pub lag_rate: u64,
    /// The target of the lag runs.
    pub lag_target: String,
    pub json: bool,
}

fn log(msg: &str) {
    eprintln!("[backfill-bench] {msg}");
}

/// Rows in each load table.
const LOAD_TABLE_ROWS: u64 = 10_000;
const LOAD_TABLES: u64 = 4;
const LOAD_THREADS: u64 = 4;

pub fn run(mut options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.lag_rate > 0, "--lag-rate must be above 0");
    // sluice runs in a directory of its own.
    options.sluice = options
        .sluice
        .canonicalize()
        .with_context(|| format!("{}", options.sluice.display()))?;
    log("starting the throwaway source");
    // The heartbeat (lag in microseconds) needs its own grant.
    let (dir, source) = verify_bench::start_source("2G", &["CREATE, INSERT, UPDATE ON sluice.*"])?;
    log(&format!(
        "filling bench.sbtest1 with {} rows (not in the binlog)",
        options.rows
    ));
    let fill_started = Instant::now();
    verify_bench::fill(&source, options.rows, false);
    for t in 1..=LOAD_TABLES {
        source.exec(&format!(
            "SET SESSION sql_log_bin = 0;
             CREATE TABLE bench.load{t} LIKE bench.sbtest1;
             INSERT INTO bench.load{t} SELECT * FROM bench.sbtest1 WHERE id <= {LOAD_TABLE_ROWS};"
        ));
    }
    log(&format!("filled in {:.1} s", fill_started.elapsed().as_secs_f64()));
    let extra = format!("[backfill]\n{}\n", options.settings.join("\n"));

    let mut results = Vec::new();
    let mut rows_in_memory: Option<Vec<(i64, i64, String, String)>> = None;
    for name in &options.targets {
        let (mut servers_mariadb, mut servers_pg) = (Vec::new(), Vec::new());
        let toml = verify_bench::start_target(name, dir.path(), &mut servers_mariadb, &mut servers_pg)?;
        let config = verify_bench::write_config(
            dir.path(),
            source.port(),
            &format!("copy-{name}"),
            &toml,
            &["bench.sbtest1"],
            &extra,
        )?;
        log(&format!("{name}: sluice run copies bench.sbtest1"));
        let (seconds, child) = verify_bench::backfill(&options.sluice, dir.path(), &config)?;
        let rss_kib = crate::apply::peak_rss_kib(child.id())?;
        let sluice_cpu_s = crate::apply::process_cpu_s(child.id())?;
        verify_bench::stop(child)?;
        let rows_per_s = options.rows as f64 / seconds;
        log(&format!("{name}: copied in {seconds:.1} s ({rows_per_s:.0} rows/s)"));

        if rows_in_memory.is_none() {
            log("reading the table into memory for the ceilings");
            rows_in_memory = Some(read_rows(&source)?);
        }
        let rows = rows_in_memory.as_ref().expect("read");
        let sb: Vec<crate::apply::SbRow<'_>> = rows
            .iter()
            .map(|(id, k, c, pad)| (*id, *k, c.as_str(), pad.as_str()))
            .collect();
        let (ceiling_s, method) = match name.as_str() {
            "mariadb" => crate::apply::bulk_mariadb(servers_mariadb[0].port(), &sb)?,
            "postgres" => crate::apply::bulk_postgres_db(servers_pg[0].port(), "edge", &sb)?,
            "sqlite" => crate::apply::bulk_sqlite(&dir.path().join("ceiling.sqlite"), &sb)?,
            other => bail!("unknown target {other:?}"),
        };
        let _ = std::fs::remove_file(dir.path().join("ceiling.sqlite"));
        let _ = std::fs::remove_file(dir.path().join("edge.sqlite"));
        let ceiling = options.rows as f64 / ceiling_s;
        println!(
            "backfill target={name} rows={} sluice_s={seconds:.1} sluice_rows_per_s={rows_per_s:.0} sluice_cpu_s={sluice_cpu_s:.1} \
             sluice_peak_rss_mib={:.0} ceiling_rows_per_s={ceiling:.0} ratio={:.2} ceiling_method={method:?}",
            options.rows,
            rss_kib as f64 / 1024.0,
            rows_per_s / ceiling
        );
        results.push(serde_json::json!({
            "target": name,
            "rows": options.rows,
            "sluice_wall_s": seconds,
            "sluice_rows_per_s": rows_per_s,
            "sluice_cpu_s": sluice_cpu_s,
            "sluice_peak_rss_kib": rss_kib,
            "ceiling_wall_s": ceiling_s,
            "ceiling_rows_per_s": ceiling,
            "ceiling_method": method,
            "ratio": rows_per_s / ceiling,
        }));
    }
    drop(rows_in_memory);

    let mut lag = Vec::new();
    if options.lag_seconds > 0 {
        for with_copy in [false, true] {
            lag.push(lag_run(&options, dir.path(), &source, with_copy, &extra)?);
        }
        let p99 = |i: usize| lag[i]["lag"]["p99_us"].as_f64().unwrap_or(0.0);
        println!(
            "backfill_lag target={} offered_txn_per_s={} p99_without_ms={:.1} p99_with_ms={:.1} ratio={:.2}",
            options.lag_target,
            options.lag_rate,
            p99(0) / 1000.0,
            p99(1) / 1000.0,
            if p99(0) > 0.0 { p99(1) / p99(0) } else { f64::NAN }
        );
    }
    println!("backfill_goal sqlite_rows_per_s>=500000 lag_p99_ratio<=2.0");
    if options.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "backfill",
                "rows": options.rows,
                "settings": options.settings,
                "copy": results,
                "lag": lag,
            })
        );
    }
    Ok(())
}

/// The table's rows, as the ceilings write them.
fn read_rows(source: &MariaDb) -> anyhow::Result<Vec<(i64, i64, String, String)>> {
    let mut conn = crate::apply::mysql_conn(source.port(), Some("bench"))?;
    let mut rows = Vec::new();
    conn.query_map(
        "SELECT id, k, c, pad FROM sbtest1",
        |row: (i64, i64, String, String)| rows.push(row),
    )?;
    Ok(rows)
}

/// One lag run: sluice into a fresh `--lag-target` with the heartbeat every 100 ms, the load
/// tables copied first; then the fixed-rate load for `--lag-seconds`, with `bench.sbtest1`
/// being copied meanwhile when `with_copy`.
fn lag_run(
    options: &Options,
    dir: &Path,
    source: &MariaDb,
    with_copy: bool,
    extra: &str,
) -> anyhow::Result<serde_json::Value> {
    let label = if with_copy { "with-copy" } else { "without-copy" };
    let (mut servers_mariadb, mut servers_pg) = (Vec::new(), Vec::new());
    let run_dir = dir.join(label);
    std::fs::create_dir_all(&run_dir)?;
    std::fs::copy(dir.join("password"), run_dir.join("password"))?;
    let toml = verify_bench::start_target(&options.lag_target, &run_dir, &mut servers_mariadb, &mut servers_pg)?;
    let load_tables: Vec<String> = (1..=LOAD_TABLES).map(|t| format!("bench.load{t}")).collect();
    let mut tables: Vec<&str> = load_tables.iter().map(String::as_str).collect();
    if with_copy {
        tables.push("bench.sbtest1");
    }
    let extra = format!(
        "{extra}\n[lag]\nheartbeat = true\ninterval_ms = 100\nwindow_s = {}\n",
        options.lag_seconds
    );
    let config = verify_bench::write_config(&run_dir, source.port(), label, &toml, &tables, &extra)?;
    log(&format!("lag run {label}: sluice -> {}", options.lag_target));
    let mut child = verify_bench::start_sluice(&options.sluice, &run_dir, &config)?;
    // The load tables copied and heartbeats measured before the load starts; the big table (if
    // selected) is still being copied.
    verify_bench::wait_for_status(
        &options.sluice,
        &run_dir,
        &config,
        &mut child,
        Duration::from_secs(600),
        |status| {
            let is_load = |t: &&serde_json::Value| t["target"].as_str().is_some_and(|s| s.starts_with("load"));
            let loads_ready = status["tables"].as_array().is_some_and(|t| {
                t.iter().filter(is_load).count() == LOAD_TABLES as usize
                    && t.iter().filter(is_load).all(|t| t["backfill"] == "ready")
            });
            loads_ready && status["lag"]["source"] == "heartbeat"
        },
    )?;
    let copied_before = copy_state(&options.sluice, &run_dir, &config)?;
    log(&format!(
        "lag run {label}: load of {} txn/s for {} s",
        options.lag_rate, options.lag_seconds
    ));
    // Each run inserts keys of its own.
    let first_key = if with_copy { 1_500_000_000 } else { 1_000_000_000 };
    let done = offer_load(
        source.port(),
        options.lag_rate,
        Duration::from_secs(options.lag_seconds),
        first_key,
    )?;
    // Let the last heartbeats be applied and a report persisted.
    std::thread::sleep(Duration::from_millis(2_500));
    let copied_after = copy_state(&options.sluice, &run_dir, &config)?;
    let report = {
        let cfg = sluice_engine::config::Config::load(&config)?;
        let mut target = sluice_engine::pipeline::open_target(&cfg)?;
        target.load_lag()?.context("no lag report in the target")?
    };
    let rss_kib = crate::apply::peak_rss_kib(child.id())?;
    verify_bench::stop(child)?;
    println!(
        "backfill_lag_run {label} target={} offered_txn_per_s={} achieved_txn_per_s={:.0} p50_ms={:.1} p99_ms={:.1} p999_ms={:.1} max_ms={:.1} samples={} copy_before={} copy_after={}",
        options.lag_target,
        options.lag_rate,
        done as f64 / options.lag_seconds as f64,
        report.p50_us as f64 / 1000.0,
        report.p99_us as f64 / 1000.0,
        report.p999_us as f64 / 1000.0,
        report.max_us as f64 / 1000.0,
        report.samples,
        copied_before,
        copied_after,
    );
    if with_copy && !copied_after.starts_with("copying") && !copied_after.starts_with("paused") {
        log("note: the copy ended before the load did; the figure covers part of the load without it");
    }
    Ok(serde_json::json!({
        "run": label,
        "target": options.lag_target,
        "offered_txn_per_s": options.lag_rate,
        "achieved_txn": done,
        "seconds": options.lag_seconds,
        "lag": report,
        "copy_before": copied_before,
        "copy_after": copied_after,
        "sluice_peak_rss_kib": rss_kib,
    }))
}

/// `state rows_copied` of `bench.sbtest1`'s copy, or `-` when it is not selected.
fn copy_state(sluice: &Path, dir: &Path, config: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(sluice)
        .current_dir(dir)
        .args(["status", "--json", "-c"])
        .arg(config)
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).context("status --json")?;
    Ok(status["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["target"] == "sbtest1"))
        .map(|t| {
            format!(
                "{}:{}",
                t["backfill"].as_str().unwrap_or("?"),
                t["backfill_rows_copied"]
            )
        })
        .unwrap_or_else(|| "-".into()))
}

/// Offers `rate` oltp_write_only-shaped transactions per second for `length` from
/// `LOAD_THREADS` connections, each on its own schedule (a late transaction does not make
/// the next one wait: the offered rate stays fixed); inserted keys start at `first_key`.
/// Returns the transactions done.
fn offer_load(port: u16, rate: u64, length: Duration, first_key: u64) -> anyhow::Result<u64> {
    let started = Instant::now();
    let threads: Vec<_> = (0..LOAD_THREADS)
        .map(|thread| {
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut conn = crate::apply::mysql_conn(port, Some("bench"))?;
                let interval = Duration::from_secs_f64(LOAD_THREADS as f64 / rate as f64);
                let mut n = 0u64;
                let mut next_insert = first_key + thread * 100_000_000;
                loop {
                    let due = started + interval * n as u32;
                    if due >= started + length {
                        return Ok(n);
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let table = 1 + (n + thread) % LOAD_TABLES;
                    let id = 1 + (n * 7919 + thread * 104_729) % LOAD_TABLE_ROWS;
                    next_insert += 1;
                    let mut attempt = 0;
                    loop {
                        let mut txn = || -> Result<(), mysql::Error> {
                            let mut tx = conn.start_transaction(mysql::TxOpts::default())?;
                            tx.exec_drop(format!("UPDATE load{table} SET k = k + 1 WHERE id = ?"), (id,))?;
                            tx.exec_drop(
                                format!("UPDATE load{table} SET c = ? WHERE id = ?"),
                                (format!("c-{n}-{thread}"), id % LOAD_TABLE_ROWS + 1),
                            )?;
                            tx.exec_drop(format!("DELETE FROM load{table} WHERE id = ?"), (next_insert - 1,))?;
                            tx.exec_drop(
                                format!("INSERT INTO load{table} (id, k, c, pad) VALUES (?, ?, ?, ?)"),
                                (next_insert, id, "c", "pad"),
                            )?;
                            tx.commit()
                        };
                        match txn() {
                            Ok(()) => break,
                            // Threads touch the same rows now and then: a deadlock or lock
                            // wait victim is retried, as sysbench does.
                            Err(mysql::Error::MySqlError(e)) if (e.code == 1213 || e.code == 1205) && attempt < 10 => {
                                attempt += 1;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();
    let mut done = 0;
    for t in threads {
        done += t.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
    }
    Ok(done)
}
