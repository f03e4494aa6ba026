//! The library's error type.

use std::io;
use std::time::Duration;

use crate::codec::CodecError;
use crate::ending::SessionEnd;
use crate::protocol::ErrorCode;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `relay-core`, phrased for the person reading it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay's address could not be resolved or connected to.
    #[error("cannot reach the relay at {addr}: {source}")]
    Connect {
        /// What was dialed, as given.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The relay answered the handshake with an error.
    #[error("the relay refused: {message}")]
    Rejected {
        /// Machine-readable reason.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
    },
    /// The peer is not a relay, or speaks another protocol version.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame could not be read or written.
    #[error("protocol error: {0}")]
    Codec(#[from] CodecError),
    /// A deadline passed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// An established session (a tunnel, or an offer waiting for its receiver) ended.
    #[error("{0}")]
    SessionLost(SessionEnd),
    /// A setting is out of range or contradicts another.
    #[error("invalid setting: {0}")]
    Config(String),
    /// TLS could not be set up: a certificate, key or CA file, or the handshake.
    #[error("TLS: {0}")]
    Tls(String),
    /// A socket or file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    pub(crate) fn timeout(what: &'static str, after: Duration) -> Self {
        Error::Timeout { what, after }
    }
}
