//! SQLite target tests, against real database files in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Gtid, SourcePosition, Value};
use sluice_engine::target::sqlite::{read_rows, widen_f32, SqliteTarget};
use sluice_engine::target::{Checkpoint, RowOp, Target, TargetColumn, TargetError, TargetTable};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Builders

fn def(name: &str, kind: ColumnKind) -> ColumnDef {
    ColumnDef {
        name: name.to_owned(),
        kind,
        binlog_type: 0,
        meta: 0,
        unsigned: false,
        nullable: true,
        charset: match kind {
            ColumnKind::Binary | ColumnKind::Other => Charset::Binary,
            _ => Charset::Utf8,
        },
        labels: Vec::new(),
        precision: 0,
        scale: 0,
        fsp: 0,
        length: 0,
    }
}

fn not_null(mut c: ColumnDef) -> ColumnDef {
    c.nullable = false;
    c
}

fn unsigned(mut c: ColumnDef) -> ColumnDef {
    c.unsigned = true;
    c
}

fn length(mut c: ColumnDef, n: u32) -> ColumnDef {
    c.length = n;
    c
}

fn table(name: &str, columns: Vec<ColumnDef>, key: &[usize]) -> Arc<TargetTable> {
    Arc::new(TargetTable {
        source_name: format!("src.{name}"),
        name: name.to_owned(),
        columns: columns
            .into_iter()
            .map(|source| TargetColumn {
                name: source.name.clone(),
                source,
            })
            .collect(),
        key: key.to_vec(),
        rules: String::new(),
    })
}

/// `users (id INT NOT NULL, name VARCHAR, score DOUBLE)`, key `id`.
fn users() -> Arc<TargetTable> {
    table(
        "users",
        vec![
            not_null(def("id", ColumnKind::Int)),
            length(def("name", ColumnKind::Text), 40),
            def("score", ColumnKind::Double),
        ],
        &[0],
    )
}

fn user(id: i64, name: &str, score: f64) -> Vec<Value> {
    vec![Value::Int(id), Value::Text(name.to_owned()), Value::Double(score)]
}

fn user_sql(id: i64, name: &str, score: f64) -> Vec<Sql> {
    vec![Sql::Integer(id), Sql::Text(name.to_owned()), Sql::Real(score)]
}

fn insert(t: &Arc<TargetTable>, row: Vec<Value>) -> RowOp {
    RowOp::Insert {
        table: Arc::clone(t),
        row,
    }
}

fn update(t: &Arc<TargetTable>, before: Vec<Value>, after: Vec<Value>) -> RowOp {
    RowOp::Update {
        table: Arc::clone(t),
        before,
        after,
    }
}

fn delete(t: &Arc<TargetTable>, row: Vec<Value>) -> RowOp {
    RowOp::Delete {
        table: Arc::clone(t),
        row,
    }
}

fn checkpoint(seq: u64, commit: u32) -> Checkpoint {
    let mut position = SourcePosition::new();
    position.advance(Gtid {
        domain: 0,
        server: 1,
        sequence: seq,
    });
    position.advance(Gtid {
        domain: 7,
        server: 2,
        sequence: 99,
    });
    Checkpoint {
        position,
        source_commit_unix: commit,
        ..Checkpoint::default()
    }
}

struct Fixture {
    _dir: TempDir,
    path: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.db");
    Fixture { _dir: dir, path }
}

fn open_prepared(path: &Path, tables: &[Arc<TargetTable>]) -> SqliteTarget {
    let mut target = SqliteTarget::open(path).unwrap();
    target.prepare(tables).unwrap();
    target
}

/// Applies `ops` in one target transaction and commits `cp`.
fn apply_all(target: &mut SqliteTarget, ops: &[RowOp], cp: &Checkpoint) {
    target.begin().unwrap();
    for op in ops {
        target.apply(op).unwrap();
    }
    target.commit(cp).unwrap();
}

fn rows(path: &Path, t: &TargetTable) -> Vec<Vec<Sql>> {
    read_rows(path, t).unwrap()
}

fn reader(path: &Path) -> Connection {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Type mapping

/// Every ColumnKind with a value of its Value variant: (column, value, expected stored value,
/// expected declared type).
fn type_cases() -> Vec<(ColumnDef, Value, Sql, &'static str)> {
    let mut decimal = def("decimal_65_30", ColumnKind::Decimal);
    decimal.precision = 65;
    decimal.scale = 30;
    let decimal_text = "-12345678901234567890123456789012345.123456789012345678901234567890".to_owned();
    let mut datetime6 = def("datetime6", ColumnKind::DateTime);
    datetime6.fsp = 6;
    let mut enum_col = def("enum", ColumnKind::Enum);
    enum_col.labels = vec!["small".into(), "large".into()];
    let mut set_col = def("set", ColumnKind::Set);
    set_col.labels = vec!["a".into(), "b".into(), "c".into()];
    let mut latin1 = def("latin1_text", ColumnKind::Text);
    latin1.charset = Charset::Latin1;
    let mut undecoded = def("sjis_text", ColumnKind::Text);
    undecoded.charset = Charset::Other(13);
    let blob_with_nuls = vec![0u8, 1, 0, 255, 0, b'x', 0];

    vec![
        (
            def("tinyint", ColumnKind::TinyInt),
            Value::Int(-128),
            Sql::Integer(-128),
            "INTEGER",
        ),
        (
            def("smallint", ColumnKind::SmallInt),
            Value::Int(-32768),
            Sql::Integer(-32768),
            "INTEGER",
        ),
        (
            def("mediumint", ColumnKind::MediumInt),
            Value::Int(8_388_607),
            Sql::Integer(8_388_607),
            "INTEGER",
        ),
        (
            def("int", ColumnKind::Int),
            Value::Int(-2_147_483_648),
            Sql::Integer(-2_147_483_648),
            "INTEGER",
        ),
        (
            def("bigint", ColumnKind::BigInt),
            Value::Int(i64::MIN),
            Sql::Integer(i64::MIN),
            "INTEGER",
        ),
        (
            unsigned(def("tinyint_u", ColumnKind::TinyInt)),
            Value::UInt(255),
            Sql::Integer(255),
            "INTEGER",
        ),
        (
            unsigned(def("int_u", ColumnKind::Int)),
            Value::UInt(4_294_967_295),
            Sql::Integer(4_294_967_295),
            "INTEGER",
        ),
        (
            unsigned(def("bigint_u_max", ColumnKind::BigInt)),
            Value::UInt(u64::MAX),
            Sql::Text("18446744073709551615".into()),
            "ANY",
        ),
        (
            unsigned(def("bigint_u_i64max", ColumnKind::BigInt)),
            Value::UInt(9_223_372_036_854_775_807),
            Sql::Integer(i64::MAX),
            "ANY",
        ),
        (
            unsigned(def("bigint_u_above", ColumnKind::BigInt)),
            Value::UInt(9_223_372_036_854_775_808),
            Sql::Text("9223372036854775808".into()),
            "ANY",
        ),
        (
            def("float", ColumnKind::Float),
            Value::Float(0.1),
            Sql::Real(0.1),
            "REAL",
        ),
        (
            def("double", ColumnKind::Double),
            Value::Double(-1.5e300),
            Sql::Real(-1.5e300),
            "REAL",
        ),
        (
            decimal,
            Value::Decimal(decimal_text.clone()),
            Sql::Text(decimal_text),
            "TEXT",
        ),
        (
            def("zero_date", ColumnKind::Date),
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
            Sql::Text("0000-00-00".into()),
            "TEXT",
        ),
        (
            def("date", ColumnKind::Date),
            Value::Date {
                year: 2024,
                month: 2,
                day: 29,
            },
            Sql::Text("2024-02-29".into()),
            "TEXT",
        ),
        (
            def("time", ColumnKind::Time),
            Value::Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 58,
                micros: 5,
            },
            Sql::Text("-838:59:58.000005".into()),
            "TEXT",
        ),
        (
            datetime6,
            Value::DateTime {
                year: 9999,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59,
                micros: 999_999,
            },
            Sql::Text("9999-12-31 23:59:59.999999".into()),
            "TEXT",
        ),
        (
            def("datetime", ColumnKind::DateTime),
            Value::DateTime {
                year: 0,
                month: 0,
                day: 0,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
            },
            Sql::Text("0000-00-00 00:00:00".into()),
            "TEXT",
        ),
        (
            def("timestamp", ColumnKind::Timestamp),
            Value::Timestamp {
                seconds: 1_700_000_000,
                micros: 120,
            },
            Sql::Text("2023-11-14 22:13:20.000120".into()),
            "TEXT",
        ),
        (
            def("zero_timestamp", ColumnKind::Timestamp),
            Value::Timestamp { seconds: 0, micros: 0 },
            Sql::Text("0000-00-00 00:00:00".into()),
            "TEXT",
        ),
        (
            def("year", ColumnKind::Year),
            Value::Year(2155),
            Sql::Integer(2155),
            "INTEGER",
        ),
        (
            def("text", ColumnKind::Text),
            Value::Text("héllo 👋🏽 名前 \"'; --".into()),
            Sql::Text("héllo 👋🏽 名前 \"'; --".into()),
            "TEXT",
        ),
        (
            latin1,
            Value::Text("Ærøskøbing".into()),
            Sql::Text("Ærøskøbing".into()),
            "TEXT",
        ),
        (
            undecoded,
            Value::Bytes(vec![0x82, 0xa0, 0x00]),
            Sql::Blob(vec![0x82, 0xa0, 0x00]),
            "BLOB",
        ),
        (
            def("blob", ColumnKind::Binary),
            Value::Bytes(blob_with_nuls.clone()),
            Sql::Blob(blob_with_nuls),
            "BLOB",
        ),
        (enum_col, Value::Enum("large".into()), Sql::Text("large".into()), "TEXT"),
        (set_col, Value::Set("a,c".into()), Sql::Text("a,c".into()), "TEXT"),
        (
            length(def("bit_5", ColumnKind::Bit), 5),
            Value::Bit(0b10110),
            Sql::Integer(0b10110),
            "INTEGER",
        ),
        (
            length(def("bit_64", ColumnKind::Bit), 64),
            Value::Bit(u64::MAX),
            Sql::Text("18446744073709551615".into()),
            "ANY",
        ),
        (
            def("json", ColumnKind::Json),
            Value::Json(r#"{"a":[1,2.5,"x"],"b":null}"#.into()),
            Sql::Text(r#"{"a":[1,2.5,"x"],"b":null}"#.into()),
            "TEXT",
        ),
        (
            def("geometry", ColumnKind::Other),
            Value::Bytes(vec![0, 0, 0, 0, 1, 1]),
            Sql::Blob(vec![0, 0, 0, 0, 1, 1]),
            "BLOB",
        ),
    ]
}

#[test]
fn every_type_round_trips_per_the_mapping() {
    let f = fixture();
    let cases = type_cases();
    let mut columns = vec![not_null(def("id", ColumnKind::Int))];
    columns.extend(cases.iter().map(|(c, ..)| c.clone()));
    let t = table("all_types", columns, &[0]);
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);

    let mut full = vec![Value::Int(1)];
    full.extend(cases.iter().map(|(_, v, ..)| v.clone()));
    let mut nulls = vec![Value::Int(2)];
    nulls.extend(cases.iter().map(|_| Value::Null));
    apply_all(&mut target, &[insert(&t, full), insert(&t, nulls)], &checkpoint(1, 1));

    let got = rows(&f.path, &t);
    assert_eq!(got.len(), 2);
    for (i, (c, _, expected, _)) in cases.iter().enumerate() {
        assert_eq!(&got[0][i + 1], expected, "column {}", c.name);
        assert_eq!(got[1][i + 1], Sql::Null, "column {} (null row)", c.name);
    }

    // Declared types, and the storage class SQLite actually holds.
    let conn = reader(&f.path);
    for (c, _, expected, declared) in &cases {
        let ty: String = conn
            .query_row(
                "SELECT type FROM pragma_table_info('all_types') WHERE name = ?1",
                [&c.name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ty, *declared, "declared type of {}", c.name);
        let class: String = conn
            .query_row(
                &format!("SELECT typeof(\"{}\") FROM all_types WHERE id = 1", c.name),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let expected_class = match expected {
            Sql::Integer(_) => "integer",
            Sql::Real(_) => "real",
            Sql::Text(_) => "text",
            Sql::Blob(_) => "blob",
            Sql::Null => "null",
        };
        assert_eq!(class, expected_class, "storage class of {}", c.name);
    }
    let sql: String = conn
        .query_row("SELECT sql FROM sqlite_schema WHERE name = 'all_types'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(sql.ends_with("STRICT"), "{sql}");
}

#[test]
fn float_widening_keeps_the_displayed_value_and_the_f32() {
    assert_eq!(widen_f32(0.1), 0.1);
    assert_eq!(widen_f32(-3.4028235e38), -3.4028235e38);
    assert_eq!(widen_f32(1.0e-45), 1.0e-45);
    // A double-rounding corner case: the decimal route would not give back the same f32.
    let corner = -7.038531e-26_f32;
    assert_ne!(
        ("-7.038531e-26".parse::<f64>().unwrap() as f32).to_bits(),
        corner.to_bits()
    );
    assert_eq!(widen_f32(corner), f64::from(corner));
    for v in [0.1_f32, 1.0 / 3.0, 16_777_217.0, f32::MIN_POSITIVE, corner] {
        assert_eq!((widen_f32(v) as f32).to_bits(), v.to_bits(), "{v}");
    }
}

#[test]
fn unsigned_bigint_keys_above_i64_max_work() {
    let f = fixture();
    let t = table(
        "big_keys",
        vec![
            not_null(unsigned(def("id", ColumnKind::BigInt))),
            def("v", ColumnKind::Int),
        ],
        &[0],
    );
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    let ops = [
        insert(&t, vec![Value::UInt(u64::MAX), Value::Int(1)]),
        insert(&t, vec![Value::UInt(5), Value::Int(2)]),
        insert(&t, vec![Value::UInt(u64::MAX), Value::Int(3)]),
        update(
            &t,
            vec![Value::UInt(5), Value::Int(2)],
            vec![Value::UInt(5), Value::Int(4)],
        ),
    ];
    apply_all(&mut target, &ops, &checkpoint(1, 1));
    assert_eq!(
        rows(&f.path, &t),
        vec![
            vec![Sql::Integer(5), Sql::Integer(4)],
            vec![Sql::Text("18446744073709551615".into()), Sql::Integer(3)],
        ]
    );
    apply_all(
        &mut target,
        &[delete(&t, vec![Value::UInt(u64::MAX), Value::Null])],
        &checkpoint(2, 2),
    );
    assert_eq!(rows(&f.path, &t), vec![vec![Sql::Integer(5), Sql::Integer(4)]]);
}

#[test]
fn a_value_of_the_wrong_kind_is_refused_naming_table_and_column_but_not_the_value() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "ok", 1.0))).unwrap();
    let bad = vec![Value::Text("secret-pii-value".into()), Value::Null, Value::Null];
    let err = target.apply(&insert(&t, bad)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("table users"), "{msg}");
    assert!(msg.contains("column id"), "{msg}");
    assert!(msg.contains("text value"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");
    // The transaction is gone: commit is refused and nothing was written.
    assert!(target.commit(&checkpoint(1, 1)).is_err());
    target.rollback().unwrap();
    assert!(rows(&f.path, &t).is_empty());
    assert_eq!(target.load_checkpoint().unwrap(), None);

    // Other mismatches: a TIMESTAMP value in a DATETIME column, bytes in a text column, an
    // unsigned value too large for an INTEGER column.
    let t2 = table(
        "strict_kinds",
        vec![
            not_null(def("id", ColumnKind::Int)),
            def("dt", ColumnKind::DateTime),
            def("txt", ColumnKind::Text),
            unsigned(def("u", ColumnKind::Int)),
        ],
        &[0],
    );
    target.prepare(&[Arc::clone(&t2)]).unwrap();
    let cases = [
        (1, Value::Timestamp { seconds: 1, micros: 0 }, "dt"),
        (2, Value::Bytes(vec![1, 2]), "txt"),
        (3, Value::UInt(u64::MAX), "u"),
    ];
    for (col, value, name) in cases {
        let mut row = vec![Value::Int(1), Value::Null, Value::Null, Value::Null];
        row[col] = value;
        target.begin().unwrap();
        let msg = target.apply(&insert(&t2, row)).unwrap_err().to_string();
        assert!(msg.contains("strict_kinds") && msg.contains(name), "{msg}");
        target.rollback().unwrap();
    }
}

#[test]
fn null_in_a_not_null_column_is_a_database_error_naming_the_column() {
    let f = fixture();
    let t = table(
        "nn",
        vec![
            not_null(def("id", ColumnKind::Int)),
            not_null(def("required", ColumnKind::Text)),
        ],
        &[0],
    );
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    target.begin().unwrap();
    let err = target.apply(&insert(&t, vec![Value::Int(1), Value::Null])).unwrap_err();
    match &err {
        TargetError::Database {
            operation,
            table,
            message,
        } => {
            assert_eq!(*operation, "upsert");
            assert_eq!(table, "nn");
            assert!(message.contains("required"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    target.rollback().unwrap();
}

#[test]
fn a_row_of_the_wrong_length_is_refused() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    target.begin().unwrap();
    let msg = target.apply(&insert(&t, vec![Value::Int(1)])).unwrap_err().to_string();
    assert!(msg.contains("users") && msg.contains("1 values"), "{msg}");
    target.rollback().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Transactions and checkpoints

#[test]
fn rollback_leaves_nothing_and_keeps_the_checkpoint() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 100));

    target.begin().unwrap();
    target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
    target
        .apply(&update(&t, user(1, "a", 1.0), user(1, "changed", 9.0)))
        .unwrap();
    target.apply(&delete(&t, user(1, "changed", 9.0))).unwrap();
    target.rollback().unwrap();

    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0)]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 100)));
    // Rolling back with no transaction open is harmless.
    target.rollback().unwrap();
}

#[test]
fn dropping_the_target_without_commit_leaves_nothing() {
    let f = fixture();
    let t = users();
    {
        let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
        apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 100));
        target.begin().unwrap();
        target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
        target.apply(&delete(&t, user(1, "a", 1.0))).unwrap();
        // Dropped here with the transaction open.
    }
    let mut target = SqliteTarget::open(&f.path).unwrap();
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 100)));
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0)]);
}

#[test]
fn checkpoint_round_trips_and_is_committed_with_the_rows() {
    let f = fixture();
    let t = users();
    {
        let mut target = SqliteTarget::open(&f.path).unwrap();
        assert_eq!(target.load_checkpoint().unwrap(), None, "fresh file");
        target.prepare(&[Arc::clone(&t)]).unwrap();
        assert_eq!(target.load_checkpoint().unwrap(), None, "prepared file");

        apply_all(
            &mut target,
            &[insert(&t, user(1, "a", 1.0))],
            &checkpoint(41, 1_700_000_000),
        );
        // Several source transactions in one target transaction: the latest checkpoint wins.
        apply_all(&mut target, &[insert(&t, user(2, "b", 2.0))], &checkpoint(42, u32::MAX));
        assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(42, u32::MAX)));
    }
    let mut reopened = SqliteTarget::open(&f.path).unwrap();
    assert_eq!(reopened.load_checkpoint().unwrap(), Some(checkpoint(42, u32::MAX)));
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0), user_sql(2, "b", 2.0)]);

    // An empty position is a valid checkpoint too.
    reopened.begin().unwrap();
    reopened.commit(&Checkpoint::default()).unwrap();
    assert_eq!(reopened.load_checkpoint().unwrap(), Some(Checkpoint::default()));

    // The row is stored as position text.
    let (position, commit): (String, i64) = reader(&f.path)
        .query_row("SELECT position, source_commit_unix FROM _sluice_checkpoint", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((position.as_str(), commit), ("", 0));
}

#[test]
fn the_checkpoint_is_invisible_until_commit() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(&mut target, &[], &checkpoint(1, 1));
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
    // A second connection still sees the old checkpoint and no rows.
    let mut other = SqliteTarget::open(&f.path).unwrap();
    assert_eq!(other.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
    target.commit(&checkpoint(2, 2)).unwrap();
    assert_eq!(other.load_checkpoint().unwrap(), Some(checkpoint(2, 2)));
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0)]);
}

#[test]
fn apply_and_commit_need_an_open_transaction() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    assert!(target.apply(&insert(&t, user(1, "a", 1.0))).is_err());
    assert!(target.commit(&checkpoint(1, 1)).is_err());
    target.begin().unwrap();
    assert!(target.begin().is_err(), "nested begin");
    target.rollback().unwrap();
    assert!(rows(&f.path, &t).is_empty());
    assert_eq!(target.load_checkpoint().unwrap(), None);
}

#[test]
fn readers_are_not_blocked_by_an_open_write_transaction() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));

    let conn = reader(&f.path);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");

    target.begin().unwrap();
    target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
    // A reader with no busy timeout at all reads the committed state at once.
    conn.busy_timeout(std::time::Duration::ZERO).unwrap();
    let count: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 1);
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0)]);
    target.commit(&checkpoint(2, 2)).unwrap();
    let count: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 2);
}

#[test]
fn an_open_read_transaction_does_not_block_commits() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    let conn = reader(&f.path);
    let count = || -> i64 { conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap() };
    conn.execute_batch("BEGIN").unwrap();
    assert_eq!(count(), 1);
    // With a rollback journal this commit would wait for the reader (and time out).
    let started = std::time::Instant::now();
    apply_all(&mut target, &[insert(&t, user(2, "b", 2.0))], &checkpoint(2, 2));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The reader keeps its snapshot until its transaction ends.
    assert_eq!(count(), 1);
    conn.execute_batch("COMMIT").unwrap();
    assert_eq!(count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Row operations

#[test]
fn insert_of_an_existing_key_replaces_the_row() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    let ops = [
        insert(&t, user(1, "a", 1.0)),
        insert(&t, user(2, "b", 2.0)),
        insert(&t, user(1, "replaced", 3.0)),
    ];
    apply_all(&mut target, &ops, &checkpoint(1, 1));
    // Re-applying the same transaction is idempotent.
    apply_all(&mut target, &ops, &checkpoint(1, 1));
    assert_eq!(
        rows(&f.path, &t),
        vec![user_sql(1, "replaced", 3.0), user_sql(2, "b", 2.0)]
    );
}

#[test]
fn update_in_place_and_of_a_missing_row() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(
        &mut target,
        &[
            insert(&t, user(1, "a", 1.0)),
            update(&t, user(1, "a", 1.0), user(1, "b", 2.0)),
            // The target never saw row 7: the update writes it whole.
            update(&t, user(7, "x", 0.0), user(7, "y", 7.0)),
        ],
        &checkpoint(1, 1),
    );
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "b", 2.0), user_sql(7, "y", 7.0)]);
    // A NULL written over a value.
    apply_all(
        &mut target,
        &[update(
            &t,
            user(1, "b", 2.0),
            vec![Value::Int(1), Value::Null, Value::Null],
        )],
        &checkpoint(2, 2),
    );
    assert_eq!(rows(&f.path, &t)[0], vec![Sql::Integer(1), Sql::Null, Sql::Null]);
}

#[test]
fn update_with_a_key_change_moves_the_row() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(
        &mut target,
        &[insert(&t, user(1, "a", 1.0)), insert(&t, user(2, "b", 2.0))],
        &checkpoint(1, 1),
    );
    apply_all(
        &mut target,
        &[update(&t, user(1, "a", 1.0), user(10, "a moved", 1.5))],
        &checkpoint(2, 2),
    );
    assert_eq!(
        rows(&f.path, &t),
        vec![user_sql(2, "b", 2.0), user_sql(10, "a moved", 1.5)]
    );
    // Swapping keys through a temporary key, as MySQL would log it.
    apply_all(
        &mut target,
        &[
            update(&t, user(2, "b", 2.0), user(99, "b", 2.0)),
            update(&t, user(10, "a moved", 1.5), user(2, "a moved", 1.5)),
            update(&t, user(99, "b", 2.0), user(10, "b", 2.0)),
        ],
        &checkpoint(3, 3),
    );
    assert_eq!(
        rows(&f.path, &t),
        vec![user_sql(2, "a moved", 1.5), user_sql(10, "b", 2.0)]
    );
}

#[test]
fn delete_removes_the_row_and_a_missing_delete_is_a_no_op() {
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    apply_all(
        &mut target,
        &[insert(&t, user(1, "a", 1.0)), insert(&t, user(2, "b", 2.0))],
        &checkpoint(1, 1),
    );
    apply_all(
        &mut target,
        &[
            // Only the key locates the row: the other values may differ.
            delete(&t, user(1, "stale", 0.0)),
            delete(&t, user(3, "never there", 0.0)),
        ],
        &checkpoint(2, 2),
    );
    assert_eq!(rows(&f.path, &t), vec![user_sql(2, "b", 2.0)]);
}

#[test]
fn composite_and_all_key_tables() {
    let f = fixture();
    // Composite key, key columns not first and in a different order than the columns.
    let memberships = table(
        "memberships",
        vec![
            def("role", ColumnKind::TinyInt),
            not_null(length(def("org", ColumnKind::Text), 16)),
            not_null(def("user_id", ColumnKind::Int)),
        ],
        &[2, 1],
    );
    // Every column is a key column.
    let tags = table(
        "tags",
        vec![
            not_null(def("item", ColumnKind::Int)),
            not_null(length(def("tag", ColumnKind::Text), 20)),
        ],
        &[0, 1],
    );
    let mut target = open_prepared(&f.path, &[Arc::clone(&memberships), Arc::clone(&tags)]);
    let m = |role: i64, org: &str, user: i64| vec![Value::Int(role), Value::Text(org.into()), Value::Int(user)];
    let tg = |item: i64, tag: &str| vec![Value::Int(item), Value::Text(tag.into())];
    apply_all(
        &mut target,
        &[
            insert(&memberships, m(1, "acme", 5)),
            insert(&memberships, m(2, "acme", 6)),
            insert(&memberships, m(3, "acme", 5)),
            update(&memberships, m(2, "acme", 6), m(4, "acme", 6)),
            update(&memberships, m(3, "acme", 5), m(3, "beta", 5)),
            insert(&tags, tg(1, "red")),
            insert(&tags, tg(1, "red")),
            insert(&tags, tg(1, "blue")),
            update(&tags, tg(1, "blue"), tg(2, "blue")),
            update(&tags, tg(3, "green"), tg(3, "green")),
            delete(&tags, tg(1, "red")),
        ],
        &checkpoint(1, 1),
    );
    let s = |v: &str| Sql::Text(v.into());
    assert_eq!(
        rows(&f.path, &memberships),
        vec![
            vec![Sql::Integer(3), s("beta"), Sql::Integer(5)],
            vec![Sql::Integer(4), s("acme"), Sql::Integer(6)],
        ]
    );
    assert_eq!(
        rows(&f.path, &tags),
        vec![vec![Sql::Integer(2), s("blue")], vec![Sql::Integer(3), s("green")],]
    );
}

#[test]
fn without_rowid_only_for_small_rows_with_non_integer_keys() {
    let f = fixture();
    let int_key = users();
    let small_text_key = table(
        "codes",
        vec![
            not_null(length(def("code", ColumnKind::Text), 8)),
            def("n", ColumnKind::Int),
        ],
        &[0],
    );
    let wide_text_key = table(
        "docs",
        vec![
            not_null(length(def("slug", ColumnKind::Text), 8)),
            def("body", ColumnKind::Text),
        ],
        &[0],
    );
    let _target = open_prepared(
        &f.path,
        &[
            Arc::clone(&int_key),
            Arc::clone(&small_text_key),
            Arc::clone(&wide_text_key),
        ],
    );
    let conn = reader(&f.path);
    let sql = |name: &str| -> String {
        conn.query_row("SELECT sql FROM sqlite_schema WHERE name = ?1", [name], |r| r.get(0))
            .unwrap()
    };
    assert!(!sql("users").contains("WITHOUT ROWID"), "{}", sql("users"));
    assert!(sql("codes").ends_with("STRICT, WITHOUT ROWID"), "{}", sql("codes"));
    assert!(!sql("docs").contains("WITHOUT ROWID"), "{}", sql("docs"));
}

// ---------------------------------------------------------------------------------------------
// prepare()

#[test]
fn prepare_records_tables_and_accepts_matching_existing_tables() {
    let f = fixture();
    let t = users();
    {
        let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
        apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    }
    // Reopen and prepare again, twice: nothing changes.
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    target.prepare(&[Arc::clone(&t)]).unwrap();
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0)]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));

    let conn = reader(&f.path);
    let (source, definition): (String, String) = conn
        .query_row(
            "SELECT source_name, definition FROM _sluice_tables WHERE name = 'users'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(source, "src.users");
    let json: serde_json::Value = serde_json::from_str(&definition).unwrap();
    assert_eq!(json["key"], serde_json::json!(["id"]));
    let columns = json["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 3);
    assert_eq!(columns[0]["name"], "id");
    assert_eq!(columns[0]["type"], "INTEGER");
    assert_eq!(columns[0]["not_null"], true);
    assert_eq!(columns[1]["source"]["kind"], "text");
    assert_eq!(columns[2]["type"], "REAL");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM _sluice_tables", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[test]
fn prepare_refuses_an_existing_table_with_other_columns_and_drops_nothing() {
    let f = fixture();
    let t = users();
    {
        let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
        apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    }
    let renamed = table(
        "users",
        vec![
            not_null(def("id", ColumnKind::Int)),
            def("full_name", ColumnKind::Text),
            def("score", ColumnKind::Double),
        ],
        &[0],
    );
    // The table has a column sluice would not write (a column order of its own is fine).
    let fewer = table(
        "users",
        vec![not_null(def("id", ColumnKind::Int)), def("name", ColumnKind::Text)],
        &[0],
    );
    let extra = table("fresh", vec![not_null(def("id", ColumnKind::Int))], &[0]);
    let mut target = SqliteTarget::open(&f.path).unwrap();
    for bad in [renamed, fewer] {
        // The mismatching table comes after a new one: prepare is all or nothing.
        let err = target.prepare(&[Arc::clone(&extra), bad]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TargetError::Other(_)), "{err:?}");
        assert!(msg.contains("users"), "{msg}");
    }
    assert_eq!(rows(&f.path, &t), vec![user_sql(1, "a", 1.0)]);
    let fresh_exists: i64 = reader(&f.path)
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'fresh'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fresh_exists, 0);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
}

#[test]
fn reserved_and_invalid_table_definitions_are_refused() {
    let f = fixture();
    let mut target = SqliteTarget::open(&f.path).unwrap();
    let reserved = table("_SLUICE_checkpoint", vec![not_null(def("id", ColumnKind::Int))], &[0]);
    let msg = target.prepare(&[reserved]).unwrap_err().to_string();
    assert!(msg.contains("reserved"), "{msg}");
    let no_key = table("nokey", vec![def("id", ColumnKind::Int)], &[]);
    assert!(target.prepare(&[no_key]).is_err());
}

#[test]
fn weird_identifiers_are_quoted() {
    let f = fixture();
    let long_name: String = "é".repeat(64);
    let t = table(
        "we\"ird;名前 DROP TABLE users;--",
        vec![
            not_null(def("i\"d", ColumnKind::Int)),
            def("va;lue \"x\"", ColumnKind::Text),
            def(&long_name, ColumnKind::Int),
            def("select", ColumnKind::Int),
        ],
        &[0],
    );
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    let row = |id: i64, v: &str| vec![Value::Int(id), Value::Text(v.into()), Value::Int(64), Value::Int(0)];
    apply_all(
        &mut target,
        &[
            insert(&t, row(1, "one")),
            insert(&t, row(2, "two")),
            update(&t, row(1, "one"), row(1, "uno")),
            update(&t, row(2, "two"), row(3, "tres")),
            delete(&t, row(1, "uno")),
        ],
        &checkpoint(1, 1),
    );
    assert_eq!(
        rows(&f.path, &t),
        vec![vec![
            Sql::Integer(3),
            Sql::Text("tres".into()),
            Sql::Integer(64),
            Sql::Integer(0),
        ]]
    );
    // Prepared again on reopen: the existing-table check reads the same names back.
    drop(target);
    let _again = open_prepared(&f.path, &[Arc::clone(&t)]);
}

#[test]
fn an_equal_table_definition_in_another_arc_works() {
    // The engine may hand over the same definition in a fresh Arc.
    let f = fixture();
    let t = users();
    let mut target = open_prepared(&f.path, &[Arc::clone(&t)]);
    let copy = Arc::new((*t).clone());
    apply_all(
        &mut target,
        &[insert(&t, user(1, "a", 1.0)), insert(&copy, user(2, "b", 2.0))],
        &checkpoint(1, 1),
    );
    assert_eq!(rows(&f.path, &t).len(), 2);
}

#[test]
fn writer_records_merge_into_a_low_water_mark_and_the_gtids_beyond_it() {
    let fx = fixture();
    let mut a = SqliteTarget::open(&fx.path).unwrap();
    let mut b = SqliteTarget::open(&fx.path).unwrap();
    a.prepare(&[]).unwrap();
    let g = |seq| Gtid {
        domain: 0,
        server: 1,
        sequence: seq,
    };
    let pos = |seq| {
        let mut p = SourcePosition::new();
        p.advance(g(seq));
        p
    };
    // Writer 1 committed 0-1-12 while the mark was at 10; writer 0 later committed 0-1-11
    // with the mark at 10 too; then writer 1 committed 0-1-14 with the mark at 12.
    for (writer, mark, applied) in [(1u16, 10, vec![12]), (0, 10, vec![11]), (1, 12, vec![14])] {
        let target = if writer == 0 { &mut a } else { &mut b };
        target.begin().unwrap();
        let cp = Checkpoint {
            position: pos(mark),
            applied: applied.into_iter().map(|s| g(s).into()).collect(),
            source_commit_unix: 5,
            writer,
        };
        target.commit(&cp).unwrap();
    }
    let merged = SqliteTarget::open(&fx.path)
        .unwrap()
        .load_checkpoint()
        .unwrap()
        .unwrap();
    assert_eq!(merged.position, pos(12));
    assert_eq!(
        merged.applied,
        vec![g(14).into()],
        "0-1-11 is below the mark; 0-1-13 is a gap"
    );
    assert!(merged.covers(g(11)) && merged.covers(g(14)) && !merged.covers(g(13)));
}
