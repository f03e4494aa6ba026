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

use super::frame_watch::FrameWatch;

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
            written: FrameWatch::new(goaway),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn small_and_large_writes_arrive_in_order_after_flushes() {
        // Large enough for everything: the reader only starts at the end.
        let (a, mut b) = duplex(8 << 20);
        let lost = Arc::new(AtomicBool::new(false));
        let mut io = SessionIo::new(a, lost.clone(), &[]);
        let mut expected = Vec::new();
        for i in 0..200usize {
            let chunk: Vec<u8> = (0..(i * 97) % 20_000).map(|j| (i + j) as u8).collect();
            io.write_all(&chunk).await.expect("write");
            expected.extend_from_slice(&chunk);
            if i % 7 == 0 {
                io.flush().await.expect("flush");
            }
        }
        // Two flushes: the first may be deferred, the second always writes.
        io.flush().await.expect("flush");
        io.flush().await.expect("flush");
        let mut got = vec![0; expected.len()];
        b.read_exact(&mut got).await.expect("read");
        assert!(got == expected);
        assert!(!lost.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn writes_into_a_full_socket_wait_and_keep_their_order() {
        // A pipe far smaller than the bodies: every large write meets a full socket, and
        // vectored writes go out in pieces.
        let (a, mut b) = duplex(3000);
        let lost = Arc::new(AtomicBool::new(false));
        let chunks: Vec<Vec<u8>> = (0..300usize)
            .map(|i| {
                (0..(i * 7919) % 40_000)
                    .map(|j| (i * 31 + j) as u8)
                    .collect()
            })
            .collect();
        let expected: Vec<u8> = chunks.concat();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.expect("read");
            got
        });
        let mut io = SessionIo::new(a, lost.clone(), &[]);
        for chunk in &chunks {
            io.write_all(chunk).await.expect("write");
        }
        io.flush().await.expect("flush");
        io.flush().await.expect("flush");
        io.shutdown().await.expect("shutdown");
        drop(io);
        let got = reader.await.expect("reader");
        assert!(
            got == expected,
            "{} of {} bytes, in order: no",
            got.len(),
            expected.len()
        );
    }

    /// An idle session holds no read buffer, and a burst's write buffer is handed back.
    #[tokio::test]
    async fn an_idle_session_keeps_no_buffers() {
        use futures::FutureExt;
        let (a, mut b) = duplex(1 << 20);
        let mut io = SessionIo::new(a, Arc::default(), &[]);
        b.write_all(&[7u8; 100]).await.expect("write");
        let mut got = [0u8; 100];
        io.read_exact(&mut got).await.expect("read");
        assert!(io.read_buf.capacity() > 0, "reads go through the buffer");
        let mut more = [0u8; 12];
        assert!(
            io.read(&mut more).now_or_never().is_none(),
            "nothing to read"
        );
        assert_eq!(
            io.read_buf.capacity(),
            0,
            "the read buffer was kept while idle"
        );
        for _ in 0..100 {
            io.write_all(&[1u8; 1000]).await.expect("write");
        }
        io.flush().await.expect("flush");
        io.flush().await.expect("flush");
        assert!(io.pending_write().is_empty());
        assert_eq!(io.gathered.capacity(), 0, "the burst's buffer was kept");
    }

    #[tokio::test]
    async fn reads_are_buffered_and_eof_marks_the_session_lost() {
        let (a, mut b) = duplex(1 << 20);
        let lost = Arc::new(AtomicBool::new(false));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // The first bytes were read during the handshake; they come first all the same.
        let mut io = SessionIo::new(a, lost.clone(), &data[..100]);
        b.write_all(&data[100..]).await.expect("write");
        drop(b);
        let mut got = Vec::new();
        let mut small = [0u8; 12];
        loop {
            let n = io.read(&mut small).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert!(got == data);
        assert!(lost.load(Ordering::Acquire));
    }
}
