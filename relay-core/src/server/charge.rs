//! What a public port costs its holder: a unit of its source address's share and, under a
//! scoped token, of the token's tunnel count. The charge travels with the port, into its lease
//! when the session is lost and back out when the lease is reclaimed, so a client cannot get
//! round its share by dropping connections, and a reconnecting client is not charged twice.

use std::ops::RangeInclusive;

use super::access::NamedToken;
use super::per_addr::AddrGroup;
use super::usage::{Held, Slot, Usage};

/// The units one granted or leased public port holds.
#[derive(Debug)]
pub(super) struct PortCharge {
    _addr: Slot<AddrGroup>,
    _token: Option<Slot<[u8; 8]>>,
}

/// Why a session could not have the ports it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shortfall {
    /// Every port the client may have is taken (`range`: the ports it may have).
    NoFreePort { range: String },
    /// Its source address holds its share of ports.
    AddrShare { limit: usize },
    /// Its token holds all the tunnels it allows.
    TokenTunnels { name: String, limit: usize },
}

/// Charges new ports to one client.
#[derive(Debug)]
pub(super) struct Charger<'a> {
    pub(super) addrs: &'a Usage<AddrGroup>,
    pub(super) group: AddrGroup,
    pub(super) addr_limit: usize,
    pub(super) tokens: &'a Usage<[u8; 8]>,
    pub(super) token: Option<&'a NamedToken>,
    /// The ports this client may have: the relay's range, narrowed by its token's scope.
    pub(super) allowed: RangeInclusive<u16>,
}

impl Charger<'_> {
    /// Charges one more port, if the address and the token allow it.
    pub(super) fn charge(&self) -> Result<PortCharge, Shortfall> {
        let addr = self
            .addrs
            .try_take(self.group, Held::Port, self.addr_limit)
            .ok_or(Shortfall::AddrShare {
                limit: self.addr_limit,
            })?;
        let token = match self.token {
            Some(t) => match t.scope.max_tunnels {
                Some(limit) => Some(
                    self.tokens
                        .try_take(t.token.key_id(), Held::Port, limit)
                        .ok_or_else(|| Shortfall::TokenTunnels {
                            name: t.name.clone(),
                            limit,
                        })?,
                ),
                None => None,
            },
            None => None,
        };
        Ok(PortCharge {
            _addr: addr,
            _token: token,
        })
    }

    /// The ports this client may have, as `LOW-HIGH`.
    pub(super) fn describe_allowed(&self) -> String {
        format!("{}-{}", self.allowed.start(), self.allowed.end())
    }
}

/// The ports of `pool` a token's `scope` leaves; `None` when they do not overlap.
pub(super) fn allowed_ports(
    pool: &RangeInclusive<u16>,
    scope: Option<&RangeInclusive<u16>>,
) -> Option<RangeInclusive<u16>> {
    let Some(scope) = scope else {
        return Some(pool.clone());
    };
    let low = *pool.start().max(scope.start());
    let high = *pool.end().min(scope.end());
    (low <= high).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_narrows_the_pool() {
        assert_eq!(allowed_ports(&(100..=200), None), Some(100..=200));
        assert_eq!(
            allowed_ports(&(100..=200), Some(&(150..=300))),
            Some(150..=200)
        );
        assert_eq!(allowed_ports(&(100..=200), Some(&(201..=300))), None);
    }
}
