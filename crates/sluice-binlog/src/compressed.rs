//! MariaDB's compressed events (`log_bin_compress=ON`): QUERY_COMPRESSED and the
//! WRITE/UPDATE/DELETE_ROWS_COMPRESSED events carry their statement text or row images as one
//! compressed block; everything before it is laid out as in the uncompressed event.
//!
//! The block format is MariaDB's own (`binlog_buf_compress` in `sql/log_event.cc`), so it is
//! hand-written here; the zlib stream inside it is decoded by `flate2`. One header byte:
//! bit 7 always set, bits 4–6 the algorithm (0 = zlib, the only one), bits 0–2 how many bytes
//! (1–4) the uncompressed length takes; then that length, big-endian; then a zlib stream
//! (RFC 1950, with its Adler-32 check).

use std::io::Read;

use crate::bytes::{be_uint, Cursor};
use crate::error::DecodeError;

/// The largest uncompressed block accepted: MariaDB's own limit on an event
/// (`max_allowed_packet`, at most 1 GiB).
const MAX_UNCOMPRESSED: u64 = 1 << 30;

/// Decompresses one MariaDB compressed block. The output grows only as the zlib stream
/// actually produces bytes (never sized from the untrusted length field up front), is capped
/// at the declared length, and must match it exactly.
pub fn mariadb_uncompress(block: &[u8], what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut cur = Cursor::new(block, what);
    let head = cur.u8()?;
    if head & 0x80 == 0 {
        return Err(DecodeError::invalid(
            what,
            format!("compression header byte {head:#04x} lacks its marker bit"),
        ));
    }
    let algorithm = (head >> 4) & 0x07;
    if algorithm != 0 {
        return Err(DecodeError::Unsupported(format!(
            "{what}: compression algorithm {algorithm} (MariaDB writes only 0, zlib)"
        )));
    }
    let length_bytes = usize::from(head & 0x07);
    if !(1..=4).contains(&length_bytes) {
        return Err(DecodeError::invalid(
            what,
            format!("{length_bytes}-byte uncompressed length"),
        ));
    }
    let declared = be_uint(cur.take(length_bytes)?);
    if declared > MAX_UNCOMPRESSED {
        return Err(DecodeError::invalid(
            what,
            format!("uncompressed length {declared} beyond 1 GiB"),
        ));
    }
    let compressed = cur.rest();
    // A guess that avoids regrowing for typical ratios without trusting `declared`.
    let mut out = Vec::with_capacity((declared as usize).min(compressed.len().saturating_mul(8)).min(1 << 20));
    flate2::read::ZlibDecoder::new(compressed)
        .take(declared + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::invalid(what, format!("zlib data: {e}")))?;
    if out.len() as u64 != declared {
        return Err(DecodeError::invalid(
            what,
            format!("decompressed to {} bytes, header says {declared}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A block as MariaDB's `binlog_buf_compress` writes it: the smallest length field that
    /// holds the length, zlib data at the default level.
    pub(crate) fn mariadb_compress(data: &[u8]) -> Vec<u8> {
        let len = data.len() as u32;
        let length_bytes = match len {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            0x1_0000..=0xff_ffff => 3,
            _ => 4,
        };
        let mut out = vec![0x80 | length_bytes as u8];
        out.extend_from_slice(&len.to_be_bytes()[4 - length_bytes..]);
        let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn round_trips_blocks_of_every_length_field_size() {
        for len in [0usize, 10, 255, 256, 70_000, 17_000_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let block = mariadb_compress(&data);
            assert_eq!(mariadb_uncompress(&block, "test").unwrap(), data, "length {len}");
        }
    }

    #[test]
    fn corrupt_blocks_are_errors() {
        let good = mariadb_compress(b"INSERT INTO t VALUES (1), (2), (3)");
        // Marker bit missing, unknown algorithm, zero-byte length, truncated length.
        let mut no_marker = good.clone();
        no_marker[0] &= 0x7f;
        assert!(mariadb_uncompress(&no_marker, "t")
            .unwrap_err()
            .to_string()
            .contains("marker bit"));
        let mut other_alg = good.clone();
        other_alg[0] |= 0x10;
        assert!(matches!(
            mariadb_uncompress(&other_alg, "t"),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(mariadb_uncompress(&[0x80], "t").is_err());
        assert!(mariadb_uncompress(&[0x84, 0, 0], "t").is_err());
        // Length field disagreeing with the data, either way.
        let mut longer = good.clone();
        longer[1] += 1;
        assert!(mariadb_uncompress(&longer, "t")
            .unwrap_err()
            .to_string()
            .contains("header says"));
        let mut shorter = good.clone();
        shorter[1] -= 1;
        assert!(mariadb_uncompress(&shorter, "t")
            .unwrap_err()
            .to_string()
            .contains("header says"));
        // Damaged zlib data (Adler-32 or stream structure).
        let mut damaged = good.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(mariadb_uncompress(&damaged, "t").is_err());
        assert!(mariadb_uncompress(&good[..good.len() - 3], "t").is_err());
    }

    #[test]
    fn a_huge_declared_length_is_refused_without_allocating_it() {
        let mut block = vec![0x84, 0xff, 0xff, 0xff, 0xff];
        block.extend_from_slice(&mariadb_compress(b"x")[2..]);
        assert!(mariadb_uncompress(&block, "t")
            .unwrap_err()
            .to_string()
            .contains("beyond 1 GiB"));
        // 1 GiB declared, a few bytes of data: an error after decompressing what is there.
        let mut block = vec![0x84, 0x40, 0, 0, 0];
        block.extend_from_slice(&mariadb_compress(b"x")[2..]);
        assert!(mariadb_uncompress(&block, "t")
            .unwrap_err()
            .to_string()
            .contains("header says"));
    }
}
