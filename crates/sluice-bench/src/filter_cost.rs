//! `sluice-bench filter-cost`: what row filters and column transforms cost, relative to
//! decoding the same binlog and applying it to a SQLite target.
//!
//! All on one thread, on the same binlog:
//!
//! 1. **decode + apply, unfiltered** (`decode_apply_s`): sluice's path from binlog bytes to
//!    target rows: decode events and rows, project each row onto the target columns (the table
//!    rules without `where` and `transforms`), apply to [`SqliteTarget`] in batches of about
//!    `--batch-rows` rows, each commit writing the checkpoint (as the applier does). The same
//!    with the rules' `where` and `transforms` is timed too, for reference.
//! 2. **filter + transform** (`filter_transform_s`): decode + project (the source reader's
//!    `TablePlan::target_op`, ops built and dropped, no target) with the filtered rules, minus the same
//!    without them; paired runs, median of the differences. Each row goes through the compiled
//!    filter and the compiled transforms right after being decoded, as in sluice.
//! 3. **the same work alone** over rows decoded beforehand, minus a loop that only walks and
//!    drops them. The rows are cold in the cache there (the decoded binlog is far larger than
//!    the cache), so this is an upper bound, printed for reference.
//!
//! The figure is `filter_transform_s / decode_apply_s` (CPU seconds); the goal is under 10%.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use sluice_binlog::{EventBody, EventDecoder, Gtid, GtidPosition, RowChange, Value};
use sluice_engine::config::{Config, Secret};
use sluice_engine::select::rules::{TableFilter, TablePlan};
use sluice_engine::target::sqlite::SqliteTarget;
use sluice_engine::target::{Checkpoint, Target};

use crate::decode::{open, same_table};
use crate::measure::{median, Span, Stopwatch};

/// The built-in rules for sysbench's tables (`id INT, k INT, c CHAR(120), pad CHAR(60)`).
/// sysbench fills `c` and `pad` with groups of random digits, so `c NOT LIKE '0%'` keeps about
/// nine rows in ten, and `k` is spread over `1..table_size`.
pub const BUILTIN_WHERE: &str = "k BETWEEN 10 AND 900000000 AND c NOT LIKE '0%'";
const BUILTIN_TRANSFORMS: &str = "{ c = \"hmac\", pad = \"mask:4\" }";
const BUILTIN_MATCH: &str = "sbtest.sbtest*";
const HMAC_KEY_ENV: &str = "SLUICE_BENCH_HMAC_KEY";
/// Used when SLUICE_BENCH_HMAC_KEY is unset (for the built-in rules, and for a config whose
/// `hmac_key_env` names that variable): the benchmark needs a key, not a secret one.
const BENCH_HMAC_KEY: &str = "sluice-bench-hmac-key-0123456789abcdef";

fn builtin_config(filtered: bool) -> String {
    let rule = if filtered {
        format!("where = \"{BUILTIN_WHERE}\"\ntransforms = {BUILTIN_TRANSFORMS}\n")
    } else {
        String::new()
    };
    format!(
        "[source]\nhost = \"127.0.0.1\"\nuser = \"bench\"\n[target]\nkind = \"sqlite\"\npath = \"unused.db\"\n\
         [transforms]\nhmac_key_env = \"{HMAC_KEY_ENV}\"\n[[tables]]\nmatch = \"{BUILTIN_MATCH}\"\n{rule}"
    )
}

/// The unfiltered and the filtered table filters, and a description of the rules.
fn filters(config: Option<&Path>) -> anyhow::Result<(TableFilter, TableFilter, serde_json::Value)> {
    match config {
        None => {
            let key = std::env::var(HMAC_KEY_ENV).unwrap_or_else(|_| BENCH_HMAC_KEY.to_owned());
            let plain = Config::parse(&builtin_config(false)).map_err(|e| anyhow::anyhow!("{e}"))?;
            let filtered = Config::parse(&builtin_config(true)).map_err(|e| anyhow::anyhow!("{e}"))?;
            let describe = json!([{ "match": BUILTIN_MATCH, "where": BUILTIN_WHERE, "transforms": { "c": "hmac", "pad": "mask:4" } }]);
            Ok((
                TableFilter::new(plain.selectors(), None),
                TableFilter::new(filtered.selectors(), Some(Secret::new(key))),
                describe,
            ))
        }
        Some(path) => {
            let mut config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let hmac = match config.hmac_key() {
                Ok(key) => key,
                // The benchmark needs a key, not a secret one.
                Err(_) if config.transforms.hmac_key_env.as_deref() == Some(HMAC_KEY_ENV) => {
                    Some(Secret::new(BENCH_HMAC_KEY.to_owned()))
                }
                Err(e) => anyhow::bail!("{e}"),
            };
            let filtered = TableFilter::new(config.selectors(), hmac);
            let describe = json!(config
                .tables
                .iter()
                .map(|r| json!({ "match": r.pattern, "where": r.row_filter, "transforms": r.transforms }))
                .collect::<Vec<_>>());
            for rule in &mut config.tables {
                rule.row_filter = None;
                rule.transforms.clear();
            }
            Ok((TableFilter::new(config.selectors(), None), filtered, describe))
        }
    }
}

/// Plans per table id, as the schema tracker keeps them.
struct Plans<'f> {
    filter: &'f TableFilter,
    by_id: HashMap<u64, Option<Arc<TablePlan>>>,
    by_name: HashMap<(String, String), Arc<TablePlan>>,
}

impl<'f> Plans<'f> {
    fn new(filter: &'f TableFilter) -> Self {
        Plans {
            filter,
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Handles a TABLE_MAP; returns a plan that is new (its target table must be prepared).
    fn on_table_map(&mut self, map: &sluice_binlog::TableMap) -> anyhow::Result<Option<Arc<TablePlan>>> {
        if !self.filter.is_selected(&map.schema, &map.table) {
            self.by_id.insert(map.table_id, None);
            return Ok(None);
        }
        if let Some(Some(plan)) = self.by_id.get(&map.table_id) {
            if same_table(&plan.source, map) {
                return Ok(None);
            }
        }
        let def = map.to_table_def();
        let key = (def.schema.clone(), def.name.clone());
        if let Some(plan) = self.by_name.get(&key) {
            if *plan.source == def {
                self.by_id.insert(map.table_id, Some(plan.clone()));
                return Ok(None);
            }
        }
        let plan = Arc::new(
            self.filter
                .plan(&def)
                .expect("selected")
                .with_context(|| format!("table {}", def.qualified_name()))?,
        );
        self.by_id.insert(map.table_id, Some(plan.clone()));
        self.by_name.insert(key, plan.clone());
        Ok(Some(plan))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PipelineStats {
    rows_in: u64,
    rows_applied: u64,
    commits: u64,
}

/// Decode + project (+ filter + transform), and with `db`, apply into a fresh SQLite file
/// there; without it, the target ops are built and dropped.
fn pipeline(
    files: &[PathBuf],
    filter: &TableFilter,
    db: Option<&Path>,
    batch_rows: usize,
) -> anyhow::Result<PipelineStats> {
    let mut target = match db {
        Some(db) => {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = db.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            Some(SqliteTarget::open(db)?)
        }
        None => None,
    };
    let mut plans = Plans::new(filter);
    let mut stats = PipelineStats::default();
    let mut position = GtidPosition::new();
    let mut gtid: Option<Gtid> = None;
    let mut commit_unix = 0u32;
    let mut in_batch = 0usize;
    if let Some(target) = target.as_mut() {
        target.begin()?;
    }
    for path in files {
        let mut reader = open(path)?;
        let mut decoder = EventDecoder::new();
        while let Some((offset, raw)) = reader.next_event()? {
            let event = decoder
                .decode(raw)
                .with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
            let end_of_txn = match event.body {
                EventBody::Gtid(g) => {
                    gtid = Some(g.gtid);
                    commit_unix = event.header.timestamp;
                    false
                }
                EventBody::TableMap(map) => {
                    if let (Some(plan), Some(target)) = (plans.on_table_map(&map)?, target.as_mut()) {
                        target.prepare(std::slice::from_ref(&plan.target))?;
                    }
                    false
                }
                EventBody::Rows(rows) => {
                    let Some(Some(plan)) = plans.by_id.get(&rows.table_id) else {
                        continue;
                    };
                    for change in rows.rows(&plan.source)? {
                        stats.rows_in += 1;
                        if let Some(op) = plan.target_op(change?) {
                            match target.as_mut() {
                                Some(target) => target.apply(&op)?,
                                None => drop(std::hint::black_box(op)),
                            }
                            stats.rows_applied += 1;
                            in_batch += 1;
                        }
                    }
                    false
                }
                EventBody::Xid { .. } => true,
                EventBody::Query { ref sql, .. } => sql.eq_ignore_ascii_case("COMMIT"),
                _ => false,
            };
            if end_of_txn {
                if let Some(g) = gtid.take() {
                    position.advance(g);
                }
                if let Some(target) = target.as_mut().filter(|_| in_batch >= batch_rows) {
                    commit(target, &position, commit_unix)?;
                    stats.commits += 1;
                    in_batch = 0;
                    target.begin()?;
                }
            }
        }
    }
    if let Some(target) = target.as_mut() {
        commit(target, &position, commit_unix)?;
        stats.commits += 1;
    }
    Ok(stats)
}

fn commit(target: &mut SqliteTarget, position: &GtidPosition, commit_unix: u32) -> anyhow::Result<()> {
    target.commit(&Checkpoint {
        position: position.clone().into(),
        applied: Vec::new(),
        source_commit_unix: commit_unix,
        writer: 0,
    })?;
    Ok(())
}

/// Every row change of the selected tables, with the index of its table's plans.
struct Decoded {
    /// Per table: (unfiltered plan, filtered plan).
    tables: Vec<(Arc<TablePlan>, Arc<TablePlan>)>,
    rows: Vec<(usize, RowChange)>,
}

fn decode_all(files: &[PathBuf], plain: &TableFilter, filtered: &TableFilter) -> anyhow::Result<Decoded> {
    let mut plain_plans = Plans::new(plain);
    let mut filtered_plans = Plans::new(filtered);
    let mut index: HashMap<*const TablePlan, usize> = HashMap::new();
    let mut out = Decoded {
        tables: Vec::new(),
        rows: Vec::new(),
    };
    for path in files {
        let mut reader = open(path)?;
        let mut decoder = EventDecoder::new();
        while let Some((offset, raw)) = reader.next_event()? {
            let event = decoder
                .decode(raw)
                .with_context(|| format!("binlog {} at offset {offset}", path.display()))?;
            match event.body {
                EventBody::TableMap(map) => {
                    plain_plans.on_table_map(&map)?;
                    filtered_plans.on_table_map(&map)?;
                }
                EventBody::Rows(rows) => {
                    let (Some(Some(p)), Some(Some(f))) = (
                        plain_plans.by_id.get(&rows.table_id),
                        filtered_plans.by_id.get(&rows.table_id),
                    ) else {
                        continue;
                    };
                    let t = *index.entry(Arc::as_ptr(p)).or_insert_with(|| {
                        out.tables.push((p.clone(), f.clone()));
                        out.tables.len() - 1
                    });
                    for change in rows.rows(&p.source)? {
                        out.rows.push((t, change?));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Applies the plan's transforms in place, to the source columns they belong to.
#[inline]
fn transform_image(plan: &TablePlan, row: &mut [Value]) {
    for (&i, t) in plan.source_columns.iter().zip(&plan.transforms) {
        if let Some(t) = t {
            let v = std::mem::replace(&mut row[i], Value::Null);
            row[i] = t.apply(v);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    /// Walk and drop the rows.
    Nothing,
    /// The filter only.
    Filter,
    /// The filter, then the transforms of the images that pass (as `TablePlan::target_op`).
    FilterTransform,
}

/// One timed pass over a fresh copy of the decoded rows.
fn timed_pass(decoded: &Decoded, work: Work) -> (Span, u64) {
    let rows = decoded.rows.clone();
    let plans: Vec<&TablePlan> = decoded.tables.iter().map(|(_, f)| &**f).collect();
    let mut kept = 0u64;
    let watch = Stopwatch::start();
    for (t, change) in rows {
        let plan = plans[t];
        match (work, change) {
            (Work::Nothing, change) => {
                std::hint::black_box(&change);
            }
            (_, RowChange::Insert(mut row) | RowChange::Delete(mut row)) => {
                if plan.passes(&row) {
                    kept += 1;
                    if work == Work::FilterTransform {
                        transform_image(plan, &mut row);
                    }
                }
                std::hint::black_box(&row);
            }
            (_, RowChange::Update { mut before, mut after }) => {
                let (b, a) = (plan.passes(&before), plan.passes(&after));
                kept += u64::from(b || a);
                if work == Work::FilterTransform {
                    if b {
                        transform_image(plan, &mut before);
                    }
                    if a {
                        transform_image(plan, &mut after);
                    }
                }
                std::hint::black_box((&before, &after));
            }
        }
    }
    (watch.stop(), std::hint::black_box(kept))
}

pub fn run(
    files: &[PathBuf],
    config: Option<&Path>,
    dir: Option<PathBuf>,
    batch_rows: usize,
    repeat: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    let (plain, filtered, rules) = filters(config)?;
    let tmp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let (plain_db, filtered_db) = (dir.join("unfiltered.sqlite"), dir.join("filtered.sqlite"));

    // 1. decode + apply, unfiltered and filtered, runs interleaved.
    let (mut apply_plain, mut apply_filtered) = (Vec::new(), Vec::new());
    let (mut plain_stats, mut filtered_stats) = Default::default();
    for _ in 0..repeat {
        let watch = Stopwatch::start();
        plain_stats = pipeline(files, &plain, Some(&plain_db), batch_rows)?;
        apply_plain.push(watch.stop());
        let watch = Stopwatch::start();
        filtered_stats = pipeline(files, &filtered, Some(&filtered_db), batch_rows)?;
        apply_filtered.push(watch.stop());
    }
    let (apply_plain, apply_filtered) = (median(&apply_plain), median(&apply_filtered));

    // 2. filter + transform in the pipeline, rows hot from decoding: decode + project with
    //    and without them, paired runs; the figure is the median of the paired differences.
    let (mut project_plain, mut project_filtered, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(3) {
        let watch = Stopwatch::start();
        pipeline(files, &plain, None, batch_rows)?;
        let a = watch.stop();
        let watch = Stopwatch::start();
        pipeline(files, &filtered, None, batch_rows)?;
        let b = watch.stop();
        project_plain.push(a);
        project_filtered.push(b);
        diffs.push(b.cpu_s - a.cpu_s);
    }
    diffs.sort_by(f64::total_cmp);
    let ft_s = diffs[diffs.len() / 2].max(0.0);
    let (project_plain, project_filtered) = (median(&project_plain), median(&project_filtered));

    // 3. The same work alone over rows decoded beforehand (cold in cache: an upper bound).
    let decoded = decode_all(files, &plain, &filtered)?;
    let passes = |work| -> (Span, u64) {
        let runs: Vec<(Span, u64)> = (0..repeat).map(|_| timed_pass(&decoded, work)).collect();
        (median(&runs.iter().map(|r| r.0).collect::<Vec<_>>()), runs[0].1)
    };
    let (base, _) = passes(Work::Nothing);
    let (filter_only, kept) = passes(Work::Filter);
    let (filter_transform, _) = passes(Work::FilterTransform);
    let rows = decoded.rows.len() as u64;
    let cold_filter_s = (filter_only.cpu_s - base.cpu_s).max(0.0);
    let cold_ft_s = (filter_transform.cpu_s - base.cpu_s).max(0.0);

    let share = 100.0 * ft_s / apply_plain.cpu_s;
    let cold_share = 100.0 * cold_ft_s / apply_plain.cpu_s;
    let met = share < 10.0;
    let ns_per_row = |s: f64| 1e9 * s / rows as f64;
    println!(
        "filter_cost decode_apply_s={:.3} filter_transform_s={ft_s:.3} share={share:.1}% goal=<10% met={}",
        apply_plain.cpu_s,
        if met { "yes" } else { "no" }
    );
    println!(
        "filter_cost_detail rows={rows} rows_kept={kept} filter_transform_ns_per_row={:.0} \
         decode_project_s={:.3} decode_filter_transform_project_s={:.3} \
         isolated_cold_filter_s={cold_filter_s:.3} isolated_cold_filter_transform_s={cold_ft_s:.3} \
         isolated_cold_share={cold_share:.1}%",
        ns_per_row(ft_s),
        project_plain.cpu_s,
        project_filtered.cpu_s,
    );
    println!(
        "filter_cost_pipelines target=sqlite(WAL,synchronous=NORMAL) batch_rows={batch_rows} \
         unfiltered_cpu_s={:.3} unfiltered_wall_s={:.3} unfiltered_rows_applied={} \
         filtered_cpu_s={:.3} filtered_wall_s={:.3} filtered_rows_applied={} rows_in={}",
        apply_plain.cpu_s,
        apply_plain.wall_s,
        plain_stats.rows_applied,
        apply_filtered.cpu_s,
        apply_filtered.wall_s,
        filtered_stats.rows_applied,
        plain_stats.rows_in
    );
    if json_out {
        println!(
            "{}",
            json!({
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "rules": rules,
                "target": "sqlite (WAL, synchronous=NORMAL)",
                "batch_rows": batch_rows,
                "runs": repeat,
                "rows": rows,
                "rows_kept_by_filter": kept,
                "decode_apply_cpu_s": apply_plain.cpu_s,
                "decode_apply_wall_s": apply_plain.wall_s,
                "decode_apply_rows_applied": plain_stats.rows_applied,
                "decode_apply_commits": plain_stats.commits,
                "filtered_decode_apply_cpu_s": apply_filtered.cpu_s,
                "filtered_decode_apply_wall_s": apply_filtered.wall_s,
                "filtered_rows_applied": filtered_stats.rows_applied,
                "decode_project_cpu_s": project_plain.cpu_s,
                "decode_filter_transform_project_cpu_s": project_filtered.cpu_s,
                "paired_differences_cpu_s": diffs,
                "filter_transform_cpu_s": ft_s,
                "filter_transform_ns_per_row": ns_per_row(ft_s),
                "share_percent": share,
                "goal_percent": 10.0,
                "goal_met": met,
                "isolated_cold_walk_cpu_s": base.cpu_s,
                "isolated_cold_filter_cpu_s": cold_filter_s,
                "isolated_cold_filter_transform_cpu_s": cold_ft_s,
                "isolated_cold_share_percent": cold_share,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_and_select_sysbench_tables() {
        let (plain, filtered, rules) = filters(None).expect("built-in configs are valid");
        assert!(plain.is_selected("sbtest", "sbtest1"));
        assert!(filtered.is_selected("sbtest", "sbtest4"));
        assert!(!filtered.is_selected("shop", "orders"));
        assert_eq!(rules[0]["where"], BUILTIN_WHERE);
    }
}
