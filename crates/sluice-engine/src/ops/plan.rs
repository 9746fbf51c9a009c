//! `sluice plan`: what a start with this config would do to the target (tables created,
//! recreated, marked stale; columns added, held; copies), without doing any of it.
//!
//! It reads the source's catalog and what the target records, and takes its decisions from
//! the same functions `run` carries out ([`crate::schema_manager`]), so the two cannot drift
//! apart. It writes nothing: a SQLite target file that does not exist is not created.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError, TargetConfig};
use crate::pipeline::{current_plans, hold_new_columns, open_target, source_pool, RunError};
use crate::schema_manager::{copy_for_added_columns, table_fates, Recorded, TableFate};
use crate::select::rules::TablePlan;
use crate::target::Target;

/// One target table and what a start would do to it, in order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlannedTable {
    /// The source table (`schema.table`); empty for a recorded table the config no longer selects.
    pub source: String,
    pub target: String,
    pub actions: Vec<String>,
}

/// What `sluice run` with `config` would do at its start, table by table (source order,
/// then the tables the config no longer selects).
pub async fn plan(config: &Config) -> Result<Vec<PlannedTable>, RunError> {
    if config.log_source().is_some() {
        return Err(ConfigError::Invalid {
            key: "source.kind".into(),
            message: "sluice plan reads the source's catalog; an edge behind the fan-out log takes its tables \
                      from the log, so run `sluice plan` with the publisher's config instead"
                .into(),
        }
        .into());
    }
    let pool = source_pool(config)?;
    let plans = current_plans(&pool, config).await;
    pool.disconnect().await.ok();
    let plans = plans?;
    let mut target = match &config.target {
        TargetConfig::Sqlite { path } if !path.exists() => None,
        _ => Some(open_target(config)?),
    };
    let recorded = match target.as_mut() {
        Some(t) => Recorded::read(t.as_mut())?,
        None => Recorded::default(),
    };
    let fates = table_fates(&plans, &recorded);
    let fate_of = |name: &str| fates.iter().find(|(n, _)| n == name).map(|(_, f)| f);

    // Tables kept as they are planned against the columns their target tables have (holding
    // new columns back); a table to be recreated gets all of the rule's columns.
    let (kept, recreated): (Vec<_>, Vec<_>) = plans.into_iter().partition(|p| fate_of(&p.target.name).is_none());
    let kept = match target.as_mut() {
        Some(t) => hold_new_columns(config, t.as_mut(), kept)?,
        None => kept,
    };

    let mut out = Vec::new();
    for plan in recreated {
        let Some(TableFate::Recreate(reason)) = fate_of(&plan.target.name) else {
            unreachable!("partitioned by fate")
        };
        let mut actions = vec![format!("drop and create afresh: {reason}")];
        actions.push(whole_copy(config));
        out.push(planned(&plan, actions));
    }
    for plan in kept {
        let actions = match target.as_mut() {
            Some(t) => kept_table_actions(config, t.as_mut(), &recorded, &plan),
            None => new_table(config, &plan),
        };
        out.push(planned(&plan, actions));
    }
    for (name, fate) in &fates {
        if *fate == TableFate::MarkStale {
            out.push(PlannedTable {
                source: String::new(),
                target: name.clone(),
                actions: vec![
                    "no longer selected: kept but no longer updated (marked stale); selected again later, it is \
                     dropped and copied afresh"
                        .into(),
                ],
            });
        }
    }
    Ok(out)
}

fn planned(plan: &TablePlan, mut actions: Vec<String>) -> PlannedTable {
    if !plan.held.is_empty() {
        actions.push(format!(
            "hold column(s) {}: not replicated until `release_columns` names them (or `new_columns = \"replicate\"`)",
            plan.held.join(", ")
        ));
    }
    if actions.is_empty() {
        actions.push("no change".into());
    }
    PlannedTable {
        source: plan.target.source_name.clone(),
        target: plan.target.name.clone(),
        actions,
    }
}

fn whole_copy(config: &Config) -> String {
    match config.backfill.enabled {
        true => "copy every existing row (backfill), while the stream runs".into(),
        false => "no copy ([backfill] enabled = false): the table holds what streams from the start".into(),
    }
}

/// A table the target does not have yet.
fn new_table(config: &Config, plan: &TablePlan) -> Vec<String> {
    vec![
        format!("create ({} columns)", plan.target.columns.len()),
        whole_copy(config),
    ]
}

/// A planned table the start keeps: created if new, columns added, copies resumed.
fn kept_table_actions(
    config: &Config,
    target: &mut dyn Target,
    recorded: &Recorded,
    plan: &Arc<TablePlan>,
) -> Vec<String> {
    let name = &plan.target.name;
    let record = recorded.records.get(name);
    if !recorded.existing.contains(name) {
        return new_table(config, plan);
    }
    let gaps = match target.column_gaps(std::slice::from_ref(&plan.target)) {
        Ok(gaps) => gaps,
        // `run` refuses the same way, before it writes anything.
        Err(e) => return vec![format!("refused: {e}")],
    };
    let mut actions = Vec::new();
    if let Some((_, missing)) = gaps.first() {
        let added: Vec<String> = missing.iter().map(|&c| plan.target.columns[c].name.clone()).collect();
        actions.push(format!(
            "add column(s) {} (nullable, empty in existing rows)",
            added.join(", ")
        ));
        actions.push(match copy_for_added_columns(record, &added) {
            Some(columns) if !columns.is_empty() => format!("column-only copy of {}", columns.join(", ")),
            Some(_) => "the copy of whole rows under way starts again (its rows lack the new columns)".into(),
            None if config.backfill.enabled => "the coming copy of whole rows fills them".into(),
            None => "no copy ([backfill] enabled = false): existing rows keep them empty".into(),
        });
        return actions;
    }
    match record {
        Some(r) if r.error.is_some() => actions.push(format!(
            "retry the copy that failed ({}), from its last committed chunk",
            r.error.as_deref().unwrap_or_default()
        )),
        Some(r) if !r.done && config.backfill.enabled => actions.push(match r.columns.is_empty() {
            true => format!("resume the copy ({} rows copied)", r.rows_copied),
            false => format!(
                "resume the column-only copy of {} ({} rows copied)",
                r.columns.join(", "),
                r.rows_copied
            ),
        }),
        None if config.backfill.enabled => actions.push(whole_copy(config)),
        _ => {}
    }
    actions
}

/// The plan as text, one block per table.
pub fn to_text(tables: &[PlannedTable]) -> String {
    let mut out = String::new();
    for t in tables {
        match t.source.is_empty() {
            true => out.push_str(&format!("{}\n", t.target)),
            false => out.push_str(&format!("{} -> {}\n", t.source, t.target)),
        }
        for a in &t.actions {
            out.push_str(&format!("  {a}\n"));
        }
    }
    if tables.is_empty() {
        out.push_str("no source table matches the config's rules\n");
    }
    out
}
