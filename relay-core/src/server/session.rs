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
use super::visitor;
use crate::codec::{self, CodecError};
use crate::mux::{self, MuxHandle, Role, Substream};
use crate::net::reset_on_close;
use crate::protocol::{
    ClientControl, ErrorCode, HEARTBEAT_TOLERANCE, RelayControl, Reply, Welcome,
};

/// What every visitor task of one session shares (one `Arc` per visitor keeps them small).
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) mux: MuxHandle,
    pub(super) stats: SessionStats,
    /// Cancelled when the session ends; every visitor is then reset.
    pub(super) session: CancellationToken,
    /// How long the client may take to answer a new visitor.
    pub(super) answer_timeout: Duration,
}

/// Byte and visitor counters of one session.
#[derive(Debug, Default)]
pub(super) struct SessionStats {
    pub(super) visitors: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) bytes_out: AtomicU64,
}

/// Serves one tunnel client from its hello to the end of its connection.
pub(super) async fn run(
    mut sock: TcpStream,
    peer: SocketAddr,
    preferred_port: Option<u16>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let config = &shared.config;
    let Ok(_session_permit) = shared.sessions.clone().try_acquire_owned() else {
        warn!(
            limit = config.max_sessions,
            "session limit reached; refusing tunnel"
        );
        let msg = format!(
            "relay is full ({} sessions); try again later",
            config.max_sessions
        );
        refuse(&mut sock, ErrorCode::Busy, msg).await;
        return;
    };
    let Some((listener, _lease)) = shared.ports.bind(preferred_port) else {
        let range = shared.ports.describe();
        warn!(ports = %range, "no free public port; refusing tunnel");
        refuse(
            &mut sock,
            ErrorCode::NoFreePort,
            format!("no free public port in {range}"),
        )
        .await;
        return;
    };
    let public_port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            warn!(error = %e, "public listener has no address");
            refuse(
                &mut sock,
                ErrorCode::Internal,
                "relay failed to open a public port".into(),
            )
            .await;
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
        codec::write_preface_and_frame(&mut sock, &welcome),
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
        let (reason, stats) = serve(sock, listener, &shared, shutdown).await;
        info!(
            %reason,
            visitors = stats.visitors.load(Ordering::Relaxed),
            bytes_in = stats.bytes_in.load(Ordering::Relaxed),
            bytes_out = stats.bytes_out.load(Ordering::Relaxed),
            "session closed"
        );
    }
    .instrument(span)
    .await
}

/// Runs the session until it ends; returns why, for the log, and its counters.
async fn serve(
    sock: TcpStream,
    listener: TcpListener,
    shared: &Arc<Shared>,
    relay_shutdown: CancellationToken,
) -> (String, SessionStats) {
    let config = &shared.config;
    // Cancelled when the session ends for any reason; visitors hang off it.
    let session = CancellationToken::new();
    let _end_session = session.clone().drop_guard();
    // The client opens only its control stream; a small queue is plenty.
    let mut mux = mux::start(sock, Role::Acceptor, 4, session.clone());
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
        let reason = "client did not open its control stream".to_string();
        return (reason, SessionStats::default());
    };
    let silence_limit = config.heartbeat_interval * HEARTBEAT_TOLERANCE;
    let visitors = Arc::new(Semaphore::new(config.max_visitors_per_tunnel as usize));
    let tunnel = Arc::new(Tunnel {
        mux: mux.handle.clone(),
        stats: SessionStats::default(),
        session: session.clone(),
        answer_timeout: config.handshake_timeout,
    });

    let ended = |r: Result<Result<(), yamux::ConnectionError>, tokio::task::JoinError>| match r {
        Ok(Ok(())) => "client closed the connection".to_string(),
        Ok(Err(e)) => format!("connection failed: {e}"),
        Err(e) => format!("connection task failed: {e}"),
    };
    let reason = tokio::select! {
        r = heartbeats(control, silence_limit, config.max_frame_len, relay_shutdown.clone()) => r,
        r = accept_visitors(&listener, tunnel.clone(), &visitors, shared) => r,
        r = reject_extra_streams(&mut mux.inbound) => r,
        r = &mut driver => ended(r),
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
    let stats = SessionStats {
        visitors: tunnel.stats.visitors.load(Ordering::Relaxed).into(),
        bytes_in: tunnel.stats.bytes_in.load(Ordering::Relaxed).into(),
        bytes_out: tunnel.stats.bytes_out.load(Ordering::Relaxed).into(),
    };
    (reason, stats)
}

/// Answers the client's heartbeats; ends when the client falls silent, the stream ends, or the
/// relay shuts down (after telling the client).
async fn heartbeats(
    mut control: Substream,
    silence_limit: Duration,
    max_frame_len: usize,
    relay_shutdown: CancellationToken,
) -> String {
    loop {
        let frame = tokio::select! {
            () = relay_shutdown.cancelled() => {
                let bye = RelayControl::Shutdown { reason: "relay is shutting down".into() };
                let _ = tokio::time::timeout(silence_limit, codec::write_frame(&mut control, &bye)).await;
                return "relay shutting down".to_string();
            }
            frame = tokio::time::timeout(silence_limit, codec::read_frame::<_, ClientControl>(&mut control, max_frame_len)) => frame,
        };
        match frame {
            Err(_) => return format!("no heartbeat from the client for {silence_limit:?}"),
            Ok(Err(CodecError::Closed)) => return "client closed its control stream".to_string(),
            Ok(Err(e)) => return format!("control stream failed: {e}"),
            Ok(Ok(ClientControl::Ping(seq))) => {
                if let Err(e) = codec::write_frame(&mut control, &RelayControl::Pong(seq)).await {
                    return format!("control stream failed: {e}");
                }
            }
        }
    }
}

/// The client only ever opens the control stream; anything more is reset.
async fn reject_extra_streams(inbound: &mut tokio::sync::mpsc::Receiver<Substream>) -> String {
    while let Some(stream) = inbound.recv().await {
        debug!(
            stream = stream.id(),
            "client opened an unexpected substream; resetting it"
        );
    }
    "connection closed".to_string()
}

async fn accept_visitors(
    listener: &TcpListener,
    tunnel: Arc<Tunnel>,
    visitors: &Arc<Semaphore>,
    shared: &Arc<Shared>,
) -> String {
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
            warn!(visitor.addr = %addr, limit = visitors_limit(shared), "visitor limit reached; resetting visitor");
            reset_on_close(&tcp);
            continue;
        };
        let visitor_id = shared.next_id();
        tunnel.stats.visitors.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("visitor", visitor.id = visitor_id, visitor.addr = %addr);
        let task = visitor::serve(tcp, addr, visitor_id, tunnel.clone(), permit);
        shared.tasks.spawn(task.instrument(span));
    }
}

fn visitors_limit(shared: &Shared) -> u32 {
    shared.config.max_visitors_per_tunnel
}
