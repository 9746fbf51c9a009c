//! Logic the SQLite, MariaDB and PostgreSQL targets share word for word: the transaction
//! state machine behind the target contract, the dialect-independent checks of a
//! [`TargetTable`], source integer ranges, and the conversions of sluice's bookkeeping rows.
//!
//! Only what is the same in every dialect lives here; identifier rules, type mapping, value
//! binding and statement texts stay with each target.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_binlog::{ColumnDef, ColumnKind, SourcePosition, Value};

use super::{BackfillProgress, Checkpoint, TargetError, TargetResult, TargetTable};

/// Prefix of sluice's own tables; target tables may not use it.
pub(super) const BOOKKEEPING_PREFIX: &str = "_sluice_";

/// Name of the backfill progress table (the same in every target, and in its messages).
pub(super) const BACKFILL_TABLE: &str = "_sluice_backfill";

/// Where a target stands in the `begin` / `apply` / `commit` protocol. Every target enforces
/// the same contract (see the module documentation of `target`), so the states and the
/// refusals callers see are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TxState {
    Idle,
    Open,
    /// A write failed; the target transaction has already been rolled back.
    Failed,
}

impl TxState {
    /// Refuses a write (`call` names it: `apply`, `record_backfill`) unless a transaction is
    /// open and no write in it has failed.
    pub(super) fn require_open(self, call: &str) -> TargetResult<()> {
        match self {
            TxState::Open => Ok(()),
            TxState::Idle => Err(TargetError::Other(format!("{call} called outside a transaction"))),
            TxState::Failed => Err(TargetError::Other(format!(
                "{call} called after a failed write; roll back first"
            ))),
        }
    }

    /// Like [`TxState::require_open`] for `commit`, whose refusal after a failed write says
    /// that nothing will be committed.
    pub(super) fn require_open_for_commit(self) -> TargetResult<()> {
        match self {
            TxState::Open => Ok(()),
            TxState::Idle => Err(TargetError::Other("commit called outside a transaction".into())),
            TxState::Failed => Err(TargetError::Other(
                "commit refused: a write in this transaction failed and it was rolled back".into(),
            )),
        }
    }
}

/// The moves of the transaction protocol that every target makes the same way, over its own
/// state and rollback.
pub(super) trait TxProtocol {
    fn tx_state(&mut self) -> &mut TxState;

    /// Rolls back whatever is open on the connection and drops what was buffered for it.
    fn rollback_now(&mut self) -> TargetResult<()>;

    /// No partial state: a failed write abandons the whole target transaction at once.
    fn abandon_on_error<T>(&mut self, result: TargetResult<T>) -> TargetResult<T> {
        if result.is_err() {
            *self.tx_state() = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    /// Ends the open transaction with the `result` of committing it: idle after a commit,
    /// or rolled back and failed.
    fn finish_commit<T>(&mut self, result: TargetResult<T>) -> TargetResult<()> {
        match result {
            Ok(_) => {
                *self.tx_state() = TxState::Idle;
                Ok(())
            }
            Err(e) => {
                *self.tx_state() = TxState::Failed;
                let _ = self.rollback_now();
                Err(e)
            }
        }
    }
}

/// The checks of a table definition that don't depend on the dialect: no reserved name, at
/// least one column, a key, key indexes in range. Each target checks its identifier rules
/// first, then calls this.
pub(super) fn check_table_shape(table: &TargetTable) -> TargetResult<()> {
    let fail = |why: String| Err(TargetError::Other(format!("table {}: {why}", table.name)));
    if table
        .name
        .get(..BOOKKEEPING_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(BOOKKEEPING_PREFIX))
    {
        return fail(format!(
            "names starting with {BOOKKEEPING_PREFIX} are reserved for sluice"
        ));
    }
    if table.columns.is_empty() {
        return fail("no columns".into());
    }
    if table.key.is_empty() {
        return fail("no key columns".into());
    }
    if let Some(k) = table.key.iter().find(|&&k| k >= table.columns.len()) {
        return fail(format!("key column index {k} out of range"));
    }
    Ok(())
}

/// Whether a table plan built for `built` still serves `table`: the same `Arc`, or an equal
/// definition in another one (then remembered, so the next lookup is a pointer test).
pub(super) fn plan_is_current(built: &mut Arc<TargetTable>, table: &Arc<TargetTable>) -> bool {
    if Arc::ptr_eq(built, table) {
        return true;
    }
    if **built == **table {
        *built = Arc::clone(table);
        return true;
    }
    false
}

/// Refuses a row whose value count doesn't match the table's columns (binding it would read
/// past the row or leave columns out).
pub(super) fn check_row_len(table: &TargetTable, row: &[Value]) -> TargetResult<()> {
    if row.len() == table.columns.len() {
        Ok(())
    } else {
        Err(TargetError::Other(format!(
            "table {}: row has {} values for {} columns",
            table.name,
            row.len(),
            table.columns.len()
        )))
    }
}

/// The columns a table already in the target lacks (indexes into `table.columns`): columns
/// newly added to the replicated columns, which the target adds and a column-only backfill
/// fills. Any other difference (a column sluice does not write, a missing key column) is
/// refused: sluice never rewrites a table it did not create the way it expects.
pub(super) fn missing_columns(table: &TargetTable, existing: &[String]) -> TargetResult<Vec<usize>> {
    let expected: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let extra = existing.iter().any(|e| !expected.contains(&e.as_str()));
    let missing: Vec<usize> = (0..expected.len())
        .filter(|&i| !existing.iter().any(|e| e == expected[i]))
        .collect();
    if !extra && !missing.iter().any(|i| table.key.contains(i)) {
        return Ok(missing);
    }
    Err(TargetError::Other(format!(
        "table {} already exists in the target with columns ({}), but sluice expects ({}); \
         drop or rename the table, or change the replicated columns",
        table.name,
        existing.join(", "),
        expected.join(", ")
    )))
}

/// The declared width of a BIT column in bits; unknown widths (0) count as the widest, 64.
pub(super) fn bit_width(column: &ColumnDef) -> u32 {
    if (1..=64).contains(&column.length) {
        column.length
    } else {
        64
    }
}

/// Whether `v` is within the source integer type's range, so a bad value is refused with a
/// clear message naming the column rather than a server range error (or a wider target
/// column silently accepting it).
pub(super) fn int_fits(column: &ColumnDef, v: i128) -> bool {
    let bits = match column.kind {
        ColumnKind::TinyInt => 8,
        ColumnKind::SmallInt => 16,
        ColumnKind::MediumInt => 24,
        ColumnKind::Int => 32,
        ColumnKind::BigInt => 64,
        ColumnKind::Bit => return v >= 0 && (v >> bit_width(column)) == 0,
        ColumnKind::Year => return v == 0 || (1901..=2155).contains(&v),
        _ => return false,
    };
    if column.unsigned {
        v >= 0 && (v >> bits) == 0
    } else {
        let half = 1i128 << (bits - 1);
        (-half..half).contains(&v)
    }
}

/// Seconds since the Unix epoch, for the `updated_at_unix` / `created_at_unix` bookkeeping
/// columns (0 if the clock is before 1970).
pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Turns the `(position, applied, source_commit_unix)` rows of `_sluice_checkpoint` into one
/// checkpoint ([`Checkpoint::merge`] over the writers' rows). The stored format is the same
/// in every target.
pub(super) fn checkpoint_from_rows(rows: Vec<(String, String, i64)>) -> TargetResult<Option<Checkpoint>> {
    let bad = |what: &str| TargetError::Other(format!("_sluice_checkpoint holds an invalid {what}"));
    let mut records = Vec::with_capacity(rows.len());
    for (position, applied, commit_unix) in rows {
        records.push(Checkpoint {
            position: position.parse::<SourcePosition>().map_err(|_| bad("position"))?,
            applied: Checkpoint::parse_applied(&applied).map_err(|_| bad("applied GTID list"))?,
            source_commit_unix: u32::try_from(commit_unix).map_err(|_| bad("source commit time"))?,
            writer: 0,
        });
    }
    // Records of both flavours mean the table was written by something else than sluice;
    // merging them would be meaningless (and `SourcePosition::union` refuses to).
    let mut flavors = records.iter().flat_map(|r| {
        r.position
            .flavor()
            .into_iter()
            .chain(r.applied.iter().map(|g| g.flavor()))
    });
    if let Some(first) = flavors.next() {
        if flavors.any(|f| f != first) {
            return Err(bad("mix of MariaDB and MySQL positions"));
        }
    }
    Ok(Checkpoint::merge(records))
}

/// `rows_copied` as stored in `_sluice_backfill` (a signed 64-bit column in every target).
pub(super) fn rows_copied_to_db(progress: &BackfillProgress) -> TargetResult<i64> {
    i64::try_from(progress.rows_copied).map_err(|_| {
        TargetError::Other(format!(
            "table {}: backfill row count is too large to record",
            progress.table
        ))
    })
}

/// `UPDATE <table> SET c1 = P, … WHERE k1 = P AND …` for a column-only backfill: `columns`
/// then the key columns bind in that order; `quote` quotes an identifier and `placeholder`
/// spells the n-th (1-based) placeholder in the target's dialect.
pub(super) fn fill_columns_sql(
    table: &TargetTable,
    qualified_name: &str,
    columns: &[usize],
    quote: impl Fn(&str) -> String,
    placeholder: impl Fn(usize) -> String,
) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        placeholder(n)
    };
    let set: Vec<String> = columns
        .iter()
        .map(|&c| format!("{} = {}", quote(&table.columns[c].name), next()))
        .collect();
    let key: Vec<String> = table
        .key
        .iter()
        .map(|&k| format!("{} = {}", quote(&table.columns[k].name), next()))
        .collect();
    format!(
        "UPDATE {qualified_name} SET {} WHERE {}",
        set.join(", "),
        key.join(" AND ")
    )
}

/// Checks a column-only backfill's columns: existing, and not key columns (a key is never
/// filled in, it identifies the row).
pub(super) fn check_fill_columns(table: &TargetTable, columns: &[usize]) -> TargetResult<()> {
    if columns.is_empty()
        || columns
            .iter()
            .any(|&c| c >= table.columns.len() || table.key.contains(&c))
    {
        return Err(TargetError::Other(format!(
            "table {}: a column-only backfill must name non-key columns of the table",
            table.name
        )));
    }
    Ok(())
}

/// The informational part of a backfill record (`_sluice_backfill.detail`), as JSON: the
/// row estimate and rate behind status's ETA, a failure's reason, and the columns a
/// column-only copy fills. Unknown or unreadable details read back as empty.
pub(super) fn backfill_detail_to_db(progress: &BackfillProgress) -> String {
    serde_json::json!({
        "rows_estimate": progress.rows_estimate,
        "rows_per_s": progress.rows_per_s,
        "error": progress.error,
        "columns": progress.columns,
        "stale": progress.stale,
    })
    .to_string()
}

/// `progress` completed with the fields of its stored detail.
fn backfill_from_db(mut progress: BackfillProgress, detail: Option<&str>) -> BackfillProgress {
    let Some(detail) = detail.and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()) else {
        return progress;
    };
    progress.rows_estimate = detail["rows_estimate"].as_u64().unwrap_or(0);
    progress.rows_per_s = detail["rows_per_s"].as_u64().unwrap_or(0);
    progress.error = detail["error"].as_str().map(str::to_owned);
    progress.columns = detail["columns"]
        .as_array()
        .map(|c| c.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    progress.stale = detail["stale"].as_bool().unwrap_or(false);
    progress
}

/// A `_sluice_backfill` row (name, done, last key, rows copied, detail) as a record.
pub(super) fn backfill_from_row(
    (table, done, last_key, rows_copied, detail): (String, i64, Option<String>, i64, Option<String>),
) -> TargetResult<BackfillProgress> {
    let rows_copied = rows_copied_from_db(&table, rows_copied)?;
    Ok(backfill_from_db(
        BackfillProgress {
            table,
            done: done != 0,
            last_key,
            rows_copied,
            ..BackfillProgress::default()
        },
        detail.as_deref(),
    ))
}

/// `rows_copied` read back from `_sluice_backfill`; a negative count means the row was
/// tampered with.
fn rows_copied_from_db(table: &str, rows_copied: i64) -> TargetResult<u64> {
    u64::try_from(rows_copied)
        .map_err(|_| TargetError::Other(format!("{BACKFILL_TABLE} holds an invalid row count for table {table}")))
}

/// The `rules` a `_sluice_tables.definition` recorded (`None` in definitions written before
/// sluice recorded them, or unreadable ones).
pub(super) fn rules_of_definition(definition: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(definition).ok()?;
    doc.get("rules")?.as_str().map(str::to_owned)
}

/// The JSON description stored in `_sluice_tables.definition` (for schema-change detection):
/// one format for every target, so only the column types differ. `extra` fields (dialect
/// details such as SQLite's `without_rowid`) follow the common ones.
pub(super) fn definition_json<T: AsRef<str>>(
    table: &TargetTable,
    types: &[T],
    extra: &[(&str, serde_json::Value)],
) -> TargetResult<String> {
    let columns: Vec<serde_json::Value> = table
        .columns
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (c, ty))| {
            serde_json::json!({
                "name": c.name,
                "type": ty.as_ref(),
                "not_null": !c.source.nullable || table.key.contains(&i),
                "source": c.source,
            })
        })
        .collect();
    let key: Vec<&str> = table.key.iter().map(|&k| table.columns[k].name.as_str()).collect();
    let mut doc = serde_json::json!({
        "version": 1,
        "source_name": table.source_name,
        "columns": columns,
        "key": key,
        "rules": table.rules,
    });
    if let Some(fields) = doc.as_object_mut() {
        for (name, value) in extra {
            fields.insert((*name).to_owned(), value.clone());
        }
    }
    serde_json::to_string(&doc)
        .map_err(|e| TargetError::Other(format!("table {}: cannot describe columns: {e}", table.name)))
}

/// A `_sluice_verified` row (position, mismatches, unchecked transactions) as a record.
pub(super) fn verified_from_row(
    (position, mismatches, unchecked): (String, i64, i64),
) -> TargetResult<super::VerifiedRecord> {
    Ok(super::VerifiedRecord {
        position: position
            .parse()
            .map_err(|_| TargetError::Other(format!("_sluice_verified holds an unreadable position {position:?}")))?,
        mismatches: mismatches.max(0) as u64,
        unchecked_txns: unchecked.max(0) as u64,
    })
}
