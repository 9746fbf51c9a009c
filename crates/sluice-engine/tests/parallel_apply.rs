//! Proof for parallel apply: random workloads full of key conflicts (hot rows, key changes,
//! deletes and re-inserts), applied by N writers into a real target, equal the serial
//! result — also when a fault is injected at a random point (before a write, before a commit,
//! right after a commit) and sluice restarts from the checkpoint the target holds; backfill
//! chunks mixed into the stream go to writers of their own and must never overwrite a newer
//! row nor be overwritten by an older one. SQLite,
//! and the server targets (MariaDB, PostgreSQL: throwaway servers from sluice-testkit), whose
//! writers send row changes as multi-row statements. Both commit orders (`[apply]
//! commit_order`, "source" and "key") are exercised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use proptest::prelude::*;
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Gtid, Value};
use sluice_engine::apply::{run_applier, ApplyMsg, BatchPolicy, CommitOrder, Connections, Progress};
use sluice_engine::config::MismatchPolicy;
use sluice_engine::target::mariadb::MariaDbTarget;
use sluice_engine::target::postgres::PostgresTarget;
use sluice_engine::target::sqlite::SqliteTarget;
use sluice_engine::target::{
    BackfillProgress, Checkpoint, RowOp, RowSelection, Target, TargetColumn, TargetResult, TargetTable,
};
use sluice_engine::verify::incremental::IncrementalPolicy;
use sluice_testkit::{MariaDb, PostgresServer};

static MARIADB: Mutex<Option<Arc<MariaDb>>> = Mutex::new(None);
static POSTGRES: Mutex<Option<Arc<PostgresServer>>> = Mutex::new(None);

/// The process-wide server in `slot`, started on first use.
fn shared<T>(slot: &'static Mutex<Option<Arc<T>>>, start: fn() -> T) -> Arc<T> {
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(server) = guard.as_ref() {
        return Arc::clone(server);
    }
    static CLEANUP: Once = Once::new();
    // SAFETY: registers a plain `extern "C"` function; atexit has no other preconditions.
    CLEANUP.call_once(|| unsafe {
        libc::atexit(stop_shared_servers);
    });
    let server = Arc::new(start());
    *guard = Some(Arc::clone(&server));
    server
}

/// Statics are never dropped: stop the shared servers (and delete their directories) when
/// the test process exits.
extern "C" fn stop_shared_servers() {
    let mariadb = MARIADB.lock().ok().and_then(|mut slot| slot.take());
    drop(mariadb);
    let postgres = POSTGRES.lock().ok().and_then(|mut slot| slot.take());
    drop(postgres);
}

/// Where one test case's target lives: a fresh SQLite file, MariaDB database or PostgreSQL
/// schema.
enum Place {
    Sqlite(PathBuf),
    MariaDb {
        server: Arc<MariaDb>,
        database: String,
    },
    Postgres {
        server: Arc<PostgresServer>,
        schema: String,
    },
}

fn fresh_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("pa{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Place {
    fn mariadb() -> Place {
        Place::MariaDb {
            server: shared(&MARIADB, MariaDb::start),
            database: fresh_name(),
        }
    }

    fn postgres() -> Place {
        Place::Postgres {
            server: shared(&POSTGRES, PostgresServer::start),
            schema: fresh_name(),
        }
    }

    fn open(&self) -> Box<dyn Target> {
        match self {
            Place::Sqlite(path) => Box::new(SqliteTarget::open(path).unwrap()),
            Place::MariaDb { server, database } => {
                Box::new(MariaDbTarget::connect(&format!("{}?prefer_socket=false", server.url()), database).unwrap())
            }
            Place::Postgres { server, schema } => {
                Box::new(PostgresTarget::connect(&server.conn_string(), schema).unwrap())
            }
        }
    }
}

fn column(name: &str) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        kind: ColumnKind::BigInt,
        binlog_type: 8,
        meta: 0,
        unsigned: false,
        nullable: false,
        charset: Charset::Binary,
        labels: Vec::new(),
        precision: 0,
        scale: 0,
        fsp: 0,
        length: 0,
    }
}

fn table() -> Arc<TargetTable> {
    Arc::new(TargetTable {
        source_name: "src.t".into(),
        name: "t".into(),
        columns: ["k", "v"]
            .iter()
            .map(|n| TargetColumn {
                name: (*n).into(),
                source: column(n),
            })
            .collect(),
        key: vec![0],
        rules: String::new(),
    })
}

/// Where a fault fires: the Nth call of a kind, counted over all writers of one run.
#[derive(Clone, Copy, Debug)]
enum Fault {
    BeforeApply(usize),
    BeforeCommit(usize),
    AfterCommit(usize),
}

/// A real SQLite target that fails once at the planned point, as a crash would: the open
/// transaction is lost (or, after a commit, the commit stands but the process dies).
struct Faulty {
    inner: Box<dyn Target>,
    fault: Option<Fault>,
    applies: Arc<AtomicUsize>,
    commits: Arc<AtomicUsize>,
}

fn crash() -> sluice_engine::target::TargetError {
    sluice_engine::target::TargetError::Other("injected crash".into())
}

impl Target for Faulty {
    fn prepare(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        self.inner.prepare(tables)
    }
    fn load_checkpoint(&mut self) -> TargetResult<Option<Checkpoint>> {
        self.inner.load_checkpoint()
    }
    fn begin(&mut self) -> TargetResult<()> {
        self.inner.begin()
    }
    fn single_writer(&self) -> bool {
        self.inner.single_writer()
    }
    fn apply(&mut self, op: &RowOp) -> TargetResult<()> {
        let n = self.applies.fetch_add(1, Ordering::SeqCst);
        if matches!(self.fault, Some(Fault::BeforeApply(at)) if at == n) {
            return Err(crash());
        }
        self.inner.apply(op)
    }
    /// Passed on whole (so the target's own `apply_all` runs), up to the planned fault.
    fn apply_all(&mut self, ops: &[RowOp]) -> TargetResult<()> {
        let first = self.applies.fetch_add(ops.len(), Ordering::SeqCst);
        if let Some(Fault::BeforeApply(at)) = self.fault {
            if (first..first + ops.len()).contains(&at) {
                self.inner.apply_all(&ops[..at - first])?;
                return Err(crash());
            }
        }
        self.inner.apply_all(ops)
    }
    fn commit(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst);
        if matches!(self.fault, Some(Fault::BeforeCommit(at)) if at == n) {
            return Err(crash());
        }
        self.inner.commit(checkpoint)?;
        if matches!(self.fault, Some(Fault::AfterCommit(at)) if at == n) {
            return Err(crash());
        }
        Ok(())
    }
    fn rollback(&mut self) -> TargetResult<()> {
        self.inner.rollback()
    }
    fn read_rows(&mut self, table: &Arc<TargetTable>, selection: RowSelection<'_>) -> TargetResult<Vec<Vec<Value>>> {
        self.inner.read_rows(table, selection)
    }
    fn column_gaps(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
        self.inner.column_gaps(tables)
    }
    fn record_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        self.inner.record_backfill(progress)
    }
    fn load_backfill(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        self.inner.load_backfill()
    }
    fn record_readiness(
        &mut self,
        table: &str,
        rows: &[sluice_engine::target::Readiness],
        replace: bool,
    ) -> TargetResult<()> {
        self.inner.record_readiness(table, rows, replace)
    }
    fn readiness_copied(&mut self, table: &str) -> TargetResult<()> {
        self.inner.readiness_copied(table)
    }
    fn load_readiness(&mut self) -> TargetResult<Vec<sluice_engine::target::ReadinessRow>> {
        self.inner.load_readiness()
    }
    fn recorded_tables(&mut self) -> TargetResult<Vec<String>> {
        self.inner.recorded_tables()
    }
    fn recorded_rules(&mut self) -> TargetResult<std::collections::HashMap<String, Option<String>>> {
        self.inner.recorded_rules()
    }
    fn drop_table(&mut self, name: &str) -> TargetResult<()> {
        self.inner.drop_table(name)
    }
    fn empty_table(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        self.inner.empty_table(table)
    }
    fn commit_without_checkpoint(&mut self) -> TargetResult<()> {
        self.inner.commit_without_checkpoint()
    }
    fn record_verified(&mut self, record: &sluice_engine::target::VerifiedRecord) -> TargetResult<()> {
        self.inner.record_verified(record)
    }
    fn load_verified(&mut self) -> TargetResult<Option<sluice_engine::target::VerifiedRecord>> {
        self.inner.load_verified()
    }
}

/// A source history: transactions of row changes that are valid in order (a model of the
/// source table is kept while generating), with the final state.
struct History {
    txns: Vec<Vec<RowOp>>,
    /// The source table after each transaction (what a backfill chunk read there holds).
    states: Vec<BTreeMap<i64, i64>>,
    final_state: BTreeMap<i64, i64>,
}

fn history(seed_ops: &[(u8, u8, u8)], txn_sizes: &[u8]) -> History {
    let t = table();
    let mut state: BTreeMap<i64, i64> = BTreeMap::new();
    let mut ops_iter = seed_ops.iter();
    let mut txns = Vec::new();
    let mut states = Vec::new();
    for &size in txn_sizes {
        let mut ops = Vec::new();
        for _ in 0..size {
            let Some(&(kind, a, b)) = ops_iter.next() else { break };
            // A small key space (0..12) makes conflicts and hot rows the norm.
            let k = i64::from(a % 12);
            let v = i64::from(b);
            let row = |k: i64, v: i64| vec![Value::Int(k), Value::Int(v)];
            match (kind % 4, state.get(&k).copied()) {
                (_, None) => {
                    state.insert(k, v);
                    ops.push(RowOp::Insert {
                        table: t.clone(),
                        row: row(k, v),
                    });
                }
                (0 | 1, Some(old)) => {
                    state.insert(k, v);
                    ops.push(RowOp::Update {
                        table: t.clone(),
                        before: row(k, old),
                        after: row(k, v),
                    });
                }
                (2, Some(old)) => {
                    state.remove(&k);
                    ops.push(RowOp::Delete {
                        table: t.clone(),
                        row: row(k, old),
                    });
                }
                (_, Some(old)) => {
                    let to = i64::from(b % 12) + 100;
                    if let std::collections::btree_map::Entry::Vacant(e) = state.entry(to) {
                        e.insert(old);
                        state.remove(&k);
                        ops.push(RowOp::Update {
                            table: t.clone(),
                            before: row(k, old),
                            after: row(to, old),
                        });
                    }
                }
            }
        }
        txns.push(ops);
        states.push(state.clone());
    }
    History {
        txns,
        states,
        final_state: state,
    }
}

fn gtid(i: usize) -> Gtid {
    Gtid {
        domain: 0,
        server: 1,
        sequence: i as u64 + 1,
    }
}

/// One run of the applier from the target's checkpoint; returns whether it ended cleanly.
fn run_once(
    place: &Place,
    history: &History,
    writers: usize,
    policy: BatchPolicy,
    fault: Option<Fault>,
    large_every: usize,
    chunk_every: usize,
) -> bool {
    let applies = Arc::new(AtomicUsize::new(0));
    let commits = Arc::new(AtomicUsize::new(0));
    let mut first = place.open();
    first.prepare(&[table()]).unwrap();
    let start = first.load_checkpoint().unwrap().unwrap_or_default();
    drop(first);
    let targets: Vec<Box<dyn Target>> = (0..writers)
        .map(|_| {
            Box::new(Faulty {
                inner: place.open(),
                fault,
                applies: applies.clone(),
                commits: commits.clone(),
            }) as Box<dyn Target>
        })
        .collect();
    // Backfill writers (faulty too) when chunks are mixed in.
    let backfill_targets: Vec<Box<dyn Target>> = (0..if chunk_every > 0 { 1 + writers % 2 } else { 0 })
        .map(|_| {
            Box::new(Faulty {
                inner: place.open(),
                fault,
                applies: applies.clone(),
                commits: commits.clone(),
            }) as Box<dyn Target>
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let progress = Progress::default();
    let failed = tokio::sync::Notify::new();
    let start_cp = start.clone();
    std::thread::scope(|s| {
        // Incremental verification on, failing closed: a clean run must never see a mismatch.
        let verifier: Box<dyn Target> = place.open();
        let verify_policy = IncrementalPolicy {
            on_mismatch: MismatchPolicy::Stop,
            max_rows_per_group: 100_000,
        };
        let (progress, failed) = (&progress, &failed);
        let applier = s.spawn(move || {
            let connections = Connections {
                writers: targets,
                backfill_writers: backfill_targets,
                verifier: Some((verifier, verify_policy)),
            };
            run_applier(connections, rx, policy, start_cp, progress, failed)
        });
        for (i, ops) in history.txns.iter().enumerate() {
            if start.covers(gtid(i)) {
                continue;
            }
            let msgs = if large_every > 0 && i % large_every == large_every - 1 && ops.len() > 1 {
                // Stream it as a large transaction in chunks of one row.
                let mut msgs = vec![ApplyMsg::LargeStart {
                    gtid: gtid(i).into(),
                    commit_unix: 0,
                    ops: vec![ops[0].clone()],
                }];
                msgs.extend(ops[1..].iter().map(|op| ApplyMsg::LargeRows(vec![op.clone()])));
                msgs.push(ApplyMsg::LargeEnd);
                msgs
            } else {
                vec![ApplyMsg::Txn {
                    gtid: gtid(i).into(),
                    commit_unix: 0,
                    ops: ops.clone(),
                }]
            };
            for m in msgs {
                if tx.blocking_send(m).is_err() {
                    break;
                }
            }
            if chunk_every > 0 && i % chunk_every == chunk_every - 1 {
                // A backfill chunk read right here: the rows of half the key space as the
                // source holds them after transaction i (its watermark window closed here).
                // After a restart, a chunk older than what the target already holds is never
                // sent: a real restart reads its chunks anew.
                if (i + 1..history.txns.len()).any(|j| start.covers(gtid(j))) {
                    continue;
                }
                let t = table();
                let half = (i / chunk_every).is_multiple_of(2);
                let ops: Vec<RowOp> = history.states[i]
                    .iter()
                    .filter(|(k, _)| (**k % 2 == 0) == half)
                    .map(|(k, v)| RowOp::Insert {
                        table: t.clone(),
                        row: vec![Value::Int(*k), Value::Int(*v)],
                    })
                    .collect();
                let progress = BackfillProgress {
                    table: t.name.clone(),
                    last_key: Some(format!("[{i}]")),
                    rows_copied: ops.len() as u64,
                    ..BackfillProgress::default()
                };
                if tx
                    .blocking_send(ApplyMsg::Chunk {
                        ops,
                        progress,
                        fill: None,
                        in_flight: None,
                    })
                    .is_err()
                {
                    break;
                }
            }
        }
        drop(tx);
        applier.join().unwrap().is_ok()
    })
}

fn target_state(place: &Place) -> BTreeMap<i64, i64> {
    let all = RowSelection::KeyRange {
        after: None,
        upto: None,
        limit: 100_000,
    };
    let rows = place.open().read_rows(&table(), all).unwrap();
    let int = |v: &Value| match v {
        Value::Int(i) => *i,
        Value::Text(s) => s.parse().unwrap(),
        other => panic!("unexpected value {other:?}"),
    };
    rows.iter().map(|r| (int(&r[0]), int(&r[1]))).collect()
}

#[allow(clippy::too_many_arguments)]
fn check_case(
    place: &Place,
    seed_ops: &[(u8, u8, u8)],
    txn_sizes: &[u8],
    writers: usize,
    max_rows: usize,
    fault_kind: u8,
    fault_at: usize,
    large_every: usize,
    chunk_every: usize,
    source_order: bool,
) -> Result<(), TestCaseError> {
    let history = history(seed_ops, txn_sizes);
    let policy = BatchPolicy {
        max_rows,
        max_delay: Duration::from_millis(2),
        commit_order: if source_order {
            CommitOrder::Source
        } else {
            CommitOrder::Key
        },
    };
    let fault = match fault_kind {
        0 => None,
        1 => Some(Fault::BeforeApply(fault_at)),
        2 => Some(Fault::BeforeCommit(fault_at)),
        _ => Some(Fault::AfterCommit(fault_at)),
    };
    // First run may crash; then restart (no fault) until a clean run.
    let mut clean = run_once(place, &history, writers, policy, fault, large_every, chunk_every);
    let mut restarts = 0;
    while !clean {
        restarts += 1;
        prop_assert!(restarts < 5, "no clean run after restarts");
        clean = run_once(place, &history, writers, policy, None, large_every, chunk_every);
    }
    prop_assert_eq!(target_state(place), history.final_state.clone());
    let cp = place.open().load_checkpoint().unwrap().unwrap();
    // The checkpoint covers exactly the history: every transaction, nothing beyond it.
    for i in 0..history.txns.len() {
        prop_assert!(cp.covers(gtid(i)), "checkpoint {:?} misses {}", cp, gtid(i));
    }
    prop_assert!(!cp.covers(gtid(history.txns.len())));
    // Every transaction's rows were read back and found as written.
    let verified = place.open().load_verified().unwrap().unwrap_or_default();
    prop_assert_eq!(verified.mismatches, 0);
    // The verified mark reaches the applied low-water mark (GTIDs applied beyond it by a
    // run that crashed are not re-read after the restart; `sluice verify` covers those).
    prop_assert!(
        verified.position.covers(&cp.position),
        "verified {} vs checkpoint {:?}",
        verified.position,
        cp
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn parallel_apply_with_crashes_equals_serial_apply(
        seed_ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 20..160),
        txn_sizes in proptest::collection::vec(0u8..5, 10..60),
        writers in 1usize..5,
        max_rows in 1usize..20,
        fault_kind in 0u8..4,
        fault_at in 0usize..40,
        large_every in 0usize..6,
        chunk_every in 0usize..5,
        source_order in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let place = Place::Sqlite(dir.path().join("t.sqlite"));
        check_case(&place, &seed_ops, &txn_sizes, writers, max_rows, fault_kind, fault_at, large_every, chunk_every, source_order)?;
    }
}

// The server targets: fewer cases (each opens several connections to a real server), larger
// groups so that multi-row statements carry repeated keys, key changes and re-inserts.
proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn parallel_apply_into_mariadb_with_crashes_equals_serial_apply(
        seed_ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 20..300),
        txn_sizes in proptest::collection::vec(0u8..8, 10..60),
        writers in 1usize..5,
        max_rows in 1usize..80,
        fault_kind in 0u8..4,
        fault_at in 0usize..40,
        large_every in 0usize..6,
        chunk_every in 0usize..5,
        source_order in any::<bool>(),
    ) {
        let place = Place::mariadb();
        check_case(&place, &seed_ops, &txn_sizes, writers, max_rows, fault_kind, fault_at, large_every, chunk_every, source_order)?;
    }

    #[test]
    fn parallel_apply_into_postgres_with_crashes_equals_serial_apply(
        seed_ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 20..300),
        txn_sizes in proptest::collection::vec(0u8..8, 10..60),
        writers in 1usize..5,
        max_rows in 1usize..80,
        fault_kind in 0u8..4,
        fault_at in 0usize..40,
        large_every in 0usize..6,
        chunk_every in 0usize..5,
        source_order in any::<bool>(),
    ) {
        let place = Place::postgres();
        check_case(&place, &seed_ops, &txn_sizes, writers, max_rows, fault_kind, fault_at, large_every, chunk_every, source_order)?;
    }
}
