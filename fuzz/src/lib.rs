//! The decode loops the fuzz targets run.
//!
//! [`decode_file`] is the loop of `crates/sluice-binlog/tests/fixtures.rs`: a
//! `BinlogFileReader` splits the file into events, an `EventDecoder` decodes them (checksums
//! verified), TABLE_MAP events are remembered by table id as `TableDef`s and every row of a
//! rows event is decoded with the matching definition.
//!
//! [`decode_stream`] is the same loop over a sequence of raw events without the file magic,
//! with CRC32 verification off and forgiving framing (each event's size field is patched to
//! the bytes it really has), so mutations reach the event bodies instead of dying on a
//! checksum or a size mismatch.
//!
//! `crates/sluice-binlog/tests/fuzz_regressions.rs` compiles this same file in (`#[path]`),
//! so the regression tests run exactly these loops.

use std::collections::HashMap;

use sluice_binlog::file::{BinlogFileReader, MAGIC};
use sluice_binlog::{EventBody, EventDecoder, TableDef};

const HEADER_LEN: usize = 19;

/// What a decode run got to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: usize,
    pub rows: usize,
    /// The first error, which ends the run (as it does in sluice).
    pub error: Option<String>,
}

/// Remembers table definitions and decodes rows events with them.
#[derive(Default)]
struct Tables {
    defs: HashMap<u64, TableDef>,
    /// The last definition seen, used by [`decode_stream`] when the table id does not match
    /// (so that mutating a rows event's table id does not just end the run).
    last: Option<TableDef>,
}

impl Tables {
    fn apply(&mut self, body: EventBody<'_>, outcome: &mut Outcome, lenient_ids: bool) -> Result<(), String> {
        match body {
            EventBody::TableMap(map) => {
                let def = map.to_table_def();
                // Exercise the other TableMap accessor too.
                let _ = map.has_full_metadata();
                self.last = Some(def.clone());
                self.defs.insert(map.table_id, def);
            }
            EventBody::Rows(rows) => {
                let table = match self.defs.get(&rows.table_id) {
                    Some(t) => t,
                    None if lenient_ids => match &self.last {
                        Some(t) => t,
                        None => return Err("rows for unknown table id".into()),
                    },
                    None => return Err("rows for unknown table id".into()),
                };
                let _ = rows.is_statement_end();
                for row in rows.rows(table).map_err(|e| e.to_string())? {
                    let row = row.map_err(|e| e.to_string())?;
                    // Formatting walks every value (Display of temporal values and the like).
                    let _ = format!("{row:?}");
                    outcome.rows += 1;
                }
            }
            other => {
                let _ = format!("{other:?}");
            }
        }
        Ok(())
    }
}

/// Decodes the events inside a TRANSACTION_PAYLOAD event (if `body` is one) and applies
/// them like top-level events.
fn apply_payload(
    decoder: &mut EventDecoder,
    body: &EventBody<'_>,
    tables: &mut Tables,
    outcome: &mut Outcome,
    lenient_ids: bool,
) -> Result<(), String> {
    let EventBody::TransactionPayload(payload) = body else {
        return Ok(());
    };
    let mut events = payload.events().map_err(|e| e.to_string())?;
    while let Some((_, raw)) = events.next_event().map_err(|e| e.to_string())? {
        let event = decoder.decode_payload_event(raw).map_err(|e| e.to_string())?;
        outcome.events += 1;
        tables.apply(event.body, outcome, lenient_ids)?;
    }
    Ok(())
}

/// Decodes `data` as a whole binlog file. The magic is prepended when missing so that the
/// fuzzer does not waste mutations on it.
pub fn decode_file(data: &[u8]) -> Outcome {
    let owned;
    let data = if data.starts_with(&MAGIC) {
        data
    } else {
        owned = [&MAGIC[..], data].concat();
        &owned[..]
    };
    let mut outcome = Outcome::default();
    let mut reader = match BinlogFileReader::new(data, "fuzz") {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let mut decoder = EventDecoder::new();
    let mut tables = Tables::default();
    loop {
        let (offset, raw) = match reader.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                outcome.error = Some(e.to_string());
                break;
            }
        };
        let event = match decoder.decode(raw) {
            Ok(ev) => ev,
            Err(e) => {
                outcome.error = Some(format!("offset {offset}: {e}"));
                break;
            }
        };
        outcome.events += 1;
        if let Err(e) = apply_payload(&mut decoder, &event.body, &mut tables, &mut outcome, false) {
            outcome.error = Some(format!("offset {offset}: {e}"));
            break;
        }
        if let Err(e) = tables.apply(event.body, &mut outcome, false) {
            outcome.error = Some(format!("offset {offset}: {e}"));
            break;
        }
    }
    outcome
}

/// Decodes `data` as a sequence of raw events (no magic), checksums not verified. Each
/// event's length is its header's size field clamped to what is left (a size below the
/// header length takes the rest); the size field is rewritten to match. Typical inputs are a
/// FORMAT_DESCRIPTION event, optionally a TABLE_MAP, then the one event under test.
pub fn decode_stream(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut decoder = EventDecoder::new();
    decoder.set_verify_checksums(false);
    let mut tables = Tables::default();
    let mut rest = data;
    let mut offset = 0usize;
    while !rest.is_empty() {
        let declared = if rest.len() >= HEADER_LEN {
            u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize
        } else {
            rest.len()
        };
        let len = if declared < HEADER_LEN {
            rest.len()
        } else {
            declared.min(rest.len())
        };
        let mut raw = rest[..len].to_vec();
        rest = &rest[len..];
        if raw.len() >= HEADER_LEN {
            raw[9..13].copy_from_slice(&(len as u32).to_le_bytes());
        }
        let at = offset;
        offset += len;
        let event = match decoder.decode(&raw) {
            Ok(ev) => ev,
            Err(e) => {
                outcome.error = Some(format!("offset {at}: {e}"));
                break;
            }
        };
        outcome.events += 1;
        if let Err(e) = apply_payload(&mut decoder, &event.body, &mut tables, &mut outcome, true) {
            outcome.error = Some(format!("offset {at}: {e}"));
            break;
        }
        if let Err(e) = tables.apply(event.body, &mut outcome, true) {
            outcome.error = Some(format!("offset {at}: {e}"));
            break;
        }
    }
    outcome
}
