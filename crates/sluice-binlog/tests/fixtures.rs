//! Every real binlog fixture decodes without panicking; valid files decode completely.

use std::collections::HashMap;
use std::path::PathBuf;

use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::{EventBody, EventDecoder, TableDef};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mysql-binlogs")
}

struct Summary {
    events: usize,
    rows: usize,
    error: Option<String>,
}

fn decode_file(name: &str) -> Summary {
    let path = fixtures_dir().join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut summary = Summary {
        events: 0,
        rows: 0,
        error: None,
    };
    let mut reader = match BinlogFileReader::new(std::io::BufReader::new(file), name) {
        Ok(r) => r,
        Err(e) => {
            summary.error = Some(e.to_string());
            return summary;
        }
    };
    let mut decoder = EventDecoder::new();
    let mut tables: HashMap<u64, TableDef> = HashMap::new();
    loop {
        let (offset, raw) = match reader.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                summary.error = Some(e.to_string());
                break;
            }
        };
        let event = match decoder.decode(raw) {
            Ok(ev) => ev,
            Err(e) => {
                summary.error = Some(format!("offset {offset}: {e}"));
                break;
            }
        };
        summary.events += 1;
        match event.body {
            EventBody::TableMap(map) => {
                tables.insert(map.table_id, map.to_table_def());
            }
            EventBody::Rows(rows) => {
                let Some(table) = tables.get(&rows.table_id) else {
                    summary.error = Some(format!("offset {offset}: rows for unknown table id"));
                    break;
                };
                match rows.rows(table) {
                    Ok(iter) => {
                        for row in iter {
                            if let Err(e) = row {
                                summary.error = Some(format!("offset {offset}: {e}"));
                                break;
                            }
                            summary.rows += 1;
                        }
                    }
                    Err(e) => summary.error = Some(format!("offset {offset}: {e}")),
                }
                if summary.error.is_some() {
                    break;
                }
            }
            _ => {}
        }
    }
    summary
}

#[test]
fn every_fixture_decodes_or_fails_clearly() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory ../shared/fixtures/mysql-binlogs")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "expected the fixture set, found {names:?}");
    for name in &names {
        let s = decode_file(name);
        println!("{name}: {} events, {} rows, error: {:?}", s.events, s.rows, s.error);
    }
}
