//! `sluice-bench verify`: full-table verification speed, sluice beside `pt-table-checksum` on
//! the same table in the same run.
//!
//! One throwaway MariaDB source gets a sysbench-shaped table (`id` INT primary key, `k` INT,
//! `c` CHAR(120), `pad` CHAR(60)) of `--rows` rows. For each target (a throwaway MariaDB, a
//! SQLite file, a throwaway PostgreSQL) the real `sluice run` backfills the table and is then
//! stopped, and the real `sluice verify` compares the whole table, timed (wall and CPU
//! seconds of the sluice process). `pt-table-checksum` checksums the same source table with
//! its defaults (`--recursion-method=none`: no replica to wait for; it computes the source
//! side's chunk checksums, which a replica would recompute on its own when it replays them).
//! Each program runs `--repeat` times and the median is reported.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_testkit::{MariaDb, MariaDbOptions, PostgresServer};

const REPL_USER: &str = "sluice_repl";
const REPL_PASSWORD: &str = "bench-Pa55";

pub struct Options {
    pub sluice: PathBuf,
    pub rows: u64,
    pub repeat: usize,
    pub chunk_rows: usize,
    pub targets: Vec<String>,
    pub json: bool,
}

struct Timing {
    wall_s: f64,
    cpu_s: f64,
}

/// Runs `cmd` to completion; its wall time, the CPU it used, and its standard output.
fn timed(cmd: &mut Command) -> anyhow::Result<(Timing, Vec<u8>, std::process::ExitStatus)> {
    let cpu = crate::measure::children_cpu_s();
    let started = Instant::now();
    let out = cmd.stderr(Stdio::inherit()).output().context("run")?;
    Ok((
        Timing {
            wall_s: started.elapsed().as_secs_f64(),
            cpu_s: crate::measure::children_cpu_s() - cpu,
        },
        out.stdout,
        out.status,
    ))
}

fn median(mut t: Vec<Timing>) -> Timing {
    t.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    t.swap_remove(t.len() / 2)
}

fn log(msg: &str) {
    eprintln!("[verify-bench] {msg}");
}

/// Creates and fills `bench.sbtest1`; `log_bin`: write the rows to the binary log too.
pub(crate) fn fill(source: &MariaDb, rows: u64, log_bin: bool) {
    let session = if log_bin { "" } else { "SET SESSION sql_log_bin = 0;" };
    source.exec(
        "CREATE DATABASE bench;
         CREATE TABLE bench.sbtest1 (id INT NOT NULL PRIMARY KEY, k INT NOT NULL DEFAULT 0,
           c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB;",
    );
    let batch = 250_000u64;
    let mut from = 1;
    while from <= rows {
        let to = (from + batch - 1).min(rows);
        // sysbench's shapes: c is 11 groups of 11 digits, pad 5 groups.
        source.exec(&format!(
            "{session} INSERT INTO bench.sbtest1 SELECT seq, FLOOR(RAND(seq) * {rows}),
               SUBSTRING(CONCAT_WS('-', LPAD(CRC32(seq), 11, '0'), LPAD(CRC32(seq + 1), 11, '0'), LPAD(CRC32(seq + 2), 11, '0'),
                 LPAD(CRC32(seq + 3), 11, '0'), LPAD(CRC32(seq + 4), 11, '0'), LPAD(CRC32(seq + 5), 11, '0'),
                 LPAD(CRC32(seq + 6), 11, '0'), LPAD(CRC32(seq + 7), 11, '0'), LPAD(CRC32(seq + 8), 11, '0'),
                 LPAD(CRC32(seq + 9), 11, '0')), 1, 119),
               SUBSTRING(CONCAT_WS('-', LPAD(CRC32(-seq), 11, '0'), LPAD(CRC32(-seq - 1), 11, '0'), LPAD(CRC32(-seq - 2), 11, '0'),
                 LPAD(CRC32(-seq - 3), 11, '0'), LPAD(CRC32(-seq - 4), 11, '0')), 1, 59)
             FROM bench.seq_{from}_to_{to}"
        ));
        from = to + 1;
    }
}

struct TargetRun {
    name: String,
    config: PathBuf,
}

/// Writes `NAME.toml` in `dir`: the source, `target_toml`, one rule per table of `tables`,
/// and `extra` (more sections) at the end.
pub(crate) fn write_config(
    dir: &Path,
    source_port: u16,
    name: &str,
    target_toml: &str,
    tables: &[&str],
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let rules: String = tables
        .iter()
        .map(|t| format!("[[tables]]\nmatch = \"{t}\"\n\n"))
        .collect();
    std::fs::write(
        &path,
        format!(
            "[source]\nhost = \"127.0.0.1\"\nport = {source_port}\nuser = \"{REPL_USER}\"\npassword_file = \"password\"\n\n\
             {target_toml}\n{rules}{extra}\n"
        ),
    )?;
    Ok(path)
}

/// Starts `sluice run` and waits until the table is copied and the target caught up; returns
/// the seconds that took and the still running process (verification runs beside it, as in
/// production: `sluice verify` waits for the target to catch up with each source read).
///
/// It watches the target's own records (`_sluice_backfill`, the checkpoint) and the source's
/// position, not `sluice status`: status counts a SQLite table's rows, which on a table of
/// millions would cost as much CPU as the copy it times.
pub(crate) fn backfill(sluice: &Path, dir: &Path, config: &Path) -> anyhow::Result<(f64, std::process::Child)> {
    let started = Instant::now();
    let mut child = start_sluice(sluice, dir, config)?;
    let cfg = sluice_engine::config::Config::load(config)?;
    let mut source = crate::apply::mysql_conn(cfg.source.port, None)?;
    let mut target = None;
    wait_until(
        &mut child,
        config,
        Duration::from_secs(3600),
        Duration::from_millis(100),
        || {
            if target.is_none() {
                // SQLite: the file exists once sluice created it.
                target = sluice_engine::pipeline::open_target(&cfg).ok();
            }
            let Some(t) = target.as_mut() else { return Ok(false) };
            let copied = t.load_backfill().unwrap_or_default();
            if copied.is_empty() || !copied.iter().all(|p| p.done) {
                return Ok(false);
            }
            let want: String = mysql::prelude::Queryable::query_first(&mut source, "SELECT @@global.gtid_binlog_pos")?
                .unwrap_or_default();
            let want: sluice_binlog::GtidPosition = want.parse().map_err(|_| anyhow::anyhow!("bad source position"))?;
            Ok(t.load_checkpoint()
                .ok()
                .flatten()
                .is_some_and(|cp| cp.position.covers(&want.clone().into())))
        },
    )?;
    Ok((started.elapsed().as_secs_f64(), child))
}

/// Calls `done` every `poll` until it says so; fails when sluice exits or `timeout` passes.
fn wait_until(
    child: &mut std::process::Child,
    config: &Path,
    timeout: Duration,
    poll: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        std::thread::sleep(poll);
        if let Some(status) = child.try_wait()? {
            bail!(
                "sluice run exited ({status}); see {}",
                config.with_extension("log").display()
            );
        }
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "sluice did not get there within {timeout:?}; see {}",
                config.with_extension("log").display()
            );
        }
    }
}

/// `sluice run -c CONFIG` in `dir`, logging to CONFIG with the extension `log`.
pub(crate) fn start_sluice(sluice: &Path, dir: &Path, config: &Path) -> anyhow::Result<std::process::Child> {
    let log_file = std::fs::File::create(config.with_extension("log"))?;
    Ok(Command::new(sluice)
        .current_dir(dir)
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()?)
}

/// Polls `sluice status --json` until `done` holds for it; fails when sluice exits or
/// `timeout` passes.
pub(crate) fn wait_for_status(
    sluice: &Path,
    dir: &Path,
    config: &Path,
    child: &mut std::process::Child,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    // Not too often: status counts a SQLite table's rows.
    wait_until(child, config, timeout, Duration::from_millis(1000), || {
        let out = Command::new(sluice)
            .current_dir(dir)
            .args(["status", "--json", "-c"])
            .arg(config)
            .stderr(Stdio::null())
            .output()?;
        Ok(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|status| done(&status)))
    })
}

/// A throwaway source (binlog on, the given InnoDB buffer pool) with sluice's replication
/// user, granted `extra_grants` too, and a scratch directory holding that user's password
/// file (sluice runs there).
pub(crate) fn start_source(buffer_pool: &str, extra_grants: &[&str]) -> anyhow::Result<(tempfile::TempDir, MariaDb)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("password"), format!("{REPL_PASSWORD}\n"))?;
    let source = MariaDbOptions::new()
        .server_arg(format!("--innodb-buffer-pool-size={buffer_pool}"))
        .start();
    let mut grants = vec!["REPLICATION SLAVE, BINLOG MONITOR", "SELECT ON *.*"];
    grants.extend_from_slice(extra_grants);
    source.create_user(REPL_USER, REPL_PASSWORD, &grants);
    Ok((dir, source))
}

pub(crate) fn stop(mut child: std::process::Child) -> anyhow::Result<()> {
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    Ok(())
}

pub fn run(options: Options) -> anyhow::Result<()> {
    log("starting the throwaway source");
    let (dir, source) = start_source("1G", &[])?;
    log(&format!("filling bench.sbtest1 with {} rows", options.rows));
    let fill_started = Instant::now();
    fill(&source, options.rows, true);
    log(&format!("filled in {:.1} s", fill_started.elapsed().as_secs_f64()));

    // pt-table-checksum first: it writes its results to the source (percona.checksums), which
    // every sluice run started afterwards simply streams past.
    log("pt-table-checksum on the source table");
    let mut pt = Vec::new();
    for _ in 0..options.repeat {
        let (t, out, status) = timed(
            Command::new("pt-table-checksum")
                .args([
                    "--no-check-replication-filters",
                    "--no-check-binlog-format",
                    "--recursion-method=none",
                    "--databases=bench",
                    "--tables=sbtest1",
                    "--no-version-check",
                ])
                .arg(format!("h=127.0.0.1,P={},u=root", source.port())),
        )?;
        let text = String::from_utf8_lossy(&out);
        // Exit status is a bit mask; 0 means no errors, no differences, nothing skipped.
        if !status.success() {
            bail!("pt-table-checksum failed ({status}):\n{text}");
        }
        eprintln!("{}", text.trim_end());
        pt.push(t);
    }
    let pt = median(pt);

    let mut results = Vec::new();
    let mut servers_mariadb = Vec::new();
    let mut servers_pg = Vec::new();
    for name in &options.targets {
        let toml = start_target(name, dir.path(), &mut servers_mariadb, &mut servers_pg)?;
        let config = write_config(
            dir.path(),
            source.port(),
            name,
            &toml,
            &["bench.sbtest1"],
            "[backfill]\nchunk_rows = 10000\n",
        )?;
        log(&format!("{name}: sluice run backfills the table"));
        let (seconds, child) = backfill(&options.sluice, dir.path(), &config)?;
        log(&format!(
            "{name}: backfilled and caught up in {seconds:.1} s ({:.0} rows/s)",
            options.rows as f64 / seconds
        ));
        let run = TargetRun {
            name: name.clone(),
            config,
        };
        let result = verify_target(&options, dir.path(), &run, &pt);
        stop(child)?;
        results.push(result?);
    }

    println!(
        "verify_goal same_engine_ratio>=1.0 cross_engine_ratio>=0.5 (ratio = sluice rows/s / pt-table-checksum rows/s)"
    );
    if options.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "verify",
                "rows": options.rows,
                "repeat": options.repeat,
                "chunk_rows": options.chunk_rows,
                "results": results,
            })
        );
    }
    drop(servers_mariadb);
    drop(servers_pg);
    Ok(())
}

/// Starts target `name` (`mariadb`, `sqlite` or `postgres`; servers are throwaway and kept in
/// the given lists until the caller drops them) and returns its `[target]` section.
pub(crate) fn start_target(
    name: &str,
    dir: &Path,
    servers_mariadb: &mut Vec<MariaDb>,
    servers_pg: &mut Vec<PostgresServer>,
) -> anyhow::Result<String> {
    Ok(match name {
        "mariadb" => {
            let t = MariaDbOptions::new()
                .binlog(false)
                .server_arg("--innodb-buffer-pool-size=1G")
                .start();
            t.create_user("edge", "edge-pw", &["ALL PRIVILEGES"]);
            std::fs::write(dir.join("edge-password"), "edge-pw\n")?;
            let toml = format!(
                "[target]\nkind = \"mariadb\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"edge\"\npassword_file = \"edge-password\"\ndatabase = \"edge\"\n",
                t.port()
            );
            servers_mariadb.push(t);
            toml
        }
        "sqlite" => "[target]\nkind = \"sqlite\"\npath = \"edge.sqlite\"\n".to_owned(),
        "postgres" => {
            let pg = PostgresServer::start();
            pg.exec("CREATE DATABASE edge");
            let toml = format!(
                "[target]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"edge\"\n",
                pg.port()
            );
            servers_pg.push(pg);
            toml
        }
        other => bail!("unknown target {other:?} (mariadb, sqlite, postgres)"),
    })
}

/// Times `sluice verify` of the whole table on one target (`--repeat` runs, median).
fn verify_target(options: &Options, dir: &Path, run: &TargetRun, pt: &Timing) -> anyhow::Result<serde_json::Value> {
    let pt_rows_per_s = options.rows as f64 / pt.wall_s;
    let mut times = Vec::new();
    let mut method = String::new();
    for _ in 0..options.repeat {
        let (t, out, status) = timed(
            Command::new(&options.sluice)
                .current_dir(dir)
                .args([
                    "verify",
                    "--json",
                    "--chunk-rows",
                    &options.chunk_rows.to_string(),
                    "-c",
                ])
                .arg(&run.config),
        )?;
        let report: serde_json::Value = serde_json::from_slice(&out).context("verify --json output")?;
        if !status.success() || report[0]["outcome"] != "equal" || report[0]["source_rows"] != options.rows {
            bail!(
                "sluice verify on {} did not find the copy equal ({status}): {report:#}",
                run.name
            );
        }
        method = report[0]["method"].as_str().unwrap_or("").to_owned();
        times.push(t);
    }
    let t = median(times);
    let rows_per_s = options.rows as f64 / t.wall_s;
    let ratio = rows_per_s / pt_rows_per_s;
    println!(
        "verify target={} method={method} rows={} sluice_s={:.2} sluice_cpu_s={:.2} sluice_rows_per_s={:.0} pt_table_checksum_s={:.2} pt_table_checksum_rows_per_s={:.0} ratio={:.2}",
        run.name, options.rows, t.wall_s, t.cpu_s, rows_per_s, pt.wall_s, pt_rows_per_s, ratio
    );
    Ok(serde_json::json!({
        "target": run.name,
        "method": method,
        "rows": options.rows,
        "sluice_wall_s": t.wall_s,
        "sluice_cpu_s": t.cpu_s,
        "sluice_rows_per_s": rows_per_s,
        "pt_table_checksum_wall_s": pt.wall_s,
        "pt_table_checksum_cpu_s": pt.cpu_s,
        "pt_table_checksum_rows_per_s": pt_rows_per_s,
        "ratio": ratio,
    }))
}
