//! sluice-binlog: read MySQL and MariaDB binary logs.
//!
//! This crate knows the replication wire protocol and the binlog event format and nothing
//! about sluice's filtering or targets, so it can be used on its own:
//!
//! * [`gtid`]: GTIDs and replication positions; [`mysql_gtid`]: MySQL's GTID events.
//! * [`event`]: event framing, checksums and the event types.
//! * [`table_map`] and [`table`]: table definitions that give row images their meaning.
//! * [`rows`]: row events and row image decoding into [`value::Value`]s.
//! * [`compressed`]: MariaDB's compressed QUERY and rows events (`log_bin_compress`);
//!   [`payload`]: MySQL's compressed transactions (TRANSACTION_PAYLOAD).
//! * [`file`]: reading binlog files; [`replica`]: streaming from a server as a replica.

mod bytes;
pub mod compressed;
pub mod error;
pub mod event;
pub mod file;
pub mod gtid;
pub mod mysql_gtid;
pub mod payload;
pub mod position;
pub mod replica;
pub mod rows;
pub mod table;
pub mod table_map;
pub mod tls;
pub mod value;

pub use error::{DecodeError, PositionedError};
pub use event::{Event, EventBody, EventDecoder, EventHeader, GtidEvent};
pub use gtid::{Gtid, GtidPosition, MysqlGtidSet};
pub use mysql_gtid::MysqlGtidEvent;
pub use position::{FlavorMismatch, MysqlGtid, SourceGtid, SourcePosition};
pub use replica::{DumpStart, SourceFlavor};
pub use rows::{RowChange, RowsEvent, RowsKind};
pub use table::{Charset, ColumnDef, ColumnKind, TableDef};
pub use table_map::{TableIdMap, TableMap};
pub use value::Value;
