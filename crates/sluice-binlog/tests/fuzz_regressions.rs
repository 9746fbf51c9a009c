//! Inputs the fuzzer (`fuzz/`, see `fuzz/README.md`) found to panic, overflow, allocate
//! absurdly or hang, minimized with `cargo fuzz tmin`. Each must now end in a decode error,
//! promptly and without panicking.
//!
//! The files live in `tests/data/fuzz/`. Their name says which loop they go through:
//! `file-*.bin` are whole binlog files (target `decode_events`), `stream-*.bin` are raw event
//! sequences decoded with checksums off (target `decode_single_event`). Both loops are
//! `fuzz/src/lib.rs` itself, compiled in below.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The fuzz targets' own decode loops, compiled into this test from the same source file.
#[path = "../../../fuzz/src/lib.rs"]
mod decode_loops;

use decode_loops::{decode_file, decode_stream, Outcome};

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
