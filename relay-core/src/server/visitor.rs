//! One visitor on the relay: open a substream, announce the visitor, splice until both ends close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::session::Tunnel;
use crate::codec::{self, CodecError};
use crate::frame::FrameReader;
use crate::mux::Substream;
use crate::net::reset_on_close;
use crate::protocol::{MAX_FRAME_LEN, VisitorHeader, VisitorReply};
use crate::reset::{ResetSignal, Side};
use crate::splice::{Meter, splice};
use crate::wide::WideSocket;

pub(super) async fn serve(
    mut tcp: TcpStream,
    peer_addr: SocketAddr,
    relay_addr: Option<SocketAddr>,
    visitor_id: u64,
    index: u16,
    tunnel: Arc<Tunnel>,
    _permit: OwnedSemaphorePermit,
) {
    let _open = tunnel.counted.opened();
    // Behind a load balancer, the address the visitor dialed is the balancer's.
    let relay_addr =
        relay_addr.unwrap_or_else(|| tcp.local_addr().map_or(peer_addr, crate::net::canonical));
    // `a_to_b`: from the visitor to the client. The session's totals move along.
    let meter = Meter::with_parent(tunnel.bytes.clone());
    let reset = tunnel.resets.register(visitor_id);
    let mut silent_drop = false;
    let header = VisitorHeader {
        visitor_id,
        tunnel: index,
        peer_addr,
        relay_addr,
    };
    let result = tokio::select! {
        () = tunnel.session.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel session ended")),
        r = forward(&mut tcp, header, &tunnel, reset.signal(), &meter, &mut silent_drop) => r,
    };
    drop(reset);
    if silent_drop {
        // The stream goes now, and yamux would not tell the client (see `resets`).
        tunnel.resets.tell_client(visitor_id);
    }
    let (bytes_in, bytes_out) = (meter.a_to_b(), meter.b_to_a());
    match result {
        Ok(()) => debug!(bytes_in, bytes_out, "visitor closed"),
        Err(e) => {
            // The visitor must see an abort, never a clean end of a truncated stream.
            reset_on_close(&tcp);
            if e.kind() == io::ErrorKind::ConnectionRefused {
                debug!(reason = %e, "visitor refused by the client");
            } else if is_stall(&e) {
                tunnel.counted.stalled();
                debug!(
                    bytes_in,
                    bytes_out,
                    "visitor cut: nothing it was sent was taken within the stall timeout"
                );
            } else {
                debug!(error = %e, bytes_in, bytes_out, "visitor reset");
            }
        }
    }
}

/// The visitor's socket gave up: `TCP_USER_TIMEOUT` (the stall timeout) or, with it off, the
/// kernel's retransmissions. Only the socket reports `ETIMEDOUT`; the relay's own timeouts are
/// errors of their own.
fn is_stall(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::TIMEDOUT.raw_os_error())
}

/// Announces the visitor and splices it with its stream; `silent_drop` tells whether the stream
/// is left in the state yamux drops without a word to the client.
async fn forward(
    tcp: &mut TcpStream,
    header: VisitorHeader,
    tunnel: &Tunnel,
    reset: Arc<ResetSignal>,
    meter: &Meter,
    silent_drop: &mut bool,
) -> io::Result<()> {
    let (mux, answer_timeout) = (&tunnel.mux, tunnel.answer_timeout);
    // One timer bounds both the wait for a substream (there is none while 256 earlier ones are
    // still unanswered by the client) and the wait for the client's answer.
    let mut deadline = Box::pin(tokio::time::sleep(answer_timeout));
    let mut stream = tokio::select! {
        biased;
        stream = mux.open() => stream?,
        () = deadline.as_mut() => return Err(no_answer(answer_timeout)),
    };
    // yamux announces a stream only with its first frame, so the header goes out at once; the
    // visitor's bytes may follow before the client answers.
    codec::write_frame(&mut stream, &header)
        .await
        .map_err(io::Error::other)?;
    debug!(stream = stream.id(), "substream opened");
    let mut stream = AwaitReply {
        inner: stream,
        reply: Some((FrameReader::exact(MAX_FRAME_LEN), deadline)),
        timeout: answer_timeout,
        reset,
    };
    let mut tcp = WideSocket::new(tcp, tunnel.wide.clone());
    let spliced = splice(&mut tcp, &mut stream, meter).await;
    *silent_drop = stream.inner.drop_is_silent();
    spliced
}

/// A substream whose first inbound bytes are the client's [`VisitorReply`]: reading strips it,
/// and turns a refusal into a `ConnectionRefused` error carrying the client's reason. Writes go
/// straight through, so the visitor's first bytes need not wait for the answer.
///
/// Writes fail with `ConnectionReset` once the client has reset the stream
/// (`ClientControl::Reset`: it dropped its side after its FIN, and reads nothing more), a
/// write parked for credit included. Reads go on: what the client sent before its FIN still
/// reaches the visitor, as a TCP peer's last bytes do when it closes after its answer.
struct AwaitReply {
    inner: Substream,
    /// Until the answer arrives; dropped after it, so an open visitor holds no buffer or timer.
    /// The reader reads exactly the answer, so the client's bytes after it stay in the stream.
    reply: Option<(FrameReader, Pin<Box<tokio::time::Sleep>>)>,
    timeout: Duration,
    reset: Arc<ResetSignal>,
}

fn reset_by_client() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the client reset the visitor's stream",
    )
}

fn no_answer(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client did not answer for the visitor within {after:?}"),
    )
}

impl AwaitReply {
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((reader, deadline)) = &mut self.reply else {
            return Poll::Ready(Ok(()));
        };
        let reply = match reader.poll_frame::<_, VisitorReply>(&mut self.inner, cx) {
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                return Poll::Ready(Err(no_answer(self.timeout)));
            }
            Poll::Ready(reply) => reply,
        };
        match reply {
            Ok(VisitorReply::Accepted) => {
                self.reply = None;
                Poll::Ready(Ok(()))
            }
            Ok(VisitorReply::Refused { reason }) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                reason,
            ))),
            Err(CodecError::Closed | CodecError::Truncated) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed the substream without answering",
            ))),
            Err(CodecError::Io(e)) => Poll::Ready(Err(e)),
            Err(e) => Poll::Ready(Err(io::Error::other(e))),
        }
    }
}

impl AsyncRead for AwaitReply {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_reply(cx))?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AwaitReply {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset.is_reset() {
            return Poll::Ready(Err(reset_by_client()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if written.is_pending() && self.reset.poll_reset(cx, Side::Write).is_ready() {
            return Poll::Ready(Err(reset_by_client()));
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
