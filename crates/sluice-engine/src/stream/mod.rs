//! Reading the stream: the binlog as a replica, each event decoded with the table
//! definitions of its position, and the DDL that passes by.
//!
//! * [`reader`]: the source reader (replication connection, reconnects, whole source
//!   transactions handed to the applier).
//! * [`schema`]: schema at position: what each replicated table looks like at the event
//!   being read, and whether a change can be followed.
//! * [`ddl`]: what a QUERY event's statement does to tables.
//! * [`catalog`]: the source's own description of its tables (`information_schema`).

pub mod catalog;
pub mod ddl;
pub mod reader;
pub mod schema;
