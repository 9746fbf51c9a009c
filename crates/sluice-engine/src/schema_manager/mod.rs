//! The schema manager: the edge schema the config declares, held against what the target
//! records, and what it takes to get from one to the other.
//!
//! Today this covers:
//!
//! * tables leaving and re-entering the config ([`reconcile_tables`], [`admit_table`]): a
//!   table the config no longer selects is marked stale in `_sluice_backfill` (its target
//!   table is kept, but nothing updates it any more); when it is selected again it is dropped
//!   and created afresh, and a new copy runs, so nothing changed meanwhile stays behind. A
//!   target table someone dropped gets a new copy the same way, whatever its old record said;
//! * a table whose row filter or transforms changed (`TargetTable::rules`, recorded in
//!   `_sluice_tables`) is dropped and copied afresh the same way: no row stays as the old rules
//!   wrote it;
//! * columns added to a table's replicated columns: the target adds them (empty) when it
//!   prepares the table, and [`plan_column_copies`] records the copy that fills them in
//!   existing rows;
//! * new columns held back (`new_columns = "hold"`, the default): a column the source table
//!   has and its target table lacks is left out of the plan until the config releases it
//!   ([`known_columns`] gives the target's columns to plan against), and then added and
//!   copied like any column added to the rule;
//! * readiness (`_sluice_readiness`, docs/readiness.md): per table and column, `copying`,
//!   `backfilling_column`, `ready`, `held` or `stale`, recorded at start
//!   ([`record_start_readiness`]) and with each change after it (the last chunk of a copy, a
//!   held `ADD COLUMN`, a `DROP TABLE`) in that change's target transaction.
//!
//! Managed schema changes (per-table and per-column states persisted in the target, edge DDL,
//! re-backfills and verification before a column is ready) grow here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::select::rules::TablePlan;
use crate::target::{BackfillProgress, Readiness, ReadinessState, Target, TargetResult, TargetTable};

/// Called at start, before any table is prepared or any transaction is streamed with this
/// config (`prepare(&[])` has created the bookkeeping tables):
///
/// * every recorded target table that `plans` no longer includes is marked stale, before a
///   single transaction is applied without it;
/// * every planned table that is stale, or whose target table is gone while a copy record
///   remains, is dropped and forgotten: `prepare` creates it afresh and, with no record, a
///   whole copy runs (with backfill off, the table holds what streams from now on, as on a
///   first start).
///
/// Each step commits on its own and may be repeated: a crash anywhere leaves a state from
/// which the next start takes the same decisions.
pub(crate) fn reconcile_tables(target: &mut dyn Target, plans: &[Arc<TablePlan>]) -> TargetResult<()> {
    let recorded = Recorded::read(target)?;
    for (name, fate) in table_fates(plans, &recorded) {
        match fate {
            TableFate::MarkStale => {
                tracing::warn!(
                    table = %name,
                    "table left the config: its target table is kept but no longer updated; \
                     if it is selected again it is dropped and copied afresh"
                );
                let record = BackfillProgress {
                    table: name.clone(),
                    stale: true,
                    ..Default::default()
                };
                target.begin()?;
                target.record_backfill(&record)?;
                // Edge applications see it no longer updated, in the same transaction.
                target.record_readiness(&name, &[Readiness::table(ReadinessState::Stale)], false)?;
                target.commit_without_checkpoint()?;
            }
            TableFate::Recreate(reason) => {
                tracing::warn!(table = %name, "{reason}; the target table is created afresh and copied again");
                target.drop_table(&name)?;
            }
        }
    }
    Ok(())
}

/// What the target records about the tables sluice made in it.
#[derive(Default)]
pub(crate) struct Recorded {
    /// Tables recorded in `_sluice_tables` that still exist.
    pub existing: Vec<String>,
    /// Copy records by table.
    pub records: HashMap<String, BackfillProgress>,
    /// The row filter and transforms each table was created under.
    pub rules: HashMap<String, Option<String>>,
}

impl Recorded {
    /// Reads it (reads only: `sluice plan` uses it on a target it must not change).
    pub fn read(target: &mut dyn Target) -> TargetResult<Self> {
        Ok(Recorded {
            existing: target.recorded_tables()?,
            records: target
                .load_backfill()?
                .into_iter()
                .map(|r| (r.table.clone(), r))
                .collect(),
            rules: target.recorded_rules()?,
        })
    }
}

/// What a start does first to a table the target records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableFate {
    /// It left the config: kept, but no longer updated (marked stale).
    MarkStale,
    /// Dropped, created afresh and copied whole.
    Recreate(RecreateReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecreateReason {
    /// Rows written under another row filter or other transforms would stay as they were (a
    /// row the new filter leaves out, a value hashed or masked the old way).
    RulesChanged { was: String, now: String },
    /// It left the config earlier, so its rows are stale.
    ReturnedToConfig,
    /// Its target table is gone while a copy record remains.
    TargetTableGone,
}

impl std::fmt::Display for RecreateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecreateReason::RulesChanged { was, now } => {
                write!(f, "the table's row filter or transforms changed (was {was}, now {now})")
            }
            RecreateReason::ReturnedToConfig => {
                f.write_str("table selected again after it left the config: its rows are stale")
            }
            RecreateReason::TargetTableGone => f.write_str("table selected again: its target table is gone"),
        }
    }
}

/// The decisions of [`reconcile_tables`], in the order it carries them out: recorded tables
/// no longer planned are marked stale (once), planned tables whose rows cannot be trusted are
/// recreated.
pub(crate) fn table_fates(plans: &[Arc<TablePlan>], recorded: &Recorded) -> Vec<(String, TableFate)> {
    let planned: HashSet<&str> = plans.iter().map(|p| p.target.name.as_str()).collect();
    let mut fates = Vec::new();
    for name in recorded.existing.iter().filter(|n| !planned.contains(n.as_str())) {
        if !recorded.records.get(name).is_some_and(|r| r.stale) {
            fates.push((name.clone(), TableFate::MarkStale));
        }
    }
    for plan in plans {
        let name = &plan.target.name;
        let exists = recorded.existing.contains(name);
        if let Some(Some(old)) = recorded.rules.get(name) {
            if *old != plan.target.rules && exists {
                let reason = RecreateReason::RulesChanged {
                    was: old.clone(),
                    now: plan.target.rules.clone(),
                };
                fates.push((name.clone(), TableFate::Recreate(reason)));
                continue;
            }
        }
        let Some(record) = recorded.records.get(name) else {
            continue;
        };
        if record.stale {
            fates.push((name.clone(), TableFate::Recreate(RecreateReason::ReturnedToConfig)));
        } else if !exists {
            fates.push((name.clone(), TableFate::Recreate(RecreateReason::TargetTableGone)));
        }
    }
    fates
}

/// A table the stream meets for the first time while running (created at the source after
/// the start): when an earlier stay in the config left it stale, drop it so that `prepare`
/// creates it empty. Called before `prepare`, with no transaction open.
pub(crate) fn admit_table(target: &mut dyn Target, table: &TargetTable) -> TargetResult<()> {
    let stale = target.load_backfill()?.iter().any(|r| r.table == table.name && r.stale);
    if stale {
        tracing::warn!(table = %table.name, source = %table.source_name, "table selected again: the stale target table is created afresh");
        target.drop_table(&table.name)?;
    }
    Ok(())
}

/// Records a copy for every column the replicated columns gained since the target table was
/// created (the target adds the column, empty, in `prepare`): a column-only copy when the
/// table's rows were copied already, or the whole copy again when it was still under way
/// (the rows copied so far lack the column).
pub(crate) fn plan_column_copies(target: &mut dyn Target, plans: &[Arc<TablePlan>]) -> TargetResult<()> {
    let tables: Vec<_> = plans.iter().map(|p| p.target.clone()).collect();
    let gaps = target.column_gaps(&tables)?;
    if gaps.is_empty() {
        return Ok(());
    }
    let records = target.load_backfill()?;
    for (name, missing) in gaps {
        let table = tables.iter().find(|t| t.name == name).expect("gap of a planned table");
        let added: Vec<String> = missing.iter().map(|&c| table.columns[c].name.clone()).collect();
        let Some(columns) = copy_for_added_columns(records.iter().find(|r| r.table == name), &added) else {
            continue;
        };
        tracing::info!(
            table = %name,
            added = ?added,
            column_only = !columns.is_empty(),
            "columns added to the replicated columns: the target gains them and a backfill fills existing rows"
        );
        let record = BackfillProgress {
            table: name.clone(),
            columns,
            ..Default::default()
        };
        target.begin()?;
        target.record_backfill(&record)?;
        target.commit_without_checkpoint()?;
    }
    Ok(())
}

/// The copy that fills `added` columns of a table whose copy record is `previous`: the
/// column-only copy's columns, or empty for a copy of whole rows; `None` when the table was
/// never copied (the coming copy of whole rows fills the new columns too).
pub(crate) fn copy_for_added_columns(previous: Option<&BackfillProgress>, added: &[String]) -> Option<Vec<String>> {
    let previous = previous?;
    Some(match (previous.done, previous.columns.is_empty()) {
        (true, _) => added.to_vec(),
        // A column-only copy under way: start it again for the old and new columns.
        (false, false) => {
            let mut all = previous.columns.clone();
            all.extend(added.iter().filter(|a| !previous.columns.contains(a)).cloned());
            all
        }
        // A copy of whole rows under way: start it again.
        (false, true) => Vec::new(),
    })
}

/// For each planned table whose target table lacks some of the plan's columns: the columns
/// the target table has, to plan it against (`TableFilter::plan_known`), so that the columns
/// it lacks are held back where the rule says so. Tables the target does not have, or has
/// whole, are not listed.
pub(crate) fn known_columns(
    target: &mut dyn Target,
    plans: &[Arc<TablePlan>],
) -> TargetResult<HashMap<String, Vec<String>>> {
    let tables: Vec<_> = plans.iter().map(|p| p.target.clone()).collect();
    let gaps = target.column_gaps(&tables)?;
    Ok(gaps
        .into_iter()
        .map(|(name, missing)| {
            let table = tables.iter().find(|t| t.name == name).expect("gap of a planned table");
            let known = (0..table.columns.len())
                .filter(|i| !missing.contains(i))
                .map(|i| table.columns[i].name.clone())
                .collect();
            (name, known)
        })
        .collect())
}

/// Records every planned table's readiness as this start leaves it, in one target
/// transaction, replacing what earlier runs recorded for those tables: the table `copying`
/// while a copy of whole rows is pending (`ready` otherwise), each replicated column as its
/// table except the columns a column-only copy fills (`backfilling_column`), and each held
/// column `held`. Called once the target tables are prepared and the copies recorded; later
/// changes are recorded in the transactions that make them.
pub(crate) fn record_start_readiness(
    target: &mut dyn Target,
    plans: &[Arc<TablePlan>],
    backfill_enabled: bool,
) -> TargetResult<()> {
    let records: HashMap<String, BackfillProgress> = target
        .load_backfill()?
        .into_iter()
        .map(|r| (r.table.clone(), r))
        .collect();
    target.begin()?;
    for plan in plans {
        let (table_state, filling) = match records.get(&plan.target.name) {
            Some(r) if r.done => (ReadinessState::Ready, &[][..]),
            Some(r) if !r.columns.is_empty() => (ReadinessState::Ready, &r.columns[..]),
            // With copies off, nothing more is copied: the table holds what streams from its start.
            _ if !backfill_enabled => (ReadinessState::Ready, &[][..]),
            _ => (ReadinessState::Copying, &[][..]),
        };
        let mut rows = vec![Readiness::table(table_state)];
        for column in &plan.target.columns {
            let state = match filling.contains(&column.name) {
                true => ReadinessState::BackfillingColumn,
                false => table_state,
            };
            rows.push(Readiness::column(&column.name, state));
        }
        rows.extend(plan.held.iter().map(|c| Readiness::column(c, ReadinessState::Held)));
        if !plan.held.is_empty() {
            tracing::warn!(
                table = %plan.target.name,
                source = %plan.target.source_name,
                held = %plan.held.join(", "),
                "columns the target table lacks are held: not replicated until the rule releases them \
                 (release_columns = [...], or new_columns = \"replicate\")"
            );
        }
        target.record_readiness(&plan.target.name, &rows, true)?;
    }
    target.commit_without_checkpoint()
}
