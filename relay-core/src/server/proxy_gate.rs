//! Admission of connections from a trusted load balancer: a relay-wide handshake slot at
//! accept, then, once the PROXY header names the real client, that client's own slot, so the
//! per-address shares apply to clients, never to the balancer's address.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::Shared;
use super::admission::{HandshakeTicket, Refused, relay_handshake_slot};
use super::proxied::{HeaderError, Origin};
use super::refusals::Refusal;
use super::usage::Held;
use crate::protocol::ErrorCode;

/// A relay-wide handshake slot for a connection from a trusted proxy; its address's slot is
/// taken by [`behind_proxy`] once the PROXY header names it.
pub(super) fn proxy_ticket(
    handshakes: &Arc<Semaphore>,
    max_handshakes: usize,
) -> Result<HandshakeTicket, Refused> {
    Ok(HandshakeTicket {
        global: Some(relay_handshake_slot(handshakes, max_handshakes)?),
        addr: None,
    })
}

/// The real client behind a trusted `proxy`, from what reading its PROXY header gave, with
/// that client's handshake slot added to `ticket`. `Ok(None)`: nothing to serve (a
/// connect-only health check, or the proxy went quiet or away), and nothing counted
/// against anyone. A `LOCAL` header (the proxy checking on its own behalf) is served as a
/// connection from the proxy.
pub(super) fn behind_proxy(
    origin: Result<Result<Origin, HeaderError>, tokio::time::error::Elapsed>,
    proxy: SocketAddr,
    shared: &Shared,
    ticket: &mut HandshakeTicket,
) -> Result<Option<SocketAddr>, Refused> {
    let real = match origin {
        Ok(Ok(Origin::Proxied { source, .. })) => source,
        Ok(Ok(Origin::Local)) => proxy,
        Ok(Ok(Origin::Closed)) => {
            debug!("connect-only health check from the trusted proxy");
            return Ok(None);
        }
        Ok(Err(HeaderError::Io(e))) => {
            debug!(error = %e, "trusted proxy's connection lost in its PROXY header");
            return Ok(None);
        }
        Err(_) => {
            debug!("no PROXY header from the trusted proxy in time; closing");
            return Ok(None);
        }
        Ok(Err(e)) => {
            if shared.refusals.note(Refusal::ProxyHeader) {
                warn!(error = %e, "refusing a connection from a trusted proxy");
            }
            return Err(Refused {
                code: ErrorCode::BadRequest,
                message: format!("{e} (the relay trusts this address as a load balancer)"),
                kind: Refusal::ProxyHeader,
            });
        }
    };
    tracing::Span::current().record("client.addr", tracing::field::display(real));
    let limit = shared.gate.limits.handshakes;
    let slot = shared
        .gate
        .addrs
        .try_take(real.ip().into(), Held::Handshake, limit);
    let Some(slot) = slot else {
        if shared.refusals.note(Refusal::AddrHandshakeCap) {
            warn!(client.addr = %real, "too many connections in their handshake; answering busy");
        }
        return Err(Refused::busy(
            Refusal::AddrHandshakeCap,
            format!(
                "the relay is busy: {limit} connections from your address are in their \
                 handshake, the most one address may have; try again shortly"
            ),
        ));
    };
    ticket.addr = Some(slot);
    Ok(Some(real))
}
