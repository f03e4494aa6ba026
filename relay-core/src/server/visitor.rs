//! One visitor on the relay: open a substream, announce the visitor, splice until both ends close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info};

use super::session::Tunnel;
use crate::codec::{self, LEN_PREFIX};
use crate::mux::{MuxHandle, Substream};
use crate::net::{reset_on_close, tune_data_socket};
use crate::protocol::{MAX_FRAME_LEN, VisitorHeader, VisitorReply};
use crate::splice::splice;

pub(super) async fn serve(
    mut tcp: TcpStream,
    peer_addr: SocketAddr,
    visitor_id: u64,
    tunnel: Arc<Tunnel>,
    _permit: OwnedSemaphorePermit,
) {
    tune_data_socket(&tcp);
    let result = tokio::select! {
        () = tunnel.session.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "tunnel session ended")),
        r = forward(&mut tcp, peer_addr, visitor_id, &tunnel.mux, tunnel.answer_timeout) => r,
    };
    let stats = &tunnel.stats;
    match result {
        Ok((bytes_in, bytes_out)) => {
            stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
            info!(bytes_in, bytes_out, "visitor closed");
        }
        Err(e) => {
            // The visitor must see an abort, never a clean end of a truncated stream.
            reset_on_close(&tcp);
            if e.kind() == io::ErrorKind::ConnectionRefused {
                info!(reason = %e, "visitor refused by the client");
            } else {
                info!(error = %e, "visitor reset");
            }
        }
    }
}

async fn forward(
    tcp: &mut TcpStream,
    peer_addr: SocketAddr,
    visitor_id: u64,
    mux: &MuxHandle,
    answer_timeout: Duration,
) -> io::Result<(u64, u64)> {
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
    let header = VisitorHeader {
        visitor_id,
        peer_addr,
    };
    codec::write_frame(&mut stream, &header)
        .await
        .map_err(io::Error::other)?;
    debug!(stream = stream.id(), "substream opened");
    let mut stream = AwaitReply::new(stream, deadline, answer_timeout);
    let moved = splice(tcp, &mut stream).await?;
    Ok((moved.a_to_b, moved.b_to_a))
}

/// A substream whose first inbound bytes are the client's [`VisitorReply`]: reading strips it,
/// and turns a refusal into a `ConnectionRefused` error carrying the client's reason. Writes go
/// straight through, so the visitor's first bytes need not wait for the answer.
struct AwaitReply {
    inner: Substream,
    state: ReplyState,
    /// Until the answer arrives; dropped after it, so an open visitor holds no timer.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
}

fn no_answer(after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client did not answer for the visitor within {after:?}"),
    )
}

enum ReplyState {
    Prefix { buf: [u8; LEN_PREFIX], got: usize },
    Body { buf: Vec<u8>, got: usize },
    Accepted,
}

impl AwaitReply {
    fn new(inner: Substream, deadline: Pin<Box<tokio::time::Sleep>>, timeout: Duration) -> Self {
        AwaitReply {
            inner,
            state: ReplyState::Prefix {
                buf: [0; LEN_PREFIX],
                got: 0,
            },
            deadline: Some(deadline),
            timeout,
        }
    }

    /// Reads the reply frame, byte-exact so nothing after it is consumed here.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (buf, got) = match &mut self.state {
                ReplyState::Accepted => return Poll::Ready(Ok(())),
                ReplyState::Prefix { buf, got } => (&mut buf[..], got),
                ReplyState::Body { buf, got } => (&mut buf[..], got),
            };
            if *got == buf.len() {
                self.state = match std::mem::replace(&mut self.state, ReplyState::Accepted) {
                    ReplyState::Prefix { buf, .. } => {
                        let len = codec::check_len(buf, MAX_FRAME_LEN).map_err(io::Error::other)?;
                        ReplyState::Body {
                            buf: vec![0; len],
                            got: 0,
                        }
                    }
                    ReplyState::Body { buf, .. } => match codec::decode(&buf) {
                        Ok(VisitorReply::Accepted) => {
                            self.deadline = None;
                            ReplyState::Accepted
                        }
                        Ok(VisitorReply::Refused { reason }) => {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::ConnectionRefused,
                                reason,
                            )));
                        }
                        Err(e) => return Poll::Ready(Err(io::Error::other(e))),
                    },
                    ReplyState::Accepted => ReplyState::Accepted,
                };
                continue;
            }
            let mut rb = ReadBuf::new(&mut buf[*got..]);
            if Pin::new(&mut self.inner)
                .poll_read(cx, &mut rb)?
                .is_pending()
            {
                if let Some(deadline) = self.deadline.as_mut() {
                    ready!(deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(no_answer(self.timeout)));
                }
                return Poll::Pending;
            }
            if rb.filled().is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the substream without answering",
                )));
            }
            *got += rb.filled().len();
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
