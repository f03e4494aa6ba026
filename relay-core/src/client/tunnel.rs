//! [`TunnelListener`]: a public address on a relay that behaves like a `TcpListener`, and keeps
//! its address across lost connections.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span};

use super::config::TunnelConfig;
use super::handle::{SessionHandle, Shared};
use super::incoming::Arrivals;
use super::public_addr::PublicAddr;
use super::resets::Resets;
use super::session::{Supervisor, TunnelState, open, start};
use super::stream::{Hold, TunnelStream};
use super::visitor::{IncomingVisitor, Visitor};
use crate::error::{Error, Result};
use crate::net::split_host_port;
use crate::protocol::{MAX_TUNNELS_PER_SESSION, TunnelRequest};

/// What `accept` gives: a visitor's stream, and who the visitor is.
type Accepted = (TunnelStream, Visitor);

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
/// # Lifetime
///
/// As with a `TcpListener`, accepted [`TunnelStream`]s outlive the listener: dropping it only
/// tells the relay to turn new visitors of this tunnel away (see
/// [`stop_accepting`](Self::stop_accepting)). The session ends, with a goodbye that lets the
/// relay free the public ports at once, when every listener and every stream of the connection
/// is gone, or on [`shutdown`](Self::shutdown), which also waits until the relay has closed.
/// A program about to exit should call `shutdown` (or [`SessionHandle::shutdown`]) so that the
/// last bytes and the goodbye are out before the runtime stops.
///
/// With the `axum` feature, a `TunnelListener` is an `axum::serve::Listener`.
pub struct TunnelListener {
    index: usize,
    addr: watch::Receiver<PublicAddr>,
    shared: Arc<Shared>,
    hold: Arc<Hold>,
    /// The accept under way for [`poll_accept`](Self::poll_accept).
    polled: Mutex<Option<BoxFuture<'static, Result<Accepted>>>>,
}

impl fmt::Debug for TunnelListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelListener")
            .field("index", &self.index)
            .field("public_addr", &*self.addr.borrow())
            .finish_non_exhaustive()
    }
}

impl TunnelListener {
    /// Dials the relay at `relay` (`HOST:PORT` or `[V6]:PORT`) and opens a tunnel. A relay
    /// that cannot be reached or refuses is an error at once: only a session that was
    /// established is reconnected.
    ///
    /// Cancel safety: dropping the future abandons the handshake; nothing is left behind.
    pub async fn connect(relay: &str, config: TunnelConfig) -> Result<Self> {
        let ports = [config.preferred_port];
        let mut listeners = Self::connect_many(relay, config, &ports).await?;
        Ok(listeners.remove(0))
    }

    /// Opens several tunnels over one connection to the relay, one per entry of
    /// `preferred_ports` (each a port to ask for, or `None` for any), and returns their
    /// listeners in the same order. At most [`MAX_TUNNELS_PER_SESSION`].
    ///
    /// Cancel safety: as [`connect`](Self::connect).
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
        let resets = Arc::new(Resets::default());
        let (running, welcome) = start(established, inbound_tx.clone(), &resets).await?;
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
        let (accepting, accepting_rx) = watch::channel(vec![true; preferred_ports.len()]);
        let stop = CancellationToken::new();
        let streams = TaskTracker::new();
        let shared = Arc::new(Shared {
            arrivals: Arc::new(Arrivals::new(
                (inbound, resets.clone()),
                preferred_ports.len(),
                config.accept_backlog,
                config.header_timeout,
            )),
            max_visitors: welcome.max_visitors,
            session_id,
            ended,
            stop: stop.clone(),
            accepting,
            streams: streams.clone(),
        });
        let hold = Arc::new(Hold {
            _stop_on_drop: stop.clone().drop_guard(),
        });
        let span = info_span!("tunnel", relay = %relay);
        let supervisor = Supervisor {
            relay: relay.to_string(),
            host,
            config,
            tunnels: senders,
            inbound: inbound_tx,
            resets,
            ended: ended_tx,
            session_id: session_tx,
            accepting: accepting_rx,
            streams,
            stop,
        };
        tokio::spawn(supervisor.run(running).instrument(span));
        Ok(receivers
            .into_iter()
            .enumerate()
            .map(|(index, addr)| TunnelListener {
                index,
                addr,
                shared: shared.clone(),
                hold: hold.clone(),
                polled: Mutex::new(None),
            })
            .collect())
    }

    /// The address visitors connect to now (what `local_addr` is for a `TcpListener`). It
    /// changes only when a reconnect could not get the old port back;
    /// [`watch_public_addr`](Self::watch_public_addr) tells when.
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
        *self.shared.session_id.borrow()
    }

    /// Most visitors the relay lets in at once.
    pub fn max_visitors(&self) -> u32 {
        self.shared.max_visitors
    }

    /// A handle on the session that outlives this listener, for shutting it down or learning
    /// why it ended once the listener has been handed to a server loop.
    pub fn session(&self) -> SessionHandle {
        SessionHandle {
            shared: self.shared.clone(),
        }
    }

    /// Waits for the next visitor and accepts it.
    ///
    /// Fails with [`Error::SessionLost`] only when no visitor can come any more: the client
    /// stopped for good (the session was lost and reconnecting is off, or the relay refused to
    /// take the client back; the [`SessionEnd`](crate::SessionEnd) says which), or this
    /// tunnel stopped accepting (`SessionEnd::Closed`).
    ///
    /// Cancel safety: cancel-safe. A visitor is never lost by dropping the future; one whose
    /// answer was under way at that moment is reset, as a connection that finds its listener
    /// closing.
    pub async fn accept(&self) -> Result<Accepted> {
        accept(self.shared.clone(), self.hold.clone(), self.index).await
    }

    /// Polls for the next visitor, like `TcpListener::poll_accept`: for `Listener` traits and
    /// hand-written futures. The accept under way is kept in the listener between polls; only
    /// the waker of the latest call is woken.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Accepted>> {
        let mut polled = self.polled.lock().unwrap_or_else(PoisonError::into_inner);
        let future = polled.get_or_insert_with(|| {
            accept(self.shared.clone(), self.hold.clone(), self.index).boxed()
        });
        let accepted = ready!(future.as_mut().poll(cx));
        *polled = None;
        Poll::Ready(accepted)
    }

    /// The visitors as a `Stream` (from `futures`): each item is what [`accept`](Self::accept)
    /// gives; after the first error the stream ends.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            listener: self,
            done: false,
        }
    }

    /// Waits for the next visitor and leaves the answer to the caller, for clients that must
    /// first check they can serve it (for example by connecting to a local server). Fails as
    /// [`accept`](Self::accept) does.
    ///
    /// Cancel safety: cancel-safe; no visitor is lost by dropping the future.
    pub async fn next_visitor(&self) -> Result<IncomingVisitor> {
        self.shared.next_visitor(self.index, &self.hold).await
    }

    /// Stops taking visitors on this tunnel, while keeping the session for the visitors
    /// inside: the relay turns new visitors away at once (they see a reset), visitors
    /// announced but not yet accepted are refused, and `accept` fails from now on. Other
    /// tunnels of the connection go on. Dropping the listener does the same.
    pub fn stop_accepting(&self) {
        self.shared.stop_accepting(self.index);
    }

    /// Ends the session on purpose, for every tunnel of this connection, and waits until it
    /// has ended:
    ///
    /// 1. the relay stops handing over visitors (as [`stop_accepting`](Self::stop_accepting)
    ///    on every tunnel);
    /// 2. waits up to `grace` for the open [`TunnelStream`]s to be dropped; shut them down
    ///    first (`AsyncWriteExt::shutdown`) so that each visitor gets a clean end;
    /// 3. says goodbye: the relay frees the public ports at once (a lost session's ports stay
    ///    leased), lets the visitors' last bytes and ends through, and closes the connection,
    ///    which this waits for (bounded). Streams still open after `grace` are reset.
    ///
    /// Cancel safety: dropping the future does not undo step 1; the session then ends when
    /// the listeners and streams are dropped.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.shutdown(grace).await
    }
}

impl Drop for TunnelListener {
    fn drop(&mut self) {
        self.shared.stop_accepting(self.index);
    }
}

/// Accepts the next visitor of tunnel `index` (an owned future, for `poll_accept`).
async fn accept(shared: Arc<Shared>, hold: Arc<Hold>, index: usize) -> Result<Accepted> {
    loop {
        let incoming = shared.next_visitor(index, &hold).await?;
        let visitor = incoming.visitor();
        match incoming.accept().await {
            Ok(stream) => return Ok((stream, visitor)),
            Err(e) => {
                debug!(visitor.id = visitor.id, error = %e, "visitor gone before it was accepted")
            }
        }
    }
}

/// The visitors of a [`TunnelListener`] as a `Stream`: see [`TunnelListener::incoming`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<'a> {
    listener: &'a TunnelListener,
    done: bool,
}

impl futures::Stream for Incoming<'_> {
    type Item = Result<Accepted>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let accepted = ready!(self.listener.poll_accept(cx));
        self.done = accepted.is_err();
        Poll::Ready(Some(accepted))
    }
}
