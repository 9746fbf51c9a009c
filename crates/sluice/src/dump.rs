//! `sluice binlog dump`: events as JSON lines.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value as Json};
use sluice_binlog::event::type_name;
use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::replica::BinlogStream;
use sluice_binlog::{EventBody, EventDecoder, RowChange, SourcePosition, TableDef, Value};
use sluice_engine::config::Config;
use sluice_engine::select::rules::TablePlan;
use sluice_engine::target::RowOp;
use std::sync::Arc;

/// JSON for one value. Integers stay numbers (u64 too); exact decimals and temporal values
/// are strings; bytes are hex.
fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Year(y) => json!(y),
        Value::Bit(b) => json!(b),
        Value::Bytes(b) => json!({ "hex": v.to_string(), "len": b.len() }),
        other => json!(other.to_string()),
    }
}

fn row_json(def: &TableDef, row: &[Value]) -> Json {
    Json::Object(
        def.columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.name.clone(), value_json(v)))
            .collect(),
    )
}

/// Which row values a dump shows.
pub enum RowView {
    /// Every column of every table as the source holds it (binlog files, and `--raw`).
    Raw,
    /// What the config sends to the target: tables its rules select (keyed by source
    /// `schema.table`), their columns only, through the row filter and the transforms.
    Config(HashMap<String, Arc<TablePlan>>),
}

const STATEMENT_OMITTED: &str = "a statement's text can hold row values; --raw shows it";

impl RowView {
    /// The definition rows of a TABLE_MAP are decoded with: the TABLE_MAP gives the row
    /// layout; for a table the config selects, names, key and signedness come from the
    /// catalog (the plan's definition), as the engine's schema tracker does. Done once per
    /// TABLE_MAP, not per rows event.
    fn decoding_def(&self, map_def: TableDef) -> TableDef {
        let RowView::Config(plans) = self else { return map_def };
        plans
            .get(&map_def.qualified_name())
            .and_then(|plan| sluice_engine::stream::catalog::complete_from_catalog(&map_def, &plan.source))
            .unwrap_or(map_def)
    }

    /// Whether a QUERY event's text is shown: always when raw; otherwise only transaction
    /// control and DDL, which carry no row values (DML in statement format would).
    fn shows_statement(&self, sql: &str) -> bool {
        const SHOWN: [&str; 9] = [
            "BEGIN", "COMMIT", "ROLLBACK", "XA", "CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE",
        ];
        match self {
            RowView::Raw => true,
            RowView::Config(_) => {
                let first = sql.split_whitespace().next().unwrap_or("");
                SHOWN.iter().any(|k| first.eq_ignore_ascii_case(k)) && !sql.to_ascii_uppercase().contains(" SELECT ")
            }
        }
    }
}

/// Renders one decoded event; `tables` tracks TABLE_MAPs for row decoding.
fn event_json(
    event: &sluice_binlog::Event<'_>,
    offset: Option<u64>,
    tables: &mut HashMap<u64, TableDef>,
    view: &RowView,
) -> Json {
    let h = &event.header;
    let mut out = json!({
        "type": type_name(h.type_code),
        "type_code": h.type_code,
        "timestamp": h.timestamp,
        "server_id": h.server_id,
        "log_pos": h.log_pos,
    });
    if let Some(o) = offset {
        out["offset"] = json!(o);
    }
    let body = match &event.body {
        EventBody::FormatDescription(f) => {
            json!({ "server_version": f.server_version, "binlog_version": f.binlog_version, "checksum": f.checksum })
        }
        EventBody::Rotate { position, next_file } => json!({ "next_file": next_file, "position": position }),
        EventBody::Gtid(g) => {
            json!({ "gtid": g.gtid.to_string(), "standalone": g.is_standalone(), "commit_id": g.commit_id })
        }
        EventBody::GtidList(list) => json!({ "gtids": list.iter().map(|g| g.to_string()).collect::<Vec<_>>() }),
        EventBody::BinlogCheckpoint { file } => json!({ "file": file }),
        EventBody::Xid { xid } => json!({ "xid": xid }),
        EventBody::Query {
            schema,
            sql,
            error_code,
        } => match view.shows_statement(sql) {
            true => json!({ "schema": schema, "sql": sql, "error_code": error_code }),
            false => json!({ "schema": schema, "sql_omitted": STATEMENT_OMITTED, "error_code": error_code }),
        },
        EventBody::AnnotateRows { sql } => match view {
            RowView::Raw => json!({ "sql": String::from_utf8_lossy(sql) }),
            RowView::Config(_) => json!({ "sql_omitted": STATEMENT_OMITTED }),
        },
        EventBody::Heartbeat { log_file } => json!({ "log_file": log_file }),
        EventBody::TableMap(map) => {
            let def = map.to_table_def();
            let body = json!({
                "table_id": map.table_id,
                "schema": map.schema,
                "table": map.table,
                "full_metadata": map.has_full_metadata(),
                "columns": def.columns.iter().enumerate().map(|(i, c)| {
                    let mut col = json!({ "name": c.name, "kind": c.kind, "unsigned": c.unsigned, "nullable": c.nullable });
                    // Only where the TABLE_MAP says (MySQL 8.0.23+, binlog_row_metadata=FULL).
                    if let Some(visible) = map.visible.as_ref().and_then(|v| v.get(i)) {
                        col["visible"] = json!(visible);
                    }
                    col
                }).collect::<Vec<_>>(),
                "primary_key": def.primary_key,
            });
            tables.insert(map.table_id, view.decoding_def(def));
            body
        }
        EventBody::Rows(rows) => {
            let mut body =
                json!({ "table_id": rows.table_id, "kind": rows.kind, "statement_end": rows.is_statement_end() });
            match tables.get(&rows.table_id) {
                None => body["error"] = json!("no TABLE_MAP seen for this table id"),
                Some(def) => {
                    body["table"] = json!(def.qualified_name());
                    rows_json(rows, def, view, &mut body);
                }
            }
            body
        }
        EventBody::TransactionPayload(p) => json!({
            "compression": p.compression,
            "uncompressed_size": p.uncompressed_size,
            "payload_bytes": p.raw_payload().len(),
        }),
        EventBody::MysqlGtid(g) => json!({
            "gtid": g.gtid_text(),
            "anonymous": g.gtid.is_none(),
            "flags": g.flags,
            "last_committed": g.last_committed,
            "sequence_number": g.sequence_number,
            "immediate_commit_timestamp": g.immediate_commit_timestamp,
            "original_commit_timestamp": g.original_commit_timestamp,
            "transaction_length": g.transaction_length,
            "immediate_server_version": g.immediate_server_version,
            "original_server_version": g.original_server_version,
        }),
        EventBody::PreviousGtids(set) => json!({ "gtids": set.to_string() }),
        EventBody::Stop | EventBody::Unknown => Json::Null,
    };
    if !body.is_null() {
        out["data"] = body;
    }
    out
}

/// Decodes a rows event's rows into `body["rows"]` as `view` says.
fn rows_json(rows: &sluice_binlog::RowsEvent<'_>, map_def: &TableDef, view: &RowView, body: &mut Json) {
    let plan = match view {
        RowView::Raw => None,
        RowView::Config(plans) => match plans.get(&map_def.qualified_name()) {
            Some(plan) => Some(plan),
            None => {
                body["rows_omitted"] = json!("table not selected by the config");
                return;
            }
        },
    };
    // `map_def` was completed from the catalog at its TABLE_MAP (`RowView::decoding_def`);
    // a column count that differs means the table changed since: no values then, rather
    // than values under the wrong names.
    if let Some(plan) = plan.filter(|p| p.source.columns.len() != map_def.columns.len()) {
        body["error"] = json!(format!(
            "the table has {} columns in this event but {} now; its rows are not shown",
            map_def.columns.len(),
            plan.source.columns.len()
        ));
        return;
    }
    let def = map_def;
    let iter = match rows.rows(def) {
        Ok(iter) => iter,
        Err(e) => {
            body["error"] = json!(e.to_string());
            return;
        }
    };
    let mut decoded = Vec::new();
    let mut filtered = 0u64;
    for row in iter {
        let change = match row {
            Ok(change) => change,
            Err(e) => {
                body["error"] = json!(e.to_string());
                break;
            }
        };
        let Some(plan) = plan else {
            decoded.push(match change {
                RowChange::Insert(r) => json!({ "after": row_json(def, &r) }),
                RowChange::Delete(r) => json!({ "before": row_json(def, &r) }),
                RowChange::Update { before, after } => {
                    json!({ "before": row_json(def, &before), "after": row_json(def, &after) })
                }
            });
            continue;
        };
        let target_row = |values: &[Value]| {
            Json::Object(
                plan.target
                    .columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| (c.name.clone(), value_json(v)))
                    .collect(),
            )
        };
        match plan.target_op(change) {
            None => filtered += 1,
            Some(RowOp::Insert { row, .. }) => decoded.push(json!({ "after": target_row(&row) })),
            Some(RowOp::Delete { row, .. }) => decoded.push(json!({ "before": target_row(&row) })),
            Some(RowOp::Update { before, after, .. }) => {
                decoded.push(json!({ "before": target_row(&before), "after": target_row(&after) }))
            }
        }
    }
    if plan.is_some() {
        body["target_table"] = json!(plan.map(|p| p.target.name.clone()));
        body["rows_filtered"] = json!(filtered);
    }
    body["rows"] = Json::Array(decoded);
}

/// The events inside a TRANSACTION_PAYLOAD event, one JSON object each, marked with the
/// payload event's offset (when known) and their own offset in the decompressed payload.
fn payload_events_json(
    decoder: &mut EventDecoder,
    event: &sluice_binlog::Event<'_>,
    offset: Option<u64>,
    tables: &mut HashMap<u64, TableDef>,
    view: &RowView,
) -> Result<Vec<Json>, sluice_binlog::DecodeError> {
    let EventBody::TransactionPayload(payload) = &event.body else {
        return Ok(Vec::new());
    };
    let mut inner = payload.events()?;
    let mut out = Vec::new();
    while let Some((at, raw)) = inner.next_event()? {
        let event = decoder
            .decode_payload_event(raw)
            .map_err(|e| sluice_binlog::DecodeError::Invalid {
                what: "TRANSACTION_PAYLOAD event",
                detail: format!("inner event at payload offset {at}: {e}"),
            })?;
        let mut json = event_json(&event, None, tables, view);
        json["payload_offset"] = json!(at);
        if let Some(o) = offset {
            json["in_payload_at"] = json!(o);
        }
        out.push(json);
    }
    Ok(out)
}

/// A closed pipe (`sluice binlog dump … | head`) is the reader being done, not an error.
fn closed_pipe_is_done(e: anyhow::Error) -> anyhow::Result<()> {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    }
}

pub fn dump_file(path: &Path, limit: Option<u64>) -> anyhow::Result<()> {
    dump_file_events(path, limit).or_else(closed_pipe_is_done)
}

fn dump_file_events(path: &Path, limit: Option<u64>) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut reader = BinlogFileReader::new(std::io::BufReader::new(file), path.display().to_string())?;
    let mut decoder = EventDecoder::new();
    let mut tables = HashMap::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0;
    while let Some((offset, raw)) = reader.next_event()? {
        let event = decoder
            .decode(raw)
            .map_err(|e| anyhow::anyhow!("binlog {} at offset {offset}: {e}", path.display()))?;
        writeln!(out, "{}", event_json(&event, Some(offset), &mut tables, &RowView::Raw))?;
        for inner in payload_events_json(&mut decoder, &event, Some(offset), &mut tables, &RowView::Raw)
            .map_err(|e| anyhow::anyhow!("binlog {} at offset {offset}: {e}", path.display()))?
        {
            writeln!(out, "{inner}")?;
        }
        count += 1;
        if limit.is_some_and(|l| count >= l) {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// Streams from the config's source. With `raw` false, rows are shown as the config sends
/// them to the target (see [`RowView::Config`]), so a dump never shows a scrubbed value.
pub async fn dump_server(config: &Config, from: Option<&str>, limit: Option<u64>, raw: bool) -> anyhow::Result<()> {
    let password = config.source_password()?;
    let replica = sluice_engine::stream::reader::replica_config(config, &password);
    let from: Option<SourcePosition> = match from {
        Some(p) => Some(p.parse().map_err(|e| anyhow::anyhow!("--from: {e}"))?),
        None => None,
    };
    // The same checks as `run`, and the plans of the tables the rules select; a raw dump
    // from a given position needs neither (it reads the replication stream only).
    let (start, view) = match (raw, from) {
        (true, Some(start)) => (start, RowView::Raw),
        (raw, from) => {
            let (info, plans) = sluice_engine::pipeline::check(config).await?;
            let view = match raw {
                true => RowView::Raw,
                false => RowView::Config(plans.into_iter().map(|p| (p.target.source_name.clone(), p)).collect()),
            };
            let start = from.unwrap_or(info.binlog_position).for_flavor(info.flavor)?;
            (start, view)
        }
    };
    if let RowView::Raw = view {
        eprintln!(
            "warning: --raw shows every table's rows with every column as the source holds it, including the \
             columns the config excludes or scrubs"
        );
    }
    let mut stream = BinlogStream::connect_from(&replica, start.dump_start()).await?;
    let mut decoder = EventDecoder::new();
    let mut tables = HashMap::new();
    let mut count = 0;
    let stdout = std::io::stdout();
    loop {
        let raw = stream.next_event().await?;
        let event = decoder.decode(&raw)?;
        let mut lines = vec![event_json(&event, None, &mut tables, &view)];
        lines.extend(payload_events_json(&mut decoder, &event, None, &mut tables, &view)?);
        let mut out = stdout.lock();
        for line in lines {
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                return closed_pipe_is_done(e.into());
            }
        }
        count += 1;
        if limit.is_some_and(|l| count >= l) {
            return Ok(());
        }
    }
}
