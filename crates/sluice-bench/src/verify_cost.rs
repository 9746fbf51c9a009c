//! `sluice-bench verify-cost`: what incremental verification costs the apply rate.
//!
//! A throwaway MariaDB source gets a sysbench `oltp_write_only` backlog (the load generator
//! stops before anything is timed). The real `sluice run` then drains the same backlog into a
//! fresh target twice per repetition, with `[verify] incremental = false` and `= true`, in
//! alternating order, starting from the GTID position before the backlog (backfill off: the
//! backlog's UPDATEs of rows sluice never copied become upserts of their full images, the same
//! work in both runs). A run is timed from the start of the process until `sluice status`
//! reports the checkpoint at the source's final position.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_testkit::{MariaDb, MariaDbOptions};

const REPL_USER: &str = "sluice_repl";
const REPL_PASSWORD: &str = "bench-Pa55";

pub struct Options {
    pub sluice: std::path::PathBuf,
    pub events: u64,
    pub repeat: usize,
    pub targets: Vec<String>,
    pub json: bool,
}

fn log(msg: &str) {
    eprintln!("[verify-cost] {msg}");
}

fn sysbench(source: &MariaDb, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("sysbench")
        .args([
            "oltp_write_only",
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={}", source.port()),
            "--mysql-user=root",
            "--mysql-password=",
            "--mysql-db=sbtest",
            "--tables=4",
            "--table-size=10000",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("run sysbench (Debian package sysbench)")?;
    if !status.success() {
        bail!("sysbench {args:?} failed ({status})");
    }
    Ok(())
}

/// One drain of the backlog; returns wall seconds and sluice's CPU seconds.
fn drain(sluice: &Path, dir: &Path, config: &Path, want: &sluice_binlog::GtidPosition) -> anyhow::Result<(f64, f64)> {
    let cpu = crate::measure::children_cpu_s();
    let started = Instant::now();
    let log_file = std::fs::File::create(config.with_extension("log"))?;
    let mut child = Command::new(sluice)
        .current_dir(dir)
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    let wall = loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(status) = child.try_wait()? {
            bail!(
                "sluice run exited ({status}); see {}",
                config.with_extension("log").display()
            );
        }
        let out = Command::new(sluice)
            .current_dir(dir)
            .args(["status", "--json", "-c"])
            .arg(config)
            .stderr(Stdio::null())
            .output()?;
        // Covers, not equals: sluice's heartbeats keep moving the source (and the checkpoint)
        // past the backlog's end.
        let reached = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|status| status["checkpoint"].as_str().map(str::to_owned))
            .and_then(|cp| cp.parse::<sluice_binlog::GtidPosition>().ok())
            .is_some_and(|cp| cp.covers(want));
        if reached {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("sluice did not drain the backlog within an hour");
        }
    };
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait()?;
    Ok((wall, crate::measure::children_cpu_s() - cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("password"), format!("{REPL_PASSWORD}\n"))?;
    log("starting the throwaway source");
    let source = MariaDbOptions::new()
        .server_arg("--innodb-buffer-pool-size=512M")
        .start();
    source.create_user(
        REPL_USER,
        REPL_PASSWORD,
        &["REPLICATION SLAVE, BINLOG MONITOR", "SELECT ON *.*"],
    );
    source.exec("CREATE DATABASE sbtest");
    sysbench(&source, &["prepare"])?;
    let from = source.query_value("SELECT @@global.gtid_binlog_pos");
    log(&format!(
        "sysbench oltp_write_only: {} transactions of backlog",
        options.events
    ));
    sysbench(
        &source,
        &[
            "--threads=4",
            "--time=0",
            &format!("--events={}", options.events),
            "run",
        ],
    )?;
    let to: sluice_binlog::GtidPosition = source
        .query_value("SELECT @@global.gtid_binlog_pos")
        .parse()
        .context("the source's gtid_binlog_pos")?;
    let mut target_servers = Vec::new();
    let mut results = Vec::new();
    for target in &options.targets {
        let mut off = Vec::new();
        let mut on = Vec::new();
        let mut cpu_off = Vec::new();
        let mut cpu_on = Vec::new();
        let server = match target.as_str() {
            "sqlite" => None,
            "mariadb" => {
                let t = MariaDbOptions::new()
                    .binlog(false)
                    .server_arg("--innodb-buffer-pool-size=512M")
                    .server_arg("--innodb-flush-log-at-trx-commit=1")
                    .start();
                t.create_user("edge", "edge-pw", &["ALL PRIVILEGES"]);
                std::fs::write(dir.path().join("edge-password"), "edge-pw\n")?;
                Some(t)
            }
            other => bail!("unknown target {other:?} (sqlite, mariadb)"),
        };
        for round in 0..options.repeat {
            // Alternate which mode goes first, so neither always runs on a warmer machine.
            let modes = if round % 2 == 0 { [false, true] } else { [true, false] };
            for incremental in modes {
                let name = format!("{target}-{round}-{}", if incremental { "on" } else { "off" });
                let target_toml = match &server {
                    None => format!("[target]\nkind = \"sqlite\"\npath = \"{name}.sqlite\"\n"),
                    Some(t) => format!(
                        "[target]\nkind = \"mariadb\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"edge\"\npassword_file = \"edge-password\"\ndatabase = \"{}\"\n",
                        t.port(),
                        name.replace('-', "_")
                    ),
                };
                let config = dir.path().join(format!("{name}.toml"));
                std::fs::write(
                    &config,
                    format!(
                        "[source]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{REPL_USER}\"\npassword_file = \"password\"\nstart = \"{from}\"\n\n\
                         {target_toml}\n[[tables]]\nmatch = \"sbtest.*\"\n\n[backfill]\nenabled = false\n\n[verify]\nincremental = {incremental}\n",
                        source.port()
                    ),
                )?;
                let (wall, cpu) = drain(&options.sluice, dir.path(), &config, &to)?;
                log(&format!("{name}: {wall:.2} s wall, {cpu:.2} s CPU"));
                if incremental {
                    on.push(wall);
                    cpu_on.push(cpu);
                } else {
                    off.push(wall);
                    cpu_off.push(cpu);
                }
            }
        }
        let (off, on) = (median(off), median(on));
        let (cpu_off, cpu_on) = (median(cpu_off), median(cpu_on));
        let txns = options.events as f64;
        let cost_pct = (on / off - 1.0) * 100.0;
        println!(
            "verify_cost target={target} txns={} off_s={off:.2} on_s={on:.2} off_txns_per_s={:.0} on_txns_per_s={:.0} cpu_off_s={cpu_off:.2} cpu_on_s={cpu_on:.2} cost_pct={cost_pct:.1}",
            options.events,
            txns / off,
            txns / on
        );
        results.push(serde_json::json!({
            "target": target,
            "txns": options.events,
            "off_wall_s": off,
            "on_wall_s": on,
            "off_cpu_s": cpu_off,
            "on_cpu_s": cpu_on,
            "cost_pct": cost_pct,
        }));
        target_servers.push(server);
    }
    println!("verify_cost_goal cost_pct<15 (apply time with incremental verification vs without)");
    if options.json {
        println!(
            "{}",
            serde_json::json!({ "benchmark": "verify_cost", "repeat": options.repeat, "results": results })
        );
    }
    Ok(())
}
