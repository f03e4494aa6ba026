//! Leased public ports: a tunnel's port outlives a lost session for a while, reserved for the
//! client that can present its lease secret, with its listener still open so that visitors who
//! arrive in the gap wait in the kernel's accept queue instead of being refused.
//!
//! Every granted port is in the registry, first as `Active` (its session runs), then, when the
//! session is lost without a goodbye, as `Leased` until it is reclaimed or expires. A client
//! that presents the secret of a port whose session the relay still thinks alive (its old
//! connection died without a packet) takes it over: the old session is told to end, and the
//! port passes to the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::charge::{Charger, PortCharge, Shortfall};
use super::ports::{PortLease, PortPool};
use crate::protocol::{Grant, LeaseSecret, TunnelRequest};

/// How long a reconnecting client waits for the session it replaces to hand its port over.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A public port held by a session.
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) port: u16,
    pub(super) listener: TcpListener,
    pub(super) secret: LeaseSecret,
    /// Visitors were waiting in its accept queue for a reclaimed port.
    pub(super) reclaimed: bool,
    /// When the lease it was reclaimed from would have run out: if the rest of the hello
    /// cannot be granted, the port goes back to its lease instead of being freed.
    lease_expires: Option<Instant>,
    guard: PortLease,
    /// Held as long as the port is granted or leased.
    charge: PortCharge,
}

impl Tunnel {
    pub(super) fn grant(&self, leasing: bool) -> Grant {
        Grant {
            public_port: self.port,
            lease: leasing.then(|| self.secret.clone()),
        }
    }
}

#[derive(Debug)]
enum Entry {
    /// A session serves the port; cancelling `replace` ends that session.
    Active {
        secret: LeaseSecret,
        replace: CancellationToken,
    },
    /// Reserved for its owner until `expires`.
    Leased {
        secret: LeaseSecret,
        listener: TcpListener,
        guard: PortLease,
        charge: PortCharge,
        expires: Instant,
        /// Frees the port at `expires`; cancelled when the entry goes.
        _expiry: Expiry,
    },
}

/// The task that frees a leased port when its lease runs out. Dropping it (the port was
/// reclaimed, or the registry cleared) cancels the task: otherwise every reconnect left one
/// sleeping for the whole lease time, about 256 bytes each (64,000 reconnects in a few minutes
/// grew the relay by 14.7 MiB), so the number of them follows the leased ports, not the
/// reconnects.
#[derive(Debug)]
struct Expiry(tokio::task::AbortHandle);

impl Drop for Expiry {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The registry of granted and leased ports.
#[derive(Debug, Default)]
pub(super) struct Leases {
    entries: Mutex<HashMap<u16, Entry>>,
    /// Signalled whenever an entry becomes `Leased`.
    released: Notify,
    /// Leases that ran out, for the relay's metrics.
    expired: Counter,
}

impl Leases {
    /// A registry that counts its expired leases into `expired`.
    pub(super) fn counting_expiries(expired: Counter) -> Self {
        Leases {
            expired,
            ..Self::default()
        }
    }

    /// Grants one port per request, reclaiming leased ports whose secret is presented. Ports
    /// of a session still thought alive are taken over from it. `session` is what ends this
    /// session if its own ports are later taken over. New ports come from the ports `charger`
    /// allows, each charged to the client; reclaimed ones keep the charge they had.
    pub(super) async fn grant(
        self: &Arc<Self>,
        pool: &PortPool,
        requests: &[TunnelRequest],
        session: &CancellationToken,
        charger: &Charger<'_>,
    ) -> Result<Vec<Tunnel>, Shortfall> {
        let mut granted = Vec::with_capacity(requests.len());
        for request in requests {
            match self.grant_one(pool, request, charger).await {
                Ok(tunnel) => granted.push(tunnel),
                Err(shortfall) => {
                    // All or nothing: ports reclaimed for the earlier requests stay leased to
                    // their owner, who may retry with fewer tunnels.
                    self.restore(granted);
                    return Err(shortfall);
                }
            }
        }
        // A reclaimed port keeps its secret: a client whose reconnect dies after the relay
        // granted it, before the welcome arrived, must still hold a valid one.
        let mut entries = self.lock();
        for tunnel in &granted {
            entries.insert(
                tunnel.port,
                Entry::Active {
                    secret: tunnel.secret.clone(),
                    replace: session.clone(),
                },
            );
        }
        Ok(granted)
    }

    /// One request: its leased port if the lease is valid, else a new port charged to the
    /// client.
    async fn grant_one(
        &self,
        pool: &PortPool,
        request: &TunnelRequest,
        charger: &Charger<'_>,
    ) -> Result<Tunnel, Shortfall> {
        let reclaimed = match request.preferred_port {
            Some(p) if charger.allowed.contains(&p) => self.reclaim(request).await,
            _ => None,
        };
        if let Some(tunnel) = reclaimed {
            return Ok(tunnel);
        }
        let no_port = || Shortfall::NoFreePort {
            range: charger.describe_allowed(),
        };
        // Bound before it is charged: when no port is free at all, that is the answer,
        // whatever the client's share.
        let (listener, guard) = pool
            .bind_within(request.preferred_port, &charger.allowed)
            .ok_or_else(no_port)?;
        let charge = charger.charge()?;
        Ok(Tunnel {
            port: guard.port(),
            listener,
            secret: LeaseSecret::random(),
            reclaimed: false,
            lease_expires: None,
            guard,
            charge,
        })
    }

    /// Undoes a partial grant: reclaimed ports return to their leases with their old expiry,
    /// new ones are freed (dropping them releases the port and its charge).
    fn restore(self: &Arc<Self>, granted: Vec<Tunnel>) {
        let now = Instant::now();
        let mut entries = self.lock();
        for tunnel in granted {
            let Some(expires) = tunnel.lease_expires.filter(|e| *e > now) else {
                continue;
            };
            debug!(
                port = tunnel.port,
                "hello refused; port returns to its lease"
            );
            self.insert_leased(&mut entries, tunnel, expires);
        }
    }

    /// Leases `tunnel`'s port until `expires`, when it is freed unless reclaimed first.
    fn insert_leased(
        self: &Arc<Self>,
        entries: &mut HashMap<u16, Entry>,
        tunnel: Tunnel,
        expires: Instant,
    ) {
        let (leases, port) = (Arc::clone(self), tunnel.port);
        let expiry = tokio::spawn(async move {
            tokio::time::sleep_until(expires).await;
            leases.expire(port, expires);
        });
        entries.insert(
            tunnel.port,
            Entry::Leased {
                secret: tunnel.secret,
                listener: tunnel.listener,
                guard: tunnel.guard,
                charge: tunnel.charge,
                expires,
                _expiry: Expiry(expiry.abort_handle()),
            },
        );
    }

    /// The port the request's lease names, if the secret matches: straight from the lease, or
    /// taken over from the session that still holds it.
    async fn reclaim(&self, request: &TunnelRequest) -> Option<Tunnel> {
        let (port, secret) = (request.preferred_port?, request.lease.as_ref()?);
        let deadline = Instant::now() + TAKEOVER_WAIT;
        loop {
            let released = self.released.notified();
            {
                let mut entries = self.lock();
                match entries.get(&port) {
                    Some(Entry::Leased { secret: s, .. }) if s.matches(secret) => {
                        let Some(Entry::Leased {
                            listener,
                            guard,
                            charge,
                            expires,
                            ..
                        }) = entries.remove(&port)
                        else {
                            unreachable!("matched as leased just above");
                        };
                        info!(port, "leased port reclaimed");
                        // The lease may come from a session on another worker thread: move
                        // the listener to this one, where its new session runs.
                        let listener = match listener.into_std().and_then(TcpListener::from_std) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::warn!(port, error = %e, "cannot adopt a leased port");
                                return None;
                            }
                        };
                        return Some(Tunnel {
                            port,
                            listener,
                            secret: secret.clone(),
                            reclaimed: true,
                            lease_expires: Some(expires),
                            guard,
                            charge,
                        });
                    }
                    Some(Entry::Active { secret: s, replace }) if s.matches(secret) => {
                        debug!(port, "the port's owner reconnected; ending its old session");
                        replace.cancel();
                    }
                    _ => return None,
                }
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }

    /// A session ended: its ports are freed (`lease` = `None`) or kept for their owner until
    /// `lease` has passed.
    pub(super) fn release(self: &Arc<Self>, tunnels: Vec<Tunnel>, lease: Option<Duration>) {
        let mut entries = self.lock();
        for tunnel in tunnels {
            let Some(ttl) = lease else {
                entries.remove(&tunnel.port);
                continue;
            };
            self.insert_leased(&mut entries, tunnel, Instant::now() + ttl);
        }
        drop(entries);
        self.released.notify_waiters();
    }

    /// Ends the lease of `port` if it is still the one that expires at `expires`: the listener
    /// closes (the kernel resets the visitors waiting in its queue) and the port is free again.
    fn expire(&self, port: u16, expires: Instant) {
        let mut entries = self.lock();
        if matches!(entries.get(&port), Some(Entry::Leased { expires: e, .. }) if *e == expires) {
            entries.remove(&port);
            self.expired.inc();
            info!(port, "lease expired; port freed");
        }
    }

    /// Drops every lease at once (the relay is stopping).
    pub(super) fn clear(&self) {
        self.lock().retain(|_, e| matches!(e, Entry::Active { .. }));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
