//! sluice-engine: the path from a decoded binlog to an edge database.
//!
//! source → schema (table definitions at each position) → filter → apply → target.

pub mod apply;
pub mod backfill;
pub mod canonical;
pub mod catalog;
pub mod config;
pub mod ddl;
pub mod filter;
pub mod incremental;
pub mod lag;
pub mod pipeline;
pub mod preflight;
pub mod rowfilter;
pub mod schedule;
pub mod schema;
pub mod source;
pub mod status;
pub mod target;
pub mod transform;
pub mod verify;
