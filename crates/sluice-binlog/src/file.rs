//! Reading binlog files from disk.

use std::io::Read;

use crate::error::{DecodeError, PositionedError};
use crate::event::{EventHeader, HEADER_LEN};

/// The four bytes every binlog file starts with.
pub const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];

/// Reads raw events (header included) one by one from a binlog file. Decoding is left to an
/// [`crate::EventDecoder`], so callers can skip events cheaply.
pub struct BinlogFileReader<R> {
    input: R,
    name: String,
    offset: u64,
    buf: Vec<u8>,
}

/// Events larger than this are refused as corrupt (MySQL's own limit is 1 GiB).
const MAX_EVENT_SIZE: u32 = 1 << 30;

/// Events up to this size are read into a buffer sized from their header (fast: one resize,
/// plain reads); larger ones grow the buffer only as their bytes arrive, so that a corrupt
/// size field costs at most this much memory, not `MAX_EVENT_SIZE`.
const PRESIZE_LIMIT: usize = 1 << 20;

impl<R: Read> BinlogFileReader<R> {
    /// Checks the magic number. `name` is used in error messages.
    pub fn new(mut input: R, name: impl Into<String>) -> Result<Self, PositionedError> {
        let name = name.into();
        let mut magic = [0u8; 4];
        read_full(&mut input, &mut magic)
            .map_err(|e| PositionedError {
                file: name.clone(),
                offset: 0,
                error: e,
            })?
            .then_some(())
            .ok_or_else(|| PositionedError {
                file: name.clone(),
                offset: 0,
                error: DecodeError::invalid("binlog file", "empty file"),
            })?;
        if magic != MAGIC {
            return Err(PositionedError {
                file: name,
                offset: 0,
                error: DecodeError::invalid(
                    "binlog file",
                    "missing the binlog magic number fe 62 69 6e: not a binlog file",
                ),
            });
        }
        Ok(BinlogFileReader {
            input,
            name,
            offset: 4,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Reads events from `input` that has no magic number in front of them: the events inside
    /// a MySQL TRANSACTION_PAYLOAD. Offsets count from the start of `input`.
    pub(crate) fn without_magic(input: R, name: impl Into<String>) -> Self {
        BinlogFileReader {
            input,
            name: name.into(),
            offset: 0,
            buf: Vec::new(),
        }
    }

    /// Offset of the next event in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next raw event and its offset, or `None` at a clean end of file.
    pub fn next_event(&mut self) -> Result<Option<(u64, &[u8])>, PositionedError> {
        let at = self.offset;
        let err = |source| PositionedError {
            file: self.name.clone(),
            offset: at,
            error: source,
        };
        self.buf.resize(HEADER_LEN, 0);
        let mut got = 0;
        while got < HEADER_LEN {
            match self.input.read(&mut self.buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err(DecodeError::invalid("binlog file", format!("read failed: {e}")))),
            }
        }
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(err(DecodeError::Truncated {
                what: "event header",
                needed: HEADER_LEN,
                available: got,
            }));
        }
        let header = EventHeader::parse(&self.buf).map_err(err)?;
        if (header.event_size as usize) < HEADER_LEN || header.event_size > MAX_EVENT_SIZE {
            return Err(err(DecodeError::invalid(
                "event header",
                format!("event size {}", header.event_size),
            )));
        }
        let size = header.event_size as usize;
        if size <= PRESIZE_LIMIT {
            // The common case: one resize of the reused buffer and plain reads into it.
            self.buf.resize(size, 0);
            let mut filled = HEADER_LEN;
            while filled < size {
                match self.input.read(&mut self.buf[filled..size]) {
                    Ok(0) => {
                        return Err(err(DecodeError::Truncated {
                            what: "event",
                            needed: size - HEADER_LEN,
                            available: filled - HEADER_LEN,
                        }))
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(err(DecodeError::invalid("binlog file", format!("read failed: {e}")))),
                }
            }
        } else {
            // Found by fuzzing: sizing the buffer from the header up front let a corrupt size
            // field (up to MAX_EVENT_SIZE) allocate a GiB for a few-byte file. Past
            // PRESIZE_LIMIT, read_to_end grows the buffer only as bytes actually arrive (and
            // retries on Interrupted).
            let body_len = (size - HEADER_LEN) as u64;
            if let Err(e) = (&mut self.input).take(body_len).read_to_end(&mut self.buf) {
                return Err(err(DecodeError::invalid("binlog file", format!("read failed: {e}"))));
            }
            let filled = self.buf.len();
            if filled < size {
                return Err(err(DecodeError::Truncated {
                    what: "event",
                    needed: size - HEADER_LEN,
                    available: filled - HEADER_LEN,
                }));
            }
        }
        self.offset += size as u64;
        Ok(Some((at, &self.buf[..size])))
    }
}

fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<bool, DecodeError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(DecodeError::Truncated {
                    what: "binlog file header",
                    needed: buf.len(),
                    available: got,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DecodeError::invalid("binlog file", format!("read failed: {e}"))),
        }
    }
    Ok(true)
}
