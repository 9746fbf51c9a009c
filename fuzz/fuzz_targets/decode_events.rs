//! Whole binlog files through reader, decoder, TABLE_MAP → TableDef and row decoding, with
//! checksums verified (the path `sluice binlog dump FILE` and the fixture tests take).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_binlog_fuzz::decode_file(data);
});
