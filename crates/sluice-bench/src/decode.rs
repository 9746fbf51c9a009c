//! `sluice-bench decode`: single-threaded binlog decoding into typed rows.
//!
//! The loop is sluice's own (see `sluice binlog dump` and the source reader): a
//! [`BinlogFileReader`] yields raw events, an [`EventDecoder`] decodes each one (CRC32 verified,
//! as in replication), TABLE_MAP events give table definitions (rebuilt only when a table id's
//! shape changes, as the schema tracker does), and every row of a selected table is decoded
//! into [`sluice_binlog::Value`]s. Rows events of tables that are not selected are skipped
//! without decoding a single row, which is what sluice does for tables it does not replicate.
//!
//! `--what-if` measures a *prototype* of decoder changes proposed in bench/README.md, not
//! sluice's current decoder: events are read into a reused buffer sized from the header
//! (instead of `read_to_end` on a `Take`), ANNOTATE_ROWS events (which sluice ignores) get only
//! their CRC32 checked instead of a lossy UTF-8 conversion of their SQL text, and a TABLE_MAP
//! whose body is byte-for-byte the last one seen for its table id gets only its CRC32 checked
//! instead of being decoded again (names, charsets and all) and dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use sluice_binlog::event::{event_type, ChecksumAlg, HEADER_LEN};
use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::{EventBody, EventDecoder, EventHeader, TableDef, TableMap};
use sluice_engine::filter::TableFilter;

use crate::measure::{fold_change, mb_per_s, median, per_s, Span, Stopwatch};

/// Read buffer for binlog files.
pub const READ_BUFFER: usize = 1 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeStats {
    pub events: u64,
    pub row_events: u64,
    /// Row changes decoded (an UPDATE's before and after images count as one row).
    pub rows: u64,
    /// Rows events of unselected tables, skipped undecoded.
    pub skipped_row_events: u64,
    pub bytes: u64,
    pub checksum: u64,
}

/// A table filter that selects the tables matching `glob` (sluice's `match` syntax).
pub fn glob_filter(glob: &str) -> anyhow::Result<TableFilter> {
    let text = format!(
        "[source]\nhost = \"127.0.0.1\"\nuser = \"bench\"\n[target]\nkind = \"sqlite\"\npath = \"unused.db\"\n\
         [[tables]]\nmatch = {}\n",
        serde_json::Value::String(glob.to_owned())
    );
    let config = sluice_engine::config::Config::parse(&text).map_err(|e| anyhow::anyhow!("--select {glob}: {e}"))?;
    Ok(TableFilter::new(config.selectors(), None))
}

/// Whether `def` (built from an earlier TABLE_MAP of the same table id) still describes `map`.
/// The same check as the schema tracker's: same table, same column count and names.
pub fn same_table(def: &TableDef, map: &TableMap) -> bool {
    def.schema == map.schema
        && def.name == map.table
        && def.columns.len() == map.columns.len()
        && map
            .names
            .as_ref()
            .is_none_or(|n| n.iter().zip(&def.columns).all(|(a, b)| a == &b.name))
}

pub fn open(path: &Path) -> anyhow::Result<BinlogFileReader<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BinlogFileReader::new(
        BufReader::with_capacity(READ_BUFFER, file),
        path.display().to_string(),
    )?)
}

/// Where raw events come from: sluice's [`BinlogFileReader`], or the `--what-if` reader.
enum Events {
    Sluice(BinlogFileReader<BufReader<File>>),
    Prototype(PrototypeReader),
}

impl Events {
    fn next_event(&mut self) -> anyhow::Result<Option<(u64, &[u8])>> {
        match self {
            Events::Sluice(r) => Ok(r.next_event()?),
            Events::Prototype(r) => r.next_event(),
        }
    }
}

/// The `--what-if` reader: one buffer, resized to each event's size and filled with
/// `read_exact` (sizes above 64 MiB are grown as bytes arrive, which keeps the fuzzing fix's
/// protection against a corrupt size field allocating a GiB).
struct PrototypeReader {
    input: BufReader<File>,
    offset: u64,
    buf: Vec<u8>,
}

const PROTOTYPE_PRESIZE_LIMIT: usize = 64 << 20;

impl PrototypeReader {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut input = BufReader::with_capacity(READ_BUFFER, file);
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic)?;
        anyhow::ensure!(
            magic == sluice_binlog::file::MAGIC,
            "{} is not a binlog file",
            path.display()
        );
        Ok(PrototypeReader {
            input,
            offset: 4,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn next_event(&mut self) -> anyhow::Result<Option<(u64, &[u8])>> {
        let at = self.offset;
        self.buf.resize(HEADER_LEN, 0);
        let mut got = 0;
        while got < HEADER_LEN {
            match self.input.read(&mut self.buf[got..HEADER_LEN])? {
                0 if got == 0 => return Ok(None),
                0 => anyhow::bail!("truncated event header at offset {at}"),
                n => got += n,
            }
        }
        let size = EventHeader::parse(&self.buf)?.event_size as usize;
        anyhow::ensure!(
            (HEADER_LEN..=1 << 30).contains(&size),
            "bad event size {size} at offset {at}"
        );
        if size <= PROTOTYPE_PRESIZE_LIMIT {
            self.buf.resize(size, 0);
            self.input
                .read_exact(&mut self.buf[HEADER_LEN..])
                .with_context(|| format!("truncated event at offset {at}"))?;
        } else {
            (&mut self.input)
                .take((size - HEADER_LEN) as u64)
                .read_to_end(&mut self.buf)?;
            anyhow::ensure!(self.buf.len() == size, "truncated event at offset {at}");
        }
        self.offset += size as u64;
        Ok(Some((at, &self.buf[..size])))
    }
}

/// CRC32 check of an event the `--what-if` path does not decode.
fn check_crc(raw: &[u8]) -> anyhow::Result<()> {
    let end = raw.len().checked_sub(4).filter(|&e| e >= HEADER_LEN);
    let end = end.ok_or_else(|| anyhow::anyhow!("event too short for its checksum"))?;
    let stored = u32::from_le_bytes(raw[end..].try_into().expect("4 bytes"));
    anyhow::ensure!(crc32fast::hash(&raw[..end]) == stored, "checksum mismatch");
    Ok(())
}

/// Decodes `files` once. `what_if` runs the prototype described in the module docs.
pub fn decode_files(files: &[PathBuf], filter: Option<&TableFilter>, what_if: bool) -> anyhow::Result<DecodeStats> {
    let mut stats = DecodeStats::default();
    // Per table id: the definition of a selected table, `None` for an unselected one.
    let mut tables: HashMap<u64, Option<TableDef>> = HashMap::new();
    // `--what-if`: per table id, the body of its last TABLE_MAP.
    let mut map_bodies: HashMap<u64, Vec<u8>> = HashMap::new();
    for path in files {
        stats.bytes += std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        let mut reader = if what_if {
            Events::Prototype(PrototypeReader::open(path)?)
        } else {
            Events::Sluice(open(path)?)
        };
        let mut decoder = EventDecoder::new();
        while let Some((offset, raw)) = reader.next_event()? {
            let mut new_map_body = None;
            if what_if && decoder.format().checksum == ChecksumAlg::Crc32 && raw.len() >= HEADER_LEN + 4 + 6 {
                match raw[4] {
                    event_type::MARIADB_ANNOTATE_ROWS => {
                        check_crc(raw).with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
                        stats.events += 1;
                        continue;
                    }
                    event_type::TABLE_MAP => {
                        let body = &raw[HEADER_LEN..raw.len() - 4];
                        let id = table_map_id(body);
                        if map_bodies.get(&id).is_some_and(|b| b.as_slice() == body) {
                            check_crc(raw).with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
                            stats.events += 1;
                            continue;
                        }
                        new_map_body = Some((id, body.to_vec()));
                    }
                    _ => {}
                }
            }
            let event = decoder
                .decode(raw)
                .with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
            stats.events += 1;
            match event.body {
                EventBody::TableMap(map) => {
                    if let Some((id, body)) = new_map_body {
                        map_bodies.insert(id, body);
                    }
                    if !filter.is_none_or(|f| f.is_selected(&map.schema, &map.table)) {
                        tables.insert(map.table_id, None);
                        continue;
                    }
                    let known = matches!(tables.get(&map.table_id), Some(Some(def)) if same_table(def, &map));
                    if !known {
                        tables.insert(map.table_id, Some(map.to_table_def()));
                    }
                }
                EventBody::Rows(rows) => {
                    stats.row_events += 1;
                    let def = match tables.get(&rows.table_id) {
                        Some(Some(def)) => def,
                        Some(None) => {
                            stats.skipped_row_events += 1;
                            continue;
                        }
                        None => anyhow::bail!(
                            "binlog {} at offset {offset}: rows event for table id {} without a TABLE_MAP",
                            path.display(),
                            rows.table_id
                        ),
                    };
                    let iter = rows
                        .rows(def)
                        .with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
                    for change in iter {
                        let change = change.with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
                        stats.checksum = fold_change(stats.checksum, &change);
                        stats.rows += 1;
                    }
                }
                _ => {}
            }
        }
    }
    stats.checksum = std::hint::black_box(stats.checksum);
    Ok(stats)
}

/// The 6-byte table id at the start of a TABLE_MAP body (MariaDB and MySQL 5.6+).
fn table_map_id(body: &[u8]) -> u64 {
    body[..6]
        .iter()
        .enumerate()
        .fold(0u64, |v, (i, &b)| v | (u64::from(b) << (8 * i)))
}

fn line(label: &str, stats: &DecodeStats, span: Span) -> String {
    format!(
        "{label} events={} row_events={} rows={} skipped_row_events={} bytes={} seconds={:.3} cpu_s={:.3} \
         rows_per_s={:.0} mb_per_s={:.1} checksum={:016x}",
        stats.events,
        stats.row_events,
        stats.rows,
        stats.skipped_row_events,
        stats.bytes,
        span.wall_s,
        span.cpu_s,
        per_s(stats.rows, span.wall_s),
        mb_per_s(stats.bytes, span.wall_s),
        stats.checksum
    )
}

pub fn run(
    files: &[PathBuf],
    select: Option<&str>,
    repeat: usize,
    label: &str,
    what_if: bool,
    json: bool,
) -> anyhow::Result<()> {
    let filter = select.map(glob_filter).transpose()?;
    let mut spans = Vec::with_capacity(repeat);
    let mut stats = DecodeStats::default();
    for i in 0..repeat {
        let watch = Stopwatch::start();
        stats = decode_files(files, filter.as_ref(), what_if)?;
        let span = watch.stop();
        if repeat > 1 {
            println!("{} (run {}/{repeat})", line(label, &stats, span), i + 1);
        }
        spans.push(span);
    }
    let span = median(&spans);
    println!("{}", line(label, &stats, span));
    if json {
        println!(
            "{}",
            json!({
                "label": label,
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "select": select,
                "what_if_prototype": what_if,
                "events": stats.events,
                "row_events": stats.row_events,
                "rows": stats.rows,
                "skipped_row_events": stats.skipped_row_events,
                "bytes": stats.bytes,
                "runs": repeat,
                "wall_s": span.wall_s,
                "cpu_s": span.cpu_s,
                "wall_s_runs": spans.iter().map(|s| s.wall_s).collect::<Vec<_>>(),
                "rows_per_s": per_s(stats.rows, span.wall_s),
                "mb_per_s": mb_per_s(stats.bytes, span.wall_s),
                "rows_per_cpu_s": per_s(stats.rows, span.cpu_s),
                "mb_per_cpu_s": mb_per_s(stats.bytes, span.cpu_s),
                "checksum": format!("{:016x}", stats.checksum),
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_glob_uses_sluice_match_syntax() {
        let f = glob_filter("sbtest.sbtest*").unwrap();
        assert!(f.is_selected("sbtest", "sbtest1"));
        assert!(!f.is_selected("sbtest", "other"));
        let none = glob_filter("nothing.selected").unwrap();
        assert!(!none.is_selected("sbtest", "sbtest1"));
        assert!(glob_filter("no-dot").is_err());
    }
}
