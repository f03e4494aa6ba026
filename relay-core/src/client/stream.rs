//! [`TunnelStream`]: one visitor's connection, as the tunnel client serves it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::DropGuard;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::resets::StreamReset;
use super::visitor::Visitor;
use crate::mux::Substream;
use crate::reset::Side;

/// Keeps a client's session up while it lives: every listener, every accepted stream and every
/// visitor not yet answered holds one. When the last is dropped the client says goodbye to the
/// relay, which frees the public ports.
#[derive(Debug)]
pub(super) struct Hold {
    pub(super) _stop_on_drop: DropGuard,
}

/// What an accepted stream (or a visitor not yet answered) holds: the session, and its place
/// among the open streams that a shutdown waits for.
#[derive(Debug)]
pub(super) struct StreamGuard {
    pub(super) _open: TaskTrackerToken,
    pub(super) _hold: Arc<Hold>,
}

/// A visitor's connection: a tokio `AsyncRead + AsyncWrite` byte stream, what a `TcpStream`
/// accepted from a `TcpListener` is.
///
/// Like a `TcpStream`, it lives on when its [`TunnelListener`](super::TunnelListener) is
/// dropped: the session to the relay stays up until the listener and every stream are gone
/// (or until [`TunnelListener::shutdown`](super::TunnelListener::shutdown)).
///
/// Ending it:
/// * `shutdown()` (from `AsyncWriteExt`) sends the visitor a clean end of stream (TCP FIN)
///   after every byte written; reading may go on until the visitor closes its side too.
///   hyper, axum and `tokio::io::copy`-style loops do this when they finish.
/// * Dropping a stream that was not shut down **resets** the visitor's connection, like a
///   `TcpStream` closed with `SO_LINGER` 0: a service that fails halfway can never pass a
///   truncated answer for a complete one.
/// * A read that finds the stream reset, or the session lost, fails with
///   `ConnectionReset` instead of returning a clean end of stream.
/// * When the relay resets the stream (the visitor went away), reads and writes fail with
///   `ConnectionReset`, those already waiting included.
#[derive(Debug)]
pub struct TunnelStream {
    /// `None` once the relay has reset it: the yamux stream is dropped then.
    inner: Option<Substream>,
    visitor: Visitor,
    reset: StreamReset,
    // Dropped after `inner`: the stream's close is queued before the session may end.
    _guard: StreamGuard,
}

impl TunnelStream {
    pub(super) fn new(
        inner: Substream,
        visitor: Visitor,
        guard: StreamGuard,
        reset: StreamReset,
    ) -> Self {
        TunnelStream {
            inner: Some(inner),
            visitor,
            reset,
            _guard: guard,
        }
    }

    /// The yamux stream, unless the relay reset it.
    fn live(&mut self) -> io::Result<&mut Substream> {
        if self.reset.is_reset() {
            self.inner = None;
        }
        self.inner.as_mut().ok_or_else(reset_by_relay)
    }

    /// Completes `polled` (a pending operation on the stream) with an error if the relay
    /// reset the stream, now or later: a parked read or write is woken for it.
    fn unless_reset<T>(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_pending() && self.reset.poll_reset(cx, side).is_ready() {
            self.inner = None;
            return Poll::Ready(Err(reset_by_relay()));
        }
        polled
    }

    /// The visitor's address, as the relay saw it (what `TcpStream::peer_addr` is).
    pub fn peer_addr(&self) -> SocketAddr {
        self.visitor.addr
    }

    /// The address on the relay the visitor connected to: the tunnel's public port, with the
    /// relay's own IP (what `TcpStream::local_addr` is).
    pub fn local_addr(&self) -> SocketAddr {
        self.visitor.relay_addr
    }

    /// Who is on the other end.
    pub fn visitor(&self) -> Visitor {
        self.visitor
    }

    /// The relay's id for this visitor (matches the relay's logs, and [`Visitor::id`]).
    pub fn id(&self) -> u64 {
        self.visitor.id
    }
}

fn reset_by_relay() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the relay reset the visitor's stream (the visitor went away)",
    )
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        // Closed on our side only: yamux would drop it without a word, and a relay out of
        // credit on it would hold the visitor for ever (see `resets`).
        if self.inner.as_ref().is_some_and(Substream::drop_is_silent) {
            self.reset.tell_relay();
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(self.live()?).poll_read(cx, buf);
        self.unless_reset(cx, Side::Read, polled)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.live()?).poll_write(cx, buf);
        self.unless_reset(cx, Side::Write, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(self.live()?).poll_flush(cx);
        self.unless_reset(cx, Side::Write, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(self.live()?).poll_shutdown(cx);
        self.unless_reset(cx, Side::Write, polled)
    }
}
