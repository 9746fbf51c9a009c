//! The server targets (MariaDB and PostgreSQL) as one piece of code: [`ServerTarget`] over a
//! [`Client`], which says how the server's dialect spells things ([`Dialect`]) and how its
//! client crate binds, sends and reads values.
//!
//! Both servers are reached over a network connection with prepared statements, so they
//! share everything above the wire: the transaction state machine, row changes buffered and
//! sent as multi-row statements (`super::batch`), statement texts built from quoted
//! identifiers and bound values, the bookkeeping tables `_sluice_*`, `prepare`'s checks, and
//! the read-back for verification. What differs is behind the two traits: identifier quoting,
//! placeholders (`?` or `$n`), the upsert clause, column types, how a value is bound and read,
//! how the connection runs a statement, and what a failed statement does to the open
//! transaction (see [`Client::TRANSACTIONAL_DDL`] and [`Client::may_have_table`]). SQLite is
//! in-process and writes row by row; it shares only `super::common`.
//!
//! Every statement quotes its identifiers with [`Dialect::quote`] and binds every value; a
//! multi-row statement's text depends only on the table and its number of rows.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_binlog::{ColumnDef, ColumnKind, Value};

use super::batch::{chunk_sizes, key_identity, value_bytes, Pending, BATCH_SIZES};
use super::common::{
    backfill_detail_to_db, backfill_from_row, check_fill_columns, check_row_len, check_table_shape,
    checkpoint_from_rows, definition_json, fill_columns_sql, missing_columns, plan_is_current, rows_copied_to_db,
    unix_now, verified_from_row, TxProtocol, TxState, BACKFILL_TABLE,
};
use super::{
    number_placeholders, selection_condition, selection_value, BackfillProgress, Checkpoint, Readiness, ReadinessRow,
    ReadinessState, RowOp, RowSelection, SqlChecksum, Target, TargetColumn, TargetError, TargetResult, TargetTable,
    VerifiedRecord, READINESS_TABLE,
};

const CHECKPOINT_TABLE: &str = "_sluice_checkpoint";
const TABLES_TABLE: &str = "_sluice_tables";
const LAG_TABLE: &str = "_sluice_lag";
const VERIFIED_TABLE: &str = "_sluice_verified";

/// sluice's own tables in a server target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bookkeeping {
    /// `_sluice_checkpoint`: one record per writer (see [`Checkpoint`]).
    Checkpoint,
    /// `_sluice_tables`: the source table and column definitions of each target table.
    Tables,
    /// `_sluice_backfill`: each table's copy progress.
    Backfill,
    /// `_sluice_lag`: the lag percentiles writer 0 records.
    Lag,
    /// `_sluice_verified`: the incremental verifier's record, created by its first write.
    Verified,
    /// `_sluice_readiness`: what edge applications may rely on, per table and column.
    Readiness,
}

impl Bookkeeping {
    /// The tables [`Target::prepare`] creates.
    const PREPARED: [Bookkeeping; 5] = [
        Bookkeeping::Checkpoint,
        Bookkeeping::Tables,
        Bookkeeping::Backfill,
        Bookkeeping::Lag,
        Bookkeeping::Readiness,
    ];

    pub(super) fn table(self) -> &'static str {
        match self {
            Bookkeeping::Checkpoint => CHECKPOINT_TABLE,
            Bookkeeping::Tables => TABLES_TABLE,
            Bookkeeping::Backfill => BACKFILL_TABLE,
            Bookkeeping::Lag => LAG_TABLE,
            Bookkeeping::Verified => VERIFIED_TABLE,
            Bookkeeping::Readiness => READINESS_TABLE,
        }
    }
}

/// How a server's SQL is spelt: text only, no connection.
pub trait Dialect {
    /// The server's name, for messages.
    const PRODUCT: &'static str;
    /// Starts a transaction.
    const BEGIN: &'static str;
    /// How a target table is created (`CREATE TABLE` or `CREATE TABLE IF NOT EXISTS`), and
    /// the options that follow its column list.
    const CREATE_TABLE: &'static str;
    const TABLE_OPTIONS: &'static str;
    /// What follows a nullable column's type (` NULL`, or nothing).
    const NULLABLE: &'static str;
    /// What follows a text column in `ORDER BY` so that it sorts by bytes.
    const BYTE_ORDER: &'static str;

    /// Quotes an identifier.
    fn quote(name: &str) -> String;

    /// The n-th (1-based) placeholder of a statement.
    fn placeholder(n: usize) -> String;

    /// What follows `INSERT INTO t (…) VALUES (…), …` so that a row whose `key` (quoted
    /// columns) exists is replaced: every column of `others` set from the new row, or the row
    /// left as it is when `others` is empty.
    fn upsert_clause(key: &[String], others: &[String]) -> String;

    /// Refuses a database, schema, table or column name the server cannot hold exactly.
    fn check_identifier(what: &str, name: &str) -> Result<(), String>;

    /// The target column type for a source column (docs/type-mapping.md); `key` columns may
    /// need a bounded type.
    fn column_type(column: &ColumnDef, key: bool) -> String;

    /// The expression that reads a (quoted) column back for verification.
    fn verify_select(column: &ColumnDef, quoted: &str) -> String {
        let _ = column;
        quoted.to_owned()
    }

    /// The SQL checksum statement (see [`Target::sql_checksum`]), where the server's stored
    /// text forms match a MariaDB source's; `None` otherwise.
    fn checksum_select(columns: &[(String, ColumnKind)], from: &str, condition: &str) -> Option<String> {
        let _ = (columns, from, condition);
        None
    }
}

/// Why a value can't be bound.
pub enum Refusal {
    /// The value's variant doesn't belong in the column.
    WrongKind,
    /// The value is valid for the source but the server can't represent it.
    Unrepresentable(&'static str),
}

/// A bookkeeping value (a boolean is bound as 0 or 1).
#[derive(Clone, Copy)]
pub enum Plain<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

/// A server's client crate behind [`ServerTarget`]: one connection, and how values travel
/// over it.
pub trait Client: Dialect + Send + Sized {
    /// A bound value, owned so that it can wait in the buffer of pending changes.
    type Param: Send;
    type Statement: Clone + Send;
    type Row;
    type Error;

    /// Whether DDL commits with the open transaction (PostgreSQL) rather than committing it
    /// implicitly (MariaDB). With transactional DDL, `prepare` outside a transaction runs in
    /// one of its own, all or nothing.
    const TRANSACTIONAL_DDL: bool;

    /// Whether the server's text can hold U+0000.
    const TEXT_HOLDS_NUL: bool;

    /// Runs a call that reaches the server (a client that cannot run on every thread moves it).
    fn run<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        f()
    }

    /// The database or schema written into, for messages.
    fn namespace(&self) -> &str;

    /// `table` qualified with the namespace where the connection doesn't imply it.
    fn qualified(&self, table: &str) -> String;

    /// Replaces the connection with a fresh one, set up like the first.
    fn reconnect(&mut self) -> Result<(), Self::Error>;

    /// Whether the client knows its connection is gone (besides errors it returned).
    fn is_closed(&self) -> bool {
        false
    }

    /// Runs statements without parameters or results (transaction control, DDL).
    fn batch(&mut self, sql: &str) -> Result<(), Self::Error>;

    fn prepare(&mut self, sql: &str) -> Result<Self::Statement, Self::Error>;

    /// Frees a prepared statement on the server.
    fn close(&mut self, statement: Self::Statement) {
        drop(statement);
    }

    fn exec(&mut self, statement: &Self::Statement, params: Vec<Self::Param>) -> Result<Vec<Self::Row>, Self::Error>;

    /// Prepares, runs and frees a one-off statement.
    fn exec_once(&mut self, sql: &str, params: Vec<Self::Param>) -> Result<Vec<Self::Row>, Self::Error>;

    /// Column names of every table in the namespace, in order.
    fn existing_columns(&mut self) -> Result<HashMap<String, Vec<String>>, Self::Error>;

    /// Creates the namespace when missing, as the first step of `prepare`.
    fn create_namespace(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Another connection to the same place, for DDL that must not end the open
    /// transaction where DDL commits it implicitly (see [`Client::TRANSACTIONAL_DDL`]).
    fn open_beside(&self) -> Result<Self, Self::Error>;

    /// `false` when bookkeeping `table` is known to be missing. A client whose failed
    /// statement leaves the open transaction usable may answer `true` and let the read
    /// report [`Client::is_missing_table`] instead.
    fn may_have_table(&mut self, table: &str) -> Result<bool, Self::Error>;

    /// The `CREATE TABLE IF NOT EXISTS` of a bookkeeping table.
    fn bookkeeping_ddl(&self, table: Bookkeeping) -> String;

    /// Adds `_sluice_backfill.detail` to a table created before it existed.
    fn add_backfill_detail(&self) -> String;

    /// Binds `value` for `column`.
    fn to_param(value: &Value, column: &ColumnDef) -> Result<Self::Param, Refusal>;

    /// Binds a key value a verification read got back from this target, when the target
    /// returns it in a form [`Client::to_param`] doesn't take (PostgreSQL: text).
    fn read_back_key(value: &Value) -> Option<Self::Param> {
        let _ = value;
        None
    }

    fn plain_param(value: Plain<'_>) -> Self::Param;

    /// A row read with [`Dialect::verify_select`] as values (`None` where a column came back
    /// as something unexpected).
    fn decode_row(row: Self::Row, columns: &[TargetColumn]) -> Vec<Option<Value>>;

    /// Column `i` of a result row as text (`Some(None)` for NULL); `None` when it isn't text.
    fn text_at(row: &Self::Row, i: usize) -> Option<Option<String>>;

    /// Column `i` of a result row as an integer (booleans as 0 or 1); `None` when it isn't one.
    fn int_at(row: &Self::Row, i: usize) -> Option<i128>;

    fn is_missing_table(e: &Self::Error) -> bool;

    /// Whether the connection is unusable after `e` and must be replaced.
    fn is_connection_lost(e: &Self::Error) -> bool;

    /// The error as a message without row values; `params` names the column each placeholder
    /// of the failed statement stands for, where known.
    fn describe(e: &Self::Error, params: &[&str]) -> String;
}

fn validate_table<D: Dialect>(table: &TargetTable) -> TargetResult<()> {
    let fail = |why: String| Err(TargetError::Other(format!("table {}: {why}", table.name)));
    if let Err(why) = D::check_identifier("table", &table.name) {
        return fail(why);
    }
    for column in &table.columns {
        if let Err(why) = D::check_identifier("column", &column.name) {
            return fail(why);
        }
    }
    check_table_shape(table)
}

/// `INSERT INTO table (columns…) VALUES (…) <upsert>` for a bookkeeping table keyed by its
/// first column: `fixed_key` is that column's literal value where the table holds one row,
/// `replace` whether an existing row is overwritten (or left as it is).
fn bookkeeping_upsert<C: Client>(
    client: &C,
    table: &str,
    columns: &[&str],
    fixed_key: Option<i64>,
    replace: bool,
) -> String {
    let quoted: Vec<String> = columns.iter().map(|c| C::quote(c)).collect();
    let values: Vec<String> = match fixed_key {
        Some(id) => std::iter::once(id.to_string())
            .chain((1..columns.len()).map(C::placeholder))
            .collect(),
        None => (1..=columns.len()).map(C::placeholder).collect(),
    };
    let others: &[String] = if replace { &quoted[1..] } else { &[] };
    format!(
        "INSERT INTO {} ({}) VALUES ({}){}",
        client.qualified(table),
        quoted.join(", "),
        values.join(", "),
        C::upsert_clause(&quoted[..1], others)
    )
}

fn db_error<C: Client>(operation: &'static str, table: &str, e: &C::Error) -> TargetError {
    TargetError::from_database(operation, table, C::describe(e, &[]), C::is_connection_lost(e))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum StmtKind {
    Upsert,
    Delete,
}

/// Everything sluice derives once per target table: column types and the pieces of its
/// statement texts.
struct TablePlan {
    table: Arc<TargetTable>,
    types: Vec<String>,
    /// `INSERT INTO t (c1, c2, …) VALUES `
    upsert_head: String,
    /// The upsert clause ([`Dialect::upsert_clause`]).
    upsert_tail: String,
    /// `DELETE FROM t WHERE `
    delete_head: String,
    /// The quoted key columns.
    key_cols: Vec<String>,
}

impl TablePlan {
    fn new<C: Client>(table: Arc<TargetTable>, client: &C) -> TargetResult<TablePlan> {
        validate_table::<C>(&table)?;
        let types: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| C::column_type(&c.source, table.key.contains(&i)))
            .collect();
        let name = client.qualified(&table.name);
        let cols: Vec<String> = table.columns.iter().map(|c| C::quote(&c.name)).collect();
        let key_cols: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        let non_key: Vec<String> = (0..cols.len())
            .filter(|i| !table.key.contains(i))
            .map(|i| cols[i].clone())
            .collect();
        Ok(TablePlan {
            upsert_head: format!("INSERT INTO {name} ({}) VALUES ", cols.join(", ")),
            upsert_tail: C::upsert_clause(&key_cols, &non_key),
            delete_head: format!("DELETE FROM {name} WHERE "),
            key_cols,
            table,
            types,
        })
    }

    /// Parameters per row of statement `kind`.
    fn params_per_row(&self, kind: StmtKind) -> usize {
        match kind {
            StmtKind::Upsert => self.table.columns.len(),
            StmtKind::Delete => self.table.key.len(),
        }
    }

    /// The text of statement `kind` for `rows` rows: one multi-row upsert (never two rows of
    /// one key, see `super::batch`), or a delete of `rows` keys (`k IN (…)`, or an OR of key
    /// equalities for a composite key).
    fn sql<D: Dialect>(&self, kind: StmtKind, rows: usize) -> String {
        let per_row = self.params_per_row(kind);
        let mut n = 0;
        let mut next = || {
            n += 1;
            D::placeholder(n)
        };
        match kind {
            StmtKind::Upsert => {
                let values: Vec<String> = (0..rows)
                    .map(|_| format!("({})", (0..per_row).map(|_| next()).collect::<Vec<_>>().join(", ")))
                    .collect();
                format!("{}{}{}", self.upsert_head, values.join(", "), self.upsert_tail)
            }
            StmtKind::Delete if per_row == 1 => {
                let list: Vec<String> = (0..rows).map(|_| next()).collect();
                format!("{}{} IN ({})", self.delete_head, self.key_cols[0], list.join(", "))
            }
            StmtKind::Delete => {
                let terms: Vec<String> = (0..rows)
                    .map(|_| {
                        let parts: Vec<String> = self.key_cols.iter().map(|c| format!("{c} = {}", next())).collect();
                        format!("({})", parts.join(" AND "))
                    })
                    .collect();
                format!("{}{}", self.delete_head, terms.join(" OR "))
            }
        }
    }

    /// The column names a statement's parameters stand for (`rows` rows), for messages.
    fn param_columns(&self, kind: StmtKind, rows: usize) -> Vec<&str> {
        let one: Vec<&str> = match kind {
            StmtKind::Upsert => self.table.columns.iter().map(|c| c.name.as_str()).collect(),
            StmtKind::Delete => self
                .table
                .key
                .iter()
                .map(|&k| self.table.columns[k].name.as_str())
                .collect(),
        };
        one.repeat(rows)
    }

    fn not_null(&self, i: usize) -> bool {
        !self.table.columns[i].source.nullable || self.table.key.contains(&i)
    }

    fn create_sql<C: Client>(&self, client: &C) -> String {
        let t = &self.table;
        let mut defs: Vec<String> = t
            .columns
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (c, ty))| {
                let null = if self.not_null(i) { " NOT NULL" } else { C::NULLABLE };
                format!("{} {ty}{null}", C::quote(&c.name))
            })
            .collect();
        defs.push(format!("PRIMARY KEY ({})", self.key_cols.join(", ")));
        format!(
            "{} {} (\n    {}\n){}",
            C::CREATE_TABLE,
            client.qualified(&t.name),
            defs.join(",\n    "),
            C::TABLE_OPTIONS
        )
    }

    /// Adds column `c` to the existing table, nullable: existing rows hold NULL until the
    /// column-only backfill.
    fn add_column_sql<C: Client>(&self, client: &C, c: usize) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {} {}{}",
            client.qualified(&self.table.name),
            C::quote(&self.table.columns[c].name),
            self.types[c],
            C::NULLABLE
        )
    }

    /// Converts `value` for column `i`, or names the column when the value doesn't fit.
    fn bind<C: Client>(&self, i: usize, value: &Value) -> TargetResult<C::Param> {
        let column = &self.table.columns[i].source;
        C::to_param(value, column).map_err(|refusal| {
            let prefix = format!(
                "table {}: column {} ({:?} stored as {})",
                self.table.name, self.table.columns[i].name, column.kind, self.types[i],
            );
            TargetError::Other(match refusal {
                Refusal::WrongKind => format!("{prefix} cannot hold a {} value", value.kind()),
                Refusal::Unrepresentable(what) => format!("{prefix} cannot store {what}"),
            })
        })
    }

    fn bind_row<C: Client>(&self, row: &[Value]) -> TargetResult<Vec<C::Param>> {
        self.check_len(row)?;
        row.iter().enumerate().map(|(i, v)| self.bind::<C>(i, v)).collect()
    }

    fn bind_key<C: Client>(&self, row: &[Value]) -> TargetResult<Vec<C::Param>> {
        self.check_len(row)?;
        self.table.key.iter().map(|&k| self.bind::<C>(k, &row[k])).collect()
    }

    /// The parameters of a [`RowSelection`]'s condition (see [`selection_condition`]).
    fn bind_selection<C: Client>(
        &self,
        selection: &RowSelection<'_>,
        binds: &[(usize, usize)],
    ) -> TargetResult<Vec<C::Param>> {
        binds
            .iter()
            .map(|&(tuple, k)| {
                let value = selection_value(selection, (tuple, k));
                match C::read_back_key(value) {
                    Some(param) => Ok(param),
                    None => self.bind::<C>(self.table.key[k], value),
                }
            })
            .collect()
    }

    fn check_len(&self, row: &[Value]) -> TargetResult<()> {
        check_row_len(&self.table, row)
    }
}

/// A server target: a MariaDB database or a PostgreSQL schema, through client `C`.
pub struct ServerTarget<C: Client> {
    pub(super) client: C,
    /// The connection failed and must be replaced.
    broken: bool,
    plans: HashMap<String, TablePlan>,
    /// Prepared row statements by (table, kind, rows per statement); at most
    /// `BATCH_SIZES.len()` per table and kind.
    statements: HashMap<(String, StmtKind, usize), C::Statement>,
    /// Row changes of the open transaction not yet sent (see `super::batch`), bound.
    pending: Pending<Vec<C::Param>>,
    checkpoint_statement: Option<C::Statement>,
    backfill_statement: Option<C::Statement>,
    /// Prepared verification reads by SQL text (see [`Target::read_rows`]); bounded.
    read_statements: HashMap<String, C::Statement>,
    state: TxState,
}

impl<C: Client> ServerTarget<C> {
    pub(super) fn new(client: C) -> Self {
        ServerTarget {
            client,
            broken: false,
            plans: HashMap::new(),
            statements: HashMap::new(),
            pending: Pending::default(),
            checkpoint_statement: None,
            backfill_statement: None,
            read_statements: HashMap::new(),
            state: TxState::Idle,
        }
    }

    /// Maps a client error, remembering when the connection itself failed.
    fn fail(&mut self, operation: &'static str, table: &str, e: &C::Error) -> TargetError {
        if C::is_connection_lost(e) {
            self.broken = true;
        }
        db_error::<C>(operation, table, e)
    }

    fn is_gone(&self) -> bool {
        self.broken || self.client.is_closed()
    }

    /// Replaces a failed connection (only ever called with no transaction open).
    fn ensure_connected(&mut self) -> TargetResult<()> {
        if !self.is_gone() {
            return Ok(());
        }
        if let Err(e) = self.client.reconnect() {
            return Err(db_error::<C>("reconnect", self.client.namespace(), &e));
        }
        // The old connection's statements died with it.
        self.statements.clear();
        self.checkpoint_statement = None;
        self.backfill_statement = None;
        self.read_statements.clear();
        self.broken = false;
        Ok(())
    }

    /// Connects when no transaction is open (a read inside one uses its connection as it is).
    fn connected_unless_open(&mut self) -> TargetResult<()> {
        if self.state == TxState::Open {
            Ok(())
        } else {
            self.ensure_connected()
        }
    }

    /// Before a read: inside the open transaction, the buffered changes are sent first (the
    /// read must see them); outside, the connection is made sure of.
    fn ready_to_read(&mut self) -> TargetResult<()> {
        if self.state == TxState::Open {
            self.flush_or_abandon()
        } else {
            self.ensure_connected()
        }
    }

    /// The plan for `table`, built on first use and rebuilt when the definition changes.
    fn plan(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        let fresh = !self
            .plans
            .get_mut(&table.name)
            .is_some_and(|plan| plan_is_current(&mut plan.table, table));
        if fresh {
            let plan = TablePlan::new(Arc::clone(table), &self.client)?;
            // Buffered rows were bound for the old definition: send them first.
            self.flush()?;
            for kind in [StmtKind::Upsert, StmtKind::Delete] {
                for size in BATCH_SIZES {
                    if let Some(stmt) = self.statements.remove(&(table.name.clone(), kind, size)) {
                        if !self.broken {
                            self.client.close(stmt);
                        }
                    }
                }
            }
            self.plans.insert(table.name.clone(), plan);
        }
        Ok(())
    }

    /// Executes the table's prepared statement `kind` for `rows` rows with `params`.
    fn execute(&mut self, name: &str, kind: StmtKind, rows: usize, params: Vec<C::Param>) -> TargetResult<()> {
        let operation = match kind {
            StmtKind::Upsert => "upsert",
            StmtKind::Delete => "delete",
        };
        let cache_key = (name.to_owned(), kind, rows);
        let stmt = match self.statements.get(&cache_key) {
            Some(stmt) => stmt.clone(),
            None => {
                let sql = self.plans[name].sql::<C>(kind, rows);
                let stmt = match self.client.prepare(&sql) {
                    Ok(stmt) => stmt,
                    Err(e) => return Err(self.fail(operation, name, &e)),
                };
                self.statements.insert(cache_key, stmt.clone());
                stmt
            }
        };
        match self.client.exec(&stmt, params) {
            Ok(_) => Ok(()),
            Err(e) => {
                let lost = C::is_connection_lost(&e);
                if lost {
                    self.broken = true;
                }
                Err(TargetError::from_database(
                    operation,
                    name,
                    C::describe(&e, &self.plans[name].param_columns(kind, rows)),
                    lost,
                ))
            }
        }
    }

    /// Buffers one row change (see `super::batch`), flushing when the buffer is full. Values
    /// are bound now, so a value the column can't hold fails here.
    fn apply_op(&mut self, op: &RowOp) -> TargetResult<()> {
        let table = op.table();
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let name = table.name.as_str();
        let key_of = |row: &[Value]| key_identity(plan.table.key.iter().map(|&k| &row[k]));
        let bytes = |row: &[Value]| row.iter().map(value_bytes).sum::<usize>();
        match op {
            RowOp::Insert { row, .. } => {
                let values = plan.bind_row::<C>(row)?;
                self.pending.upsert(name, key_of(row), values, bytes(row));
            }
            RowOp::Delete { row, .. } => {
                let key = plan.bind_key::<C>(row)?;
                self.pending.delete(name, key_of(row), key, 0);
            }
            RowOp::Update { before, after, .. } => {
                plan.check_len(before)?;
                let values = plan.bind_row::<C>(after)?;
                let key_unchanged = plan.table.key.iter().all(|&k| before[k] == after[k]);
                if !key_unchanged {
                    let old_key = plan.bind_key::<C>(before)?;
                    self.pending.delete(name, key_of(before), old_key, 0);
                }
                // Updates in place, or writes the row whole when the target lacks it.
                self.pending.upsert(name, key_of(after), values, bytes(after));
            }
        }
        if self.pending.is_full() {
            self.flush()?;
        }
        Ok(())
    }

    /// One row's column-only backfill write, after the buffered changes (per-key order).
    /// One statement per row: it must not insert a row the target lacks, which the
    /// multi-row upserts would.
    fn fill_columns_now(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        check_fill_columns(table, columns)?;
        self.flush()?;
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        plan.check_len(row)?;
        let mut params = Vec::with_capacity(columns.len() + plan.table.key.len());
        for &c in columns {
            params.push(plan.bind::<C>(c, &row[c])?);
        }
        params.extend(plan.bind_key::<C>(row)?);
        let sql = fill_columns_sql(
            &plan.table,
            &self.client.qualified(&table.name),
            columns,
            C::quote,
            C::placeholder,
        );
        match self.client.exec_once(&sql, params) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail("fill columns", &table.name, &e)),
        }
    }

    /// Sends every buffered row change: per table, its deletes, then its upserts, as
    /// multi-row statements of the fixed sizes.
    fn flush(&mut self) -> TargetResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for table in self.pending.take() {
            let plan = &self.plans[&table.name];
            let deletes = table.deletes;
            let upserts: Vec<Vec<C::Param>> = table.upserts.into_iter().flatten().collect();
            let runs = [
                (
                    StmtKind::Delete,
                    chunk_sizes(deletes.len(), plan.params_per_row(StmtKind::Delete)),
                    deletes,
                ),
                (
                    StmtKind::Upsert,
                    chunk_sizes(upserts.len(), plan.params_per_row(StmtKind::Upsert)),
                    upserts,
                ),
            ];
            for (kind, sizes, rows) in runs {
                let mut rows = rows.into_iter();
                for size in sizes {
                    let params: Vec<C::Param> = rows.by_ref().take(size).flatten().collect();
                    self.execute(&table.name, kind, size, params)?;
                }
            }
        }
        Ok(())
    }

    /// [`ServerTarget::flush`] inside the open transaction; a failure rolls it back whole.
    fn flush_or_abandon(&mut self) -> TargetResult<()> {
        let result = self.flush();
        self.abandon_on_error(result)
    }

    fn existing_tables(&mut self) -> TargetResult<HashMap<String, Vec<String>>> {
        match self.client.existing_columns() {
            Ok(tables) => Ok(tables),
            Err(e) => {
                let namespace = self.client.namespace().to_owned();
                Err(self.fail("inspect tables", &namespace, &e))
            }
        }
    }

    /// Checks every table, creates what is missing (the bookkeeping tables, target tables,
    /// columns newly replicated) and records the tables' definitions.
    fn prepare_tables(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        // Every check first: a refused prepare creates nothing.
        for table in tables {
            self.plan(table)?;
        }
        if let Err(e) = self.client.create_namespace() {
            let namespace = self.client.namespace().to_owned();
            return Err(self.fail("create schema", &namespace, &e));
        }
        let existing = self.existing_tables()?;
        let mut to_create: Vec<(String, String)> = Vec::new();
        for table in Bookkeeping::PREPARED {
            if !existing.contains_key(table.table()) {
                to_create.push((table.table().to_owned(), self.client.bookkeeping_ddl(table)));
            }
        }
        if existing
            .get(BACKFILL_TABLE)
            .is_some_and(|columns| !columns.iter().any(|c| c == "detail"))
        {
            // Targets created before `detail` existed.
            to_create.push((BACKFILL_TABLE.to_owned(), self.client.add_backfill_detail()));
        }
        for table in tables {
            let plan = &self.plans[&table.name];
            match existing.get(&table.name) {
                Some(columns) => {
                    for c in missing_columns(&plan.table, columns)? {
                        to_create.push((table.name.clone(), plan.add_column_sql(&self.client, c)));
                    }
                }
                None => to_create.push((table.name.clone(), plan.create_sql(&self.client))),
            }
        }

        if self.state == TxState::Open && !C::TRANSACTIONAL_DDL {
            // DDL would implicitly commit the open transaction: create the tables on a
            // separate connection instead. A rolled-back transaction then leaves them behind,
            // empty, which the next `prepare` accepts.
            let mut beside = self
                .client
                .open_beside()
                .map_err(|e| db_error::<C>("connect", self.client.namespace(), &e))?;
            for (name, sql) in &to_create {
                beside.batch(sql).map_err(|e| db_error::<C>("create table", name, &e))?;
            }
        } else {
            for (name, sql) in &to_create {
                if let Err(e) = self.client.batch(sql) {
                    return Err(self.fail("create table", name, &e));
                }
            }
        }

        let sql = bookkeeping_upsert(
            &self.client,
            TABLES_TABLE,
            &["name", "source_name", "definition", "created_at_unix"],
            None,
            false,
        );
        let record = match self.client.prepare(&sql) {
            Ok(stmt) => stmt,
            Err(e) => return Err(self.fail("record table", TABLES_TABLE, &e)),
        };
        let now = unix_now();
        let mut result = Ok(());
        for table in tables {
            let plan = &self.plans[&table.name];
            let definition = match definition_json(&plan.table, &plan.types, &[]) {
                Ok(definition) => definition,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let params = vec![
                C::plain_param(Plain::Text(&table.name)),
                C::plain_param(Plain::Text(&plan.table.source_name)),
                C::plain_param(Plain::Text(&definition)),
                C::plain_param(Plain::Int(now)),
            ];
            if let Err(e) = self.client.exec(&record, params) {
                result = Err(self.fail("record table", &table.name, &e));
                break;
            }
        }
        if !self.broken {
            self.client.close(record);
        }
        result
    }

    fn prepare_impl(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        if self.state == TxState::Open {
            self.flush_or_abandon()?;
            let result = self.prepare_tables(tables);
            return self.abandon_on_error(result);
        }
        self.ensure_connected()?;
        if !C::TRANSACTIONAL_DDL {
            return self.prepare_tables(tables);
        }
        // All or nothing, in a transaction of its own.
        if let Err(e) = self.client.batch(C::BEGIN) {
            return Err(self.fail("begin", "(transaction)", &e));
        }
        let result = self
            .prepare_tables(tables)
            .and_then(|()| match self.client.batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => Err(self.fail("commit", "(transaction)", &e)),
            });
        if result.is_err() {
            let _ = self.rollback_now();
        }
        result
    }

    fn begin_impl(&mut self) -> TargetResult<()> {
        if self.state == TxState::Open {
            return Err(TargetError::Other("begin called while a transaction is open".into()));
        }
        self.pending.clear();
        self.ensure_connected()?;
        if let Err(e) = self.client.batch(C::BEGIN) {
            let e = self.fail("begin", "(transaction)", &e);
            if !self.is_gone() {
                return Err(e);
            }
            // The connection was gone (server restart, idle timeout): nothing was open on
            // it, so reconnect and start over once.
            self.ensure_connected()?;
            if let Err(e) = self.client.batch(C::BEGIN) {
                return Err(self.fail("begin", "(transaction)", &e));
            }
        }
        self.state = TxState::Open;
        Ok(())
    }

    fn commit_now(&mut self) -> TargetResult<()> {
        match self.client.batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail("commit", "(transaction)", &e)),
        }
    }

    /// Runs a bookkeeping statement kept prepared in `slot` (at most one per kind).
    fn exec_kept(
        &mut self,
        slot: fn(&mut Self) -> &mut Option<C::Statement>,
        sql: impl FnOnce(&C) -> String,
        params: Vec<C::Param>,
    ) -> Result<(), C::Error> {
        let stmt = match slot(self) {
            Some(stmt) => stmt.clone(),
            None => {
                let stmt = self.client.prepare(&sql(&self.client))?;
                *slot(self) = Some(stmt.clone());
                stmt
            }
        };
        self.client.exec(&stmt, params).map(drop)
    }

    fn write_checkpoint(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        let position = checkpoint.position.to_string();
        let applied = checkpoint.applied_text();
        let params = vec![
            C::plain_param(Plain::Int(i64::from(checkpoint.writer))),
            C::plain_param(Plain::Text(&position)),
            C::plain_param(Plain::Text(&applied)),
            C::plain_param(Plain::Int(i64::from(checkpoint.source_commit_unix))),
            C::plain_param(Plain::Int(unix_now())),
        ];
        let sql = |client: &C| {
            bookkeeping_upsert(
                client,
                CHECKPOINT_TABLE,
                &["writer", "position", "applied", "source_commit_unix", "updated_at_unix"],
                None,
                true,
            )
        };
        if let Err(e) = self.exec_kept(|t| &mut t.checkpoint_statement, sql, params) {
            return Err(self.fail("write checkpoint", CHECKPOINT_TABLE, &e));
        }
        self.commit_now()
    }

    fn write_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        let table = progress.table.as_str();
        let rows_copied = rows_copied_to_db(progress)?;
        let mut detail = backfill_detail_to_db(progress);
        if !C::TEXT_HOLDS_NUL {
            if progress.last_key.as_deref().is_some_and(|k| k.contains('\0')) {
                return Err(TargetError::Other(format!(
                    "table {table}: the backfill key contains a NUL character, which {} text cannot hold",
                    C::PRODUCT
                )));
            }
            // The detail is informational.
            detail = detail.replace('\0', "");
        }
        let params = vec![
            C::plain_param(Plain::Text(table)),
            C::plain_param(Plain::Int(i64::from(progress.done))),
            C::plain_param(progress.last_key.as_deref().map_or(Plain::Null, Plain::Text)),
            C::plain_param(Plain::Int(rows_copied)),
            C::plain_param(Plain::Int(unix_now())),
            C::plain_param(Plain::Text(&detail)),
        ];
        let sql = |client: &C| {
            bookkeeping_upsert(
                client,
                BACKFILL_TABLE,
                &["name", "done", "last_key", "rows_copied", "updated_at_unix", "detail"],
                None,
                true,
            )
        };
        match self.exec_kept(|t| &mut t.backfill_statement, sql, params) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail("record backfill", table, &e)),
        }
    }

    fn write_readiness(&mut self, table: &str, rows: &[Readiness], replace: bool) -> TargetResult<()> {
        let qualified = self.client.qualified(READINESS_TABLE);
        if replace {
            let sql = format!(
                "DELETE FROM {qualified} WHERE {} = {}",
                C::quote("table_name"),
                C::placeholder(1)
            );
            if let Err(e) = self.client.exec_once(&sql, vec![C::plain_param(Plain::Text(table))]) {
                return Err(self.fail("record readiness", table, &e));
            }
        }
        let columns: Vec<String> = READINESS_COLUMNS.iter().map(|c| C::quote(c)).collect();
        let sql = format!(
            "INSERT INTO {qualified} ({}) VALUES ({}){}",
            columns.join(", "),
            (1..=columns.len()).map(C::placeholder).collect::<Vec<_>>().join(", "),
            C::upsert_clause(&columns[..2], &columns[2..])
        );
        let now = unix_now();
        for r in rows {
            let params = vec![
                C::plain_param(Plain::Text(table)),
                C::plain_param(Plain::Text(&r.column)),
                C::plain_param(Plain::Text(r.state.as_str())),
                C::plain_param(Plain::Int(now)),
            ];
            if let Err(e) = self.client.exec_once(&sql, params) {
                return Err(self.fail("record readiness", table, &e));
            }
        }
        Ok(())
    }

    fn write_readiness_copied(&mut self, table: &str) -> TargetResult<()> {
        let sql = format!(
            "UPDATE {} SET {} = {}, {} = {} WHERE {} = {} AND {}",
            self.client.qualified(READINESS_TABLE),
            C::quote("state"),
            C::placeholder(1),
            C::quote("updated_at_unix"),
            C::placeholder(2),
            C::quote("table_name"),
            C::placeholder(3),
            super::copy_states_sql(&C::quote("state"))
        );
        let params = vec![
            C::plain_param(Plain::Text(ReadinessState::Ready.as_str())),
            C::plain_param(Plain::Int(unix_now())),
            C::plain_param(Plain::Text(table)),
        ];
        match self.client.exec_once(&sql, params) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail("record readiness", table, &e)),
        }
    }

    fn write_lag(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        let mut params = vec![C::plain_param(Plain::Text(report.source))];
        params.extend(super::lag_columns(report).map(|v| C::plain_param(Plain::Int(v))));
        let sql = bookkeeping_upsert(&self.client, LAG_TABLE, &LAG_COLUMNS, Some(1), true);
        match self.client.exec_once(&sql, params) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail("record lag", LAG_TABLE, &e)),
        }
    }

    /// The rows of `SELECT columns FROM table …` of a bookkeeping table; `None` when the table
    /// doesn't exist (a target never prepared). `convert` turns a row into its record.
    fn read_bookkeeping<T>(
        &mut self,
        operation: &'static str,
        table: &str,
        columns: &[&str],
        rest: &str,
        convert: impl Fn(&C::Row) -> Option<T>,
    ) -> TargetResult<Option<Vec<T>>> {
        self.connected_unless_open()?;
        match self.client.may_have_table(table) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(self.fail(operation, table, &e)),
        }
        let quoted: Vec<String> = columns.iter().map(|c| C::quote(c)).collect();
        let sql = format!(
            "SELECT {} FROM {}{rest}",
            quoted.join(", "),
            self.client.qualified(table)
        );
        let rows = match self.client.exec_once(&sql, Vec::new()) {
            Ok(rows) => rows,
            Err(e) if C::is_missing_table(&e) => return Ok(None),
            Err(e) => return Err(self.fail(operation, table, &e)),
        };
        rows.iter()
            .map(|row| {
                convert(row).ok_or_else(|| TargetError::Database {
                    operation,
                    table: table.to_owned(),
                    message: "unexpected value in a result".to_owned(),
                })
            })
            .collect::<TargetResult<Vec<T>>>()
            .map(Some)
    }

    fn load_checkpoint_impl(&mut self) -> TargetResult<Option<Checkpoint>> {
        let rows = self.read_bookkeeping(
            "load checkpoint",
            CHECKPOINT_TABLE,
            &["position", "applied", "source_commit_unix"],
            "",
            |row| Some((text::<C>(row, 0)?, text::<C>(row, 1)?, int::<C>(row, 2)?)),
        )?;
        match rows {
            Some(rows) => checkpoint_from_rows(rows),
            None => Ok(None),
        }
    }

    fn recorded_tables_impl(&mut self) -> TargetResult<Vec<String>> {
        let order = format!(" ORDER BY {}{}", C::quote("name"), C::BYTE_ORDER);
        let names = self
            .read_bookkeeping("list tables", TABLES_TABLE, &["name"], &order, |row| text::<C>(row, 0))?
            .unwrap_or_default();
        let existing = self.existing_tables()?;
        Ok(names.into_iter().filter(|n| existing.contains_key(n)).collect())
    }

    fn empty_table_impl(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        self.state.require_open("empty_table")?;
        self.flush_or_abandon()?;
        // DELETE, not TRUNCATE: TRUNCATE commits the open transaction on MariaDB.
        let sql = format!("DELETE FROM {}", self.client.qualified(&table.name));
        let result = match self.client.exec_once(&sql, Vec::new()) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail("empty table", &table.name, &e)),
        };
        self.abandon_on_error(result)
    }

    /// One transaction; where DDL commits implicitly (MariaDB) the table goes first and each
    /// record after it, so a crash in between leaves records that a second call removes.
    fn drop_table_impl(&mut self, name: &str) -> TargetResult<()> {
        self.begin_impl()?;
        let statements: [(String, Vec<C::Param>); 4] = [
            (
                format!("DROP TABLE IF EXISTS {}", self.client.qualified(name)),
                Vec::new(),
            ),
            (
                format!(
                    "DELETE FROM {} WHERE {} = {}",
                    self.client.qualified(TABLES_TABLE),
                    C::quote("name"),
                    C::placeholder(1)
                ),
                vec![C::plain_param(Plain::Text(name))],
            ),
            (
                format!(
                    "DELETE FROM {} WHERE {} = {}",
                    self.client.qualified(BACKFILL_TABLE),
                    C::quote("name"),
                    C::placeholder(1)
                ),
                vec![C::plain_param(Plain::Text(name))],
            ),
            (
                format!(
                    "DELETE FROM {} WHERE {} = {}",
                    self.client.qualified(READINESS_TABLE),
                    C::quote("table_name"),
                    C::placeholder(1)
                ),
                vec![C::plain_param(Plain::Text(name))],
            ),
        ];
        self.plans.remove(name);
        self.statements.retain(|(t, _, _), _| t != name);
        let mut result = Ok(());
        for (sql, params) in statements {
            if let Err(e) = self.client.exec_once(&sql, params) {
                result = Err(self.fail("drop table", name, &e));
                break;
            }
        }
        let result = result.and_then(|()| self.commit_now());
        self.finish_commit(result)
    }

    fn load_backfill_impl(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        // Byte order of the names, whatever the collation.
        let order = format!(" ORDER BY {}{}", C::quote("name"), C::BYTE_ORDER);
        let rows = self.read_bookkeeping(
            "load backfill",
            BACKFILL_TABLE,
            &["name", "done", "last_key", "rows_copied", "detail"],
            &order,
            |row| {
                Some((
                    text::<C>(row, 0)?,
                    int::<C>(row, 1)?,
                    C::text_at(row, 2)?,
                    int::<C>(row, 3)?,
                    C::text_at(row, 4)?,
                ))
            },
        )?;
        rows.unwrap_or_default().into_iter().map(backfill_from_row).collect()
    }

    fn load_lag_impl(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        let id = format!(" WHERE {} = 1", C::quote("id"));
        let rows = self.read_bookkeeping("load lag", LAG_TABLE, &LAG_COLUMNS[1..], &id, |row| {
            let mut v = [0i64; 7];
            for (i, slot) in v.iter_mut().enumerate() {
                *slot = int::<C>(row, i + 1)?;
            }
            Some(super::lag_from_columns(&text::<C>(row, 0)?, v))
        })?;
        Ok(rows.and_then(|rows| rows.into_iter().next()))
    }

    fn load_verified_impl(&mut self) -> TargetResult<Option<VerifiedRecord>> {
        let id = format!(" WHERE {} = 0", C::quote("id"));
        let rows = self.read_bookkeeping(
            "load verified",
            VERIFIED_TABLE,
            &["position", "mismatches", "unchecked_txns"],
            &id,
            |row| Some((text::<C>(row, 0)?, int::<C>(row, 1)?, int::<C>(row, 2)?)),
        )?;
        rows.and_then(|rows| rows.into_iter().next())
            .map(verified_from_row)
            .transpose()
    }

    fn record_verified_impl(&mut self, record: &VerifiedRecord) -> TargetResult<()> {
        self.ensure_connected()?;
        let sql = bookkeeping_upsert(
            &self.client,
            VERIFIED_TABLE,
            &["id", "position", "mismatches", "unchecked_txns", "updated_at_unix"],
            Some(0),
            true,
        );
        let position = record.position.to_string();
        let params = || {
            vec![
                C::plain_param(Plain::Text(&position)),
                C::plain_param(Plain::Int(record.mismatches as i64)),
                C::plain_param(Plain::Int(record.unchecked_txns as i64)),
                C::plain_param(Plain::Int(unix_now())),
            ]
        };
        let result = match self.client.exec_once(&sql, params()) {
            // Created on first use, with no transaction open (MariaDB DDL commits implicitly).
            Err(e) if C::is_missing_table(&e) => {
                let create = self.client.bookkeeping_ddl(Bookkeeping::Verified);
                self.client
                    .batch(&create)
                    .and_then(|()| self.client.exec_once(&sql, params()))
            }
            other => other,
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail("record verified", VERIFIED_TABLE, &e)),
        }
    }

    fn column_gaps_impl(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
        self.connected_unless_open()?;
        let existing = self.existing_tables()?;
        let mut gaps = Vec::new();
        for table in tables {
            if let Some(columns) = existing.get(&table.name) {
                let missing = missing_columns(table, columns)?;
                if !missing.is_empty() {
                    gaps.push((table.name.clone(), missing));
                }
            }
        }
        Ok(gaps)
    }

    fn read_rows_impl(
        &mut self,
        table: &Arc<TargetTable>,
        selection: RowSelection<'_>,
    ) -> TargetResult<Vec<Vec<Value>>> {
        self.ready_to_read()?;
        self.plan(table)?;
        let cols: Vec<String> = table.columns.iter().map(|c| C::quote(&c.name)).collect();
        let keys: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        let (condition, binds) = selection_condition(&keys, &selection);
        let select: Vec<String> = table
            .columns
            .iter()
            .zip(&cols)
            .map(|(c, name)| C::verify_select(&c.source, name))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            select.join(", "),
            self.client.qualified(&table.name),
            number_placeholders(&condition, C::placeholder)
        );
        if let RowSelection::KeyRange { limit, .. } = selection {
            sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
        }
        if self.state == TxState::Open {
            // A repair's read: lock the rows until the repair commits.
            sql.push_str(" FOR UPDATE");
        }
        let params = self.plans[&table.name].bind_selection::<C>(&selection, &binds)?;
        let stmt = match self.read_statements.get(&sql) {
            Some(stmt) => stmt.clone(),
            None => {
                if self.read_statements.len() >= 64 {
                    let old: Vec<C::Statement> = self.read_statements.drain().map(|(_, s)| s).collect();
                    for stmt in old {
                        self.client.close(stmt);
                    }
                }
                let stmt = match self.client.prepare(&sql) {
                    Ok(stmt) => stmt,
                    Err(e) => return Err(self.fail("verify read", &table.name, &e)),
                };
                self.read_statements.insert(sql, stmt.clone());
                stmt
            }
        };
        let rows = match self.client.exec(&stmt, params) {
            Ok(rows) => rows,
            Err(e) => return Err(self.fail("verify read", &table.name, &e)),
        };
        rows.into_iter()
            .map(|row| {
                C::decode_row(row, &table.columns)
                    .into_iter()
                    .zip(&table.columns)
                    .map(|(value, c)| {
                        value.ok_or_else(|| {
                            TargetError::Other(format!(
                                "table {}: column {} came back as an unexpected kind of value",
                                table.name, c.name
                            ))
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn sql_checksum_impl(
        &mut self,
        table: &Arc<TargetTable>,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
    ) -> TargetResult<Option<SqlChecksum>> {
        let keys: Vec<String> = table.key.iter().map(|&k| C::quote(&table.columns[k].name)).collect();
        let selection = RowSelection::KeyRange { after, upto, limit: 0 };
        let (condition, binds) = selection_condition(&keys, &selection);
        let columns: Vec<(String, ColumnKind)> = table
            .columns
            .iter()
            .map(|c| (C::quote(&c.name), c.source.kind))
            .collect();
        let Some(sql) = C::checksum_select(
            &columns,
            &self.client.qualified(&table.name),
            &number_placeholders(&condition, C::placeholder),
        ) else {
            return Ok(None);
        };
        // The checksum must cover this transaction's own changes.
        self.ready_to_read()?;
        self.plan(table)?;
        let params = self.plans[&table.name].bind_selection::<C>(&selection, &binds)?;
        let rows = match self.client.exec_once(&sql, params) {
            Ok(rows) => rows,
            Err(e) => return Err(self.fail("verify checksum", &table.name, &e)),
        };
        let get = |i: usize| {
            rows.first()
                .and_then(|row| C::int_at(row, i))
                .and_then(|v| u64::try_from(v).ok())
        };
        match (get(0), get(1), get(2)) {
            (Some(rows), Some(xor), Some(sum)) => Ok(Some(SqlChecksum { rows, xor, sum })),
            _ => Err(TargetError::Other(format!(
                "table {}: the checksum query returned an unexpected result",
                table.name
            ))),
        }
    }
}

/// `_sluice_readiness`'s columns; the first two are its key.
const READINESS_COLUMNS: [&str; 4] = ["table_name", "column_name", "state", "updated_at_unix"];

/// `_sluice_lag`'s columns: its `id` (always 1), the source, then `super::lag_columns`.
const LAG_COLUMNS: [&str; 9] = [
    "id",
    "source",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "samples",
    "window_ms",
    "updated_at_us",
];

/// Non-NULL text at column `i` of a bookkeeping row.
fn text<C: Client>(row: &C::Row, i: usize) -> Option<String> {
    C::text_at(row, i)?
}

/// A signed 64-bit integer at column `i` of a bookkeeping row.
fn int<C: Client>(row: &C::Row, i: usize) -> Option<i64> {
    i64::try_from(C::int_at(row, i)?).ok()
}

impl<C: Client> TxProtocol for ServerTarget<C> {
    fn tx_state(&mut self) -> &mut TxState {
        &mut self.state
    }

    fn rollback_now(&mut self) -> TargetResult<()> {
        self.pending.clear();
        if self.is_gone() {
            // The server rolls back a transaction whose connection is gone.
            return Ok(());
        }
        match self.client.batch("ROLLBACK") {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.fail("rollback", "(transaction)", &e);
                if self.broken {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}

impl<C: Client> Target for ServerTarget<C> {
    fn prepare(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        C::run(|| self.prepare_impl(tables))
    }

    fn load_checkpoint(&mut self) -> TargetResult<Option<Checkpoint>> {
        C::run(|| self.load_checkpoint_impl())
    }

    fn begin(&mut self) -> TargetResult<()> {
        C::run(|| self.begin_impl())
    }

    fn apply(&mut self, op: &RowOp) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open("apply")?;
            let result = self.apply_op(op);
            self.abandon_on_error(result)
        })
    }

    fn commit(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open_for_commit()?;
            let result = self.flush().and_then(|()| self.write_checkpoint(checkpoint));
            self.finish_commit(result)
        })
    }

    fn rollback(&mut self) -> TargetResult<()> {
        C::run(|| {
            self.state = TxState::Idle;
            self.rollback_now()
        })
    }

    fn record_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open("record_backfill")?;
            let result = self.flush().and_then(|()| self.write_backfill(progress));
            self.abandon_on_error(result)
        })
    }

    fn column_gaps(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
        C::run(|| self.column_gaps_impl(tables))
    }

    fn fill_columns(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open("fill_columns")?;
            let result = self.fill_columns_now(table, columns, row);
            self.abandon_on_error(result)
        })
    }

    fn recorded_tables(&mut self) -> TargetResult<Vec<String>> {
        C::run(|| self.recorded_tables_impl())
    }

    fn recorded_rules(&mut self) -> TargetResult<std::collections::HashMap<String, Option<String>>> {
        C::run(|| {
            let rows = self
                .read_bookkeeping("list tables", TABLES_TABLE, &["name", "definition"], "", |row| {
                    Some((text::<C>(row, 0)?, text::<C>(row, 1)?))
                })?
                .unwrap_or_default();
            Ok(rows
                .into_iter()
                .map(|(name, definition)| (name, super::common::rules_of_definition(&definition)))
                .collect())
        })
    }

    fn drop_table(&mut self, name: &str) -> TargetResult<()> {
        C::run(|| self.drop_table_impl(name))
    }

    fn empty_table(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        C::run(|| self.empty_table_impl(table))
    }

    fn load_backfill(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        C::run(|| self.load_backfill_impl())
    }

    fn record_readiness(&mut self, table: &str, rows: &[Readiness], replace: bool) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open("record_readiness")?;
            let result = self.flush().and_then(|()| self.write_readiness(table, rows, replace));
            self.abandon_on_error(result)
        })
    }

    fn readiness_copied(&mut self, table: &str) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open("readiness_copied")?;
            let result = self.flush().and_then(|()| self.write_readiness_copied(table));
            self.abandon_on_error(result)
        })
    }

    fn load_readiness(&mut self) -> TargetResult<Vec<ReadinessRow>> {
        C::run(|| {
            let order = format!(
                " ORDER BY {}{}, {}{}",
                C::quote("table_name"),
                C::BYTE_ORDER,
                C::quote("column_name"),
                C::BYTE_ORDER
            );
            let rows = self.read_bookkeeping("load readiness", READINESS_TABLE, &READINESS_COLUMNS, &order, |row| {
                Some(ReadinessRow {
                    table: text::<C>(row, 0)?,
                    column: text::<C>(row, 1)?,
                    state: text::<C>(row, 2)?,
                    updated_at_unix: int::<C>(row, 3)?,
                })
            })?;
            Ok(rows.unwrap_or_default())
        })
    }

    fn record_lag(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open("record_lag")?;
            self.flush_or_abandon()?;
            let result = self.write_lag(report);
            self.abandon_on_error(result)
        })
    }

    fn load_lag(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        C::run(|| self.load_lag_impl())
    }

    fn read_rows(&mut self, table: &Arc<TargetTable>, selection: RowSelection<'_>) -> TargetResult<Vec<Vec<Value>>> {
        C::run(|| self.read_rows_impl(table, selection))
    }

    fn commit_without_checkpoint(&mut self) -> TargetResult<()> {
        C::run(|| {
            self.state.require_open_for_commit()?;
            self.flush_or_abandon()?;
            let result = self.commit_now();
            self.finish_commit(result)
        })
    }

    fn record_verified(&mut self, record: &VerifiedRecord) -> TargetResult<()> {
        C::run(|| self.record_verified_impl(record))
    }

    fn load_verified(&mut self) -> TargetResult<Option<VerifiedRecord>> {
        C::run(|| self.load_verified_impl())
    }

    fn sql_checksum(
        &mut self,
        table: &Arc<TargetTable>,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
    ) -> TargetResult<Option<SqlChecksum>> {
        C::run(|| self.sql_checksum_impl(table, after, upto))
    }
}
