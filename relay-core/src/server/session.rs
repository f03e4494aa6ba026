//! One tunnel session on the relay: the client's connection, its public listeners (one per
//! tunnel), its visitors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::control::heartbeats;
use super::handshake::Client;
use super::leases::Tunnel as Port;
use super::metrics::{SessionMetrics, VisitorMetrics};
use super::per_addr::AddrGroup;
use super::refusals::Refusal;
use super::resets::Resets;
use super::{Shared, admission};
use crate::ending::{Peer, SessionEnd};
use crate::frame::FramedConn;
use crate::liveness::Liveness;
use crate::mux::{self, MuxHandle, Role, Substream};
use crate::protocol::{
    ErrorCode, MAX_TUNNELS_PER_SESSION, RelayControl, Reply, TunnelRequest, Welcome,
};
use crate::splice::Meter;
use crate::wide::WidePool;

/// How long a lost connection's control stream is searched for the client's goodbye.
const LAST_WORD: Duration = Duration::from_millis(100);

/// How often a busy session sums up its visitors in the log (per-visitor lines are at debug).
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// What every visitor task of one session shares (one `Arc` per visitor keeps them small).
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) mux: MuxHandle,
    /// Visitors so far, and their bytes as they move (`a_to_b`: from visitors to the client).
    pub(super) visitors: AtomicU64,
    pub(super) bytes: Arc<Meter>,
    pub(super) counted: VisitorMetrics,
    /// Cancelled when the session ends; every visitor is then reset.
    pub(super) session: CancellationToken,
    /// How long the client may take to answer a new visitor.
    pub(super) answer_timeout: Duration,
    /// Where its visitors' send buffers may be lifted from (see `wide`).
    pub(super) wide: Option<Arc<WidePool>>,
    /// Visitors the client may reset, and how the client learns of the relay's resets.
    pub(super) resets: Resets,
}

/// Serves one tunnel client from its hello to the end of its connection.
///
/// Its future lives inside the connection's task for as long as the session does: the steps
/// before the session proper (refusals, leases, the welcome) run boxed, so that an idle
/// session's task holds only what serving it needs.
pub(super) async fn run(
    mut client: Client,
    requests: Vec<TunnelRequest>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let config = &shared.config;
    if requests.is_empty() || requests.len() > MAX_TUNNELS_PER_SESSION {
        let msg = format!("ask for 1 to {MAX_TUNNELS_PER_SESSION} tunnels per connection");
        Box::pin(client.refuse(ErrorCode::BadRequest, msg)).await;
        return;
    }
    let Ok(_session_permit) = shared.sessions.clone().try_acquire_owned() else {
        if shared.refusals.note(Refusal::SessionCap) {
            warn!(
                limit = config.max_sessions,
                "session limit reached; refusing tunnel"
            );
        }
        let msg = format!(
            "relay is full ({} sessions); try again later",
            config.max_sessions
        );
        Box::pin(client.refuse(ErrorCode::Busy, msg)).await;
        return;
    };
    // Cancelled when the session ends for any reason, or when a reconnecting owner of its
    // ports takes them over.
    let session = CancellationToken::new();
    let charger = admission::charger(&client, &shared);
    let granted = shared
        .leases
        .grant(&shared.ports, &requests, &session, &charger);
    let ports = match Box::pin(granted).await {
        Ok(ports) => ports,
        Err(shortfall) => {
            let answer = admission::shortfall(shortfall).answer(client, &shared.refusals);
            return Box::pin(answer).await;
        }
    };
    let leasing = !config.lease_ttl.is_zero();
    let session_id = shared.next_id();
    let welcome = Reply::Welcome(Welcome {
        session_id,
        tunnels: ports.iter().map(|p| p.grant(leasing)).collect(),
        public_host: config.public_host.clone(),
        max_visitors: admission::visitor_cap(config, client.token.as_deref()),
        heartbeat_interval_ms: config.heartbeat_interval_ms(),
        lease_ttl_ms: config.lease_ttl_ms(),
    });
    let reply = Box::pin(client.reply(&welcome));
    let sent = tokio::time::timeout(config.handshake_timeout, reply).await;
    if !matches!(sent, Ok(Ok(()))) {
        debug!("client left before its welcome");
        shared
            .leases
            .release(ports, leasing.then_some(config.lease_ttl));
        return;
    }

    let lease_ttl = config.lease_ttl;
    let public_ports: Vec<u16> = ports.iter().map(|p| p.port).collect();
    let span = info_span!(
        "session",
        session.id = session_id,
        public.port = %PortList(&public_ports),
    );
    async move {
        let reclaimed = ports.iter().filter(|p| p.reclaimed).count();
        let token = client
            .token
            .as_ref()
            .map_or("-", |t| t.name.as_str())
            .to_string();
        info!(client.addr = %client.peer, %token, reclaimed, "session opened");
        let named = client.token.as_ref().map(|t| t.name.as_str());
        let counted = shared.metrics.session_opened(named, ports.len(), reclaimed);
        let (end, tunnel, ports) = serve(client, ports, &shared, shutdown, session, &counted).await;
        shared.metrics.session_ended(end.label());
        let keep = leasing
            && !matches!(
                end,
                SessionEnd::PeerLeft | SessionEnd::RelayShutdown(_) | SessionEnd::Revoked(_)
            );
        shared.leases.release(ports, keep.then_some(lease_ttl));
        let (visitors, bytes) = tunnel.map_or((0, Meter::new().into()), |t| {
            (t.visitors.load(Ordering::Relaxed), t.bytes.clone())
        });
        info!(
            reason = end.label(),
            detail = %end.seen_by(Peer::Client),
            visitors,
            bytes_in = bytes.a_to_b(),
            bytes_out = bytes.b_to_a(),
            leased = keep,
            "session closed"
        );
    }
    .instrument(span)
    .await
}

/// Runs the session until it ends; returns why, the tunnel's counters once it had any, and
/// its ports (for leasing or freeing).
async fn serve(
    client: Client,
    mut ports: Vec<Port>,
    shared: &Arc<Shared>,
    relay_shutdown: CancellationToken,
    session: CancellationToken,
    counted: &SessionMetrics,
) -> (SessionEnd, Option<Arc<Tunnel>>, Vec<Port>) {
    let config = &shared.config;
    let replaced = session.clone();
    // Ends the session (and resets every visitor) however this function is left.
    let _end_session = session.child_token().drop_guard();
    let session = session.child_token();
    let cap = admission::visitor_cap(config, client.token.as_deref());
    let token = client.token.clone();
    let group = AddrGroup::from(client.peer.ip());
    let version = client.version;
    let revoked = shared.gate.access.revoked(token.as_deref());
    let (mut sock, early) = client.conn.into_parts();
    super::budget::tune_session_socket(sock.tcp());
    // Every visitor's upload to a far client crosses this socket: it may grow like theirs.
    sock.lift_send_buffer(shared.wide.clone());
    // The client opens only its control stream; a small queue is plenty.
    let mut mux = mux::start(sock, &early, Role::Acceptor, 4, session.clone());
    // The multiplexer copied them; kept, they would pin the handshake's 2 KiB read buffer
    // for the session's whole life.
    drop(early);
    let driver = mux.driver;
    let mut driver = shared
        .tasks
        .spawn(driver.instrument(tracing::Span::current()));

    // The client opens the control substream first, right after the welcome.
    let control = tokio::select! {
        s = mux.inbound.recv() => s.ok_or_else(|| SessionEnd::ConnectionLost("the connection ended before the control stream opened".into())),
        () = tokio::time::sleep(config.handshake_timeout) => Err(SessionEnd::Protocol("no control stream opened after the welcome".into())),
    };
    let control = match control {
        Ok(control) => control,
        Err(end) => {
            driver.abort();
            return (end, None, ports);
        }
    };
    let cap = cap as usize;
    let resets = Resets::new(version, shared.metrics.reset_counters());
    let tunnel = Arc::new(Tunnel {
        mux: mux.handle.clone(),
        visitors: AtomicU64::new(0),
        bytes: Arc::new(Meter::with_parent(counted.bytes.clone())),
        counted: counted.visitors.clone(),
        session: session.clone(),
        answer_timeout: config.handshake_timeout,
        wide: shared.wide.clone(),
        resets,
    });
    let limits: Vec<Arc<Semaphore>> = ports
        .iter()
        .map(|_| Arc::new(Semaphore::new(cap)))
        .collect();

    let mut control = FramedConn::new(control, config.max_frame_len);
    let mut liveness = Liveness::new(config.heartbeat_interval);
    // Cancelled for a tunnel whose client said `StopAccepting`.
    let closed: Vec<CancellationToken> = ports.iter().map(|_| CancellationToken::new()).collect();
    let accepting = join_all(ports.iter().zip(&limits).zip(&closed).enumerate().map(
        |(i, ((port, limit), closed))| {
            super::public::accept_visitors(
                &port.listener,
                i as u16,
                tunnel.clone(),
                limit,
                closed,
                group,
                shared,
            )
        },
    ));
    let first = tokio::select! {
        end = heartbeats(&mut control, &mut liveness, &relay_shutdown, &closed, &tunnel.resets) => Ok(end),
        _ = accepting => unreachable!("accept loops never end"),
        // Its queue closes when the connection ends.
        end = reject_extra_streams(&mut mux.inbound) => Err(end),
        () = summarize(&tunnel, &limits, cap) => unreachable!("summaries never end"),
        () = replaced.cancelled() => Ok(SessionEnd::Replaced),
        () = revoked => Ok(revoke(&mut control, &liveness, token.as_deref()).await),
        r = &mut driver => Err(r.unwrap_or_else(|e| SessionEnd::ConnectionLost(format!("connection task failed: {e}")))),
    };
    let end = match first {
        Ok(end) => end,
        // A client that stops says goodbye just before it closes; the frame may still be
        // waiting in the control stream when the connection's end is noticed.
        Err(cut) => {
            let last = heartbeats(
                &mut control,
                &mut liveness,
                &relay_shutdown,
                &closed,
                &tunnel.resets,
            );
            match tokio::time::timeout(LAST_WORD, last).await {
                Ok(SessionEnd::PeerLeft) => SessionEnd::PeerLeft,
                _ => cut,
            }
        }
    };
    let draining = relay_shutdown.is_cancelled() || matches!(end, SessionEnd::PeerLeft);
    if draining && !driver.is_finished() {
        // The relay is going away, or the client is (it said goodbye after its visitors'
        // last bytes): no new visitors (the ports close now), but those inside may finish,
        // until the drain deadline.
        shared.leases.release(std::mem::take(&mut ports), None);
        let inside = join_all(limits.iter().map(|l| l.acquire_many(cap as u32)));
        tokio::select! {
            _ = inside => {}
            () = shared.hard_stop.cancelled() => {}
            () = tokio::time::sleep(config.drain_timeout) => {}
            _ = &mut driver => {}
        }
    }
    session.cancel();
    (end, Some(tunnel), ports)
}

/// Tells the client its token is no longer accepted, and why the session ends.
async fn revoke(
    control: &mut FramedConn<Substream>,
    liveness: &Liveness,
    token: Option<&super::NamedToken>,
) -> SessionEnd {
    let reason = super::AccessHandle::revocation_reason(token);
    let frame = RelayControl::Revoked {
        reason: reason.clone(),
    };
    let _ = tokio::time::timeout(liveness.silence_limit(), control.write_frame(&frame)).await;
    SessionEnd::Revoked(reason)
}

/// The session's public ports, for its log span: `8081` or `8081,8082`.
struct PortList<'a>(&'a [u16]);

impl std::fmt::Display for PortList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The client only ever opens the control stream; anything more is reset.
async fn reject_extra_streams(inbound: &mut mux::Inbound) -> SessionEnd {
    while let Some(stream) = inbound.recv().await {
        debug!(
            stream = stream.id(),
            "client opened an unexpected substream; resetting it"
        );
    }
    SessionEnd::PeerClosed
}

/// Every [`SUMMARY_INTERVAL`] in which visitors came or bytes moved, one line at info.
async fn summarize(tunnel: &Tunnel, limits: &[Arc<Semaphore>], cap: usize) {
    let mut ticks = tokio::time::interval(SUMMARY_INTERVAL);
    ticks.tick().await;
    let mut last = (0, 0, 0);
    loop {
        ticks.tick().await;
        let now = (
            tunnel.visitors.load(Ordering::Relaxed),
            tunnel.bytes.a_to_b(),
            tunnel.bytes.b_to_a(),
        );
        if now != last {
            let open: usize = limits
                .iter()
                .map(|l| cap.saturating_sub(l.available_permits()))
                .sum();
            info!(
                visitors_new = now.0 - last.0,
                visitors_open = open,
                bytes_in = now.1 - last.1,
                bytes_out = now.2 - last.2,
                "session activity in the last {SUMMARY_INTERVAL:?}"
            );
            last = now;
        }
    }
}
