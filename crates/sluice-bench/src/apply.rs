//! The apply benchmark's measuring programs (driven by `scripts/bench-apply`; see
//! bench/README.md):
//!
//! * `catchup`: runs the real `sluice run` on a config until the target's checkpoint covers a
//!   GTID position, and reports wall seconds, sluice's CPU seconds and peak RSS.
//! * `replica-catchup`: `START SLAVE` on a native MariaDB replica and the time until its
//!   `gtid_slave_pos` covers the same position (and the replica server's CPU seconds).
//! * `bulk`: the target's bulk-ingest ceiling for the same row images (multi-row INSERT on
//!   MariaDB, COPY on PostgreSQL, one prepared INSERT in one transaction on SQLite).
//! * `lag-run`: sluice with heartbeats while sysbench offers a fixed rate; reports the lag
//!   percentiles sluice recorded in the target.
//! * `postgres`: a throwaway PostgreSQL (durable settings) held like `source`.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::{EventBody, EventDecoder, GtidPosition, RowChange, TableDef, Value};
use sluice_engine::config::Config;

/// `(parent pid, CPU ticks used)` of a process, from `/proc/PID/stat`.
fn stat_ticks(pid: u32) -> anyhow::Result<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // ppid is field 4 of the whole line, utime and stime fields 14 and 15: 1, 11 and 12 after
    // the name.
    Ok((
        fields[1].parse()?,
        fields[11].parse::<u64>()? + fields[12].parse::<u64>()?,
    ))
}

fn ticks_to_s(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU seconds (user + system) a process has used so far.
pub fn process_cpu_s(pid: u32) -> anyhow::Result<f64> {
    Ok(ticks_to_s(stat_ticks(pid)?.1))
}

/// CPU seconds of a server process and its current children (PostgreSQL's backends).
pub fn server_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let mut ticks = stat_ticks(pid)?.1;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok((ppid, t)) = stat_ticks(child) {
            if ppid == pid {
                ticks += t;
            }
        }
    }
    Ok(ticks_to_s(ticks))
}

/// Context switches (voluntary + involuntary) of all of a process's threads so far.
pub fn context_switches(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
}

fn terminate(child: &mut Child) -> anyhow::Result<()> {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait()?;
    Ok(())
}

fn spawn_sluice(sluice: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let log = File::create(log).with_context(|| format!("create {}", log.display()))?;
    Command::new(sluice)
        .args(["run", "-c"])
        .arg(config)
        .env("SLUICE_LOG", "info")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("run {}", sluice.display()))
}

/// The counters sluice logs when it stops (`stopped source_txns=… rows=…`).
fn stopped_counts(log: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(line) = text.lines().rev().find(|l| l.contains("stopped")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or(0)
    };
    (field("source_txns="), field("rows="))
}

/// `sluice-bench catchup`: sluice from start until the target's checkpoint covers `until`.
pub fn catchup(
    sluice: &Path,
    config_path: &Path,
    until: &str,
    log: &Path,
    timeout: Duration,
    perf: Option<&Path>,
    server_pid: Option<u32>,
) -> anyhow::Result<()> {
    let until: GtidPosition = until.parse().context("--until")?;
    let config = Config::load(config_path)?;
    let mut target = sluice_engine::pipeline::open_target(&config)?;
    let server_before = server_pid.map(server_cpu_s).transpose()?;
    let started = Instant::now();
    let mut child = spawn_sluice(sluice, config_path, log)?;
    let pid = child.id();
    // A flat CPU profile of sluice (cpu-clock: this machine has no hardware counters).
    let mut profiler = match perf {
        Some(out) => Some(
            Command::new("perf")
                .args(["record", "-q", "-e", "cpu-clock", "-F", "999", "-o"])
                .arg(out)
                .args(["-p", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("run perf")?,
        ),
        None => None,
    };
    let mut cpu_s = 0.0;
    let mut rss = 0;
    let mut switches = 0;
    let wall_s = loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "sluice exited ({status}) before catching up; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        // Sampled before the check, so the figures are from the moment it caught up.
        if let (Ok(c), Ok(r), Ok(n)) = (process_cpu_s(pid), peak_rss_kib(pid), context_switches(pid)) {
            cpu_s = c;
            rss = r;
            switches = n;
        }
        if target
            .load_checkpoint()
            .ok()
            .flatten()
            .is_some_and(|cp| cp.position.covers(&until.clone().into()))
        {
            break started.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "sluice did not catch up within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let server_cpu = match (server_pid, server_before) {
        (Some(pid), Some(before)) => Some(server_cpu_s(pid)? - before),
        _ => None,
    };
    if let Some(p) = profiler.as_mut() {
        // SAFETY: signalling our own child; SIGINT makes perf write its data and exit.
        unsafe { libc::kill(p.id() as libc::pid_t, libc::SIGINT) };
        p.wait()?;
    }
    terminate(&mut child)?;
    let (txns, rows) = stopped_counts(log);
    println!(
        "{}",
        serde_json::json!({"wall_s": wall_s, "cpu_s": cpu_s, "peak_rss_kib": rss,
            "txns_applied": txns, "rows_applied": rows, "target_server_cpu_s": server_cpu,
            "context_switches": switches})
    );
    Ok(())
}

pub(crate) fn mysql_conn(port: u16, database: Option<&str>) -> anyhow::Result<mysql::Conn> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .db_name(database);
    Ok(mysql::Conn::new(opts)?)
}

/// `sluice-bench replica-catchup`: starts a stopped native replica and times it to `until`.
pub fn replica_catchup(port: u16, server_pid: u32, until: &str, timeout: Duration) -> anyhow::Result<()> {
    use mysql::prelude::Queryable;
    let until: GtidPosition = until.parse().context("--until")?;
    let mut conn = mysql_conn(port, None)?;
    let cpu_before = server_cpu_s(server_pid)?;
    let started = Instant::now();
    conn.query_drop("START SLAVE")?;
    let wall_s = loop {
        let pos: Option<String> = conn.query_first("SELECT @@global.gtid_slave_pos")?;
        if pos
            .and_then(|p| p.parse::<GtidPosition>().ok())
            .is_some_and(|p| p.covers(&until))
        {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > timeout {
            let status: Vec<mysql::Row> = conn.query("SHOW SLAVE STATUS")?;
            anyhow::bail!("the replica did not catch up within {timeout:?}: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let cpu_s = server_cpu_s(server_pid)? - cpu_before;
    conn.query_drop("STOP SLAVE")?;
    println!("{}", serde_json::json!({"wall_s": wall_s, "server_cpu_s": cpu_s}));
    Ok(())
}

/// The row images of `files` for tables matching `select` (after images of inserts and
/// updates, before images of deletes): what an applier writes, one image per row change.
fn row_images(files: &[PathBuf], select: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let filter = crate::decode::glob_filter(select)?;
    let mut out = Vec::new();
    let mut tables: std::collections::HashMap<u64, Option<TableDef>> = Default::default();
    for path in files {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut reader = BinlogFileReader::new(BufReader::with_capacity(1 << 20, file), path.display().to_string())?;
        let mut decoder = EventDecoder::new();
        while let Some((_, raw)) = reader.next_event()? {
            let event = decoder.decode(raw)?;
            match event.body {
                EventBody::TableMap(map) => {
                    let def = filter.is_selected(&map.schema, &map.table).then(|| map.to_table_def());
                    tables.insert(map.table_id, def);
                }
                EventBody::Rows(rows) => {
                    let Some(Some(def)) = tables.get(&rows.table_id) else {
                        continue;
                    };
                    for change in rows.rows(def)? {
                        out.push(match change? {
                            RowChange::Insert(r) | RowChange::Delete(r) => r,
                            RowChange::Update { after, .. } => after,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn as_i64(v: &Value) -> anyhow::Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => Ok(i64::try_from(*u)?),
        other => anyhow::bail!("expected an integer, found {}", other.kind()),
    }
}

fn as_text(v: &Value) -> anyhow::Result<&str> {
    match v {
        Value::Text(s) => Ok(s),
        other => anyhow::bail!("expected text, found {}", other.kind()),
    }
}

/// One sysbench row image as bindable values: (id, k, c, pad).
pub(crate) type SbRow<'a> = (i64, i64, &'a str, &'a str);

fn sb_rows(images: &[Vec<Value>]) -> anyhow::Result<Vec<SbRow<'_>>> {
    images
        .iter()
        .map(|r| {
            anyhow::ensure!(r.len() == 4, "expected sysbench rows (id, k, c, pad)");
            Ok((as_i64(&r[0])?, as_i64(&r[1])?, as_text(&r[2])?, as_text(&r[3])?))
        })
        .collect()
}

/// Rows per multi-row INSERT on MariaDB.
const INSERT_BATCH: usize = 1_000;

/// `sluice-bench bulk`: the target's bulk-ingest rate for the row images of `files`.
pub fn bulk(kind: &str, files: &[PathBuf], port: Option<u16>, path: Option<&Path>) -> anyhow::Result<()> {
    let images = row_images(files, "sbtest.*")?;
    let rows = sb_rows(&images)?;
    let n = rows.len();
    let (wall_s, detail) = match kind {
        "mariadb" => bulk_mariadb(port.context("--port")?, &rows)?,
        "postgres" => bulk_postgres(port.context("--port")?, &rows)?,
        "sqlite" => bulk_sqlite(path.context("--path")?, &rows)?,
        other => anyhow::bail!("unknown --kind {other}"),
    };
    println!(
        "{}",
        serde_json::json!({"kind": kind, "rows": n, "wall_s": wall_s, "rows_per_s": n as f64 / wall_s, "method": detail})
    );
    Ok(())
}

pub(crate) fn bulk_mariadb(port: u16, rows: &[SbRow<'_>]) -> anyhow::Result<(f64, &'static str)> {
    use mysql::prelude::Queryable;
    let mut conn = mysql_conn(port, None)?;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS bulk")?;
    conn.query_drop("DROP TABLE IF EXISTS bulk.sbrows")?;
    conn.query_drop(
        "CREATE TABLE bulk.sbrows (seq BIGINT NOT NULL PRIMARY KEY, id INT NOT NULL, k INT NOT NULL, \
         c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    )?;
    let sql = |count: usize| {
        let mut s = String::from("INSERT INTO bulk.sbrows (seq, id, k, c, pad) VALUES ");
        for i in 0..count {
            s.push_str(if i == 0 { "(?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?)" });
        }
        s
    };
    let full = conn.prep(sql(INSERT_BATCH))?;
    let started = Instant::now();
    conn.query_drop("START TRANSACTION")?;
    for (chunk_no, chunk) in rows.chunks(INSERT_BATCH).enumerate() {
        let mut params: Vec<mysql::Value> = Vec::with_capacity(chunk.len() * 5);
        for (i, (id, k, c, pad)) in chunk.iter().enumerate() {
            params.push(((chunk_no * INSERT_BATCH + i) as i64).into());
            params.push((*id).into());
            params.push((*k).into());
            params.push((*c).into());
            params.push((*pad).into());
        }
        if chunk.len() == INSERT_BATCH {
            conn.exec_drop(&full, params)?;
        } else {
            conn.exec_drop(sql(chunk.len()), params)?;
        }
    }
    conn.query_drop("COMMIT")?;
    Ok((
        started.elapsed().as_secs_f64(),
        "prepared multi-row INSERT (1000 rows per statement), one transaction",
    ))
}

fn bulk_postgres(port: u16, rows: &[SbRow<'_>]) -> anyhow::Result<(f64, &'static str)> {
    bulk_postgres_db(port, "postgres", rows)
}

/// PostgreSQL's ceiling into database `dbname`.
pub(crate) fn bulk_postgres_db(port: u16, dbname: &str, rows: &[SbRow<'_>]) -> anyhow::Result<(f64, &'static str)> {
    let mut client = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={dbname}"),
        postgres::NoTls,
    )?;
    client.batch_execute(
        "DROP TABLE IF EXISTS bulk_sbrows; CREATE TABLE bulk_sbrows (seq bigint PRIMARY KEY, id integer NOT NULL, \
         k integer NOT NULL, c text NOT NULL, pad text NOT NULL)",
    )?;
    // COPY's text format: tab-separated, with backslash escapes.
    let escape = |s: &str, out: &mut Vec<u8>| {
        for b in s.bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
    };
    let started = Instant::now();
    let mut tx = client.transaction()?;
    {
        let mut writer = tx.copy_in("COPY bulk_sbrows (seq, id, k, c, pad) FROM STDIN")?;
        let mut buf = Vec::with_capacity(1 << 20);
        for (seq, (id, k, c, pad)) in rows.iter().enumerate() {
            write!(buf, "{seq}\t{id}\t{k}\t")?;
            escape(c, &mut buf);
            buf.push(b'\t');
            escape(pad, &mut buf);
            buf.push(b'\n');
            if buf.len() > (1 << 20) - 512 {
                writer.write_all(&buf)?;
                buf.clear();
            }
        }
        writer.write_all(&buf)?;
        writer.finish()?;
    }
    tx.commit()?;
    Ok((
        started.elapsed().as_secs_f64(),
        "COPY FROM STDIN (text), one transaction",
    ))
}

pub(crate) fn bulk_sqlite(path: &Path, rows: &[SbRow<'_>]) -> anyhow::Result<(f64, &'static str)> {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path)?;
    // sluice's SQLite target settings: WAL, synchronous=NORMAL.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE sbrows (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL, k INTEGER NOT NULL, c TEXT NOT NULL, pad TEXT NOT NULL) STRICT",
    )?;
    let started = Instant::now();
    conn.execute_batch("BEGIN")?;
    {
        let mut st = conn.prepare("INSERT INTO sbrows (seq, id, k, c, pad) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (seq, (id, k, c, pad)) in rows.iter().enumerate() {
            st.execute(rusqlite::params![seq as i64, id, k, c, pad])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok((
        started.elapsed().as_secs_f64(),
        "one prepared INSERT per row, one transaction (WAL, synchronous=NORMAL)",
    ))
}

/// `sluice-bench lag-run`: sluice (with heartbeats, `[lag] window_s` longer than the run)
/// while `load` (a sysbench command at a fixed `--rate`) runs; reports the percentiles sluice
/// recorded in the target.
pub fn lag_run(sluice: &Path, config_path: &Path, log: &Path, load: &[String]) -> anyhow::Result<()> {
    let (run, ()) = lag_run_with(sluice, config_path, log, |_| {
        let status = Command::new(&load[0])
            .args(&load[1..])
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run {}", load[0]))?;
        anyhow::ensure!(status.success(), "the load generator failed: {status}");
        Ok(())
    })?;
    println!(
        "{}",
        serde_json::json!({"load_s": run.load_s, "lag": run.report, "sluice_cpu_s_during_load": run.sluice_cpu_s, "peak_rss_kib": run.peak_rss_kib})
    );
    Ok(())
}

/// What [`lag_run_with`] measured around its load.
pub(crate) struct LagRun {
    /// sluice's own report from the target: every sample of the process (`[lag] window_s`
    /// longer than the run), i.e. the load plus a few seconds of idle before and after.
    pub report: sluice_engine::ops::lag::LagReport,
    /// Seconds the load took.
    pub load_s: f64,
    /// sluice's CPU seconds during the load.
    pub sluice_cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// Starts `sluice run -c CONFIG` (logging to `log`), waits for its first heartbeat sample,
/// runs `load` (given the running sluice process, which it must not stop), lets the last
/// heartbeats be applied and a report persisted, reads the lag report sluice recorded in the
/// target, and stops sluice.
pub(crate) fn lag_run_with<T>(
    sluice: &Path,
    config_path: &Path,
    log: &Path,
    load: impl FnOnce(&mut Child) -> anyhow::Result<T>,
) -> anyhow::Result<(LagRun, T)> {
    let config = Config::load(config_path)?;
    let mut target = sluice_engine::pipeline::open_target(&config)?;
    let mut child = spawn_sluice(sluice, config_path, log)?;
    let pid = child.id();
    // Wait for the first heartbeat to be measured, so the load starts on a running sluice.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("sluice exited ({status}); log:\n{}", std::fs::read_to_string(log)?);
        }
        if target
            .load_lag()
            .ok()
            .flatten()
            .is_some_and(|r| r.source == "heartbeat" && r.samples > 0)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no heartbeat lag within 120 s; log:\n{}",
            std::fs::read_to_string(log)?
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu_before = process_cpu_s(pid)?;
    let started = Instant::now();
    let out = match load(&mut child) {
        Ok(out) => out,
        Err(e) => {
            let _ = terminate(&mut child);
            return Err(e);
        }
    };
    let load_s = started.elapsed().as_secs_f64();
    // Let the last heartbeats be applied and a report persisted (once a second).
    std::thread::sleep(Duration::from_millis(2_500));
    if let Some(status) = child.try_wait()? {
        anyhow::bail!("sluice exited ({status}) during the load; see {}", log.display());
    }
    let report = target.load_lag()?.context("no lag report")?;
    let sluice_cpu_s = process_cpu_s(pid)? - cpu_before;
    let peak_rss_kib = peak_rss_kib(pid)?;
    terminate(&mut child)?;
    Ok((
        LagRun {
            report,
            load_s,
            sluice_cpu_s,
            peak_rss_kib,
        },
        out,
    ))
}

/// `sluice-bench postgres`: a throwaway PostgreSQL with durable settings, held until standard
/// input closes (like `source`).
pub fn postgres(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::env::set_var("TMPDIR", dir.canonicalize()?);
    // The test kit's defaults trade durability for speed; a benchmark compares appliers at
    // `synchronous_commit=on` with real fsyncs.
    let pg = sluice_testkit::PostgresServer::start_with_settings(&[
        "fsync=on",
        "synchronous_commit=on",
        "full_page_writes=on",
        "shared_buffers=256MB",
        "max_wal_size=4GB",
    ]);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "port={}", pg.port())?;
        writeln!(out, "pid={}", pg.pid().unwrap_or(0))?;
        writeln!(out, "data_dir={}", pg.data_dir().display())?;
        out.flush()?;
    }
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {
        sink.clear();
    }
    drop(pg);
    Ok(())
}
