//! Live progress bars for the copies of existing rows (`sluice run` on a terminal): rows
//! copied against the source's estimate, rows/s and ETA per table, drawn with indicatif from
//! the engine's [`CopyBoard`]. Off a terminal nothing is drawn; the same figures are in
//! `sluice status` (recorded with each chunk) and in the logs.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_engine::backfill::{CopyBoard, CopyState};

/// How often the bars are redrawn from the board.
const REFRESH: Duration = Duration::from_millis(250);

/// A thread drawing progress until dropped (then it stops and is joined).
pub struct DrawThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DrawThread {
    fn spawn(name: &str, draw: impl FnOnce(&AtomicBool) + Send + 'static) -> Option<DrawThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || draw(&stopping))
            .ok()?;
        Some(DrawThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DrawThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The backfill's bars; stop (leaving the bars as they are) when dropped.
pub struct BackfillBars;

impl BackfillBars {
    /// Starts drawing when stderr is a terminal.
    pub fn start(board: Arc<CopyBoard>) -> Option<DrawThread> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        DrawThread::spawn("sluice-progress", move |stop| draw(&board, stop))
    }
}

fn draw(board: &CopyBoard, stop: &AtomicBool) {
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos:>11}/{len:<11} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut shown: Vec<(String, ProgressBar)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (table, copy) in board.snapshot() {
            let bar = match shown.iter().find(|(t, _)| *t == table) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = bars.add(ProgressBar::new(copy.rows_estimate.max(1)));
                    bar.set_style(style.clone());
                    bar.set_prefix(table.clone());
                    shown.push((table.clone(), bar.clone()));
                    bar
                }
            };
            if bar.is_finished() {
                continue;
            }
            bar.set_length(copy.rows_estimate.max(copy.rows_copied).max(1));
            bar.set_position(copy.rows_copied);
            let columns = if copy.columns.is_empty() {
                String::new()
            } else {
                format!(" columns {}", copy.columns.join(","))
            };
            match &copy.state {
                CopyState::Pending => bar.set_message(format!("pending{columns}")),
                CopyState::Copying | CopyState::Throttled => {
                    let eta = copy.eta().map(format_eta).unwrap_or_else(|| "?".into());
                    let paused = if copy.state == CopyState::Throttled {
                        " (paused: stream lag)"
                    } else {
                        ""
                    };
                    bar.set_message(format!("{} rows/s ETA {eta}{columns}{paused}", copy.rows_per_s()));
                }
                CopyState::Ready => bar.finish_with_message(format!("ready{columns}")),
                CopyState::Failed(reason) => bar.abandon_with_message(format!("FAILED: {reason}")),
            }
        }
        std::thread::sleep(REFRESH);
    }
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_eta(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

/// `sluice verify`'s progress: on a terminal a bar of tables compared with the current
/// table's rows and speed, otherwise a log line per table and every [`VERIFY_LOG_EVERY`].
pub struct VerifyDisplay;

/// How often the progress line is logged off a terminal.
pub const VERIFY_LOG_EVERY: Duration = Duration::from_secs(5);

impl VerifyDisplay {
    pub fn start(progress: Arc<sluice_engine::verify::full::VerifyProgress>) -> Option<DrawThread> {
        match std::io::stderr().is_terminal() {
            true => DrawThread::spawn("sluice-verify-progress", move |stop| draw_verify(&progress, stop)),
            false => DrawThread::spawn("sluice-verify-progress", move |stop| log_verify(&progress, stop)),
        }
    }
}

fn draw_verify(progress: &sluice_engine::verify::full::VerifyProgress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("verify [{bar:30}] {pos}/{len} tables  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut last = (std::time::Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        bar.set_length(progress.tables_total.load(Ordering::Relaxed) as u64);
        bar.set_position(progress.tables_done.load(Ordering::Relaxed) as u64);
        let rows = progress.table_rows.load(Ordering::Relaxed);
        let total = progress.rows.load(Ordering::Relaxed);
        let rate = (total.saturating_sub(last.1)) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        if last.0.elapsed() >= Duration::from_secs(1) {
            last = (std::time::Instant::now(), total);
        }
        let table = progress.table.lock().map(|t| t.clone()).unwrap_or_default();
        bar.set_message(format!("{table}: {rows} rows compared ({rate:.0} rows/s)"));
        std::thread::sleep(REFRESH);
    }
    bar.finish_and_clear();
}

fn log_verify(progress: &sluice_engine::verify::full::VerifyProgress, stop: &AtomicBool) {
    let mut next = std::time::Instant::now() + VERIFY_LOG_EVERY;
    let mut logged_table = String::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(REFRESH);
        let table = progress.table.lock().map(|t| t.clone()).unwrap_or_default();
        // A line when a table starts, and every few seconds within one.
        let new_table = !table.is_empty() && table != logged_table;
        if !new_table && std::time::Instant::now() < next {
            continue;
        }
        next = std::time::Instant::now() + VERIFY_LOG_EVERY;
        logged_table.clone_from(&table);
        tracing::info!(
            tables_done = progress.tables_done.load(Ordering::Relaxed),
            tables = progress.tables_total.load(Ordering::Relaxed),
            table = %table,
            table_rows = progress.table_rows.load(Ordering::Relaxed),
            rows = progress.rows.load(Ordering::Relaxed),
            "verify progress"
        );
    }
    // The last figures, whether or not a line was due: a short run logs at least this one.
    tracing::info!(
        tables_done = progress.tables_done.load(Ordering::Relaxed),
        tables = progress.tables_total.load(Ordering::Relaxed),
        rows = progress.rows.load(Ordering::Relaxed),
        "verify progress: finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etas_read_naturally() {
        assert_eq!(format_eta(Duration::from_secs(12)), "12s");
        assert_eq!(format_eta(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_eta(Duration::from_secs(3720)), "1h02m");
    }
}
