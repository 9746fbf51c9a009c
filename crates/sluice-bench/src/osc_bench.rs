//! `sluice-bench osc`: a managed schema change under load (issue #13). The real
//! `pt-online-schema-change` adds a column to a replicated table while a fixed-rate sysbench
//! write load runs; the stream's lag is measured beside the same load without a migration, and
//! the column-only copy that follows the swap beside the full-table copy of the same table, all
//! in one run.
//!
//! 1. A throwaway MariaDB source (binlog ROW, FULL image) gets `bench.sbtest1`, sysbench's
//!    table shape, of `--rows` rows written without the binary log (rows that exist before
//!    sluice starts).
//! 2. **Full copy.** The real `sluice run` (rule `bench.*`, `new_columns = "replicate"`,
//!    heartbeat every 100 ms) copies it into an empty SQLite file; timed from process start
//!    until the copy is done and the target caught up, and sluice's own rows/s from its
//!    `_sluice_backfill` record.
//! 3. **Lag without a migration.** sluice again (caught up), `sysbench oltp_write_only --rate`
//!    on the table for `--lag-seconds`; the lag percentiles are sluice's own report in
//!    `_sluice_lag` (every sample of that sluice process: the load and a few idle seconds).
//! 4. **Lag with a migration.** The same, and 5 s into the load `pt-online-schema-change
//!    --alter "ADD COLUMN extra INT NOT NULL DEFAULT 7" --execute` on the table. sluice follows
//!    the swap by running again, adds the column at the edge and fills it with a column-only
//!    copy; the load lasts at least `--lag-seconds` and until that copy is done. The column
//!    copy's rows/s is sluice's own `_sluice_backfill` record of it.
//! 5. `sluice verify` of the whole table (with sluice running), which must find the edge
//!    equal to the source; the sluice logs' warnings and errors are counted and shown.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql::prelude::Queryable;
use sluice_engine::target::BackfillProgress;

use crate::verify_bench;

pub struct Options {
    pub sluice: PathBuf,
    pub rows: u64,
    /// Length of the load of each lag run (the migration's run lasts longer if need be).
    pub lag_seconds: u64,
    /// Offered load, transactions per second.
    pub lag_rate: u64,
    pub json: bool,
}

/// sysbench client threads.
const THREADS: u64 = 4;
/// The migration.
const ALTER: &str = "ADD COLUMN extra INT NOT NULL DEFAULT 7";
/// Load before pt-online-schema-change starts, so the run starts from a steady stream.
const OSC_DELAY: Duration = Duration::from_secs(5);
const TABLE: &str = "sbtest1";

fn log(msg: &str) {
    eprintln!("[osc-bench] {msg}");
}

pub fn run(mut options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(options.lag_rate > 0, "--lag-rate must be above 0");
    anyhow::ensure!(options.lag_seconds > 0, "--lag-seconds must be above 0");
    options.sluice = options
        .sluice
        .canonicalize()
        .with_context(|| format!("{}", options.sluice.display()))?;
    let load_avg_before = std::fs::read_to_string("/proc/loadavg")?.trim().to_owned();
    log("starting the throwaway source");
    // The heartbeat needs its own grant.
    let (dir, source) = verify_bench::start_source("2G", &["CREATE, INSERT, UPDATE ON sluice.*"])?;
    let dir = dir.path();
    log(&format!(
        "filling bench.{TABLE} with {} rows (not in the binlog)",
        options.rows
    ));
    let fill_started = Instant::now();
    verify_bench::fill(&source, options.rows, false);
    log(&format!("filled in {:.1} s", fill_started.elapsed().as_secs_f64()));
    let versions = versions(source.port())?;

    let target_toml = verify_bench::start_target("sqlite", dir, &mut Vec::new(), &mut Vec::new())?;
    let config = verify_bench::write_config(
        dir,
        source.port(),
        "osc",
        &target_toml,
        &[],
        "[[tables]]\nmatch = \"bench.*\"\nnew_columns = \"replicate\"\n\n\
         [lag]\nheartbeat = true\ninterval_ms = 100\n# every sample of a run\nwindow_s = 3600\n",
    )?;

    // 2. The full copy.
    log("sluice run copies the table");
    let (full_wall_s, child) = verify_bench::backfill(&options.sluice, dir, &config)?;
    let full_cpu_s = crate::apply::process_cpu_s(child.id())?;
    verify_bench::stop(child)?;
    let full = copy_record(&config)?.context("no _sluice_backfill record of the copy")?;
    anyhow::ensure!(
        full.done && full.columns.is_empty() && full.rows_copied == options.rows,
        "unexpected copy record {full:?}"
    );
    println!(
        "osc_full_copy rows={} wall_s={full_wall_s:.1} wall_rows_per_s={:.0} sluice_rows_per_s={} sluice_cpu_s={full_cpu_s:.1}",
        options.rows,
        options.rows as f64 / full_wall_s,
        full.rows_per_s
    );

    // 3. Lag without a migration.
    log(&format!(
        "lag run without a migration: sysbench oltp_write_only --rate={} for {} s",
        options.lag_rate, options.lag_seconds
    ));
    let (without, load_without) =
        crate::apply::lag_run_with(&options.sluice, &config, &dir.join("without.log"), |child| {
            let load = Load::start(&options, source.port(), &dir.join("sysbench-without.log"))?;
            sleep_alive(child, Duration::from_secs(options.lag_seconds))?;
            load.stop()
        })?;
    print_lag_run("without_migration", &options, &without, &load_without, "");

    // 4. Lag with a migration.
    log("lag run with pt-online-schema-change");
    let (with, (load_with, migration)) =
        crate::apply::lag_run_with(&options.sluice, &config, &dir.join("with.log"), |child| {
            let load = Load::start(&options, source.port(), &dir.join("sysbench-with.log"))?;
            let migration = migrate(&options, child, dir, source.port(), &config)?;
            let length = Duration::from_secs(options.lag_seconds);
            if let Some(rest) = length.checked_sub(load.started.elapsed()) {
                sleep_alive(child, rest)?;
            }
            Ok((load.stop()?, migration))
        })?;
    print_lag_run(
        "with_migration",
        &options,
        &with,
        &load_with,
        &format!(
            " pt_osc_s={:.1} pt_osc_started_at_s={:.1}",
            migration.pt_osc_s,
            OSC_DELAY.as_secs_f64()
        ),
    );
    let column = &migration.column_copy;
    println!(
        "osc_column_copy rows={} columns={} sluice_rows_per_s={} swap_to_copy_seen_s={:.1} swap_to_copy_done_s={:.1} wall_rows_per_s_from_swap={:.0}",
        column.rows_copied,
        column.columns.join(","),
        column.rows_per_s,
        migration.copy_seen_s,
        migration.copy_done_s,
        column.rows_copied as f64 / migration.copy_done_s,
    );

    // 5. The edge against the source.
    log("sluice verify of the whole table (sluice running)");
    let verify = verify_edge(&options, dir, &config)?;
    println!(
        "osc_verify outcome={} exit={} source_rows={} edge_rows_with_extra_7={}",
        verify.outcome, verify.exit, verify.source_rows, verify.edge_extra_7
    );
    let logs =
        ["osc.log", "without.log", "with.log", "verify-run.log"].map(|name| (name, log_findings(&dir.join(name))));
    for (name, findings) in &logs {
        println!(
            "osc_sluice_log {name} warnings={} errors={} runs_again={}",
            findings.warnings.len(),
            findings.errors.len(),
            findings.runs_again
        );
        for line in findings.errors.iter().chain(&findings.warnings).take(10) {
            println!("  {line}");
        }
    }

    let load_avg_after = std::fs::read_to_string("/proc/loadavg")?.trim().to_owned();
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "lag without_migration_p99_ms={:.1} with_migration_p99_ms={:.1} ratio={:.2} (p50 {:.1} / {:.1}, p99.9 {:.1} / {:.1}, max {:.1} / {:.1} ms)",
        ms(without.report.p99_us),
        ms(with.report.p99_us),
        ratio(with.report.p99_us, without.report.p99_us),
        ms(without.report.p50_us),
        ms(with.report.p50_us),
        ms(without.report.p999_us),
        ms(with.report.p999_us),
        ms(without.report.max_us),
        ms(with.report.max_us),
    );
    println!(
        "backfill full_rows_per_s={} column_rows_per_s={} ratio={:.2} (sluice's own _sluice_backfill figures; full copy wall from process start {:.0} rows/s)",
        full.rows_per_s,
        column.rows_per_s,
        ratio(column.rows_per_s, full.rows_per_s),
        options.rows as f64 / full_wall_s
    );
    println!("osc_goal lag_p99_ratio<=2.0 column_rows_per_s>=300000 verify=equal");
    println!("osc_machine load_avg_before=\"{load_avg_before}\" load_avg_after=\"{load_avg_after}\"");
    if options.json {
        let lag_json = |run: &crate::apply::LagRun, load: &LoadFigures| {
            serde_json::json!({
                "lag": run.report,
                "load_s": run.load_s,
                "sluice_cpu_s": run.sluice_cpu_s,
                "sluice_peak_rss_kib": run.peak_rss_kib,
                "offered_txn_per_s": options.lag_rate,
                "achieved_txn_per_s": load.mean_tps,
                "sysbench_err_per_s": load.mean_err_per_s,
                "sysbench_intervals": load.intervals,
            })
        };
        let copy_json = |p: &BackfillProgress| serde_json::json!({"rows": p.rows_copied, "sluice_rows_per_s": p.rows_per_s, "columns": p.columns});
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "osc",
                "rows": options.rows,
                "alter": ALTER,
                "lag_seconds": options.lag_seconds,
                "offered_txn_per_s": options.lag_rate,
                "full_copy": {"wall_s": full_wall_s, "sluice_cpu_s": full_cpu_s, "record": copy_json(&full)},
                "without_migration": lag_json(&without, &load_without),
                "with_migration": lag_json(&with, &load_with),
                "pt_osc_s": migration.pt_osc_s,
                "column_copy": {
                    "record": copy_json(column),
                    "swap_to_copy_seen_s": migration.copy_seen_s,
                    "swap_to_copy_done_s": migration.copy_done_s,
                },
                "verify": {"outcome": verify.outcome, "exit": verify.exit, "source_rows": verify.source_rows,
                    "edge_rows_with_extra_7": verify.edge_extra_7},
                "sluice_logs": logs.iter().map(|(name, f)| serde_json::json!({
                    "log": name, "warnings": f.warnings, "errors": f.errors, "runs_again": f.runs_again,
                })).collect::<Vec<_>>(),
                "machine": {"load_avg_before": load_avg_before, "load_avg_after": load_avg_after,
                    "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "versions": versions},
            })
        );
    }
    drop(source);
    Ok(())
}

fn print_lag_run(label: &str, options: &Options, run: &crate::apply::LagRun, load: &LoadFigures, more: &str) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "osc_lag_run {label} offered_txn_per_s={} achieved_txn_per_s={:.0} sysbench_err_per_s={:.2} load_s={:.1} p50_ms={:.1} p99_ms={:.1} p999_ms={:.1} max_ms={:.1} samples={} sluice_cpu_s={:.1}{more}",
        options.lag_rate,
        load.mean_tps,
        load.mean_err_per_s,
        run.load_s,
        ms(run.report.p50_us),
        ms(run.report.p99_us),
        ms(run.report.p999_us),
        ms(run.report.max_us),
        run.report.samples,
        run.sluice_cpu_s,
    );
}

/// The target's `_sluice_backfill` record of the table.
fn copy_record(config: &Path) -> anyhow::Result<Option<BackfillProgress>> {
    let cfg = sluice_engine::config::Config::load(config)?;
    let mut target = sluice_engine::pipeline::open_target(&cfg)?;
    Ok(target.load_backfill()?.into_iter().find(|p| p.table == TABLE))
}

/// Sleeps `length`, failing as soon as sluice exits.
fn sleep_alive(child: &mut Child, length: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + length;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            bail!("sluice exited ({status})");
        }
        std::thread::sleep(Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// A running `sysbench oltp_write_only` at a fixed rate, until stopped.
struct Load {
    child: Child,
    out: PathBuf,
    started: Instant,
}

struct LoadFigures {
    /// Mean of sysbench's per-second reports.
    mean_tps: f64,
    mean_err_per_s: f64,
    intervals: usize,
}

impl Load {
    fn start(options: &Options, port: u16, out: &Path) -> anyhow::Result<Load> {
        let file = File::create(out)?;
        let child = Command::new("sysbench")
            .args([
                "oltp_write_only",
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                &format!("--mysql-port={port}"),
                "--mysql-user=root",
                "--mysql-password=",
                "--mysql-db=bench",
                "--tables=1",
                &format!("--table-size={}", options.rows),
                &format!("--threads={THREADS}"),
                &format!("--rate={}", options.lag_rate),
                // Until stopped.
                "--time=0",
                "--events=0",
                "--report-interval=1",
                // Without this, a thread that meets an error (a lock wait timeout, or 1146 from
                // the tool's trigger while it drops its shadow table) ends and can leave its
                // locks behind; errors are counted in err/s instead.
                "--mysql-ignore-errors=1146,1205,1213,1020",
                "run",
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("run sysbench (Debian package sysbench)")?;
        Ok(Load {
            child,
            out: out.to_owned(),
            started: Instant::now(),
        })
    }

    fn stop(mut self) -> anyhow::Result<LoadFigures> {
        if let Some(status) = self.child.try_wait()? {
            bail!("sysbench ended early ({status}); see {}", self.out.display());
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.out)?;
        let field = |line: &str, name: &str| -> Option<f64> {
            let rest = &line[line.find(name)? + name.len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        let (mut tps, mut err, mut n) = (0.0, 0.0, 0);
        for line in text.lines().filter(|l| l.starts_with('[') && l.contains(" tps: ")) {
            tps += field(line, " tps: ").unwrap_or(0.0);
            err += field(line, " err/s: ").unwrap_or(0.0);
            n += 1;
        }
        anyhow::ensure!(n > 0, "no sysbench reports in {}", self.out.display());
        Ok(LoadFigures {
            mean_tps: tps / n as f64,
            mean_err_per_s: err / n as f64,
            intervals: n,
        })
    }
}

struct Migration {
    pt_osc_s: f64,
    /// sluice's record of the column-only copy once done.
    column_copy: BackfillProgress,
    /// Seconds from the end of pt-online-schema-change (just after its swap) until the column
    /// copy's first record, and until its record says done.
    copy_seen_s: f64,
    copy_done_s: f64,
}

/// Runs pt-online-schema-change on the table `OSC_DELAY` into the load, then waits for sluice's
/// column-only copy of the new column to be done.
fn migrate(options: &Options, child: &mut Child, dir: &Path, port: u16, config: &Path) -> anyhow::Result<Migration> {
    sleep_alive(child, OSC_DELAY)?;
    log(&format!("pt-online-schema-change --alter {ALTER:?} --execute"));
    let started = Instant::now();
    let out = Command::new("pt-online-schema-change")
        .args([
            "--alter",
            ALTER,
            "--execute",
            "--no-check-replication-filters",
            "--recursion-method=none",
            "--no-version-check",
            // Fixed 1,000-row nibbles: with the adaptive default (0.5 s per chunk) the nibbles
            // grew to ~80,000 rows, and a nibble's `LOCK IN SHARE MODE` against sysbench's
            // writers hit a lock wait timeout, failing the tool (1M rows, 500 txn/s).
            "--chunk-size=1000",
            "--chunk-time=0",
        ])
        .arg(format!("h=127.0.0.1,P={port},u=root,D=bench,t={TABLE}"))
        .stdin(Stdio::null())
        .output()
        .context("run pt-online-schema-change (Debian package percona-toolkit)")?;
    let pt_osc_s = started.elapsed().as_secs_f64();
    let swapped = Instant::now();
    std::fs::write(dir.join("pt-osc.log"), [&out.stdout[..], &out.stderr[..]].concat())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("Swapped original and new tables OK") {
        bail!(
            "pt-online-schema-change failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    log(&format!(
        "pt-online-schema-change done in {pt_osc_s:.1} s; waiting for the column copy"
    ));
    let cfg = sluice_engine::config::Config::load(config)?;
    let mut target = sluice_engine::pipeline::open_target(&cfg)?;
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("sluice exited ({status}) after the swap");
        }
        // Read errors (the edge table being altered) are retried.
        if let Some(p) = target
            .load_backfill()
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.table == TABLE && !p.columns.is_empty())
        {
            let seen_s = *seen.get_or_insert_with(|| swapped.elapsed().as_secs_f64());
            if let Some(error) = &p.error {
                bail!("the column copy failed: {error}");
            }
            if p.done {
                let copy_done_s = swapped.elapsed().as_secs_f64();
                log(&format!(
                    "column copy of {} done {copy_done_s:.1} s after the swap",
                    p.columns.join(",")
                ));
                return Ok(Migration {
                    pt_osc_s,
                    column_copy: p,
                    copy_seen_s: seen_s,
                    copy_done_s,
                });
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no finished column copy 30 min after the swap (rows={})",
            options.rows
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Verify {
    outcome: String,
    exit: i32,
    source_rows: u64,
    edge_extra_7: i64,
}

/// `sluice verify` of the whole table while sluice runs, and a count of the edge rows whose new
/// column holds the DEFAULT the tool gave existing rows.
fn verify_edge(options: &Options, dir: &Path, config: &Path) -> anyhow::Result<Verify> {
    let verify_config = dir.join("verify-run.toml");
    std::fs::copy(config, &verify_config)?;
    let child = verify_bench::start_sluice(&options.sluice, dir, &verify_config)?;
    let out = Command::new(&options.sluice)
        .current_dir(dir)
        .args(["verify", "--json", "-c"])
        .arg(config)
        .stderr(Stdio::inherit())
        .output()
        .context("sluice verify")?;
    verify_bench::stop(child)?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("verify --json output: {}", String::from_utf8_lossy(&out.stdout)))?;
    let table = report
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["table"].as_str().is_some_and(|n| n.ends_with(TABLE)))
        })
        .unwrap_or(&report[0]);
    let edge = rusqlite::Connection::open(dir.join("edge.sqlite"))?;
    let edge_extra_7: i64 = edge.query_row(&format!("SELECT COUNT(*) FROM \"{TABLE}\" WHERE extra = 7"), [], |r| {
        r.get(0)
    })?;
    Ok(Verify {
        outcome: table["outcome"].as_str().unwrap_or("?").to_owned(),
        exit: out.status.code().unwrap_or(-1),
        source_rows: table["source_rows"].as_u64().unwrap_or(0),
        edge_extra_7,
    })
}

/// Warnings and errors in a sluice log, and how many times the run ended to run again.
#[derive(Default)]
struct LogFindings {
    warnings: Vec<String>,
    errors: Vec<String>,
    runs_again: usize,
}

fn log_findings(path: &Path) -> LogFindings {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut f = LogFindings::default();
    for line in text.lines() {
        if line.contains(" ERROR ") {
            f.errors.push(line.to_owned());
        } else if line.contains(" WARN ") {
            f.warnings.push(line.to_owned());
        }
        if line.contains("adds column") {
            f.runs_again += 1;
        }
    }
    f
}

/// The versions of the programs measured against.
fn versions(port: u16) -> anyhow::Result<serde_json::Value> {
    let mut conn = crate::apply::mysql_conn(port, None)?;
    let mariadb: Option<String> = conn.query_first("SELECT VERSION()")?;
    let version = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    Ok(serde_json::json!({
        "mariadb": mariadb,
        "sysbench": version("sysbench"),
        "pt_online_schema_change": version("pt-online-schema-change"),
    }))
}
