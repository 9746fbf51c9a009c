//! sluice-engine: the path from a decoded binlog to an edge database.
//!
//! source → schema (table definitions at each position) → filter → apply → target.

pub mod config;
pub mod target;
