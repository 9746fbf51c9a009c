//! sluice-engine: the path from a decoded binlog to an edge database.
//!
//! ```text
//! stream (binlog reader, schema at position) → select (rules, row filter, transforms)
//!        → apply (write sets, writers) → target (SQLite, MariaDB/MySQL, PostgreSQL)
//! backfill: existing rows, copied beside the stream      verify: proving what was written
//! schema_manager: declared edge schema against the target  ops: lag, status, preflight
//! ```
//!
//! `config` holds every setting and the types settings name; `pipeline` wires the parts
//! together. ARCHITECTURE.md has the codemap and the invariants.

pub mod apply;
pub mod backfill;
pub mod config;
pub mod log;
pub mod ops;
pub mod pipeline;
pub mod schema_manager;
pub mod select;
pub mod source_rows;
pub mod stream;
pub mod target;
pub mod verify;
