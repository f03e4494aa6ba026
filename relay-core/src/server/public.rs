//! A tunnel's public port: accepting visitors, each one first checked against the tunnel's
//! state and visitor limit, and, when it comes from a trusted load balancer, known by the
//! address in its PROXY header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::open_visitors::OpenVisitor;
use super::per_addr::AddrGroup;
use super::proxied::{self, Origin};
use super::refusals::Refusal;
use super::session::Tunnel;
use super::{Shared, visitor};
use crate::net::reset_on_close;

/// Accepts visitors on one tunnel's public port until the session drops this future.
pub(super) async fn accept_visitors(
    listener: &TcpListener,
    index: u16,
    tunnel: Arc<Tunnel>,
    limit: &Arc<Semaphore>,
    closed: &CancellationToken,
    group: AddrGroup,
    shared: &Arc<Shared>,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok((tcp, addr)) => (tcp, crate::net::canonical(addr)),
            Err(e) => {
                warn!(error = %e, "accept failed on the public port; backing off");
                tokio::time::sleep(super::ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if closed.is_cancelled() {
            // The client takes no more visitors here: turn this one away at once.
            debug!(visitor.addr = %addr, "tunnel no longer accepting; resetting visitor");
            reset_on_close(&tcp);
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if shared.refusals.note(Refusal::VisitorCap) {
                let limit = shared.config.max_visitors_per_tunnel;
                warn!(visitor.addr = %addr, limit, "visitor limit reached; resetting visitor");
            }
            reset_on_close(&tcp);
            continue;
        };
        let open = match shared.open_visitors.admit(group) {
            Ok(open) => open,
            Err(refusal) => {
                if shared.refusals.note(refusal) {
                    let (limit, per_addr) = (
                        shared.open_visitors.limit(),
                        shared.open_visitors.per_addr(),
                    );
                    warn!(visitor.addr = %addr, limit, per_addr, reason = refusal.label(),
                        "relay-wide visitor budget reached; resetting visitor");
                }
                reset_on_close(&tcp);
                continue;
            }
        };
        let visitor = Visitor {
            index,
            tunnel: tunnel.clone(),
            permit,
            open,
            shared: shared.clone(),
        };
        if proxied::is_trusted(&shared.config.trusted_proxies, addr.ip()) {
            let span = info_span!("proxied", proxy.addr = %addr);
            shared
                .tasks
                .spawn(visitor.behind_proxy(tcp, addr).instrument(span));
        } else {
            visitor.start(tcp, addr, None);
        }
    }
}

/// A visitor let in, not yet announced to the client.
struct Visitor {
    index: u16,
    tunnel: Arc<Tunnel>,
    permit: OwnedSemaphorePermit,
    /// Its place in the relay-wide budget, held until its task ends.
    open: OpenVisitor,
    shared: Arc<Shared>,
}

impl Visitor {
    fn start(self, tcp: TcpStream, addr: SocketAddr, relay_addr: Option<SocketAddr>) {
        let visitor_id = self.shared.next_id();
        self.tunnel.visitors.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("visitor", visitor.id = visitor_id, visitor.addr = %addr);
        let task = visitor::serve(
            tcp,
            addr,
            relay_addr,
            visitor_id,
            self.index,
            self.tunnel,
            self.permit,
        );
        // A `map`, not an `async` wrapper: that would store the visitor's future twice
        // (+1.3 KiB per idle visitor, measured).
        let open = self.open;
        let task = task.map(move |()| drop(open));
        self.shared.tasks.spawn(task.instrument(span));
    }

    /// Reads the PROXY header of a visitor relayed by a trusted load balancer, then serves it
    /// as the visitor the header names. A health check (connect only) reaches no client.
    async fn behind_proxy(self, mut tcp: TcpStream, proxy: SocketAddr) {
        let timeout = self.shared.config.handshake_timeout;
        let origin = tokio::select! {
            () = self.tunnel.session.cancelled() => return,
            origin = tokio::time::timeout(timeout, proxied::read_header(&mut tcp)) => origin,
        };
        match origin {
            Ok(Ok(Origin::Proxied {
                source,
                destination,
            })) => self.start(tcp, source, Some(destination)),
            Ok(Ok(Origin::Local)) => self.start(tcp, proxy, None),
            Ok(Ok(Origin::Closed)) => debug!("connect-only health check from the trusted proxy"),
            Ok(Err(proxied::HeaderError::Io(e))) => {
                debug!(error = %e, "trusted proxy's connection lost in its PROXY header")
            }
            Err(_) => debug!("no PROXY header from the trusted proxy in time; closing"),
            Ok(Err(e)) => {
                if self.shared.refusals.note(Refusal::ProxyHeader) {
                    warn!(error = %e, "refusing a visitor from a trusted proxy");
                }
                reset_on_close(&tcp);
            }
        }
    }
}
