//! What both ends of a transfer share: the conversation's limits, and how to end it early.
//!
//! After the key exchange the conversation (protocol version 2, `docs/filexfer.md` §3) is:
//!
//! ```text
//! sender                              receiver
//!   Hello { version, min, release } ◄──► Hello           (both at once; agree or fail naming both)
//!   Manifest × n, ManifestEnd   ──►
//!                               ◄──    Resume × m, Accept   (or Abort: name refused, exists, ...)
//!   per file: FileStart { index, offset }, Data × k, FileEnd { len, blake3 }
//!   Complete                    ──►
//!                               ◄──    Done              (verified, synced, moved into place)
//! ```
//!
//! Either side may send `Abort { reason }` at any point and then stop. `send` succeeds only on
//! `Done`; `receive` succeeds only once everything is verified and in place.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::message;
use crate::record::{Kind, ReadError, RecordBuf, RecordReader, RecordWriter};

/// Deadline for the key exchange once the relay has paired the two sides.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Read buffer in front of the peer's records.
const READ_BUFFER: usize = 64 * 1024;

/// Runs the key exchange on a freshly paired `stream` (bounded by [`HANDSHAKE_TIMEOUT`],
/// abandoned on `cancel`) and returns its two directions as encrypted record streams.
pub(crate) async fn secure<S>(
    mut stream: S,
    code: &crate::code::Code,
    role: crate::handshake::Role,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(
    RecordWriter<tokio::io::WriteHalf<S>>,
    RecordReader<tokio::io::BufReader<tokio::io::ReadHalf<S>>>,
)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = crate::handshake::handshake(&mut stream, code, role);
    let keys = tokio::select! {
        keys = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange) => keys.map_err(|_| Error::Timeout {
            what: "the key exchange did not finish",
            after: HANDSHAKE_TIMEOUT,
        })??,
        () = cancel.cancelled() => return Err(Error::Cancelled("during the key exchange")),
    };
    tracing::debug!("keys confirmed");
    let (rd, wr) = tokio::io::split(stream);
    Ok((
        RecordWriter::new(wr, keys.sealer),
        // Buffered: a small file's start, data and end records (tens of bytes to a few KiB
        // each) then cost one read instead of two per record; a 256 KiB data record mostly
        // bypasses the buffer.
        RecordReader::new(
            tokio::io::BufReader::with_capacity(READ_BUFFER, rd),
            keys.opener,
        ),
    ))
}

/// Longest time a running transfer may make no progress at all (no record written or read)
/// before it is given up. Generous: a receiver's disk may stall for a while under write-back.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a side that aborts waits for its abort record to reach the peer before closing.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Sends our hello and reads the peer's (the first record each way); returns the agreed
/// conversation version, or an error naming both sides' versions and releases.
pub(crate) async fn greet<R, W>(
    writer: &mut RecordWriter<W>,
    reader: &mut RecordReader<R>,
    peer: &'static str,
) -> Result<u16>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ours = message::Hello::ours();
    unstalled(async {
        writer
            .send(Kind::Hello, &ours.encode())
            .await
            .map_err(write_failed(peer, "before the transfer started"))
    })
    .await?;
    let mut buf = RecordBuf::new(crate::record::CONTROL_PAYLOAD);
    match unstalled(read(reader, &mut buf, peer, "before the transfer started")).await? {
        Some(Kind::Hello) => {
            let theirs = message::Hello::decode(buf.payload())?;
            let version = ours.agree(&theirs, peer)?;
            tracing::debug!(version, peer_release = %theirs.release, "protocol agreed");
            Ok(version)
        }
        other => Err(unexpected(other, "the peer's hello")),
    }
}

/// Runs `step` under [`STALL_TIMEOUT`].
pub(crate) async fn unstalled<T>(step: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STALL_TIMEOUT, step)
        .await
        .map_err(|_| Error::Timeout {
            what: "the transfer stalled: no data moved",
            after: STALL_TIMEOUT,
        })?
}

/// Reads one record for `peer` (`"sender"` / `"receiver"`), mapping transport failures to
/// [`Error::PeerVanished`] and an abort record to [`Error::PeerAborted`]. `Ok(None)` is a
/// clean end of stream.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    reader: &mut RecordReader<R>,
    buf: &mut RecordBuf,
    peer: &'static str,
    during: &str,
) -> Result<Option<Kind>> {
    match reader.read_record(buf).await {
        Ok(Some(Kind::Abort)) => Err(Error::PeerAborted {
            peer,
            reason: message::decode_reason(buf.payload()),
        }),
        Ok(kind) => Ok(kind),
        Err(ReadError::Io(e)) => Err(Error::vanished(peer, during, &e)),
        Err(ReadError::Invalid(e)) => Err(e),
    }
}

/// Maps a failed write to `peer`.
pub(crate) fn write_failed(peer: &'static str, during: &str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::vanished(peer, during, &e)
}

/// Tells the peer why we stop, then closes our side and waits briefly for the peer to close
/// its own. Closing with the peer's bytes still unread would make the kernel reset the
/// connection, and a reset can destroy the abort record before the peer reads it.
pub(crate) async fn abort<R, W>(
    writer: &mut RecordWriter<W>,
    reader: &mut RecordReader<R>,
    error: &Error,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The peer already knows when it is the one that stopped or vanished.
    if matches!(
        error,
        Error::PeerAborted { .. } | Error::PeerVanished { .. } | Error::PeerLeft { .. }
    ) {
        return;
    }
    let reason = error.reason_for_peer();
    let _ = tokio::time::timeout(ABORT_GRACE, async {
        writer
            .send(Kind::Abort, &message::encode_reason(&reason))
            .await?;
        writer.shutdown().await?;
        tokio::io::copy(reader.get_mut(), &mut tokio::io::sink()).await
    })
    .await;
}

/// A record of a kind the protocol does not allow at this point.
pub(crate) fn unexpected(kind: Option<Kind>, expected: &str) -> Error {
    match kind {
        Some(kind) => Error::Protocol(format!("expected {expected}, got a {kind:?} record")),
        None => Error::Protocol(format!("expected {expected}, the stream ended")),
    }
}
