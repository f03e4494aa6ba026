//! The relay: accepts clients on the control port and serves tunnels and file transfers.
//!
//! ```no_run
//! # async fn run() -> relay_core::Result<()> {
//! use relay_core::server::{RelayConfig, RelayServer};
//! use tokio_util::sync::CancellationToken;
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! let relay = RelayServer::new(listener, RelayConfig::default())?;
//! let shutdown = CancellationToken::new();
//! relay.run(shutdown).await
//! # }
//! ```

mod access;
mod admission;
mod budget;
mod charge;
mod cluster;
mod config;
mod connection;
mod control;
mod handshake;
mod leases;
mod metrics;
mod open_visitors;
mod opening;
mod per_addr;
mod ports;
mod proxied;
mod proxy_gate;
mod public;
mod refusals;
mod rendezvous;
mod resets;
mod session;
mod strikes;
#[cfg(test)]
mod task_size;
mod usage;
mod visitor;

use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::wide::WidePool;
pub use crate::wide::send_buffer_limits;
pub use access::{Access, AccessHandle, NamedToken, Scope};
pub use admission::{FAILURE_WINDOW, MAX_AUTH_PENALTY};
pub use budget::Budget;
pub use cluster::{Cluster, MAX_RELAY_ID, parse_peer};
pub use config::*;
pub use metrics::RelayMetrics;
pub use per_addr::{AddrGroup, PerAddrLimits, default_share};
pub use proxied::TrustedNet;

use connection::handle_connection;

use crate::error::{Error, Result};
use crate::frame::FramedConn;
use crate::net::tune_session_socket;
use crate::protocol::Hello;
use admission::{Gate, HandshakeTicket, Refused};
use handshake::{Client, Rejection, answer_rejection, read_hello, refuse};
use leases::Leases;
use metrics::Metrics;
use open_visitors::OpenVisitors;
use ports::PortPool;
use refusals::{REFUSAL_WINDOW, Refusals};
use rendezvous::Offers;

/// After the drain deadline, how long cut connections get to send their resets.
const HARD_STOP_GRACE: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (typically out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Connections being told "busy" at once, beyond the handshake cap; past this they are closed
/// unanswered, so answering a flood costs a bounded number of tasks.
const MAX_BUSY_ANSWERS: usize = 256;

/// The relay-wide visitor cap as configured, or derived from the kernel's TCP memory; logged,
/// since it decides how many visitors the relay takes.
fn open_visitors_cap(config: &RelayConfig) -> Arc<OpenVisitors> {
    let pressure = budget::tcp_pressure();
    let limit = config
        .max_open_visitors
        .unwrap_or_else(|| budget::visitor_cap(pressure));
    let per_addr = config
        .max_open_visitors_per_addr
        .unwrap_or_else(|| budget::visitor_share(limit))
        .min(limit);
    let worst = budget::stalled_visitor_kernel();
    let mib = |b: u64| b / (1024 * 1024);
    info!(
        open_visitors = limit,
        per_client_addr = per_addr,
        stalled_kernel_kib_each = worst / 1024,
        per_client_kernel_mib = mib(per_addr as u64 * worst as u64),
        all_kernel_mib = mib(limit as u64 * worst as u64),
        tcp_pressure_mib = pressure.map(mib),
        derived = config.max_open_visitors.is_none(),
        "visitor budget (--max-open-visitors, --max-open-visitors-per-addr to change)"
    );
    OpenVisitors::new(limit, per_addr)
}

/// Tells the operator whether far downloads may grow past the kernel's auto-tuning ceiling, and
/// what to change when they may not.
fn log_wide(config: &RelayConfig, limits: Option<(usize, usize)>, on: bool) {
    let kib = |(ceiling, most): (usize, usize)| (ceiling / 1024, most / 1024);
    let (ceiling_kib, lifted_kib) = limits.map(kib).unzip();
    if on {
        info!(
            sockets = config.wide_visitors,
            ceiling_kib, lifted_kib, "wide send buffers (--wide-visitors)"
        );
    } else if config.visitor_send_buffer.is_none() && config.wide_visitors > 0 && limits.is_some() {
        info!(
            ceiling_kib,
            lifted_kib,
            "wide send buffers off: net.core.wmem_max is not above half of net.ipv4.tcp_wmem's \
             maximum, so far downloads stop at the auto-tuning ceiling; raise net.core.wmem_max \
             to lift it"
        );
    }
}

/// A relay bound to its control port, ready to [`run`](RelayServer::run).
#[derive(Debug)]
pub struct RelayServer {
    listener: TcpListener,
    shared: Arc<Shared>,
    workers: Vec<tokio::runtime::Handle>,
}

/// State every connection handler of one relay shares.
#[derive(Debug)]
struct Shared {
    config: RelayConfig,
    ports: PortPool,
    leases: Arc<Leases>,
    sessions: Arc<Semaphore>,
    transfers: Arc<Semaphore>,
    offers: Offers,
    /// Visitors open relay-wide and per client address.
    open_visitors: Arc<OpenVisitors>,
    /// Tokens, per-address shares, failure counts.
    gate: Gate,
    refusals: Refusals,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
    tasks: TaskTracker,
    /// Cancelled when the drain deadline has passed: whatever still runs is cut (reset).
    hard_stop: CancellationToken,
    /// Lifts of visitor and session send buffers past auto-tuning; `None` where they are off.
    wide: Option<Arc<WidePool>>,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl RelayServer {
    /// Wraps an already bound control listener. Public listeners are bound on the same address
    /// as the control listener (all interfaces if it listens on all).
    pub fn new(listener: TcpListener, config: RelayConfig) -> Result<Self> {
        let local = listener.local_addr()?;
        let (config, port_range) = config.validate(local.port()).map_err(Error::Config)?;
        let pool_len = port_range.len();
        let ports =
            PortPool::new(local.ip(), port_range).with_visitor_sockets(config.visitor_sockets());
        let limits = config.per_addr_limits(pool_len).map_err(Error::Config)?;
        let metrics = Arc::new(Metrics::new());
        let open_visitors = open_visitors_cap(&config);
        // An operator's fixed send buffer is a cap: it is never lifted.
        let buffer_limits = send_buffer_limits();
        let wide = match config.visitor_send_buffer {
            None => WidePool::with_limits(
                config.wide_visitors,
                buffer_limits,
                metrics.wide_visitors.clone(),
            ),
            Some(_) => None,
        };
        log_wide(&config, buffer_limits, wide.is_some());
        let shared = Shared {
            open_visitors,
            gate: Gate::new(&config, limits),
            ports,
            leases: Arc::new(Leases::counting_expiries(metrics.leases_expired.clone())),
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            transfers: Arc::new(Semaphore::new(config.max_transfers)),
            offers: Offers::new(),
            refusals: Refusals::counting_into(metrics.refusals.clone()),
            metrics,
            next_id: AtomicU64::new(1),
            tasks: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
            wide,
            config,
        };
        Ok(RelayServer {
            listener,
            shared: Arc::new(shared),
            workers: Vec::new(),
        })
    }

    /// Serves each new connection (a tunnel session with all its visitors, or a transfer) on
    /// one of these runtimes, in turn, instead of the runtime `run` is called on.
    ///
    /// A session's traffic crosses its multiplexer task and every visitor task; on one
    /// single-threaded runtime per core those hand-offs stay on one thread, which measured
    /// markedly cheaper than a work-stealing pool (docs/benchmark.md), while sessions still
    /// spread over every core.
    pub fn with_workers(mut self, workers: Vec<tokio::runtime::Handle>) -> Self {
        self.workers = workers;
        self
    }

    /// The control port's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that swaps the relay's token set while it runs (on SIGHUP, for example).
    pub fn access_handle(&self) -> AccessHandle {
        self.shared.gate.access.clone()
    }

    /// The relay's metrics and health, to serve while it runs (and drains).
    pub fn metrics(&self) -> RelayMetrics {
        RelayMetrics(self.shared.metrics.clone())
    }

    /// The public ports this relay hands out.
    pub fn public_ports(&self) -> RangeInclusive<u16> {
        self.shared.ports.range()
    }

    /// Serves until `shutdown` is cancelled. Then it stops accepting, closes every public port,
    /// tells every client, and lets visitors and transfers already under way finish for up to
    /// the configured drain timeout; whatever still runs after that is reset.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let handshakes = Arc::new(Semaphore::new(self.shared.config.max_handshakes));
        let busy_answers = Arc::new(Semaphore::new(MAX_BUSY_ANSWERS));
        let mut summaries = tokio::time::interval(REFUSAL_WINDOW);
        let mut next_worker = 0;
        self.shared.metrics.set_accepting();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = summaries.tick() => {
                    self.shared.refusals.summarize();
                    continue;
                }
                accepted = self.listener.accept() => accepted,
            };
            let (sock, peer) = match accepted {
                Ok((sock, peer)) => (sock, crate::net::canonical(peer)),
                Err(e) => {
                    warn!(error = %e, "accept failed on the control port; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let max = self.shared.config.max_handshakes;
            let trusted = proxied::is_trusted(&self.shared.config.trusted_proxies, peer.ip());
            // A trusted proxy's connections are admitted by the address in their PROXY
            // header, read on the worker; here they take only a relay-wide slot.
            let permit = match trusted {
                true => proxy_gate::proxy_ticket(&handshakes, max),
                false => admission::handshake_ticket(&self.shared.gate, &handshakes, max, peer),
            };
            let permit = match permit {
                Ok(ticket) => ticket,
                Err(refused) => {
                    self.answer_busy(sock, peer, &busy_answers, refused);
                    continue;
                }
            };
            let shared = self.shared.clone();
            let conn_shutdown = shutdown.child_token();
            let span = match trusted {
                true => {
                    info_span!("conn", client.addr = tracing::field::Empty, proxy.addr = %peer, tls = tracing::field::Empty)
                }
                false => info_span!("conn", client.addr = %peer, tls = tracing::field::Empty),
            };
            next_worker = (next_worker + 1) % self.workers.len().max(1);
            let Some(worker) = self.workers.get(next_worker) else {
                let conn = handle_connection(sock, peer, trusted, shared, permit, conn_shutdown);
                self.shared.tasks.spawn(conn.instrument(span));
                continue;
            };
            // Re-registered on the worker, so its readiness events arrive on that thread.
            let sock = match sock.into_std() {
                Ok(sock) => sock,
                Err(e) => {
                    warn!(error = %e, "cannot hand a connection to a worker");
                    continue;
                }
            };
            let conn = async move {
                match TcpStream::from_std(sock) {
                    Ok(sock) => {
                        handle_connection(sock, peer, trusted, shared, permit, conn_shutdown).await
                    }
                    Err(e) => warn!(error = %e, "cannot adopt a connection on a worker"),
                }
            };
            self.shared.tasks.spawn_on(conn.instrument(span), worker);
        }
        self.shared.metrics.set_draining();
        drop(self.listener);
        // A stopping relay keeps nothing for anyone: leased ports close with it.
        self.shared.leases.clear();
        self.shared.refusals.summarize();
        let tasks = &self.shared.tasks;
        tasks.close();
        info!(
            open = tasks.len(),
            "control port closed; draining sessions and transfers"
        );
        if tokio::time::timeout(self.shared.config.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                left = tasks.len(),
                "drain timeout passed; cutting what is left"
            );
            self.shared.hard_stop.cancel();
            let _ = tokio::time::timeout(HARD_STOP_GRACE, tasks.wait()).await;
        }
        Ok(())
    }
}

impl RelayServer {
    /// Tells a connection beyond the handshake cap (the relay's, or its address's) that the
    /// relay is busy, so its client can say so instead of guessing at a closed connection.
    fn answer_busy(
        &self,
        sock: TcpStream,
        peer: SocketAddr,
        answers: &Arc<Semaphore>,
        refused: Refused,
    ) {
        if self.shared.refusals.note(refused.kind) {
            warn!(client.addr = %peer, reason = %refused.message, "too many connections in their handshake; answering busy");
        }
        let Ok(answering) = answers.clone().try_acquire_owned() else {
            return;
        };
        let timeout = self.shared.config.handshake_timeout;
        self.shared.tasks.spawn(async move {
            let _answering = answering;
            let mut sock = sock;
            let answer = refuse(&mut sock, refused.code, refused.message);
            let _ = tokio::time::timeout(timeout, answer).await;
        });
    }
}
