//! Framed connections: typed control frames over a byte stream, read with a byte limit and
//! cancel-safely, and the hand-over to raw bytes without losing any.
//!
//! Every control conversation (the handshake on the control port, the tunnel's control
//! substream, an offer waiting for its receiver, a visitor's header and answer) reads its frames
//! here. The read state lives in the [`FrameReader`], not in a future, so a `select!` may drop a
//! read half-way and start another without losing bytes.
//!
//! A reader either reads ahead (large reads, fewer syscalls; the bytes past the last frame are
//! handed back by [`FramedConn::into_parts`] when the connection switches to raw bytes) or reads
//! exactly (never past the frame in progress, for a substream whose raw bytes must stay in
//! the stream, on the per-visitor hot path).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::codec::{self, CodecError, LEN_PREFIX};

mod rewind;
pub use rewind::Rewind;

/// Smallest read a read-ahead reader makes: a whole handshake usually arrives in one.
const READ_AHEAD: usize = 2048;

/// The read half of framing: a buffer, a byte limit, and a read policy.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max_len: usize,
    read_ahead: bool,
}

impl FrameReader {
    /// A reader that reads ahead; bytes past the frames stay buffered for [`Self::take_rest`].
    pub fn new(max_len: usize) -> Self {
        FrameReader {
            buf: BytesMut::new(),
            max_len,
            read_ahead: true,
        }
    }

    /// A reader that never reads past the end of the frame in progress.
    pub fn exact(max_len: usize) -> Self {
        FrameReader {
            read_ahead: false,
            ..Self::new(max_len)
        }
    }

    /// Bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Discards the first `n` buffered bytes (at most what is buffered).
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n.min(self.buf.len()));
    }

    /// Takes every buffered byte, for the switch to raw bytes.
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Takes the next frame's body if the frame is complete. A length prefix over the limit
    /// fails here, before its body is read or any room is made for it.
    fn next_body(&mut self) -> Result<Option<Bytes>, CodecError> {
        let Some(len) = self.announced_len()? else {
            return Ok(None);
        };
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(LEN_PREFIX + len);
        frame.advance(LEN_PREFIX);
        Ok(Some(frame.freeze()))
    }

    fn announced_len(&self) -> Result<Option<usize>, CodecError> {
        let Some(prefix) = self.buf.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        codec::check_len(*prefix, self.max_len).map(Some)
    }

    /// How many bytes the next read may ask for.
    fn want(&self) -> Result<usize, CodecError> {
        let missing = match self.announced_len()? {
            None => LEN_PREFIX - self.buf.len(),
            Some(len) => LEN_PREFIX + len - self.buf.len(),
        };
        Ok(if self.read_ahead {
            missing.max(READ_AHEAD)
        } else {
            missing
        })
    }

    /// Reads once more, appending to the buffer; `Ok(0)` is end of stream.
    fn poll_fill<S>(&mut self, io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<usize>>
    where
        S: AsyncRead + Unpin + ?Sized,
    {
        let want = self.want().unwrap_or(READ_AHEAD);
        self.buf.reserve(want);
        let mut limited = (&mut self.buf).limit(want);
        let result = tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut limited);
        if result.is_pending() && self.buf.is_empty() {
            // Between frames a reader may wait for hours (a session's control stream between
            // heartbeats): keep no buffer while it does.
            self.buf = BytesMut::new();
        }
        result
    }

    /// Reads the next frame's body from `io`, undecoded. Cancel-safe: partial frames stay in
    /// the buffer.
    pub fn poll_body<S>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, CodecError>>
    where
        S: AsyncRead + Unpin + ?Sized,
    {
        loop {
            if let Some(body) = self.next_body()? {
                return Poll::Ready(Ok(body));
            }
            if ready!(self.poll_fill(io, cx))? == 0 {
                return Poll::Ready(Err(self.eof()));
            }
        }
    }

    /// Reads the next frame from `io`. Cancel-safe: partial frames stay in the buffer.
    pub fn poll_frame<S, T>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, CodecError>>
    where
        S: AsyncRead + Unpin + ?Sized,
        T: DeserializeOwned,
    {
        let body = ready!(self.poll_body(io, cx))?;
        Poll::Ready(codec::decode(&body))
    }

    /// End of stream: between frames a clean close, inside one a truncation.
    fn eof(&self) -> CodecError {
        if self.buf.is_empty() {
            CodecError::Closed
        } else {
            CodecError::Truncated
        }
    }
}

/// A byte stream that carries frames: owns the stream and its [`FrameReader`].
#[derive(Debug)]
pub struct FramedConn<S> {
    io: S,
    reader: FrameReader,
}

impl<S> FramedConn<S> {
    /// Frames of at most `max_len` body bytes, read ahead.
    pub fn new(io: S, max_len: usize) -> Self {
        FramedConn {
            io,
            reader: FrameReader::new(max_len),
        }
    }

    /// Resumes framing on `io` whose first bytes, `buffered`, were already read from it.
    pub fn with_buffered(io: S, buffered: &[u8], max_len: usize) -> Self {
        let mut conn = Self::new(io, max_len);
        conn.reader.buf.extend_from_slice(buffered);
        conn
    }

    /// Frames of at most `max_len` body bytes, never reading past the frame in progress.
    pub fn exact(io: S, max_len: usize) -> Self {
        FramedConn {
            io,
            reader: FrameReader::exact(max_len),
        }
    }

    /// The frame size limit.
    pub fn max_len(&self) -> usize {
        self.reader.max_len
    }

    /// The stream, for socket options and addresses. Reading from it directly would skip
    /// buffered bytes.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream, for writing raw bytes or draining a connection being closed. Reading from
    /// it directly skips buffered bytes.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes read but not yet consumed as frames.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }

    /// Discards the first `n` buffered bytes.
    pub fn consume(&mut self, n: usize) {
        self.reader.consume(n);
    }

    /// Ends framing: the stream, and the bytes already read past the last frame, which belong
    /// to whatever the stream carries next.
    pub fn into_parts(mut self) -> (S, Bytes) {
        let rest = self.reader.take_rest();
        (self.io, rest)
    }
}

impl<S: AsyncRead + Unpin> FramedConn<S> {
    /// Reads one frame. Cancel-safe.
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        let FramedConn { io, reader } = self;
        poll_fn(|cx| reader.poll_frame(io, cx)).await
    }

    /// Reads one frame and also returns its body as it was on the wire (for a signature over
    /// exactly what was sent). Cancel-safe.
    pub async fn read_frame_and_body<T: DeserializeOwned>(
        &mut self,
    ) -> Result<(T, Bytes), CodecError> {
        let FramedConn { io, reader } = self;
        let body = poll_fn(|cx| reader.poll_body(io, cx)).await?;
        Ok((codec::decode(&body)?, body))
    }

    /// Reads more bytes into the buffer and returns everything buffered; for looking at a
    /// peer's first bytes before they form a frame. Cancel-safe.
    pub async fn fill(&mut self) -> Result<&[u8], CodecError> {
        let FramedConn { io, reader } = self;
        if poll_fn(|cx| reader.poll_fill(io, cx)).await? == 0 {
            return Err(reader.eof());
        }
        Ok(reader.buffered())
    }
}

impl<S: AsyncWrite + Unpin> FramedConn<S> {
    /// Writes one frame and flushes it. Not cancel-safe: a write cut short leaves the peer a
    /// partial frame, so only a deadline after which the connection is dropped may cut it.
    pub async fn write_frame<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        codec::write_frame(&mut self.io, msg).await
    }

    /// Writes this build's preface and one frame, in one write.
    pub async fn write_preface_and_frame<T: Serialize>(
        &mut self,
        msg: &T,
    ) -> Result<(), CodecError> {
        codec::write_preface_and_frame(&mut self.io, msg).await
    }

    /// Writes the preface of protocol `version` and one frame, in one write.
    pub async fn write_versioned_preface_and_frame<T: Serialize>(
        &mut self,
        version: u16,
        msg: &T,
    ) -> Result<(), CodecError> {
        codec::write_versioned_preface_and_frame(&mut self.io, version, msg).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DEFAULT_MAX_FRAME_LEN, Hello};
    use tokio::io::{AsyncWriteExt, duplex};

    fn hello(n: &str) -> Hello {
        Hello::Receive {
            nameplate: n.into(),
        }
    }

    #[tokio::test]
    async fn read_ahead_hands_back_the_bytes_after_the_last_frame() {
        let mut wire = codec::encode(&hello("1")).expect("encodes");
        wire.extend(codec::encode(&hello("2")).expect("encodes"));
        wire.extend_from_slice(b"raw bytes after the frames");
        let mut conn = FramedConn::new(&wire[..], DEFAULT_MAX_FRAME_LEN);
        assert_eq!(conn.read_frame::<Hello>().await.expect("1"), hello("1"));
        assert_eq!(conn.read_frame::<Hello>().await.expect("2"), hello("2"));
        let (rest_of_stream, read_ahead) = conn.into_parts();
        assert_eq!(
            [&read_ahead[..], rest_of_stream].concat(),
            b"raw bytes after the frames"
        );
    }

    #[tokio::test]
    async fn exact_reads_leave_the_stream_at_the_frame_end() {
        let mut wire = codec::encode(&hello("1")).expect("encodes");
        wire.extend_from_slice(b"raw");
        let mut conn = FramedConn::exact(&wire[..], DEFAULT_MAX_FRAME_LEN);
        assert_eq!(conn.read_frame::<Hello>().await.expect("1"), hello("1"));
        let (rest_of_stream, read_ahead) = conn.into_parts();
        assert!(read_ahead.is_empty());
        assert_eq!(rest_of_stream, b"raw");
    }

    /// A read dropped half-way through a frame loses nothing: the next read finishes it.
    #[tokio::test]
    async fn reads_are_cancel_safe() {
        let frame = codec::encode(&hello("424242")).expect("encodes");
        let (mut tx, rx) = duplex(64);
        let mut conn = FramedConn::new(rx, DEFAULT_MAX_FRAME_LEN);
        for byte in &frame[..frame.len() - 1] {
            tx.write_all(&[*byte]).await.expect("write");
            let cut = tokio::time::timeout(
                std::time::Duration::from_millis(1),
                conn.read_frame::<Hello>(),
            )
            .await;
            assert!(cut.is_err(), "a partial frame must not complete");
        }
        tx.write_all(&frame[frame.len() - 1..])
            .await
            .expect("write");
        assert_eq!(
            conn.read_frame::<Hello>().await.expect("whole"),
            hello("424242")
        );
    }

    /// A reader waiting between frames (a control stream between heartbeats) holds no buffer.
    #[tokio::test]
    async fn a_reader_waiting_between_frames_keeps_no_buffer() {
        use futures::FutureExt;
        let (mut tx, rx) = duplex(4096);
        let mut conn = FramedConn::new(rx, DEFAULT_MAX_FRAME_LEN);
        tx.write_all(&codec::encode(&hello("1")).expect("encodes"))
            .await
            .expect("write");
        assert_eq!(conn.read_frame::<Hello>().await.expect("1"), hello("1"));
        assert!(conn.read_frame::<Hello>().now_or_never().is_none());
        assert_eq!(
            conn.reader.buf.capacity(),
            0,
            "the buffer was kept while waiting"
        );
    }

    #[tokio::test]
    async fn truncation_clean_close_and_oversize_are_told_apart() {
        let frame = codec::encode(&hello("123")).expect("encodes");
        for cut in 1..frame.len() {
            let mut conn = FramedConn::new(&frame[..cut], DEFAULT_MAX_FRAME_LEN);
            let err = conn.read_frame::<Hello>().await.unwrap_err();
            assert!(matches!(err, CodecError::Truncated), "cut at {cut}: {err}");
        }
        let mut conn = FramedConn::new(&[][..], DEFAULT_MAX_FRAME_LEN);
        assert!(matches!(
            conn.read_frame::<Hello>().await,
            Err(CodecError::Closed)
        ));
        // A huge announced length fails on the prefix alone, before any body is awaited.
        let mut conn = FramedConn::new(&[0xff, 0xff, 0xff, 0xff][..], 64);
        let err = conn.read_frame::<Hello>().await.unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { max: 64, .. }), "{err}");
    }
}
