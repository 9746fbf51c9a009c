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
//! DDL statements are also recognised as they pass ([`crate::ddl`]), so that a change stops
//! sluice at the DDL's own GTID, and table-level changes that produce no TABLE_MAP
//! (RENAME, DROP, TRUNCATE) are caught at all.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_binlog::{Gtid, TableMap};

use crate::catalog::{self, CatalogError};
use crate::ddl::{AlterAction, Statement, TableName};
use crate::filter::{replicated_columns_unchanged, PlanError, TableFilter, TablePlan};
use crate::target::TargetTable;

/// Longest statement excerpt put into an error message.
const STATEMENT_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "source DDL at GTID {gtid} changes replicated table {table}: {reason}. Statement: {statement}. \
         sluice stopped before applying it; the target is consistent up to the previous transaction. \
         To go on, change the config so the table's replicated columns stay as they are (or drop the table from the config), \
         or rebuild the target table; managed schema changes are not supported yet"
    )]
    ReplicatedColumnsChanged {
        table: String,
        gtid: String,
        statement: String,
        reason: String,
    },
    #[error(
        "statement-based change to replicated table {table} at GTID {gtid}: sluice needs row events. \
         Set binlog_format=ROW on the source (globally and for every session that writes it)"
    )]
    StatementBasedDml { table: String, gtid: String },
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

fn excerpt(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > STATEMENT_EXCERPT {
        format!("{}…", one_line.chars().take(STATEMENT_EXCERPT).collect::<String>())
    } else {
        one_line
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
    }

    pub async fn on_table_map(&mut self, map: &TableMap, gtid: Option<Gtid>) -> Result<MappedTable, SchemaError> {
        if !self.filter.is_selected(&map.schema, &map.table) {
            self.by_table_id.insert(map.table_id, None);
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
                        return Ok(MappedTable::Known(plan.clone()));
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
                MappedTable::New(new_plan.clone())
            }
        };
        self.by_table_id.insert(map.table_id, Some(new_plan));
        Ok(mapped)
    }

    /// Checks a QUERY event's statement. Errors when it changes a replicated table in a way
    /// sluice cannot follow.
    pub fn on_statement(&mut self, sql: &str, default_schema: &str, gtid: Gtid) -> Result<(), SchemaError> {
        let statement = crate::ddl::classify(sql, default_schema);
        let stop = |table: &TableName, reason: String| SchemaError::ReplicatedColumnsChanged {
            table: table.to_string(),
            gtid: gtid.to_string(),
            statement: excerpt(sql),
            reason,
        };
        match &statement {
            Statement::Alter { table, actions } => {
                let Some(selector) = self.filter.select(&table.schema, &table.table) else {
                    return Ok(());
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
                            return Err(stop(table, format!("it renames the table to {to}")))
                        }
                        _ => {}
                    }
                }
            }
            Statement::Rename { pairs } => {
                for (from, to) in pairs {
                    if self.plans.contains_key(&(from.schema.clone(), from.table.clone())) {
                        return Err(stop(from, format!("it renames the table to {to}")));
                    }
                    if self.filter.is_selected(&to.schema, &to.table)
                        && self.plans.contains_key(&(to.schema.clone(), to.table.clone()))
                    {
                        return Err(stop(to, format!("it replaces the table with {from}")));
                    }
                }
            }
            Statement::Drop { tables } => {
                if let Some(t) = tables
                    .iter()
                    .find(|t| self.plans.contains_key(&(t.schema.clone(), t.table.clone())))
                {
                    return Err(stop(t, "it drops the table".into()));
                }
            }
            Statement::Truncate { table } if self.plans.contains_key(&(table.schema.clone(), table.table.clone())) => {
                return Err(stop(table, "it truncates the table".into()));
            }
            Statement::Create { table } if self.plans.contains_key(&(table.schema.clone(), table.table.clone())) => {
                // CREATE TABLE IF NOT EXISTS on an existing table is a no-op; a real re-create
                // needs a DROP first, which stopped above.
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
        Ok(())
    }
}
