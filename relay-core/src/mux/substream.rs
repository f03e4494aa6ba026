//! [`Substream`]: one yamux stream as a tokio byte stream that reports cuts as errors.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// Hands out [`Substream`]s that know whether their connection was lost.
#[derive(Debug)]
pub(super) struct StreamFactory {
    pub(super) lost: Arc<AtomicBool>,
    pub(super) connection: u64,
}

impl StreamFactory {
    pub(super) fn wrap(&self, stream: yamux::Stream) -> Substream {
        Substream {
            inner: stream.compat(),
            we_closed: false,
            lost: self.lost.clone(),
            connection: self.connection,
        }
    }
}

/// One yamux stream as a tokio `AsyncRead + AsyncWrite`.
///
/// yamux reports a reset stream or a lost connection as a clean end of stream; this wrapper
/// reports it as `ConnectionReset`, so a dying tunnel can never pass for a complete transfer.
#[derive(Debug)]
pub struct Substream {
    inner: Compat<yamux::Stream>,
    we_closed: bool,
    lost: Arc<AtomicBool>,
    connection: u64,
}

impl Substream {
    /// The stream's yamux id, for logs.
    pub fn id(&self) -> u32 {
        self.inner.get_ref().id().val()
    }

    /// Which connection carries it ([`super::MuxHandle::connection_id`]): streams of several
    /// connections may share one queue.
    pub fn connection_id(&self) -> u64 {
        self.connection
    }

    /// Whether this side has closed its writing and the peer has not: the one state in which
    /// yamux 0.14 drops a stream without a word to the peer (and then ignores the peer's data
    /// for it), so whoever drops it must tell the peer some other way.
    pub fn drop_is_silent(&self) -> bool {
        self.inner.get_ref().is_write_closed()
    }
}

impl AsyncRead for Substream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let eof = buf.filled().len() == before && buf.remaining() > 0;
        // A FIN from the peer leaves our write side open; finding both sides closed without
        // having closed ours means the stream was reset. Once we have closed ours, only the
        // connection's fate tells a FIN from a cut.
        let cut = !self.we_closed || self.lost.load(Ordering::Acquire);
        if eof && cut && self.inner.get_ref().is_closed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "substream reset or tunnel connection lost",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Substream {
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
        self.we_closed = true;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
