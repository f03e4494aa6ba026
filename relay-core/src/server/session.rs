//! One tunnel session on the relay: the client's connection, its public listener, its visitors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::handshake::refuse;
use super::refusals::Refusal;
use super::visitor;
use crate::codec::CodecError;
use crate::ending::{Peer, SessionEnd};
use crate::frame::FramedConn;
use crate::liveness::{Beat, Liveness};
use crate::mux::{self, MuxHandle, Role, Substream};
use crate::net::reset_on_close;
use crate::protocol::{ClientControl, ErrorCode, RelayControl, Reply, Welcome};
use crate::splice::Meter;

/// How often a busy session sums up its visitors in the log (per-visitor lines are at debug).
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// What every visitor task of one session shares (one `Arc` per visitor keeps them small).
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) mux: MuxHandle,
    /// Visitors so far, and their bytes as they move (`a_to_b`: from visitors to the client).
    pub(super) visitors: AtomicU64,
    pub(super) bytes: Arc<Meter>,
    /// Cancelled when the session ends; every visitor is then reset.
    pub(super) session: CancellationToken,
    /// How long the client may take to answer a new visitor.
    pub(super) answer_timeout: Duration,
}

/// Serves one tunnel client from its hello to the end of its connection.
pub(super) async fn run(
    mut conn: FramedConn<TcpStream>,
    peer: SocketAddr,
    preferred_port: Option<u16>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let config = &shared.config;
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
        refuse(conn.get_mut(), ErrorCode::Busy, msg).await;
        return;
    };
    let Some((listener, _lease)) = shared.ports.bind(preferred_port) else {
        let range = shared.ports.describe();
        if shared.refusals.note(Refusal::NoFreePort) {
            warn!(ports = %range, "no free public port; refusing tunnel");
        }
        let msg = format!("no free public port in {range}");
        refuse(conn.get_mut(), ErrorCode::NoFreePort, msg).await;
        return;
    };
    let public_port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            warn!(error = %e, "public listener has no address");
            let msg = "relay failed to open a public port".to_string();
            refuse(conn.get_mut(), ErrorCode::Internal, msg).await;
            return;
        }
    };
    let session_id = shared.next_id();
    let welcome = Reply::Welcome(Welcome {
        session_id,
        public_port,
        public_host: config.public_host.clone(),
        max_visitors: config.max_visitors_per_tunnel,
        heartbeat_interval_ms: config.heartbeat_interval_ms(),
    });
    let sent = tokio::time::timeout(
        config.handshake_timeout,
        conn.write_preface_and_frame(&welcome),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        debug!("client left before its welcome");
        return;
    }

    let span = info_span!(
        "session",
        session.id = session_id,
        public.port = public_port
    );
    async move {
        info!(client.addr = %peer, "session opened");
        let (end, tunnel) = serve(conn, listener, &shared, shutdown).await;
        let (visitors, bytes) = tunnel.map_or((0, Meter::new().into()), |t| {
            (t.visitors.load(Ordering::Relaxed), t.bytes.clone())
        });
        info!(
            reason = end.label(),
            detail = %end.seen_by(Peer::Client),
            visitors,
            bytes_in = bytes.a_to_b(),
            bytes_out = bytes.b_to_a(),
            "session closed"
        );
    }
    .instrument(span)
    .await
}

/// Runs the session until it ends; returns why, and the tunnel's counters once it had any.
async fn serve(
    conn: FramedConn<TcpStream>,
    listener: TcpListener,
    shared: &Arc<Shared>,
    relay_shutdown: CancellationToken,
) -> (SessionEnd, Option<Arc<Tunnel>>) {
    let config = &shared.config;
    // Cancelled when the session ends for any reason; visitors hang off it.
    let session = CancellationToken::new();
    let _end_session = session.clone().drop_guard();
    let (sock, early) = conn.into_parts();
    // The client opens only its control stream; a small queue is plenty.
    let mut mux = mux::start(sock, &early, Role::Acceptor, 4, session.clone());
    let driver = mux.driver;
    let mut driver = shared
        .tasks
        .spawn(driver.instrument(tracing::Span::current()));

    // The client opens the control substream first, right after the welcome.
    let control = tokio::select! {
        s = mux.inbound.recv() => s,
        () = tokio::time::sleep(config.handshake_timeout) => None,
    };
    let Some(control) = control else {
        driver.abort();
        let end = SessionEnd::Protocol("no control stream opened after the welcome".into());
        return (end, None);
    };
    let visitors = Arc::new(Semaphore::new(config.max_visitors_per_tunnel as usize));
    let tunnel = Arc::new(Tunnel {
        mux: mux.handle.clone(),
        visitors: AtomicU64::new(0),
        bytes: Arc::new(Meter::new()),
        session: session.clone(),
        answer_timeout: config.handshake_timeout,
    });

    let control = FramedConn::new(control, config.max_frame_len);
    let liveness = Liveness::new(config.heartbeat_interval);
    let end = tokio::select! {
        end = heartbeats(control, liveness, relay_shutdown.clone()) => end,
        end = accept_visitors(&listener, tunnel.clone(), &visitors, shared) => end,
        end = reject_extra_streams(&mut mux.inbound) => end,
        () = summarize(&tunnel, &visitors, config.max_visitors_per_tunnel) => unreachable!("summaries never end"),
        r = &mut driver => r.unwrap_or_else(|e| SessionEnd::ConnectionLost(format!("connection task failed: {e}"))),
    };
    // Closing the public port first means no visitor arrives into a dying session.
    drop(listener);
    if relay_shutdown.is_cancelled() && !driver.is_finished() {
        // Draining: visitors already inside may finish until the relay's drain deadline.
        let all = config.max_visitors_per_tunnel;
        tokio::select! {
            _ = visitors.acquire_many(all) => {}
            () = shared.hard_stop.cancelled() => {}
            _ = &mut driver => {}
        }
    }
    session.cancel();
    (end, Some(tunnel))
}

/// Answers the client's heartbeats; ends when the client falls silent, the stream ends, or the
/// relay shuts down (after telling the client).
async fn heartbeats(
    mut control: FramedConn<Substream>,
    mut liveness: Liveness,
    relay_shutdown: CancellationToken,
) -> SessionEnd {
    loop {
        let frame = tokio::select! {
            () = relay_shutdown.cancelled() => {
                let reason = "relay is shutting down".to_string();
                let bye = RelayControl::Shutdown { reason: reason.clone() };
                let _ = tokio::time::timeout(liveness.silence_limit(), control.write_frame(&bye)).await;
                return SessionEnd::RelayShutdown(reason);
            }
            beat = liveness.beat() => match beat {
                Beat::Ping => continue,
                Beat::Gone { silent_for } => return SessionEnd::PeerSilent { silent_for },
            },
            frame = control.read_frame::<ClientControl>() => frame,
        };
        liveness.heard();
        let result = match frame {
            Ok(ClientControl::Ping(seq)) => control.write_frame(&RelayControl::Pong(seq)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(CodecError::Closed) => return SessionEnd::PeerClosed,
            Err(CodecError::Io(e)) => return SessionEnd::ConnectionLost(e.to_string()),
            Err(e) => return SessionEnd::Protocol(format!("control stream: {e}")),
        }
    }
}

/// The client only ever opens the control stream; anything more is reset.
async fn reject_extra_streams(inbound: &mut tokio::sync::mpsc::Receiver<Substream>) -> SessionEnd {
    while let Some(stream) = inbound.recv().await {
        debug!(
            stream = stream.id(),
            "client opened an unexpected substream; resetting it"
        );
    }
    SessionEnd::PeerClosed
}

/// Every [`SUMMARY_INTERVAL`] in which visitors came or bytes moved, one line at info.
async fn summarize(tunnel: &Tunnel, visitors: &Semaphore, cap: u32) {
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
            let open = (cap as usize).saturating_sub(visitors.available_permits());
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

async fn accept_visitors(
    listener: &TcpListener,
    tunnel: Arc<Tunnel>,
    visitors: &Arc<Semaphore>,
    shared: &Arc<Shared>,
) -> SessionEnd {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok((tcp, addr)) => (tcp, crate::net::canonical(addr)),
            Err(e) => {
                warn!(error = %e, "accept failed on the public port; backing off");
                tokio::time::sleep(super::ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = visitors.clone().try_acquire_owned() else {
            if shared.refusals.note(Refusal::VisitorCap) {
                let limit = shared.config.max_visitors_per_tunnel;
                warn!(visitor.addr = %addr, limit, "visitor limit reached; resetting visitor");
            }
            reset_on_close(&tcp);
            continue;
        };
        let visitor_id = shared.next_id();
        tunnel.visitors.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("visitor", visitor.id = visitor_id, visitor.addr = %addr);
        let task = visitor::serve(tcp, addr, visitor_id, tunnel.clone(), permit);
        shared.tasks.spawn(task.instrument(span));
    }
}
