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

use sluice_binlog::{Gtid, TableMap};

use crate::apply::EdgeChange;
use crate::select::osc::{osc_table, OscRole};
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

/// An online schema change tool's swap of a replicated table, which sluice does not follow.
#[derive(Debug, thiserror::Error)]
#[error(
    "source DDL at GTID {gtid} is {tool}'s swap of replicated table {table} (its shadow table {shadow}, \
     the table with the tool's ALTER applied, takes the place of {table}, which becomes {old}). Statement: {statement}. \
     sluice does not follow the swap (it never replicates the tool's tables, so it has no copy of {shadow}) and \
     stopped before applying it; the target is consistent up to the previous transaction. \
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
        }
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

    pub async fn on_table_map(&mut self, map: &Arc<TableMap>, gtid: Option<Gtid>) -> Result<MappedTable, SchemaError> {
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
        let new_plan = Arc::new(self.filter.plan(&def).expect("selected")?);
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

    /// An online schema change tool's swap of a replicated table (`RENAME TABLE t TO _t_old,
    /// _t_new TO t` and its gh-ost and LHM forms): a replicated `t` renamed to a name of the
    /// tool's old table and a shadow table renamed to `t`, in one statement.
    fn osc_swap(&self, pairs: &[(TableName, TableName)], gtid: &Gtid, sql: &str) -> Option<SchemaError> {
        pairs.iter().find_map(|(from, old)| {
            if !self.plans.contains_key(&(from.schema.clone(), from.table.clone())) {
                return None;
            }
            osc_table(&old.table).filter(|t| t.role == OscRole::Old)?;
            let (shadow, _) = pairs.iter().find(|(_, to)| to == from)?;
            let tool = osc_table(&shadow.table).filter(|t| t.role == OscRole::Shadow)?.tool;
            Some(SchemaError::OnlineSchemaChangeSwap(Box::new(OscSwap {
                tool: tool.name(),
                table: from.to_string(),
                shadow: shadow.to_string(),
                old: old.to_string(),
                gtid: gtid.to_string(),
                statement: excerpt(sql),
            })))
        })
    }

    /// Checks a QUERY event's statement. Errors when it changes a replicated table in a way
    /// sluice cannot follow; otherwise returns what it does to target tables (applied at its
    /// GTID, with its checkpoint).
    pub fn on_statement(
        &mut self,
        sql: &str,
        default_schema: &str,
        gtid: Gtid,
    ) -> Result<Vec<EdgeChange>, SchemaError> {
        let statement = crate::stream::ddl::classify(sql, default_schema);
        let stop = |table: &TableName, reason: String| SchemaError::ReplicatedColumnsChanged {
            table: table.to_string(),
            gtid: gtid.to_string(),
            statement: excerpt(sql),
            reason,
        };
        match &statement {
            Statement::Alter { table, actions } => {
                let Some(selector) = self.filter.select(&table.schema, &table.table) else {
                    return Ok(Vec::new());
                };
                self.last_ddl
                    .insert((table.schema.clone(), table.table.clone()), excerpt(sql));
                let known = self.plans.contains_key(&(table.schema.clone(), table.table.clone()));
                for action in actions {
                    match action {
                        AlterAction::AddColumn(c) if known && selector.columns.includes(c) => {
                            return Err(stop(table, format!("it adds column {c}, which the config replicates")))
                        }
                        AlterAction::DropColumn(c) if known && selector.columns.includes(c) => {
                            return Err(stop(table, format!("it drops replicated column {c}")))
                        }
                        AlterAction::ChangeColumn { old, .. } if known && selector.columns.includes(old) => {
                            return Err(stop(table, format!("it changes replicated column {old}")))
                        }
                        AlterAction::RenameColumn { old, .. } if known && selector.columns.includes(old) => {
                            return Err(stop(table, format!("it renames replicated column {old}")))
                        }
                        AlterAction::RenameTable(to) if known => {
                            return Err(stop(table, format!("it renames the table to {to}{}", osc_note(to))))
                        }
                        _ => {}
                    }
                }
            }
            Statement::Rename { pairs } => {
                if let Some(swap) = self.osc_swap(pairs, &gtid, sql) {
                    return Err(swap);
                }
                for (from, to) in pairs {
                    if self.plans.contains_key(&(from.schema.clone(), from.table.clone())) {
                        return Err(stop(from, format!("it renames the table to {to}{}", osc_note(to))));
                    }
                    if self.filter.is_selected(&to.schema, &to.table)
                        && self.plans.contains_key(&(to.schema.clone(), to.table.clone()))
                    {
                        return Err(stop(to, format!("it replaces the table with {from}")));
                    }
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
        let gtid = Gtid {
            domain: 0,
            server: 1,
            sequence: 42,
        };
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
}
