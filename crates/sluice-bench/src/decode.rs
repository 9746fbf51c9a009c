//! `sluice-bench decode`: single-threaded binlog decoding into typed rows.
//!
//! The loop is sluice's own (see `sluice binlog dump` and the source reader): a
//! [`BinlogFileReader`] yields raw events, an [`EventDecoder`] decodes each one (CRC32 verified,
//! as in replication), TABLE_MAP events give table definitions (rebuilt only when a table id's
//! shape changes, as the schema tracker does), and every row of a selected table is decoded
//! into [`sluice_binlog::Value`]s. Rows events of tables that are not selected are skipped
//! without decoding a single row, which is what sluice does for tables it does not replicate.
//!
//! TABLE_MAP events that repeat the last one of their table id byte for byte (MariaDB writes
//! one before every rows event) come back from the decoder's cache as the same `Arc`, undecoded;
//! ANNOTATE_ROWS events stay bytes.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use sluice_binlog::file::BinlogFileReader;
use sluice_binlog::{EventBody, EventDecoder, TableDef, TableIdMap, TableMap};
use sluice_engine::select::rules::TableFilter;

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

/// Decodes `files` once.
pub fn decode_files(files: &[PathBuf], filter: Option<&TableFilter>) -> anyhow::Result<DecodeStats> {
    let mut stats = DecodeStats::default();
    // Per table id: the definition of a selected table, `None` for an unselected one.
    let mut tables: TableIdMap<Option<TableDef>> = TableIdMap::default();
    for path in files {
        stats.bytes += std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        let mut reader = open(path)?;
        let mut decoder = EventDecoder::new();
        while let Some((offset, raw)) = reader.next_event()? {
            let event = decoder
                .decode(raw)
                .with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
            stats.events += 1;
            match event.body {
                EventBody::TableMap(map) => {
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

pub fn run(files: &[PathBuf], select: Option<&str>, repeat: usize, label: &str, json: bool) -> anyhow::Result<()> {
    let filter = select.map(glob_filter).transpose()?;
    let mut spans = Vec::with_capacity(repeat);
    let mut stats = DecodeStats::default();
    for i in 0..repeat {
        let watch = Stopwatch::start();
        stats = decode_files(files, filter.as_ref())?;
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
