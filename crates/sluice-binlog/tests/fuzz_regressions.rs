//! Inputs the fuzzer (`fuzz/`, see `fuzz/README.md`) found to panic, overflow, allocate
//! absurdly or hang, minimized with `cargo fuzz tmin`. Each must now end in a decode error,
//! promptly and without panicking.
//!
//! The files live in `tests/data/fuzz/`. Their name says which loop they go through:
//! `file-*.bin` are whole binlog files (target `decode_events`), `stream-*.bin` are raw event
//! sequences decoded with checksums off (target `decode_single_event`). The two loops below
//! are copies of `fuzz/src/lib.rs`; keep them in step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use sluice_binlog::file::{BinlogFileReader, MAGIC};
use sluice_binlog::{EventBody, EventDecoder, TableDef};

const HEADER_LEN: usize = 19;

/// The fuzzer's own limit (`-timeout=10`); a fixed input needs milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// No single allocation may be larger than this (the fuzzer runs with `-malloc_limit_mb=512`;
/// the stored inputs are a few hundred bytes, so anything near that is a bug).
const ALLOCATION_LIMIT: usize = 64 << 20;

/// The system allocator, remembering the largest single allocation this test binary made.
struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

#[derive(Debug, Default)]
struct Outcome {
    events: usize,
    rows: usize,
    error: Option<String>,
}

#[derive(Default)]
struct Tables {
    defs: HashMap<u64, TableDef>,
    last: Option<TableDef>,
}

impl Tables {
    fn apply(&mut self, body: EventBody<'_>, outcome: &mut Outcome, lenient_ids: bool) -> Result<(), String> {
        match body {
            EventBody::TableMap(map) => {
                let def = map.to_table_def();
                let _ = map.has_full_metadata();
                self.last = Some(def.clone());
                self.defs.insert(map.table_id, def);
            }
            EventBody::Rows(rows) => {
                let table = match self.defs.get(&rows.table_id) {
                    Some(t) => t,
                    None if lenient_ids => match &self.last {
                        Some(t) => t,
                        None => return Err("rows for unknown table id".into()),
                    },
                    None => return Err("rows for unknown table id".into()),
                };
                let _ = rows.is_statement_end();
                for row in rows.rows(table).map_err(|e| e.to_string())? {
                    let row = row.map_err(|e| e.to_string())?;
                    let _ = format!("{row:?}");
                    outcome.rows += 1;
                }
            }
            other => {
                let _ = format!("{other:?}");
            }
        }
        Ok(())
    }
}

/// Whole binlog file, checksums verified (fuzz target `decode_events`).
fn decode_file(data: &[u8]) -> Outcome {
    let owned;
    let data = if data.starts_with(&MAGIC) {
        data
    } else {
        owned = [&MAGIC[..], data].concat();
        &owned[..]
    };
    let mut outcome = Outcome::default();
    let mut reader = match BinlogFileReader::new(data, "fuzz") {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let mut decoder = EventDecoder::new();
    let mut tables = Tables::default();
    loop {
        let (offset, raw) = match reader.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                outcome.error = Some(e.to_string());
                break;
            }
        };
        let event = match decoder.decode(raw) {
            Ok(ev) => ev,
            Err(e) => {
                outcome.error = Some(format!("offset {offset}: {e}"));
                break;
            }
        };
        outcome.events += 1;
        if let Err(e) = tables.apply(event.body, &mut outcome, false) {
            outcome.error = Some(format!("offset {offset}: {e}"));
            break;
        }
    }
    outcome
}

/// Raw events without magic, checksums not verified, sizes patched (fuzz target
/// `decode_single_event`).
fn decode_stream(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut decoder = EventDecoder::new();
    decoder.set_verify_checksums(false);
    let mut tables = Tables::default();
    let mut rest = data;
    let mut offset = 0usize;
    while !rest.is_empty() {
        let declared = if rest.len() >= HEADER_LEN {
            u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize
        } else {
            rest.len()
        };
        let len = if declared < HEADER_LEN {
            rest.len()
        } else {
            declared.min(rest.len())
        };
        let mut raw = rest[..len].to_vec();
        rest = &rest[len..];
        if raw.len() >= HEADER_LEN {
            raw[9..13].copy_from_slice(&(len as u32).to_le_bytes());
        }
        let at = offset;
        offset += len;
        let event = match decoder.decode(&raw) {
            Ok(ev) => ev,
            Err(e) => {
                outcome.error = Some(format!("offset {at}: {e}"));
                break;
            }
        };
        outcome.events += 1;
        if let Err(e) = tables.apply(event.body, &mut outcome, true) {
            outcome.error = Some(format!("offset {at}: {e}"));
            break;
        }
    }
    outcome
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz")
}

/// Runs the input through the loop its name selects, on a thread so that a hang fails the
/// test instead of hanging it, and returns the outcome. A panic, or an allocation above
/// [`ALLOCATION_LIMIT`] anywhere in this test binary so far, fails the test.
fn run(name: &str) -> Outcome {
    let path = data_dir().join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = name.starts_with("file-");
    assert!(
        file || name.starts_with("stream-"),
        "{name}: name must start with file- or stream-"
    );
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let outcome = if file { decode_file(&data) } else { decode_stream(&data) };
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(outcome) => {
            worker.join().unwrap();
            let largest = LARGEST.load(Ordering::Relaxed);
            assert!(largest <= ALLOCATION_LIMIT, "{name}: allocated {largest} bytes at once");
            outcome
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: still decoding after {DEADLINE:?} (hang)"),
    }
}

/// Asserts the input ends in an error that mentions `expected`.
fn assert_error(name: &str, expected: &str) -> Outcome {
    let outcome = run(name);
    let error = outcome
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("{name}: decoded without error: {outcome:?}"));
    assert!(error.contains(expected), "{name}: {error}");
    outcome
}

#[test]
fn every_stored_crash_input_ends_in_an_error() {
    let mut names: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "bin"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in &names {
        let outcome = run(name);
        assert!(outcome.error.is_some(), "{name}: decoded without error: {outcome:?}");
    }
}

/// A TABLE_MAP and a rows event with zero columns: each row image was zero bytes long, so
/// the row iterator yielded empty rows forever without consuming input.
#[test]
fn zero_column_rows_event_is_an_error_not_a_hang() {
    assert_error("stream-zero-column-rows-hang.bin", "no columns");
}

/// A 19-byte file whose only event header claims 938 MB: the reader sized its buffer from
/// the header before reading, allocating almost a GiB for a few bytes of input.
#[test]
fn huge_event_size_is_an_error_without_a_huge_allocation() {
    assert_error("file-huge-event-size-oom.bin", "truncated event");
}

/// A DECIMAL(10,4) value whose trailing 4-digit fraction group held 65535: mysql_common's
/// `Decimal::read_bin` multiplied it by 10^5 in an `i32` and overflowed.
#[test]
fn decimal_digit_group_out_of_range_is_an_error() {
    assert_error("stream-decimal-digit-group-overflow.bin", "DECIMAL value");
}
