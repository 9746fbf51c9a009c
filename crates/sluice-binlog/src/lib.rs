//! sluice-binlog: read MySQL and MariaDB binary logs.
//!
//! This crate knows the replication wire protocol and the binlog event format and nothing
//! about sluice's filtering or targets, so it can be used on its own:
//!
//! * [`gtid`]: GTIDs and replication positions.
//! * [`table`]: table definitions that give row images their meaning.
//! * [`value`]: typed column values.

pub mod gtid;
pub mod table;
pub mod value;

pub use gtid::{Gtid, GtidPosition};
pub use table::{Charset, ColumnDef, ColumnKind, TableDef};
pub use value::Value;
