//! The socket under yamux: watched for loss, reads buffered, small writes coalesced.
//!
//! rust-yamux reads every frame as two reads (12-byte header, then body) and writes it as two
//! writes, then flushes. On a busy session that is two syscalls per frame in each direction,
//! most of them tiny (window updates are bare headers). This layer turns them into about one
//! syscall per batch: reads come from a buffer filled by large reads; headers and small bodies
//! are gathered and written together, large bodies go out in one vectored write with whatever
//! was gathered before them.
//!
//! An idle session holds no buffer: the read buffer is handed back whenever the socket has
//! nothing more to read, and a write buffer grown by a burst is handed back once written out.
//! Thousands of idle sessions then cost their sockets and yamux's state, not 64 KiB each.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the read buffer; reads at least this large bypass it.
const READ_BUFFER: usize = 64 * 1024;
/// A write buffer with more room than this is handed back once empty; smaller ones are kept,
/// so steady small traffic does not reallocate.
const GATHER_KEEP: usize = 64 * 1024;
/// Writes at least this large are not copied but sent with a vectored write.
const DIRECT_WRITE: usize = 8 * 1024;
/// Most bytes gathered before they must be written out, whatever the flushing.
const MAX_GATHERED: usize = 256 * 1024;

/// The session socket as yamux sees it.
///
/// Loss: the moment the socket reports end of stream or an error, `lost` is set, before yamux
/// closes the streams and wakes their readers, so a reader that then finds its stream closed can
/// tell a cut connection from a clean FIN.
///
/// GoAway: rust-yamux answers a protocol violation by queueing a GoAway and then carries on as
/// if nothing happened. Watching the frames it writes is how the driver learns that this side
/// has said goodbye, so it can end the connection as the GoAway announced.
#[derive(Debug)]
pub(super) struct SessionIo<T> {
    inner: T,
    lost: Arc<AtomicBool>,
    written: FrameWatch,
    /// Bytes read from the socket and not yet taken by yamux; no capacity while idle.
    read_buf: BytesMut,
    gathered: Vec<u8>,
    gathered_pos: usize,
    /// Bytes were gathered since the last flush: the next flush is deferred, so a burst of
    /// frames produced in one poll of the connection leaves in one write.
    deferred: bool,
    /// Set when a flush was deferred with bytes still gathered: whoever polls the connection
    /// must poll it again before waiting (the driver does so at once, see `mux::poll_driver`).
    flush_owed: Arc<AtomicBool>,
}

impl<T> SessionIo<T> {
    /// `early` holds bytes of the session already read from `inner` (during the handshake);
    /// yamux reads them first.
    #[cfg(test)]
    pub(super) fn new(inner: T, lost: Arc<AtomicBool>, early: &[u8]) -> Self {
        Self::watched(inner, lost, Arc::default(), Arc::default(), early)
    }

    /// Like [`SessionIo::new`]; `goaway` is set once this side has written a GoAway, and
    /// `flush_owed` whenever a deferred flush left bytes to write.
    pub(super) fn watched(
        inner: T,
        lost: Arc<AtomicBool>,
        goaway: Arc<AtomicBool>,
        flush_owed: Arc<AtomicBool>,
        early: &[u8],
    ) -> Self {
        SessionIo {
            inner,
            lost,
            written: FrameWatch {
                goaway,
                ..FrameWatch::default()
            },
            read_buf: BytesMut::from(early),
            gathered: Vec::new(),
            gathered_pos: 0,
            deferred: false,
            flush_owed,
        }
    }

    fn watch<R>(
        &self,
        result: Poll<io::Result<R>>,
        is_end: impl FnOnce(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        if let Poll::Ready(r) = &result {
            if r.as_ref().map_or(true, is_end) {
                self.lost.store(true, Ordering::Release);
            }
        }
        result
    }

    fn pending_write(&self) -> &[u8] {
        &self.gathered[self.gathered_pos..]
    }

    fn consume_gathered(&mut self, n: usize) {
        self.gathered_pos += n;
        if self.gathered_pos == self.gathered.len() {
            if self.gathered.capacity() > GATHER_KEEP {
                self.gathered = Vec::new();
            } else {
                self.gathered.clear();
            }
            self.gathered_pos = 0;
        }
    }
}

impl<T: AsyncWrite + Unpin> SessionIo<T> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending_write().is_empty() {
            let result =
                Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.gathered_pos..]);
            let n = ready!(self.watch(result, |_| false))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume_gathered(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SessionIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_buf.is_empty() {
            if buf.remaining() >= READ_BUFFER {
                let before = buf.filled().len();
                let result = Pin::new(&mut this.inner).poll_read(cx, buf);
                let eof = buf.filled().len() == before;
                return this.watch(result, |_| eof);
            }
            // Reuses the allocation in place when it is still here (nothing else holds it).
            this.read_buf.reserve(READ_BUFFER);
            let result =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.read_buf);
            if result.is_pending() {
                // Nothing to read: the session may stay idle for hours, so keep no buffer.
                this.read_buf = BytesMut::new();
                return Poll::Pending;
            }
            let n = ready!(this.watch(result, |n| *n == 0))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = buf.remaining().min(this.read_buf.len());
        buf.put_slice(&this.read_buf[..n]);
        this.read_buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SessionIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending_write().len() + buf.len() > MAX_GATHERED {
            ready!(this.poll_drain(cx))?;
        }
        this.deferred = true;
        if buf.len() < DIRECT_WRITE {
            this.written.observe(buf);
            this.gathered.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // A large body is never copied: while the socket is full it stays with yamux, which
        // offers it again once the socket is writable. Only small writes are ever gathered.
        loop {
            let pending = this.pending_write().len();
            let slices = [
                IoSlice::new(&this.gathered[this.gathered_pos..]),
                IoSlice::new(buf),
            ];
            let result = Pin::new(&mut this.inner).poll_write_vectored(cx, &slices);
            let n = ready!(this.watch(result, |_| false))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > pending {
                this.consume_gathered(pending);
                this.written.observe(&buf[..n - pending]);
                return Poll::Ready(Ok(n - pending));
            }
            // Only (part of) the gathered bytes went out: go again for the rest and the body.
            this.consume_gathered(n);
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deferred {
            // yamux flushes after every frame; defer to the next flush, so frames produced
            // meanwhile join the same write. The poller is told it owes that flush: the driver
            // polls the connection again before it waits, which costs no trip through the
            // scheduler (a wake-up here did: a second poll of the whole session per batch).
            this.deferred = false;
            if !this.pending_write().is_empty() {
                this.flush_owed.store(true, Ordering::Release);
            }
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(result, |_| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Follows the yamux frames written to the socket, to see a GoAway among them. Costs a few
/// comparisons per write: data bodies are skipped by length, never scanned.
#[derive(Debug, Default)]
struct FrameWatch {
    header: [u8; FRAME_HEADER],
    have: usize,
    body_left: usize,
    goaway: Arc<AtomicBool>,
}

/// yamux frame header: version, type, flags (2), stream id (4), length (4).
const FRAME_HEADER: usize = 12;
const TYPE_DATA: u8 = 0;
const TYPE_GOAWAY: u8 = 3;

impl FrameWatch {
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER {
                self.have = 0;
                match self.header[1] {
                    TYPE_DATA => {
                        let len: [u8; 4] = [
                            self.header[8],
                            self.header[9],
                            self.header[10],
                            self.header[11],
                        ];
                        self.body_left = u32::from_be_bytes(len) as usize;
                    }
                    TYPE_GOAWAY => self.goaway.store(true, Ordering::Release),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
