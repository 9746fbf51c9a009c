//! Raw events (typically FORMAT_DESCRIPTION, TABLE_MAP, then the event under test) with
//! CRC32 verification off and forgiving framing, so mutations reach the event bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_binlog_fuzz::decode_stream(data);
});
