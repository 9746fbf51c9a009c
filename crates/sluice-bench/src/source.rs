//! `sluice-bench source`: a throwaway MariaDB for the benchmark scripts.
//!
//! Starts sluice-testkit's [`MariaDb`] (binlog on, ROW format, FULL row image and metadata)
//! with its directory under `--dir`, prints `port=…`, `pid=…` and `data_dir=…` (one per line),
//! then holds the server until standard input reaches end of file or SIGTERM/SIGINT/SIGHUP
//! arrives, and stops it cleanly (the test kit deletes its directory).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use sluice_testkit::MariaDbOptions;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(dir: &Path, server_args: Vec<String>, binlog: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    // The test kit puts the server's directory under the system temp dir; the unix socket
    // path must stay under 107 bytes.
    if dir.as_os_str().len() > 60 {
        anyhow::bail!(
            "--dir {} is too long for a unix socket path; use a shorter one",
            dir.display()
        );
    }
    // Set before any other thread exists.
    std::env::set_var("TMPDIR", &dir);
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let db = MariaDbOptions::new().server_args(server_args).binlog(binlog).start();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "port={}", db.port())?;
        writeln!(out, "pid={}", db.pid().unwrap_or(0))?;
        writeln!(out, "data_dir={}", db.data_dir().display())?;
        out.flush()?;
    }
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        while matches!(lock.read_line(&mut sink), Ok(n) if n > 0) {
            sink.clear();
        }
        let _ = tx.send(());
    });
    while !STOP.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    drop(db);
    Ok(())
}
