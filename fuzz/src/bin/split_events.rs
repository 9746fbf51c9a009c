//! Splits binlog files into seeds for the `decode_single_event` target.
//!
//! `split_events OUT_DIR FILE...` writes, for every event of every file, one seed made of the
//! file's FORMAT_DESCRIPTION event, the last TABLE_MAP event before it (for rows events), and
//! the event itself, without the file magic. Reading stops at the first framing error.

use std::path::Path;

use sluice_binlog::file::BinlogFileReader;

const FORMAT_DESCRIPTION: u8 = 15;
const TABLE_MAP: u8 = 19;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: split_events OUT_DIR FILE...");
    std::fs::create_dir_all(&out).unwrap();
    let mut written = 0;
    for path in args {
        let name = Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(mut reader) = BinlogFileReader::new(&bytes[..], name.clone()) else {
            continue;
        };
        let mut fde: Vec<u8> = Vec::new();
        let mut table_map: Vec<u8> = Vec::new();
        let mut index = 0;
        while let Ok(Some((_, raw))) = reader.next_event() {
            let type_code = raw[4];
            let mut seed = Vec::new();
            if type_code == FORMAT_DESCRIPTION {
                fde = raw.to_vec();
            } else {
                seed.extend_from_slice(&fde);
            }
            if (23..=25).contains(&type_code) || (30..=32).contains(&type_code) {
                seed.extend_from_slice(&table_map);
            }
            if type_code == TABLE_MAP {
                table_map = raw.to_vec();
            }
            seed.extend_from_slice(raw);
            std::fs::write(Path::new(&out).join(format!("{name}-{index:05}")), &seed).unwrap();
            index += 1;
            written += 1;
        }
    }
    eprintln!("wrote {written} seeds to {out}");
}
