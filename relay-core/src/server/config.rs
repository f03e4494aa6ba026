//! The relay's limits and settings.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::access::Access;
use super::budget::VisitorSockets;
pub use super::budget::{
    MAX_VISITOR_BUFFER, MIN_VISITOR_BUFFER, VISITOR_RECV_BUFFER, VISITOR_SEND_BUFFER,
    VISITOR_STALL_TIMEOUT,
};
use super::cluster::Cluster;
use super::per_addr::{AddrLimits, PerAddrLimits};
use super::proxied::TrustedNet;
use crate::protocol::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_FRAME_LEN, MAX_FRAME_LEN,
    MAX_VISITORS_PER_TUNNEL,
};
use crate::tls::ServerTls;
pub use crate::wide::WIDE_VISITORS;

/// Shortest visitor stall timeout: shorter ones would cut visitors over ordinary loss and the
/// retransmission back-off after it.
const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest visitor stall timeout (the kernel takes milliseconds in 32 bits).
const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How many public ports a relay hands out by default, starting right above its control port.
pub const DEFAULT_PUBLIC_PORT_SPAN: u16 = 1000;
/// Default for [`RelayConfig::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 1024;
/// Default for [`RelayConfig::max_visitors_per_tunnel`].
pub const DEFAULT_MAX_VISITORS_PER_TUNNEL: u32 = MAX_VISITORS_PER_TUNNEL;
/// Default for [`RelayConfig::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;
/// Default for [`RelayConfig::max_transfers`].
pub const DEFAULT_MAX_TRANSFERS: usize = 1024;
/// Default for [`RelayConfig::offer_ttl`].
pub const DEFAULT_OFFER_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default for [`RelayConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`RelayConfig::max_failed_claims`].
pub const DEFAULT_MAX_FAILED_CLAIMS: u32 = 30;
/// Default for [`RelayConfig::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Everything a relay can be told. `Default` gives the documented production defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Public ports handed to tunnels, lowest free first. `None`: the
    /// [`DEFAULT_PUBLIC_PORT_SPAN`] ports right above the control port.
    pub public_ports: Option<RangeInclusive<u16>>,
    /// Host name advertised to clients; `None` lets each client advertise the host it dialed.
    pub public_host: Option<String>,
    /// Tunnel sessions open at once; further clients get a `Busy` error.
    pub max_sessions: usize,
    /// Visitors connected at once to one tunnel; further visitors are reset. At most
    /// [`MAX_VISITORS_PER_TUNNEL`].
    pub max_visitors_per_tunnel: u32,
    /// Connections still in their handshake at once; further ones are closed unanswered, so a
    /// flood of idle or junk connections cannot starve real clients for long.
    pub max_handshakes: usize,
    /// Deadline for a new connection's preface and hello.
    pub handshake_timeout: Duration,
    /// Largest control frame accepted, in bytes (at most [`MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// How often clients must send heartbeats; silence for three intervals ends a session.
    pub heartbeat_interval: Duration,
    /// File transfers (waiting offers plus transfers in progress) at once.
    pub max_transfers: usize,
    /// How long an offer may wait for its receiver.
    pub offer_ttl: Duration,
    /// On shutdown, how long sessions and transfers get to finish before they are cut.
    pub drain_timeout: Duration,
    /// How long the public ports of a session lost without a goodbye stay reserved for their
    /// client (zero: freed at once).
    pub lease_ttl: Duration,
    /// The tokens clients must hold; open when empty.
    pub access: Access,
    /// The relay's certificate: with it, the control port serves TLS beside plain TCP (told
    /// apart by the client's first byte).
    pub tls: Option<ServerTls>,
    /// Refuse plain connections with [`ErrorCode::TlsRequired`](crate::protocol::ErrorCode)
    /// (needs `tls`).
    pub require_tls: bool,
    /// What one source address (IPv4, or IPv6 /64) may hold at once.
    pub per_addr: PerAddrLimits,
    /// Wrong transfer codes (unknown or malformed nameplates) one source address may present
    /// per minute; further claims are refused until its minute is over. Successful claims
    /// never count.
    pub max_failed_claims: u32,
    /// Visitors open at once relay-wide; further visitors are reset. `None`: derived at start
    /// from the kernel's TCP memory (see [`visitor_cap`](super::budget::visitor_cap)).
    pub max_open_visitors: Option<usize>,
    /// Of those, visitors open at once for the tunnels of one client address (IPv4, or IPv6
    /// /64). `None`: a quarter of the relay-wide cap.
    pub max_open_visitors_per_addr: Option<usize>,
    /// Load balancers whose connections, on the control port and on public ports, start with
    /// a PROXY header (v1 or v2) naming the real client or visitor. Empty: no header is
    /// honoured from anyone.
    pub trusted_proxies: Vec<TrustedNet>,
    /// This relay's id among several and its peers' direct control addresses: the id is
    /// carried in the nameplates it issues, and a claim for a peer's nameplate is redirected
    /// there. `None`: a relay on its own, with nameplates as plain numbers.
    pub cluster: Option<Cluster>,
    /// `SO_SNDBUF` of public visitor sockets, in bytes ([`MIN_VISITOR_BUFFER`] to
    /// [`MAX_VISITOR_BUFFER`]); `None`: auto-tuned by the kernel. One visitor downloads at most
    /// about this much per round trip; a visitor that stops reading pins only the short unsent
    /// queue either way. Default [`VISITOR_SEND_BUFFER`] (auto-tuned).
    pub visitor_send_buffer: Option<usize>,
    /// `SO_RCVBUF` of public visitor sockets, in bytes ([`MIN_VISITOR_BUFFER`] to
    /// [`MAX_VISITOR_BUFFER`]); `None`: auto-tuned by the kernel. One visitor uploads at most
    /// about this much per round trip, and a visitor whose client stops reading can park twice
    /// this much in the relay's kernel (auto-tuned: at most `net.ipv4.tcp_rmem`'s maximum).
    /// Default [`VISITOR_RECV_BUFFER`] (auto).
    pub visitor_recv_buffer: Option<usize>,
    /// Visitor (and tunnel session) sockets at once whose auto-tuned send buffer the relay may
    /// lift past the kernel's auto-tuning ceiling (`net.ipv4.tcp_wmem`'s maximum) to twice
    /// `net.core.wmem_max`, once they fill it: downloads over long, fast paths then keep their
    /// path full. 0: never. Has no effect with a fixed
    /// [`visitor_send_buffer`](Self::visitor_send_buffer) (sessions are not lifted then either),
    /// or where `wmem_max` is not above half the ceiling. Default [`WIDE_VISITORS`].
    pub wide_visitors: usize,
    /// How long bytes sent to a public visitor may stay unacknowledged, or wait behind its shut
    /// window, before the connection is cut (`TCP_USER_TIMEOUT`); `None`: the kernel's own
    /// retransmission limits (about 15 minutes). Bounds how long a visitor that stops
    /// acknowledging pins what was in flight to it. Default [`VISITOR_STALL_TIMEOUT`].
    pub visitor_stall_timeout: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            public_ports: None,
            public_host: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_visitors_per_tunnel: DEFAULT_MAX_VISITORS_PER_TUNNEL,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_transfers: DEFAULT_MAX_TRANSFERS,
            offer_ttl: DEFAULT_OFFER_TTL,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            lease_ttl: DEFAULT_LEASE_TTL,
            access: Access::open(),
            tls: None,
            require_tls: false,
            per_addr: PerAddrLimits::default(),
            max_failed_claims: DEFAULT_MAX_FAILED_CLAIMS,
            max_open_visitors: None,
            max_open_visitors_per_addr: None,
            trusted_proxies: Vec::new(),
            cluster: None,
            visitor_send_buffer: VISITOR_SEND_BUFFER,
            visitor_recv_buffer: VISITOR_RECV_BUFFER,
            wide_visitors: WIDE_VISITORS,
            visitor_stall_timeout: Some(VISITOR_STALL_TIMEOUT),
        }
    }
}

impl RelayConfig {
    /// Checks the settings against each other and the protocol's limits, and fills in the
    /// public port range for a relay whose control port is `control_port`.
    pub(crate) fn validate(
        mut self,
        control_port: u16,
    ) -> Result<(Self, RangeInclusive<u16>), String> {
        let ports = match self.public_ports.clone() {
            Some(r) => r,
            None => {
                let low = control_port.checked_add(1).ok_or_else(|| {
                    "control port 65535 leaves no room for public ports; pass a port range"
                        .to_string()
                })?;
                low..=low.saturating_add(DEFAULT_PUBLIC_PORT_SPAN - 1)
            }
        };
        if ports.is_empty() || *ports.start() == 0 {
            return Err(format!(
                "public port range {}-{} is empty or starts at 0",
                ports.start(),
                ports.end()
            ));
        }
        if ports.contains(&control_port) {
            return Err(format!(
                "public port range {}-{} contains the control port {control_port}",
                ports.start(),
                ports.end()
            ));
        }
        self.public_ports = Some(ports.clone());
        if self.max_visitors_per_tunnel == 0
            || self.max_visitors_per_tunnel > MAX_VISITORS_PER_TUNNEL
        {
            return Err(format!(
                "max visitors per tunnel must be 1-{MAX_VISITORS_PER_TUNNEL}"
            ));
        }
        if self.max_frame_len < 64 || self.max_frame_len > MAX_FRAME_LEN {
            return Err(format!("max frame length must be 64-{MAX_FRAME_LEN} bytes"));
        }
        for (name, value) in [
            ("max sessions", self.max_sessions),
            ("max handshakes", self.max_handshakes),
            ("max transfers", self.max_transfers),
            ("max open visitors", self.max_open_visitors.unwrap_or(1)),
            (
                "max open visitors per address",
                self.max_open_visitors_per_addr.unwrap_or(1),
            ),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.heartbeat_interval.is_zero() || self.handshake_timeout.is_zero() {
            return Err("heartbeat interval and handshake timeout must be positive".into());
        }
        if self.heartbeat_interval.as_millis() > u128::from(u32::MAX) {
            return Err("heartbeat interval is too long".into());
        }
        if self.require_tls && self.tls.is_none() {
            return Err("requiring TLS needs a certificate (--tls-cert and --tls-key, or --tls-self-signed)".into());
        }
        if self.lease_ttl.as_millis() > u128::from(u32::MAX) {
            return Err("lease time is too long".into());
        }
        for (name, value) in [
            ("visitor send buffer", self.visitor_send_buffer),
            ("visitor receive buffer", self.visitor_recv_buffer),
        ] {
            if value.is_some_and(|n| !(MIN_VISITOR_BUFFER..=MAX_VISITOR_BUFFER).contains(&n)) {
                return Err(format!(
                    "{name} must be {} KiB-{} MiB, or auto",
                    MIN_VISITOR_BUFFER / 1024,
                    MAX_VISITOR_BUFFER / (1024 * 1024)
                ));
            }
        }
        if self
            .visitor_stall_timeout
            .is_some_and(|t| !(MIN_STALL_TIMEOUT..=MAX_STALL_TIMEOUT).contains(&t))
        {
            return Err(format!(
                "visitor stall timeout must be {} s-{} h, or 0 (off)",
                MIN_STALL_TIMEOUT.as_secs(),
                MAX_STALL_TIMEOUT.as_secs() / 3600
            ));
        }
        Ok((self, ports))
    }

    /// The per-address limits in force for a pool of `pool_len` public ports.
    pub(super) fn per_addr_limits(&self, pool_len: usize) -> Result<AddrLimits, String> {
        if self.max_failed_claims == 0 {
            return Err("failed claims per address must be at least 1".into());
        }
        self.per_addr.resolve(
            self.max_handshakes,
            self.max_sessions,
            pool_len,
            self.max_transfers,
        )
    }

    pub(super) fn visitor_sockets(&self) -> VisitorSockets {
        VisitorSockets {
            send: self.visitor_send_buffer,
            recv: self.visitor_recv_buffer,
            stall_timeout: self.visitor_stall_timeout,
        }
    }

    pub(crate) fn heartbeat_interval_ms(&self) -> u32 {
        u32::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u32::MAX)
    }

    pub(crate) fn lease_ttl_ms(&self) -> u32 {
        u32::try_from(self.lease_ttl.as_millis()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_sit_right_above_the_control_port() {
        let (_, ports) = RelayConfig::default().validate(8080).expect("valid");
        assert_eq!(ports, 8081..=9080);
        let (_, ports) = RelayConfig::default().validate(65000).expect("valid");
        assert_eq!(ports, 65001..=65535);
        assert!(RelayConfig::default().validate(65535).is_err());
    }

    #[test]
    fn contradictions_are_refused() {
        let bad = RelayConfig {
            public_ports: Some(8000..=8100),
            ..Default::default()
        };
        assert!(bad.validate(8080).unwrap_err().contains("control port"));
        let bad = RelayConfig {
            max_visitors_per_tunnel: MAX_VISITORS_PER_TUNNEL + 1,
            ..Default::default()
        };
        assert!(bad.validate(8080).is_err());
    }

    #[test]
    fn visitor_buffers_out_of_range_are_refused() {
        for (send, recv) in [
            (Some(MIN_VISITOR_BUFFER - 1), None),
            (None, Some(0)),
            (Some(256 * 1024), Some(MAX_VISITOR_BUFFER + 1)),
        ] {
            let bad = RelayConfig {
                visitor_send_buffer: send,
                visitor_recv_buffer: recv,
                ..Default::default()
            };
            let err = bad.validate(8080).unwrap_err();
            assert!(err.contains("visitor") && err.contains("buffer"), "{err}");
        }
        for (send, recv) in [
            (None, None),
            (Some(MIN_VISITOR_BUFFER), Some(MAX_VISITOR_BUFFER)),
        ] {
            let good = RelayConfig {
                visitor_send_buffer: send,
                visitor_recv_buffer: recv,
                ..Default::default()
            };
            assert!(good.validate(8080).is_ok());
        }
    }

    #[test]
    fn a_visitor_stall_timeout_out_of_range_is_refused() {
        for bad in [
            Duration::from_millis(999),
            MAX_STALL_TIMEOUT + Duration::from_secs(1),
        ] {
            let config = RelayConfig {
                visitor_stall_timeout: Some(bad),
                ..Default::default()
            };
            let err = config.validate(8080).unwrap_err();
            assert!(err.contains("visitor stall timeout"), "{err}");
        }
        for good in [None, Some(MIN_STALL_TIMEOUT), Some(MAX_STALL_TIMEOUT)] {
            let config = RelayConfig {
                visitor_stall_timeout: good,
                ..Default::default()
            };
            assert!(config.validate(8080).is_ok());
        }
        assert_eq!(
            RelayConfig::default().visitor_stall_timeout,
            Some(VISITOR_STALL_TIMEOUT)
        );
    }
}
