//! The library's error type: one variant per thing a user can act on, each phrased as the one
//! line `send` or `receive` prints before exiting non-zero.

use std::io;
use std::time::Duration;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can end a transfer early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relay could not be reached, refused us, or broke the rendezvous protocol.
    #[error("{0}")]
    Relay(relay_core::Error),
    /// The relay holds no offer under the code's number: mistyped, already used, or expired.
    #[error("unknown or already used code: {0}")]
    UnknownCode(String),
    /// The text given as a code is not shaped like one.
    #[error("not a valid code: {0}")]
    InvalidCode(String),
    /// The key exchange showed that the two sides used different codes.
    #[error(
        "wrong code: the other side used a different code (mistyped, or someone tried to guess it); \
         nothing was transferred"
    )]
    WrongCode,
    /// The connection to the peer ended or broke before the transfer was complete. Through a
    /// relay that splices bytes, a relay that died and a peer that left look the same (a reset
    /// or an end of stream), so the message names both.
    #[error("the connection through the relay was cut {when}; the relay or the {peer} went away")]
    PeerVanished {
        /// `"sender"` or `"receiver"`.
        peer: &'static str,
        /// When it happened, e.g. `"mid-transfer (connection reset)"`.
        when: String,
    },
    /// The relay told us that the peer left before the two sides were paired.
    #[error("the {peer} went away before the transfer started ({message})")]
    PeerLeft {
        /// `"sender"` or `"receiver"`.
        peer: &'static str,
        /// The relay's explanation.
        message: String,
    },
    /// The peer stopped the transfer and said why.
    #[error("the {peer} stopped the transfer: {reason}")]
    PeerAborted {
        /// `"sender"` or `"receiver"`.
        peer: &'static str,
        /// The peer's explanation, already escaped for printing.
        reason: String,
    },
    /// The peer sent something this protocol does not allow (or another protocol version).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A record failed authentication, or the file's length or checksum did not match: the
    /// bytes were altered or lost on the way.
    #[error("the transfer was corrupted: {0}")]
    Corrupt(String),
    /// The file to send cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file, escaped for printing.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A file changed before or while it was sent (size, modification or change time, or
    /// identity moved): what arrived would be torn, so the transfer stops.
    #[error(
        "{path} changed: {what}; the transfer stopped and nothing was kept under its name \
         (send it again once it is stable)"
    )]
    Changed {
        /// The file, escaped for printing.
        path: String,
        /// What moved, e.g. `"its size changed while it was being sent"`.
        what: String,
    },
    /// Another `receive` is writing the same names into the same OUTDIR right now.
    #[error(
        "another receive is writing {what} into this OUTDIR right now; wait for it or use another OUTDIR"
    )]
    Busy {
        /// The names, quoted.
        what: String,
    },
    /// The file name is not acceptable (see [`crate::names`]).
    #[error("name refused: {0}")]
    NameRefused(String),
    /// The output file exists and `--force` was not given.
    #[error("{path} already exists; not overwriting it (use --force to replace it)")]
    Exists {
        /// The existing file, escaped for printing.
        path: String,
    },
    /// The output name is taken by a directory, which is never replaced, not even with
    /// `--force`.
    #[error(
        "{path} is a directory; not replacing it (--force replaces only files): \
         move it away or receive into another OUTDIR"
    )]
    IsDirectory {
        /// The directory, escaped for printing.
        path: String,
    },
    /// OUTDIR cannot be used: it, or a path on the way to it, is not a directory, or this
    /// process cannot write into it. Found before the code is used.
    #[error("cannot use {path} as OUTDIR: {why}")]
    BadOutdir {
        /// OUTDIR as given, escaped for printing.
        path: String,
        /// What is wrong and what to do, e.g. `"it is a file, not a directory"`.
        why: String,
    },
    /// The receiving file system ran out of space (or quota).
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The file being written, escaped for printing.
        path: String,
    },
    /// The output directory or file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path, escaped for printing.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// One of this program's own threads (the file reader or writer) failed: a fault on this
    /// machine, not the peer's or the network's.
    #[error("{thread} failed on this machine: {cause}")]
    LocalThread {
        /// `"the file reader"` or `"the file writer"`.
        thread: &'static str,
        /// What happened to it, e.g. a panic's message.
        cause: String,
    },
    /// A wait ran past its deadline.
    #[error("{what} (gave up after {after:?})")]
    Timeout {
        /// What did not happen in time.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The user interrupted the program (SIGINT or SIGTERM).
    #[error("interrupted {0}")]
    Cancelled(&'static str),
}

impl Error {
    /// Maps an error from the rendezvous with the relay, singling out the answers users can act
    /// on (an unknown nameplate is a mistyped or used code, not a relay fault).
    pub fn from_relay(e: relay_core::Error) -> Self {
        use relay_core::protocol::ErrorCode;
        match e {
            relay_core::Error::Rejected {
                code: ErrorCode::UnknownNameplate,
                message,
            } => Error::UnknownCode(message),
            relay_core::Error::Rejected {
                code: ErrorCode::PeerGone,
                message,
            } => Error::PeerLeft {
                peer: "sender",
                message,
            },
            e => Error::Relay(e),
        }
    }

    /// The reason sent to the peer in an abort record: what went wrong, without this side's
    /// local paths (the peer has no business knowing where files live here).
    pub fn reason_for_peer(&self) -> String {
        match self {
            Error::Exists { .. } => {
                "it already has a file of that name (it can retry with --force)".into()
            }
            Error::IsDirectory { .. } => "it has a directory of that name".into(),
            Error::BadOutdir { .. } => "it cannot write into its output directory".into(),
            Error::DiskFull { .. } => "its disk is full".into(),
            Error::LocalThread { thread, .. } => format!("{thread} failed on its side"),
            Error::Write { source, .. } => format!("it cannot write the file: {source}"),
            Error::Unreadable { source, .. } => format!("it cannot read a file: {source}"),
            Error::Changed { what, .. } => {
                format!("a file changed on its side ({what}); nothing was kept under its name")
            }
            Error::Busy { .. } => "another receive is writing the same names there".into(),
            Error::Cancelled(_) => "it was interrupted".into(),
            other => other.to_string(),
        }
    }

    /// Maps the failure of one of our own blocking threads (`thread`: "the file writer").
    pub(crate) fn local_thread(thread: &'static str, e: &tokio::task::JoinError) -> Self {
        Error::LocalThread {
            thread,
            cause: e.to_string(),
        }
    }

    /// Maps a socket error or end of stream while talking to `peer`.
    pub(crate) fn vanished(peer: &'static str, during: &str, e: &io::Error) -> Self {
        let why = match e.kind() {
            io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => "connection reset".to_string(),
            _ => e.to_string(),
        };
        Error::PeerVanished {
            peer,
            when: format!("{during} ({why})"),
        }
    }
}

/// Whether `e` means the file system is out of space or quota.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised_from_the_os_error() {
        // ENOSPC and EDQUOT on Linux.
        assert!(is_disk_full(&io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&io::Error::from_raw_os_error(122)));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(13)));
    }

    #[tokio::test]
    async fn a_failed_local_thread_is_not_called_a_protocol_error() {
        let join = tokio::task::spawn_blocking(|| panic!("deliberate"))
            .await
            .expect_err("panicked");
        let e = Error::local_thread("the file writer", &join);
        assert!(matches!(e, Error::LocalThread { .. }), "{e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("the file writer failed on this machine: ")
                && shown.contains("panicked")
                && shown.contains("deliberate"),
            "{shown}"
        );
        assert_eq!(e.reason_for_peer(), "the file writer failed on its side");
    }

    #[test]
    fn a_cut_connection_names_the_relay_and_the_peer() {
        let e = Error::vanished(
            "receiver",
            "mid-transfer",
            &io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert_eq!(
            e.to_string(),
            "the connection through the relay was cut mid-transfer (connection reset); \
             the relay or the receiver went away"
        );
    }

    #[test]
    fn unknown_nameplate_becomes_unknown_code() {
        let e = Error::from_relay(relay_core::Error::Rejected {
            code: relay_core::protocol::ErrorCode::UnknownNameplate,
            message: "no transfer is waiting under number 7".into(),
        });
        assert!(matches!(e, Error::UnknownCode(_)));
        assert!(e.to_string().starts_with("unknown or already used code"));
    }
}
