//! Decoder errors. They name the binlog offset and the problem, never row values.

/// What went wrong while decoding binlog bytes.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {what}: needed {needed} more bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("bad {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("checksum mismatch in {event} event: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        event: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl DecodeError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// A [`DecodeError`] with the place it happened.
#[derive(Debug, thiserror::Error)]
#[error("binlog {file} at offset {offset}: {error}")]
pub struct PositionedError {
    pub file: String,
    pub offset: u64,
    pub error: DecodeError,
}
