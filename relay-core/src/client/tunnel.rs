//! [`TunnelListener`]: a public address on a relay that behaves like a `TcpListener`, and keeps
//! its address across lost connections.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info_span};

use super::ConnectConfig;
use super::incoming::Incoming;
use super::session::{Reconnect, Supervisor, TunnelState, open, start};
use super::visitor::{IncomingVisitor, Visitor};
use crate::auth::Token;
use crate::ending::SessionEnd;
use crate::error::{Error, Result};
use crate::mux::Substream;
use crate::net::{join_host_port, split_host_port};
use crate::protocol::{DEFAULT_HANDSHAKE_TIMEOUT, MAX_TUNNELS_PER_SESSION, TunnelRequest};
use crate::tls::ClientTls;

/// How long `accept` waits for the session task to record why it ended.
const LAST_WORD: Duration = Duration::from_millis(500);

/// Settings of a tunnel client. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Deadline for the handshake with the relay.
    pub handshake_timeout: Duration,
    /// The token the relay requires, if it requires one.
    pub token: Option<Token>,
    /// Speak TLS to the relay, checking its certificate this way; `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// Public port to ask for (granted when free); `None` takes any. For
    /// [`TunnelListener::connect`]; [`TunnelListener::connect_many`] takes one per tunnel.
    pub preferred_port: Option<u16>,
    /// What to do when the session is lost: by default reconnect with backoff, asking for the
    /// same ports again (the relay keeps them leased for a while).
    pub reconnect: Reconnect,
    /// Visitors announced but not yet taken up by `accept`, per tunnel; more are reset, like
    /// connections that find a full listen backlog. (The relay also resets a visitor that is
    /// not answered within its handshake timeout, 10 s by default.)
    pub accept_backlog: usize,
    /// How long a new substream may take to deliver its visitor header.
    pub header_timeout: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            token: None,
            tls: None,
            preferred_port: None,
            reconnect: Reconnect::default(),
            accept_backlog: 1024,
            header_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl TunnelConfig {
    pub(super) fn connect(&self) -> ConnectConfig {
        ConnectConfig {
            handshake_timeout: self.handshake_timeout,
            token: self.token.clone(),
            tls: self.tls.clone(),
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
/// `tokio::net::TcpListener`. Everything travels over one TCP connection to the relay; when
/// that connection is lost, the listener reconnects by itself (see [`TunnelConfig::reconnect`])
/// and keeps its address when the relay still holds its lease.
///
/// ```no_run
/// use relay_core::{TunnelConfig, TunnelListener};
///
/// # async fn run() -> relay_core::Result<()> {
/// let listener = TunnelListener::connect("relay.example.com:8080", TunnelConfig::default()).await?;
/// println!("public address: {}", listener.public_addr());
/// loop {
///     let (stream, visitor) = listener.accept().await?;
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
/// Dropping every listener of a connection ends the session: the client says goodbye, and the
/// relay closes the public ports and every visitor.
#[derive(Debug)]
pub struct TunnelListener {
    index: usize,
    addr: watch::Receiver<PublicAddr>,
    client: Arc<Client>,
}

/// What the listeners of one connection share.
#[derive(Debug)]
struct Client {
    incoming: Incoming,
    max_visitors: u32,
    session_id: watch::Receiver<u64>,
    /// Why the client stopped, once it has.
    ended: watch::Receiver<Option<SessionEnd>>,
    /// Cancelled by [`TunnelListener::close`], or when the last listener is dropped.
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl TunnelListener {
    /// Dials the relay at `relay` (`HOST:PORT` or `[V6]:PORT`) and opens a tunnel. A relay
    /// that cannot be reached or refuses is an error at once: only a session that was
    /// established is reconnected.
    pub async fn connect(relay: &str, config: TunnelConfig) -> Result<Self> {
        let ports = [config.preferred_port];
        let mut listeners = Self::connect_many(relay, config, &ports).await?;
        Ok(listeners.remove(0))
    }

    /// Opens several tunnels over one connection to the relay, one per entry of
    /// `preferred_ports` (each a port to ask for, or `None` for any), and returns their
    /// listeners in the same order. At most [`MAX_TUNNELS_PER_SESSION`].
    pub async fn connect_many(
        relay: &str,
        config: TunnelConfig,
        preferred_ports: &[Option<u16>],
    ) -> Result<Vec<Self>> {
        if preferred_ports.is_empty() || preferred_ports.len() > MAX_TUNNELS_PER_SESSION {
            return Err(Error::Config(format!(
                "a connection carries 1 to {MAX_TUNNELS_PER_SESSION} tunnels"
            )));
        }
        let (host, _) = split_host_port(relay).map_err(|e| Error::Connect {
            addr: relay.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let requests = preferred_ports
            .iter()
            .map(|&preferred_port| TunnelRequest {
                preferred_port,
                lease: None,
            })
            .collect();
        let established = open(relay, &config.connect(), requests).await?;
        let (inbound_tx, inbound) = mpsc::channel(config.accept_backlog.max(1));
        let (running, welcome) = start(established, inbound_tx.clone()).await?;
        let public_host = welcome.public_host.clone().unwrap_or_else(|| host.clone());
        let (senders, receivers): (Vec<_>, Vec<_>) = welcome
            .tunnels
            .iter()
            .map(|grant| {
                let (tx, rx) = watch::channel(PublicAddr {
                    host: public_host.clone(),
                    port: grant.public_port,
                });
                (
                    TunnelState {
                        addr: tx,
                        lease: grant.lease.clone(),
                    },
                    rx,
                )
            })
            .unzip();

        let (ended_tx, ended) = watch::channel(None);
        let (session_tx, session_id) = watch::channel(welcome.session_id);
        let stop = CancellationToken::new();
        let client = Arc::new(Client {
            incoming: Incoming::new(
                inbound,
                preferred_ports.len(),
                config.accept_backlog,
                config.header_timeout,
            ),
            max_visitors: welcome.max_visitors,
            session_id,
            ended,
            stop: stop.clone(),
            _stop_on_drop: stop.clone().drop_guard(),
        });
        let span = info_span!("tunnel", relay = %relay);
        let supervisor = Supervisor {
            relay: relay.to_string(),
            host,
            config,
            tunnels: senders,
            inbound: inbound_tx,
            ended: ended_tx,
            session_id: session_tx,
            stop,
        };
        tokio::spawn(supervisor.run(running).instrument(span));
        Ok(receivers
            .into_iter()
            .enumerate()
            .map(|(index, addr)| TunnelListener {
                index,
                addr,
                client: client.clone(),
            })
            .collect())
    }

    /// The address visitors connect to now. It changes only when a reconnect could not get
    /// the old port back; [`watch_public_addr`](Self::watch_public_addr) tells when.
    pub fn public_addr(&self) -> PublicAddr {
        self.addr.borrow().clone()
    }

    /// A receiver that sees every change of the public address (after a reconnect that could
    /// not keep the port).
    pub fn watch_public_addr(&self) -> watch::Receiver<PublicAddr> {
        self.addr.clone()
    }

    /// The relay's id for the current session (matches the relay's logs).
    pub fn session_id(&self) -> u64 {
        *self.client.session_id.borrow()
    }

    /// Most visitors the relay lets in at once.
    pub fn max_visitors(&self) -> u32 {
        self.client.max_visitors
    }

    /// Waits for the next visitor and accepts it. Fails only when the client has stopped for
    /// good: the session was lost and reconnecting is off, or the relay refused to take the
    /// client back. Cancel-safe: a visitor is never lost by dropping the future.
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
    /// Cancel-safe.
    pub async fn next_visitor(&self) -> Result<IncomingVisitor> {
        let mut ended = self.client.ended.clone();
        tokio::select! {
            visitor = self.client.incoming.next(self.index) => match visitor {
                Some(v) => Ok(v),
                None => Err(self.lost().await),
            },
            () = ended_signal(&mut ended) => Err(self.lost().await),
        }
    }

    /// Ends the session on purpose, for every tunnel of this connection: tells the relay
    /// goodbye, so it frees the public ports at once (a lost session's ports stay leased) and
    /// lets the visitors inside finish, and waits until the relay has closed the connection
    /// (bounded). Close the streams of finished visitors first: their last bytes travel ahead
    /// of the goodbye. Dropping every listener does the same without waiting.
    pub async fn close(&self) {
        self.client.stop.cancel();
        let mut ended = self.client.ended.clone();
        ended_signal(&mut ended).await;
    }

    /// The error for a client that has stopped, with its reason.
    async fn lost(&self) -> Error {
        let mut ended = self.client.ended.clone();
        let _ = tokio::time::timeout(LAST_WORD, ended_signal(&mut ended)).await;
        let reason = ended.borrow().clone();
        Error::SessionLost(reason.unwrap_or(SessionEnd::PeerClosed))
    }
}

/// Resolves once the client has recorded why it stopped. (A helper, so the watch's read guard
/// never lives across an await.)
async fn ended_signal(ended: &mut watch::Receiver<Option<SessionEnd>>) {
    let _ = ended.wait_for(Option::is_some).await;
}
