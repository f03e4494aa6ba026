//! The multiplexer: one task drives a yamux connection, everyone else holds a [`MuxHandle`].
//!
//! rust-yamux 0.14 does all socket I/O inside `poll_next_inbound`, so a single task must poll the
//! `Connection` continuously. That task (the driver) serves requests for new outbound streams
//! that arrive over a channel, forwards inbound streams to the session, and ends when the
//! connection does or when the session's shutdown token is cancelled.
//!
//! This module is the only one that names yamux types, so the multiplexer can be swapped.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;
use yamux::{Connection, ConnectionError, Mode};

use crate::ending::SessionEnd;
use crate::protocol::MUX_MAX_STREAMS;

mod inbound;
mod session_io;
mod substream;

pub use inbound::Inbound;
use inbound::Offer;
use session_io::SessionIo;
use substream::StreamFactory;
pub use substream::Substream;

/// Receive window yamux grants every stream up front (fixed by the yamux specification).
pub const STREAM_WINDOW: usize = 256 * 1024;

/// Extra receive window a session may hand out, beyond [`STREAM_WINDOW`] per stream, to streams
/// whose bandwidth-delay product needs more (yamux auto-tunes windows upwards into this pool).
pub const WINDOW_GROWTH_POOL: usize = 16 * 1024 * 1024;

/// Largest data frame yamux sends. Bigger frames mean fewer frames and less CPU per byte; the
/// cost is coarser interleaving between streams. yamux requires <= 1 MiB.
pub const SPLIT_SEND_SIZE: usize = 64 * 1024;

/// Polls of the connection one driver poll makes only to write what it gathered; beyond them
/// the driver yields to the scheduler first.
const MAX_FLUSH_POLLS: u32 = 2;

/// How long a closing session may spend flushing its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Which end of the connection this is. yamux requires opposite modes on the two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that dialed the TCP connection.
    Dialer,
    /// The end that accepted it (the relay).
    Acceptor,
}

fn yamux_config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    // Order matters: each setter asserts window >= streams * 256 KiB.
    cfg.set_max_connection_receive_window(Some(
        MUX_MAX_STREAMS * STREAM_WINDOW + WINDOW_GROWTH_POOL,
    ));
    cfg.set_max_num_streams(MUX_MAX_STREAMS);
    cfg.set_split_send_size(SPLIT_SEND_SIZE);
    cfg
}

type OpenReply = oneshot::Sender<Result<Substream, ConnectionError>>;

/// A cheap, clonable handle to a running multiplexer.
#[derive(Debug, Clone)]
pub struct MuxHandle {
    open: mpsc::Sender<OpenReply>,
    closed: CancellationToken,
    connection: u64,
}

/// Numbers connections, so that their streams can be told apart.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

impl MuxHandle {
    /// This connection's number, unique in the process; its streams carry it too
    /// ([`Substream::connection_id`]).
    pub fn connection_id(&self) -> u64 {
        self.connection
    }

    /// Opens an outbound substream. The peer learns of it only with the first frame written on
    /// it, so write something at once.
    pub async fn open(&self) -> io::Result<Substream> {
        let (tx, rx) = oneshot::channel();
        self.open.send(tx).await.map_err(|_| closed_err())?;
        match rx.await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
            Err(_) => Err(closed_err()),
        }
    }

    /// Resolves once the connection has ended, for whatever reason.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

fn closed_err() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the multiplexed connection is closed",
    )
}

/// A started multiplexer: the handle, the inbound streams, and the driver future to spawn.
pub struct Mux {
    /// Opens outbound streams.
    pub handle: MuxHandle,
    /// Streams the peer opened, at most `inbound_backlog` waiting. The driver never waits for
    /// room (that would stall every stream): a stream that finds the queue full is reset, like
    /// a connection that finds a full listen backlog.
    pub inbound: Inbound,
    /// Runs the connection until it ends or `shutdown` is cancelled; resolves to why it ended
    /// ([`SessionEnd::Closed`] when `shutdown` ended it).
    pub driver: BoxFuture<'static, SessionEnd>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").field("handle", &self.handle).finish()
    }
}

/// Starts yamux on `io`, whose first bytes (read with the handshake) are `early`. Nothing
/// happens until `driver` is polled (spawn it).
pub fn start<T>(
    io: T,
    early: &[u8],
    role: Role,
    inbound_backlog: usize,
    shutdown: CancellationToken,
) -> Mux
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inbound_tx, inbound) = Inbound::channel(inbound_backlog);
    let (handle, driver) = start_with(io, early, role, inbound_tx, shutdown);
    Mux {
        handle,
        inbound,
        driver,
    }
}

/// Like [`start`], delivering the peer's streams into `inbound`, which may outlive this
/// connection (a reconnecting client keeps one queue across its sessions). A stream that finds
/// the queue full is reset.
pub fn start_into<T>(
    io: T,
    early: &[u8],
    role: Role,
    inbound: mpsc::Sender<Substream>,
    shutdown: CancellationToken,
) -> (MuxHandle, BoxFuture<'static, SessionEnd>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    start_with(io, early, role, inbound, shutdown)
}

fn start_with<T, I>(
    io: T,
    early: &[u8],
    role: Role,
    inbound: I,
    shutdown: CancellationToken,
) -> (MuxHandle, BoxFuture<'static, SessionEnd>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Offer,
{
    let mode = match role {
        Role::Dialer => Mode::Client,
        Role::Acceptor => Mode::Server,
    };
    let lost = Arc::new(AtomicBool::new(false));
    let goaway = Arc::new(AtomicBool::new(false));
    let flush_owed = Arc::new(AtomicBool::new(false));
    let io = SessionIo::watched(io, lost.clone(), goaway.clone(), flush_owed.clone(), early);
    let conn = Connection::new(io.compat(), yamux_config(), mode);
    let (open_tx, open_rx) = mpsc::channel(64);
    let closed = CancellationToken::new();
    let connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let streams = StreamFactory { lost, connection };
    let signals = Signals { goaway, flush_owed };
    let driver = drive(
        conn,
        streams,
        signals,
        open_rx,
        inbound,
        shutdown,
        closed.clone(),
    );
    let handle = MuxHandle {
        open: open_tx,
        closed,
        connection,
    };
    (handle, driver.boxed())
}

/// What the driver learns from the socket layer.
struct Signals {
    /// This side wrote a GoAway: yamux found the peer breaking the protocol.
    goaway: Arc<AtomicBool>,
    /// The socket deferred a flush with bytes gathered: poll the connection again before
    /// waiting, or they would wait for unrelated traffic.
    flush_owed: Arc<AtomicBool>,
}

async fn drive<T, I: Offer>(
    mut conn: Connection<Compat<SessionIo<T>>>,
    streams: StreamFactory,
    signals: Signals,
    mut requests: mpsc::Receiver<OpenReply>,
    inbound: I,
    shutdown: CancellationToken,
    closed: CancellationToken,
) -> SessionEnd
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let _closed_on_exit = closed.drop_guard();
    let mut waiting: Option<OpenReply> = None;
    let outcome = tokio::select! {
        result = poll_fn(|cx| {
            let polled = poll_driver(cx, &mut conn, &streams, &signals.flush_owed, &mut requests, &mut waiting, &inbound);
            if polled.is_pending() && signals.goaway.load(Ordering::Acquire) {
                return Poll::Ready(Err(ConnectionError::Closed));
            }
            polled
        }) => Some(result),
        () = shutdown.cancelled() => None,
    };
    // Whatever ended the connection, streams that end from now on were cut, not finished.
    streams.lost.store(true, Ordering::Release);
    let said_goodbye = signals.goaway.load(Ordering::Acquire);
    if outcome.is_none() || said_goodbye {
        // Tell the peer we are going (GoAway) and flush what is queued: best effort.
        let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| conn.poll_close(cx))).await;
    }
    match outcome {
        None => SessionEnd::Closed,
        Some(_) if said_goodbye => {
            SessionEnd::Protocol("a yamux frame out of place (GoAway sent)".into())
        }
        Some(Ok(())) => SessionEnd::PeerClosed,
        Some(Err(ConnectionError::Closed)) => SessionEnd::PeerClosed,
        Some(Err(e)) => SessionEnd::ConnectionLost(e.to_string()),
    }
}

fn poll_driver<T, I: Offer>(
    cx: &mut Context<'_>,
    conn: &mut Connection<Compat<SessionIo<T>>>,
    streams: &StreamFactory,
    flush_owed: &AtomicBool,
    requests: &mut mpsc::Receiver<OpenReply>,
    waiting: &mut Option<OpenReply>,
    inbound: &I,
) -> Poll<Result<(), ConnectionError>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut flush_polls = 0;
    loop {
        // Socket I/O first: it also retires dropped streams, which frees room for new ones.
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // Full or gone: dropping the stream resets it.
                    inbound.offer(streams.wrap(stream));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending if flush_owed.swap(false, Ordering::AcqRel) => {
                    // The frames of this poll are gathered but unwritten: the next poll of the
                    // connection writes them. While streams keep producing, hand over to the
                    // scheduler instead, so other tasks' frames join the write.
                    if flush_polls < MAX_FLUSH_POLLS {
                        flush_polls += 1;
                        continue;
                    }
                    cx.waker().wake_by_ref();
                    break;
                }
                Poll::Pending => break,
            }
        }
        let mut opened = false;
        loop {
            if waiting.is_none() {
                match requests.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => *waiting = Some(reply),
                    // No request, or every handle is gone: keep driving the open streams.
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            if waiting.as_ref().is_some_and(|w| w.is_closed()) {
                *waiting = None;
                continue;
            }
            // Pending means 256 streams await the peer's acknowledgement; yamux wakes us.
            let Poll::Ready(result) = conn.poll_new_outbound(cx) else {
                break;
            };
            let failed = result.is_err();
            if let Some(reply) = waiting.take() {
                let _ = reply.send(result.map(|s| streams.wrap(s)));
            }
            if failed {
                // The connection is unusable now; the next poll of inbound reports why.
                break;
            }
            opened = true;
        }
        // A new stream's outgoing frames are only noticed once the connection has polled it,
        // so go round again: otherwise its first frame waits for unrelated traffic.
        if !opened {
            return Poll::Pending;
        }
    }
}
