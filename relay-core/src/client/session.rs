//! The background task of a tunnel client: runs one session after another, reconnecting with
//! backoff when a session is lost, and asking for the same ports again with their leases.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::TunnelConfig;
use super::control::heartbeats;
use super::public_addr::PublicAddr;
use super::resets::{Inbox, Resets};
use super::{ConnectConfig, handshake};
use crate::ending::SessionEnd;
use crate::error::{Error, Result};
use crate::frame::FramedConn;
use crate::liveness::Liveness;
use crate::mux::{self, Role, Substream};
use crate::protocol::{
    ClientControl, DEFAULT_MAX_FRAME_LEN, Hello, LeaseSecret, Reply, TunnelRequest, Welcome,
};
use crate::transport::Conn;
use crate::wide::WidePool;

/// How long a lost session waits for the relay's last control frame, to report its reason.
const LAST_WORD: Duration = Duration::from_millis(100);
/// Longest a client keeps a shutting-down relay's connection for visitors still inside.
const MAX_RELAY_DRAIN: Duration = Duration::from_secs(60);
/// How long a stopping client waits, after its goodbye, for the relay to finish forwarding what
/// its visitors still have in flight and close the connection.
const GOODBYE: Duration = Duration::from_secs(10);
/// The same wait when streams are still open (a shutdown's grace ran out): they are cut after
/// it, but streams that ended just before get their last bytes through.
const GOODBYE_CUT: Duration = Duration::from_secs(1);

/// What a tunnel client does when its session is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// Reconnect at all; without it the listener fails with the reason at the first loss.
    pub enabled: bool,
    /// Upper bound of the first delay; each attempt doubles it (full jitter: the actual delay
    /// is uniformly random below the bound, so clients of a restarted relay spread out).
    pub initial: Duration,
    /// The bound never grows beyond this.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            enabled: true,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Reconnect {
    /// Never reconnect: the first loss ends the listener.
    pub fn never() -> Self {
        Reconnect {
            enabled: false,
            ..Self::default()
        }
    }

    /// The delay before attempt `attempt` (0-based).
    fn delay(&self, attempt: u32) -> Duration {
        let bound = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        bound.mul_f64(rand::random::<f64>())
    }
}

/// A session the relay has just welcomed.
pub(super) struct Established {
    pub(super) conn: FramedConn<Conn>,
    pub(super) welcome: Welcome,
}

/// One tunnel as the client keeps it across sessions.
#[derive(Debug)]
pub(super) struct TunnelState {
    pub(super) addr: watch::Sender<PublicAddr>,
    pub(super) lease: Option<LeaseSecret>,
}

/// Asks the relay at `relay` for tunnels.
pub(super) async fn open(
    relay: &str,
    connect: &ConnectConfig,
    requests: Vec<TunnelRequest>,
) -> Result<Established> {
    let wanted = requests.len();
    let hello = Hello::Tunnel { tunnels: requests };
    let (conn, reply) = handshake(relay, &hello, connect).await?;
    match reply {
        Reply::Welcome(welcome) if welcome.tunnels.len() == wanted => {
            Ok(Established { conn, welcome })
        }
        other => Err(Error::Protocol(format!(
            "expected a welcome for {wanted} tunnels, got {other:?}"
        ))),
    }
}

/// A session whose multiplexer runs and whose control stream is open.
pub(super) struct Running {
    driver: tokio::task::JoinHandle<SessionEnd>,
    control: FramedConn<Substream>,
    /// Cancelling it closes the connection.
    session: CancellationToken,
    span: tracing::Span,
    heartbeat: Duration,
    resets: Inbox,
}

/// Starts the multiplexer on a welcomed connection and opens the control stream, so that the
/// session is whole before anyone is told it exists.
pub(super) async fn start(
    established: Established,
    inbound: mpsc::Sender<Substream>,
    resets: &Arc<Resets>,
) -> Result<(Running, Welcome)> {
    let Established { conn, welcome } = established;
    let session = CancellationToken::new();
    let span = info_span!("session", session.id = welcome.session_id);
    // The relay may open visitors' substreams right after its welcome: bytes read with the
    // welcome already belong to yamux.
    let (mut sock, early) = conn.into_parts();
    // Every visitor's download from a far relay crosses this socket: it may grow past
    // auto-tuning once it fills up (the client's only socket of the kind, so a pool of one).
    sock.lift_send_buffer(WidePool::for_host(1, Gauge::default()));
    let (handle, driver) = mux::start_into(sock, &early, Role::Dialer, inbound, session.clone());
    // Before any visitor's header can be read, so that every visitor of it is known.
    let resets = resets.open_session(handle.connection_id());
    let driver = tokio::spawn(driver.instrument(span.clone()));
    let control = async {
        // The control stream goes first; its first ping also announces it to the relay.
        let mut control = FramedConn::new(handle.open().await?, DEFAULT_MAX_FRAME_LEN);
        control.write_frame(&ClientControl::Ping(0)).await?;
        Ok::<_, Error>(control)
    };
    let control = match control.await {
        Ok(c) => c,
        Err(e) => {
            session.cancel();
            return Err(e);
        }
    };
    let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.into());
    let running = Running {
        driver,
        control,
        session,
        span,
        heartbeat,
        resets,
    };
    Ok((running, welcome))
}

/// Runs the client's sessions until the listeners are gone, or the relay cannot be had back.
pub(super) struct Supervisor {
    pub(super) relay: String,
    pub(super) host: String,
    pub(super) config: TunnelConfig,
    pub(super) tunnels: Vec<TunnelState>,
    pub(super) inbound: mpsc::Sender<Substream>,
    pub(super) resets: Arc<Resets>,
    pub(super) ended: watch::Sender<Option<SessionEnd>>,
    pub(super) session_id: watch::Sender<u64>,
    /// Per tunnel: whether it still takes visitors. Each session tells the relay about the
    /// tunnels that do not.
    pub(super) accepting: watch::Receiver<Vec<bool>>,
    /// The open streams: a goodbye waits longer for the relay when there are none.
    pub(super) streams: TaskTracker,
    /// Cancelled on shutdown, or when every listener and stream is gone: say goodbye and stop.
    pub(super) stop: CancellationToken,
}

impl Supervisor {
    pub(super) async fn run(mut self, first: Running) {
        let mut running = first;
        let end = loop {
            let end = self.serve(running).await;
            if self.stop.is_cancelled() {
                break SessionEnd::Closed;
            }
            // A revoked token would only be refused again.
            if !self.config.reconnect.enabled || matches!(end, SessionEnd::Revoked(_)) {
                break end;
            }
            if !self.accepting.borrow().contains(&true) {
                // Nobody takes visitors any more: a new session would serve nobody.
                debug!(reason = %end, "session lost while no tunnel accepts; not reconnecting");
                break end;
            }
            warn!(reason = %end, "session with the relay lost; reconnecting");
            match self.reconnect().await {
                Ok(next) => running = next,
                Err(end) => break end,
            }
        };
        debug!(reason = %end, "tunnel client stopped");
        self.ended.send_replace(Some(end));
    }

    /// Serves one session until it ends. A relay that drains keeps its old connection going in
    /// the background for the visitors inside, while the client reconnects.
    async fn serve(&mut self, running: Running) -> SessionEnd {
        let Running {
            mut driver,
            mut control,
            session,
            span,
            heartbeat,
            mut resets,
        } = running;
        let mut liveness = Liveness::new(heartbeat);
        // What this session has told the relay: every tunnel accepts at first.
        let mut told = vec![true; self.tunnels.len()];
        let mut accepting = self.accepting.clone();
        let first = tokio::select! {
            r = &mut driver => Err(r.unwrap_or_else(|e| SessionEnd::ConnectionLost(format!("connection task failed: {e}")))),
            end = heartbeats(&mut control, &mut liveness, (&mut accepting, &mut told), &mut resets) => Ok(end),
            () = self.stop.cancelled() => {
                // The relay frees the ports, lets the visitors inside finish (their last bytes
                // and FINs are queued ahead of the closing connection), then closes: closing
                // first would cut them.
                let wait = if self.streams.is_empty() { GOODBYE } else { GOODBYE_CUT };
                let goodbye = async {
                    if control.write_frame(&ClientControl::Goodbye).await.is_ok() {
                        let _ = (&mut driver).await;
                    }
                };
                let _ = tokio::time::timeout(wait, goodbye).await;
                Ok(SessionEnd::Closed)
            }
        };
        let end = match first {
            Ok(end) => end,
            // A relay that shuts down says so on the control stream just before closing; that
            // frame is already buffered and gives the better reason.
            Err(cut) => {
                let watch = (&mut accepting, &mut told[..]);
                let last = heartbeats(&mut control, &mut liveness, watch, &mut resets);
                let last = tokio::time::timeout(LAST_WORD, last);
                match last.await {
                    Ok(end @ (SessionEnd::RelayShutdown(_) | SessionEnd::Revoked(_))) => end,
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
        if end.is_relay_shutdown() && !driver.is_finished() {
            // The relay lets visitors already inside finish before it closes the connection;
            // keep their streams going until then, unless the client stops meanwhile.
            let stop = self.stop.clone();
            tokio::spawn(
                async move {
                    tokio::select! {
                        _ = &mut driver => {}
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(MAX_RELAY_DRAIN) => {}
                    }
                    session.cancel();
                }
                .instrument(span),
            );
        } else {
            session.cancel();
        }
        end
    }

    /// Takes in a welcome: the public addresses and leases of this session.
    fn adopt(&mut self, welcome: &Welcome) {
        self.session_id.send_replace(welcome.session_id);
        for (tunnel, grant) in self.tunnels.iter_mut().zip(&welcome.tunnels) {
            tunnel.lease = grant.lease.clone();
            let addr = PublicAddr {
                host: welcome
                    .public_host
                    .clone()
                    .unwrap_or_else(|| self.host.clone()),
                port: grant.public_port,
            };
            tunnel.addr.send_if_modified(|old| {
                if *old == addr {
                    return false;
                }
                warn!(
                    old = %old,
                    new = %addr,
                    "the public address changed (the lease expired, or the port was taken while the relay restarted)"
                );
                *old = addr;
                true
            });
        }
    }

    /// Connects again, with backoff, until the relay takes the client back or refuses it for
    /// a reason that will not go away.
    async fn reconnect(&mut self) -> Result<Running, SessionEnd> {
        let policy = self.config.reconnect.clone();
        for attempt in 0u32.. {
            let delay = policy.delay(attempt);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => return Err(SessionEnd::Closed),
            }
            let requests = self
                .tunnels
                .iter()
                .map(|t| TunnelRequest {
                    preferred_port: Some(t.addr.borrow().port),
                    lease: t.lease.clone(),
                })
                .collect();
            let attempt = attempt + 1;
            let connect = self.config.connect();
            let opening = async {
                let established = open(&self.relay, &connect, requests).await?;
                start(established, self.inbound.clone(), &self.resets).await
            };
            let opened = tokio::select! {
                opened = opening => opened,
                () = self.stop.cancelled() => return Err(SessionEnd::Closed),
            };
            match opened {
                Ok((running, welcome)) => {
                    info!(attempt, relay = %self.relay, "reconnected to the relay");
                    self.adopt(&welcome);
                    return Ok(running);
                }
                Err(Error::Rejected { code, message }) if code.is_permanent() => {
                    return Err(SessionEnd::Refused { code, message });
                }
                Err(e) => {
                    let next = policy
                        .initial
                        .saturating_mul(1 << attempt.min(16))
                        .min(policy.max);
                    info!(attempt, error = %e, next_within = ?next, "reconnect attempt failed");
                }
            }
        }
        unreachable!("attempts are unbounded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_full_jitter_and_stays_capped() {
        let policy = Reconnect::default();
        for attempt in 0..40 {
            let bound = policy
                .initial
                .saturating_mul(1 << attempt.min(16))
                .min(policy.max);
            for _ in 0..20 {
                assert!(policy.delay(attempt) <= bound);
            }
        }
        assert!(
            policy.delay(0) <= Duration::from_millis(500),
            "first retry within a second"
        );
        assert!(policy.delay(39) <= Duration::from_secs(30));
    }
}
