//! MySQL 8.0.20+ TRANSACTION_PAYLOAD events (`binlog_transaction_compression=ON`): one event
//! holding a whole transaction's events (GTID excepted), normally zstd-compressed.
//!
//! Hand-written (the framing is MySQL's; `mysql_common`'s parser unwraps on an unknown
//! compression type, so corrupt input would panic there); the zstd stream is decoded by the
//! `zstd` crate.
//!
//! Layout (MySQL source, `libbinlogevents` `Transaction_payload_event` and its codec
//! `binary::Transaction_payload`): the body starts with fields, each a
//! `net_field_length`-encoded type, a `net_field_length`-encoded length of the value, and the
//! value (itself `net_field_length`-encoded): 1 = payload size, 2 = compression type
//! (0 = ZSTD, 255 = NONE), 3 = uncompressed size; type 0 ends the header and has no length.
//! The payload follows: the transaction's events one after the other, each a full event with
//! its 19-byte header and **without** a checksum (the payload event itself carries the
//! checksum for all of them).

use std::io::Read;

use crate::bytes::Cursor;
use crate::error::DecodeError;
use crate::file::BinlogFileReader;

const WHAT: &str = "TRANSACTION_PAYLOAD event";

mod field {
    pub const END_MARK: u64 = 0;
    pub const PAYLOAD_SIZE: u64 = 1;
    pub const COMPRESSION_TYPE: u64 = 2;
    pub const UNCOMPRESSED_SIZE: u64 = 3;
}

/// How the payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadCompression {
    Zstd,
    None,
}

/// A TRANSACTION_PAYLOAD event; [`TransactionPayload::events`] streams the events inside it.
#[derive(Clone, Debug)]
pub struct TransactionPayload<'a> {
    pub compression: PayloadCompression,
    /// What the server says the payload decompresses to (absent for uncompressed payloads).
    pub uncompressed_size: Option<u64>,
    payload: &'a [u8],
}

impl<'a> TransactionPayload<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(body, WHAT);
        let (mut payload_size, mut compression, mut uncompressed_size) = (None, None, None);
        loop {
            let kind = cur.lenenc()?;
            if kind == field::END_MARK {
                break;
            }
            let len = usize::try_from(cur.lenenc()?).map_err(|_| DecodeError::invalid(WHAT, "field length"))?;
            let value = cur.take(len)?;
            let number = || -> Result<u64, DecodeError> {
                let mut c = Cursor::new(value, WHAT);
                let n = c.lenenc()?;
                if !c.is_empty() {
                    return Err(DecodeError::invalid(
                        WHAT,
                        format!("field {kind} longer than its value"),
                    ));
                }
                Ok(n)
            };
            match kind {
                field::PAYLOAD_SIZE => payload_size = Some(number()?),
                field::COMPRESSION_TYPE => {
                    compression = Some(match number()? {
                        0 => PayloadCompression::Zstd,
                        255 => PayloadCompression::None,
                        other => {
                            return Err(DecodeError::Unsupported(format!(
                                "{WHAT}: compression type {other} (MySQL writes 0, zstd, or 255, none)"
                            )))
                        }
                    })
                }
                field::UNCOMPRESSED_SIZE => uncompressed_size = Some(number()?),
                // Fields of later servers are skipped by their length, as MySQL does.
                _ => {}
            }
        }
        let payload_size = payload_size.ok_or_else(|| DecodeError::invalid(WHAT, "no payload size field"))?;
        let compression = compression.ok_or_else(|| DecodeError::invalid(WHAT, "no compression type field"))?;
        let rest = cur.rest();
        if payload_size != rest.len() as u64 {
            return Err(DecodeError::invalid(
                WHAT,
                format!("payload size {payload_size} but {} bytes follow the header", rest.len()),
            ));
        }
        Ok(TransactionPayload {
            compression,
            uncompressed_size,
            payload: rest,
        })
    }

    /// The payload as stored (compressed or not).
    pub fn raw_payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The events inside, decompressed as they are read: at most one inner event is held in
    /// memory at a time, and nothing is sized from the (untrusted) uncompressed size. Decode
    /// each with [`crate::EventDecoder::decode_payload_event`].
    pub fn events(&self) -> Result<PayloadEvents<'a>, DecodeError> {
        let input = match self.compression {
            // zstd keeps its own window (at most 2^27 bytes, the library's default limit).
            PayloadCompression::Zstd => PayloadInput::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(self.payload)
                    .map_err(|e| DecodeError::invalid(WHAT, format!("zstd: {e}")))?,
            )),
            PayloadCompression::None => PayloadInput::Plain(self.payload),
        };
        Ok(PayloadEvents {
            reader: BinlogFileReader::without_magic(input, "transaction payload"),
            expected_size: self
                .uncompressed_size
                .filter(|_| self.compression == PayloadCompression::Zstd),
        })
    }
}

/// The decompressed byte stream of a payload.
pub(crate) enum PayloadInput<'a> {
    Zstd(Box<zstd::stream::read::Decoder<'static, &'a [u8]>>),
    Plain(&'a [u8]),
}

impl Read for PayloadInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PayloadInput::Zstd(d) => d.read(buf),
            PayloadInput::Plain(p) => p.read(buf),
        }
    }
}

/// The raw events of a transaction payload, read one at a time.
pub struct PayloadEvents<'a> {
    reader: BinlogFileReader<PayloadInput<'a>>,
    expected_size: Option<u64>,
}

impl PayloadEvents<'_> {
    /// The next inner event (header included, no checksum) and its offset in the
    /// decompressed payload; `None` after the last one.
    pub fn next_event(&mut self) -> Result<Option<(u64, &[u8])>, DecodeError> {
        let at = self.reader.offset();
        let expected_size = self.expected_size;
        match self.reader.next_event() {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) => match expected_size {
                Some(size) if size != at => Err(DecodeError::invalid(
                    WHAT,
                    format!("payload decompressed to {at} bytes, header says {size}"),
                )),
                _ => Ok(None),
            },
            Err(e) => Err(DecodeError::invalid(
                WHAT,
                format!("inner event at payload offset {}: {}", e.offset, e.error),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    //! No fixture in `crates/sluice-binlog/tests/fixtures/mysql-binlogs` holds a TRANSACTION_PAYLOAD event and no
    //! MySQL 8 server runs here, so these payloads are built byte by byte from the documented
    //! layout (module docs): inner events without checksums, zstd-compressed with the `zstd`
    //! crate at MySQL's default level (3).

    use super::*;
    use crate::event::event_type as et;
    use crate::event::tests::{raw_event, table_map_body};
    use crate::{EventBody, EventDecoder, RowChange, Value};

    fn lenenc(n: u64) -> Vec<u8> {
        match n {
            0..=250 => vec![n as u8],
            251..=0xffff => [&[0xfc][..], &(n as u16).to_le_bytes()].concat(),
            0x1_0000..=0xff_ffff => [&[0xfd][..], &(n as u32).to_le_bytes()[..3]].concat(),
            _ => [&[0xfe][..], &n.to_le_bytes()].concat(),
        }
    }

    /// A header field: type, length of the value, value.
    fn field(kind: u64, value: u64) -> Vec<u8> {
        let v = lenenc(value);
        [lenenc(kind), lenenc(v.len() as u64), v].concat()
    }

    /// The body of a TRANSACTION_PAYLOAD event holding `inner` (concatenated raw events).
    fn payload_body(inner: &[u8], compression: u64) -> Vec<u8> {
        let payload = if compression == 0 {
            zstd::stream::encode_all(inner, 3).unwrap()
        } else {
            inner.to_vec()
        };
        let mut body = field(field::COMPRESSION_TYPE, compression);
        if compression == 0 {
            body.extend(field(field::UNCOMPRESSED_SIZE, inner.len() as u64));
        }
        body.extend(field(field::PAYLOAD_SIZE, payload.len() as u64));
        body.extend(lenenc(field::END_MARK));
        body.extend(payload);
        body
    }

    /// A WRITE_ROWS (v2) event inserting `(id, name)` rows into the table of `table_map_body`.
    fn write_rows(table_id: u64, rows: &[(i32, &str)]) -> Vec<u8> {
        let mut b = table_id.to_le_bytes()[..6].to_vec();
        b.extend_from_slice(&crate::rows::STMT_END_FLAG.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.push(2);
        b.push(0b11);
        for (id, name) in rows {
            b.push(0);
            b.extend_from_slice(&id.to_le_bytes());
            b.push(name.len() as u8);
            b.extend_from_slice(name.as_bytes());
        }
        raw_event(et::WRITE_ROWS, 8, &b)
    }

    /// BEGIN, TABLE_MAP, two WRITE_ROWS, XID: what MySQL puts in a payload for an INSERT.
    fn transaction(rows_events: usize) -> Vec<u8> {
        let mut begin = vec![0u8; 13];
        begin[8] = 4; // schema length
        begin.extend_from_slice(b"shop\0BEGIN");
        let mut inner = raw_event(et::QUERY, 8, &begin);
        inner.extend(raw_event(et::TABLE_MAP, 8, &table_map_body(77, "shop", "items")));
        for i in 0..rows_events {
            let id = i as i32 * 2;
            inner.extend(write_rows(77, &[(id, "kettle"), (id + 1, "toaster")]));
        }
        inner.extend(raw_event(et::XID, 8, &99u64.to_le_bytes()));
        inner
    }

    /// Decodes the payload event's inner events: (type codes, inserted rows).
    fn decode_payload(decoder: &mut EventDecoder, raw: &[u8]) -> Result<(Vec<u8>, Vec<RowChange>), DecodeError> {
        let event = decoder.decode(raw)?;
        let EventBody::TransactionPayload(payload) = event.body else {
            panic!("TRANSACTION_PAYLOAD expected")
        };
        let mut events = payload.events()?;
        let (mut codes, mut rows, mut table) = (Vec::new(), Vec::new(), None);
        while let Some((_, inner)) = events.next_event()? {
            let event = decoder.decode_payload_event(inner)?;
            codes.push(event.header.type_code);
            match event.body {
                EventBody::TableMap(map) => table = Some(map.to_table_def()),
                EventBody::Rows(r) => {
                    for change in r.rows(table.as_ref().unwrap())? {
                        rows.push(change?);
                    }
                }
                _ => {}
            }
        }
        Ok((codes, rows))
    }

    #[test]
    fn a_zstd_payload_yields_its_events_and_rows() {
        let inner = transaction(2);
        let raw = raw_event(et::TRANSACTION_PAYLOAD, 8, &payload_body(&inner, 0));
        let mut decoder = EventDecoder::new();
        let EventBody::TransactionPayload(p) = decoder.decode(&raw).unwrap().body else {
            panic!("TRANSACTION_PAYLOAD expected")
        };
        assert_eq!(p.compression, PayloadCompression::Zstd);
        assert_eq!(p.uncompressed_size, Some(inner.len() as u64));
        assert!(p.raw_payload().len() < inner.len());
        let (codes, rows) = decode_payload(&mut decoder, &raw).unwrap();
        assert_eq!(
            codes,
            vec![et::QUERY, et::TABLE_MAP, et::WRITE_ROWS, et::WRITE_ROWS, et::XID]
        );
        let row = |id: i64, name: &str| RowChange::Insert(vec![Value::Int(id), Value::Text(name.into())]);
        assert_eq!(
            rows,
            vec![row(0, "kettle"), row(1, "toaster"), row(2, "kettle"), row(3, "toaster")]
        );
    }

    #[test]
    fn an_uncompressed_payload_yields_the_same_events() {
        let raw = raw_event(et::TRANSACTION_PAYLOAD, 8, &payload_body(&transaction(1), 255));
        let (codes, rows) = decode_payload(&mut EventDecoder::new(), &raw).unwrap();
        assert_eq!(codes, vec![et::QUERY, et::TABLE_MAP, et::WRITE_ROWS, et::XID]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn a_large_payload_is_read_one_inner_event_at_a_time() {
        // 20,000 rows events, about 0.9 MB decompressed: the reader's buffer only ever holds
        // one of them (it is the reader of binlog files, which reuses one buffer).
        let inner = transaction(20_000);
        let raw = raw_event(et::TRANSACTION_PAYLOAD, 8, &payload_body(&inner, 0));
        let (codes, rows) = decode_payload(&mut EventDecoder::new(), &raw).unwrap();
        assert_eq!((codes.len(), rows.len()), (20_003, 40_000));
    }

    #[test]
    fn corrupt_payloads_are_errors() {
        let inner = transaction(1);
        let good = payload_body(&inner, 0);
        let decode =
            |body: &[u8]| decode_payload(&mut EventDecoder::new(), &raw_event(et::TRANSACTION_PAYLOAD, 8, body));
        assert!(decode(&good).is_ok());

        // Unknown compression type, missing fields, payload size disagreeing with the bytes.
        let err = decode(&payload_body(&inner, 7)).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)), "{err}");
        assert!(decode(&[0]).unwrap_err().to_string().contains("no payload size"));
        let mut short = good.clone();
        short.pop();
        assert!(decode(&short).unwrap_err().to_string().contains("payload size"));

        // The declared uncompressed size disagreeing with the data.
        let mut wrong_size = field(field::COMPRESSION_TYPE, 0);
        wrong_size.extend(field(field::UNCOMPRESSED_SIZE, inner.len() as u64 + 1));
        let compressed = zstd::stream::encode_all(&inner[..], 3).unwrap();
        wrong_size.extend(field(field::PAYLOAD_SIZE, compressed.len() as u64));
        wrong_size.push(0);
        wrong_size.extend(&compressed);
        assert!(decode(&wrong_size).unwrap_err().to_string().contains("header says"));

        // Damaged zstd data, and an inner event cut short.
        let mut damaged = good.clone();
        let n = damaged.len();
        damaged[n - 8..].iter_mut().for_each(|b| *b ^= 0x5a);
        assert!(decode(&damaged).is_err());
        let cut = payload_body(&inner[..inner.len() - 3], 255);
        assert!(decode(&cut).unwrap_err().to_string().contains("inner event"));

        // Events that cannot be inside a payload.
        let mut nested = inner.clone();
        nested.extend(raw_event(et::TRANSACTION_PAYLOAD, 8, &payload_body(&inner, 255)));
        assert!(decode(&payload_body(&nested, 255))
            .unwrap_err()
            .to_string()
            .contains("inside the payload"));
    }

    #[test]
    fn a_huge_inner_event_size_is_an_error_without_a_huge_allocation() {
        // One inner header claiming 1 GiB, followed by a few bytes.
        let mut inner = raw_event(et::XID, 8, &[0; 8]);
        inner[9..13].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let raw = raw_event(et::TRANSACTION_PAYLOAD, 8, &payload_body(&inner, 0));
        let err = decode_payload(&mut EventDecoder::new(), &raw).unwrap_err();
        assert!(err.to_string().contains("inner event at payload offset 0"), "{err}");
    }
}
