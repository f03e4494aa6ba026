//! The relay-wide cap on open visitors, and each client address's share of it.
//!
//! Per-tunnel and per-session caps bound one session, but not the relay: a thousand sessions of
//! sixteen thousand visitors each, or one client with many sessions, could still pin more kernel
//! socket memory than the host has for TCP, which hurts every connection on the machine. So the
//! relay counts every open visitor against one cap, sized at start so that all of them at their
//! worst case stay within a fixed part of the kernel's TCP memory ([`budget::visitor_cap`]),
//! and lets no client address (IPv4, or IPv6 /64, of the *tunnel client*) hold more than a
//! share of it, so one client cannot crowd out the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::per_addr::AddrGroup;
use super::refusals::Refusal;

/// Open visitors relay-wide, and per client address.
#[derive(Debug)]
pub(super) struct OpenVisitors {
    total: Arc<Semaphore>,
    limit: usize,
    per_addr: usize,
    held: Mutex<HashMap<AddrGroup, usize>>,
}

/// One admitted visitor; dropping it gives its place back.
#[derive(Debug)]
pub(super) struct OpenVisitor {
    _total: OwnedSemaphorePermit,
    group: AddrGroup,
    owner: Arc<OpenVisitors>,
}

impl OpenVisitors {
    /// At most `limit` visitors open relay-wide, `per_addr` of them behind one client address.
    pub(super) fn new(limit: usize, per_addr: usize) -> Arc<Self> {
        Arc::new(OpenVisitors {
            total: Arc::new(Semaphore::new(limit)),
            limit,
            per_addr,
            held: Mutex::default(),
        })
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    pub(super) fn per_addr(&self) -> usize {
        self.per_addr
    }

    /// Admits one more visitor for a tunnel of the client at `group`, or says which limit
    /// refuses it. Never waits.
    pub(super) fn admit(self: &Arc<Self>, group: AddrGroup) -> Result<OpenVisitor, Refusal> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.entry(group).or_insert(0);
        if *mine >= self.per_addr {
            return Err(Refusal::AddrVisitorShare);
        }
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::OpenVisitorCap)?;
        *mine += 1;
        Ok(OpenVisitor {
            _total: permit,
            group,
            owner: self.clone(),
        })
    }

    /// Visitors open now, relay-wide.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.limit - self.total.available_permits()
    }
}

impl Drop for OpenVisitor {
    fn drop(&mut self) {
        let mut held = self
            .owner
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                // Keyed by client address: an entry per address ever seen would grow forever.
                held.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn group(s: &str) -> AddrGroup {
        s.parse::<IpAddr>().expect("address").into()
    }

    #[test]
    fn one_address_takes_its_share_and_the_rest_stays_for_others() {
        let cap = OpenVisitors::new(10, 4);
        let a: Vec<_> = (0..4)
            .map(|_| cap.admit(group("192.0.2.1")).expect("within the share"))
            .collect();
        assert_eq!(
            cap.admit(group("192.0.2.1")).unwrap_err(),
            Refusal::AddrVisitorShare
        );
        let b: Vec<_> = (0..4)
            .map(|_| cap.admit(group("192.0.2.2")).expect("another address"))
            .collect();
        let c: Vec<_> = (0..2)
            .map(|_| cap.admit(group("192.0.2.3")).expect("room left"))
            .collect();
        assert_eq!(cap.open(), 10);
        assert_eq!(
            cap.admit(group("192.0.2.3")).unwrap_err(),
            Refusal::OpenVisitorCap
        );
        drop(a);
        assert_eq!(cap.open(), 6);
        assert!(cap.admit(group("192.0.2.3")).is_ok());
        drop((b, c));
        assert_eq!(cap.open(), 0);
        assert!(cap.held.lock().expect("lock").is_empty(), "no entry left");
    }
}
