//! `sluice verify`: runs the engine's verification and prints its report.

use std::process::ExitCode;

use sluice_engine::config::Config;
use sluice_engine::verify::full::{verify, Outcome, VerifyOptions};

/// Exit status when some table could not be compared yet.
const EXIT_NOT_READY: u8 = 3;
/// Exit status when differences remain.
const EXIT_DIFFERS: u8 = 4;

pub async fn run(config: &Config, options: &VerifyOptions, json: bool) -> anyhow::Result<ExitCode> {
    let display = crate::progress::VerifyDisplay::start(options.progress.clone());
    let reports = verify(config, options).await;
    drop(display);
    let reports = reports?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            let what = match r.outcome {
                Outcome::Equal => "equal".to_owned(),
                Outcome::Repaired => format!("equal after repairing {} row(s)", r.repaired),
                Outcome::NotReady => "NOT READY".to_owned(),
                Outcome::Differs => format!(
                    "DIFFERS: {} missing, {} extra, {} different{}",
                    r.missing,
                    r.extra,
                    r.different,
                    if r.repaired > 0 {
                        format!(" ({} repaired, these remain)", r.repaired)
                    } else {
                        String::new()
                    }
                ),
            };
            if r.outcome == Outcome::NotReady {
                println!(
                    "table {} <- {}: {what}: {}",
                    r.table,
                    r.source,
                    r.note.as_deref().unwrap_or("")
                );
                continue;
            }
            println!(
                "table {} <- {}: {what} ({} source rows, {} target rows, {} chunks by {}, {} re-checked, {:.2} s)",
                r.table, r.source, r.source_rows, r.target_rows, r.chunks, r.method, r.suspects, r.seconds
            );
            for k in &r.keys {
                println!("  {:?} key {}", k.difference, k.key);
            }
            if let Some(note) = &r.note {
                println!("  note: {note}");
            }
        }
    }
    let code = if reports.iter().any(|r| r.outcome == Outcome::Differs) {
        EXIT_DIFFERS
    } else if reports.iter().any(|r| r.outcome == Outcome::NotReady) {
        EXIT_NOT_READY
    } else {
        0
    };
    Ok(ExitCode::from(code))
}
