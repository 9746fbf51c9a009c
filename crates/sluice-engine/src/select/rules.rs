//! Table and column selection: which source tables reach the target, with which columns.
//!
//! A [`TablePlan`] is compiled once per table definition (not per row): it holds the source
//! column indexes to keep, in target order, so projecting a row is an index walk.

use std::sync::Arc;

use sluice_binlog::{ColumnDef, ColumnKind, RowChange, TableDef, Value};

use crate::config::{ColumnSelection, Secret, TableSelector};
use crate::select::rowfilter::CompiledFilter;
use crate::select::transform::CompiledTransform;
use crate::target::{RowOp, TargetColumn, TargetTable};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("table {table} has no primary key and no unique key on NOT NULL columns; sluice needs one to apply changes by key and to copy the table in key order. Add a primary key on the source (or make a unique key's columns NOT NULL), or remove the table from the config")]
    NoKey { table: String },
    #[error("table {table}: primary key column {column} is not replicated; add it to `columns` (or remove it from `exclude_columns`) in the rule {rule:?}")]
    KeyNotReplicated {
        table: String,
        column: String,
        rule: String,
    },
    #[error("table {table}: column {column} named in the rule {rule:?} does not exist")]
    UnknownColumn {
        table: String,
        column: String,
        rule: String,
    },
    #[error("table {table}: the rule {rule:?} leaves no columns to replicate")]
    NoColumns { table: String, rule: String },
    #[error("tables {first} and {second} would both be written to target table {target}; give one of them a `target` name in its own [[tables]] rule")]
    TargetNameClash {
        first: String,
        second: String,
        target: String,
    },
    #[error(
        "table {table}: the {what} name {name:?} is {bytes} bytes long, and {target} keeps at most {limit} (it would \
         cut the name silently, so names sharing their first {limit} bytes would merge). {}",
        match *what {
            "table" => "Give the table a shorter `target` name in its [[tables]] rule",
            _ => "Leave the column out of the rule (`exclude_columns`), or rename it at the source",
        }
    )]
    IdentifierTooLong {
        table: String,
        what: &'static str,
        name: String,
        bytes: usize,
        limit: usize,
        target: &'static str,
    },
    #[error("config key `{key}.where` for table {table}: {message}")]
    Filter {
        key: String,
        table: String,
        message: String,
    },
    #[error("config key `{key}.transforms.{column}` for table {table}: {message}")]
    Transform {
        key: String,
        table: String,
        column: String,
        message: String,
    },
    /// Every table that cannot be planned, so that one run names all there is to fix.
    #[error("{} selected tables cannot be replicated:\n{}", .0.len(), list_errors(.0))]
    Several(Vec<PlanError>),
}

fn list_errors(errors: &[PlanError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

impl PlanError {
    /// One error for all of `errors` (`None` when there are none).
    pub fn all(mut errors: Vec<PlanError>) -> Option<PlanError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(PlanError::Several(errors)),
        }
    }
}

/// How one source table (at one definition) maps to its target table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub source: Arc<TableDef>,
    pub target: Arc<TargetTable>,
    /// Source column index of each target column.
    pub source_columns: Vec<usize>,
    /// Rows for which this is not TRUE do not reach the target.
    pub row_filter: Option<CompiledFilter>,
    /// Per target column, the transform applied to its values.
    pub transforms: Vec<Option<CompiledTransform>>,
    /// Source columns the rule selects but holds back (`new_columns = "hold"`): the target
    /// table does not have them and the config has not released them. Never projected.
    pub held: Vec<String>,
}

impl TablePlan {
    /// Whether a full source row image passes the row filter.
    pub fn passes(&self, row: &[Value]) -> bool {
        self.row_filter.as_ref().is_none_or(|f| f.matches(row))
    }

    /// Projects a full source row image onto the target columns and applies the transforms.
    pub fn project(&self, mut row: Vec<Value>) -> Vec<Value> {
        self.source_columns
            .iter()
            .zip(&self.transforms)
            .map(|(&i, transform)| {
                let v = std::mem::replace(&mut row[i], Value::Null);
                match transform {
                    Some(t) => t.apply(v),
                    None => v,
                }
            })
            .collect()
    }

    /// Turns a source row change into the target's, through the row filter and the transforms.
    /// An update whose row enters the filter becomes an insert, one that leaves it a delete.
    pub fn target_op(&self, change: RowChange) -> Option<RowOp> {
        let table = self.target.clone();
        match change {
            RowChange::Insert(row) => self.passes(&row).then(|| RowOp::Insert {
                table,
                row: self.project(row),
            }),
            RowChange::Delete(row) => self.passes(&row).then(|| RowOp::Delete {
                table,
                row: self.project(row),
            }),
            RowChange::Update { before, after } => match (self.passes(&before), self.passes(&after)) {
                (true, true) => Some(RowOp::Update {
                    table,
                    before: self.project(before),
                    after: self.project(after),
                }),
                (true, false) => Some(RowOp::Delete {
                    table,
                    row: self.project(before),
                }),
                (false, true) => Some(RowOp::Insert {
                    table,
                    row: self.project(after),
                }),
                (false, false) => None,
            },
        }
    }
}

/// The selectors of the config, in order; the first rule that matches a table applies.
#[derive(Clone)]
pub struct TableFilter {
    selectors: Vec<TableSelector>,
    hmac_key: Option<Secret>,
    /// `(schema, table)`s no rule may select: sluice's own heartbeat table (`crate::ops::lag`).
    excluded: Vec<(String, String)>,
    /// The longest table or column name the target holds, in bytes, where the target has a
    /// limit shorter than the source's (see [`TableFilter::limiting_identifiers`]).
    identifier_limit: Option<IdentifierLimit>,
}

/// A target's identifier length limit.
#[derive(Debug, Clone, Copy)]
pub struct IdentifierLimit {
    pub bytes: usize,
    pub target: &'static str,
}

impl std::fmt::Debug for TableFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFilter")
            .field("selectors", &self.selectors)
            .field("hmac_key", &self.hmac_key)
            .finish()
    }
}

impl TableFilter {
    /// `hmac_key` is the key of `hmac` transforms (see [`crate::config::Config::hmac_key`]).
    pub fn new(selectors: Vec<TableSelector>, hmac_key: Option<Secret>) -> Self {
        TableFilter {
            selectors,
            hmac_key,
            excluded: Vec::new(),
            identifier_limit: None,
        }
    }

    /// Refuses to plan a table whose target name or a column name is longer than `limit`:
    /// PostgreSQL cuts longer names to 63 bytes with only a NOTICE, so two names sharing their
    /// first 63 bytes would become one, and a name read back would not match the source's.
    pub fn limiting_identifiers(mut self, limit: IdentifierLimit) -> Self {
        self.identifier_limit = Some(limit);
        self
    }

    /// Never selects `schema.table`, whatever the rules say.
    pub fn excluding(mut self, schema: &str, table: &str) -> Self {
        self.excluded.push((schema.to_owned(), table.to_owned()));
        self
    }

    pub fn select(&self, schema: &str, table: &str) -> Option<&TableSelector> {
        if self.excluded.iter().any(|(s, t)| s == schema && t == table) {
            return None;
        }
        // Online schema change tools' tables (`_t_new`, `_t_gho`, `lhmn_t`, …) only by an exact
        // rule: a glob never selects them.
        let tool_table = crate::select::osc::osc_table(table).is_some();
        self.selectors
            .iter()
            .find(|s| s.matches(schema, table) && (s.is_exact || !tool_table))
    }

    pub fn is_selected(&self, schema: &str, table: &str) -> bool {
        self.select(schema, table).is_some()
    }

    /// Builds the plan of a selected table that the target does not have yet (every column
    /// the rule selects). `None` when the table is not selected.
    pub fn plan(&self, def: &TableDef) -> Option<Result<TablePlan, PlanError>> {
        self.plan_known(def, None)
    }

    /// Builds the plan of a selected table whose target table has the columns `known` (`None`:
    /// no target table yet): a column the target lacks and the rule holds back
    /// ([`TableSelector::holds`]) is left out and listed in [`TablePlan::held`].
    pub fn plan_known(&self, def: &TableDef, known: Option<&[String]>) -> Option<Result<TablePlan, PlanError>> {
        let selector = self.select(&def.schema, &def.name)?;
        let plan = plan_table(
            def,
            selector,
            self.hmac_key.as_ref().map(|k| k.expose().as_bytes()),
            known,
        );
        Some(match (plan, self.identifier_limit) {
            (Ok(plan), Some(limit)) => check_identifier_lengths(&plan.target, limit).map(|()| plan),
            (plan, _) => plan,
        })
    }
}

fn check_identifier_lengths(target: &TargetTable, limit: IdentifierLimit) -> Result<(), PlanError> {
    let too_long = |what: &'static str, name: &str| PlanError::IdentifierTooLong {
        table: target.source_name.clone(),
        what,
        name: name.to_owned(),
        bytes: name.len(),
        limit: limit.bytes,
        target: limit.target,
    };
    if target.name.len() > limit.bytes {
        return Err(too_long("table", &target.name));
    }
    match target.columns.iter().find(|c| c.name.len() > limit.bytes) {
        Some(column) => Err(too_long("column", &column.name)),
        None => Ok(()),
    }
}

fn plan_table(
    def: &TableDef,
    selector: &TableSelector,
    hmac_key: Option<&[u8]>,
    known: Option<&[String]>,
) -> Result<TablePlan, PlanError> {
    let table = def.qualified_name();
    if def.primary_key.is_empty() {
        return Err(PlanError::NoKey { table });
    }
    // Named columns must exist, except excluded columns of a glob rule (which may name a
    // column only some of the matched tables have). An exact rule's exclude list must match:
    // a misspelt PII column there would otherwise be replicated.
    let named = match &selector.columns {
        ColumnSelection::Include(cols) => Some(cols),
        ColumnSelection::Exclude(cols) if selector.is_exact => Some(cols),
        _ => None,
    };
    if let Some(cols) = named {
        if let Some(missing) = cols.iter().find(|c| def.column_index(c).is_none()) {
            return Err(PlanError::UnknownColumn {
                table,
                column: missing.clone(),
                rule: selector.pattern.clone(),
            });
        }
    }
    let is_held =
        |name: &str| known.is_some_and(|k| !k.iter().any(|c| c.eq_ignore_ascii_case(name))) && selector.holds(name);
    let (source_columns, held): (Vec<usize>, Vec<usize>) = (0..def.columns.len())
        .filter(|&i| selector.columns.includes(&def.columns[i].name))
        .partition(|&i| !is_held(&def.columns[i].name));
    let held: Vec<String> = held.into_iter().map(|i| def.columns[i].name.clone()).collect();
    if source_columns.is_empty() {
        return Err(PlanError::NoColumns {
            table,
            rule: selector.pattern.clone(),
        });
    }
    let mut key = Vec::with_capacity(def.primary_key.len());
    for &k in &def.primary_key {
        match source_columns.iter().position(|&i| i == k) {
            Some(pos) => key.push(pos),
            None => {
                return Err(PlanError::KeyNotReplicated {
                    table,
                    column: def.columns[k].name.clone(),
                    rule: selector.pattern.clone(),
                })
            }
        }
    }
    let row_filter = match &selector.row_filter {
        Some(expr) => Some(
            crate::select::rowfilter::compile(expr, def).map_err(|e| PlanError::Filter {
                key: selector.key.clone(),
                table: table.clone(),
                message: e.to_string(),
            })?,
        ),
        None => None,
    };
    let mut transforms: Vec<Option<CompiledTransform>> = vec![None; source_columns.len()];
    for (column, spec) in &selector.transforms {
        // A transform may be set up for a held column before it is released.
        if held.iter().any(|h| h.eq_ignore_ascii_case(column)) {
            continue;
        }
        let transform_err = |message: String| PlanError::Transform {
            key: selector.key.clone(),
            table: table.clone(),
            column: column.clone(),
            message,
        };
        let Some(pos) = source_columns
            .iter()
            .position(|&i| def.columns[i].name.eq_ignore_ascii_case(column))
        else {
            return Err(transform_err(format!(
                "column {column} does not exist or is not replicated"
            )));
        };
        if key.contains(&pos) && !spec.keeps_values_distinct() {
            return Err(transform_err(format!(
                "{column} is part of the primary key; only hmac keeps key values distinct (a {spec} key would merge rows)"
            )));
        }
        let compiled = crate::select::transform::compile(spec, &def.columns[source_columns[pos]], hmac_key)
            .map_err(transform_err)?;
        transforms[pos] = Some(compiled);
    }
    let target = TargetTable {
        source_name: table,
        name: selector.target.clone().unwrap_or_else(|| def.name.clone()),
        columns: source_columns
            .iter()
            .zip(&transforms)
            .map(|(&i, t)| TargetColumn {
                name: def.columns[i].name.clone(),
                source: match t {
                    Some(t) => t.output_column(&def.columns[i]),
                    None => def.columns[i].clone(),
                },
            })
            .collect(),
        key,
        rules: selector.rules.clone(),
    };
    Ok(TablePlan {
        source: Arc::new(def.clone()),
        target: Arc::new(target),
        source_columns,
        row_filter,
        transforms,
        held,
    })
}

/// Whether two column definitions store the same values the same way at the target: name and
/// logical type, ignoring binlog-only details (type byte, metadata) that differ between a
/// TABLE_MAP and `information_schema` for the same column.
pub fn same_replicated_column(a: &ColumnDef, b: &ColumnDef) -> bool {
    let text_like = |k: ColumnKind| matches!(k, ColumnKind::Text | ColumnKind::Json);
    a.name.eq_ignore_ascii_case(&b.name)
        && (a.kind == b.kind || text_like(a.kind) && text_like(b.kind))
        && a.unsigned == b.unsigned
        && labels_match(&a.labels, &b.labels)
        && a.precision == b.precision
        && a.scale == b.scale
        && a.fsp == b.fsp
}

/// ENUM/SET labels compared for equality, except that `information_schema` prints characters
/// outside the Basic Multilingual Plane as `?` (its COLUMN_TYPE is utf8mb3), so a `?` on
/// either side matches any one character.
fn labels_match(a: &[String], b: &[String]) -> bool {
    use crate::stream::catalog::label_matches;
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| label_matches(x, y) || label_matches(y, x))
}

/// Whether `new` keeps every replicated column of `plan` (same names, types, order) and the
/// same key, so that the target table needs no change.
pub fn replicated_columns_unchanged(plan: &TablePlan, new: &TablePlan) -> bool {
    plan.target.columns.len() == new.target.columns.len()
        && plan.target.key == new.target.key
        && plan.target.name == new.target.name
        && plan
            .target
            .columns
            .iter()
            .zip(&new.target.columns)
            .all(|(a, b)| same_replicated_column(&a.source, &b.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(tables: &str) -> TableFilter {
        let cfg = crate::config::Config::parse(&format!(
            "[source]\nhost = \"127.0.0.1\"\nuser = \"repl\"\n\n[target]\nkind = \"sqlite\"\npath = \"t.db\"\n\n{tables}"
        ))
        .unwrap();
        TableFilter::new(cfg.selectors(), None)
    }

    #[test]
    fn glob_rules_never_select_online_schema_change_tables() {
        let f = filter("[[tables]]\nmatch = \"shop.*\"\n\n[[tables]]\nmatch = \"*.*\"");
        assert!(f.is_selected("shop", "items"));
        assert!(f.is_selected("crm", "items_new"));
        for tool_table in [
            "_items_new",
            "__items_new",
            "_items_old",
            "_items_gho",
            "_items_ghc",
            "_items_del",
            "lhmn_items",
            "lhma_2026_12_04_20_24_11_123_items",
        ] {
            assert!(!f.is_selected("shop", tool_table), "{tool_table}");
            assert!(!f.is_selected("crm", tool_table), "{tool_table}");
        }
    }

    #[test]
    fn an_exact_rule_still_selects_a_table_named_like_a_tool_table() {
        let f = filter("[[tables]]\nmatch = \"shop.*\"\n\n[[tables]]\nmatch = \"shop._items_new\"");
        let rule = f.select("shop", "_items_new").expect("the exact rule selects it");
        assert_eq!(rule.pattern, "shop._items_new");
        assert!(!f.is_selected("shop", "_items_gho"));
    }
}
