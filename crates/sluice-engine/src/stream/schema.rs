//! Schema at position: what each replicated table looks like at the binlog position being
//! read, and whether a change can be followed.
//!
//! The binlog says what every row event means: each row event is preceded by a TABLE_MAP
//! carrying the table's columns at that point (with `binlog_row_metadata=FULL`, their names,
//! signedness, charsets, labels and primary key too). [`SchemaTracker`] compares each
//! TABLE_MAP of a replicated table with the definition its target table was built from:
//!
//! * same replicated columns → follow (non-replicated columns may have come or gone);
//! * anything else → stop with [`SchemaError::ReplicatedColumnsChanged`].
//!
//! DDL statements are also recognised as they pass ([`crate::stream::ddl`]), so that a change stops
//! sluice at the DDL's own GTID, and table-level changes that produce no TABLE_MAP
//! (RENAME, DROP, TRUNCATE) are caught at all.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_binlog::{SourceGtid, TableMap};

use crate::apply::EdgeChange;
use crate::config::TableSelector;
use crate::select::osc::{osc_table, shadow_of, OscRole, OscTool};
use crate::select::rules::{replicated_columns_unchanged, PlanError, TableFilter, TablePlan};
use crate::stream::catalog::{self, CatalogError};
use crate::stream::ddl::{AlterAction, Statement, TableName};
use crate::target::TargetTable;

/// Longest statement excerpt put into an error message.
const STATEMENT_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "source DDL at GTID {gtid} changes replicated table {table}: {reason}. Statement: {statement}. \
         sluice stopped before applying it; the target is consistent up to the previous transaction. \
         To resume (docs/schema-changes.md): 1. leave {table} out of the config (remove or narrow the [[tables]] rule \
         that selects it) and reload (kill -HUP <pid>) or restart: sluice goes past this statement without the table \
         and marks its target table stale; 2. once `sluice status` shows the checkpoint at or past {gtid}, put the rule \
         back (adjusted to the new columns if need be) and reload or restart again: the target table is created afresh \
         and copied again"
    )]
    ReplicatedColumnsChanged {
        table: String,
        gtid: String,
        statement: String,
        reason: String,
    },
    #[error(transparent)]
    OnlineSchemaChangeSwap(Box<OscSwap>),
    #[error(
        "source DDL at GTID {gtid} is {tool}'s swap of replicated table {table}, which adds column(s) {columns} \
         the rule replicates; sluice follows it by running again from just past the swap: the target table gains \
         the column(s) and a column-only copy fills them in existing rows"
    )]
    SwapAddsColumns {
        tool: &'static str,
        table: String,
        gtid: String,
        columns: String,
    },
    #[error(
        "source DDL at GTID {gtid} adds column(s) {columns} to replicated table {table}, which the rule replicates \
         (new_columns = \"replicate\", or release_columns); sluice follows it by running again from just past the \
         ALTER: the target table gains the column(s) and a column-only copy fills them in existing rows"
    )]
    AddsColumns {
        table: String,
        gtid: String,
        columns: String,
    },
    #[error(
        "statement-based change to replicated table {table} at GTID {gtid}: sluice needs row events. \
         Set binlog_format=ROW on the source (globally and for every session that writes it)"
    )]
    StatementBasedDml { table: String, gtid: String },
    #[error("the source transaction at GTID {gtid} holds a table DDL and row changes together; sluice cannot apply that faithfully")]
    DdlWithRows { gtid: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("table {table}: the binlog's TABLE_MAP has {binlog} columns but information_schema lists {catalog}; the table changed since this event was written and the binlog lacks full row metadata. Set binlog_row_metadata=FULL on the source")]
    CatalogMismatch {
        table: String,
        binlog: usize,
        catalog: usize,
    },
}

/// An online schema change tool's swap of a replicated table, which sluice cannot follow.
#[derive(Debug, thiserror::Error)]
#[error(
    "source DDL at GTID {gtid} is {tool}'s swap of replicated table {table} (its shadow table {shadow}, \
     the table with the tool's ALTER applied, takes the place of {table}, which becomes {old}). Statement: {statement}. \
     sluice follows such a swap only when the tool's changes leave the replicated columns as they are, \
     but {why}; it stopped before applying the swap; the target is consistent up to the previous transaction. \
     To resume (docs/schema-changes.md, \"Online schema change tools\"): 1. leave {table} out of the config \
     (remove its [[tables]] rule, or narrow the glob that selects it so it no longer matches {table}) and reload \
     (kill -HUP <pid>) or restart: sluice goes past the swap without the table and marks its target table stale; \
     2. once `sluice status` shows the checkpoint at or past {gtid}, put the rule back (adjusted to the new columns \
     if need be) and reload or restart again: {table} is created afresh at the edge, with its new columns, \
     and copied again. {shadow} and {old} are never replicated"
)]
pub struct OscSwap {
    pub tool: &'static str,
    pub table: String,
    pub shadow: String,
    pub old: String,
    pub gtid: String,
    pub statement: String,
    /// Why the swap cannot be followed.
    pub why: String,
}

/// What sluice knows of a tool's shadow table: the column changes made to it since its
/// CREATE (which copies the real table's definition: `CREATE TABLE … LIKE t`, or `t`'s own
/// definition under the new name).
#[derive(Debug, Default)]
struct ShadowHistory {
    actions: Vec<AlterAction>,
}

/// The first half of a swap done in two statements (gh-ost's `--cut-over=two-step`, LHM's
/// LockedSwitcher): the replicated table was renamed to the tool's old-table name; the
/// shadow is expected to take its name next.
#[derive(Debug)]
struct HalfSwap {
    old: TableName,
    shadow: TableName,
}

/// For a followed swap that added `columns` to the replicated columns: the error that makes
/// the pipeline run again from just past the swap, or nothing when none were added.
fn run_again(tool: &'static str, table: &TableName, gtid: &SourceGtid, columns: &[String]) -> Option<SchemaError> {
    (!columns.is_empty()).then(|| SchemaError::SwapAddsColumns {
        tool,
        table: table.to_string(),
        gtid: gtid.to_string(),
        columns: columns.join(", "),
    })
}

fn excerpt(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > STATEMENT_EXCERPT {
        format!("{}…", one_line.chars().take(STATEMENT_EXCERPT).collect::<String>())
    } else {
        one_line
    }
}

/// For a table renamed to `to`: which online schema change tool names its old table so (the
/// first half of a swap done in two statements), or nothing.
fn osc_note(to: &TableName) -> String {
    match osc_table(&to.table) {
        Some(t) if t.role == OscRole::Old => format!(
            " ({}'s name for the old table: the cut-over of an online schema change, done in more than one statement)",
            t.tool.name()
        ),
        _ => String::new(),
    }
}

/// What a TABLE_MAP means for the stream.
pub enum MappedTable {
    /// Not replicated: skip its row events without decoding them.
    Skipped,
    /// Replicated with a known target table.
    Known(Arc<TablePlan>),
    /// Replicated, and seen for the first time: the target table must be prepared first.
    New(Arc<TablePlan>),
}

pub struct SchemaTracker {
    filter: TableFilter,
    catalog: mysql_async::Pool,
    by_table_id: HashMap<u64, Option<Arc<TablePlan>>>,
    /// Per table id, the last TABLE_MAP seen. The decoder hands back the same `Arc` for a
    /// TABLE_MAP identical to the previous one of its table id, so [`Arc::ptr_eq`] with this
    /// says "nothing changed" without comparing (or glob-matching) anything.
    /// Stored with the value of `plans_generation` at the time, since a selected table's
    /// decision holds only while no plan has been replaced since.
    last_map: HashMap<u64, (Arc<TableMap>, u64)>,
    /// Bumped whenever `plans` changes.
    plans_generation: u64,
    /// How many TABLE_MAPs took that fast path (for tests and diagnostics).
    fast_path_hits: u64,
    plans: HashMap<(String, String), Arc<TablePlan>>,
    last_ddl: HashMap<(String, String), String>,
    /// Tools' shadow tables created since sluice started, with the changes made to them.
    shadows: HashMap<(String, String), ShadowHistory>,
    /// Replicated tables renamed away by the first half of a two-statement swap.
    half_swaps: HashMap<(String, String), HalfSwap>,
    /// Swaps followed (for tests and diagnostics).
    swaps_followed: u64,
    /// Whether a column a swap adds to the replicated columns can be filled in existing rows
    /// (the column-only copy of a run started again; needs `[backfill] enabled`).
    fills_new_columns: bool,
    /// Whether columns the edge table lacks are held back as the rules say (`sluice run`); a
    /// fan-out publisher, which has no edge table to hold them from, plans every column.
    holds_new_columns: bool,
    /// Columns held by the swaps the statement being checked follows (see `on_statement`).
    swap_holds: Vec<EdgeChange>,
}

fn key_of(t: &TableName) -> (String, String) {
    (t.schema.clone(), t.table.clone())
}

impl SchemaTracker {
    /// `initial` are the plans of the tables the target already has (built from the catalog at
    /// startup).
    pub fn new(filter: TableFilter, catalog: mysql_async::Pool, initial: Vec<Arc<TablePlan>>) -> Self {
        let plans = initial
            .into_iter()
            .map(|p| ((p.source.schema.clone(), p.source.name.clone()), p))
            .collect();
        SchemaTracker {
            filter,
            catalog,
            by_table_id: HashMap::new(),
            last_map: HashMap::new(),
            plans_generation: 0,
            fast_path_hits: 0,
            plans,
            last_ddl: HashMap::new(),
            shadows: HashMap::new(),
            half_swaps: HashMap::new(),
            swaps_followed: 0,
            fills_new_columns: false,
            holds_new_columns: false,
            swap_holds: Vec::new(),
        }
    }

    /// Holds back columns the edge table lacks, as each rule's `new_columns` says (see
    /// [`TableFilter::plan_known`]); without it every selected column is planned.
    pub fn holds_new_columns(mut self, yes: bool) -> Self {
        self.holds_new_columns = yes;
        self
    }

    /// Whether `column` of the replicated `table`, which the rule selects, is new to its edge
    /// table and held back: it changes nothing at the edge.
    fn held(&self, selector: &TableSelector, table: &TableName, column: &str) -> bool {
        self.holds_new_columns
            && selector.holds(column)
            && self
                .plans
                .get(&key_of(table))
                .is_some_and(|p| !p.target.columns.iter().any(|c| c.name.eq_ignore_ascii_case(column)))
    }

    /// Lets a swap that adds replicated columns be followed by running again (see
    /// [`SchemaError::SwapAddsColumns`]); without it such a swap stops.
    pub fn fills_new_columns(mut self, yes: bool) -> Self {
        self.fills_new_columns = yes;
        self
    }

    /// The plan for a row event's table id; `None` means skip the event.
    pub fn plan_for(&self, table_id: u64) -> Option<&Arc<TablePlan>> {
        self.by_table_id.get(&table_id).and_then(Option::as_ref)
    }

    pub fn target_tables(&self) -> Vec<Arc<TargetTable>> {
        self.plans.values().map(|p| p.target.clone()).collect()
    }

    /// Forgets table ids (they are only valid within one binlog file / connection).
    pub fn reset_table_ids(&mut self) {
        self.by_table_id.clear();
        self.last_map.clear();
    }

    /// How many TABLE_MAPs were recognised as the very `Arc` last seen for their table id and
    /// answered from the previous decision.
    pub fn fast_path_hits(&self) -> u64 {
        self.fast_path_hits
    }

    /// How many online schema change swaps were followed.
    pub fn swaps_followed(&self) -> u64 {
        self.swaps_followed
    }

    pub async fn on_table_map(
        &mut self,
        map: &Arc<TableMap>,
        gtid: Option<SourceGtid>,
    ) -> Result<MappedTable, SchemaError> {
        // Fast path: the decoder returned the same `Arc` as last time for this table id, so
        // the event is byte for byte the previous one. The filter cannot change while running,
        // so the previous decision holds: skipped stays skipped, and a selected table keeps
        // its plan as long as no plan was replaced since (another table id of the same table
        // may have replaced it meanwhile; then check as usual, as before this fast path).
        if let Some((last, generation)) = self.last_map.get(&map.table_id) {
            if Arc::ptr_eq(last, map) {
                match self.by_table_id.get(&map.table_id) {
                    Some(None) => {
                        self.fast_path_hits += 1;
                        return Ok(MappedTable::Skipped);
                    }
                    Some(Some(plan)) if *generation == self.plans_generation => {
                        self.fast_path_hits += 1;
                        return Ok(MappedTable::Known(plan.clone()));
                    }
                    _ => {}
                }
            }
        }
        if !self.filter.is_selected(&map.schema, &map.table) {
            self.by_table_id.insert(map.table_id, None);
            self.last_map.insert(map.table_id, (map.clone(), self.plans_generation));
            return Ok(MappedTable::Skipped);
        }
        let key = (map.schema.clone(), map.table.clone());
        if let Some(half) = self.half_swaps.get(&key) {
            return Err(SchemaError::ReplicatedColumnsChanged {
                table: format!("{}.{}", map.schema, map.table),
                gtid: gtid.map(|g| g.to_string()).unwrap_or_else(|| "?".into()),
                statement: self.last_ddl.get(&key).cloned().unwrap_or_default(),
                reason: format!(
                    "a table of that name has row events while an online schema change tool's swap is half done \
                     (the table was renamed to {}; {} was expected to take its name)",
                    half.old, half.shadow
                ),
            });
        }
        if let Some(Some(plan)) = self.by_table_id.get(&map.table_id) {
            // Same table id and same shape: nothing to check again.
            if plan.source.schema == map.schema
                && plan.source.name == map.table
                && plan.source.columns.len() == map.columns.len()
            {
                if let Some(current) = self.plans.get(&key) {
                    if Arc::ptr_eq(current, plan)
                        && map
                            .names
                            .as_ref()
                            .is_none_or(|n| n.iter().zip(&plan.source.columns).all(|(a, b)| a == &b.name))
                    {
                        let plan = plan.clone();
                        self.last_map.insert(map.table_id, (map.clone(), self.plans_generation));
                        return Ok(MappedTable::Known(plan));
                    }
                }
            }
        }
        let mut def = map.to_table_def();
        if !map.has_full_metadata() {
            let mut conn = self.catalog.get_conn().await.map_err(|source| CatalogError::Query {
                table: def.qualified_name(),
                source,
            })?;
            let cat = catalog::load_table(&mut conn, &map.schema, &map.table).await?;
            let Some(cat) = cat else {
                return Err(SchemaError::CatalogMismatch {
                    table: def.qualified_name(),
                    binlog: map.columns.len(),
                    catalog: 0,
                });
            };
            def = catalog::complete_from_catalog(&def, &cat).ok_or(SchemaError::CatalogMismatch {
                table: def.qualified_name(),
                binlog: map.columns.len(),
                catalog: cat.columns.len(),
            })?;
        }
        // Columns the edge table lacks stay held as they were at the start (or since the table
        // was first planned): only a start with a config that releases them adds them.
        let known: Option<Vec<String>> = match self.holds_new_columns {
            true => self
                .plans
                .get(&key)
                .map(|p| p.target.columns.iter().map(|c| c.name.clone()).collect()),
            false => None,
        };
        let new_plan = Arc::new(self.filter.plan_known(&def, known.as_deref()).expect("selected")?);
        let mapped = match self.plans.get(&key) {
            Some(old) if replicated_columns_unchanged(old, &new_plan) => {
                self.plans.insert(key, new_plan.clone());
                self.plans_generation += 1;
                MappedTable::Known(new_plan.clone())
            }
            Some(_) => {
                let statement = self
                    .last_ddl
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| "(no DDL statement seen since sluice started)".into());
                return Err(SchemaError::ReplicatedColumnsChanged {
                    table: def.qualified_name(),
                    gtid: gtid.map(|g| g.to_string()).unwrap_or_else(|| "?".into()),
                    statement,
                    reason: "its TABLE_MAP no longer matches the replicated columns the target table was created with"
                        .into(),
                });
            }
            None => {
                self.plans.insert(key, new_plan.clone());
                self.plans_generation += 1;
                MappedTable::New(new_plan.clone())
            }
        };
        self.by_table_id.insert(map.table_id, Some(new_plan));
        self.last_map.insert(map.table_id, (map.clone(), self.plans_generation));
        Ok(mapped)
    }

    /// Forgets a replicated table the source dropped: its next TABLE_MAP (a table created
    /// again under the name) makes it new.
    fn forget(&mut self, table: &TableName) -> Option<Arc<TablePlan>> {
        let plan = self.plans.remove(&(table.schema.clone(), table.table.clone()))?;
        self.by_table_id
            .retain(|_, p| p.as_ref().is_none_or(|p| !Arc::ptr_eq(p, &plan)));
        self.plans_generation += 1;
        Some(plan)
    }

    /// Whether the replicated table `table` may take `shadow`'s rows and definition: `Err`
    /// says why not. The shadow was created as a copy of `table` and changed only by the
    /// recorded ALTERs; the swap keeps the edge rows right when none of them touches a column
    /// the rule replicates (a column it adds and the rule does not replicate changes nothing
    /// at the edge). The next TABLE_MAP of the table is still checked against the target
    /// table's columns and key as usual, so a change the ALTERs did not show stops there.
    ///
    /// `Ok` holds the columns the tool added that the rule replicates: the target table must
    /// gain them and have them filled (a run started again past the swap does both).
    fn swap_verdict(&self, table: &TableName, shadow: &TableName) -> Result<Vec<String>, String> {
        let Some(selector) = self.filter.select(&table.schema, &table.table) else {
            return Err(format!("{table} is no longer selected"));
        };
        let Some(history) = self.shadows.get(&key_of(shadow)) else {
            return Err(format!(
                "sluice did not see {shadow} created (it started, or restarted, after the tool began), \
                 so it does not know what the tool changed"
            ));
        };
        let cols = &selector.columns;
        let mut added = Vec::new();
        for action in &history.actions {
            match action {
                AlterAction::AddColumn(c) if cols.includes(c) && !self.held(selector, table, c) => {
                    if !self.fills_new_columns {
                        return Err(format!(
                            "the tool adds column {c}, which the rule replicates, and with [backfill] enabled = false \
                             sluice cannot fill it in existing rows"
                        ));
                    }
                    added.push(c.clone());
                }
                AlterAction::DropColumn(c) if cols.includes(c) => {
                    return Err(format!("the tool drops replicated column {c}"))
                }
                AlterAction::ChangeColumn { old, new } | AlterAction::RenameColumn { old, new }
                    if cols.includes(old) || cols.includes(new) =>
                {
                    return Err(format!("the tool changes replicated column {old}"))
                }
                _ => {}
            }
        }
        Ok(added)
    }

    /// Follows a swap: `table` now has the shadow's rows, which equal the edge's for every
    /// replicated column. Table ids mapped to the old table are forgotten, so the next TABLE_MAP
    /// of `table` is planned afresh (and checked) against the same target table.
    fn follow_swap(&mut self, table: &TableName, shadow: &TableName, gtid: &SourceGtid, tool: &str) {
        let history = self.shadows.remove(&key_of(shadow));
        let held: Vec<String> = match (self.filter.select(&table.schema, &table.table), &history) {
            (Some(selector), Some(history)) => history
                .actions
                .iter()
                .filter_map(|a| match a {
                    AlterAction::AddColumn(c) if selector.columns.includes(c) && self.held(selector, table, c) => {
                        Some(c.clone())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if let (false, Some(plan)) = (held.is_empty(), self.plans.get(&key_of(table))) {
            self.swap_holds.push(EdgeChange::Hold {
                table: plan.target.clone(),
                columns: held,
            });
        }
        if let Some(plan) = self.plans.get(&key_of(table)).cloned() {
            self.by_table_id
                .retain(|_, p| p.as_ref().is_none_or(|p| !Arc::ptr_eq(p, &plan)));
        }
        self.plans_generation += 1;
        self.swaps_followed += 1;
        tracing::info!(
            table = %table,
            shadow = %shadow,
            tool,
            gtid = %gtid,
            "online schema change swap followed: the replicated columns are unchanged, the edge table goes on"
        );
    }

    /// An online schema change tool's swap of a replicated table in one statement (`RENAME
    /// TABLE t TO _t_old, _t_new TO t` and its gh-ost and LHM forms): for each, the index of
    /// the pair renaming `t` away, of the pair renaming the shadow onto it, and the tool.
    fn osc_swaps(&self, pairs: &[(TableName, TableName)]) -> Vec<(usize, usize, OscTool)> {
        pairs
            .iter()
            .enumerate()
            .filter_map(|(i, (from, old))| {
                if !self.plans.contains_key(&key_of(from)) {
                    return None;
                }
                osc_table(&old.table).filter(|t| t.role == OscRole::Old)?;
                let j = pairs.iter().position(|(_, to)| to == from)?;
                let tool = osc_table(&pairs[j].0.table).filter(|t| t.role == OscRole::Shadow)?.tool;
                Some((i, j, tool))
            })
            .collect()
    }

    /// The first half of a two-statement swap: replicated `table` renamed to `old`, a name of
    /// the tool's old table, while a shadow of the same tool for `table` is known. Follows it
    /// (nothing reaches the edge; `table` does not exist until the second half) when the shadow
    /// can take its place, else says why not.
    fn half_swap(&mut self, table: &TableName, old: &TableName) -> Option<Result<(), String>> {
        let old_tool = osc_table(&old.table).filter(|t| t.role == OscRole::Old)?.tool;
        let shadow = self
            .shadows
            .keys()
            .filter(|(schema, name)| schema == &table.schema && shadow_of(name, &table.table) == Some(old_tool))
            .map(|(schema, name)| TableName {
                schema: schema.clone(),
                table: name.clone(),
            })
            .next();
        let Some(shadow) = shadow else {
            return Some(Err(format!(
                "sluice knows no shadow table of {} for {table} (it did not see one created since it started)",
                old_tool.name()
            )));
        };
        if let Err(why) = self.swap_verdict(table, &shadow) {
            return Some(Err(why));
        }
        if let Some(plan) = self.plans.get(&key_of(table)).cloned() {
            self.by_table_id
                .retain(|_, p| p.as_ref().is_none_or(|p| !Arc::ptr_eq(p, &plan)));
        }
        self.plans_generation += 1;
        self.half_swaps.insert(
            key_of(table),
            HalfSwap {
                old: old.clone(),
                shadow,
            },
        );
        Some(Ok(()))
    }

    /// The second half of a two-statement swap (`from` renamed onto `to`), or its undoing (the
    /// old table renamed back): `None` when `to` has no half-done swap.
    fn complete_half_swap(
        &mut self,
        from: &TableName,
        to: &TableName,
        gtid: &SourceGtid,
        sql: &str,
    ) -> Option<Result<Option<SchemaError>, SchemaError>> {
        let half = self.half_swaps.remove(&key_of(to))?;
        if from == &half.old {
            // Renamed back: the same table as before.
            tracing::info!(table = %to, "online schema change swap undone: the table is back under its name");
            return Some(Ok(None));
        }
        let tool = osc_table(&half.shadow.table).map_or("an online schema change tool", |t| t.tool.name());
        let verdict = if from == &half.shadow {
            self.swap_verdict(to, from)
        } else {
            Err(format!(
                "{from}, not the shadow table {}, takes the table's name",
                half.shadow
            ))
        };
        Some(match verdict {
            Ok(added) => {
                self.follow_swap(to, from, gtid, tool);
                Ok(run_again(tool, to, gtid, &added))
            }
            Err(why) => Err(SchemaError::OnlineSchemaChangeSwap(Box::new(OscSwap {
                tool,
                table: to.to_string(),
                shadow: from.to_string(),
                old: half.old.to_string(),
                gtid: gtid.to_string(),
                statement: excerpt(sql),
                why,
            }))),
        })
    }

    /// A tool's shadow table that no rule selects (an exact rule makes it an ordinary table).
    fn is_tool_shadow(&self, table: &TableName) -> bool {
        osc_table(&table.table).is_some_and(|t| t.role == OscRole::Shadow)
            && !self.filter.is_selected(&table.schema, &table.table)
    }

    /// Checks a QUERY event's statement. Errors when it changes a replicated table in a way
    /// sluice cannot follow; otherwise returns what it does to target tables (applied at its
    /// GTID, with its checkpoint).
    pub fn on_statement(
        &mut self,
        sql: &str,
        default_schema: &str,
        gtid: SourceGtid,
    ) -> Result<Vec<EdgeChange>, SchemaError> {
        self.swap_holds.clear();
        let mut changes = self.statement_changes(sql, default_schema, gtid)?;
        // Columns a followed swap brought in and the rule holds: their readiness says so.
        changes.append(&mut self.swap_holds);
        Ok(changes)
    }

    fn statement_changes(
        &mut self,
        sql: &str,
        default_schema: &str,
        gtid: SourceGtid,
    ) -> Result<Vec<EdgeChange>, SchemaError> {
        let statement = crate::stream::ddl::classify(sql, default_schema);
        let stop = |table: &TableName, reason: String| SchemaError::ReplicatedColumnsChanged {
            table: table.to_string(),
            gtid: gtid.to_string(),
            statement: excerpt(sql),
            reason,
        };
        // The tools' shadow tables (never selected by a glob): what is done to them is recorded,
        // to judge the swap by.
        match &statement {
            Statement::Create { table } if self.is_tool_shadow(table) => {
                self.shadows.insert(key_of(table), ShadowHistory::default());
            }
            Statement::Alter { table, actions } if self.is_tool_shadow(table) => {
                if let Some(history) = self.shadows.get_mut(&key_of(table)) {
                    // Its rename (onto the real table, in a two-statement swap) is judged as a swap.
                    history.actions.extend(
                        actions
                            .iter()
                            .filter(|a| !matches!(a, AlterAction::RenameTable(_)))
                            .cloned(),
                    );
                }
            }
            Statement::Drop { tables } => {
                for t in tables {
                    self.shadows.remove(&key_of(t));
                }
            }
            _ => {}
        }
        match &statement {
            Statement::Alter { table, actions } => {
                if let [AlterAction::RenameTable(to)] = actions.as_slice() {
                    match self.complete_half_swap(table, to, &gtid, sql) {
                        Some(Ok(None)) => return Ok(Vec::new()),
                        Some(Ok(Some(e)) | Err(e)) => return Err(e),
                        None => {}
                    }
                    if self.plans.contains_key(&key_of(table)) {
                        match self.half_swap(table, to) {
                            Some(Ok(())) => return Ok(Vec::new()),
                            Some(Err(why)) => {
                                return Err(stop(
                                    table,
                                    format!("it renames the table to {to}{}; {why}", osc_note(to)),
                                ))
                            }
                            None => {}
                        }
                    }
                }
                let Some(selector) = self.filter.select(&table.schema, &table.table) else {
                    return Ok(Vec::new());
                };
                self.last_ddl
                    .insert((table.schema.clone(), table.table.clone()), excerpt(sql));
                let known = self.plans.contains_key(&(table.schema.clone(), table.table.clone()));
                let selector = selector.clone();
                // A held column is not at the edge: dropping or changing it changes nothing there.
                let replicated = |c: &str| known && selector.columns.includes(c) && !self.held(&selector, table, c);
                let mut held = Vec::new();
                let mut added = Vec::new();
                for action in actions {
                    match action {
                        AlterAction::AddColumn(c) if known && self.held(&selector, table, c) => held.push(c.clone()),
                        AlterAction::AddColumn(c) if known && selector.columns.includes(c) => {
                            if !self.fills_new_columns {
                                return Err(stop(
                                    table,
                                    format!(
                                        "it adds column {c}, which the config replicates, and this run cannot \
                                         fill it in existing rows ([backfill] enabled = false, or a fan-out \
                                         publisher, whose edges have no copy)"
                                    ),
                                ));
                            }
                            added.push(c.clone());
                        }
                        AlterAction::DropColumn(c) if replicated(c) => {
                            return Err(stop(table, format!("it drops replicated column {c}")))
                        }
                        AlterAction::ChangeColumn { old, .. } if replicated(old) => {
                            return Err(stop(table, format!("it changes replicated column {old}")))
                        }
                        AlterAction::RenameColumn { old, .. } if replicated(old) => {
                            return Err(stop(table, format!("it renames replicated column {old}")))
                        }
                        AlterAction::RenameTable(to) if known => {
                            return Err(stop(table, format!("it renames the table to {to}{}", osc_note(to))))
                        }
                        _ => {}
                    }
                }
                if !added.is_empty() {
                    // Followed like a swap that adds columns: the run starts again past the
                    // ALTER, whose start adds the columns at the edge and copies them.
                    return Err(SchemaError::AddsColumns {
                        table: table.to_string(),
                        gtid: gtid.to_string(),
                        columns: added.join(", "),
                    });
                }
                if !held.is_empty() {
                    let plan = &self.plans[&key_of(table)];
                    tracing::warn!(
                        table = %table,
                        gtid = %gtid,
                        columns = %held.join(", "),
                        "column(s) added at the source are held: not replicated until the rule releases them \
                         (release_columns, or new_columns = \"replicate\")"
                    );
                    return Ok(vec![EdgeChange::Hold {
                        table: plan.target.clone(),
                        columns: held,
                    }]);
                }
            }
            Statement::Rename { pairs } => {
                let mut handled = vec![false; pairs.len()];
                // A followed swap that needs a run started again: reported once every pair is
                // checked, so that nothing else in the statement goes unexamined.
                let mut again = None;
                for (i, j, tool) in self.osc_swaps(pairs) {
                    let (table, old) = &pairs[i];
                    let shadow = &pairs[j].0;
                    let added = match self.swap_verdict(table, shadow) {
                        Ok(added) => added,
                        Err(why) => {
                            return Err(SchemaError::OnlineSchemaChangeSwap(Box::new(OscSwap {
                                tool: tool.name(),
                                table: table.to_string(),
                                shadow: shadow.to_string(),
                                old: old.to_string(),
                                gtid: gtid.to_string(),
                                statement: excerpt(sql),
                                why,
                            })));
                        }
                    };
                    self.follow_swap(table, shadow, &gtid, tool.name());
                    again = again.or(run_again(tool.name(), table, &gtid, &added));
                    handled[i] = true;
                    handled[j] = true;
                }
                for (k, (from, to)) in pairs.iter().enumerate() {
                    if handled[k] {
                        continue;
                    }
                    match self.complete_half_swap(from, to, &gtid, sql) {
                        Some(Ok(later)) => {
                            again = again.or(later);
                            continue;
                        }
                        Some(Err(e)) => return Err(e),
                        None => {}
                    }
                    if self.plans.contains_key(&key_of(from)) && pairs.len() == 1 {
                        match self.half_swap(from, to) {
                            Some(Ok(())) => continue,
                            Some(Err(why)) => {
                                return Err(stop(
                                    from,
                                    format!("it renames the table to {to}{}; {why}", osc_note(to)),
                                ))
                            }
                            None => {}
                        }
                    }
                    if self.plans.contains_key(&(from.schema.clone(), from.table.clone())) {
                        return Err(stop(from, format!("it renames the table to {to}{}", osc_note(to))));
                    }
                    if self.filter.is_selected(&to.schema, &to.table)
                        && self.plans.contains_key(&(to.schema.clone(), to.table.clone()))
                    {
                        return Err(stop(to, format!("it replaces the table with {from}")));
                    }
                }
                if let Some(again) = again {
                    return Err(again);
                }
            }
            Statement::Drop { tables } => {
                // The target table is emptied and marked stale at this GTID; a table created
                // again under the name is created afresh at the target.
                return Ok(tables
                    .iter()
                    .filter_map(|t| self.forget(t))
                    .map(|plan| EdgeChange::Drop(plan.target.clone()))
                    .collect());
            }
            Statement::Truncate { table } => {
                if let Some(plan) = self.plans.get(&(table.schema.clone(), table.table.clone())) {
                    return Ok(vec![EdgeChange::Truncate(plan.target.clone())]);
                }
            }
            Statement::Create { table } if self.plans.contains_key(&(table.schema.clone(), table.table.clone())) => {
                // CREATE TABLE IF NOT EXISTS on an existing table is a no-op; a real re-create
                // needs a DROP first, which forgot the table (its first TABLE_MAP makes it new).
            }
            Statement::Dml { table: Some(table) } if self.filter.is_selected(&table.schema, &table.table) => {
                return Err(SchemaError::StatementBasedDml {
                    table: table.to_string(),
                    gtid: gtid.to_string(),
                });
            }
            Statement::Dml { table: None } => {
                return Err(SchemaError::StatementBasedDml {
                    table: "(unknown: LOAD DATA)".into(),
                    gtid: gtid.to_string(),
                });
            }
            _ => {}
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_binlog::table_map::{column_type, MappedColumn};

    fn tracker(tables: &str) -> SchemaTracker {
        let cfg = crate::config::Config::parse(&format!(
            "[source]\nhost = \"127.0.0.1\"\nuser = \"repl\"\n\n[target]\nkind = \"sqlite\"\npath = \"t.db\"\n\n{tables}"
        ))
        .unwrap();
        // Never connected: the maps below carry full metadata, so no catalog query is made.
        let pool = mysql_async::Pool::new("mysql://nobody@127.0.0.1:1/x");
        SchemaTracker::new(TableFilter::new(cfg.selectors(), None), pool, Vec::new())
    }

    fn map(table_id: u64, table: &str) -> Arc<TableMap> {
        Arc::new(TableMap {
            table_id,
            schema: "shop".into(),
            table: table.into(),
            columns: vec![MappedColumn {
                binlog_type: column_type::LONG,
                meta: [0, 0],
                nullable: false,
            }],
            names: Some(vec!["id".into()]),
            unsigned: Some(vec![Some(false)]),
            collations: None,
            labels: None,
            primary_key: Some(vec![0]),
            visible: None,
        })
    }

    #[tokio::test]
    async fn an_identical_table_map_reuses_the_previous_decision() {
        let mut t = tracker("[[tables]]\nmatch = \"shop.orders\"");
        let orders = map(7, "orders");
        let first = t.on_table_map(&orders, None).await.unwrap();
        let MappedTable::New(plan) = first else {
            panic!("first map of a selected table is new")
        };
        assert_eq!(t.fast_path_hits(), 0);
        // The decoder's cache hands back the same `Arc`: fast path, same plan.
        let MappedTable::Known(again) = t.on_table_map(&orders, None).await.unwrap() else {
            panic!("known")
        };
        assert!(Arc::ptr_eq(&plan, &again));
        assert_eq!(t.fast_path_hits(), 1);

        let skipped = map(8, "audit");
        assert!(matches!(
            t.on_table_map(&skipped, None).await.unwrap(),
            MappedTable::Skipped
        ));
        assert_eq!(t.fast_path_hits(), 1);
        assert!(matches!(
            t.on_table_map(&skipped, None).await.unwrap(),
            MappedTable::Skipped
        ));
        assert_eq!(t.fast_path_hits(), 2);
        assert!(t.plan_for(8).is_none());

        // An equal map in a new `Arc` (decoded again) goes the checking way, with the same
        // outcome.
        let decoded_again = Arc::new((*orders).clone());
        assert!(matches!(
            t.on_table_map(&decoded_again, None).await.unwrap(),
            MappedTable::Known(_)
        ));
        assert_eq!(t.fast_path_hits(), 2);

        // After the table ids are forgotten nothing is reused.
        t.reset_table_ids();
        assert!(matches!(
            t.on_table_map(&skipped, None).await.unwrap(),
            MappedTable::Skipped
        ));
        assert_eq!(t.fast_path_hits(), 2);
    }

    #[tokio::test]
    async fn a_plan_replaced_through_another_table_id_disables_the_fast_path() {
        let mut t = tracker("[[tables]]\nmatch = \"shop.orders\"");
        let by_7 = map(7, "orders");
        assert!(matches!(
            t.on_table_map(&by_7, None).await.unwrap(),
            MappedTable::New(_)
        ));
        // The same table under a new table id: its plan replaces the current one.
        let by_9 = map(9, "orders");
        assert!(matches!(
            t.on_table_map(&by_9, None).await.unwrap(),
            MappedTable::Known(_)
        ));
        // Table id 7's identical map is checked again rather than answered from its old plan.
        assert!(matches!(
            t.on_table_map(&by_7, None).await.unwrap(),
            MappedTable::Known(_)
        ));
        assert_eq!(t.fast_path_hits(), 0);
        assert!(Arc::ptr_eq(
            t.plan_for(7).unwrap(),
            t.plans.get(&("shop".to_string(), "orders".to_string())).unwrap()
        ));
    }

    #[tokio::test]
    async fn online_schema_change_tables_are_skipped_and_their_swap_names_the_tool() {
        let mut t = tracker("[[tables]]\nmatch = \"shop.*\"");
        assert!(matches!(
            t.on_table_map(&map(7, "items"), None).await.unwrap(),
            MappedTable::New(_)
        ));
        for (id, shadow) in [
            (8, "_items_new"),
            (9, "_items_gho"),
            (10, "_items_ghc"),
            (11, "lhmn_items"),
        ] {
            assert!(
                matches!(
                    t.on_table_map(&map(id, shadow), None).await.unwrap(),
                    MappedTable::Skipped
                ),
                "{shadow}"
            );
        }
        let gtid = gtid(42);
        // DDL on the shadow table is not sluice's concern.
        assert!(t
            .on_statement("ALTER TABLE `_items_new` ADD COLUMN colour VARCHAR(10)", "shop", gtid)
            .unwrap()
            .is_empty());
        for (swap, tool, shadow, old) in [
            (
                "RENAME TABLE `shop`.`items` TO `shop`.`_items_old`, `shop`.`_items_new` TO `shop`.`items`",
                "pt-online-schema-change",
                "_items_new",
                "_items_old",
            ),
            (
                "rename /* gh-ost */ table `shop`.`items` to `shop`.`_items_del`, `shop`.`_items_gho` to `shop`.`items`",
                "gh-ost",
                "_items_gho",
                "_items_del",
            ),
            (
                "RENAME TABLE items TO lhma_2026_12_04_20_24_11_123_items, lhmn_items TO items",
                "LHM",
                "lhmn_items",
                "lhma_2026_12_04_20_24_11_123_items",
            ),
        ] {
            let err = t.on_statement(swap, "shop", gtid).unwrap_err();
            let SchemaError::OnlineSchemaChangeSwap(named) = &err else {
                panic!("{err}")
            };
            assert!(named.tool.starts_with(tool), "{err}");
            let message = err.to_string();
            for needle in [
                "shop.items",
                &format!("shop.{shadow}"),
                &format!("shop.{old}"),
                "0-1-42",
                "leave shop.items out of the config",
                "put the rule back",
            ] {
                assert!(message.contains(needle), "missing {needle:?}: {message}");
            }
        }
        // Half of a swap done in two statements names the tool too.
        let err = t
            .on_statement(
                "alter /* gh-ost */ table `shop`.`items` rename `shop`.`_items_del`",
                "shop",
                gtid,
            )
            .unwrap_err();
        assert!(err.to_string().contains("gh-ost's name for the old table"), "{err}");
        // A rename that is no tool's swap keeps the plain message.
        let err = t
            .on_statement("RENAME TABLE items TO items_2026, items_next TO items", "shop", gtid)
            .unwrap_err();
        assert!(matches!(err, SchemaError::ReplicatedColumnsChanged { .. }), "{err}");
    }

    fn gtid(sequence: u64) -> SourceGtid {
        SourceGtid::Mariadb(sluice_binlog::Gtid {
            domain: 0,
            server: 1,
            sequence,
        })
    }

    /// `items` with columns `id` and `name`, under table id `id`.
    fn items_map(table_id: u64, table: &str, extra: &[&str]) -> Arc<TableMap> {
        let mut m = (*map(table_id, table)).clone();
        for name in std::iter::once("name").chain(extra.iter().copied()) {
            m.columns.push(MappedColumn {
                binlog_type: column_type::LONG,
                meta: [0, 0],
                nullable: true,
            });
            m.names.as_mut().unwrap().push(name.into());
            m.unsigned.as_mut().unwrap().push(Some(false));
        }
        Arc::new(m)
    }

    /// [`start`] as `run` sets the tracker up: new columns filled by copies, held by default.
    async fn holding_start(rules: &str) -> SchemaTracker {
        start(rules).await.fills_new_columns(true).holds_new_columns(true)
    }

    /// The changes are one `Hold` of `items.extra`.
    fn assert_holds_extra(changes: &[EdgeChange]) {
        let [EdgeChange::Hold { table, columns }] = changes else {
            panic!("{changes:?}")
        };
        assert_eq!(
            (table.name.as_str(), columns.as_slice()),
            ("items", &["extra".to_owned()][..])
        );
    }

    async fn start(rules: &str) -> SchemaTracker {
        let mut t = tracker(rules);
        assert!(matches!(
            t.on_table_map(&items_map(7, "items", &[]), None).await.unwrap(),
            MappedTable::New(_)
        ));
        t
    }

    #[tokio::test]
    async fn swaps_that_leave_the_replicated_columns_alone_are_followed() {
        // The shadow gains a column the rule does not replicate: every tool's atomic swap is
        // followed, and the new table's TABLE_MAP plans against the same target table.
        for (rules, alter) in [
            (
                "[[tables]]\nmatch = \"shop.*\"\nexclude_columns = [\"extra\"]",
                "ADD COLUMN extra INT",
            ),
            (
                "[[tables]]\nmatch = \"shop.items\"\ncolumns = [\"id\", \"name\"]",
                "ADD COLUMN extra INT",
            ),
            ("[[tables]]\nmatch = \"shop.*\"", "ADD INDEX by_name (name)"),
        ] {
            for (create, swap, shadow) in [
                (
                    "CREATE TABLE `shop`.`_items_new` (id INT NOT NULL, name INT, PRIMARY KEY (id))",
                    "RENAME TABLE `shop`.`items` TO `shop`.`_items_old`, `shop`.`_items_new` TO `shop`.`items`",
                    "_items_new",
                ),
                (
                    "create /* gh-ost */ table `shop`.`_items_gho` like `shop`.`items`",
                    "rename /* gh-ost */ table `shop`.`items` to `shop`.`_items_del`, `shop`.`_items_gho` to `shop`.`items`",
                    "_items_gho",
                ),
                (
                    "CREATE TABLE `lhmn_items` (id INT NOT NULL, name INT, PRIMARY KEY (id))",
                    "RENAME TABLE `items` TO `lhma_2026_12_05_07_00_00_000_items`, `lhmn_items` TO `items`",
                    "lhmn_items",
                ),
            ] {
                let mut t = start(rules).await;
                assert!(t.on_statement(create, "shop", gtid(1)).unwrap().is_empty());
                let alter_sql = format!("ALTER TABLE `shop`.`{shadow}` {alter}");
                assert!(t.on_statement(&alter_sql, "shop", gtid(2)).unwrap().is_empty());
                assert!(t.on_statement(swap, "shop", gtid(3)).unwrap().is_empty(), "{swap}");
                assert_eq!(t.swaps_followed(), 1);
                // The old table id is forgotten; the new table's map is known, not new.
                assert!(t.plan_for(7).is_none());
                let extra: &[&str] = if alter.contains("extra") { &["extra"] } else { &[] };
                assert!(matches!(
                    t.on_table_map(&items_map(12, "items", extra), Some(gtid(4))).await.unwrap(),
                    MappedTable::Known(_)
                ));
                // The old table's events and its DROP never reach the edge.
                assert!(matches!(
                    t.on_table_map(&items_map(7, "_items_old", &[]), None).await.unwrap(),
                    MappedTable::Skipped
                ));
                assert!(t
                    .on_statement("DROP TABLE IF EXISTS `shop`.`_items_old`", "shop", gtid(5))
                    .unwrap()
                    .is_empty());
            }
        }
    }

    #[tokio::test]
    async fn two_statement_swaps_are_followed_and_can_be_undone() {
        for (create, first, second, shadow_table) in [
            (
                "create /* gh-ost */ table `shop`.`_items_gho` like `shop`.`items`",
                "alter /* gh-ost */ table `shop`.`items` rename `shop`.`_items_del`",
                "alter /* gh-ost */ table `shop`.`_items_gho` rename `shop`.`items`",
                "_items_gho",
            ),
            (
                "CREATE TABLE `lhmn_items` (id INT NOT NULL, name INT, PRIMARY KEY (id))",
                "alter table `items` rename `lhma_2026_12_05_07_00_00_000_items`",
                "alter table `lhmn_items` rename `items`",
                "lhmn_items",
            ),
        ] {
            let mut t = start("[[tables]]\nmatch = \"shop.*\"\nexclude_columns = [\"extra\"]").await;
            t.on_statement(create, "shop", gtid(1)).unwrap();
            t.on_statement(
                &format!("ALTER TABLE `{shadow_table}` ADD COLUMN extra INT"),
                "shop",
                gtid(2),
            )
            .unwrap();
            assert!(t.on_statement(first, "shop", gtid(3)).unwrap().is_empty(), "{first}");
            assert!(t.on_statement(second, "shop", gtid(4)).unwrap().is_empty(), "{second}");
            assert_eq!(t.swaps_followed(), 1);
            assert!(matches!(
                t.on_table_map(&items_map(12, "items", &["extra"]), Some(gtid(5)))
                    .await
                    .unwrap(),
                MappedTable::Known(_)
            ));
        }
        // Renamed away and back (a cut-over given up): the table is simply back.
        let mut t = start("[[tables]]\nmatch = \"shop.*\"").await;
        t.on_statement("create table `_items_gho` like `items`", "shop", gtid(1))
            .unwrap();
        t.on_statement("alter table `items` rename `_items_del`", "shop", gtid(2))
            .unwrap();
        t.on_statement("alter table `_items_del` rename `items`", "shop", gtid(3))
            .unwrap();
        assert_eq!(t.swaps_followed(), 0);
        assert!(matches!(
            t.on_table_map(&items_map(13, "items", &[]), None).await.unwrap(),
            MappedTable::Known(_)
        ));
    }

    #[tokio::test]
    async fn swaps_that_change_replicated_columns_still_stop() {
        for (alter, why) in [
            ("ADD COLUMN extra INT", "adds column extra, which the rule replicates"),
            ("DROP COLUMN name", "drops replicated column name"),
            ("MODIFY COLUMN name BIGINT", "changes replicated column name"),
            ("CHANGE name title INT", "changes replicated column name"),
            ("RENAME COLUMN name TO title", "changes replicated column name"),
        ] {
            let mut t = start("[[tables]]\nmatch = \"shop.*\"").await;
            t.on_statement("CREATE TABLE `_items_new` (id INT NOT NULL, name INT)", "shop", gtid(1))
                .unwrap();
            t.on_statement(&format!("ALTER TABLE `_items_new` {alter}"), "shop", gtid(2))
                .unwrap();
            let err = t
                .on_statement("RENAME TABLE items TO _items_old, _items_new TO items", "shop", gtid(3))
                .unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, SchemaError::OnlineSchemaChangeSwap(_)), "{message}");
            for needle in [
                why,
                "0-1-3",
                "pt-online-schema-change",
                "leave shop.items out of the config",
            ] {
                assert!(message.contains(needle), "missing {needle:?}: {message}");
            }
            // Two-step: stops at the first half, naming why.
            let mut t = start("[[tables]]\nmatch = \"shop.*\"").await;
            t.on_statement("create table `_items_gho` like `items`", "shop", gtid(1))
                .unwrap();
            t.on_statement(&format!("ALTER TABLE `_items_gho` {alter}"), "shop", gtid(2))
                .unwrap();
            let err = t
                .on_statement("alter table `items` rename `_items_del`", "shop", gtid(3))
                .unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        // Row events for the table's name while the swap is half done stop.
        let mut t = start("[[tables]]\nmatch = \"shop.*\"").await;
        t.on_statement("create table `_items_gho` like `items`", "shop", gtid(1))
            .unwrap();
        t.on_statement("alter table `items` rename `_items_del`", "shop", gtid(2))
            .unwrap();
        let err = match t.on_table_map(&items_map(14, "items", &[]), Some(gtid(3))).await {
            Err(e) => e,
            Ok(_) => panic!("row events while the swap is half done must stop"),
        };
        assert!(err.to_string().contains("swap is half done"), "{err}");
        // A second half that renames something else onto the table stops.
        let mut t = start("[[tables]]\nmatch = \"shop.*\"").await;
        t.on_statement("create table `_items_gho` like `items`", "shop", gtid(1))
            .unwrap();
        t.on_statement("alter table `items` rename `_items_del`", "shop", gtid(2))
            .unwrap();
        let err = t
            .on_statement("alter table `other` rename `items`", "shop", gtid(3))
            .unwrap_err();
        assert!(matches!(err, SchemaError::OnlineSchemaChangeSwap(_)), "{err}");
    }

    #[tokio::test]
    async fn swaps_adding_replicated_columns_run_again_when_the_column_can_be_filled() {
        for (create, alter, cut_over) in [
            (
                "CREATE TABLE `_items_new` (id INT NOT NULL, name INT)",
                "ALTER TABLE `_items_new` ADD COLUMN extra INT DEFAULT 7",
                &["RENAME TABLE items TO _items_old, _items_new TO items"][..],
            ),
            (
                "create table `_items_gho` like `items`",
                "alter table `_items_gho` add column extra int",
                &[
                    "alter table `items` rename `_items_del`",
                    "alter table `_items_gho` rename `items`",
                ][..],
            ),
        ] {
            let mut t = start("[[tables]]\nmatch = \"shop.*\"").await.fills_new_columns(true);
            t.on_statement(create, "shop", gtid(1)).unwrap();
            t.on_statement(alter, "shop", gtid(2)).unwrap();
            let (last, first) = cut_over.split_last().unwrap();
            for sql in first {
                assert!(t.on_statement(sql, "shop", gtid(3)).unwrap().is_empty());
            }
            let err = t.on_statement(last, "shop", gtid(4)).unwrap_err();
            let SchemaError::SwapAddsColumns {
                table, columns, gtid, ..
            } = &err
            else {
                panic!("{err}")
            };
            assert_eq!(
                (table.as_str(), columns.as_str(), gtid.as_str()),
                ("shop.items", "extra", "0-1-4")
            );
        }
    }

    /// `sluice run`'s tracker (new columns held as the rules say): an `ADD COLUMN` the rule
    /// holds is followed with the column's `held` readiness and left out of the next TABLE_MAP's
    /// plan; one it replicates runs again (or stops, when it cannot be filled); a held column's
    /// later changes are followed.
    #[tokio::test]
    async fn added_columns_are_held_or_followed_as_the_rule_says() {
        let mut t = holding_start("[[tables]]\nmatch = \"shop.*\"").await;
        t.on_table_map(&items_map(1, "items", &[]), Some(gtid(1)))
            .await
            .unwrap();
        let changes = t
            .on_statement("ALTER TABLE items ADD COLUMN extra INT", "shop", gtid(2))
            .unwrap();
        assert_holds_extra(&changes);
        let MappedTable::Known(plan) = t
            .on_table_map(&items_map(2, "items", &["extra"]), Some(gtid(3)))
            .await
            .unwrap()
        else {
            panic!("a held column keeps the table as it was")
        };
        let names: Vec<&str> = plan.target.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            (names, plan.held.as_slice()),
            (vec!["id", "name"], &["extra".to_owned()][..])
        );
        for sql in [
            "ALTER TABLE items MODIFY extra BIGINT",
            "ALTER TABLE items RENAME COLUMN extra TO more",
            "ALTER TABLE items DROP COLUMN extra",
        ] {
            assert!(t.on_statement(sql, "shop", gtid(4)).is_ok(), "{sql}");
        }

        for (rules, fills) in [
            ("[[tables]]\nmatch = \"shop.*\"\nnew_columns = \"replicate\"", true),
            ("[[tables]]\nmatch = \"shop.*\"\nrelease_columns = [\"extra\"]", true),
            ("[[tables]]\nmatch = \"shop.*\"\nnew_columns = \"replicate\"", false),
        ] {
            let mut t = start(rules).await.fills_new_columns(fills).holds_new_columns(true);
            t.on_table_map(&items_map(1, "items", &[]), Some(gtid(1)))
                .await
                .unwrap();
            let err = t
                .on_statement("ALTER TABLE items ADD COLUMN extra INT", "shop", gtid(2))
                .unwrap_err();
            match fills {
                true => assert!(matches!(err, SchemaError::AddsColumns { .. }), "{err}"),
                false => assert!(err.to_string().contains("cannot fill it"), "{err}"),
            }
        }
    }

    /// A tool's swap that adds a column the rule holds is followed, and the column's `held`
    /// readiness comes with the swap's GTID.
    #[tokio::test]
    async fn a_swap_adding_a_held_column_is_followed_with_its_readiness() {
        let mut t = holding_start("[[tables]]\nmatch = \"shop.*\"").await;
        t.on_statement("CREATE TABLE `_items_new` (id INT NOT NULL, name INT)", "shop", gtid(1))
            .unwrap();
        t.on_statement(
            "ALTER TABLE `_items_new` ADD COLUMN extra INT DEFAULT 7",
            "shop",
            gtid(2),
        )
        .unwrap();
        let changes = t
            .on_statement("RENAME TABLE items TO _items_old, _items_new TO items", "shop", gtid(3))
            .unwrap();
        assert_holds_extra(&changes);
        assert_eq!(t.swaps_followed(), 1);
        // The next statement carries nothing of it.
        assert!(t
            .on_statement("ALTER TABLE other ADD COLUMN x INT", "shop", gtid(4))
            .unwrap()
            .is_empty());
    }
}
