//! Public ports: which are ours, and binding the lowest free one.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;

use crate::net::bind_listener;

/// The relay's public port range and the ports its tunnels hold.
#[derive(Debug)]
pub(crate) struct PortPool {
    ip: IpAddr,
    range: RangeInclusive<u16>,
    taken: Arc<Mutex<BTreeSet<u16>>>,
}

/// A bound public port; dropping it returns the port to the pool.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    taken: Arc<Mutex<BTreeSet<u16>>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.port);
    }
}

impl PortPool {
    pub(crate) fn new(ip: IpAddr, range: RangeInclusive<u16>) -> Self {
        PortPool {
            ip,
            range,
            taken: Arc::default(),
        }
    }

    pub(crate) fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    pub(crate) fn describe(&self) -> String {
        format!("{}-{}", self.range.start(), self.range.end())
    }

    /// Binds `preferred` if it is in range and free, else the lowest free port in the range.
    /// Ports other programs on the machine hold are skipped. `None` when every port is taken.
    pub(crate) fn bind(&self, preferred: Option<u16>) -> Option<(TcpListener, PortLease)> {
        // Held across the scan so two sessions never race for one port; binding is a
        // non-blocking syscall, so this stays short.
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let preferred = preferred.filter(|p| self.range.contains(p));
        let candidates = preferred.into_iter().chain(self.range.clone());
        for port in candidates {
            if taken.contains(&port) {
                continue;
            }
            match bind_listener(SocketAddr::new(self.ip, port)) {
                Ok(listener) => {
                    taken.insert(port);
                    let lease = PortLease {
                        port,
                        taken: self.taken.clone(),
                    };
                    return Some((listener, lease));
                }
                Err(e) if is_taken_elsewhere(&e) => continue,
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot bind public port, skipping it");
                    continue;
                }
            }
        }
        None
    }
}

fn is_taken_elsewhere(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn lowest_free_port_first_and_busy_ports_skipped() {
        // Find three consecutive free ports by holding a listener on the first.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        let Some(end) = base.checked_add(3) else {
            return;
        };
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base..=end);
        let (_l1, lease1) = pool.bind(None).expect("first port");
        assert_eq!(lease1.port, base);
        let (_l2, lease2) = pool.bind(None).expect("second port");
        assert_ne!(lease2.port, base);
        let freed = lease1.port;
        drop((_l1, lease1));
        let (_l3, lease3) = pool.bind(None).expect("freed port is reused");
        assert_eq!(lease3.port, freed);
        let (_l4, lease4) = pool.bind(Some(end)).expect("preferred port");
        assert_eq!(lease4.port, end);
    }

    #[tokio::test]
    async fn exhaustion_is_reported() {
        let held = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = held.local_addr().expect("addr").port();
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port..=port);
        assert!(pool.bind(None).is_none());
    }
}
