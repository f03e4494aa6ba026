//! [`TunnelStream`]: one visitor's connection, as the tunnel client serves it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::DropGuard;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::visitor::Visitor;
use crate::mux::Substream;

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
#[derive(Debug)]
pub struct TunnelStream {
    inner: Substream,
    visitor: Visitor,
    // Dropped after `inner`: the stream's close is queued before the session may end.
    _guard: StreamGuard,
}

impl TunnelStream {
    pub(super) fn new(inner: Substream, visitor: Visitor, guard: StreamGuard) -> Self {
        TunnelStream {
            inner,
            visitor,
            _guard: guard,
        }
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

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
