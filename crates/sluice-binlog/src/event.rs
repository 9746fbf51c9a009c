//! Binlog events: the common header, checksums, and the event types sluice acts on.
//!
//! [`EventDecoder`] keeps the state decoding needs across events (the format description,
//! i.e. header sizes and checksum algorithm) and turns raw event bytes into [`Event`]s that
//! borrow from the input. MariaDB's own events (GTID, GTID_LIST, BINLOG_CHECKPOINT,
//! ANNOTATE_ROWS) are hand-written here because `mysql_common` does not decode them.

use crate::bytes::Cursor;
use crate::error::DecodeError;
use crate::gtid::{Gtid, MysqlGtidSet};
use crate::mysql_gtid::MysqlGtidEvent;
use crate::payload::TransactionPayload;
use crate::rows::{RowsEvent, RowsKind};
use std::sync::Arc;

use crate::table_map::{TableMap, TableMapCache};

pub const HEADER_LEN: usize = 19;
const CHECKSUM_LEN: usize = 4;
/// Set in the FORMAT_DESCRIPTION event header while the file is being written.
const BINLOG_IN_USE_FLAG: u16 = 0x0001;

/// Event type codes.
pub mod event_type {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    pub const MYSQL_GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    /// MySQL 8.4+: a GTID with a tag (`uuid:tag:gno`).
    pub const MYSQL_GTID_TAGGED: u8 = 42;
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIADB_GTID: u8 = 162;
    pub const MARIADB_GTID_LIST: u8 = 163;
    pub const MARIADB_START_ENCRYPTION: u8 = 164;
    pub const MARIADB_QUERY_COMPRESSED: u8 = 165;
    /// Compressed forms of the v1 rows events (MariaDB's `log_bin_compress`), what MariaDB
    /// writes.
    pub const MARIADB_WRITE_ROWS_COMPRESSED_V1: u8 = 166;
    pub const MARIADB_UPDATE_ROWS_COMPRESSED_V1: u8 = 167;
    pub const MARIADB_DELETE_ROWS_COMPRESSED_V1: u8 = 168;
    /// Compressed forms of the v2 rows events (with an extra-data block).
    pub const MARIADB_WRITE_ROWS_COMPRESSED: u8 = 169;
    pub const MARIADB_UPDATE_ROWS_COMPRESSED: u8 = 170;
    pub const MARIADB_DELETE_ROWS_COMPRESSED: u8 = 171;
}
use event_type as et;

/// The 19-byte header every event starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EventHeader {
    /// Seconds since the epoch when the statement started (1-second resolution).
    pub timestamp: u32,
    pub type_code: u8,
    pub server_id: u32,
    pub event_size: u32,
    /// Offset of the *next* event in the source's binlog file (0 for artificial events).
    pub log_pos: u32,
    pub flags: u16,
}

impl EventHeader {
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(bytes, "event header");
        Ok(EventHeader {
            timestamp: cur.u32()?,
            type_code: cur.u8()?,
            server_id: cur.u32()?,
            event_size: cur.u32()?,
            log_pos: cur.u32()?,
            flags: cur.u16()?,
        })
    }
}

/// Checksum algorithm announced by the FORMAT_DESCRIPTION event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumAlg {
    None,
    Crc32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FormatDescription {
    pub binlog_version: u16,
    pub server_version: String,
    pub header_len: u8,
    #[serde(skip)]
    pub post_header_lengths: Vec<u8>,
    pub checksum: ChecksumAlg,
}

impl FormatDescription {
    /// The format assumed before any FORMAT_DESCRIPTION has been seen: binlog v4, no
    /// checksums (but see [`rotate_checksum_before_format`]).
    fn initial() -> Self {
        FormatDescription {
            binlog_version: 4,
            server_version: String::new(),
            header_len: HEADER_LEN as u8,
            post_header_lengths: Vec::new(),
            checksum: ChecksumAlg::None,
        }
    }

    fn post_header_len(&self, type_code: u8) -> u8 {
        self.post_header_lengths
            .get(usize::from(type_code).wrapping_sub(1))
            .copied()
            .unwrap_or(match type_code {
                et::TABLE_MAP
                | et::WRITE_ROWS_V1
                | et::UPDATE_ROWS_V1
                | et::DELETE_ROWS_V1
                | et::MARIADB_WRITE_ROWS_COMPRESSED_V1
                | et::MARIADB_UPDATE_ROWS_COMPRESSED_V1
                | et::MARIADB_DELETE_ROWS_COMPRESSED_V1 => 8,
                et::WRITE_ROWS
                | et::UPDATE_ROWS
                | et::DELETE_ROWS
                | et::MARIADB_WRITE_ROWS_COMPRESSED
                | et::MARIADB_UPDATE_ROWS_COMPRESSED
                | et::MARIADB_DELETE_ROWS_COMPRESSED => 10,
                et::QUERY | et::MARIADB_QUERY_COMPRESSED => 13,
                _ => 0,
            })
    }

    pub fn is_mariadb(&self) -> bool {
        self.server_version.contains("MariaDB")
    }
}

/// Server versions at or above these write a checksum-algorithm byte into the FDE.
fn version_has_checksum_alg(version: &str) -> bool {
    let numeric: String = version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    if version.contains("MariaDB") {
        v >= (5, 3, 0)
    } else {
        v >= (5, 6, 1)
    }
}

/// A MariaDB GTID event: the start of a transaction (or of a standalone DDL statement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GtidEvent {
    pub gtid: Gtid,
    pub flags: u8,
    /// Transactions with the same commit id were group-committed together on the source.
    pub commit_id: Option<u64>,
}

impl GtidEvent {
    /// `FL_STANDALONE`: the event group is a single statement without BEGIN/COMMIT (DDL).
    pub fn is_standalone(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// A decoded event, borrowing its variable parts from the raw bytes.
#[derive(Debug)]
pub enum EventBody<'a> {
    FormatDescription(FormatDescription),
    Rotate {
        position: u64,
        next_file: String,
    },
    Gtid(GtidEvent),
    GtidList(Vec<Gtid>),
    BinlogCheckpoint {
        file: String,
    },
    Xid {
        xid: u64,
    },
    Query {
        schema: String,
        sql: std::borrow::Cow<'a, str>,
        error_code: u16,
    },
    /// An identical TABLE_MAP body for the same table id (the usual case: servers repeat the
    /// TABLE_MAP before every rows event) yields the same `Arc` as last time, undecoded.
    TableMap(Arc<TableMap>),
    Rows(RowsEvent<'a>),
    /// MariaDB's copy of the statement behind the following rows events, as the server wrote
    /// it (normally UTF-8; convert with `String::from_utf8_lossy` when needed). Kept as bytes
    /// because replication never reads it and converting it cost 7% of decoding.
    AnnotateRows {
        sql: &'a [u8],
    },
    Heartbeat {
        log_file: String,
    },
    /// MySQL's compressed transaction (`binlog_transaction_compression=ON`): its events are
    /// read with [`TransactionPayload::events`] and decoded with
    /// [`EventDecoder::decode_payload_event`].
    TransactionPayload(TransactionPayload<'a>),
    Stop,
    /// MySQL's GTID, ANONYMOUS_GTID and (8.4+) GTID_TAGGED events.
    MysqlGtid(MysqlGtidEvent),
    /// MySQL's PREVIOUS_GTIDS event: every GTID of the earlier binlog files.
    PreviousGtids(MysqlGtidSet),
    /// An event type sluice does not know. Ignored when the server marks it ignorable.
    Unknown,
}

#[derive(Debug)]
pub struct Event<'a> {
    pub header: EventHeader,
    pub body: EventBody<'a>,
}

/// Decodes a stream of events, remembering the format description between them.
#[derive(Debug)]
pub struct EventDecoder {
    fde: FormatDescription,
    verify_checksums: bool,
    /// `fde.is_mariadb()`, computed once per FORMAT_DESCRIPTION rather than per TABLE_MAP.
    mariadb: bool,
    table_maps: TableMapCache,
}

impl Default for EventDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventDecoder {
    pub fn new() -> Self {
        EventDecoder {
            fde: FormatDescription::initial(),
            verify_checksums: true,
            mariadb: false,
            table_maps: TableMapCache::default(),
        }
    }

    pub fn format(&self) -> &FormatDescription {
        &self.fde
    }

    /// Turns CRC32 verification on (the default) or off. Checksummed events still have their
    /// four checksum bytes stripped; only the comparison is skipped.
    ///
    /// Meant for tools and fuzzing (random bytes practically never carry a valid CRC32, which
    /// would hide everything past the checksum from a fuzzer); replication keeps it on.
    pub fn set_verify_checksums(&mut self, verify: bool) {
        self.verify_checksums = verify;
    }

    /// Decodes one whole event (header, body, and checksum if the format has one).
    pub fn decode<'a>(&mut self, raw: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        self.decode_framed(raw, true)
    }

    /// Decodes one event from inside a TRANSACTION_PAYLOAD ([`TransactionPayload::events`]).
    /// Such events never carry a checksum (the payload event's covers them), and a payload
    /// holds only the events of one transaction: a FORMAT_DESCRIPTION or another payload
    /// inside one is corrupt input.
    pub fn decode_payload_event<'a>(&mut self, raw: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        if let Some(&code @ (et::FORMAT_DESCRIPTION | et::TRANSACTION_PAYLOAD)) = raw.get(4) {
            return Err(DecodeError::invalid(
                "TRANSACTION_PAYLOAD event",
                format!("a {} event inside the payload", type_name(code)),
            ));
        }
        self.decode_framed(raw, false)
    }

    fn decode_framed<'a>(&mut self, raw: &'a [u8], checksummed: bool) -> Result<Event<'a>, DecodeError> {
        let header = EventHeader::parse(raw)?;
        if header.event_size as usize != raw.len() {
            return Err(DecodeError::invalid(
                "event header",
                format!("event size {} but {} bytes available", header.event_size, raw.len()),
            ));
        }
        if header.type_code == et::FORMAT_DESCRIPTION {
            let fde = self.decode_format_description(&header, raw)?;
            self.fde = fde.clone();
            self.mariadb = self.fde.is_mariadb();
            self.table_maps.clear();
            return Ok(Event {
                header,
                body: EventBody::FormatDescription(fde),
            });
        }
        let checksum = match checksummed {
            true if self.fde.server_version.is_empty() && header.type_code == et::ROTATE => {
                rotate_checksum_before_format(raw)
            }
            true => self.fde.checksum,
            false => ChecksumAlg::None,
        };
        let body_end = match checksum {
            ChecksumAlg::Crc32 => {
                if raw.len() < HEADER_LEN + CHECKSUM_LEN {
                    return Err(DecodeError::invalid("event", "too short for its checksum"));
                }
                let end = raw.len() - CHECKSUM_LEN;
                if self.verify_checksums {
                    verify_crc(raw, end, header.type_code, false)?;
                }
                end
            }
            ChecksumAlg::None => raw.len(),
        };
        if body_end < HEADER_LEN {
            return Err(DecodeError::invalid("event", "shorter than its header"));
        }
        let body = &raw[HEADER_LEN..body_end];
        let body = self.decode_body(&header, body)?;
        Ok(Event { header, body })
    }

    fn decode_format_description(&self, header: &EventHeader, raw: &[u8]) -> Result<FormatDescription, DecodeError> {
        let mut cur = Cursor::new(&raw[HEADER_LEN.min(raw.len())..], "FORMAT_DESCRIPTION event");
        let binlog_version = cur.u16()?;
        if binlog_version != 4 {
            return Err(DecodeError::Unsupported(format!(
                "binlog format version {binlog_version} (sluice reads version 4, MySQL 5.0 and later)"
            )));
        }
        let version_bytes = cur.take(50)?;
        let server_version =
            String::from_utf8_lossy(version_bytes.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
        let _created = cur.u32()?;
        let header_len = cur.u8()?;
        if usize::from(header_len) != HEADER_LEN {
            return Err(DecodeError::invalid(
                "FORMAT_DESCRIPTION event",
                format!("header length {header_len}"),
            ));
        }
        let rest = cur.rest();
        let (post_header_lengths, checksum) = if version_has_checksum_alg(&server_version) {
            if rest.len() < 1 + CHECKSUM_LEN {
                return Err(DecodeError::Truncated {
                    what: "FORMAT_DESCRIPTION event",
                    needed: 1 + CHECKSUM_LEN,
                    available: rest.len(),
                });
            }
            let alg_at = rest.len() - 1 - CHECKSUM_LEN;
            let checksum = match rest[alg_at] {
                0 => ChecksumAlg::None,
                1 => ChecksumAlg::Crc32,
                other => return Err(DecodeError::Unsupported(format!("binlog checksum algorithm {other}"))),
            };
            if checksum == ChecksumAlg::Crc32 && self.verify_checksums {
                verify_crc(raw, raw.len() - CHECKSUM_LEN, header.type_code, true)?;
            }
            (rest[..alg_at].to_vec(), checksum)
        } else {
            (rest.to_vec(), ChecksumAlg::None)
        };
        Ok(FormatDescription {
            binlog_version,
            server_version,
            header_len,
            post_header_lengths,
            checksum,
        })
    }

    fn decode_body<'a>(&mut self, header: &EventHeader, body: &'a [u8]) -> Result<EventBody<'a>, DecodeError> {
        let post_len = self.fde.post_header_len(header.type_code);
        Ok(match header.type_code {
            et::ROTATE => {
                let mut cur = Cursor::new(body, "ROTATE event");
                let position = cur.u64()?;
                EventBody::Rotate { position, next_file: String::from_utf8_lossy(cur.rest()).into_owned() }
            }
            et::QUERY => decode_query(body, post_len, false)?,
            // log_bin_compress: decompressed here into the events they stand for, so that
            // callers handle them as the plain QUERY and rows events.
            et::MARIADB_QUERY_COMPRESSED => decode_query(body, post_len, true)?,
            et::XID => EventBody::Xid { xid: Cursor::new(body, "XID event").u64()? },
            et::TABLE_MAP => EventBody::TableMap(self.table_maps.decode(body, post_len, self.mariadb)?),
            et::WRITE_ROWS_V1 => EventBody::Rows(RowsEvent::parse(RowsKind::Write, body, post_len, false)?),
            et::UPDATE_ROWS_V1 => EventBody::Rows(RowsEvent::parse(RowsKind::Update, body, post_len, false)?),
            et::DELETE_ROWS_V1 => EventBody::Rows(RowsEvent::parse(RowsKind::Delete, body, post_len, false)?),
            et::WRITE_ROWS => EventBody::Rows(RowsEvent::parse(RowsKind::Write, body, post_len, true)?),
            et::UPDATE_ROWS => EventBody::Rows(RowsEvent::parse(RowsKind::Update, body, post_len, true)?),
            et::DELETE_ROWS => EventBody::Rows(RowsEvent::parse(RowsKind::Delete, body, post_len, true)?),
            et::MARIADB_WRITE_ROWS_COMPRESSED_V1 => {
                EventBody::Rows(RowsEvent::parse_compressed(RowsKind::Write, body, post_len, false)?)
            }
            et::MARIADB_UPDATE_ROWS_COMPRESSED_V1 => {
                EventBody::Rows(RowsEvent::parse_compressed(RowsKind::Update, body, post_len, false)?)
            }
            et::MARIADB_DELETE_ROWS_COMPRESSED_V1 => {
                EventBody::Rows(RowsEvent::parse_compressed(RowsKind::Delete, body, post_len, false)?)
            }
            et::MARIADB_WRITE_ROWS_COMPRESSED => {
                EventBody::Rows(RowsEvent::parse_compressed(RowsKind::Write, body, post_len, true)?)
            }
            et::MARIADB_UPDATE_ROWS_COMPRESSED => {
                EventBody::Rows(RowsEvent::parse_compressed(RowsKind::Update, body, post_len, true)?)
            }
            et::MARIADB_DELETE_ROWS_COMPRESSED => {
                EventBody::Rows(RowsEvent::parse_compressed(RowsKind::Delete, body, post_len, true)?)
            }
            et::HEARTBEAT => EventBody::Heartbeat { log_file: String::from_utf8_lossy(body).into_owned() },
            et::STOP => EventBody::Stop,
            et::MARIADB_ANNOTATE_ROWS => EventBody::AnnotateRows { sql: body },
            et::MARIADB_BINLOG_CHECKPOINT => {
                let mut cur = Cursor::new(body, "BINLOG_CHECKPOINT event");
                let len = cur.u32()? as usize;
                EventBody::BinlogCheckpoint { file: String::from_utf8_lossy(cur.take(len)?).into_owned() }
            }
            et::MARIADB_GTID => {
                let mut cur = Cursor::new(body, "GTID event");
                let sequence = cur.u64()?;
                let domain = cur.u32()?;
                let flags = cur.u8()?;
                // FL_GROUP_COMMIT_ID
                let commit_id = if flags & 0x02 != 0 { Some(cur.u64()?) } else { None };
                EventBody::Gtid(GtidEvent { gtid: Gtid { domain, server: header.server_id, sequence }, flags, commit_id })
            }
            et::MARIADB_GTID_LIST => {
                let mut cur = Cursor::new(body, "GTID_LIST event");
                // The top 4 bits are flags.
                let count = (cur.u32()? & 0x0fff_ffff) as usize;
                let mut gtids = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    let domain = cur.u32()?;
                    let server = cur.u32()?;
                    let sequence = cur.u64()?;
                    gtids.push(Gtid { domain, server, sequence });
                }
                EventBody::GtidList(gtids)
            }
            et::MARIADB_START_ENCRYPTION => {
                return Err(DecodeError::Unsupported(
                    "encrypted binlog (START_ENCRYPTION event): the events after it are encrypted and sluice cannot read encrypted binlog files; read the source over the replication protocol instead, where the server decrypts".into(),
                ))
            }
            et::PARTIAL_UPDATE_ROWS => {
                return Err(DecodeError::Unsupported(
                    "PARTIAL_UPDATE_ROWS event: sluice needs full row images; set binlog_row_value_options='' on the source".into(),
                ))
            }
            et::TRANSACTION_PAYLOAD => EventBody::TransactionPayload(TransactionPayload::parse(body)?),
            et::MYSQL_GTID => EventBody::MysqlGtid(crate::mysql_gtid::decode_gtid(body, false)?),
            et::ANONYMOUS_GTID => EventBody::MysqlGtid(crate::mysql_gtid::decode_gtid(body, true)?),
            et::MYSQL_GTID_TAGGED => EventBody::MysqlGtid(crate::mysql_gtid::decode_tagged_gtid(body)?),
            et::PREVIOUS_GTIDS => EventBody::PreviousGtids(crate::mysql_gtid::decode_previous_gtids(body)?),
            _ => EventBody::Unknown,
        })
    }
}

/// QUERY and (with `compressed`) MariaDB's QUERY_COMPRESSED event, whose statement text is a
/// compressed block ([`crate::compressed`]).
fn decode_query(body: &[u8], post_len: u8, compressed: bool) -> Result<EventBody<'_>, DecodeError> {
    let mut cur = Cursor::new(
        body,
        if compressed {
            "QUERY_COMPRESSED event"
        } else {
            "QUERY event"
        },
    );
    let _thread_id = cur.u32()?;
    let _exec_time = cur.u32()?;
    let schema_len = cur.u8()? as usize;
    let error_code = cur.u16()?;
    let status_len = if post_len >= 13 { cur.u16()? as usize } else { 0 };
    // Skip anything a newer server adds to the post-header.
    cur.skip(usize::from(post_len).saturating_sub(13))?;
    cur.skip(status_len)?;
    let schema = String::from_utf8_lossy(cur.take(schema_len)?).into_owned();
    cur.skip(1)?;
    let sql = if compressed {
        let text = crate::compressed::mariadb_uncompress(cur.rest(), "QUERY_COMPRESSED event")?;
        std::borrow::Cow::Owned(String::from_utf8_lossy(&text).into_owned())
    } else {
        String::from_utf8_lossy(cur.rest())
    };
    Ok(EventBody::Query {
        schema,
        sql,
        error_code,
    })
}

/// Whether the ROTATE a replica stream starts with, which arrives before any
/// FORMAT_DESCRIPTION says whether events carry checksums, ends with one: a server sends it
/// with a CRC32 when the replica announced it understands checksums (`@master_binlog_checksum`),
/// and without one otherwise (and in files, where a ROTATE never comes first). Taking the
/// trailing four bytes as part of the file name printed them as garbage after the name; they
/// are a checksum exactly when they are the CRC32 of the rest (a chance match is 1 in 2^32).
fn rotate_checksum_before_format(raw: &[u8]) -> ChecksumAlg {
    if raw.len() < HEADER_LEN + CHECKSUM_LEN {
        return ChecksumAlg::None;
    }
    let end = raw.len() - CHECKSUM_LEN;
    let stored = u32::from_le_bytes(raw[end..].try_into().expect("four bytes"));
    match crc32fast::hash(&raw[..end]) == stored {
        true => ChecksumAlg::Crc32,
        false => ChecksumAlg::None,
    }
}

fn verify_crc(raw: &[u8], end: usize, type_code: u8, is_fde: bool) -> Result<(), DecodeError> {
    let stored = u32::from_le_bytes(raw[end..end + CHECKSUM_LEN].try_into().expect("4 bytes"));
    let mut hasher = crc32fast::Hasher::new();
    if is_fde {
        // The in-use flag is set while the file is open and cleared on close; the checksum
        // is computed as if it were clear.
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&raw[..HEADER_LEN]);
        let flags = u16::from_le_bytes([head[17], head[18]]) & !BINLOG_IN_USE_FLAG;
        head[17..19].copy_from_slice(&flags.to_le_bytes());
        hasher.update(&head);
        hasher.update(&raw[HEADER_LEN..end]);
    } else {
        hasher.update(&raw[..end]);
    }
    let computed = hasher.finalize();
    if stored != computed {
        return Err(DecodeError::Checksum {
            event: type_name(type_code),
            stored,
            computed,
        });
    }
    Ok(())
}

/// A name for an event type code, for messages and JSON output.
pub fn type_name(type_code: u8) -> &'static str {
    match type_code {
        et::QUERY => "QUERY",
        et::STOP => "STOP",
        et::ROTATE => "ROTATE",
        et::FORMAT_DESCRIPTION => "FORMAT_DESCRIPTION",
        et::XID => "XID",
        et::TABLE_MAP => "TABLE_MAP",
        et::WRITE_ROWS_V1 | et::WRITE_ROWS => "WRITE_ROWS",
        et::UPDATE_ROWS_V1 | et::UPDATE_ROWS => "UPDATE_ROWS",
        et::DELETE_ROWS_V1 | et::DELETE_ROWS => "DELETE_ROWS",
        et::HEARTBEAT => "HEARTBEAT",
        et::MYSQL_GTID => "GTID",
        et::ANONYMOUS_GTID => "ANONYMOUS_GTID",
        et::PREVIOUS_GTIDS => "PREVIOUS_GTIDS",
        et::MYSQL_GTID_TAGGED => "GTID_TAGGED",
        et::PARTIAL_UPDATE_ROWS => "PARTIAL_UPDATE_ROWS",
        et::TRANSACTION_PAYLOAD => "TRANSACTION_PAYLOAD",
        et::MARIADB_ANNOTATE_ROWS => "ANNOTATE_ROWS",
        et::MARIADB_BINLOG_CHECKPOINT => "BINLOG_CHECKPOINT",
        et::MARIADB_GTID => "MARIADB_GTID",
        et::MARIADB_GTID_LIST => "GTID_LIST",
        et::MARIADB_START_ENCRYPTION => "START_ENCRYPTION",
        et::MARIADB_QUERY_COMPRESSED => "QUERY_COMPRESSED",
        et::MARIADB_WRITE_ROWS_COMPRESSED_V1 | et::MARIADB_WRITE_ROWS_COMPRESSED => "WRITE_ROWS_COMPRESSED",
        et::MARIADB_UPDATE_ROWS_COMPRESSED_V1 | et::MARIADB_UPDATE_ROWS_COMPRESSED => "UPDATE_ROWS_COMPRESSED",
        et::MARIADB_DELETE_ROWS_COMPRESSED_V1 | et::MARIADB_DELETE_ROWS_COMPRESSED => "DELETE_ROWS_COMPRESSED",
        5 => "INTVAR",
        13 => "RAND",
        14 => "USER_VAR",
        29 => "ROWS_QUERY",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A whole event without checksum: the 19-byte header (size and type filled in), then
    /// `body`. The decoder starts without checksums, as a replica stream does.
    pub(crate) fn raw_event(type_code: u8, server_id: u32, body: &[u8]) -> Vec<u8> {
        let mut raw = Vec::with_capacity(HEADER_LEN + body.len());
        raw.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        raw.push(type_code);
        raw.extend_from_slice(&server_id.to_le_bytes());
        raw.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
        raw.extend_from_slice(&0u32.to_le_bytes());
        raw.extend_from_slice(&0u16.to_le_bytes());
        raw.extend_from_slice(body);
        raw
    }

    /// The artificial ROTATE a replica stream starts with names the file without the
    /// checksum bytes, whether the server sent one or not.
    #[test]
    fn the_first_rotate_of_a_stream_names_the_file_with_or_without_a_checksum() {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"bin.000001");
        let plain = raw_event(et::ROTATE, 1, &body);
        let mut with_crc = plain.clone();
        let size = (with_crc.len() + CHECKSUM_LEN) as u32;
        with_crc[9..13].copy_from_slice(&size.to_le_bytes());
        let crc = crc32fast::hash(&with_crc);
        with_crc.extend_from_slice(&crc.to_le_bytes());
        for raw in [&plain, &with_crc] {
            let event = EventDecoder::new().decode(raw).unwrap();
            match event.body {
                EventBody::Rotate { position, next_file } => {
                    assert_eq!((position, next_file.as_ref()), (4, "bin.000001"));
                }
                other => panic!("not a ROTATE: {other:?}"),
            }
        }
    }

    /// A TABLE_MAP body (6-byte table id) for `schema.table` with one INT column and one
    /// VARCHAR(10) column, and the column names as optional metadata.
    pub(crate) fn table_map_body(table_id: u64, schema: &str, table: &str) -> Vec<u8> {
        let mut b = table_id.to_le_bytes()[..6].to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.push(schema.len() as u8);
        b.extend_from_slice(schema.as_bytes());
        b.push(0);
        b.push(table.len() as u8);
        b.extend_from_slice(table.as_bytes());
        b.push(0);
        b.push(2); // columns
        b.extend_from_slice(&[
            crate::table_map::column_type::LONG,
            crate::table_map::column_type::VARCHAR,
        ]);
        b.extend_from_slice(&[2, 10, 0]); // metadata block: VARCHAR max length 10
        b.push(0b10); // second column nullable
        b.push(4); // COLUMN_NAME
        b.extend_from_slice(&[7, 2, b'i', b'd', 3, b'n', b'a', b'm']);
        b
    }

    #[test]
    fn an_identical_table_map_comes_back_from_the_cache() {
        let mut decoder = EventDecoder::new();
        let first = table_map_body(42, "shop", "orders");
        let decode = |decoder: &mut EventDecoder, body: &[u8]| match decoder
            .decode(&raw_event(et::TABLE_MAP, 1, body))
            .unwrap()
            .body
        {
            EventBody::TableMap(map) => map,
            other => panic!("TABLE_MAP expected, got {other:?}"),
        };
        let a = decode(&mut decoder, &first);
        assert_eq!(
            (a.table_id, a.schema.as_str(), a.table.as_str()),
            (42, "shop", "orders")
        );
        assert_eq!(a.names.as_deref(), Some(&["id".to_string(), "nam".to_string()][..]));
        let b = decode(&mut decoder, &first);
        assert!(Arc::ptr_eq(&a, &b), "identical body must not be decoded again");

        // Same table id, different body (the table was renamed): decoded afresh.
        let renamed = decode(&mut decoder, &table_map_body(42, "shop", "orders2"));
        assert!(!Arc::ptr_eq(&a, &renamed));
        assert_eq!(renamed.table, "orders2");
        // And the cache now holds the new body, not the old one.
        let again = decode(&mut decoder, &first);
        assert!(!Arc::ptr_eq(&renamed, &again) && !Arc::ptr_eq(&a, &again));
        assert_eq!(*again, *a);

        // Another table id with the same names is its own entry.
        let other = decode(&mut decoder, &table_map_body(43, "shop", "orders"));
        assert_eq!(other.table_id, 43);
        assert!(Arc::ptr_eq(
            &other,
            &decode(&mut decoder, &table_map_body(43, "shop", "orders"))
        ));
    }

    #[test]
    fn a_corrupt_table_map_is_an_error_every_time_not_cached() {
        let mut decoder = EventDecoder::new();
        let mut body = table_map_body(7, "s", "t");
        body.truncate(body.len() - 12); // cut into the column types
        for _ in 0..2 {
            let err = decoder.decode(&raw_event(et::TABLE_MAP, 1, &body)).unwrap_err();
            assert!(err.to_string().contains("TABLE_MAP"), "{err}");
        }
        let short = decoder.decode(&raw_event(et::TABLE_MAP, 1, &[1, 2, 3])).unwrap_err();
        assert!(short.to_string().contains("truncated TABLE_MAP"), "{short}");
    }

    /// A v2 compressed rows event (type 169-171, which MariaDB defines but does not write by
    /// default): its row images decompress and decode like a plain WRITE_ROWS event's.
    #[test]
    fn a_v2_compressed_rows_event_decodes_its_rows() {
        let mut decoder = EventDecoder::new();
        let map = match decoder
            .decode(&raw_event(et::TABLE_MAP, 1, &table_map_body(9, "s", "t")))
            .unwrap()
            .body
        {
            EventBody::TableMap(map) => map.to_table_def(),
            other => panic!("TABLE_MAP expected, got {other:?}"),
        };
        // Two rows: (5, 'five') and (-1, NULL).
        let images = [
            &[0b00u8, 5, 0, 0, 0, 4, b'f', b'i', b'v', b'e'][..],
            &[0b10, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        let mut body = 9u64.to_le_bytes()[..6].to_vec();
        body.extend_from_slice(&crate::rows::STMT_END_FLAG.to_le_bytes());
        body.extend_from_slice(&2u16.to_le_bytes()); // extra data: just its own length
        body.push(2); // columns
        body.push(0b11); // both present
        body.extend_from_slice(&crate::compressed::tests::mariadb_compress(&images));
        let raw = raw_event(et::MARIADB_WRITE_ROWS_COMPRESSED, 1, &body);
        let event = decoder.decode(&raw).unwrap();
        let EventBody::Rows(rows) = event.body else {
            panic!("rows expected")
        };
        assert_eq!(
            (rows.table_id, rows.kind, rows.is_statement_end()),
            (9, RowsKind::Write, true)
        );
        let got: Vec<_> = rows.rows(&map).unwrap().map(Result::unwrap).collect();
        use crate::{RowChange::Insert, Value};
        assert_eq!(
            got,
            vec![
                Insert(vec![Value::Int(5), Value::Text("five".into())]),
                Insert(vec![Value::Int(-1), Value::Null])
            ]
        );

        // The same event with its compressed block cut short is an error, not a panic.
        let cut = &body[..body.len() - 5];
        assert!(decoder
            .decode(&raw_event(et::MARIADB_WRITE_ROWS_COMPRESSED, 1, cut))
            .is_err());
    }

    #[test]
    fn a_compressed_query_event_yields_its_statement() {
        let sql = "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(100))";
        let mut body = Vec::new();
        body.extend_from_slice(&7u32.to_le_bytes()); // thread id
        body.extend_from_slice(&0u32.to_le_bytes()); // exec time
        body.push(4); // schema length
        body.extend_from_slice(&0u16.to_le_bytes()); // error code
        body.extend_from_slice(&0u16.to_le_bytes()); // no status variables
        body.extend_from_slice(b"shop\0");
        body.extend_from_slice(&crate::compressed::tests::mariadb_compress(sql.as_bytes()));
        let mut decoder = EventDecoder::new();
        match decoder
            .decode(&raw_event(et::MARIADB_QUERY_COMPRESSED, 1, &body))
            .unwrap()
            .body
        {
            EventBody::Query {
                schema,
                sql: got,
                error_code,
            } => {
                assert_eq!((schema.as_str(), got.as_ref(), error_code), ("shop", sql, 0));
            }
            other => panic!("QUERY expected, got {other:?}"),
        }
    }

    #[test]
    fn start_encryption_is_refused_by_name() {
        let mut decoder = EventDecoder::new();
        let err = decoder
            .decode(&raw_event(
                et::MARIADB_START_ENCRYPTION,
                1,
                &[1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            ))
            .unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)));
        assert!(err.to_string().contains("START_ENCRYPTION"), "{err}");
    }

    #[test]
    fn annotate_rows_keeps_the_statement_as_bytes() {
        let mut decoder = EventDecoder::new();
        let sql = b"INSERT INTO t VALUES ('\xff')";
        match decoder
            .decode(&raw_event(et::MARIADB_ANNOTATE_ROWS, 1, sql))
            .unwrap()
            .body
        {
            EventBody::AnnotateRows { sql: got } => assert_eq!(got, sql),
            other => panic!("ANNOTATE_ROWS expected, got {other:?}"),
        }
    }
}
