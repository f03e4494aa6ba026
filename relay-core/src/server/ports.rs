//! Public ports: which are ours, and binding the lowest free one.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;

use super::budget::{VisitorSockets, tune_public_listener};
use crate::net::bind_listener;

/// The relay's public port range and the ports its tunnels hold.
#[derive(Debug)]
pub(crate) struct PortPool {
    ip: IpAddr,
    range: RangeInclusive<u16>,
    taken: Arc<Mutex<BTreeSet<u16>>>,
    /// Set on each public listener as it is bound, before its port is announced, so every
    /// visitor it ever accepts inherits them (`None`: the kernel's defaults, in tests).
    visitor_sockets: Option<VisitorSockets>,
}

/// A bound public port; dropping it returns the port to the pool.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    taken: Arc<Mutex<BTreeSet<u16>>>,
}

impl PortLease {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
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
            visitor_sockets: None,
        }
    }

    /// The options every visitor accepted on this pool's listeners inherits.
    pub(super) fn with_visitor_sockets(self, options: VisitorSockets) -> Self {
        PortPool {
            visitor_sockets: Some(options),
            ..self
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
    #[cfg(test)]
    pub(crate) fn bind(&self, preferred: Option<u16>) -> Option<(TcpListener, PortLease)> {
        self.bind_within(preferred, &self.range)
    }

    /// Binds `preferred` if it is in `allowed` and free, else the lowest free port of `allowed`
    /// (the part of the range a client's token allows). Ports other programs on the machine
    /// hold are skipped. `None` when every port is taken.
    ///
    /// Among the ports of `allowed` (a part of the range: what a
    /// client's token allows).
    pub(crate) fn bind_within(
        &self,
        preferred: Option<u16>,
        allowed: &RangeInclusive<u16>,
    ) -> Option<(TcpListener, PortLease)> {
        // Held across the scan so two sessions never race for one port; binding is a
        // non-blocking syscall, so this stays short.
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let allowed =
            *allowed.start().max(self.range.start())..=*allowed.end().min(self.range.end());
        let preferred = preferred.filter(|p| allowed.contains(p));
        let candidates = preferred.into_iter().chain(allowed);
        for port in candidates {
            if taken.contains(&port) {
                continue;
            }
            match bind_listener(SocketAddr::new(self.ip, port)) {
                Ok(listener) => {
                    if let Some(options) = self.visitor_sockets {
                        tune_public_listener(&listener, options);
                    }
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

    /// Four consecutive loopback ports, all held by this test until it releases them. Drawn
    /// below the usual ephemeral range (32768 and up), where the outgoing connections of
    /// concurrent tests would otherwise occupy neighbouring ports.
    fn hold_four_ports() -> (u16, Vec<Option<std::net::TcpListener>>) {
        for _ in 0..200 {
            let base: u16 = rand::random_range(20_000..30_000);
            let held: Vec<_> = (0..4u16)
                .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
                .map(Some)
                .collect();
            if held.len() == 4 {
                return (base, held);
            }
        }
        panic!("no four consecutive free ports found");
    }

    #[tokio::test]
    async fn lowest_free_port_first_and_busy_ports_skipped() {
        // Every port of the range is held by the test, and released only where a port must be
        // free, so other programs cannot disturb the outcome.
        let (base, mut held) = hold_four_ports();
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), base..=base + 3);
        assert!(pool.bind(None).is_none(), "all four are busy");

        held[0] = None;
        let (_l0, lease0) = pool.bind(None).expect("the free port");
        assert_eq!(lease0.port, base);

        held[2] = None;
        let (_l2, lease2) = pool.bind(None).expect("next free port");
        assert_eq!(lease2.port, base + 2, "busy base+1 is skipped");

        drop((_l0, lease0));
        let (_l0, again) = pool.bind(None).expect("freed port");
        assert_eq!(again.port, base, "a released port is handed out again");

        held[3] = None;
        let (_l3, preferred) = pool.bind(Some(base + 3)).expect("preferred port");
        assert_eq!(preferred.port, base + 3);
    }

    #[tokio::test]
    async fn exhaustion_is_reported() {
        let held = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = held.local_addr().expect("addr").port();
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port..=port);
        assert!(pool.bind(None).is_none());
    }
}
