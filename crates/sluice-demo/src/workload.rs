//! The write load: a shop's transactions from several concurrent source connections.
//!
//! Every transaction's row changes are counted from the server's affected-row counts (which,
//! with ROW binlogging, are exactly the row events written to the binlog), split by whether
//! the table is replicated. After each COMMIT the worker asks for `@@last_gtid` and records
//! when the COMMIT returned, so the progress display can tell how old the oldest source
//! commit is that sluice has not applied yet.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};
use sluice_binlog::Gtid;

use crate::rng::Rng;

pub const SHOPS: u64 = 8;
const SEED_CUSTOMERS: u64 = 240;
const SEED_ORDERS: u64 = 300;
/// Sessions each worker keeps around before it starts expiring its oldest.
const SESSIONS_KEPT: usize = 20;

const STATUSES: [&str; 6] = ["new", "paid", "packed", "shipped", "delivered", "cancelled"];
const REGIONS: [&str; 6] = ["eu-west", "eu-north", "us-east", "us-west", "ap-south", "sa-east"];
const SHOP_NAMES: [&str; 8] = [
    "Harbour Street Books",
    "Café Müller Supplies",
    "Nordlys Outdoor",
    "Tienda La Esquina",
    "東京 Stationery",
    "Corner Bike Shop",
    "Zürich Watch Repair",
    "Bayou Hot Sauce Co.",
];
const FIRST_NAMES: [&str; 20] = [
    "Zoë",
    "Łukasz",
    "Ana María",
    "Søren",
    "Nguyễn",
    "美咲",
    "Seán",
    "Dvořák",
    "Ævar",
    "José",
    "Chloé",
    "Jürgen",
    "Siobhán",
    "Aleksandr",
    "Fatima",
    "Kwame",
    "Priya",
    "Björk",
    "Mei",
    "Tomás",
];
const LAST_NAMES: [&str; 16] = [
    "O'Brien",
    "Kowalski",
    "García",
    "Jensen",
    "Văn An",
    "佐藤",
    "Müller",
    "Novák",
    "Þórsson",
    "Pérez",
    "Dubois",
    "Schäfer",
    "Ní Bhriain",
    "Ivanov",
    "Haddad",
    "Mensah",
];
/// Notes exercise quoting, control characters, non-BMP characters and the empty string
/// (which is not NULL).
const NOTES: [&str; 10] = [
    "Leave at the door; \"ring twice\"",
    "🎁 gift wrap, please",
    "deliver after 18:00\nback entrance",
    "tab\tseparated\tnote",
    "",
    "Bitte nicht knicken – Grüße",
    "rush order!!!",
    "'single quotes' and \\backslashes\\",
    "配達前に電話してください",
    "NULL",
];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)",
    "curl/8.5.0",
    "ShopApp/4.2 (Android 14)",
];

/// Kinds of source transaction, with their share of the load in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NewOrder,
    AdvanceStatus,
    EditLines,
    Renumber,
    Purge,
    CustomerEdit,
    SessionChurn,
    ShopEdit,
}

pub const KINDS: [(Kind, u64); 8] = [
    (Kind::NewOrder, 34),
    (Kind::AdvanceStatus, 26),
    (Kind::EditLines, 12),
    (Kind::Renumber, 4),
    (Kind::Purge, 4),
    (Kind::CustomerEdit, 8),
    (Kind::SessionChurn, 10),
    (Kind::ShopEdit, 2),
];

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::NewOrder => "new order (+customer, lines, sometimes a session)",
            Kind::AdvanceStatus => "order status change",
            Kind::EditLines => "line edit (delete / qty / line_no key change)",
            Kind::Renumber => "order renumbered (orders.id and order_lines key change)",
            Kind::Purge => "order purged (delete order + lines)",
            Kind::CustomerEdit => "customer edit (some touch only email/phone)",
            Kind::SessionChurn => "session churn (shop.sessions only: not replicated)",
            Kind::ShopEdit => "shop edit",
        }
    }

    fn index(self) -> usize {
        KINDS
            .iter()
            .position(|(k, _)| *k == self)
            .expect("every kind is listed")
    }

    fn needs_order(self) -> bool {
        matches!(
            self,
            Kind::AdvanceStatus | Kind::EditLines | Kind::Renumber | Kind::Purge
        )
    }
}

#[derive(Default)]
pub struct Stats {
    /// Committed transactions that changed rows (each has a GTID).
    pub txns: AtomicU64,
    /// Row changes in replicated tables (what sluice should apply).
    pub rows_replicated: AtomicU64,
    /// Row changes in `shop.sessions` (what sluice should skip).
    pub rows_unreplicated: AtomicU64,
    /// Transactions rolled back after a deadlock or lock wait timeout (none reach the binlog).
    pub retries: AtomicU64,
    pub by_kind: [AtomicU64; KINDS.len()],
}

/// State shared by the workers and the progress display.
pub struct Shared {
    next_customer: AtomicU64,
    next_order: AtomicU64,
    customers: Mutex<Vec<u64>>,
    /// Orders no worker is working on; a worker takes one out while it changes it.
    orders: Mutex<Vec<u64>>,
    pub stats: Stats,
    /// Domain-0 GTID sequence number → when the COMMIT returned to the load generator.
    /// The display prunes entries sluice has applied.
    pub commits: Mutex<BTreeMap<u64, Instant>>,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            next_customer: AtomicU64::new(1),
            next_order: AtomicU64::new(1001),
            customers: Mutex::new(Vec::new()),
            orders: Mutex::new(Vec::new()),
            stats: Stats::default(),
            commits: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        }
    }

    fn take_order(&self, rng: &mut Rng) -> Option<u64> {
        let mut orders = self.orders.lock().expect("orders lock");
        if orders.is_empty() {
            return None;
        }
        let i = rng.below(orders.len() as u64) as usize;
        Some(orders.swap_remove(i))
    }

    fn random_customer(&self, rng: &mut Rng) -> Option<u64> {
        let customers = self.customers.lock().expect("customers lock");
        (!customers.is_empty()).then(|| *rng.pick(&customers))
    }
}

/// What a transaction did to the shared pools; applied only once it committed.
#[derive(Default)]
struct Effects {
    orders: Vec<u64>,
    customers: Vec<u64>,
    new_sessions: Vec<u64>,
    expired_sessions: Vec<u64>,
}

/// What [`Worker::seed`] wrote.
pub struct Seeded {
    pub shops: u64,
    pub customers: u64,
    pub orders: u64,
    pub lines: u64,
    pub txns: u64,
    pub rows: u64,
}

/// One source connection running transactions.
pub struct Worker {
    conn: Conn,
    rng: Rng,
    shared: Arc<Shared>,
    /// This worker's own sessions, oldest first (no two workers touch the same session).
    sessions: VecDeque<u64>,
    txn_rows_replicated: u64,
    txn_rows_unreplicated: u64,
    last_seq: u64,
}

/// MariaDB errors after which a transaction is simply retried later.
fn is_transient(err: &mysql_async::Error) -> bool {
    // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
    matches!(err, mysql_async::Error::Server(e) if e.code == 1213 || e.code == 1205)
}

/// Cents as a DECIMAL literal: -500 → "-5.00".
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

impl Worker {
    pub async fn connect(opts: mysql_async::Opts, shared: Arc<Shared>, stream: u64) -> anyhow::Result<Worker> {
        let conn = Conn::new(opts).await.context("connecting to the source")?;
        Ok(Worker {
            conn,
            rng: Rng::from_os(stream),
            shared,
            sessions: VecDeque::new(),
            txn_rows_replicated: 0,
            txn_rows_unreplicated: 0,
            last_seq: 0,
        })
    }

    pub async fn disconnect(self) {
        let _ = self.conn.disconnect().await;
    }

    async fn exec<P>(&mut self, sql: &str, params: P, replicated: bool) -> Result<u64, mysql_async::Error>
    where
        P: Into<Params> + Send,
    {
        self.conn.exec_drop(sql, params).await?;
        let rows = self.conn.affected_rows();
        if replicated {
            self.txn_rows_replicated += rows;
        } else {
            self.txn_rows_unreplicated += rows;
        }
        Ok(rows)
    }

    /// One multi-row INSERT.
    async fn insert_rows(
        &mut self,
        table: &str,
        columns: &str,
        rows: Vec<Vec<Value>>,
        replicated: bool,
    ) -> Result<u64, mysql_async::Error> {
        let width = rows.first().map_or(0, Vec::len);
        let tuple = format!("({})", vec!["?"; width].join(", "));
        let sql = format!(
            "INSERT INTO {table} ({columns}) VALUES {}",
            vec![tuple.as_str(); rows.len()].join(", ")
        );
        let params = Params::Positional(rows.into_iter().flatten().collect());
        self.exec(&sql, params, replicated).await
    }

    async fn begin(&mut self) -> Result<(), mysql_async::Error> {
        self.txn_rows_replicated = 0;
        self.txn_rows_unreplicated = 0;
        self.conn.query_drop("BEGIN").await
    }

    async fn commit(&mut self, kind: Option<Kind>) -> Result<(), mysql_async::Error> {
        self.conn.query_drop("COMMIT").await?;
        let committed_at = Instant::now();
        if self.txn_rows_replicated + self.txn_rows_unreplicated == 0 {
            // Nothing changed: MariaDB writes no GTID for an empty transaction.
            return Ok(());
        }
        let stats = &self.shared.stats;
        stats.txns.fetch_add(1, Ordering::Relaxed);
        stats
            .rows_replicated
            .fetch_add(self.txn_rows_replicated, Ordering::Relaxed);
        stats
            .rows_unreplicated
            .fetch_add(self.txn_rows_unreplicated, Ordering::Relaxed);
        if let Some(kind) = kind {
            stats.by_kind[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        let gtid: Option<String> = self.conn.query_first("SELECT @@last_gtid").await?;
        if let Some(gtid) = gtid.and_then(|g| g.parse::<Gtid>().ok()) {
            if gtid.domain == 0 && gtid.sequence != self.last_seq {
                self.last_seq = gtid.sequence;
                self.shared
                    .commits
                    .lock()
                    .expect("commits lock")
                    .insert(gtid.sequence, committed_at);
            }
        }
        Ok(())
    }

    /// Runs one transaction of a random kind. Deadlocks and lock wait timeouts roll it back
    /// and count as a retry; other errors end the load.
    pub async fn step(&mut self) -> anyhow::Result<()> {
        let mut roll = self.rng.below(100);
        let mut kind = Kind::NewOrder;
        for (k, weight) in KINDS {
            if roll < weight {
                kind = k;
                break;
            }
            roll -= weight;
        }
        let order = if kind.needs_order() {
            self.shared.take_order(&mut self.rng)
        } else {
            None
        };
        if kind.needs_order() && order.is_none() {
            kind = Kind::NewOrder;
        }
        let mut fx = Effects::default();
        let result = self.transaction(kind, order, &mut fx).await;
        match result {
            Ok(()) => {
                self.shared.orders.lock().expect("orders lock").extend(fx.orders);
                self.shared
                    .customers
                    .lock()
                    .expect("customers lock")
                    .extend(fx.customers);
                self.sessions.extend(fx.new_sessions);
                Ok(())
            }
            Err(err) => {
                let _ = self.conn.query_drop("ROLLBACK").await;
                if let Some(order) = order {
                    self.shared.orders.lock().expect("orders lock").push(order);
                }
                for id in fx.expired_sessions.into_iter().rev() {
                    self.sessions.push_front(id);
                }
                if is_transient(&err) {
                    self.shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                } else {
                    Err(anyhow::Error::new(err).context(format!("source transaction: {}", kind.describe())))
                }
            }
        }
    }

    async fn transaction(
        &mut self,
        kind: Kind,
        order: Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), mysql_async::Error> {
        self.begin().await?;
        match (kind, order) {
            (Kind::NewOrder, _) => self.new_order(fx).await?,
            (Kind::AdvanceStatus, Some(order)) => self.advance_status(order, fx).await?,
            (Kind::EditLines, Some(order)) => self.edit_lines(order, fx).await?,
            (Kind::Renumber, Some(order)) => self.renumber(order, fx).await?,
            (Kind::Purge, Some(order)) => self.purge(order).await?,
            (Kind::CustomerEdit, _) => self.customer_edit().await?,
            (Kind::SessionChurn, _) => self.session_churn(fx).await?,
            (Kind::ShopEdit, _) => self.shop_edit().await?,
            (_, None) => unreachable!("kinds that need an order get one"),
        }
        self.commit(Some(kind)).await
    }

    fn customer_name(&mut self) -> String {
        format!("{} {}", self.rng.pick(&FIRST_NAMES), self.rng.pick(&LAST_NAMES))
    }

    fn email(&mut self, customer: u64) -> String {
        format!(
            "customer{customer}.{}{}",
            self.rng.below(1000),
            crate::shop::EMAIL_DOMAIN
        )
    }

    fn phone(&mut self) -> Option<String> {
        (!self.rng.percent(20)).then(|| {
            format!(
                "{}{:04}-{:04}",
                crate::shop::PHONE_PREFIX,
                self.rng.below(10_000),
                self.rng.below(10_000)
            )
        })
    }

    fn note(&mut self) -> Option<String> {
        self.rng.percent(35).then(|| (*self.rng.pick(&NOTES)).to_owned())
    }

    /// 1–5 lines of (sku, qty, price in cents), sometimes with a discount line.
    fn lines(&mut self) -> Vec<(String, i64, i64)> {
        let mut lines: Vec<(String, i64, i64)> = (0..self.rng.range(1, 5))
            .map(|_| {
                (
                    format!("SKU-{:05}", self.rng.below(5000)),
                    self.rng.range(1, 4),
                    self.rng.range(99, 25_000),
                )
            })
            .collect();
        if self.rng.percent(8) {
            lines.push(("DISCOUNT".to_owned(), 1, -self.rng.range(100, 1500)));
        }
        lines
    }

    fn line_rows(order: u64, lines: &[(String, i64, i64)]) -> Vec<Vec<Value>> {
        lines
            .iter()
            .enumerate()
            .map(|(i, (sku, qty, cents))| {
                vec![
                    order.into(),
                    (i as u64 + 1).into(),
                    sku.as_str().into(),
                    (*qty).into(),
                    money(*cents).into(),
                ]
            })
            .collect()
    }

    async fn new_order(&mut self, fx: &mut Effects) -> Result<(), mysql_async::Error> {
        let existing = self.shared.random_customer(&mut self.rng);
        let customer = match existing {
            Some(id) if !self.rng.percent(25) => id,
            _ => {
                let id = self.shared.next_customer.fetch_add(1, Ordering::Relaxed);
                let shop = self.rng.range(1, SHOPS as i64);
                let (name, email, phone) = (self.customer_name(), self.email(id), self.phone());
                self.exec(
                    "INSERT INTO shop.customers (id, shop_id, name, email, phone, created_at) \
                     VALUES (?, ?, ?, ?, ?, NOW(6))",
                    (id, shop, name, email, phone),
                    true,
                )
                .await?;
                fx.customers.push(id);
                id
            }
        };
        let id = self.shared.next_order.fetch_add(1, Ordering::Relaxed);
        let lines = self.lines();
        let total: i64 = lines.iter().map(|(_, qty, cents)| qty * cents).sum();
        let note = self.note();
        self.exec(
            "INSERT INTO shop.orders (id, customer_id, status, total, placed_at, note) VALUES (?, ?, 'new', ?, NOW(3), ?)",
            (id, customer, money(total), note),
            true,
        )
        .await?;
        self.insert_rows(
            "shop.order_lines",
            "order_id, line_no, sku, qty, price",
            Self::line_rows(id, &lines),
            true,
        )
        .await?;
        if self.rng.percent(30) {
            self.new_session(customer, fx).await?;
        }
        fx.orders.push(id);
        Ok(())
    }

    async fn advance_status(&mut self, order: u64, fx: &mut Effects) -> Result<(), mysql_async::Error> {
        let status: Option<String> = self
            .conn
            .exec_first(
                "SELECT CAST(status AS CHAR) FROM shop.orders WHERE id = ? FOR UPDATE",
                (order,),
            )
            .await?;
        let Some(status) = status else {
            return Ok(()); // gone
        };
        let next = match status.as_str() {
            "new" if self.rng.percent(12) => Some("cancelled"),
            "new" => Some("paid"),
            "paid" => Some("packed"),
            "packed" => Some("shipped"),
            "shipped" => Some("delivered"),
            _ => None,
        };
        match next {
            Some("shipped") => {
                let note = format!("tracking: 1Z{}", self.rng.alphanumeric(12).to_uppercase());
                self.exec(
                    "UPDATE shop.orders SET status = 'shipped', note = ? WHERE id = ?",
                    (note, order),
                    true,
                )
                .await?;
            }
            Some(next) => {
                self.exec("UPDATE shop.orders SET status = ? WHERE id = ?", (next, order), true)
                    .await?;
            }
            None => {
                // Delivered or cancelled: only the note changes.
                let note = self.note();
                self.exec("UPDATE shop.orders SET note = ? WHERE id = ?", (note, order), true)
                    .await?;
            }
        }
        fx.orders.push(order);
        Ok(())
    }

    async fn edit_lines(&mut self, order: u64, fx: &mut Effects) -> Result<(), mysql_async::Error> {
        let mut lines: Vec<i64> = self
            .conn
            .exec(
                "SELECT line_no FROM shop.order_lines WHERE order_id = ? ORDER BY line_no FOR UPDATE",
                (order,),
            )
            .await?;
        if lines.len() >= 2 && self.rng.percent(50) {
            let line = lines.swap_remove(self.rng.below(lines.len() as u64) as usize);
            self.exec(
                "DELETE FROM shop.order_lines WHERE order_id = ? AND line_no = ?",
                (order, line),
                true,
            )
            .await?;
        }
        if lines.is_empty() {
            let row = vec![
                order.into(),
                1.into(),
                format!("SKU-{:05}", self.rng.below(5000)).into(),
                1.into(),
                money(self.rng.range(99, 25_000)).into(),
            ];
            self.insert_rows(
                "shop.order_lines",
                "order_id, line_no, sku, qty, price",
                vec![row],
                true,
            )
            .await?;
        } else {
            let line = *self.rng.pick(&lines);
            let delta = self.rng.range(1, 3);
            self.exec(
                "UPDATE shop.order_lines SET qty = qty + ? WHERE order_id = ? AND line_no = ?",
                (delta, order, line),
                true,
            )
            .await?;
            if self.rng.percent(35) {
                // A primary key change inside a composite key.
                let line = *self.rng.pick(&lines);
                let new_no = lines.iter().max().copied().unwrap_or(0) + 1;
                self.exec(
                    "UPDATE shop.order_lines SET line_no = ? WHERE order_id = ? AND line_no = ?",
                    (new_no, order, line),
                    true,
                )
                .await?;
            }
        }
        self.exec(
            "UPDATE shop.orders SET total = \
             (SELECT COALESCE(SUM(qty * price), 0) FROM shop.order_lines WHERE order_id = ?) WHERE id = ?",
            (order, order),
            true,
        )
        .await?;
        fx.orders.push(order);
        Ok(())
    }

    async fn renumber(&mut self, order: u64, fx: &mut Effects) -> Result<(), mysql_async::Error> {
        let new_id = self.shared.next_order.fetch_add(1, Ordering::Relaxed);
        let moved = self
            .exec("UPDATE shop.orders SET id = ? WHERE id = ?", (new_id, order), true)
            .await?;
        self.exec(
            "UPDATE shop.order_lines SET order_id = ? WHERE order_id = ?",
            (new_id, order),
            true,
        )
        .await?;
        if moved == 1 {
            fx.orders.push(new_id);
        }
        Ok(())
    }

    async fn purge(&mut self, order: u64) -> Result<(), mysql_async::Error> {
        self.exec("DELETE FROM shop.order_lines WHERE order_id = ?", (order,), true)
            .await?;
        self.exec("DELETE FROM shop.orders WHERE id = ?", (order,), true)
            .await?;
        Ok(())
    }

    async fn customer_edit(&mut self) -> Result<(), mysql_async::Error> {
        let Some(id) = self.shared.random_customer(&mut self.rng) else {
            return Ok(());
        };
        match self.rng.below(3) {
            0 => {
                let (name, email) = (self.customer_name(), self.email(id));
                self.exec(
                    "UPDATE shop.customers SET name = ?, email = ? WHERE id = ?",
                    (name, email, id),
                    true,
                )
                .await?
            }
            // Only personal data changes: sluice still applies the (unchanged) replicated row.
            1 => {
                let phone = self.phone();
                self.exec("UPDATE shop.customers SET phone = ? WHERE id = ?", (phone, id), true)
                    .await?
            }
            _ => {
                let shop = self.rng.range(1, SHOPS as i64);
                self.exec("UPDATE shop.customers SET shop_id = ? WHERE id = ?", (shop, id), true)
                    .await?
            }
        };
        Ok(())
    }

    async fn new_session(&mut self, customer: u64, fx: &mut Effects) -> Result<(), mysql_async::Error> {
        let token = self.rng.alphanumeric(32);
        let agent = self.rng.percent(80).then(|| *self.rng.pick(&USER_AGENTS));
        self.exec(
            "INSERT INTO shop.sessions (customer_id, token, last_seen, user_agent) VALUES (?, ?, NOW(6), ?)",
            (customer, token, agent),
            false,
        )
        .await?;
        if let Some(id) = self.conn.last_insert_id() {
            fx.new_sessions.push(id);
        }
        Ok(())
    }

    async fn session_churn(&mut self, fx: &mut Effects) -> Result<(), mysql_async::Error> {
        let customer = self.shared.random_customer(&mut self.rng).unwrap_or(1);
        self.new_session(customer, fx).await?;
        if let Some(&id) = self.sessions.back() {
            self.exec("UPDATE shop.sessions SET last_seen = NOW(6) WHERE id = ?", (id,), false)
                .await?;
        }
        while self.sessions.len() > SESSIONS_KEPT {
            let id = self.sessions.pop_front().expect("not empty");
            fx.expired_sessions.push(id);
            self.exec("DELETE FROM shop.sessions WHERE id = ?", (id,), false)
                .await?;
        }
        Ok(())
    }

    async fn shop_edit(&mut self) -> Result<(), mysql_async::Error> {
        let id = self.rng.range(1, SHOPS as i64);
        let region = *self.rng.pick(&REGIONS);
        self.exec("UPDATE shop.shops SET region = ? WHERE id = ?", (region, id), true)
            .await?;
        Ok(())
    }

    /// Fills the shop before the load, in a few large transactions: shops, customers and
    /// orders with lines, with fixed timestamps (some with whole seconds, whose fraction
    /// must not be printed) and the workers' session time zone applied to TIMESTAMPs.
    pub async fn seed(&mut self) -> anyhow::Result<Seeded> {
        let before = (
            self.shared.stats.txns.load(Ordering::Relaxed),
            self.shared.stats.rows_replicated.load(Ordering::Relaxed),
        );
        self.begin().await?;
        let shops = (1..=SHOPS)
            .map(|id| {
                vec![
                    id.into(),
                    SHOP_NAMES[(id - 1) as usize].into(),
                    REGIONS[(id as usize) % REGIONS.len()].into(),
                ]
            })
            .collect();
        self.insert_rows("shop.shops", "id, name, region", shops, true).await?;
        self.commit(None).await?;

        let mut customers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..SEED_CUSTOMERS {
            let id = self.shared.next_customer.fetch_add(1, Ordering::Relaxed);
            ids.push(id);
            let created = self.seed_datetime(2023, true);
            customers.push(vec![
                id.into(),
                self.rng.range(1, SHOPS as i64).into(),
                self.customer_name().into(),
                self.email(id).into(),
                self.phone().into(),
                created.into(),
            ]);
        }
        for chunk in customers.chunks(60) {
            self.begin().await?;
            self.insert_rows(
                "shop.customers",
                "id, shop_id, name, email, phone, created_at",
                chunk.to_vec(),
                true,
            )
            .await?;
            self.commit(None).await?;
        }
        self.shared.customers.lock().expect("customers lock").extend(&ids);

        let mut order_ids = Vec::new();
        let mut line_count = 0;
        for _ in 0..SEED_ORDERS / 20 {
            let mut orders = Vec::new();
            let mut lines = Vec::new();
            for _ in 0..20 {
                let id = self.shared.next_order.fetch_add(1, Ordering::Relaxed);
                let order_lines = self.lines();
                let total: i64 = order_lines.iter().map(|(_, qty, cents)| qty * cents).sum();
                let placed = self.seed_datetime(2024, false);
                orders.push(vec![
                    id.into(),
                    (*self.rng.pick(&ids)).into(),
                    (*self.rng.pick(&STATUSES)).into(),
                    money(total).into(),
                    placed.into(),
                    self.note().into(),
                ]);
                lines.extend(Self::line_rows(id, &order_lines));
                order_ids.push(id);
            }
            self.begin().await?;
            self.insert_rows(
                "shop.orders",
                "id, customer_id, status, total, placed_at, note",
                orders,
                true,
            )
            .await?;
            line_count += self
                .insert_rows("shop.order_lines", "order_id, line_no, sku, qty, price", lines, true)
                .await?;
            self.commit(None).await?;
        }
        self.shared.orders.lock().expect("orders lock").extend(order_ids);
        Ok(Seeded {
            shops: SHOPS,
            customers: SEED_CUSTOMERS,
            orders: SEED_ORDERS,
            lines: line_count,
            txns: self.shared.stats.txns.load(Ordering::Relaxed) - before.0,
            rows: self.shared.stats.rows_replicated.load(Ordering::Relaxed) - before.1,
        })
    }

    /// `YYYY-MM-DD HH:MM:SS[.frac]` in `year`; about a third with no fraction.
    fn seed_datetime(&mut self, year: u32, micros: bool) -> String {
        let base = format!(
            "{year}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.rng.range(1, 12),
            self.rng.range(1, 28),
            self.rng.range(0, 23),
            self.rng.range(0, 59),
            self.rng.range(0, 59)
        );
        match (self.rng.percent(33), micros) {
            (true, _) => base,
            (false, true) => format!("{base}.{:06}", self.rng.range(1, 999_999)),
            (false, false) => format!("{base}.{:03}", self.rng.range(1, 999)),
        }
    }
}

/// Runs `worker` until `deadline` (or until told to stop), pacing it to one transaction per
/// `period`, the first at `first`.
pub async fn run(mut worker: Worker, first: Instant, period: Duration, deadline: Instant) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if Instant::now() >= deadline || worker.shared.stop.load(Ordering::Relaxed) {
            break;
        }
        worker.step().await?;
    }
    worker.disconnect().await;
    Ok(())
}
