//! The target compliance suite: one set of checks, written once against `&mut dyn Target`,
//! run against every target sluice has (SQLite, MariaDB, PostgreSQL).
//!
//! Each check gets a [`Fixture`]: a fresh, empty target location (a SQLite file, a MariaDB
//! database, a PostgreSQL schema) that it can open targets on, plus a reader that reads rows
//! back as canonical strings — the text [`Value`]'s `Display` prints for the value written
//! (`None` for NULL) — so the same expectations hold for every target. The MariaDB and
//! PostgreSQL servers are throwaway instances from `sluice-testkit`, one of each per test
//! process (shared by the checks, each in its own database or schema), stopped and deleted
//! when the process exits.
//!
//! Where a target legitimately cannot store a value (PostgreSQL: zero dates, the zero
//! TIMESTAMP, text with NUL characters, identifiers over 63 bytes; MariaDB: identifiers over
//! 64 characters), the check asserts the documented, clear error instead.
//!
//! Run one target's checks with e.g. `cargo test -p sluice-engine --test target_compliance postgres::`.

use std::cmp::Ordering;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, Once};

use mysql::prelude::Queryable;
use rusqlite::types::Value as Sql;
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Gtid, SourceGtid, SourcePosition, Value};
use sluice_engine::target::mariadb::MariaDbTarget;
use sluice_engine::target::postgres::PostgresTarget;
use sluice_engine::target::sqlite::{read_rows, SqliteTarget};
use sluice_engine::target::{BackfillProgress, Checkpoint, RowOp, Target, TargetColumn, TargetError, TargetTable};
use sluice_testkit::{MariaDb, PostgresServer};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Shared servers

static MARIADB: Mutex<Option<Arc<MariaDb>>> = Mutex::new(None);
static POSTGRES: Mutex<Option<Arc<PostgresServer>>> = Mutex::new(None);

/// The process-wide server in `slot`, started on first use.
fn shared<T>(slot: &'static Mutex<Option<Arc<T>>>, start: fn() -> T) -> Arc<T> {
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(server) = guard.as_ref() {
        return Arc::clone(server);
    }
    static CLEANUP: Once = Once::new();
    // SAFETY: registers a plain `extern "C"` function; atexit has no other preconditions.
    CLEANUP.call_once(|| unsafe {
        libc::atexit(stop_shared_servers);
    });
    let server = Arc::new(start());
    *guard = Some(Arc::clone(&server));
    server
}

/// Statics are never dropped: stop the shared servers (and delete their directories) when
/// the test process exits.
extern "C" fn stop_shared_servers() {
    let mariadb = MARIADB.lock().ok().and_then(|mut slot| slot.take());
    drop(mariadb);
    let postgres = POSTGRES.lock().ok().and_then(|mut slot| slot.take());
    drop(postgres);
}

fn mariadb_url(server: &MariaDb) -> String {
    format!("{}?prefer_socket=false", server.url())
}

// ---------------------------------------------------------------------------------------------
// Fixtures: a fresh target location and a reader for it

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    MariaDb,
    Postgres,
}

enum Backend {
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    MariaDb {
        server: Arc<MariaDb>,
        database: String,
    },
    Postgres {
        server: Arc<PostgresServer>,
        schema: String,
    },
}

struct Fixture {
    kind: Kind,
    backend: Backend,
}

/// Rows as canonical strings, `None` for NULL.
type Rows = Vec<Vec<Option<String>>>;

impl Fixture {
    fn new(kind: Kind, test: &str) -> Fixture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, AtomicOrdering::Relaxed);
        let name: String = format!("c{n}_{test}").chars().take(48).collect();
        let backend = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("edge.db");
                Backend::Sqlite { _dir: dir, path }
            }
            Kind::MariaDb => Backend::MariaDb {
                server: shared(&MARIADB, MariaDb::start),
                database: name,
            },
            Kind::Postgres => Backend::Postgres {
                server: shared(&POSTGRES, PostgresServer::start),
                schema: name,
            },
        };
        Fixture { kind, backend }
    }

    /// Opens a new target (a new connection) on this location.
    fn open(&self) -> Box<dyn Target> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Box::new(SqliteTarget::open(path).unwrap()),
            Backend::MariaDb { server, database } => {
                Box::new(MariaDbTarget::connect(&mariadb_url(server), database).unwrap())
            }
            Backend::Postgres { server, schema } => {
                Box::new(PostgresTarget::connect(&server.conn_string(), schema).unwrap())
            }
        }
    }

    fn open_prepared(&self, tables: &[Arc<TargetTable>]) -> Box<dyn Target> {
        let mut target = self.open();
        target.prepare(tables).unwrap();
        target
    }

    /// Whether DDL commits or rolls back with the target transaction.
    fn transactional_ddl(&self) -> bool {
        self.kind != Kind::MariaDb
    }

    /// Every row of `table`, read through a separate connection, as canonical strings,
    /// ordered by key (numerically where both keys are numbers).
    fn rows(&self, table: &TargetTable) -> Rows {
        let mut rows = match &self.backend {
            Backend::Sqlite { path, .. } => read_rows(path, table)
                .unwrap()
                .into_iter()
                .map(|row| {
                    row.iter()
                        .zip(&table.columns)
                        .map(|(v, c)| sqlite_text(v, &c.source))
                        .collect()
                })
                .collect(),
            Backend::MariaDb { server, database } => mariadb_rows(server, database, table),
            Backend::Postgres { server, schema } => postgres_rows(server, schema, table),
        };
        rows.sort_by(|a: &Vec<Option<String>>, b| {
            for &k in &table.key {
                let ord = compare_keys(&a[k], &b[k]);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        rows
    }

    /// The names of the tables at this location.
    fn table_names(&self) -> Vec<String> {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                if !path.exists() {
                    return Vec::new();
                }
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut st = conn
                    .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
                    .unwrap();
                st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Backend::MariaDb { server, database } => mariadb_conn(server)
                .exec(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                    (database,),
                )
                .unwrap(),
            Backend::Postgres { server, schema } => postgres_conn(server)
                .query(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[schema],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    fn table_exists(&self, name: &str) -> bool {
        self.table_names().iter().any(|n| n == name)
    }

    /// `_sluice_tables` rows: (name, source_name, definition).
    fn recorded_tables(&self) -> Vec<(String, String, String)> {
        let sql = "SELECT name, source_name, definition FROM _sluice_tables ORDER BY name";
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut st = conn.prepare(sql).unwrap();
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Backend::MariaDb { server, database } => {
                let mut conn = mariadb_conn(server);
                conn.query_drop(format!("USE {}", my_ident(database))).unwrap();
                conn.query(sql).unwrap()
            }
            Backend::Postgres { server, schema } => {
                let sql = format!(
                    "SELECT name, source_name, definition FROM {}._sluice_tables ORDER BY name",
                    pg_ident(schema)
                );
                postgres_conn(server)
                    .query(&sql, &[])
                    .unwrap()
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            }
        }
    }
}

/// Numbers compare as numbers, everything else as text; NULL first.
fn compare_keys(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<i128>(), b.parse::<i128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        },
        _ => a.cmp(b),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_bytes_column(c: &ColumnDef) -> bool {
    matches!(c.kind, ColumnKind::Binary | ColumnKind::Other)
        || (c.kind == ColumnKind::Text && matches!(c.charset, Charset::Binary | Charset::Other(_)))
}

fn sqlite_text(value: &Sql, column: &ColumnDef) -> Option<String> {
    Some(match value {
        Sql::Null => return None,
        Sql::Integer(i) if column.kind == ColumnKind::Year => format!("{i:04}"),
        Sql::Integer(i) => i.to_string(),
        Sql::Real(f) if column.kind == ColumnKind::Float => (*f as f32).to_string(),
        Sql::Real(f) => f.to_string(),
        Sql::Text(s) => s.clone(),
        Sql::Blob(b) => hex(b),
    })
}

fn my_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn mariadb_conn(server: &MariaDb) -> mysql::Conn {
    mysql::Conn::new(mysql::Opts::from_url(&mariadb_url(server)).unwrap()).unwrap()
}

fn postgres_conn(server: &PostgresServer) -> ::postgres::Client {
    let mut client = ::postgres::Client::connect(&server.conn_string(), ::postgres::NoTls).unwrap();
    client
        .batch_execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'")
        .unwrap();
    client
}

fn fraction(micros: u32) -> String {
    if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    }
}

fn mariadb_rows(server: &MariaDb, database: &str, table: &TargetTable) -> Rows {
    let cols: Vec<String> = table.columns.iter().map(|c| my_ident(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        my_ident(database),
        my_ident(&table.name)
    );
    // Binary protocol: FLOAT and DOUBLE arrive as binary floats, not as printed text.
    let rows: Vec<mysql::Row> = mariadb_conn(server).exec(&sql, ()).unwrap();
    rows.into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .zip(&table.columns)
                .map(|(v, c)| mariadb_text(v, &c.source))
                .collect()
        })
        .collect()
}

fn mariadb_text(value: mysql::Value, column: &ColumnDef) -> Option<String> {
    use mysql::Value as My;
    Some(match value {
        My::NULL => return None,
        My::Int(i) if column.kind == ColumnKind::Year => format!("{i:04}"),
        My::UInt(u) if column.kind == ColumnKind::Year => format!("{u:04}"),
        My::Int(i) => i.to_string(),
        My::UInt(u) => u.to_string(),
        My::Float(f) => f.to_string(),
        My::Double(d) if column.kind == ColumnKind::Float => (d as f32).to_string(),
        My::Double(d) => d.to_string(),
        My::Bytes(b) if column.kind == ColumnKind::Bit => b
            .iter()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
            .to_string(),
        My::Bytes(b) if is_bytes_column(column) => hex(&b),
        My::Bytes(b) if column.kind == ColumnKind::Year => format!("{:0>4}", String::from_utf8(b).unwrap()),
        My::Bytes(b) => String::from_utf8(b).unwrap(),
        My::Date(y, mo, d, h, mi, s, us) => {
            if column.kind == ColumnKind::Date {
                format!("{y:04}-{mo:02}-{d:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}", fraction(us))
            }
        }
        My::Time(negative, days, h, mi, s, us) => {
            let hours = days * 24 + u32::from(h);
            let sign = if negative { "-" } else { "" };
            format!("{sign}{hours:02}:{mi:02}:{s:02}{}", fraction(us))
        }
    })
}

fn postgres_rows(server: &PostgresServer, schema: &str, table: &TargetTable) -> Rows {
    let cols: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{}::text", pg_ident(&c.name)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        pg_ident(schema),
        pg_ident(&table.name)
    );
    postgres_conn(server)
        .query(&sql, &[])
        .unwrap()
        .iter()
        .map(|row| {
            (0..table.columns.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .map(|text| postgres_text(text, &table.columns[i].source))
                })
                .collect()
        })
        .collect()
}

/// PostgreSQL prints fractions without trailing zeros and `timestamptz` with its offset.
fn postgres_text(text: String, column: &ColumnDef) -> String {
    let pad_fraction = |text: &str| -> String {
        match text.split_once('.') {
            Some((whole, frac)) => format!("{whole}.{frac:0<6}"),
            None => text.to_owned(),
        }
    };
    match column.kind {
        ColumnKind::Float => text.parse::<f32>().unwrap().to_string(),
        ColumnKind::Double => text.parse::<f64>().unwrap().to_string(),
        ColumnKind::Year => format!("{:04}", text.parse::<u16>().unwrap()),
        ColumnKind::Timestamp => pad_fraction(text.strip_suffix("+00").expect("printed in UTC")),
        ColumnKind::DateTime | ColumnKind::Time => pad_fraction(&text),
        _ if is_bytes_column(column) => text.strip_prefix("\\x").expect("hex bytea").to_owned(),
        _ => text,
    }
}

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

fn fsp(mut c: ColumnDef, n: u8) -> ColumnDef {
    c.fsp = n;
    c
}

fn decimal(name: &str, precision: u8, scale: u8) -> ColumnDef {
    let mut c = def(name, ColumnKind::Decimal);
    c.precision = precision;
    c.scale = scale;
    c
}

fn labels(mut c: ColumnDef, labels: &[&str]) -> ColumnDef {
    c.labels = labels.iter().map(|l| (*l).to_owned()).collect();
    c
}

fn charset(mut c: ColumnDef, charset: Charset) -> ColumnDef {
    c.charset = charset;
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

/// `users (id INT NOT NULL, name VARCHAR(40), score DOUBLE)`, key `id`.
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

/// The canonical strings a reader returns for `row`.
fn canon(row: &[Value]) -> Vec<Option<String>> {
    row.iter().map(|v| (!v.is_null()).then(|| v.to_string())).collect()
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

fn gtid(domain: u32, server: u32, sequence: u64) -> SourceGtid {
    SourceGtid::Mariadb(Gtid {
        domain,
        server,
        sequence,
    })
}

fn checkpoint(seq: u64, commit: u32) -> Checkpoint {
    let mut position = SourcePosition::new();
    position.advance(gtid(0, 1, seq));
    position.advance(gtid(7, 2, 99));
    Checkpoint {
        position,
        source_commit_unix: commit,
        ..Checkpoint::default()
    }
}

/// Applies `ops` in one target transaction and commits `cp`.
fn apply_all(target: &mut dyn Target, ops: &[RowOp], cp: &Checkpoint) {
    target.begin().unwrap();
    for op in ops {
        target.apply(op).unwrap();
    }
    target.commit(cp).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Type mapping

struct TypeCase {
    column: ColumnDef,
    value: Value,
    /// PostgreSQL refuses the value with an error containing this text.
    postgres_refuses: Option<&'static str>,
}

fn case(column: ColumnDef, value: Value) -> TypeCase {
    TypeCase {
        column,
        value,
        postgres_refuses: None,
    }
}

fn refused_by_postgres(column: ColumnDef, value: Value, why: &'static str) -> TypeCase {
    TypeCase {
        column,
        value,
        postgres_refuses: Some(why),
    }
}

impl TypeCase {
    fn refused_by(&self, kind: Kind) -> Option<&'static str> {
        if kind == Kind::Postgres {
            self.postgres_refuses
        } else {
            None
        }
    }
}

/// Every ColumnKind with values of its Value variant, including the extremes.
fn type_cases() -> Vec<TypeCase> {
    let decimal_text = "-12345678901234567890123456789012345.123456789012345678901234567890".to_owned();
    let datetime = |year, month, day, hour, minute, second, micros| Value::DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
    };
    let blob_with_nuls = vec![0u8, 1, 0, 255, 0, b'x', 0];
    vec![
        case(def("tinyint", ColumnKind::TinyInt), Value::Int(-128)),
        case(def("smallint", ColumnKind::SmallInt), Value::Int(-32768)),
        case(def("mediumint", ColumnKind::MediumInt), Value::Int(8_388_607)),
        case(def("int", ColumnKind::Int), Value::Int(-2_147_483_648)),
        case(def("bigint", ColumnKind::BigInt), Value::Int(i64::MIN)),
        case(unsigned(def("tinyint_u", ColumnKind::TinyInt)), Value::UInt(255)),
        case(unsigned(def("smallint_u", ColumnKind::SmallInt)), Value::UInt(65_535)),
        case(
            unsigned(def("mediumint_u", ColumnKind::MediumInt)),
            Value::UInt(16_777_215),
        ),
        case(unsigned(def("int_u", ColumnKind::Int)), Value::UInt(4_294_967_295)),
        case(unsigned(def("bigint_u_max", ColumnKind::BigInt)), Value::UInt(u64::MAX)),
        case(
            unsigned(def("bigint_u_above", ColumnKind::BigInt)),
            Value::UInt(9_223_372_036_854_775_808),
        ),
        case(def("float", ColumnKind::Float), Value::Float(0.1)),
        case(def("float_max", ColumnKind::Float), Value::Float(-3.402_823_5e38)),
        case(def("double", ColumnKind::Double), Value::Double(-1.5e300)),
        case(def("double_third", ColumnKind::Double), Value::Double(1.0 / 3.0)),
        case(decimal("decimal_65_30", 65, 30), Value::Decimal(decimal_text)),
        case(decimal("decimal_10_2", 10, 2), Value::Decimal("0.50".into())),
        case(
            def("date", ColumnKind::Date),
            Value::Date {
                year: 2024,
                month: 2,
                day: 29,
            },
        ),
        refused_by_postgres(
            def("zero_date", ColumnKind::Date),
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
            "zero or partial date",
        ),
        refused_by_postgres(
            def("partial_date", ColumnKind::Date),
            Value::Date {
                year: 2024,
                month: 0,
                day: 15,
            },
            "zero or partial date",
        ),
        case(
            fsp(def("time6", ColumnKind::Time), 6),
            Value::Time {
                negative: true,
                hours: 838,
                minutes: 59,
                seconds: 58,
                micros: 5,
            },
        ),
        case(
            def("time", ColumnKind::Time),
            Value::Time {
                negative: false,
                hours: 0,
                minutes: 0,
                seconds: 1,
                micros: 0,
            },
        ),
        case(
            fsp(def("datetime6", ColumnKind::DateTime), 6),
            datetime(9999, 12, 31, 23, 59, 59, 999_999),
        ),
        case(
            fsp(def("datetime6_whole", ColumnKind::DateTime), 6),
            datetime(1000, 1, 1, 0, 0, 0, 0),
        ),
        refused_by_postgres(
            def("zero_datetime", ColumnKind::DateTime),
            datetime(0, 0, 0, 0, 0, 0, 0),
            "zero or partial date",
        ),
        case(
            fsp(def("timestamp6", ColumnKind::Timestamp), 6),
            Value::Timestamp {
                seconds: 1_700_000_000,
                micros: 120,
            },
        ),
        refused_by_postgres(
            def("zero_timestamp", ColumnKind::Timestamp),
            Value::Timestamp { seconds: 0, micros: 0 },
            "zero TIMESTAMP",
        ),
        case(def("year", ColumnKind::Year), Value::Year(2155)),
        case(def("zero_year", ColumnKind::Year), Value::Year(0)),
        case(
            def("text", ColumnKind::Text),
            Value::Text("héllo 👋🏽 名前 \"'`; -- \\".into()),
        ),
        refused_by_postgres(
            def("text_nul", ColumnKind::Text),
            Value::Text("nul\0inside".into()),
            "NUL character",
        ),
        case(
            charset(def("latin1_text", ColumnKind::Text), Charset::Latin1),
            Value::Text("Ærøskøbing €".into()),
        ),
        case(
            charset(def("sjis_text", ColumnKind::Text), Charset::Other(13)),
            Value::Bytes(vec![0x82, 0xa0, 0x00]),
        ),
        case(def("blob", ColumnKind::Binary), Value::Bytes(blob_with_nuls)),
        case(
            length(def("varbinary_4", ColumnKind::Binary), 4),
            Value::Bytes(vec![0, 0, 0, 0]),
        ),
        case(
            labels(def("enum", ColumnKind::Enum), &["small", "large"]),
            Value::Enum("large".into()),
        ),
        case(
            labels(def("enum_invalid", ColumnKind::Enum), &["small", "large"]),
            Value::Enum(String::new()),
        ),
        case(
            labels(def("set", ColumnKind::Set), &["a", "b", "c"]),
            Value::Set("a,c".into()),
        ),
        case(
            labels(def("set_empty", ColumnKind::Set), &["a", "b", "c"]),
            Value::Set(String::new()),
        ),
        case(length(def("bit_5", ColumnKind::Bit), 5), Value::Bit(0b10110)),
        case(length(def("bit_64", ColumnKind::Bit), 64), Value::Bit(u64::MAX)),
        case(
            def("json", ColumnKind::Json),
            Value::Json(r#"{"a":[1,2.5,"x"],"b":null,"a":true}"#.into()),
        ),
        case(def("geometry", ColumnKind::Other), Value::Bytes(vec![0, 0, 0, 0, 1, 1])),
    ]
}

fn every_type_round_trips(f: &Fixture) {
    let cases = type_cases();
    let mut columns = vec![not_null(def("id", ColumnKind::Int))];
    columns.extend(cases.iter().map(|c| c.column.clone()));
    let t = table("all_types", columns, &[0]);
    let mut target = f.open_prepared(&[Arc::clone(&t)]);

    // Values the target can't store are left NULL here (see values_a_target_cannot_store).
    let mut full = vec![Value::Int(1)];
    full.extend(cases.iter().map(|c| match c.refused_by(f.kind) {
        Some(_) => Value::Null,
        None => c.value.clone(),
    }));
    let mut nulls = vec![Value::Int(2)];
    nulls.extend(cases.iter().map(|_| Value::Null));
    apply_all(
        &mut *target,
        &[insert(&t, full.clone()), insert(&t, nulls.clone())],
        &checkpoint(1, 1),
    );

    let got = f.rows(&t);
    assert_eq!(got.len(), 2);
    let expected = canon(&full);
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(got[0][i + 1], expected[i + 1], "column {}", c.column.name);
        assert_eq!(got[1][i + 1], None, "column {} (null row)", c.column.name);
    }
    // Every value written through an in-place update round-trips too.
    let mut full2 = full.clone();
    full2[0] = Value::Int(2);
    apply_all(&mut *target, &[update(&t, nulls, full2.clone())], &checkpoint(2, 2));
    assert_eq!(f.rows(&t), vec![canon(&full), canon(&full2)]);
}

fn values_a_target_cannot_store_are_refused_clearly(f: &Fixture) {
    let cases: Vec<TypeCase> = type_cases()
        .into_iter()
        .filter(|c| c.refused_by(f.kind).is_some())
        .collect();
    if cases.is_empty() {
        return;
    }
    let mut columns = vec![not_null(def("id", ColumnKind::Int))];
    columns.extend(cases.iter().map(|c| c.column.clone()));
    let t = table("unstorable", columns, &[0]);
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[], &checkpoint(1, 1));
    let mut fine = vec![Value::Null; cases.len() + 1];
    fine[0] = Value::Int(0);
    for (i, c) in cases.iter().enumerate() {
        let mut row = vec![Value::Null; cases.len() + 1];
        row[0] = Value::Int(1);
        row[i + 1] = c.value.clone();
        target.begin().unwrap();
        target.apply(&insert(&t, fine.clone())).unwrap();
        let err = target.apply(&insert(&t, row)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TargetError::Other(_)), "{err:?}");
        assert!(msg.contains("table unstorable"), "{msg}");
        assert!(msg.contains(&format!("column {}", c.column.name)), "{msg}");
        assert!(msg.contains(c.refused_by(f.kind).unwrap()), "{msg}");
        assert!(!msg.contains("inside"), "the value leaked: {msg}");
        // The whole transaction is gone, including the row written before the refusal.
        assert!(target.commit(&checkpoint(9, 9)).is_err());
        target.rollback().unwrap();
    }
    assert!(f.rows(&t).is_empty());
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
}

fn unsigned_bigint_keys_above_i64_max_work(f: &Fixture) {
    let t = table(
        "big_keys",
        vec![
            not_null(unsigned(def("id", ColumnKind::BigInt))),
            def("v", ColumnKind::Int),
        ],
        &[0],
    );
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let ops = [
        insert(&t, vec![Value::UInt(u64::MAX), Value::Int(1)]),
        insert(&t, vec![Value::UInt(5), Value::Int(2)]),
        insert(&t, vec![Value::UInt(9_223_372_036_854_775_808), Value::Int(6)]),
        insert(&t, vec![Value::UInt(u64::MAX), Value::Int(3)]),
        update(
            &t,
            vec![Value::UInt(5), Value::Int(2)],
            vec![Value::UInt(5), Value::Int(4)],
        ),
    ];
    apply_all(&mut *target, &ops, &checkpoint(1, 1));
    let row = |id: u64, v: i64| canon(&[Value::UInt(id), Value::Int(v)]);
    assert_eq!(
        f.rows(&t),
        vec![row(5, 4), row(9_223_372_036_854_775_808, 6), row(u64::MAX, 3)]
    );
    apply_all(
        &mut *target,
        &[delete(&t, vec![Value::UInt(u64::MAX), Value::Null])],
        &checkpoint(2, 2),
    );
    assert_eq!(f.rows(&t), vec![row(5, 4), row(9_223_372_036_854_775_808, 6)]);
}

fn a_value_of_the_wrong_kind_is_refused_without_the_value(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
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
    assert!(f.rows(&t).is_empty());
    assert_eq!(target.load_checkpoint().unwrap(), None);

    // Other mismatches: a TIMESTAMP value in a DATETIME column, bytes in a text column, an
    // unsigned value too large for the column.
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
        assert!(
            msg.contains("strict_kinds") && msg.contains(&format!("column {name}")),
            "{msg}"
        );
        target.rollback().unwrap();
    }
    assert!(f.rows(&t2).is_empty());
}

fn null_in_a_not_null_column_is_a_database_error_naming_the_column(f: &Fixture) {
    let t = table(
        "nn",
        vec![
            not_null(def("id", ColumnKind::Int)),
            not_null(def("required", ColumnKind::Text)),
        ],
        &[0],
    );
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    // A server target may report it from `commit` (the row waits for a multi-row statement).
    let err = apply_expecting_failure(
        &mut *target,
        &[insert(&t, vec![Value::Int(1), Value::Null])],
        &checkpoint(1, 1),
    );
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

fn a_row_of_the_wrong_length_is_refused(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    target.begin().unwrap();
    let msg = target.apply(&insert(&t, vec![Value::Int(1)])).unwrap_err().to_string();
    assert!(msg.contains("users") && msg.contains("1 values"), "{msg}");
    target.rollback().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Transactions and checkpoints

fn rollback_leaves_nothing_and_keeps_the_checkpoint(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 100));

    target.begin().unwrap();
    target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
    target
        .apply(&update(&t, user(1, "a", 1.0), user(1, "changed", 9.0)))
        .unwrap();
    target.apply(&delete(&t, user(1, "changed", 9.0))).unwrap();
    target.rollback().unwrap();

    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 100)));
    // Rolling back with no transaction open is harmless.
    target.rollback().unwrap();
    // The target is usable afterwards.
    apply_all(&mut *target, &[insert(&t, user(3, "c", 3.0))], &checkpoint(2, 200));
    assert_eq!(f.rows(&t).len(), 2);
}

fn dropping_the_target_without_commit_leaves_nothing(f: &Fixture) {
    let t = users();
    {
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 100));
        target.begin().unwrap();
        target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
        target.apply(&delete(&t, user(1, "a", 1.0))).unwrap();
        // Dropped here with the transaction open.
    }
    let mut target = f.open();
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 100)));
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    // The dropped transaction holds no locks: the same rows can be written at once.
    apply_all(
        &mut *target,
        &[insert(&t, user(2, "b", 2.0)), delete(&t, user(1, "a", 1.0))],
        &checkpoint(2, 200),
    );
    assert_eq!(f.rows(&t), vec![canon(&user(2, "b", 2.0))]);
}

fn checkpoint_round_trips_across_reconnect(f: &Fixture) {
    let t = users();
    {
        let mut target = f.open();
        assert_eq!(target.load_checkpoint().unwrap(), None, "fresh target");
        target.prepare(&[Arc::clone(&t)]).unwrap();
        assert_eq!(target.load_checkpoint().unwrap(), None, "prepared target");

        apply_all(
            &mut *target,
            &[insert(&t, user(1, "a", 1.0))],
            &checkpoint(41, 1_700_000_000),
        );
        apply_all(
            &mut *target,
            &[insert(&t, user(2, "b", 2.0))],
            &checkpoint(42, u32::MAX),
        );
        assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(42, u32::MAX)));
    }
    let mut reopened = f.open();
    assert_eq!(reopened.load_checkpoint().unwrap(), Some(checkpoint(42, u32::MAX)));
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0)), canon(&user(2, "b", 2.0))]);

    // An empty position is a valid checkpoint too.
    reopened.begin().unwrap();
    reopened.commit(&Checkpoint::default()).unwrap();
    assert_eq!(reopened.load_checkpoint().unwrap(), Some(Checkpoint::default()));
    drop(reopened);
    assert_eq!(f.open().load_checkpoint().unwrap(), Some(Checkpoint::default()));
}

// `..Checkpoint::default()` keeps the check compiling if `Checkpoint` grows fields.
#[allow(clippy::needless_update)]
fn per_writer_checkpoints_are_stored_and_merged(f: &Fixture) {
    let t = users();
    let mut w0 = f.open_prepared(&[Arc::clone(&t)]);
    let mut w1 = f.open();
    let mut pos0 = SourcePosition::new();
    pos0.advance(gtid(0, 1, 5));
    pos0.advance(gtid(3, 1, 10));
    let cp0 = Checkpoint {
        position: pos0,
        applied: vec![gtid(0, 1, 9), gtid(0, 1, 7)],
        source_commit_unix: 50,
        writer: 0,
        ..Checkpoint::default()
    };
    let mut pos1 = SourcePosition::new();
    pos1.advance(gtid(0, 1, 7));
    let cp1 = Checkpoint {
        position: pos1,
        applied: vec![gtid(0, 1, 8)],
        source_commit_unix: 70,
        writer: 1,
        ..Checkpoint::default()
    };
    // Two writers, each with its own connection; the later writer commits first.
    w1.begin().unwrap();
    w1.apply(&insert(&t, user(2, "from w1", 2.0))).unwrap();
    w1.commit(&cp1).unwrap();
    w0.begin().unwrap();
    w0.apply(&insert(&t, user(1, "from w0", 1.0))).unwrap();
    w0.commit(&cp0).unwrap();
    let expected = Checkpoint::merge([cp0.clone(), cp1.clone()]).unwrap();
    assert_eq!(f.open().load_checkpoint().unwrap(), Some(expected));
    assert_eq!(f.rows(&t).len(), 2);

    // A writer's new record replaces its old one only.
    let cp1b = Checkpoint {
        writer: 1,
        source_commit_unix: 80,
        ..checkpoint(11, 0)
    };
    w1.begin().unwrap();
    w1.commit(&cp1b).unwrap();
    let expected = Checkpoint::merge([cp0, cp1b]).unwrap();
    assert_eq!(w0.load_checkpoint().unwrap(), Some(expected));
}

/// A MySQL source's checkpoint: each writer's record holds the GTID set committed up to its
/// low-water mark and the GTIDs it committed beyond it; stored as text in the same columns as
/// MariaDB's, and merged as the union (whatever order the writers committed in).
fn mysql_checkpoints_are_stored_and_merged_as_sets(f: &Fixture) {
    const U: &str = "fbda2ad0-7c46-11ec-ae30-4ef7efc81a2a";
    let mysql = |text: &str| -> SourcePosition { text.parse().unwrap() };
    let one = |text: &str| -> SourceGtid { text.parse().unwrap() };
    let t = users();
    let mut w0 = f.open_prepared(&[Arc::clone(&t)]);
    let mut w1 = f.open();
    let cp0 = Checkpoint {
        position: mysql(&format!("{U}:1-5")),
        applied: vec![one(&format!("{U}:9")), one(&format!("{U}:tag_a:2"))],
        source_commit_unix: 50,
        writer: 0,
    };
    let cp1 = Checkpoint {
        position: mysql(&format!("{U}:1-7")),
        applied: vec![one(&format!("{U}:8"))],
        source_commit_unix: 70,
        writer: 1,
    };
    w1.begin().unwrap();
    w1.apply(&insert(&t, user(2, "from w1", 2.0))).unwrap();
    w1.commit(&cp1).unwrap();
    w0.begin().unwrap();
    w0.apply(&insert(&t, user(1, "from w0", 1.0))).unwrap();
    w0.commit(&cp0).unwrap();
    let loaded = f.open().load_checkpoint().unwrap().unwrap();
    // A set has no order: what was applied beyond the marks joins the merged set.
    assert_eq!(loaded.position, mysql(&format!("{U}:1-9:tag_a:2")));
    assert!(loaded.applied.is_empty(), "{:?}", loaded.applied);
    assert_eq!(loaded.source_commit_unix, 70);
    // Everything committed: where a MySQL source is asked to stream from.
    assert_eq!(loaded.resume_from(), loaded.position);
    for covered in ["1", "7", "8", "9", "tag_a:2"] {
        assert!(loaded.covers(one(&format!("{U}:{covered}"))), "{covered}");
    }
    for not in ["10", "tag_a:1"] {
        assert!(!loaded.covers(one(&format!("{U}:{not}"))), "{not}");
    }
    assert_eq!(f.rows(&t).len(), 2);
}

fn the_checkpoint_and_rows_are_invisible_until_commit(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[], &checkpoint(1, 1));
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
    // A second connection still sees the old checkpoint and no rows.
    let mut other = f.open();
    assert_eq!(other.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
    assert!(f.rows(&t).is_empty());
    target.commit(&checkpoint(2, 2)).unwrap();
    assert_eq!(other.load_checkpoint().unwrap(), Some(checkpoint(2, 2)));
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
}

fn apply_and_commit_need_an_open_transaction(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    assert!(target.apply(&insert(&t, user(1, "a", 1.0))).is_err());
    assert!(target.commit(&checkpoint(1, 1)).is_err());
    target.begin().unwrap();
    assert!(target.begin().is_err(), "nested begin");
    target.rollback().unwrap();
    assert!(f.rows(&t).is_empty());
    assert_eq!(target.load_checkpoint().unwrap(), None);
}

fn prepare_inside_an_open_transaction(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    let late_table = |name: &str| {
        table(
            name,
            vec![not_null(def("id", ColumnKind::Int)), def("v", ColumnKind::Text)],
            &[0],
        )
    };
    let late_row = |id: i64| vec![Value::Int(id), Value::Text(format!("v{id}"))];

    // Committed: the new table and its rows arrive with the other rows.
    let late = late_table("late");
    target.begin().unwrap();
    target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
    target.prepare(&[Arc::clone(&t), Arc::clone(&late)]).unwrap();
    target.apply(&insert(&late, late_row(1))).unwrap();
    target.commit(&checkpoint(2, 2)).unwrap();
    assert_eq!(f.rows(&t).len(), 2);
    assert_eq!(f.rows(&late), vec![canon(&late_row(1))]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(2, 2)));

    // Rolled back: nothing of the transaction remains, including the rows written before the
    // prepare (MariaDB must not have committed them implicitly with DDL).
    let later = late_table("later");
    target.begin().unwrap();
    target.apply(&insert(&t, user(3, "c", 3.0))).unwrap();
    target.prepare(&[Arc::clone(&later)]).unwrap();
    target.apply(&insert(&later, late_row(1))).unwrap();
    target.apply(&delete(&t, user(1, "a", 1.0))).unwrap();
    target.rollback().unwrap();
    assert_eq!(f.rows(&t).len(), 2);
    assert_eq!(f.rows(&t)[0], canon(&user(1, "a", 1.0)));
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(2, 2)));
    if f.transactional_ddl() {
        assert!(!f.table_exists("later"));
    } else if f.table_exists("later") {
        // Created outside the transaction: left behind empty.
        assert!(f.rows(&later).is_empty());
    }
    // Either way a later prepare accepts the state and the table works.
    let mut again = f.open_prepared(&[Arc::clone(&later)]);
    apply_all(&mut *again, &[insert(&later, late_row(2))], &checkpoint(3, 3));
    assert_eq!(f.rows(&later), vec![canon(&late_row(2))]);
}

// ---------------------------------------------------------------------------------------------
// Row operations

fn insert_of_an_existing_key_replaces_the_row(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let ops = [
        insert(&t, user(1, "a", 1.0)),
        insert(&t, user(2, "b", 2.0)),
        insert(&t, user(1, "replaced", 3.0)),
    ];
    apply_all(&mut *target, &ops, &checkpoint(1, 1));
    // Re-applying the same transaction is idempotent.
    apply_all(&mut *target, &ops, &checkpoint(1, 1));
    assert_eq!(
        f.rows(&t),
        vec![canon(&user(1, "replaced", 3.0)), canon(&user(2, "b", 2.0))]
    );
}

fn update_in_place_and_of_a_missing_row(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(
        &mut *target,
        &[
            insert(&t, user(1, "a", 1.0)),
            update(&t, user(1, "a", 1.0), user(1, "b", 2.0)),
            // The target never saw row 7: the update writes it whole.
            update(&t, user(7, "x", 0.0), user(7, "y", 7.0)),
            // An update that changes nothing.
            update(&t, user(1, "b", 2.0), user(1, "b", 2.0)),
        ],
        &checkpoint(1, 1),
    );
    assert_eq!(f.rows(&t), vec![canon(&user(1, "b", 2.0)), canon(&user(7, "y", 7.0))]);
    // A NULL written over a value.
    apply_all(
        &mut *target,
        &[update(
            &t,
            user(1, "b", 2.0),
            vec![Value::Int(1), Value::Null, Value::Null],
        )],
        &checkpoint(2, 2),
    );
    assert_eq!(f.rows(&t)[0], vec![Some("1".to_owned()), None, None]);
}

fn update_with_a_key_change_moves_the_row(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(
        &mut *target,
        &[insert(&t, user(1, "a", 1.0)), insert(&t, user(2, "b", 2.0))],
        &checkpoint(1, 1),
    );
    apply_all(
        &mut *target,
        &[update(&t, user(1, "a", 1.0), user(10, "a moved", 1.5))],
        &checkpoint(2, 2),
    );
    assert_eq!(
        f.rows(&t),
        vec![canon(&user(2, "b", 2.0)), canon(&user(10, "a moved", 1.5))]
    );
    // Swapping keys through a temporary key, as MySQL would log it.
    apply_all(
        &mut *target,
        &[
            update(&t, user(2, "b", 2.0), user(99, "b", 2.0)),
            update(&t, user(10, "a moved", 1.5), user(2, "a moved", 1.5)),
            update(&t, user(99, "b", 2.0), user(10, "b", 2.0)),
        ],
        &checkpoint(3, 3),
    );
    assert_eq!(
        f.rows(&t),
        vec![canon(&user(2, "a moved", 1.5)), canon(&user(10, "b", 2.0))]
    );
    // Moving onto a key that already exists replaces that row.
    apply_all(
        &mut *target,
        &[update(&t, user(2, "a moved", 1.5), user(10, "merged", 0.5))],
        &checkpoint(4, 4),
    );
    assert_eq!(f.rows(&t), vec![canon(&user(10, "merged", 0.5))]);
}

fn delete_removes_the_row_and_a_missing_delete_is_a_no_op(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(
        &mut *target,
        &[insert(&t, user(1, "a", 1.0)), insert(&t, user(2, "b", 2.0))],
        &checkpoint(1, 1),
    );
    apply_all(
        &mut *target,
        &[
            // Only the key locates the row: the other values may differ.
            delete(&t, user(1, "stale", 0.0)),
            delete(&t, user(3, "never there", 0.0)),
            delete(&t, user(1, "again", 0.0)),
        ],
        &checkpoint(2, 2),
    );
    assert_eq!(f.rows(&t), vec![canon(&user(2, "b", 2.0))]);
}

fn composite_and_all_key_tables(f: &Fixture) {
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
    let mut target = f.open_prepared(&[Arc::clone(&memberships), Arc::clone(&tags)]);
    let m = |role: i64, org: &str, user: i64| vec![Value::Int(role), Value::Text(org.into()), Value::Int(user)];
    let tg = |item: i64, tag: &str| vec![Value::Int(item), Value::Text(tag.into())];
    apply_all(
        &mut *target,
        &[
            insert(&memberships, m(1, "acme", 5)),
            insert(&memberships, m(2, "acme", 6)),
            insert(&memberships, m(3, "acme", 5)),
            update(&memberships, m(2, "acme", 6), m(4, "acme", 6)),
            update(&memberships, m(3, "acme", 5), m(3, "beta", 5)),
            insert(&tags, tg(1, "red")),
            insert(&tags, tg(1, "red")),
            insert(&tags, tg(1, "blue")),
            // Keys that only differ in case or trailing space are different keys.
            insert(&tags, tg(1, "Blue")),
            insert(&tags, tg(1, "blue ")),
            update(&tags, tg(1, "blue"), tg(2, "blue")),
            update(&tags, tg(3, "green"), tg(3, "green")),
            delete(&tags, tg(1, "red")),
        ],
        &checkpoint(1, 1),
    );
    assert_eq!(
        f.rows(&memberships),
        vec![canon(&m(3, "beta", 5)), canon(&m(4, "acme", 6))]
    );
    let mut got = f.rows(&tags);
    got.sort();
    assert_eq!(
        got,
        vec![
            canon(&tg(1, "Blue")),
            canon(&tg(1, "blue ")),
            canon(&tg(2, "blue")),
            canon(&tg(3, "green"))
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// prepare()

fn prepare_records_tables_and_accepts_matching_existing_tables(f: &Fixture) {
    let t = users();
    {
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    }
    // Reopen and prepare again, twice: nothing changes.
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    target.prepare(&[Arc::clone(&t)]).unwrap();
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));

    let recorded = f.recorded_tables();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (name, source, definition) = &recorded[0];
    assert_eq!(name, "users");
    assert_eq!(source, "src.users");
    let json: serde_json::Value = serde_json::from_str(definition).unwrap();
    assert_eq!(json["key"], serde_json::json!(["id"]));
    let columns = json["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 3);
    assert_eq!(columns[0]["name"], "id");
    assert_eq!(columns[0]["not_null"], true);
    assert_eq!(columns[1]["source"]["kind"], "text");
    assert!(columns[2]["type"].is_string());
}

/// `empty_table` deletes every row inside the open transaction, after the changes buffered
/// before it and before those after it; a rollback keeps the rows.
fn empty_table_commits_with_the_checkpoint(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    target.begin().unwrap();
    target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
    target.empty_table(&t).unwrap();
    target.rollback().unwrap();
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    target.begin().unwrap();
    target.apply(&insert(&t, user(2, "b", 2.0))).unwrap();
    target.empty_table(&t).unwrap();
    target.apply(&insert(&t, user(3, "c", 3.0))).unwrap();
    target.commit(&checkpoint(2, 2)).unwrap();
    assert_eq!(f.rows(&t), vec![canon(&user(3, "c", 3.0))]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(2, 2)));
    assert!(target.empty_table(&t).is_err(), "outside a transaction");
}

/// Each table records the rules (row filter and transforms) it was created under; a table
/// created again after a drop records its new ones.
fn a_table_records_its_rules(f: &Fixture) {
    let with_rules = |rules: &str| {
        let mut t = (*users()).clone();
        t.rules = rules.to_owned();
        Arc::new(t)
    };
    let mut target = f.open_prepared(&[with_rules("where: id > 1; transforms: name=mask:2"), pairs()]);
    let rules = target.recorded_rules().unwrap();
    assert_eq!(
        rules["users"].as_deref(),
        Some("where: id > 1; transforms: name=mask:2")
    );
    assert_eq!(rules["pairs"].as_deref(), Some(""));
    target.drop_table("users").unwrap();
    target.prepare(&[with_rules("where: ; transforms: ")]).unwrap();
    assert_eq!(
        target.recorded_rules().unwrap()["users"].as_deref(),
        Some("where: ; transforms: ")
    );
}

/// `recorded_tables` lists the tables sluice created that still exist; `drop_table` drops one
/// and forgets its records (a stale backfill record included), so that `prepare` creates it
/// afresh and empty. Dropping a table that is gone only forgets its records.
fn a_dropped_table_is_forgotten_and_created_afresh(f: &Fixture) {
    let t = users();
    let other = pairs();
    let mut target = f.open_prepared(&[Arc::clone(&t), Arc::clone(&other)]);
    assert_eq!(
        target.recorded_tables().unwrap(),
        vec!["pairs".to_owned(), "users".to_owned()]
    );
    apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
    let stale = BackfillProgress {
        stale: true,
        ..progress("users", true, Some("[1]"), 1)
    };
    record_all(
        &mut *target,
        &[stale.clone(), progress("pairs", true, None, 0)],
        &checkpoint(2, 2),
    );
    assert!(target.load_backfill().unwrap().contains(&stale));

    target.drop_table("users").unwrap();
    assert_eq!(target.recorded_tables().unwrap(), vec!["pairs".to_owned()]);
    assert_eq!(target.load_backfill().unwrap(), vec![progress("pairs", true, None, 0)]);
    // Again, with the table gone: nothing left to do, no error.
    target.drop_table("users").unwrap();

    target.prepare(&[Arc::clone(&t)]).unwrap();
    assert!(f.rows(&t).is_empty());
    apply_all(&mut *target, &[insert(&t, user(2, "b", 2.0))], &checkpoint(3, 3));
    assert_eq!(f.rows(&t), vec![canon(&user(2, "b", 2.0))]);
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(3, 3)));
    // Not inside a transaction.
    target.begin().unwrap();
    assert!(target.drop_table("users").is_err());
    target.rollback().unwrap();
    assert_eq!(f.rows(&t), vec![canon(&user(2, "b", 2.0))]);
}

/// A column added to a table's replicated columns: the target reports it missing, `prepare`
/// adds it (empty in existing rows, whatever the column order), and `fill_columns` writes only
/// the named columns of rows the target holds.
fn a_missing_column_is_added_and_filled_alone(f: &Fixture) {
    let short = table(
        "users",
        vec![
            not_null(def("id", ColumnKind::Int)),
            length(def("name", ColumnKind::Text), 40),
        ],
        &[0],
    );
    {
        let mut target = f.open_prepared(&[Arc::clone(&short)]);
        let rows = [
            vec![Value::Int(1), Value::Text("a".into())],
            vec![Value::Int(2), Value::Text("b".into())],
        ];
        let ops: Vec<RowOp> = rows.iter().map(|r| insert(&short, r.clone())).collect();
        apply_all(&mut *target, &ops, &checkpoint(1, 1));
    }
    // The new column sits between the others in the source's order.
    let full = table(
        "users",
        vec![
            not_null(def("id", ColumnKind::Int)),
            def("score", ColumnKind::Double),
            length(def("name", ColumnKind::Text), 40),
        ],
        &[0],
    );
    let mut target = f.open();
    assert_eq!(
        target.column_gaps(&[Arc::clone(&full)]).unwrap(),
        vec![("users".to_owned(), vec![1])]
    );
    target.prepare(&[Arc::clone(&full)]).unwrap();
    assert_eq!(target.column_gaps(&[Arc::clone(&full)]).unwrap(), vec![]);
    let row = |id: i64, score: Option<f64>, name: &str| {
        vec![
            Value::Int(id),
            score.map_or(Value::Null, Value::Double),
            Value::Text(name.into()),
        ]
    };
    assert_eq!(
        f.rows(&full),
        vec![canon(&row(1, None, "a")), canon(&row(2, None, "b"))]
    );
    target.begin().unwrap();
    // Only `score` is written: the other columns of the row stay as they are, and a row the
    // target lacks is not created.
    target
        .fill_columns(&full, &[1], &row(1, Some(2.5), "not written"))
        .unwrap();
    target.fill_columns(&full, &[1], &row(3, Some(9.0), "absent")).unwrap();
    target.commit_without_checkpoint().unwrap();
    assert_eq!(
        f.rows(&full),
        vec![canon(&row(1, Some(2.5), "a")), canon(&row(2, None, "b"))]
    );
    // Stream writes of whole rows work on the altered table.
    apply_all(
        &mut *target,
        &[insert(&full, row(4, Some(1.0), "d"))],
        &checkpoint(1, 2),
    );
    assert_eq!(f.rows(&full).len(), 3);
    // A key column is never filled.
    target.begin().unwrap();
    assert!(target.fill_columns(&full, &[0], &row(1, None, "a")).is_err());
}

fn prepare_refuses_an_existing_table_with_other_columns_and_creates_nothing(f: &Fixture) {
    let t = users();
    {
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
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
    let fewer = table(
        "users",
        vec![not_null(def("id", ColumnKind::Int)), def("name", ColumnKind::Text)],
        &[0],
    );
    let other_key = table(
        "users",
        vec![
            def("id", ColumnKind::Int),
            length(def("name", ColumnKind::Text), 40),
            def("score", ColumnKind::Double),
            not_null(def("id2", ColumnKind::Int)),
        ],
        &[3],
    );
    let extra = table("fresh", vec![not_null(def("id", ColumnKind::Int))], &[0]);
    let mut target = f.open();
    // A column sluice would not write, a renamed column, a key column the table lacks.
    for bad in [renamed, fewer, other_key] {
        // The mismatching table comes after a new one: prepare is all or nothing.
        let err = target.prepare(&[Arc::clone(&extra), bad]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TargetError::Other(_)), "{err:?}");
        assert!(msg.contains("users"), "{msg}");
    }
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    assert!(!f.table_exists("fresh"));
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
}

fn reserved_and_invalid_table_definitions_are_refused(f: &Fixture) {
    let mut target = f.open();
    let reserved = table("_SLUICE_checkpoint", vec![not_null(def("id", ColumnKind::Int))], &[0]);
    let msg = target.prepare(&[reserved]).unwrap_err().to_string();
    assert!(msg.contains("reserved"), "{msg}");
    let no_key = table("nokey", vec![def("id", ColumnKind::Int)], &[]);
    assert!(target.prepare(&[no_key]).is_err());
    let bad_key = table("badkey", vec![def("id", ColumnKind::Int)], &[3]);
    assert!(target.prepare(&[bad_key]).is_err());
    let no_columns = table("empty", vec![], &[0]);
    assert!(target.prepare(&[no_columns]).is_err());
    assert!(!f.table_exists("nokey") && !f.table_exists("badkey") && !f.table_exists("empty"));
}

fn weird_identifiers_are_quoted(f: &Fixture) {
    let t = table(
        "we\"i`rd;名前 DROP TABLE users;--",
        vec![
            not_null(def("i\"d", ColumnKind::Int)),
            def("va;lue `x` \"y\" 'z'", ColumnKind::Text),
            def("Ünïcødé 名前", ColumnKind::Int),
            def("select", ColumnKind::Int),
        ],
        &[0],
    );
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let row = |id: i64, v: &str| vec![Value::Int(id), Value::Text(v.into()), Value::Int(64), Value::Int(0)];
    apply_all(
        &mut *target,
        &[
            insert(&t, row(1, "one")),
            insert(&t, row(2, "two")),
            update(&t, row(1, "one"), row(1, "uno")),
            update(&t, row(2, "two"), row(3, "tres")),
            delete(&t, row(1, "uno")),
        ],
        &checkpoint(1, 1),
    );
    assert_eq!(f.rows(&t), vec![canon(&row(3, "tres"))]);
    // Prepared again on reopen: the existing-table check reads the same names back.
    drop(target);
    let _again = f.open_prepared(&[Arc::clone(&t)]);
    assert!(f.table_exists(&t.name));
}

/// Identifier lengths: 64 characters is MariaDB's limit, 63 bytes PostgreSQL's; SQLite has
/// none. A target refuses names it can't hold exactly (PostgreSQL would truncate them).
fn long_identifiers(f: &Fixture) {
    let ascii63 = "y".repeat(63);
    let chars64 = "é".repeat(64); // 128 bytes
    let ascii64 = "x".repeat(64);
    let chars65 = "z".repeat(65);
    // (table name, column name, refusing targets with the message they give)
    type Refusals = &'static [(Kind, &'static str)];
    let cases: [(&str, &str, Refusals); 5] = [
        (&ascii63, &ascii63, &[]),
        ("long_col_64", &chars64, &[(Kind::Postgres, "63 bytes")]),
        (&ascii64, "id2", &[(Kind::Postgres, "63 bytes")]),
        (
            "long_col_65",
            &chars65,
            &[(Kind::Postgres, "63 bytes"), (Kind::MariaDb, "64 characters")],
        ),
        (&chars64, "id2", &[(Kind::Postgres, "63 bytes")]),
    ];
    for (table_name, column, refusals) in cases {
        let t = table(
            table_name,
            vec![not_null(def("id", ColumnKind::Int)), def(column, ColumnKind::Text)],
            &[0],
        );
        let mut target = f.open();
        match refusals.iter().find(|(kind, _)| *kind == f.kind) {
            Some((_, why)) => {
                let err = target.prepare(&[Arc::clone(&t)]).unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, TargetError::Other(_)), "{err:?}");
                assert!(msg.contains(why) && msg.contains(table_name), "{msg}");
                assert!(!f.table_exists(table_name));
            }
            None => {
                target.prepare(&[Arc::clone(&t)]).unwrap();
                let row = vec![Value::Int(1), Value::Text("v".into())];
                apply_all(&mut *target, &[insert(&t, row.clone())], &checkpoint(1, 1));
                assert_eq!(f.rows(&t), vec![canon(&row)]);
                // The names read back exactly: a second prepare accepts the table.
                f.open().prepare(&[Arc::clone(&t)]).unwrap();
            }
        }
    }
}

fn an_equal_table_definition_in_another_arc_works(f: &Fixture) {
    // The engine may hand over the same definition in a fresh Arc.
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let copy = Arc::new((*t).clone());
    apply_all(
        &mut *target,
        &[insert(&t, user(1, "a", 1.0)), insert(&copy, user(2, "b", 2.0))],
        &checkpoint(1, 1),
    );
    assert_eq!(f.rows(&t).len(), 2);
}

fn many_rows_in_one_transaction(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let ops: Vec<RowOp> = (0..500)
        .map(|i| insert(&t, user(i, &format!("user {i}"), i as f64 / 4.0)))
        .chain((0..500).step_by(2).map(|i| delete(&t, user(i, "", 0.0))))
        .collect();
    apply_all(&mut *target, &ops, &checkpoint(1, 1));
    let rows = f.rows(&t);
    assert_eq!(rows.len(), 250);
    assert_eq!(rows[0], canon(&user(1, "user 1", 0.25)));
    assert_eq!(rows[249], canon(&user(499, "user 499", 124.75)));
}

// ---------------------------------------------------------------------------------------------
// Batches: server targets send consecutive row changes as multi-row statements

/// Applies `ops` in an open transaction and commits `cp`, expecting the transaction to fail:
/// a server target may report a row's database error from a later `apply` or from `commit`.
fn apply_expecting_failure(target: &mut dyn Target, ops: &[RowOp], cp: &Checkpoint) -> TargetError {
    target.begin().unwrap();
    for op in ops {
        if let Err(e) = target.apply(op) {
            return e;
        }
    }
    target.commit(cp).expect_err("the transaction should have failed")
}

/// `pairs (a INT, b VARCHAR(20), v INT)`, key `(a, b)`.
fn pairs() -> Arc<TargetTable> {
    table(
        "pairs",
        vec![
            not_null(def("a", ColumnKind::Int)),
            not_null(length(def("b", ColumnKind::Text), 20)),
            def("v", ColumnKind::Int),
        ],
        &[0, 1],
    )
}

fn pair(a: i64, b: &str, v: i64) -> Vec<Value> {
    vec![Value::Int(a), Value::Text(b.to_owned()), Value::Int(v)]
}

fn the_same_key_changed_many_times_in_one_transaction(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[insert(&t, user(9, "old", 0.0))], &checkpoint(1, 1));
    let mut ops = vec![
        // Two upserts and an update of one key.
        insert(&t, user(1, "first", 1.0)),
        insert(&t, user(1, "second", 2.0)),
        update(&t, user(1, "second", 2.0), user(1, "third", 3.0)),
        // Delete, then re-insert.
        insert(&t, user(2, "gone", 0.0)),
        delete(&t, user(2, "gone", 0.0)),
        insert(&t, user(2, "back", 2.5)),
        // Insert, then delete.
        insert(&t, user(3, "brief", 0.0)),
        delete(&t, user(3, "brief", 0.0)),
        // Delete of an existing row, re-insert, delete again.
        delete(&t, user(9, "old", 0.0)),
        insert(&t, user(9, "new", 9.0)),
        delete(&t, user(9, "new", 9.0)),
        // A key change chain 4 -> 5 -> 6, and 7 -> 8 -> 7 (moved back).
        insert(&t, user(4, "moving", 4.0)),
        update(&t, user(4, "moving", 4.0), user(5, "moving", 5.0)),
        update(&t, user(5, "moving", 5.0), user(6, "moved", 6.0)),
        insert(&t, user(7, "swing", 7.0)),
        update(&t, user(7, "swing", 7.0), user(8, "swing", 8.0)),
        update(&t, user(8, "swing", 8.0), user(7, "home", 7.5)),
    ];
    // More upserts of one key than a statement holds.
    for i in 0..600 {
        ops.push(insert(&t, user(10, &format!("v{i}"), f64::from(i))));
    }
    apply_all(&mut *target, &ops, &checkpoint(2, 2));
    assert_eq!(
        f.rows(&t),
        vec![
            canon(&user(1, "third", 3.0)),
            canon(&user(2, "back", 2.5)),
            canon(&user(6, "moved", 6.0)),
            canon(&user(7, "home", 7.5)),
            canon(&user(10, "v599", 599.0)),
        ]
    );
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(2, 2)));
}

fn a_failing_row_in_a_batch_rolls_back_everything(f: &Fixture) {
    let t = table(
        "nn_batch",
        vec![
            not_null(def("id", ColumnKind::Int)),
            not_null(def("required", ColumnKind::Text)),
        ],
        &[0],
    );
    let other = users();
    let mut target = f.open_prepared(&[Arc::clone(&t), Arc::clone(&other)]);
    apply_all(
        &mut *target,
        &[insert(&t, vec![Value::Int(0), Value::Text("kept".into())])],
        &checkpoint(1, 1),
    );
    let mut ops = Vec::new();
    for i in 1..300 {
        ops.push(insert(&t, vec![Value::Int(i), Value::Text(format!("secret-{i}"))]));
        ops.push(insert(&other, user(i, "secret-name", 1.0)));
    }
    ops.push(delete(&t, vec![Value::Int(0), Value::Null]));
    ops.push(insert(&t, vec![Value::Int(150), Value::Null]));
    for i in 300..700 {
        ops.push(insert(&t, vec![Value::Int(i), Value::Text(format!("secret-{i}"))]));
    }
    let err = apply_expecting_failure(&mut *target, &ops, &checkpoint(2, 2));
    match &err {
        TargetError::Database { table, message, .. } => {
            assert_eq!(table, "nn_batch");
            assert!(message.contains("required"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(!err.to_string().contains("secret"), "{err}");
    target.rollback().unwrap();
    // Nothing of the failed transaction is there; the previous commit is intact.
    assert_eq!(f.rows(&t), vec![vec![Some("0".to_owned()), Some("kept".to_owned())]]);
    assert!(f.rows(&other).is_empty());
    assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
    // The target is usable again.
    apply_all(
        &mut *target,
        &[insert(&other, user(1, "after", 1.0))],
        &checkpoint(3, 3),
    );
    assert_eq!(f.rows(&other), vec![canon(&user(1, "after", 1.0))]);
}

/// A small deterministic generator (xorshift), so every target sees the same workload.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `apply_all` leaves what one `apply` per change leaves: long runs of inserts into one
/// table (SQLite writes them as multi-row upserts) with keys repeated inside a run and across
/// statement boundaries, other tables' rows and updates and deletes between the runs; and a
/// bad row in a run fails the whole transaction.
fn apply_all_equals_one_apply_each(f: &Fixture) {
    use std::collections::BTreeMap;
    let u = users();
    let p = pairs();
    let mut target = f.open_prepared(&[Arc::clone(&u), Arc::clone(&p)]);
    let mut model: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    let mut ops = Vec::new();
    for round in 0..3i64 {
        // 150 inserts over 70 keys: every key of the run repeats, within and across the
        // 64-row statements.
        for n in 0..150i64 {
            let id = (n * 37 + round) % 70;
            let row = user(id, &format!("r{round}n{n}"), n as f64);
            model.insert(id, row.clone());
            ops.push(insert(&u, row));
        }
        ops.push(insert(&p, pair(round, "k", round)));
        let old = model[&(round + 1)].clone();
        let new = user(round + 1, "updated", -1.0);
        model.insert(round + 1, new.clone());
        ops.push(update(&u, old, new));
        let gone = model.remove(&(round + 5)).expect("present");
        ops.push(delete(&u, gone));
    }
    target.begin().unwrap();
    target.apply_all(&ops).unwrap();
    target.commit(&checkpoint(1, 1)).unwrap();
    let expected: Vec<_> = model.values().map(|r| canon(r)).collect();
    assert_eq!(f.rows(&u), expected);
    assert_eq!(f.rows(&p).len(), 3);

    // A row that cannot be stored, in the middle of a run: nothing of the transaction stays.
    let mut bad: Vec<RowOp> = (100..200).map(|id| insert(&u, user(id, "x", 0.0))).collect();
    bad[70] = insert(&u, vec![Value::Int(170), Value::Int(5), Value::Double(0.0)]);
    target.begin().unwrap();
    let err = target
        .apply_all(&bad)
        .and_then(|()| target.commit(&checkpoint(2, 2)))
        .unwrap_err();
    assert!(err.to_string().contains("users"), "{err}");
    let _ = target.rollback();
    assert_eq!(f.rows(&u), expected);
    assert!(f.open().load_checkpoint().unwrap().unwrap().covers(gtid(0, 1, 1)));
    assert!(!f.open().load_checkpoint().unwrap().unwrap().covers(gtid(0, 1, 2)));
}

fn random_batches_match_a_row_by_row_model(f: &Fixture) {
    use std::collections::BTreeMap;
    let u = users();
    let p = pairs();
    let mut target = f.open_prepared(&[Arc::clone(&u), Arc::clone(&p)]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // The model: what applying each change on its own leaves.
    let mut users_model: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    let mut pairs_model: BTreeMap<(i64, String), Vec<Value>> = BTreeMap::new();
    for txn in 0..4u64 {
        let mut ops = Vec::new();
        // Enough changes to pass the flush size, on a small key space (many repeats).
        for n in 0..2_500i64 {
            let on_users = rng.below(2) == 0;
            let choice = rng.below(10);
            if on_users {
                let id = rng.below(40) as i64;
                let row = user(id, &format!("t{txn}n{n}"), n as f64);
                match (choice, users_model.get(&id).cloned()) {
                    (0..=1, Some(old)) => {
                        users_model.remove(&id);
                        ops.push(delete(&u, old));
                    }
                    (2..=3, Some(old)) => {
                        // A key change to a free key.
                        let to = 40 + rng.below(40) as i64;
                        if users_model.contains_key(&to) {
                            continue;
                        }
                        let new = user(to, &format!("moved{n}"), n as f64);
                        users_model.remove(&id);
                        users_model.insert(to, new.clone());
                        ops.push(update(&u, old, new));
                    }
                    (4..=6, Some(old)) => {
                        users_model.insert(id, row.clone());
                        ops.push(update(&u, old, row));
                    }
                    _ => {
                        users_model.insert(id, row.clone());
                        ops.push(insert(&u, row));
                    }
                }
            } else {
                let a = rng.below(6) as i64;
                let b = format!("k{}", rng.below(6));
                let row = pair(a, &b, n);
                match (choice, pairs_model.get(&(a, b.clone())).cloned()) {
                    (0..=2, Some(old)) => {
                        pairs_model.remove(&(a, b));
                        ops.push(delete(&p, old));
                    }
                    (3..=4, Some(old)) => {
                        let to = (a, format!("m{}", rng.below(6)));
                        if pairs_model.contains_key(&to) {
                            continue;
                        }
                        let new = pair(to.0, &to.1, n);
                        pairs_model.remove(&(a, b));
                        pairs_model.insert(to, new.clone());
                        ops.push(update(&p, old, new));
                    }
                    _ => {
                        pairs_model.insert((a, b), row.clone());
                        ops.push(insert(&p, row));
                    }
                }
            }
        }
        apply_all(&mut *target, &ops, &checkpoint(10 + txn, 1));
        let want_users: Rows = users_model.values().map(|r| canon(r)).collect();
        assert_eq!(f.rows(&u), want_users, "users after transaction {txn}");
        let mut got_pairs = f.rows(&p);
        let mut want_pairs: Rows = pairs_model.values().map(|r| canon(r)).collect();
        got_pairs.sort();
        want_pairs.sort();
        assert_eq!(got_pairs, want_pairs, "pairs after transaction {txn}");
    }
}

fn reads_inside_a_transaction_see_its_own_changes(f: &Fixture) {
    use sluice_engine::target::RowSelection;
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    apply_all(&mut *target, &[insert(&t, user(2, "two", 2.0))], &checkpoint(1, 1));
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "one", 1.0))).unwrap();
    target.apply(&delete(&t, user(2, "two", 2.0))).unwrap();
    let keys = vec![vec![Value::Int(1)], vec![Value::Int(2)]];
    let rows = target.read_rows(&t, RowSelection::Keys(&keys)).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], Value::Text("one".into()));
    target.commit_without_checkpoint().unwrap();
    assert_eq!(f.rows(&t), vec![canon(&user(1, "one", 1.0))]);
}

// ---------------------------------------------------------------------------------------------
// Backfill progress

fn progress(table: &str, done: bool, last_key: Option<&str>, rows_copied: u64) -> BackfillProgress {
    BackfillProgress {
        table: table.to_owned(),
        done,
        last_key: last_key.map(str::to_owned),
        rows_copied,
        ..BackfillProgress::default()
    }
}

/// Records `records` in one target transaction, with no rows, and commits.
fn record_all(target: &mut dyn Target, records: &[BackfillProgress], cp: &Checkpoint) {
    target.begin().unwrap();
    for record in records {
        target.record_backfill(record).unwrap();
    }
    target.commit(cp).unwrap();
}

fn backfill_progress_commits_with_the_rows(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let record = progress("users", false, Some("[1]"), 1);
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
    target.record_backfill(&record).unwrap();
    // Invisible to another connection until commit.
    assert_eq!(f.open().load_backfill().unwrap(), vec![]);
    target.commit(&checkpoint(1, 1)).unwrap();

    assert_eq!(target.load_backfill().unwrap(), vec![record.clone()]);
    assert_eq!(f.open().load_backfill().unwrap(), vec![record]);
    assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    assert_eq!(f.open().load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
}

fn rolled_back_backfill_progress_is_not_recorded(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    // Rolled back before anything was ever committed.
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
    target
        .record_backfill(&progress("users", false, Some("[1]"), 1))
        .unwrap();
    target.rollback().unwrap();
    assert_eq!(target.load_backfill().unwrap(), vec![]);
    assert!(f.rows(&t).is_empty());

    // Rolled back over a committed record: the committed one stays as it was.
    let committed = progress("users", false, Some("[5]"), 5);
    record_all(&mut *target, std::slice::from_ref(&committed), &checkpoint(1, 1));
    target.begin().unwrap();
    target.record_backfill(&progress("users", true, None, 10)).unwrap();
    target
        .record_backfill(&progress("orders", false, Some("[2]"), 2))
        .unwrap();
    target.rollback().unwrap();
    assert_eq!(target.load_backfill().unwrap(), vec![committed.clone()]);
    assert_eq!(f.open().load_backfill().unwrap(), vec![committed]);
}

fn backfill_progress_is_upserted_per_table(f: &Fixture) {
    let mut target = f.open_prepared(&[users()]);
    // Names sort in byte order, whatever the target's default collation.
    let first = vec![
        progress("orders", false, Some("[10]"), 10),
        progress("users", false, Some("[\"b\"]"), 3),
        progress("Zeta", false, None, 0),
        progress("accounts", true, Some("[99]"), 99),
    ];
    record_all(&mut *target, &first, &checkpoint(1, 1));
    let mut expected = first.clone();
    expected.sort_by(|a, b| a.table.cmp(&b.table));
    assert_eq!(
        expected.iter().map(|p| p.table.as_str()).collect::<Vec<_>>(),
        ["Zeta", "accounts", "orders", "users"]
    );
    assert_eq!(target.load_backfill().unwrap(), expected);

    // Replace some: rows_copied, last_key and done all change; the others stay.
    let second = vec![
        progress("orders", true, None, 25),
        progress("Zeta", false, Some("[1]"), 1),
        progress("orders", true, Some("[25]"), 26),
    ];
    record_all(&mut *target, &second, &checkpoint(2, 2));
    let expected = vec![
        progress("Zeta", false, Some("[1]"), 1),
        progress("accounts", true, Some("[99]"), 99),
        progress("orders", true, Some("[25]"), 26),
        progress("users", false, Some("[\"b\"]"), 3),
    ];
    assert_eq!(target.load_backfill().unwrap(), expected);
    assert_eq!(f.open().load_backfill().unwrap(), expected);

    // Large counts and a done table going back to not done.
    let third = vec![
        progress("users", false, Some("[\"c\"]"), i64::MAX as u64),
        progress("accounts", false, Some("[0]"), 0),
    ];
    record_all(&mut *target, &third, &checkpoint(3, 3));
    let loaded = f.open().load_backfill().unwrap();
    assert_eq!(loaded[1], third[1]);
    assert_eq!(loaded[3], third[0]);
}

fn record_backfill_needs_an_open_transaction(f: &Fixture) {
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let record = progress("users", false, Some("secret-key-42"), 7);
    let msg = target.record_backfill(&record).unwrap_err().to_string();
    assert!(!msg.contains("secret-key-42"), "{msg}");
    assert_eq!(target.load_backfill().unwrap(), vec![]);

    // Nor after a rollback.
    target.begin().unwrap();
    target.rollback().unwrap();
    assert!(target.record_backfill(&record).is_err());

    // Nor after a failed write: the transaction is gone, and commit stays refused.
    target.begin().unwrap();
    target.record_backfill(&record).unwrap();
    assert!(target.apply(&insert(&t, vec![Value::Int(1)])).is_err());
    let msg = target.record_backfill(&record).unwrap_err().to_string();
    assert!(!msg.contains("secret-key-42"), "{msg}");
    assert!(target.commit(&checkpoint(1, 1)).is_err());
    target.rollback().unwrap();
    assert_eq!(target.load_backfill().unwrap(), vec![]);
    assert_eq!(f.open().load_backfill().unwrap(), vec![]);
    assert_eq!(target.load_checkpoint().unwrap(), None);

    // The target is usable afterwards.
    record_all(&mut *target, std::slice::from_ref(&record), &checkpoint(2, 2));
    assert_eq!(target.load_backfill().unwrap(), vec![record]);
}

fn a_fresh_target_has_no_backfill_progress(f: &Fixture) {
    let mut target = f.open();
    assert_eq!(target.load_backfill().unwrap(), vec![], "fresh target");
    target.prepare(&[users()]).unwrap();
    assert_eq!(target.load_backfill().unwrap(), vec![], "prepared target");
    assert_eq!(
        f.open().load_backfill().unwrap(),
        vec![],
        "prepared target, new connection"
    );
}

fn backfill_keys_round_trip_exactly(f: &Fixture) {
    let mut target = f.open_prepared(&[users()]);
    // 4 KB of mixed one- to four-byte characters, quotes and backslashes.
    let mut long = String::new();
    let mut i = 0usize;
    while long.len() < 4096 {
        long.push_str(["a", "é", "€", "🦀", "'", "\"", "\\", "`", "%", "_", "\n", "\t"][i % 12]);
        i += 1;
    }
    let keys: Vec<(&str, Option<String>)> = vec![
        (
            "k_unicode",
            Some("héllo wörld 日本語 Ελληνικά 🦀🎉 \u{200b}\u{feff}".to_owned()),
        ),
        ("k_quotes", Some(r#"it's "quoted" `back` ''double'' "#.to_owned())),
        ("k_backslash", Some(r"C:\path\to\x \' \\' \n \0 \\".to_owned())),
        ("k_json", Some(r#"[1,"a\"b\\c",null,"O'Brien"]"#.to_owned())),
        ("k_spaces", Some("  trailing and leading spaces  ".to_owned())),
        ("k_empty", Some(String::new())),
        ("k_long", Some(long)),
        ("k_none", None),
    ];
    let records: Vec<BackfillProgress> = keys
        .iter()
        .enumerate()
        .map(|(n, (table, key))| BackfillProgress {
            table: (*table).to_owned(),
            done: n % 2 == 0,
            last_key: key.clone(),
            rows_copied: n as u64 * 1000,
            // The detail (estimate, rate, failure, column-only copy) round-trips too.
            rows_estimate: n as u64 * 2000,
            rows_per_s: n as u64 * 7,
            error: (n % 3 == 1).then(|| format!("copy of \"t{n}\" failed: it's gone")),
            columns: if n % 2 == 1 {
                vec!["a".to_owned(), "b,c \"q\"".to_owned()]
            } else {
                Vec::new()
            },
            stale: n % 4 == 3,
        })
        .collect();
    record_all(&mut *target, &records, &checkpoint(1, 1));
    let mut expected = records.clone();
    expected.sort_by(|a, b| a.table.cmp(&b.table));
    assert_eq!(target.load_backfill().unwrap(), expected);
    let loaded = f.open().load_backfill().unwrap();
    assert_eq!(loaded, expected);
    let long_loaded = loaded.iter().find(|p| p.table == "k_long").unwrap();
    assert!(long_loaded.last_key.as_ref().unwrap().len() >= 4096);

    // A key goes back to None, and None to a key.
    let back = vec![
        progress("k_long", true, None, 5),
        progress("k_none", false, Some("[\"\\u00e9\"]"), 6),
    ];
    record_all(&mut *target, &back, &checkpoint(2, 2));
    let loaded = f.open().load_backfill().unwrap();
    assert_eq!(loaded.iter().find(|p| p.table == "k_long"), Some(&back[0]));
    assert_eq!(loaded.iter().find(|p| p.table == "k_none"), Some(&back[1]));
}

// ---------------------------------------------------------------------------------------------
// One test per check and target

/// `_sluice_readiness` (docs/readiness.md): rows commit or roll back with the transaction
/// they are written in, `replace` drops the table's other rows, and a finished copy makes the
/// copying states ready and leaves `held` as it is.
fn readiness_commits_with_its_transaction(f: &Fixture) {
    use sluice_engine::target::{Readiness, ReadinessState};
    let t = users();
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let states = |target: &mut dyn Target| -> Vec<(String, String, String)> {
        target
            .load_readiness()
            .unwrap()
            .into_iter()
            .map(|r| (r.table, r.column, r.state))
            .collect()
    };
    let row = |table: &str, column: &str, state: &str| (table.to_owned(), column.to_owned(), state.to_owned());
    assert_eq!(states(&mut *target), vec![]);
    assert!(target
        .record_readiness("users", &[Readiness::table(ReadinessState::Ready)], false)
        .is_err());

    let users = [
        Readiness::table(ReadinessState::Copying),
        Readiness::column("id", ReadinessState::Copying),
        Readiness::column("name", ReadinessState::BackfillingColumn),
        Readiness::column("secret", ReadinessState::Held),
    ];
    target.begin().unwrap();
    target.record_readiness("users", &users, true).unwrap();
    target.rollback().unwrap();
    assert_eq!(states(&mut *target), vec![]);

    target.begin().unwrap();
    target.record_readiness("users", &users, true).unwrap();
    target
        .record_readiness("orders", &[Readiness::table(ReadinessState::Ready)], false)
        .unwrap();
    target.commit_without_checkpoint().unwrap();
    let expected = vec![
        row("orders", "", "ready"),
        row("users", "", "copying"),
        row("users", "id", "copying"),
        row("users", "name", "backfilling_column"),
        row("users", "secret", "held"),
    ];
    assert_eq!(states(&mut *target), expected);

    // The copy's last chunk: ready, in its transaction (rolled back first: nothing changes).
    target.begin().unwrap();
    target.readiness_copied("users").unwrap();
    target.rollback().unwrap();
    assert_eq!(states(&mut *f.open()), expected);
    target.begin().unwrap();
    target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
    target.readiness_copied("users").unwrap();
    target.commit_without_checkpoint().unwrap();
    assert_eq!(
        states(&mut *f.open()),
        vec![
            row("orders", "", "ready"),
            row("users", "", "ready"),
            row("users", "id", "ready"),
            row("users", "name", "ready"),
            row("users", "secret", "held"),
        ]
    );

    // Replacing drops the table's rows the new set does not name, and no other table's.
    target.begin().unwrap();
    target
        .record_readiness("users", &[Readiness::table(ReadinessState::Stale)], true)
        .unwrap();
    target.commit_without_checkpoint().unwrap();
    assert_eq!(
        states(&mut *target),
        vec![row("orders", "", "ready"), row("users", "", "stale")]
    );
    // A dropped table is forgotten, its readiness too (no row: not ready).
    target.drop_table("users").unwrap();
    assert_eq!(states(&mut *target), vec![row("orders", "", "ready")]);
}

macro_rules! compliance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $check() { super::$check(&super::Fixture::new(super::Kind::Sqlite, stringify!($check))); })*
        }
        mod mariadb {
            $(#[test] fn $check() { super::$check(&super::Fixture::new(super::Kind::MariaDb, stringify!($check))); })*
        }
        mod postgres {
            $(#[test] fn $check() { super::$check(&super::Fixture::new(super::Kind::Postgres, stringify!($check))); })*
        }
    };
}

compliance!(
    readiness_commits_with_its_transaction,
    a_table_records_its_rules,
    a_dropped_table_is_forgotten_and_created_afresh,
    empty_table_commits_with_the_checkpoint,
    a_missing_column_is_added_and_filled_alone,
    every_type_round_trips,
    values_a_target_cannot_store_are_refused_clearly,
    unsigned_bigint_keys_above_i64_max_work,
    a_value_of_the_wrong_kind_is_refused_without_the_value,
    null_in_a_not_null_column_is_a_database_error_naming_the_column,
    a_row_of_the_wrong_length_is_refused,
    rollback_leaves_nothing_and_keeps_the_checkpoint,
    dropping_the_target_without_commit_leaves_nothing,
    checkpoint_round_trips_across_reconnect,
    per_writer_checkpoints_are_stored_and_merged,
    mysql_checkpoints_are_stored_and_merged_as_sets,
    the_checkpoint_and_rows_are_invisible_until_commit,
    apply_and_commit_need_an_open_transaction,
    prepare_inside_an_open_transaction,
    insert_of_an_existing_key_replaces_the_row,
    update_in_place_and_of_a_missing_row,
    update_with_a_key_change_moves_the_row,
    delete_removes_the_row_and_a_missing_delete_is_a_no_op,
    composite_and_all_key_tables,
    prepare_records_tables_and_accepts_matching_existing_tables,
    prepare_refuses_an_existing_table_with_other_columns_and_creates_nothing,
    reserved_and_invalid_table_definitions_are_refused,
    weird_identifiers_are_quoted,
    long_identifiers,
    an_equal_table_definition_in_another_arc_works,
    many_rows_in_one_transaction,
    backfill_progress_commits_with_the_rows,
    rolled_back_backfill_progress_is_not_recorded,
    backfill_progress_is_upserted_per_table,
    record_backfill_needs_an_open_transaction,
    a_fresh_target_has_no_backfill_progress,
    backfill_keys_round_trip_exactly,
    the_same_key_changed_many_times_in_one_transaction,
    a_failing_row_in_a_batch_rolls_back_everything,
    random_batches_match_a_row_by_row_model,
    apply_all_equals_one_apply_each,
    reads_inside_a_transaction_see_its_own_changes,
);

// ---------------------------------------------------------------------------------------------
// Target-specific checks

/// MariaDB and PostgreSQL refuse integers outside the source type's range with a clear
/// message (SQLite stores any integer that fits its storage class).
fn out_of_range_integers_are_refused(f: &Fixture) {
    let t = table(
        "ranges",
        vec![
            not_null(def("id", ColumnKind::Int)),
            unsigned(def("tiny_u", ColumnKind::TinyInt)),
            def("small", ColumnKind::SmallInt),
            length(def("bits", ColumnKind::Bit), 3),
            def("year", ColumnKind::Year),
        ],
        &[0],
    );
    let mut target = f.open_prepared(&[Arc::clone(&t)]);
    let cases = [
        (1, Value::Int(-1), "tiny_u"),
        (1, Value::UInt(256), "tiny_u"),
        (2, Value::Int(32_768), "small"),
        (3, Value::Bit(8), "bits"),
        (4, Value::Year(1900), "year"),
    ];
    for (col, value, name) in cases {
        let mut row = vec![Value::Int(1), Value::Null, Value::Null, Value::Null, Value::Null];
        row[col] = value;
        target.begin().unwrap();
        let msg = target.apply(&insert(&t, row)).unwrap_err().to_string();
        assert!(
            msg.contains("table ranges") && msg.contains(&format!("column {name}")),
            "{msg}"
        );
        target.rollback().unwrap();
    }
    // The extremes themselves fit.
    let row = vec![
        Value::Int(1),
        Value::UInt(255),
        Value::Int(-32_768),
        Value::Bit(7),
        Value::Year(1901),
    ];
    apply_all(&mut *target, &[insert(&t, row.clone())], &checkpoint(1, 1));
    assert_eq!(f.rows(&t), vec![canon(&row)]);
}

fn all_types_table() -> Arc<TargetTable> {
    let mut columns = vec![not_null(def("id", ColumnKind::Int))];
    columns.extend(type_cases().into_iter().map(|c| c.column));
    table("all_types", columns, &[0])
}

mod mariadb_only {
    use super::*;

    /// A failed record abandons the transaction like a failed write, and its error holds no
    /// key; `last_key` compares and stores exact bytes.
    #[test]
    fn a_failed_backfill_record_fails_the_transaction() {
        let f = Fixture::new(Kind::MariaDb, "backfill_failure");
        let t = users();
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        let Backend::MariaDb { server, database } = &f.backend else {
            unreachable!()
        };
        let collation: Vec<Option<String>> = mariadb_conn(server)
            .exec(
                "SELECT COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = '_sluice_backfill' AND COLUMN_NAME = 'last_key'",
                (database,),
            )
            .unwrap();
        assert_eq!(collation, vec![Some("utf8mb4_bin".to_owned())]);

        target.begin().unwrap();
        target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
        // `name` holds at most 64 characters, like every MariaDB table name.
        let long_name = "n".repeat(65);
        let msg = target
            .record_backfill(&progress(&long_name, false, Some("secret-key-42"), 1))
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("secret-key-42"), "{msg}");
        assert!(target.commit(&checkpoint(1, 1)).is_err());
        target.rollback().unwrap();
        assert!(f.rows(&t).is_empty());
        assert_eq!(target.load_backfill().unwrap(), vec![]);
    }

    #[test]
    fn out_of_range_integers_are_refused() {
        super::out_of_range_integers_are_refused(&Fixture::new(Kind::MariaDb, "ranges"));
    }

    #[test]
    fn declared_types_are_near_identity() {
        let f = Fixture::new(Kind::MariaDb, "declared_types");
        let t = all_types_table();
        f.open_prepared(&[Arc::clone(&t)]);
        let Backend::MariaDb { server, database } = &f.backend else {
            unreachable!()
        };
        let mut conn = mariadb_conn(server);
        let columns: Vec<(String, String, String, Option<String>)> = conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'all_types' ORDER BY ORDINAL_POSITION",
                (database,),
            )
            .unwrap();
        let get = |name: &str| {
            columns
                .iter()
                .find(|c| c.0 == name)
                .unwrap_or_else(|| panic!("no column {name}"))
                .clone()
        };
        // Integer display widths vary between versions: compare the type names.
        let base = |ty: &str| {
            let mut out = String::new();
            let mut skip = false;
            for ch in ty.chars() {
                match ch {
                    '(' if out.ends_with("int") || out.ends_with("year") => skip = true,
                    ')' if skip => skip = false,
                    _ if !skip => out.push(ch),
                    _ => {}
                }
            }
            out
        };
        let expected = [
            ("id", "int", "NO"),
            ("tinyint", "tinyint", "YES"),
            ("int_u", "int unsigned", "YES"),
            ("bigint_u_max", "bigint unsigned", "YES"),
            ("float", "float", "YES"),
            ("double", "double", "YES"),
            ("decimal_65_30", "decimal(65,30)", "YES"),
            ("date", "date", "YES"),
            ("time6", "time(6)", "YES"),
            ("time", "time", "YES"),
            ("datetime6", "datetime(6)", "YES"),
            ("timestamp6", "datetime(6)", "YES"),
            ("zero_timestamp", "datetime", "YES"),
            ("year", "year", "YES"),
            ("text", "longtext", "YES"),
            ("sjis_text", "longblob", "YES"),
            ("blob", "longblob", "YES"),
            ("varbinary_4", "varbinary(4)", "YES"),
            ("enum", "enum('small','large','')", "YES"),
            ("set", "set('a','b','c')", "YES"),
            ("bit_5", "bit(5)", "YES"),
            ("bit_64", "bit(64)", "YES"),
            ("json", "longtext", "YES"),
            ("geometry", "longblob", "YES"),
        ];
        for (name, ty, nullable) in expected {
            let (_, actual, is_nullable, _) = get(name);
            assert_eq!(base(&actual), ty, "type of {name}");
            assert_eq!(is_nullable, nullable, "nullability of {name}");
        }
        assert_eq!(get("text").3.as_deref(), Some("utf8mb4_nopad_bin"));
        assert_eq!(get("enum").3.as_deref(), Some("utf8mb4_bin"));
        let engine: Option<String> = conn
            .exec_first(
                "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'all_types'",
                (database,),
            )
            .unwrap();
        assert_eq!(engine.as_deref(), Some("InnoDB"));
    }

    #[test]
    fn dates_the_source_accepted_as_invalid_are_kept() {
        // ALLOW_INVALID_DATES at the source: the target stores what the source holds.
        let f = Fixture::new(Kind::MariaDb, "invalid_dates");
        let t = table(
            "dates",
            vec![
                not_null(def("id", ColumnKind::Int)),
                def("born", ColumnKind::Date),
                def("seen", ColumnKind::DateTime),
            ],
            &[0],
        );
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        let row = vec![
            Value::Int(1),
            Value::Date {
                year: 2023,
                month: 2,
                day: 30,
            },
            Value::DateTime {
                year: 2023,
                month: 4,
                day: 31,
                hour: 1,
                minute: 2,
                second: 3,
                micros: 0,
            },
        ];
        apply_all(&mut *target, &[insert(&t, row.clone())], &checkpoint(1, 1));
        assert_eq!(f.rows(&t), vec![canon(&row)]);
    }

    #[test]
    fn a_killed_connection_is_replaced() {
        let f = Fixture::new(Kind::MariaDb, "killed");
        let t = users();
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
        let Backend::MariaDb { server, database } = &f.backend else {
            unreachable!()
        };
        let kill = || {
            let mut admin = mariadb_conn(server);
            let ids: Vec<u64> = admin
                .exec(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?",
                    (database,),
                )
                .unwrap();
            assert!(!ids.is_empty());
            for id in ids {
                admin.query_drop(format!("KILL CONNECTION {id}")).unwrap();
            }
        };
        // Killed while idle: the next begin reconnects.
        kill();
        apply_all(&mut *target, &[insert(&t, user(2, "b", 2.0))], &checkpoint(2, 2));
        // Killed inside a transaction: the transaction fails and is gone; the next one works.
        target.begin().unwrap();
        target.apply(&insert(&t, user(3, "c", 3.0))).unwrap();
        kill();
        let failed = target
            .apply(&insert(&t, user(4, "d", 4.0)))
            .and_then(|()| target.commit(&checkpoint(3, 3)));
        assert!(failed.is_err());
        target.rollback().unwrap();
        apply_all(&mut *target, &[insert(&t, user(5, "e", 5.0))], &checkpoint(4, 4));
        let ids: Vec<Option<String>> = f.rows(&t).into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(ids, ["1", "2", "5"].map(|s| Some(s.to_owned())));
        assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(4, 4)));
    }
}

mod postgres_only {
    use super::*;

    /// PostgreSQL text cannot hold NUL: such a key is refused without the key, and the
    /// transaction is abandoned like after a failed write.
    #[test]
    fn a_backfill_key_with_nul_is_refused() {
        let f = Fixture::new(Kind::Postgres, "backfill_nul");
        let t = users();
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        target.begin().unwrap();
        target.apply(&insert(&t, user(1, "a", 1.0))).unwrap();
        let msg = target
            .record_backfill(&progress("users", false, Some("secret\0key"), 1))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("users") && msg.contains("NUL") && !msg.contains("secret"),
            "{msg}"
        );
        assert!(target.commit(&checkpoint(1, 1)).is_err());
        target.rollback().unwrap();
        assert!(f.rows(&t).is_empty());
        assert_eq!(target.load_backfill().unwrap(), vec![]);
    }

    #[test]
    fn out_of_range_integers_are_refused() {
        super::out_of_range_integers_are_refused(&Fixture::new(Kind::Postgres, "ranges"));
    }

    #[test]
    fn declared_types() {
        let f = Fixture::new(Kind::Postgres, "declared_types");
        let t = all_types_table();
        f.open_prepared(&[Arc::clone(&t)]);
        let Backend::Postgres { server, schema } = &f.backend else {
            unreachable!()
        };
        let rows = postgres_conn(server)
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = 'all_types' AND a.attnum > 0",
                &[schema],
            )
            .unwrap();
        let get = |name: &str| -> (String, bool) {
            let row = rows
                .iter()
                .find(|r| r.get::<_, String>(0) == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            (row.get(1), row.get(2))
        };
        let expected = [
            ("id", "integer", true),
            ("tinyint", "smallint", false),
            ("tinyint_u", "smallint", false),
            ("smallint", "smallint", false),
            ("smallint_u", "integer", false),
            ("mediumint_u", "integer", false),
            ("int", "integer", false),
            ("int_u", "bigint", false),
            ("bigint", "bigint", false),
            ("bigint_u_max", "numeric(20,0)", false),
            ("float", "real", false),
            ("double", "double precision", false),
            ("decimal_65_30", "numeric(65,30)", false),
            ("date", "date", false),
            ("time6", "interval", false),
            ("datetime6", "timestamp(6) without time zone", false),
            ("zero_datetime", "timestamp(0) without time zone", false),
            ("timestamp6", "timestamp(6) with time zone", false),
            ("year", "smallint", false),
            ("text", "text", false),
            ("latin1_text", "text", false),
            ("sjis_text", "bytea", false),
            ("blob", "bytea", false),
            ("enum", "text", false),
            ("set", "text", false),
            ("bit_5", "bigint", false),
            ("bit_64", "numeric(20,0)", false),
            ("json", "json", false),
            ("geometry", "bytea", false),
        ];
        for (name, ty, not_null) in expected {
            assert_eq!(get(name), (ty.to_owned(), not_null), "column {name}");
        }
    }

    #[test]
    fn a_terminated_connection_is_replaced() {
        let f = Fixture::new(Kind::Postgres, "terminated");
        let Backend::Postgres { server, schema } = &f.backend else {
            unreachable!()
        };
        let app = format!("sluice_test_{schema}");
        let conn_str = format!("{} application_name={app}", server.conn_string());
        let t = users();
        let mut target = PostgresTarget::connect(&conn_str, schema).unwrap();
        target.prepare(&[Arc::clone(&t)]).unwrap();
        apply_all(&mut target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
        let terminate = || {
            let n = postgres_conn(server)
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                    &[&app],
                )
                .unwrap()
                .len();
            assert_eq!(n, 1);
        };
        // Terminated while idle: the next begin reconnects.
        terminate();
        apply_all(&mut target, &[insert(&t, user(2, "b", 2.0))], &checkpoint(2, 2));
        // Terminated inside a transaction: the transaction fails and is gone.
        target.begin().unwrap();
        target.apply(&insert(&t, user(3, "c", 3.0))).unwrap();
        terminate();
        let failed = target
            .apply(&insert(&t, user(4, "d", 4.0)))
            .and_then(|()| target.commit(&checkpoint(3, 3)));
        assert!(failed.is_err());
        target.rollback().unwrap();
        apply_all(&mut target, &[insert(&t, user(5, "e", 5.0))], &checkpoint(4, 4));
        let ids: Vec<Option<String>> = f.rows(&t).into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(ids, ["1", "2", "5"].map(|s| Some(s.to_owned())));
        assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(4, 4)));
    }

    #[test]
    fn an_invalid_calendar_date_is_a_database_error_without_the_value() {
        // MySQL accepts 2023-02-30 under ALLOW_INVALID_DATES; PostgreSQL's date input refuses it.
        let f = Fixture::new(Kind::Postgres, "invalid_date");
        let t = table(
            "dates",
            vec![not_null(def("id", ColumnKind::Int)), def("born", ColumnKind::Date)],
            &[0],
        );
        let mut target = f.open_prepared(&[Arc::clone(&t)]);
        let row = vec![
            Value::Int(1),
            Value::Date {
                year: 2023,
                month: 2,
                day: 30,
            },
        ];
        let err = super::apply_expecting_failure(&mut *target, &[insert(&t, row)], &checkpoint(1, 1));
        match &err {
            TargetError::Database { table, message, .. } => {
                assert_eq!(table, "dates");
                assert!(
                    message.contains("22008") && message.contains("column born"),
                    "{message}"
                );
                assert!(!message.contains("2023"), "{message}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        target.rollback().unwrap();
        assert!(f.rows(&t).is_empty());
    }

    #[test]
    fn works_when_called_inside_a_tokio_runtime() {
        // The pipeline sets targets up from async code; the sync client must not panic there.
        let f = Fixture::new(Kind::Postgres, "in_runtime");
        let t = users();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut target = f.open_prepared(&[Arc::clone(&t)]);
            apply_all(&mut *target, &[insert(&t, user(1, "a", 1.0))], &checkpoint(1, 1));
            assert_eq!(target.load_checkpoint().unwrap(), Some(checkpoint(1, 1)));
            drop(target);
        });
        assert_eq!(f.rows(&t), vec![canon(&user(1, "a", 1.0))]);
    }
}
