//! Every real binlog fixture decodes without panicking; valid files decode completely.

use std::collections::HashMap;
use std::path::PathBuf;

use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::{EventBody, EventDecoder, TableDef};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mysql-binlogs")
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

/// Files that hold only events sluice decodes fully (MySQL 5.1–8.0, MariaDB 10.5).
const CLEAN: &[&str] = &[
    "binlog_transaction.000001",
    "binlog_transaction_previous_GTID_no_tag.000001",
    "binlog_transaction_with_GTID.000001",
    "binlog_transaction_with_anonymous_GTID.000001",
    "bug11747887-bin.000003",
    "bug16266.000001",
    "bug32407.001",
    "bug33029-slave-relay-bin.000001",
    "bug40482-bin.000001",
    "mariadb-bin.000001",
    "master-bin.000001",
    "mysql_type_bit.000001",
    "rpl_atomic_ddl_rollback_full.000001",
    "rpl_atomic_ddl_rollback_view.000001",
    "rpl_cross_version_default_utf8mb4_collation.000001",
    "slave-relay-bin.000001",
    "ver_5_1-wl2325_r.001",
    "ver_5_1-wl2325_s.001",
    "ver_5_1_23.001",
    "ver_trunk_row_v2.001",
];

#[test]
fn clean_fixtures_decode_completely() {
    for name in CLEAN {
        let s = decode_file(name);
        assert!(s.error.is_none(), "{name}: {:?}", s.error);
        assert!(s.events > 0, "{name}: no events");
    }
}

#[test]
fn broken_fixtures_fail_with_offset_and_reason() {
    let truncated = decode_file("binlog_truncated_event.000001");
    let err = truncated.error.expect("truncated file must fail");
    assert!(err.contains("offset 4") && err.contains("truncated"), "{err}");
    let corrupt = decode_file("corrupt-relay-bin.000624");
    let err = corrupt.error.expect("corrupt file must fail");
    assert!(err.contains("offset 91204"), "{err}");
}

#[test]
fn images_that_are_not_full_are_refused() {
    for name in ["minimal_row_metadata.000001", "write-partial-row.binlog"] {
        let err = decode_file(name).error.unwrap_or_default();
        assert!(err.contains("binlog_row_image=FULL"), "{name}: {err}");
    }
    let err = decode_file("json.binlog.000001").error.unwrap_or_default();
    assert!(err.contains("PARTIAL_UPDATE_ROWS"), "{err}");
}

#[test]
fn mariadb_fixture_rows_have_the_values_the_statements_wrote() {
    let path = fixtures_dir().join("mariadb-bin.000001");
    let mut reader = BinlogFileReader::new(std::fs::File::open(path).unwrap(), "mariadb-bin.000001").unwrap();
    let mut decoder = EventDecoder::new();
    let mut table = None;
    let mut gtids = Vec::new();
    let mut rows = Vec::new();
    while let Some((_, raw)) = reader.next_event().unwrap() {
        match decoder.decode(raw).unwrap().body {
            EventBody::Gtid(g) => gtids.push(g.gtid.to_string()),
            EventBody::TableMap(map) => table = Some(map.to_table_def()),
            EventBody::Rows(ev) => {
                let def = table.as_ref().unwrap();
                for change in ev.rows(def).unwrap() {
                    rows.push(change.unwrap());
                }
            }
            _ => {}
        }
    }
    assert_eq!(gtids, vec!["0-1-1", "0-1-2"]);
    let def = table.unwrap();
    let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["id", "topic", "event_type", "event", "created"]);
    assert_eq!(def.primary_key, vec![0]);
    let sluice_binlog::RowChange::Insert(first) = &rows[0] else {
        panic!("insert expected")
    };
    assert_eq!(first[0], sluice_binlog::Value::Int(62));
    assert_eq!(first[1], sluice_binlog::Value::Text("foo".into()));
    assert_eq!(first[2], sluice_binlog::Value::Enum("JSON".into()));
    assert_eq!(first[3], sluice_binlog::Value::Bytes(br#"{"foo":1}"#.to_vec()));
    assert_eq!(first[4].to_string(), "2022-04-20 22:18:04");
}

#[test]
fn every_fixture_is_handled_without_panicking() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory crates/sluice-binlog/tests/fixtures/mysql-binlogs")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "expected the fixture set, found {names:?}");
    for name in &names {
        let s = decode_file(name);
        println!("{name}: {} events, {} rows, error: {:?}", s.events, s.rows, s.error);
    }
}

/// The MySQL GTID events and PREVIOUS_GTIDS sets of a fixture, decoded.
fn mysql_gtids(name: &str) -> (Vec<sluice_binlog::MysqlGtidEvent>, Vec<sluice_binlog::MysqlGtidSet>) {
    let path = fixtures_dir().join(name);
    let mut reader = BinlogFileReader::new(std::fs::File::open(path).unwrap(), name).unwrap();
    let mut decoder = EventDecoder::new();
    let (mut gtids, mut previous) = (Vec::new(), Vec::new());
    while let Some((_, raw)) = reader.next_event().unwrap() {
        match decoder.decode(raw).unwrap().body {
            EventBody::MysqlGtid(g) => gtids.push(g),
            EventBody::PreviousGtids(set) => previous.push(set),
            _ => {}
        }
    }
    (gtids, previous)
}

#[test]
fn mysql_5_6_gtids_and_empty_previous_set() {
    let (gtids, previous) = mysql_gtids("binlog_transaction_with_GTID.000001");
    let texts: Vec<String> = gtids.iter().filter_map(|g| g.gtid_text()).collect();
    assert_eq!(
        texts,
        [1, 2, 3].map(|n| format!("006c2cf2-b1ea-11e4-9057-8c705a3d3e78:{n}"))
    );
    // 5.6 has no logical clock or commit timestamps.
    assert!(gtids
        .iter()
        .all(|g| g.sequence_number.is_none() && g.immediate_commit_timestamp.is_none()));
    assert_eq!(previous.len(), 1);
    assert!(previous[0].is_empty());
}

#[test]
fn mysql_8_0_gtids_carry_logical_clock_timestamps_and_versions() {
    let (gtids, previous) = mysql_gtids("mysql_type_bit.000001");
    assert!(previous.iter().all(|p| p.is_empty()));
    let mut executed = sluice_binlog::MysqlGtidSet::new();
    for g in &gtids {
        let (uuid, tag, gno) = g.gtid.clone().expect("not anonymous");
        executed.insert(uuid, tag.as_ref(), gno).unwrap();
    }
    assert_eq!(executed.to_string(), "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a:1-3");
    let clocks: Vec<_> = gtids.iter().map(|g| (g.last_committed, g.sequence_number)).collect();
    assert_eq!(clocks, [(Some(0), Some(1)), (Some(1), Some(2)), (Some(2), Some(3))]);
    assert!(gtids.iter().all(|g| g.immediate_server_version == Some(80026)));
    assert!(gtids
        .iter()
        .all(|g| g.original_commit_timestamp == g.immediate_commit_timestamp));
    // The first transaction (the CREATE TABLE) is 335 bytes long; the DDL may have SBR
    // changes (flag bit 0), the last transaction (row events only) not.
    assert_eq!(gtids[0].transaction_length, Some(335));
    assert_eq!((gtids[0].flags, gtids[2].flags), (1, 0));
    // Commit timestamps are microseconds in 2022 (the fixture's year) and increase.
    let ts: Vec<u64> = gtids.iter().map(|g| g.immediate_commit_timestamp.unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert!(
        (1_640_995_200_000_000..1_672_531_200_000_000).contains(&ts[0]),
        "{ts:?}"
    );
}

#[test]
fn mysql_previous_gtids_and_anonymous_transactions() {
    let (_, previous) = mysql_gtids("binlog_transaction_previous_GTID_no_tag.000001");
    assert_eq!(previous[0].to_string(), "b9b88c66-0755-11f1-9899-4a9da94c4d71:1-2");
    let (gtids, _) = mysql_gtids("binlog_transaction_with_anonymous_GTID.000001");
    assert_eq!(gtids.len(), 2);
    assert!(gtids.iter().all(|g| g.gtid.is_none() && g.gtid_text().is_none()));
}
