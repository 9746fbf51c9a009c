//! The schema manager: the edge schema the config declares, held against what the target
//! records, and what it takes to get from one to the other.
//!
//! Today this covers columns added to a table's replicated columns: the target adds them
//! (empty) when it prepares the table, and [`plan_column_copies`] records the copy that fills
//! them in existing rows. Managed schema changes (per-table and per-column states persisted in
//! the target, edge DDL, re-backfills and verification before a column is ready) grow here.

use std::sync::Arc;

use crate::select::rules::TablePlan;
use crate::target::{BackfillProgress, Target, TargetResult};

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
        let Some(previous) = records.iter().find(|r| r.table == name) else {
            // Never copied: the coming copy of whole rows fills the new columns too.
            continue;
        };
        let columns = match (previous.done, previous.columns.is_empty()) {
            (true, _) => added.clone(),
            // A column-only copy under way: start it again for the old and new columns.
            (false, false) => {
                let mut all = previous.columns.clone();
                all.extend(added.iter().filter(|a| !previous.columns.contains(a)).cloned());
                all
            }
            // A copy of whole rows under way: start it again.
            (false, true) => Vec::new(),
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
