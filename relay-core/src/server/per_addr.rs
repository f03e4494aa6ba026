//! Limits per source address, so one address cannot take more than a small share of what the
//! relay has: handshakes in flight, sessions, offers, public ports.
//!
//! Addresses are grouped the way they are handed out: an IPv4 address is one group, an IPv6
//! address counts with its whole /64 (one subscriber usually gets at least a /64, so counting
//! single IPv6 addresses would give one machine 2^64 shares).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A source address group: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrGroup(IpAddr);

impl From<IpAddr> for AddrGroup {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddrGroup(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                AddrGroup(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl fmt::Display for AddrGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Per-address limits as configured; `None` takes the default computed from the relay's own
/// totals by [`default_share`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerAddrLimits {
    /// Connections in their handshake at once (default: share of `max_handshakes`, floor 8).
    pub handshakes: Option<usize>,
    /// Tunnel sessions at once (default: share of `max_sessions`, floor 32).
    pub sessions: Option<usize>,
    /// Public ports held at once, leased ports of lost sessions included (default: share of the
    /// public port range, floor 32).
    pub ports: Option<usize>,
    /// File offers, waiting or transferring, at once (default: share of `max_transfers`,
    /// floor 32).
    pub offers: Option<usize>,
}

/// The default share of `total` one address group may hold:
/// `max(1, min(total / 4, max(floor, total / 16)))`.
///
/// A sixteenth of large totals, so at least sixteen addresses are needed to exhaust the relay;
/// never below `floor` (an office behind one NAT address: with the default 1000 public ports one
/// address may hold 62, at least 32), but never more than a quarter, so that even a small pool
/// keeps room for others (a 40-port pool: 10 per address).
///
/// ```
/// use relay_core::server::default_share;
/// assert_eq!(default_share(1000, 32), 62);
/// assert_eq!(default_share(40, 32), 10);
/// assert_eq!(default_share(1024, 8), 64);
/// assert_eq!(default_share(2, 32), 1);
/// ```
pub fn default_share(total: usize, floor: usize) -> usize {
    (total / 4).min((total / 16).max(floor)).max(1)
}

/// Floors of [`default_share`] for each limit.
pub const HANDSHAKES_FLOOR: usize = 8;
/// See [`HANDSHAKES_FLOOR`].
pub const SESSIONS_FLOOR: usize = 32;
/// See [`HANDSHAKES_FLOOR`].
pub const PORTS_FLOOR: usize = 32;
/// See [`HANDSHAKES_FLOOR`].
pub const OFFERS_FLOOR: usize = 32;

/// Per-address limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AddrLimits {
    pub(super) handshakes: usize,
    pub(super) sessions: usize,
    pub(super) ports: usize,
    pub(super) offers: usize,
}

impl PerAddrLimits {
    /// Fills in the defaults from the relay's totals.
    pub(super) fn resolve(
        &self,
        max_handshakes: usize,
        max_sessions: usize,
        pool: usize,
        max_transfers: usize,
    ) -> Result<AddrLimits, String> {
        let pick = |name: &str, set: Option<usize>, total: usize, floor: usize| match set {
            Some(0) => Err(format!("{name} per address must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default_share(total, floor)),
        };
        Ok(AddrLimits {
            handshakes: pick(
                "handshakes",
                self.handshakes,
                max_handshakes,
                HANDSHAKES_FLOOR,
            )?,
            sessions: pick("sessions", self.sessions, max_sessions, SESSIONS_FLOOR)?,
            ports: pick("ports", self.ports, pool, PORTS_FLOOR)?,
            offers: pick("offers", self.offers, max_transfers, OFFERS_FLOOR)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_groups_by_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddrGroup::from(a), AddrGroup::from(b));
        assert_ne!(AddrGroup::from(a), AddrGroup::from(c));
        assert_eq!(AddrGroup::from(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(AddrGroup::from(mapped), AddrGroup::from(v4));
        assert_ne!(
            AddrGroup::from(v4),
            AddrGroup::from("192.0.2.8".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn default_shares_leave_room_for_others_and_for_an_office() {
        let defaults = PerAddrLimits::default()
            .resolve(1024, 1024, 1000, 1024)
            .expect("valid");
        assert!(defaults.ports >= 32, "an office keeps 32 tunnels");
        assert!(defaults.ports * 16 <= 1000, "a small share of the pool");
        assert!(defaults.sessions * 16 <= 1024, "a small share of sessions");
        assert!(defaults.handshakes * 16 <= 1024);
        for pool in [1usize, 2, 5, 20, 40, 100, 200, 1000, 30_000] {
            let share = default_share(pool, PORTS_FLOOR);
            assert!(share >= 1);
            assert!(
                pool < 2 || share < pool,
                "{pool}-port pool keeps room for a second address"
            );
        }
        assert_eq!(default_share(40, PORTS_FLOOR), 10);
        let set = PerAddrLimits {
            ports: Some(0),
            ..Default::default()
        };
        assert!(set.resolve(1, 1, 1, 1).is_err());
    }
}
