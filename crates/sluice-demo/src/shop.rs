//! The demo shop: the source schema, what the sluice config replicates of it, and the
//! config file itself.

/// The source schema. `sessions` gets writes but is not replicated (filtering), and
/// `customers.email` / `customers.phone` are personal data that stay at the source.
pub const SCHEMA_SQL: &str = "
CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.shops (
    id INT NOT NULL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    region VARCHAR(32) NOT NULL
);
CREATE TABLE shop.customers (
    id INT NOT NULL PRIMARY KEY,
    shop_id INT NOT NULL,
    name VARCHAR(100) NOT NULL,
    email VARCHAR(255) NOT NULL,
    phone VARCHAR(32) NULL,
    created_at DATETIME(6) NOT NULL,
    KEY (shop_id)
);
CREATE TABLE shop.orders (
    id BIGINT NOT NULL PRIMARY KEY,
    customer_id INT NOT NULL,
    status ENUM('new', 'paid', 'packed', 'shipped', 'delivered', 'cancelled') NOT NULL DEFAULT 'new',
    total DECIMAL(12,2) NOT NULL,
    placed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    note TEXT NULL,
    KEY (customer_id)
);
CREATE TABLE shop.order_lines (
    order_id BIGINT NOT NULL,
    line_no SMALLINT NOT NULL,
    sku VARCHAR(32) NOT NULL,
    qty INT NOT NULL,
    price DECIMAL(10,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE shop.sessions (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    token CHAR(32) NOT NULL,
    last_seen TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    user_agent VARCHAR(255) NULL
);
";

pub const SCHEMA: &str = "shop";

/// A source table the config replicates, the columns it leaves out, and the same row
/// filter and transforms as the config's, written as the source's own SQL so that the
/// comparison computes them independently of sluice.
pub struct TableSpec {
    pub name: &'static str,
    pub excluded: &'static [&'static str],
    /// The config's `where`, as a MariaDB condition.
    pub source_where: Option<&'static str>,
    /// `truncate:N` transforms: (column, N), done by the source as `LEFT(column, N)`.
    pub truncated: &'static [(&'static str, usize)],
}

/// What the config below selects, in the same order.
pub const REPLICATED: &[TableSpec] = &[
    TableSpec {
        name: "shops",
        excluded: &[],
        source_where: None,
        truncated: &[],
    },
    TableSpec {
        name: "customers",
        excluded: &["email", "phone"],
        source_where: None,
        truncated: &[("name", 1)],
    },
    TableSpec {
        name: "orders",
        excluded: &[],
        source_where: Some("status <> 'cancelled'"),
        truncated: &[],
    },
    TableSpec {
        name: "order_lines",
        excluded: &[],
        source_where: None,
        truncated: &[],
    },
];

/// Written to at the source, deliberately absent from the config.
pub const UNREPLICATED: &str = "sessions";

/// Marks every email address and phone number the load writes; none may reach the target.
pub const EMAIL_DOMAIN: &str = "@example.com";
pub const PHONE_PREFIX: &str = "+1-555-";

pub const REPL_USER: &str = "sluice_repl";
/// The grants sluice needs (see README): replication, catalog and copy reads, and the lag
/// heartbeat's table (so lag is measured from heartbeats, in microseconds).
pub const REPL_GRANTS: &[&str] = &[
    "REPLICATION SLAVE, BINLOG MONITOR",
    "SELECT ON *.*",
    "SELECT, INSERT, UPDATE, CREATE ON `sluice`.*",
];

pub const CONFIG_FILE: &str = "sluice.toml";
pub const PASSWORD_FILE: &str = "source-password";
pub const TARGET_FILE: &str = "edge.sqlite";

/// The sluice config the demo runs with; relative paths are relative to the config file.
pub fn config_toml(port: u16, status_port: u16) -> String {
    format!(
        r#"# Written by sluice-demo. Replicates a slice of the demo shop into SQLite.

[source]
host = "127.0.0.1"
port = {port}
user = "{REPL_USER}"
password_file = "{PASSWORD_FILE}"   # the password never appears in this file
start = "current"                   # tables start empty; everything after this point replicates

[target]
kind = "sqlite"
path = "{TARGET_FILE}"

[[tables]]
match = "shop.shops"

[[tables]]
match = "shop.customers"
exclude_columns = ["email", "phone"]   # personal data stays at the source
[tables.transforms]
name = "truncate:1"                    # the edge keeps an initial, not the name

[[tables]]
match = "shop.orders"
where = "status <> 'cancelled'"        # cancelled orders leave the edge (a delete there)

[[tables]]
match = "shop.order_lines"

# shop.sessions is not selected: its writes are filtered out.

[metrics]
listen = "127.0.0.1:{status_port}"     # the status page on http://127.0.0.1:{status_port}/, Prometheus on /metrics
"#
    )
}
