//! What a connection must get past before it is served: a handshake slot of its own address's
//! share, the token check (wrong tokens answered ever more slowly), and its token's scope and
//! its address's share of sessions, offers and ports.
//!
//! Order matters: the per-address handshake slot is taken before the relay-wide one, so one
//! address can fill at most its share of the handshake cap; a wrong token gives the relay-wide
//! slot back at once, but keeps the address's own slot while its answer is delayed, so an
//! address that keeps guessing slows only itself down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::access::{AccessHandle, NamedToken};
use super::charge::{Charger, Shortfall, allowed_ports};
use super::config::RelayConfig;
use super::handshake::{AuthFailure, Client};
use super::per_addr::{AddrGroup, AddrLimits};
use super::refusals::{Refusal, Refusals};
use super::strikes::Strikes;
use super::usage::{Held, Slot, Usage};
use super::{PortPool, Shared};
use crate::protocol::{ErrorCode, Hello};

/// The first wrong token of an address is answered at once (a typo deserves a quick answer);
/// each further one within [`FAILURE_WINDOW`] waits twice as long as the one before, from this.
const PENALTY_BASE: Duration = Duration::from_millis(250);
/// Longest wait before a wrong token is answered (it also stays below half the handshake
/// timeout, so the client hears "authentication failed", not a timeout).
pub const MAX_AUTH_PENALTY: Duration = Duration::from_secs(4);
/// How long failures are remembered: wrong tokens, and wrong transfer codes.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Everything admission keeps across connections.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) access: AccessHandle,
    pub(super) limits: AddrLimits,
    pub(super) addrs: Usage<AddrGroup>,
    tokens: Usage<[u8; 8]>,
    auth_failures: Strikes,
    pub(super) claim_failures: Strikes,
    /// Connections waiting for their delayed "authentication failed"; beyond this they are
    /// closed unanswered, so a flood from many addresses costs a bounded number of sockets.
    penalized: Arc<Semaphore>,
}

impl Gate {
    pub(super) fn new(config: &RelayConfig, limits: AddrLimits) -> Self {
        Gate {
            access: AccessHandle::new(config.access.clone()),
            limits,
            addrs: Usage::default(),
            tokens: Usage::default(),
            auth_failures: Strikes::new(FAILURE_WINDOW),
            claim_failures: Strikes::new(FAILURE_WINDOW),
            penalized: Arc::new(Semaphore::new(config.max_handshakes)),
        }
    }
}

/// A connection's right to be in its handshake: its address's slot and one of the relay's.
#[derive(Debug)]
pub(super) struct HandshakeTicket {
    pub(super) global: Option<OwnedSemaphorePermit>,
    /// `None` until a proxied connection's header names its address.
    pub(super) addr: Option<Slot<AddrGroup>>,
}

/// A refusal with what the client is told, and how it is counted.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) code: ErrorCode,
    pub(super) message: String,
    pub(super) kind: Refusal,
}

impl Refused {
    pub(super) fn busy(kind: Refusal, message: String) -> Self {
        Refused {
            code: ErrorCode::Busy,
            message,
            kind,
        }
    }

    fn forbidden(message: String) -> Self {
        Refused {
            code: ErrorCode::Forbidden,
            message,
            kind: Refusal::Forbidden,
        }
    }

    /// Counts the refusal, logs the first of its kind in the window, and tells the client.
    pub(super) async fn answer(self, client: Client, refusals: &Refusals) {
        if refusals.note(self.kind) {
            info!(client.addr = %client.peer, reason = %self.message, "refusing");
        }
        client.refuse(self.code, self.message).await;
    }
}

/// One of the relay's `max_handshakes` handshake slots, or `Busy` naming the limit.
pub(super) fn relay_handshake_slot(
    handshakes: &Arc<Semaphore>,
    max_handshakes: usize,
) -> Result<OwnedSemaphorePermit, Refused> {
    handshakes.clone().try_acquire_owned().map_err(|_| {
        Refused::busy(
            Refusal::HandshakeCap,
            format!(
                "the relay is busy ({max_handshakes} connections in their handshake); try again shortly"
            ),
        )
    })
}

/// Takes a handshake slot for a connection from `peer`: its address's first, then the relay's.
pub(super) fn handshake_ticket(
    gate: &Gate,
    handshakes: &Arc<Semaphore>,
    max_handshakes: usize,
    peer: SocketAddr,
) -> Result<HandshakeTicket, Refused> {
    let limit = gate.limits.handshakes;
    let addr = gate
        .addrs
        .try_take(peer.ip().into(), Held::Handshake, limit)
        .ok_or_else(|| {
            Refused::busy(
                Refusal::AddrHandshakeCap,
                format!(
                    "the relay is busy: {limit} connections from your address are in their \
                     handshake, the most one address may have; try again shortly"
                ),
            )
        })?;
    Ok(HandshakeTicket {
        global: Some(relay_handshake_slot(handshakes, max_handshakes)?),
        addr: Some(addr),
    })
}

/// Checks the client's token when the relay requires one. `None` when the client is gone or
/// has been refused (a wrong token is answered after a delay that grows with the address's
/// recent failures). The proof must arrive before `deadline`, the handshake's.
pub(super) async fn check_token(
    mut client: Client,
    hello: &Bytes,
    deadline: tokio::time::Instant,
    shared: &Shared,
    ticket: &mut HandshakeTicket,
    shutdown: &CancellationToken,
) -> Option<Client> {
    let gate = &shared.gate;
    let access = gate.access.current();
    if access.is_open() {
        return Some(client);
    }
    let timeout = shared.config.handshake_timeout;
    let checked = tokio::time::timeout_at(deadline, client.authenticate(&access, hello)).await;
    match checked {
        Ok(Ok(())) => return Some(client),
        Ok(Err(AuthFailure::Left)) | Err(_) => {
            debug!("client left during the token check");
            return None;
        }
        Ok(Err(AuthFailure::Wrong)) => {}
    }
    let failures = gate.auth_failures.record(client.peer.ip().into());
    let delay = penalty(failures, timeout);
    if shared.refusals.note(Refusal::AuthFailed) {
        warn!(failures, delay = ?delay, "authentication failed; refusing");
    }
    // The relay-wide slot goes back now; the address's own slot is kept while it waits.
    ticket.global = None;
    if !delay.is_zero() {
        let Ok(_waiting) = gate.penalized.clone().try_acquire_owned() else {
            return None;
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return None,
        }
    }
    let message =
        "authentication failed: this relay requires a valid token (--token or RELAY_TOKEN)";
    client.refuse(ErrorCode::Unauthorized, message.into()).await;
    None
}

/// How long the `failures`-th wrong token in a window waits for its answer.
fn penalty(failures: u32, handshake_timeout: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    PENALTY_BASE
        .saturating_mul(1 << (failures - 2).min(16))
        .min(MAX_AUTH_PENALTY)
        .min(handshake_timeout / 2)
}

/// What an admitted client holds for as long as it is served.
pub(super) type Admitted = Option<Slot<AddrGroup>>;

/// Checks what the hello asks for against the token's scope and the address's share.
pub(super) fn admit(client: &Client, hello: &Hello, shared: &Shared) -> Result<Admitted, Refused> {
    let gate = &shared.gate;
    let token = client.token.as_deref();
    let group: AddrGroup = client.peer.ip().into();
    match hello {
        Hello::Tunnel { tunnels } => {
            if let Some(t) = token {
                check_tunnel_scope(t, tunnels, &shared.ports)?;
            }
            let limit = gate.limits.sessions;
            let slot = gate.addrs.try_take(group, Held::Session, limit);
            slot.map(Some).ok_or_else(|| {
                Refused::busy(
                    Refusal::AddrSessionCap,
                    format!(
                        "your address already has {limit} sessions open, the most one address \
                         may have; close one or try again later"
                    ),
                )
            })
        }
        Hello::Send | Hello::Receive { .. } => {
            if let Some(t) = token.filter(|t| !t.scope.transfers) {
                let name = &t.name;
                return Err(Refused::forbidden(format!(
                    "token '{name}' does not allow file transfers"
                )));
            }
            if !matches!(hello, Hello::Send) {
                return Ok(None);
            }
            let limit = gate.limits.offers;
            let slot = gate.addrs.try_take(group, Held::Offer, limit);
            slot.map(Some).ok_or_else(|| {
                Refused::busy(
                    Refusal::AddrOfferCap,
                    format!(
                        "your address already has {limit} file offers open, the most one \
                         address may have; try again later"
                    ),
                )
            })
        }
    }
}

fn check_tunnel_scope(
    t: &NamedToken,
    tunnels: &[crate::protocol::TunnelRequest],
    pool: &PortPool,
) -> Result<(), Refused> {
    let name = &t.name;
    if let Some(max) = t.scope.max_tunnels.filter(|&max| tunnels.len() > max) {
        return Err(Refused::forbidden(format!(
            "token '{name}' allows at most {max} tunnels at once; this session asked for {}",
            tunnels.len()
        )));
    }
    let Some(scope) = &t.scope.ports else {
        return Ok(());
    };
    let (low, high) = (scope.start(), scope.end());
    if allowed_ports(&pool.range(), Some(scope)).is_none() {
        return Err(Refused::forbidden(format!(
            "token '{name}' allows public ports {low}-{high}, and this relay hands out none of \
             them (its range is {})",
            pool.describe()
        )));
    }
    let outside = tunnels
        .iter()
        .filter_map(|r| r.preferred_port)
        .find(|p| !scope.contains(p));
    if let Some(port) = outside {
        return Err(Refused::forbidden(format!(
            "token '{name}' allows public ports {low}-{high} only; port {port} is outside"
        )));
    }
    Ok(())
}

/// Charges the new ports of `client`'s session to its address and token.
pub(super) fn charger<'a>(client: &'a Client, shared: &'a Shared) -> Charger<'a> {
    let token = client.token.as_deref();
    let pool = shared.ports.range();
    let allowed = allowed_ports(&pool, token.and_then(|t| t.scope.ports.as_ref())).unwrap_or(pool);
    Charger {
        addrs: &shared.gate.addrs,
        group: client.peer.ip().into(),
        addr_limit: shared.gate.limits.ports,
        tokens: &shared.gate.tokens,
        token,
        allowed,
    }
}

/// The refusal for a session that could not have its ports.
pub(super) fn shortfall(s: Shortfall) -> Refused {
    match s {
        Shortfall::NoFreePort { range } => Refused {
            code: ErrorCode::NoFreePort,
            message: format!("no free public port in {range}"),
            kind: Refusal::NoFreePort,
        },
        Shortfall::AddrShare { limit } => Refused::busy(
            Refusal::AddrPortShare,
            format!(
                "your address already holds {limit} public ports (leased ones of lost sessions \
                 included), the most one address may hold; close a tunnel or try again later"
            ),
        ),
        Shortfall::TokenTunnels { name, limit } => Refused::forbidden(format!(
            "token '{name}' allows at most {limit} tunnels at once, and holds them all"
        )),
    }
}

/// Visitors at once per tunnel for a client holding `token`.
pub(super) fn visitor_cap(config: &RelayConfig, token: Option<&NamedToken>) -> u32 {
    let scoped = token.and_then(|t| t.scope.max_visitors);
    scoped.map_or(config.max_visitors_per_tunnel, |s| {
        s.clamp(1, config.max_visitors_per_tunnel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_tokens_wait_longer_each_time_up_to_a_cap() {
        let t = Duration::from_secs(10);
        assert_eq!(penalty(1, t), Duration::ZERO, "a typo is answered at once");
        assert_eq!(penalty(2, t), PENALTY_BASE);
        assert_eq!(penalty(3, t), PENALTY_BASE * 2);
        assert_eq!(penalty(40, t), MAX_AUTH_PENALTY);
        assert_eq!(penalty(40, Duration::from_secs(2)), Duration::from_secs(1));
    }
}
