//! Throwaway MariaDB servers for sluice's integration tests, a stand-in MySQL 8 source
//! that speaks the replication protocol ([`mysql_protocol`]), throwaway PostgreSQL servers
//! and throwaway `nats-server`s with JetStream ([`NatsServer`]).
//!
//! Each [`MariaDb`] is a private `mariadbd` process with its own temp
//! directory, a free TCP port on 127.0.0.1 and a row-based binary log, ready
//! to be replicated from. It is stopped and deleted when the value is
//! dropped, including when the test panics.
//!
//! ```no_run
//! use mysql_async::prelude::Queryable;
//! use sluice_testkit::{MariaDb, MariaDbOptions};
//!
//! # async fn example() {
//! // Defaults: binlog on, ROW format, FULL row image, FULL row metadata,
//! // GTID strict mode, root without password.
//! let db = MariaDb::start();
//! db.exec("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT)");
//! db.exec("INSERT INTO shop.items VALUES (1, 'apple'), (2, NULL)");
//! assert_eq!(
//!     db.query_rows("SELECT id, name FROM shop.items ORDER BY id"),
//!     vec![vec!["1", "apple"], vec!["2", "NULL"]],
//! );
//!
//! let mut conn = db.conn().await; // or mysql_async::Conn::from_url(db.url())
//! let _: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await.unwrap();
//!
//! // Variations go through the builder; later server args win.
//! let minimal = MariaDbOptions::new()
//!     .server_arg("--binlog-row-image=MINIMAL")
//!     .server_id(42)
//!     .start();
//! # }
//! ```
//!
//! Things worth knowing:
//!
//! - **Requirements**: MariaDB's `mariadbd`, `mariadb-install-db` and
//!   `mariadb` programs (Debian: `mariadb-server`, `mariadb-client`). No
//!   already-running server is used, and port 3306 never is.
//! - **Parallelism**: every server has its own directory and port, so tests
//!   may run on threads (`cargo test`) or processes (`cargo nextest`).
//! - **Speed**: `mariadb-install-db` runs once per machine into a cache under
//!   the system temp dir; each server starts from a copy. A server is usually
//!   ready in well under a second.
//! - **Blocking helpers** ([`MariaDb::start`], [`MariaDb::exec`],
//!   [`MariaDb::query_rows`], ...) may be called from async tests; they block
//!   the calling thread briefly but never need (or disturb) a tokio runtime.
//! - **Outages**: [`MariaDb::restart`], [`MariaDb::stop`] /
//!   [`MariaDb::start_again`] and [`MariaDb::kill`] simulate a source going
//!   away; the port and data survive.
//! - **Debugging**: set `SLUICE_KEEP_TESTDB=1` to keep each server's
//!   directory (data dir, `error.log`) after the test; its path is printed.
//! - **Leaks**: if the test process dies without unwinding (abort, SIGKILL),
//!   the kernel kills its servers, but their temp directories remain.

mod binaries;
pub mod mysql_protocol;
mod nats;
mod postgres;
mod process;
mod server;
mod template;

pub use self::nats::NatsServer;
pub use self::postgres::PostgresServer;
pub use mysql_protocol::{MysqlProtocolServer, MysqlProtocolServerOptions};
pub use server::{MariaDb, MariaDbOptions};

use std::ffi::OsString;
use std::path::Path;

/// `--name=` followed by a path, without a lossy UTF-8 conversion.
pub(crate) fn flag(name: &str, path: &Path) -> OsString {
    let mut flag = OsString::from(name);
    flag.push(path);
    flag
}
