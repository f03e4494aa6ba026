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

use super::budget::tune_visitor_socket;
use super::session::Tunnel;
use crate::codec::{self, CodecError};
use crate::frame::FrameReader;
use crate::mux::{MuxHandle, Substream};
use crate::net::reset_on_close;
use crate::protocol::{MAX_FRAME_LEN, VisitorHeader, VisitorReply};
use crate::splice::{Meter, splice};

pub(super) async fn serve(
    mut tcp: TcpStream,
    peer_addr: SocketAddr,
    relay_addr: Option<SocketAddr>,
    visitor_id: u64,
    index: u16,
    tunnel: Arc<Tunnel>,
    _permit: OwnedSemaphorePermit,
) {
    tune_visitor_socket(&tcp, tunnel.buffers);
    let _open = tunnel.counted.opened();
    // Behind a load balancer, the address the visitor dialed is the balancer's.
    let relay_addr =
        relay_addr.unwrap_or_else(|| tcp.local_addr().map_or(peer_addr, crate::net::canonical));
    // `a_to_b`: from the visitor to the client. The session's totals move along.
    let meter = Meter::with_parent(tunnel.bytes.clone());
    let result = tokio::select! {
        () = tunnel.session.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel session ended")),
        r = forward(&mut tcp, VisitorHeader { visitor_id, tunnel: index, peer_addr, relay_addr }, &tunnel.mux, tunnel.answer_timeout, &meter) => r,
    };
    let (bytes_in, bytes_out) = (meter.a_to_b(), meter.b_to_a());
    match result {
        Ok(()) => debug!(bytes_in, bytes_out, "visitor closed"),
        Err(e) => {
            // The visitor must see an abort, never a clean end of a truncated stream.
            reset_on_close(&tcp);
            if e.kind() == io::ErrorKind::ConnectionRefused {
                debug!(reason = %e, "visitor refused by the client");
            } else {
                debug!(error = %e, bytes_in, bytes_out, "visitor reset");
            }
        }
    }
}

async fn forward(
    tcp: &mut TcpStream,
    header: VisitorHeader,
    mux: &MuxHandle,
    answer_timeout: Duration,
    meter: &Meter,
) -> io::Result<()> {
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
    };
    splice(tcp, &mut stream, meter).await
}

/// A substream whose first inbound bytes are the client's [`VisitorReply`]: reading strips it,
/// and turns a refusal into a `ConnectionRefused` error carrying the client's reason. Writes go
/// straight through, so the visitor's first bytes need not wait for the answer.
struct AwaitReply {
    inner: Substream,
    /// Until the answer arrives; dropped after it, so an open visitor holds no buffer or timer.
    /// The reader reads exactly the answer, so the client's bytes after it stay in the stream.
    reply: Option<(FrameReader, Pin<Box<tokio::time::Sleep>>)>,
    timeout: Duration,
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
