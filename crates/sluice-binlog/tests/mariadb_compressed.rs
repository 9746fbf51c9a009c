//! MariaDB's compressed events (`log_bin_compress=ON`), written by a real throwaway server:
//! read back from its binlog file and over the replication protocol, they decode to the same
//! statements and rows as uncompressed events would.

use std::collections::HashMap;
use std::time::Duration;

use sluice_binlog::event::event_type as et;
use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::replica::{BinlogStream, ReplicaConfig};
use sluice_binlog::{EventBody, EventDecoder, GtidPosition, RowChange, TableDef, Value};
use sluice_testkit::{MariaDb, MariaDbOptions};

/// Statements whose binlog events are checked below. The row images and the DDL text are far
/// above `log_bin_compress_min_len=10`, so every QUERY and rows event gets compressed.
const WORKLOAD: &str = "
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(100), price DECIMAL(10,2), note TEXT);
INSERT INTO shop.items VALUES (1, 'kettle', 19.99, REPEAT('a', 300)), (2, 'toaster', 24.50, NULL);
UPDATE shop.items SET price = 21.00, name = 'steel kettle' WHERE id = 1;
DELETE FROM shop.items WHERE id = 2;
";

fn start_compressing_server() -> MariaDb {
    let db = MariaDbOptions::new()
        .server_args(["--log-bin-compress=ON", "--log-bin-compress-min-len=10"])
        .start();
    assert_eq!(db.query_value("SELECT @@log_bin_compress"), "1");
    db
}

/// What a decoded binlog said: type codes seen, statements, row changes of shop.items.
#[derive(Default)]
struct Seen {
    type_codes: Vec<u8>,
    statements: Vec<String>,
    changes: Vec<RowChange>,
}

impl Seen {
    fn take(&mut self, decoder: &mut EventDecoder, tables: &mut HashMap<u64, TableDef>, raw: &[u8]) {
        let event = decoder.decode(raw).unwrap_or_else(|e| panic!("decode failed: {e}"));
        self.type_codes.push(event.header.type_code);
        match event.body {
            EventBody::Query { sql, .. } => self.statements.push(sql.into_owned()),
            EventBody::TableMap(map) => {
                tables.insert(map.table_id, map.to_table_def());
            }
            EventBody::Rows(rows) => {
                let def = &tables[&rows.table_id];
                if def.name == "items" {
                    for change in rows.rows(def).unwrap() {
                        self.changes.push(change.unwrap());
                    }
                }
            }
            _ => {}
        }
    }

    fn check(&self) {
        for code in [
            et::MARIADB_QUERY_COMPRESSED,
            et::MARIADB_WRITE_ROWS_COMPRESSED_V1,
            et::MARIADB_UPDATE_ROWS_COMPRESSED_V1,
            et::MARIADB_DELETE_ROWS_COMPRESSED_V1,
        ] {
            assert!(
                self.type_codes.contains(&code),
                "no event of type {code} in {:?}",
                self.type_codes
            );
        }
        assert!(
            self.statements
                .iter()
                .any(|s| s.starts_with("CREATE TABLE shop.items (id INT PRIMARY KEY")),
            "{:?}",
            self.statements
        );
        let long_note = Value::Text("a".repeat(300));
        let kettle = vec![
            Value::Int(1),
            Value::Text("kettle".into()),
            Value::Decimal("19.99".into()),
            long_note.clone(),
        ];
        let toaster = vec![
            Value::Int(2),
            Value::Text("toaster".into()),
            Value::Decimal("24.50".into()),
            Value::Null,
        ];
        let steel = vec![
            Value::Int(1),
            Value::Text("steel kettle".into()),
            Value::Decimal("21.00".into()),
            long_note,
        ];
        assert_eq!(
            self.changes,
            vec![
                RowChange::Insert(kettle.clone()),
                RowChange::Insert(toaster.clone()),
                RowChange::Update {
                    before: kettle,
                    after: steel
                },
                RowChange::Delete(toaster),
            ]
        );
    }
}

#[test]
fn compressed_events_in_a_binlog_file_decode_like_plain_ones() {
    let db = start_compressing_server();
    db.exec(WORKLOAD);
    let file = db.query_rows("SHOW MASTER STATUS")[0][0].clone();
    db.exec("FLUSH BINARY LOGS");
    let path = db.data_dir().join(&file);
    let mut reader = BinlogFileReader::new(std::fs::File::open(&path).unwrap(), file).unwrap();
    let (mut decoder, mut tables, mut seen) = (EventDecoder::new(), HashMap::new(), Seen::default());
    while let Some((_, raw)) = reader.next_event().unwrap() {
        seen.take(&mut decoder, &mut tables, raw);
    }
    seen.check();
}

#[test]
fn compressed_events_over_the_replication_protocol_decode_like_plain_ones() {
    let db = start_compressing_server();
    db.create_user("repl", "repl-pw", &["REPLICATION SLAVE, REPLICATION CLIENT"]);
    db.exec(WORKLOAD);
    let end: GtidPosition = db.query_value("SELECT @@gtid_binlog_pos").parse().unwrap();
    let config = ReplicaConfig {
        tls: sluice_binlog::tls::TlsSettings::disabled(),
        host: "127.0.0.1".into(),
        port: db.port(),
        user: "repl".into(),
        password: "repl-pw".into(),
        server_id: 4_000_001,
        heartbeat: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(10),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = runtime.block_on(async {
        let mut stream = BinlogStream::connect(&config, &GtidPosition::new()).await.unwrap();
        let (mut decoder, mut tables, mut seen) = (EventDecoder::new(), HashMap::new(), Seen::default());
        let mut position = GtidPosition::new();
        // Until the stream has passed every GTID the workload wrote.
        while !position.covers(&end) {
            let raw = tokio::time::timeout(Duration::from_secs(30), stream.next_event())
                .await
                .expect("the stream stalled before the workload's last GTID")
                .unwrap();
            if let EventBody::Gtid(g) = decoder.decode(&raw).unwrap().body {
                position.advance(g.gtid);
            }
            seen.take(&mut decoder, &mut tables, &raw);
        }
        // The last transaction's events after its GTID event.
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_secs(2), stream.next_event()).await {
                Ok(raw) => seen.take(&mut decoder, &mut tables, &raw.unwrap()),
                Err(_) => break,
            }
        }
        seen
    });
    seen.check();
}
