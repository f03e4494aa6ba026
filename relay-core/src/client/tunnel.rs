//! [`TunnelListener`]: a public address on a relay that behaves like a `TcpListener`.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info_span};

use super::visitor::{IncomingVisitor, Visitor};
use crate::codec::CodecError;
use crate::ending::SessionEnd;
use crate::error::{Error, Result};
use crate::frame::FramedConn;
use crate::liveness::{Beat, Liveness};
use crate::mux::{self, Mux, Role, Substream};
use crate::net::{join_host_port, split_host_port};
use crate::protocol::{
    ClientControl, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_FRAME_LEN, Hello, RelayControl, Reply,
    VisitorHeader,
};

/// How long a lost session waits for the relay's last control frame, to report its reason.
const LAST_WORD: Duration = Duration::from_millis(100);
/// Longest a client keeps a shutting-down relay's connection for visitors still inside.
const MAX_RELAY_DRAIN: Duration = Duration::from_secs(60);

/// Settings of a tunnel client. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Deadline for the handshake with the relay.
    pub handshake_timeout: Duration,
    /// Public port to ask for (granted when free); `None` takes any.
    pub preferred_port: Option<u16>,
    /// Visitors announced but not yet taken up by `accept`; more are reset, like connections
    /// that find a full listen backlog. (The relay also resets a visitor that is not answered
    /// within its handshake timeout, 10 s by default.)
    pub accept_backlog: usize,
    /// How long a new substream may take to deliver its visitor header.
    pub header_timeout: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            preferred_port: None,
            accept_backlog: 1024,
            header_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Where visitors reach a tunnel: `host:port` (IPv6 hosts in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddr {
    /// The relay's advertised host name, or the host the client dialed.
    pub host: String,
    /// The public port.
    pub port: u16,
}

impl fmt::Display for PublicAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join_host_port(&self.host, self.port))
    }
}

/// A public address on a relay whose visitors arrive here, like connections on a
/// `tokio::net::TcpListener`. Everything travels over one TCP connection to the relay.
///
/// ```no_run
/// use relay_core::{TunnelConfig, TunnelListener};
/// use tokio::io::copy_bidirectional;
///
/// # async fn run() -> relay_core::Result<()> {
/// let listener = TunnelListener::connect("relay.example.com:8080", TunnelConfig::default()).await?;
/// println!("public address: {}", listener.public_addr());
/// loop {
///     let (mut stream, visitor) = listener.accept().await?;
///     tokio::spawn(async move {
///         let (mut read, mut write) = tokio::io::split(stream);
///         // Echo every byte back to the visitor.
///         let _ = tokio::io::copy(&mut read, &mut write).await;
///         println!("{} left", visitor.addr);
///     });
/// }
/// # }
/// ```
///
/// Dropping the listener ends the session: the relay closes the public port and every visitor.
#[derive(Debug)]
pub struct TunnelListener {
    public_addr: PublicAddr,
    session_id: u64,
    max_visitors: u32,
    incoming: tokio::sync::Mutex<Incoming>,
    /// Why the session ended, once it has.
    ended: watch::Receiver<Option<SessionEnd>>,
    _session: DropGuard,
}

/// New substreams and the visitor headers being read from them. Headers are read by whoever
/// calls `accept`, not by a task of their own: the header arrives with the stream's first
/// frame, so this saves a task and a wake-up per visitor.
struct Incoming {
    streams: mpsc::Receiver<Substream>,
    headers: FuturesUnordered<BoxFuture<'static, Option<IncomingVisitor>>>,
    header_timeout: Duration,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("headers_pending", &self.headers.len())
            .finish()
    }
}

impl TunnelListener {
    /// Dials the relay at `relay` (`HOST:PORT` or `[V6]:PORT`) and opens a tunnel.
    pub async fn connect(relay: &str, config: TunnelConfig) -> Result<Self> {
        let (host, _) = split_host_port(relay).map_err(|e| Error::Connect {
            addr: relay.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let hello = Hello::Tunnel {
            preferred_port: config.preferred_port,
        };
        let (conn, reply) = super::handshake(relay, &hello, config.handshake_timeout).await?;
        let Reply::Welcome(welcome) = reply else {
            return Err(Error::Protocol(format!(
                "expected a welcome, got {reply:?}"
            )));
        };
        let public_addr = PublicAddr {
            host: welcome.public_host.clone().unwrap_or(host),
            port: welcome.public_port,
        };

        let session = CancellationToken::new();
        // The relay may open visitors' substreams right after its welcome: bytes read with the
        // welcome already belong to yamux.
        let (sock, early) = conn.into_parts();
        let Mux {
            handle,
            inbound,
            driver,
        } = mux::start(
            sock,
            &early,
            Role::Dialer,
            config.accept_backlog,
            session.clone(),
        );
        let span =
            info_span!("session", session.id = welcome.session_id, public.addr = %public_addr);
        let driver = tokio::spawn(driver.instrument(span.clone()));

        // The control stream goes first; its first ping also announces it to the relay.
        let mut control = FramedConn::new(handle.open().await?, DEFAULT_MAX_FRAME_LEN);
        control.write_frame(&ClientControl::Ping(0)).await?;

        let (ended_tx, ended) = watch::channel(None);
        let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.into());
        let task = Session {
            driver,
            control,
            liveness: Liveness::new(heartbeat),
            ended: ended_tx,
            cancel: session.clone(),
        };
        tokio::spawn(task.run().instrument(span));
        let incoming = Incoming {
            streams: inbound,
            headers: FuturesUnordered::new(),
            header_timeout: config.header_timeout,
        };
        Ok(TunnelListener {
            public_addr,
            session_id: welcome.session_id,
            max_visitors: welcome.max_visitors,
            incoming: tokio::sync::Mutex::new(incoming),
            ended,
            _session: session.drop_guard(),
        })
    }

    /// The address visitors connect to.
    pub fn public_addr(&self) -> &PublicAddr {
        &self.public_addr
    }

    /// The relay's id for this session (matches the relay's logs).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Most visitors the relay lets in at once.
    pub fn max_visitors(&self) -> u32 {
        self.max_visitors
    }

    /// Waits for the next visitor and accepts it. Fails only when the session has ended.
    pub async fn accept(&self) -> Result<(Substream, Visitor)> {
        loop {
            let incoming = self.next_visitor().await?;
            let visitor = incoming.visitor();
            match incoming.accept().await {
                Ok(stream) => return Ok((stream, visitor)),
                Err(e) => {
                    debug!(visitor.id = visitor.id, error = %e, "visitor gone before it was accepted")
                }
            }
        }
    }

    /// Waits for the next visitor and leaves the answer to the caller, for clients that must
    /// first check they can serve it (for example by connecting to a local server).
    pub async fn next_visitor(&self) -> Result<IncomingVisitor> {
        let mut incoming = self.incoming.lock().await;
        let Incoming {
            streams,
            headers,
            header_timeout,
        } = &mut *incoming;
        let mut ended = self.ended.clone();
        loop {
            tokio::select! {
                Some(visitor) = headers.next(), if !headers.is_empty() => {
                    if let Some(visitor) = visitor {
                        return Ok(visitor);
                    }
                }
                stream = streams.recv() => match stream {
                    Some(stream) => headers.push(read_header(stream, *header_timeout).boxed()),
                    None => return Err(self.lost().await),
                },
                () = ended_signal(&mut ended) => return Err(self.lost().await),
            }
        }
    }

    /// The error for a session that has ended, with its reason (which the session task records
    /// a moment after the connection is gone).
    async fn lost(&self) -> Error {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(LAST_WORD * 5, ended_signal(&mut ended)).await;
        let reason = ended.borrow().clone();
        Error::SessionLost(reason.unwrap_or(SessionEnd::PeerClosed))
    }
}

/// Resolves once the session has recorded why it ended. (A helper, so the watch's read guard
/// never lives across an await.)
async fn ended_signal(ended: &mut watch::Receiver<Option<SessionEnd>>) {
    let _ = ended.wait_for(Option::is_some).await;
}

/// Reads a new substream's visitor header; `None` (after logging why) when it has none.
async fn read_header(stream: Substream, timeout: Duration) -> Option<IncomingVisitor> {
    // Exact reads: the visitor's first bytes follow the header in the same stream.
    let mut conn = FramedConn::exact(stream, DEFAULT_MAX_FRAME_LEN);
    let header = tokio::time::timeout(timeout, conn.read_frame::<VisitorHeader>()).await;
    let (stream, _) = conn.into_parts();
    match header {
        Ok(Ok(h)) => Some(IncomingVisitor {
            stream,
            visitor: Visitor {
                id: h.visitor_id,
                addr: h.peer_addr,
            },
        }),
        Ok(Err(e)) => {
            debug!(error = %e, "substream without a valid visitor header");
            None
        }
        Err(_) => {
            debug!("substream sent no visitor header in time");
            None
        }
    }
}

/// The background task of a tunnel session.
struct Session {
    driver: tokio::task::JoinHandle<SessionEnd>,
    control: FramedConn<Substream>,
    liveness: Liveness,
    ended: watch::Sender<Option<SessionEnd>>,
    cancel: CancellationToken,
}

impl Session {
    async fn run(self) {
        let Session {
            mut driver,
            mut control,
            mut liveness,
            ended,
            cancel,
        } = self;
        let first = tokio::select! {
            r = &mut driver => Err(r.unwrap_or_else(|e| SessionEnd::ConnectionLost(format!("connection task failed: {e}")))),
            end = heartbeats(&mut control, &mut liveness) => Ok(end),
            () = cancel.cancelled() => Ok(SessionEnd::Closed),
        };
        let end = match first {
            Ok(end) => end,
            // A relay that shuts down says so on the control stream just before closing; that
            // frame is already buffered and gives the better reason.
            Err(cut) => {
                let last = tokio::time::timeout(LAST_WORD, heartbeats(&mut control, &mut liveness));
                match last.await {
                    Ok(end @ SessionEnd::RelayShutdown(_)) => end,
                    _ => cut,
                }
            }
        };
        // A relay that gave up on this process while it was stopped: that is what happened.
        let end = match (&end, liveness.stalled()) {
            (SessionEnd::PeerClosed | SessionEnd::ConnectionLost(_), Some(stalled)) => {
                SessionEnd::Suspended { stalled }
            }
            _ => end,
        };
        debug!(reason = end.label(), detail = %end, "session ended");
        let draining = end.is_relay_shutdown() && !driver.is_finished();
        // `accept` reports this from now on.
        ended.send_replace(Some(end));
        if draining {
            // The relay lets visitors already inside finish before it closes the connection;
            // keep their streams going until then (or until the listener is dropped).
            tokio::select! {
                _ = &mut driver => {}
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(MAX_RELAY_DRAIN) => {}
            }
        }
        cancel.cancel();
    }
}

/// Sends a ping every interval and watches for the relay's pongs; returns why the session
/// ended. Cancel-safe between frames.
async fn heartbeats(control: &mut FramedConn<Substream>, liveness: &mut Liveness) -> SessionEnd {
    let mut seq = 0u64;
    loop {
        let frame = tokio::select! {
            beat = liveness.beat() => match beat {
                Beat::Ping => {
                    seq += 1;
                    match control.write_frame(&ClientControl::Ping(seq)).await {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                Beat::Gone { silent_for } => return SessionEnd::PeerSilent { silent_for },
            },
            frame = control.read_frame::<RelayControl>() => frame,
        };
        match frame {
            Ok(RelayControl::Pong(_)) => liveness.heard(),
            Ok(RelayControl::Shutdown { reason }) => return SessionEnd::RelayShutdown(reason),
            Err(CodecError::Closed) => return SessionEnd::PeerClosed,
            Err(CodecError::Io(e)) => return SessionEnd::ConnectionLost(e.to_string()),
            Err(e) => return SessionEnd::Protocol(format!("control stream: {e}")),
        }
    }
}
