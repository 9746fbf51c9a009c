//! Clocks, medians, a cheap checksum of decoded values, and timing of other programs.

use std::process::{Command, Stdio};
use std::time::Instant;

use sluice_binlog::{RowChange, Value};

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_s() -> f64 {
    clock_s(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_s(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are always supported.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Wall-clock and thread-CPU seconds of one measured stretch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub wall_s: f64,
    pub cpu_s: f64,
}

pub struct Stopwatch {
    wall: Instant,
    cpu: f64,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu_s(),
        }
    }

    pub fn stop(&self) -> Span {
        Span {
            wall_s: self.wall.elapsed().as_secs_f64(),
            cpu_s: thread_cpu_s() - self.cpu,
        }
    }
}

/// The median of `spans` by wall time (the upper median of an even count).
pub fn median(spans: &[Span]) -> Span {
    let mut sorted = spans.to_vec();
    sorted.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    sorted[sorted.len() / 2]
}

/// Folds one value into `h` cheaply, touching the decoded data so that the optimizer cannot
/// drop the decoding (and so that two decoders of the same input agree on the result).
#[inline]
pub fn fold_value(h: u64, v: &Value) -> u64 {
    let x: u64 = match v {
        Value::Null => 0x9e37,
        Value::Int(i) => *i as u64,
        Value::UInt(u) | Value::Bit(u) => *u,
        Value::Float(f) => u64::from(f.to_bits()),
        Value::Double(d) => d.to_bits(),
        Value::Year(y) => u64::from(*y),
        Value::Text(s) | Value::Decimal(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) => {
            let b = s.as_bytes();
            (b.len() as u64) ^ (u64::from(b.first().copied().unwrap_or(0)) << 32)
        }
        Value::Bytes(b) => (b.len() as u64) ^ (u64::from(b.first().copied().unwrap_or(0)) << 32),
        Value::Date { year, month, day } => (u64::from(*year) << 16) | (u64::from(*month) << 8) | u64::from(*day),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => {
            (u64::from(*year) << 48)
                ^ (u64::from(*month) << 40)
                ^ (u64::from(*day) << 32)
                ^ (u64::from(*hour) << 24)
                ^ (u64::from(*minute) << 16)
                ^ (u64::from(*second) << 8)
                ^ u64::from(*micros)
        }
        Value::Time {
            negative,
            hours,
            minutes,
            seconds,
            micros,
        } => {
            (u64::from(*negative) << 63)
                ^ (u64::from(*hours) << 32)
                ^ (u64::from(*minutes) << 24)
                ^ (u64::from(*seconds) << 16)
                ^ u64::from(*micros)
        }
        Value::Timestamp { seconds, micros } => (*seconds as u64) ^ (u64::from(*micros) << 40),
    };
    (h.rotate_left(7) ^ x).wrapping_mul(0x0000_0100_0000_01b3)
}

pub fn fold_row(mut h: u64, row: &[Value]) -> u64 {
    for v in row {
        h = fold_value(h, v);
    }
    h
}

pub fn fold_change(h: u64, change: &RowChange) -> u64 {
    match change {
        RowChange::Insert(r) => fold_row(h ^ 1, r),
        RowChange::Delete(r) => fold_row(h ^ 2, r),
        RowChange::Update { before, after } => fold_row(fold_row(h ^ 3, before), after),
    }
}

/// Millions of bytes per second.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

pub fn per_s(count: u64, seconds: f64) -> f64 {
    count as f64 / seconds
}

/// CPU seconds (user + system) of every child process waited for so far.
pub fn children_cpu_s() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `sluice-bench time`: runs `command` with its standard output discarded and prints its
/// wall-clock seconds and the CPU seconds it (and its children) used.
pub fn time_command(command: &[String], json: bool) -> anyhow::Result<()> {
    let (program, args) = command.split_first().expect("clap requires a command");
    let cpu_before = children_cpu_s();
    let wall = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = children_cpu_s() - cpu_before;
    if !status.success() {
        anyhow::bail!("{program} failed: {status}");
    }
    if json {
        println!("{}", serde_json::json!({ "wall_s": wall_s, "cpu_s": cpu_s }));
    } else {
        println!("wall_s={wall_s:.3} cpu_s={cpu_s:.3}");
    }
    Ok(())
}
