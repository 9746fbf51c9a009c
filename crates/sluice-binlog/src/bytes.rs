//! A bounds-checked little cursor over event bytes. Every read checks the remaining length
//! so that truncated or corrupt input is an error, never a panic.

use crate::error::DecodeError;

#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, what }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated {
                what: self.what,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Little-endian unsigned integer of `n` (1..=8) bytes.
    pub(crate) fn uint_le(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(le_uint(self.take(n)?))
    }

    /// Length-encoded integer, as the client/server protocol defines it.
    pub(crate) fn lenenc(&mut self) -> Result<u64, DecodeError> {
        match self.u8()? {
            n @ 0..=0xfa => Ok(u64::from(n)),
            0xfc => self.uint_le(2),
            0xfd => self.uint_le(3),
            0xfe => self.uint_le(8),
            other => Err(DecodeError::invalid(
                self.what,
                format!("length-encoded integer prefix {other:#x}"),
            )),
        }
    }

    pub(crate) fn lenenc_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.lenenc()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::invalid(self.what, "length overflows"))?;
        self.take(n)
    }
}

pub(crate) fn le_uint(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(8) {
        v |= u64::from(*byte) << (8 * i);
    }
    v
}

pub(crate) fn be_uint(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for byte in b.iter().take(8) {
        v = (v << 8) | u64::from(*byte);
    }
    v
}
