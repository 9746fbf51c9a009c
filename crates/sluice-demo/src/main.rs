//! `sluice-demo`: sluice's showcase.
//!
//! Starts a throwaway MariaDB with a small shop, replicates a filtered, PII-scrubbed slice
//! of it into SQLite with sluice's engine (in-process) while several connections write to
//! it, waits for sluice to catch up, stops it cleanly, and compares source and target table
//! by table (row counts and checksums computed independently on each side).
//!
//! The last line of output is `OK: …` (exit 0), `MISMATCH: …` (the target differs from the
//! source; exit 1) or `ERROR: …` (the demo could not run to the end; exit 1).

mod rng;
mod shop;
mod verify;
mod workload;

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use sluice_binlog::GtidPosition;
use sluice_engine::apply::Progress;
use sluice_engine::config::Config;
use sluice_engine::ops::status::LiveStatus;
use sluice_engine::pipeline::{self, RunError, RunOptions};
use sluice_testkit::MariaDb;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::rng::Rng;
use crate::shop::REPLICATED;
use crate::workload::{Shared, Worker};

/// How long sluice may take to connect, and to catch up after the load.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Marks a directory as the demo's own, so `--dir` never wipes anything else.
const DIR_MARKER: &str = ".sluice-demo";
/// The time zone of the load's sessions: TIMESTAMPs are written in it and compared in UTC.
const LOAD_TIME_ZONE: &str = "+02:00";

#[derive(Parser)]
#[command(
    name = "sluice-demo",
    version,
    about = "Replicate a live MariaDB shop into SQLite with sluice (filtered, PII-scrubbed), then verify it"
)]
struct Args {
    /// Work directory for the config, the password file, the SQLite target and sluice's log.
    /// Wiped at start (only if empty or created by an earlier sluice-demo run).
    #[arg(long, default_value = "demo-output")]
    dir: PathBuf,
    /// How long the write load runs, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Source transactions per second to aim for, over all connections.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    rate: u64,
    /// Concurrent source connections writing the load.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    connections: u64,
    /// After the verdict, keep the source, sluice and its status page running (until Ctrl-C)
    /// to explore them with `sluice status`, `sluice verify` and a browser.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => None,
            result = run(args) => Some(result),
        }
    });
    // Dropping the demo (above) stopped the load, told sluice to stop (its shutdown sender
    // is gone) and stopped the source; give sluice a moment to finish its last commit.
    runtime.shutdown_timeout(Duration::from_secs(10));
    match result {
        None => {
            println!();
            println!("ERROR: interrupted; the load, sluice and the source server were stopped");
            ExitCode::from(130)
        }
        Some(Ok(verdict)) => {
            println!("{}", verdict.line);
            if verdict.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Some(Err(err)) => {
            println!("ERROR: {err:#}");
            ExitCode::from(1)
        }
    }
}

struct Verdict {
    ok: bool,
    line: String,
}

/// A progress display: one line rewritten in place on a terminal, a line per update otherwise.
struct StatusLine {
    tty: bool,
    open: bool,
}

impl StatusLine {
    fn new() -> StatusLine {
        StatusLine {
            tty: std::io::stdout().is_terminal(),
            open: false,
        }
    }

    fn show(&mut self, line: &str) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{line}");
            self.open = true;
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }

    fn done(&mut self) {
        if self.open {
            println!();
            self.open = false;
        }
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .map(|group| std::str::from_utf8(group).expect("ASCII digits"))
        .collect();
    groups.reverse();
    groups.join(",")
}

fn seq0(position: &GtidPosition) -> u64 {
    position.get(0).map_or(0, |g| g.sequence)
}

/// Wipes and recreates the work directory; refuses to wipe anything the demo didn't create.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        if !dir.is_dir() {
            bail!("--dir {} exists and is not a directory", dir.display());
        }
        let empty = fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(DIR_MARKER).exists() {
            bail!(
                "--dir {} is not empty and was not created by sluice-demo (no {DIR_MARKER} file); \
                 refusing to wipe it. Pick another --dir, or remove it yourself",
                dir.display()
            );
        }
        fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(
        dir.join(DIR_MARKER),
        "sluice-demo work directory; wiped by the next run\n",
    )?;
    Ok(dir.canonicalize()?)
}

/// Sends the engine's logs to `<dir>/sluice.log` (level from `SLUICE_LOG`, default info).
fn init_logging(path: &Path) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow!("cannot set up logging: {e}"))
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(())
}

/// Connection options for root on the source, over TCP, with `init` statements.
fn root_opts(db: &MariaDb, init: Vec<String>) -> Opts {
    OptsBuilder::from_opts(db.opts()).prefer_socket(false).init(init).into()
}

async fn source_position(conn: &mut Conn) -> anyhow::Result<GtidPosition> {
    let text: Option<String> = conn.query_first("SELECT @@global.gtid_binlog_pos").await?;
    let text = text.unwrap_or_default();
    text.parse()
        .map_err(|e| anyhow!("source @@gtid_binlog_pos {text:?}: {e}"))
}

/// The demo's source is MariaDB, so its position is a MariaDB one.
fn applied_position(progress: &Progress) -> GtidPosition {
    match &*progress.applied_position.lock().expect("progress lock") {
        sluice_binlog::SourcePosition::Mariadb(p) => p.clone(),
        sluice_binlog::SourcePosition::Mysql(_) => GtidPosition::new(),
    }
}

/// The result of the sluice task once it has ended.
async fn sluice_outcome(handle: &mut JoinHandle<Result<(), RunError>>) -> anyhow::Result<()> {
    match handle.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("sluice stopped with an error ({:?}): {e}", e.kind())),
        Err(e) => Err(anyhow!("the sluice task failed: {e}")),
    }
}

/// How many source commits the load generator recorded that sluice has not applied yet,
/// and the age of the oldest of them (now − when its COMMIT returned). Forgets applied ones.
fn unapplied(shared: &Shared, applied: u64, now: Instant) -> (u64, Duration) {
    let mut commits = shared.commits.lock().expect("commits lock");
    *commits = commits.split_off(&(applied + 1));
    let oldest = commits
        .first_key_value()
        .map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(*at));
    (commits.len() as u64, oldest)
}

/// The largest lag seen since the display last took it.
#[derive(Default)]
struct LagPeak {
    txns: AtomicU64,
    micros: AtomicU64,
}

/// Samples the lag every 10 ms (a once-per-second sample alone would nearly always miss it).
async fn watch_lag(shared: Arc<Shared>, progress: Arc<Progress>, peak: Arc<LagPeak>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    loop {
        ticks.tick().await;
        let (txns, age) = unapplied(&shared, seq0(&applied_position(&progress)), Instant::now());
        peak.txns.fetch_max(txns, Ordering::Relaxed);
        peak.micros.fetch_max(age.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Samples source and sluice once per second for the progress line, and keeps the lag
/// statistics for the summary.
struct Monitor {
    conn: Conn,
    progress: Arc<Progress>,
    shared: Arc<Shared>,
    start: Instant,
    previous: Counters,
    peak: Arc<LagPeak>,
    max_lag_txns: u64,
    max_lag: Duration,
    peak_sum: Duration,
    samples: u32,
    peak_applied_per_s: f64,
}

struct Sample {
    line: String,
}

/// Counter values at the previous sample, for per-second rates.
#[derive(Clone, Copy)]
struct Counters {
    at: Instant,
    written: u64,
    replicated: u64,
    applied: u64,
}

impl Counters {
    fn now(shared: &Shared, progress: &Progress) -> Counters {
        let replicated = shared.stats.rows_replicated.load(Ordering::Relaxed);
        Counters {
            at: Instant::now(),
            written: replicated + shared.stats.rows_unreplicated.load(Ordering::Relaxed),
            replicated,
            applied: progress.rows_applied.load(Ordering::Relaxed),
        }
    }
}

impl Monitor {
    async fn sample(&mut self) -> anyhow::Result<Sample> {
        // Applied first, then the source: the source can only be further along.
        let applied = applied_position(&self.progress);
        let rows_applied = self.progress.rows_applied.load(Ordering::Relaxed);
        let source = source_position(&mut self.conn).await?;
        let now = Instant::now();
        let lag_txns = seq0(&source).saturating_sub(seq0(&applied));
        let (_, lag) = unapplied(&self.shared, seq0(&applied), now);
        // The peak since the previous tick, from the 10 ms watcher, and this sample itself.
        let peak_txns = self.peak.txns.swap(0, Ordering::Relaxed).max(lag_txns);
        let peak = Duration::from_micros(self.peak.micros.swap(0, Ordering::Relaxed)).max(lag);
        let stats = &self.shared.stats;
        let txns = stats.txns.load(Ordering::Relaxed);
        let replicated = stats.rows_replicated.load(Ordering::Relaxed);
        let written = replicated + stats.rows_unreplicated.load(Ordering::Relaxed);
        let previous = self.previous;
        let secs = now.duration_since(previous.at).as_secs_f64().max(1e-3);
        let written_rate = (written - previous.written) as f64 / secs;
        let replicated_rate = (replicated - previous.replicated) as f64 / secs;
        let applied_rate = (rows_applied - previous.applied) as f64 / secs;
        self.previous = Counters {
            at: now,
            written,
            replicated,
            applied: rows_applied,
        };
        self.max_lag_txns = self.max_lag_txns.max(peak_txns);
        self.max_lag = self.max_lag.max(peak);
        self.peak_sum += peak;
        self.samples += 1;
        self.peak_applied_per_s = self.peak_applied_per_s.max(applied_rate);
        Ok(Sample {
            line: format!(
                "  {:>5.1}s | source {:>7} txns, {:>6} rows/s ({:>6}/s replicated) | applied {:>8} rows, {:>6}/s | \
                 lag now {:>3} txns {:>5.1} ms, 1 s peak {:>3} txns {:>5.1} ms",
                now.duration_since(self.start).as_secs_f64(),
                thousands(txns),
                thousands(written_rate.round() as u64),
                thousands(replicated_rate.round() as u64),
                thousands(rows_applied),
                thousands(applied_rate.round() as u64),
                lag_txns,
                lag.as_secs_f64() * 1000.0,
                peak_txns,
                peak.as_secs_f64() * 1000.0
            ),
        })
    }
}

async fn run(args: Args) -> anyhow::Result<Verdict> {
    let dir = prepare_dir(&args.dir)?;
    let log_path = dir.join("sluice.log");
    init_logging(&log_path)?;
    let config_path = dir.join(shop::CONFIG_FILE);
    let target_path = dir.join(shop::TARGET_FILE);

    println!("sluice demo: a live MariaDB shop replicated into SQLite, filtered and PII-scrubbed, then verified.");
    println!();

    // 1. The source.
    let db = tokio::task::spawn_blocking(MariaDb::start)
        .await
        .map_err(|e| anyhow!("could not start a MariaDB server (is mariadb-server installed?): {e}"))?;
    db.exec(shop::SCHEMA_SQL);
    {
        let password = Rng::from_os(u64::from(std::process::id())).alphanumeric(24);
        db.create_user(shop::REPL_USER, &password, shop::REPL_GRANTS);
        write_secret(&dir.join(shop::PASSWORD_FILE), &password)?;
    }
    let mut admin = Conn::new(root_opts(&db, Vec::new()))
        .await
        .context("connecting to the source")?;
    let version: Option<String> = admin.query_first("SELECT VERSION()").await?;
    println!(
        "[1/6] Source: throwaway MariaDB {} on 127.0.0.1:{} (ROW binlog, GTIDs)",
        version.unwrap_or_default(),
        db.port()
    );
    println!("      schema shop: shops, customers, orders, order_lines, sessions");
    println!(
        "      replication user {} (REPLICATION SLAVE, BINLOG MONITOR, SELECT); its password is in {}, never printed",
        shop::REPL_USER,
        dir.join(shop::PASSWORD_FILE).display()
    );

    // 2. The config.
    let status_port = free_port()?;
    fs::write(&config_path, shop::config_toml(db.port(), status_port))?;
    let config = Arc::new(Config::load(&config_path).context("loading the demo's config")?);
    println!("[2/6] Config: {}", config_path.display());
    for line in shop::config_toml(db.port(), status_port)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        println!("      {line}");
    }

    // 3. sluice, in-process, with its status page.
    let progress = Arc::new(Progress::default());
    let live = LiveStatus::new(config.clone(), progress.clone());
    let status_addr = config
        .metrics
        .listen_addr()?
        .context("the demo config sets [metrics] listen")?;
    let _status_page = sluice_engine::ops::metrics::serve(status_addr, live).await?;
    let (shutdown_tx, connected_rx, mut sluice) = start_sluice(config.clone(), progress.clone());
    tokio::select! {
        connected = connected_rx => {
            if connected.is_err() {
                sluice_outcome(&mut sluice).await?;
                bail!("sluice stopped before connecting to the source");
            }
        }
        _ = tokio::time::sleep(CONNECT_TIMEOUT) => bail!("sluice did not connect within {CONNECT_TIMEOUT:?}"),
    }
    println!(
        "[3/6] sluice: running in-process, streaming the binlog from GTID {} (log: {})",
        applied_position(&progress),
        log_path.display()
    );
    println!("      status page: http://{status_addr}/ (Prometheus metrics on /metrics)");

    // 4. Seed, then the load.
    let shared = Arc::new(Shared::new());
    let load_init = vec![
        format!("SET SESSION time_zone = '{LOAD_TIME_ZONE}'"),
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
    ];
    let load_opts = root_opts(&db, load_init);
    let mut seeder = Worker::connect(load_opts.clone(), shared.clone(), 0).await?;
    let seeded = seeder.seed().await.context("seeding the shop")?;
    seeder.disconnect().await;
    println!(
        "[4/6] Load: seeded {} shops, {} customers, {} orders with {} lines ({} transactions); now {} connections \
         at ~{} txns/s for {} s",
        seeded.shops,
        seeded.customers,
        seeded.orders,
        thousands(seeded.lines),
        seeded.txns,
        args.connections,
        args.rate,
        args.seconds
    );
    let mix: Vec<String> = workload::KINDS
        .iter()
        .map(|(kind, weight)| format!("{weight}% {}", kind.describe()))
        .collect();
    println!("      mix: {}", mix[..4].join(", "));
    println!("           {}", mix[4..].join(", "));
    let mut workers = JoinSet::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let period = Duration::from_secs_f64(args.connections as f64 / args.rate as f64);
    for i in 0..args.connections {
        let worker = Worker::connect(load_opts.clone(), shared.clone(), i + 1).await?;
        let first = start + period.mul_f64(i as f64 / args.connections as f64);
        workers.spawn(workload::run(worker, first, period, deadline));
    }
    let lag_peak = Arc::new(LagPeak::default());
    let lag_watch = tokio::spawn(watch_lag(shared.clone(), progress.clone(), lag_peak.clone()));
    let mut monitor = Monitor {
        conn: admin,
        progress: progress.clone(),
        shared: shared.clone(),
        start,
        previous: Counters::now(&shared, &progress),
        peak: lag_peak.clone(),
        max_lag_txns: 0,
        max_lag: Duration::ZERO,
        peak_sum: Duration::ZERO,
        samples: 0,
        peak_applied_per_s: 0.0,
    };
    let applied_at_start = monitor.previous.applied;
    let mut status = StatusLine::new();
    let mut ticks = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let sample = monitor.sample().await?;
                status.show(&sample.line);
            }
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    status.done();
                    shared.stop.store(true, Ordering::Relaxed);
                    return Err(e.context("the load failed"));
                }
                Some(Err(e)) => {
                    status.done();
                    bail!("a load worker failed: {e}");
                }
            },
        }
        if sluice.is_finished() {
            status.done();
            shared.stop.store(true, Ordering::Relaxed);
            sluice_outcome(&mut sluice).await?;
            bail!("sluice stopped during the load");
        }
    }
    let load_time = start.elapsed();
    status.done();
    lag_watch.abort();
    let stats = &shared.stats;
    let txns = stats.txns.load(Ordering::Relaxed);
    let rows_replicated = stats.rows_replicated.load(Ordering::Relaxed);
    let rows_unreplicated = stats.rows_unreplicated.load(Ordering::Relaxed);
    let load_txns = txns - seeded.txns;
    let load_rows = rows_replicated + rows_unreplicated - seeded.rows;
    println!(
        "      load done: {} transactions ({:.0}/s), {} row changes ({:.0}/s) in {:.1} s; {} rolled back on a deadlock and retried",
        thousands(load_txns),
        load_txns as f64 / load_time.as_secs_f64(),
        thousands(load_rows),
        load_rows as f64 / load_time.as_secs_f64(),
        load_time.as_secs_f64(),
        stats.retries.load(Ordering::Relaxed)
    );

    // 5. Catch up, then stop sluice cleanly.
    let source_final = source_position(&mut monitor.conn).await?;
    let catch_up = Instant::now();
    loop {
        if applied_position(&progress) == source_final {
            break;
        }
        if sluice.is_finished() {
            sluice_outcome(&mut sluice).await?;
            bail!("sluice stopped before catching up");
        }
        if catch_up.elapsed() > CATCH_UP_TIMEOUT {
            bail!(
                "sluice did not catch up within {CATCH_UP_TIMEOUT:?}: applied {}, source {source_final}",
                applied_position(&progress)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let catch_up_time = catch_up.elapsed();
    let rows_applied = progress.rows_applied.load(Ordering::Relaxed);
    let during_load = rows_applied - applied_at_start;
    println!(
        "[5/6] Caught up: sluice's applied position {source_final} = source @@gtid_binlog_pos, {} ms after the load stopped",
        catch_up_time.as_millis()
    );
    println!(
        "      sluice applied {} row changes ({:.0}/s during the load, best second {:.0}/s); lag peak {} txns / {:.1} ms, \
         mean of the 1 s peaks {:.1} ms",
        thousands(rows_applied),
        during_load as f64 / load_time.as_secs_f64(),
        monitor.peak_applied_per_s,
        monitor.max_lag_txns,
        monitor.max_lag.as_secs_f64() * 1000.0,
        (monitor.peak_sum / monitor.samples.max(1)).as_secs_f64() * 1000.0
    );
    let _ = shutdown_tx.send(());
    match tokio::time::timeout(STOP_TIMEOUT, sluice_outcome(&mut sluice)).await {
        Ok(result) => result?,
        Err(_) => bail!("sluice did not stop within {STOP_TIMEOUT:?}"),
    }
    println!("      sluice stopped cleanly");

    // 6. Compare.
    let mut admin = monitor.conn;
    admin.query_drop("SET SESSION time_zone = '+00:00'").await?;
    let target = rusqlite::Connection::open_with_flags(&target_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", target_path.display()))?;
    let mut reports = Vec::new();
    for spec in REPLICATED {
        reports.push(
            verify::compare_table(&mut admin, &target, spec)
                .await
                .with_context(|| format!("comparing {}", spec.name))?,
        );
    }
    let checkpoint = verify::target_checkpoint(&target)?;
    let target_tables = verify::target_tables(&target)?;
    drop(target);
    let emails = verify::count_in_files(&target_path, shop::EMAIL_DOMAIN)?;
    let phones = verify::count_in_files(&target_path, shop::PHONE_PREFIX)?;
    let sessions_rows: Option<String> = admin
        .query_first(format!("SELECT COUNT(*) FROM shop.{}", shop::UNREPLICATED))
        .await?;
    let _ = admin.disconnect().await;

    println!("[6/6] Verify: each side read independently in key order; checksum = SHA-256 over the replicated columns' canonical values");
    println!("      (source: MariaDB's text output, time_zone '+00:00', fractions as in docs/type-mapping.md; target: SQLite values as stored)");
    println!();
    print_reports(&reports);
    println!();

    let mut problems = Vec::new();
    for report in &reports {
        if let Some(problem) = &report.problem {
            problems.push(format!("{}: {problem}", report.table));
        }
    }
    let expected_tables: Vec<String> = {
        let mut names: Vec<String> = REPLICATED.iter().map(|t| t.name.to_owned()).collect();
        names.sort();
        names
    };
    let pii_columns: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.columns
                .iter()
                .filter(|c| r.excluded.iter().any(|x| x.eq_ignore_ascii_case(c)))
                .map(move |c| format!("{}.{c}", r.table))
        })
        .collect();
    let checkpoint_ok = checkpoint.as_deref() == Some(source_final.to_string().as_str());
    println!(
        "  checkpoint: {} in the target = source position {source_final}: {}",
        checkpoint.as_deref().unwrap_or("(none)"),
        if checkpoint_ok { "yes" } else { "NO" }
    );
    if !checkpoint_ok {
        problems.push(format!(
            "target checkpoint {:?} is not the source position {source_final}",
            checkpoint
        ));
    }
    println!(
        "  PII: customers.email and customers.phone are not target columns: {}; \"{}\" / \"{}\" found in the SQLite files: {emails} / {phones} times",
        if pii_columns.is_empty() { "yes" } else { "NO" },
        shop::EMAIL_DOMAIN,
        shop::PHONE_PREFIX
    );
    if !pii_columns.is_empty() {
        problems.push(format!("excluded columns at the target: {}", pii_columns.join(", ")));
    }
    if emails + phones > 0 {
        problems.push(format!(
            "personal data in the target file ({emails} email addresses, {phones} phone numbers)"
        ));
    }
    println!(
        "  filtering: shop.{} got {} row changes ({} rows now) and is not in the target: {}; target tables: {}",
        shop::UNREPLICATED,
        thousands(rows_unreplicated),
        sessions_rows.unwrap_or_default(),
        if target_tables == expected_tables { "yes" } else { "NO" },
        target_tables.join(", ")
    );
    if target_tables != expected_tables {
        problems.push(format!(
            "target tables are {target_tables:?}, expected {expected_tables:?}"
        ));
    }
    println!(
        "  row changes written to replicated tables: {}; applied by sluice: {}{}",
        thousands(rows_replicated),
        thousands(rows_applied),
        if rows_replicated == rows_applied {
            ""
        } else {
            " (differ: the counts are informational; the table comparison above is the check)"
        }
    );

    println!();
    println!(
        "Explore the replica ({}):",
        match args.keep {
            true => "the source and sluice keep running, see below",
            false => "the source server is gone; the SQLite file stays; --keep keeps them",
        }
    );
    println!(
        "  sqlite3 {} 'select status, count(*) from orders group by status'",
        target_path.display()
    );
    println!(
        "  sqlite3 -header {} 'select * from customers limit 3'",
        target_path.display()
    );
    println!(
        "  config: {}   sluice log: {}",
        config_path.display(),
        log_path.display()
    );

    if args.keep {
        // The verdict first, then sluice again from its checkpoint, until Ctrl-C.
        println!();
        println!("{}", verdict_line(&problems, &reports, &target_path));
        let (_shutdown, connected, _sluice) = start_sluice(config.clone(), progress.clone());
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, connected).await;
        println!();
        println!(
            "--keep: the source (127.0.0.1:{}), sluice and its status page keep running until Ctrl-C:",
            db.port()
        );
        println!("  open http://{status_addr}/ in a browser");
        println!("  sluice status -c {}", config_path.display());
        println!("  sluice verify -c {}", config_path.display());
        println!(
            "  mariadb -h127.0.0.1 -P{} -uroot shop   # write something, watch it arrive",
            db.port()
        );
        let _ = tokio::signal::ctrl_c().await;
        tokio::task::spawn_blocking(move || drop(db)).await?;
        return Ok(Verdict {
            ok: problems.is_empty(),
            line: "stopped (--keep)".into(),
        });
    }

    // The source goes away before the verdict, so that the verdict is the last line.
    tokio::task::spawn_blocking(move || drop(db)).await?;

    Ok(Verdict {
        ok: problems.is_empty(),
        line: verdict_line(&problems, &reports, &target_path),
    })
}

/// The demo's last line: `OK: …` or `MISMATCH: …`.
fn verdict_line(problems: &[String], reports: &[verify::TableReport], target_path: &Path) -> String {
    let total_rows: usize = reports.iter().map(|r| r.source_rows).sum();
    match problems.is_empty() {
        true => format!(
            "OK: {} tables equal ({} rows), target: {}",
            reports.len(),
            thousands(total_rows as u64),
            target_path.display()
        ),
        false => format!("MISMATCH: {}", problems.join("; ")),
    }
}

type SluiceTask = JoinHandle<Result<(), RunError>>;

/// Runs sluice in-process: its stop sender (dropping it stops sluice too), a receiver that
/// fires once the stream is connected, and the task.
fn start_sluice(
    config: Arc<Config>,
    progress: Arc<Progress>,
) -> (oneshot::Sender<()>, oneshot::Receiver<()>, SluiceTask) {
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (connected_tx, connected_rx) = oneshot::channel();
    let options = RunOptions {
        progress,
        connected: Some(connected_tx),
    };
    let task = tokio::spawn(async move {
        // Stops when told to, or when the demo is dropped (Ctrl-C) and the sender with it.
        let shutdown = async {
            let _ = shutdown_rx.await;
        };
        pipeline::run(&config, options, shutdown).await
    });
    (shutdown_tx, connected_rx, task)
}

/// A TCP port free on 127.0.0.1 now (for the status page).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port for the status page")?;
    Ok(listener.local_addr()?.port())
}

fn print_reports(reports: &[verify::TableReport]) {
    println!(
        "  {:<12} {:>11} {:>11}  {:<26} {:<16} {:<16} result",
        "table", "source rows", "target rows", "columns", "source checksum", "target checksum"
    );
    for r in reports {
        let columns = if r.excluded.is_empty() {
            format!("{} of {}", r.columns.len(), r.source_columns)
        } else {
            format!(
                "{} of {} (no {})",
                r.columns.len(),
                r.source_columns,
                r.excluded.join(", ")
            )
        };
        let short = |s: &str| s.chars().take(16).collect::<String>();
        println!(
            "  {:<12} {:>11} {:>11}  {:<26} {:<16} {:<16} {}",
            r.table,
            thousands(r.source_rows as u64),
            r.target_rows.map_or("-".to_owned(), |n| thousands(n as u64)),
            columns,
            short(&r.source_sum),
            r.target_sum.as_deref().map_or("-".to_owned(), short),
            if r.problem.is_none() { "equal" } else { "DIFFERENT" }
        );
        if let Some(problem) = &r.problem {
            println!("      {problem}");
        }
    }
}
