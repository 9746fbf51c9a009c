//! `sluice-bench`: sluice's speed benchmarks, as programs that print their figures.
//!
//! See bench/README.md for how the scripts in scripts/ drive these subcommands and what each
//! figure means. Every figure is meant to be read beside a peer measured in the same run
//! (docs: shared BENCHMARKS.md); this binary measures sluice's side and offers the small
//! helpers the scripts need to measure the peers the same way.

mod apply;
mod backfill_bench;
mod decode;
mod filter_cost;
mod measure;
mod osc_bench;
mod source;
mod verify_bench;
mod verify_cost;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice-bench", about = "sluice's speed benchmarks (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decodes binlog files on one thread, every row of every table into typed values (or
    /// only the tables matching --select, skipping the others undecoded as sluice does), and
    /// prints events, rows, bytes, seconds, rows/s and MB/s.
    Decode {
        /// Binlog files, decoded in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Decode rows only of tables matching this `schema.table` glob (sluice's `match`
        /// syntax); rows of other tables are skipped without being decoded.
        #[arg(long)]
        select: Option<String>,
        /// Decode the files this many times and report each run and the median.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Label of the printed line (e.g. `decode_all`, `decode_skip`).
        #[arg(long, default_value = "decode")]
        label: String,
        /// Also print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Measures what row filters and column transforms cost, relative to decoding the same
    /// binlog and applying it to SQLite.
    FilterCost {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A sluice config whose [[tables]] rules (with `where` and `transforms`) are the
        /// filtered run; the unfiltered run uses the same rules without them. Default: a
        /// built-in config for sysbench's `sbtest.sbtest*` tables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory for the SQLite target files (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Commit the SQLite target after this many applied rows (at a transaction boundary).
        #[arg(long, default_value_t = sluice_engine::config::DEFAULT_BATCH_MAX_ROWS)]
        batch_rows: usize,
        /// Repeat each timed part this many times and keep the median.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        #[arg(long)]
        json: bool,
    },
    /// Starts a throwaway MariaDB (sluice-testkit) under DIR, prints `port=…`, `pid=…` and
    /// `data_dir=…`, and keeps it until standard input closes or a signal arrives.
    Source {
        #[arg(long)]
        dir: PathBuf,
        /// Extra `mariadbd` arguments (repeatable).
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
        /// Without a binary log (a replica or target that nothing reads from).
        #[arg(long)]
        no_binlog: bool,
    },
    /// Starts a throwaway PostgreSQL (fsync and synchronous_commit on) under DIR, prints
    /// `port=…`, `pid=…`, `data_dir=…`, and keeps it until standard input closes.
    Postgres {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Runs `sluice run -c CONFIG` until the target's checkpoint covers --until; prints wall
    /// seconds, sluice's CPU seconds and peak RSS as JSON.
    Catchup {
        #[arg(long)]
        sluice: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// GTID position to reach.
        #[arg(long)]
        until: String,
        /// sluice's log.
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
        /// Record a `perf` CPU profile of sluice into this file until it caught up.
        #[arg(long)]
        perf: Option<PathBuf>,
        /// The target server's process id: also report its CPU seconds (with its children).
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// `START SLAVE` on a stopped native replica (root on 127.0.0.1:PORT) and the seconds until
    /// its gtid_slave_pos covers --until, with the replica server's CPU seconds, as JSON.
    ReplicaCatchup {
        #[arg(long)]
        port: u16,
        /// The replica server's process id (for its CPU time).
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        until: String,
        #[arg(long, default_value_t = 3600)]
        timeout_s: u64,
    },
    /// The target's bulk-ingest rate for the sysbench row images in FILES (one image per row
    /// change), as JSON.
    Bulk {
        /// mariadb | postgres | sqlite
        #[arg(long)]
        kind: String,
        /// Server port (root / postgres on 127.0.0.1).
        #[arg(long)]
        port: Option<u16>,
        /// SQLite file (replaced).
        #[arg(long)]
        path: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Runs sluice (heartbeat on) and, once its first heartbeat is measured, the load command;
    /// prints the lag percentiles sluice recorded in the target, as JSON.
    LagRun {
        #[arg(long)]
        sluice: PathBuf,
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        load: Vec<String>,
    },
    /// Full-table verification: `sluice verify` into each target beside `pt-table-checksum`
    /// on the same source table, in the same run (see bench/README.md).
    Verify {
        /// The `sluice` binary to measure.
        #[arg(long)]
        sluice: PathBuf,
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// `sluice verify --chunk-rows`.
        #[arg(long, default_value_t = sluice_engine::verify::full::DEFAULT_CHUNK_ROWS)]
        chunk_rows: usize,
        /// Targets to verify, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "mariadb,sqlite,postgres")]
        targets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// What incremental verification costs: `sluice run` drains the same sysbench backlog
    /// with `[verify] incremental` off and on, alternating (see bench/README.md).
    VerifyCost {
        #[arg(long)]
        sluice: PathBuf,
        /// sysbench oltp_write_only transactions in the backlog.
        #[arg(long, default_value_t = 50_000)]
        events: u64,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[arg(long, value_delimiter = ',', default_value = "sqlite,mariadb")]
        targets: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Copy speed of an existing table into each target beside the target's bulk-ingest
    /// ceiling, and the stream's lag with and without a copy running (see bench/README.md).
    Backfill {
        /// The `sluice` binary to measure.
        #[arg(long)]
        sluice: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, value_delimiter = ',', default_value = "sqlite,mariadb,postgres")]
        targets: Vec<String>,
        /// A `[backfill]` setting for every sluice run, e.g. `chunk_rows=10000` (repeatable).
        #[arg(long = "setting")]
        settings: Vec<String>,
        /// Length of each lag run (0: no lag runs).
        #[arg(long, default_value_t = 30)]
        lag_seconds: u64,
        /// Offered load of the lag runs, transactions per second.
        #[arg(long, default_value_t = 500)]
        lag_rate: u64,
        #[arg(long, default_value = "sqlite")]
        lag_target: String,
        #[arg(long)]
        json: bool,
    },
    /// A managed schema change under load (issue #13): pt-online-schema-change adds a column
    /// to a replicated table while sysbench writes; the stream's lag beside the same load
    /// without it, and the column-only copy's speed beside the full-table copy (see
    /// bench/README.md).
    Osc {
        /// The `sluice` binary to measure.
        #[arg(long)]
        sluice: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Length of each lag run's load (the migration's run lasts until the column copy is
        /// done if that takes longer).
        #[arg(long, default_value_t = 60)]
        lag_seconds: u64,
        /// Offered load of the lag runs, sysbench oltp_write_only transactions per second.
        #[arg(long, default_value_t = 500)]
        lag_rate: u64,
        #[arg(long)]
        json: bool,
    },
    /// Runs a command and prints its wall-clock and CPU seconds (user+sys, children
    /// included) as `wall_s=… cpu_s=…`; the command's standard output is discarded.
    Time {
        /// Print as JSON instead.
        #[arg(long)]
        json: bool,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode {
            files,
            select,
            repeat,
            label,
            json,
        } => decode::run(&files, select.as_deref(), repeat.max(1), &label, json),
        Command::FilterCost {
            files,
            config,
            dir,
            batch_rows,
            repeat,
            json,
        } => filter_cost::run(&files, config.as_deref(), dir, batch_rows.max(1), repeat.max(1), json),
        Command::Source {
            dir,
            server_args,
            no_binlog,
        } => source::run(&dir, server_args, !no_binlog),
        Command::Postgres { dir } => apply::postgres(&dir),
        Command::Catchup {
            sluice,
            config,
            until,
            log,
            timeout_s,
            perf,
            server_pid,
        } => apply::catchup(
            &sluice,
            &config,
            &until,
            &log,
            std::time::Duration::from_secs(timeout_s),
            perf.as_deref(),
            server_pid,
        ),
        Command::ReplicaCatchup {
            port,
            pid,
            until,
            timeout_s,
        } => apply::replica_catchup(port, pid, &until, std::time::Duration::from_secs(timeout_s)),
        Command::Bulk {
            kind,
            port,
            path,
            files,
        } => apply::bulk(&kind, &files, port, path.as_deref()),
        Command::LagRun {
            sluice,
            config,
            log,
            load,
        } => apply::lag_run(&sluice, &config, &log, &load),
        Command::Time { json, command } => measure::time_command(&command, json),
        Command::Backfill {
            sluice,
            rows,
            targets,
            settings,
            lag_seconds,
            lag_rate,
            lag_target,
            json,
        } => backfill_bench::run(backfill_bench::Options {
            sluice,
            rows,
            targets,
            settings: settings
                .iter()
                .map(|s| match s.split_once('=') {
                    Some((k, v)) => Ok(format!("{} = {}", k.trim(), v.trim())),
                    None => Err(anyhow::anyhow!("--setting {s:?}: expected KEY=VALUE")),
                })
                .collect::<anyhow::Result<_>>()?,
            lag_seconds,
            lag_rate,
            lag_target,
            json,
        }),
        Command::Osc {
            sluice,
            rows,
            lag_seconds,
            lag_rate,
            json,
        } => osc_bench::run(osc_bench::Options {
            sluice,
            rows,
            lag_seconds,
            lag_rate,
            json,
        }),
        Command::VerifyCost {
            sluice,
            events,
            repeat,
            targets,
            json,
        } => verify_cost::run(verify_cost::Options {
            sluice,
            events,
            repeat: repeat.max(1),
            targets,
            json,
        }),
        Command::Verify {
            sluice,
            rows,
            repeat,
            chunk_rows,
            targets,
            json,
        } => verify_bench::run(verify_bench::Options {
            sluice,
            rows,
            repeat: repeat.max(1),
            chunk_rows,
            targets,
            json,
        }),
    }
}
