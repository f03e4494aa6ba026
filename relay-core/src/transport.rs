//! [`Conn`]: a connection between a client and the relay, plain TCP or TLS over TCP.
//!
//! Everything above this (framing, the handshake, yamux, the transfer splice) sees one byte
//! stream and does not care which. Socket options and resets go to the TCP socket underneath
//! ([`Conn::tcp`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

use crate::auth::NO_BINDING;
use crate::codec;
use crate::error::{Error, Result};
use crate::protocol::{MAGIC, PREFACE_LEN, Reply, parse_preface};
use crate::tls::{BINDING_LABEL, ClientTls, PinMismatch, ServerTls};
use crate::wide::{Lift, WidePool};

/// Read buffer under TLS. rustls reads at most 4 KiB per call; without a buffer that is four
/// syscalls per 16 KiB record. One 32 KiB read serves about two records.
const TLS_READ_BUFFER: usize = 32 * 1024;

/// A connection to or from the relay's control port, and what lifts its send buffer
/// ([`Conn::lift_send_buffer`]).
#[derive(Debug)]
pub struct Conn(Inner, Option<Box<Lift>>);

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpIo>>),
}

impl Inner {
    fn tcp(&self) -> &TcpStream {
        match self {
            Inner::Plain(tcp) => tcp,
            Inner::Tls(tls) => &tls.get_ref().0.tcp,
        }
    }
}

impl Conn {
    /// A plain TCP connection.
    pub fn plain(tcp: TcpStream) -> Self {
        Conn(Inner::Plain(tcp), None)
    }

    /// Whether the bytes travel inside TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }

    /// The TCP socket underneath, for socket options and addresses. Reading or writing it
    /// directly would corrupt a TLS stream.
    pub fn tcp(&self) -> &TcpStream {
        self.0.tcp()
    }

    /// Lets the connection lift its send buffer past auto-tuning once it fills it, with a slot
    /// from `pool` (see [`crate::wide`]); `None` turns that off.
    pub(crate) fn lift_send_buffer(&mut self, pool: Option<Arc<WidePool>>) {
        self.1 = pool.map(|pool| Box::new(Lift::new(Some(pool))));
    }

    /// The plain TCP stream, if this connection is not TLS.
    pub fn into_plain(self) -> std::result::Result<TcpStream, Conn> {
        match self.0 {
            Inner::Plain(tcp) => Ok(tcp),
            tls => Err(Conn(tls, self.1)),
        }
    }

    /// What a token proof on this connection is bound to: 32 bytes exported from the TLS
    /// session under [`BINDING_LABEL`], the same on both ends of one session and unknown to
    /// anyone else; zeros over plain TCP.
    pub fn channel_binding(&self) -> [u8; 32] {
        let Inner::Tls(tls) = &self.0 else {
            return NO_BINDING;
        };
        let exported = match tls.as_ref() {
            TlsStream::Client(s) => {
                s.get_ref()
                    .1
                    .export_keying_material([0u8; 32], BINDING_LABEL, None)
            }
            TlsStream::Server(s) => {
                s.get_ref()
                    .1
                    .export_keying_material([0u8; 32], BINDING_LABEL, None)
            }
        };
        // Only fails before the handshake completes, which a `Conn` never is; a proof bound
        // to zeros would then simply not verify on the other end.
        exported.unwrap_or(NO_BINDING)
    }

    /// Moves the socket's registration to the runtime this is called on, so its readiness
    /// events arrive on this thread (for a connection handed to a task on another worker).
    pub(crate) fn rehome(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Inner::Plain(tcp) => rehome(tcp),
            Inner::Tls(tls) => rehome(&mut tls.get_mut().0.tcp),
        }
    }
}

/// Registers a duplicate of the socket with the current runtime and drops the original (which
/// deregisters it from its own); the connection itself is untouched.
fn rehome(tcp: &mut TcpStream) -> io::Result<()> {
    let dup = socket2::SockRef::from(&*tcp).try_clone()?;
    let fresh = TcpStream::from_std(std::net::TcpStream::from(dup))?;
    drop(std::mem::replace(tcp, fresh));
    Ok(())
}

/// Runs the relay's side of a TLS handshake on a connection whose first byte said TLS.
pub async fn accept_tls(tcp: TcpStream, tls: &ServerTls) -> io::Result<Conn> {
    let stream = tls.acceptor().accept(TcpIo::new(tcp)).await?;
    Ok(Conn(Inner::Tls(Box::new(stream.into())), None))
}

/// Runs the client's side of a TLS handshake with the relay at `relay` (`HOST:PORT`).
pub async fn connect_tls(relay: &str, tcp: TcpStream, tls: &ClientTls) -> Result<Conn> {
    let host = crate::net::split_host_port(relay).map_or_else(|_| relay.to_string(), |(h, _)| h);
    let name = tls.server_name(&host)?;
    match tls
        .connector()
        .connect(name, TcpIo::new(tcp))
        .into_fallible()
        .await
    {
        Ok(stream) => Ok(Conn(Inner::Tls(Box::new(stream.into())), None)),
        Err((e, io)) => Err(handshake_failed(relay, &e, io.first_bytes())),
    }
}

/// Explains a failed client handshake. A relay that does not speak TLS answers our
/// ClientHello in plain protocol (with its explanation in an error frame): rustls only sees a
/// corrupt record, so we look at what actually arrived.
fn handshake_failed(relay: &str, e: &io::Error, first: &[u8]) -> Error {
    if first.starts_with(&MAGIC) {
        if let Some(Reply::Error { code, message }) = plain_reply(first) {
            return Error::Rejected { code, message };
        }
        return Error::Tls(format!(
            "the relay at {relay} does not speak TLS on this port (it answered in plain text); \
             connect without --tls"
        ));
    }
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(why)) = rustls_error {
        if let rustls::CertificateError::Other(other) = why {
            if let Some(mismatch) = other.0.downcast_ref::<PinMismatch>() {
                return Error::Tls(format!(
                    "the relay at {relay} is not the one pinned: {mismatch}"
                ));
            }
        }
        return Error::Tls(format!(
            "the relay at {relay} presented a certificate this client does not trust ({why:?}); \
             check --tls-ca, or pin it with --tls-fingerprint"
        ));
    }
    Error::Tls(format!("handshake with the relay at {relay} failed: {e}"))
}

/// The relay's preface and first reply, if `bytes` hold both.
fn plain_reply(bytes: &[u8]) -> Option<Reply> {
    let preface = bytes.get(..PREFACE_LEN)?.try_into().ok()?;
    parse_preface(&preface)?;
    let frame = bytes.get(PREFACE_LEN..)?;
    let len = u32::from_be_bytes(*frame.first_chunk::<{ codec::LEN_PREFIX }>()?) as usize;
    let body = frame.get(codec::LEN_PREFIX..codec::LEN_PREFIX.checked_add(len)?)?;
    codec::decode(body).ok()
}

/// The TCP socket under TLS: reads come from a buffer filled by large reads, writes go
/// straight through (rustls already hands over whole records, vectored).
#[derive(Debug)]
pub(crate) struct TcpIo {
    tcp: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    /// Reads from the socket so far, up to 2: while 1, `buf` still holds the peer's first
    /// bytes.
    fills: u8,
}

impl TcpIo {
    fn new(tcp: TcpStream) -> Self {
        TcpIo {
            tcp,
            buf: vec![0; TLS_READ_BUFFER].into_boxed_slice(),
            pos: 0,
            len: 0,
            fills: 0,
        }
    }

    /// The first bytes the peer sent (as many as the first read got), while they are still
    /// in the buffer.
    fn first_bytes(&self) -> &[u8] {
        if self.fills == 1 {
            &self.buf[..self.len]
        } else {
            &[]
        }
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.len {
            let mut fill = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut fill))?;
            this.len = fill.filled().len();
            this.pos = 0;
            this.fills = this.fills.saturating_add(1).min(2);
        }
        let n = out.remaining().min(this.len - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

macro_rules! forward {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.get_mut().0 {
            Inner::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Inner::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        forward!(self, s => s.poll_read(cx, buf))
    }
}

impl Conn {
    #[inline]
    fn lift_after(&mut self, result: &Poll<io::Result<usize>>) {
        if let Some(lift) = &mut self.1 {
            lift.after_write(self.0.tcp(), result);
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = forward!(self.as_mut(), s => s.poll_write(cx, buf));
        self.lift_after(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = forward!(self.as_mut(), s => s.poll_write_vectored(cx, bufs));
        self.lift_after(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => s.poll_shutdown(cx))
    }
}
