//! Several relays without a shared store: each has an id, and the nameplates it issues end in
//! that id, so any relay can tell from a nameplate which relay holds the offer and send the
//! receiver there ([`Reply::Redirect`](crate::protocol::Reply)).
//!
//! The id is a fixed number of trailing digits, as many as the largest id in the cluster has
//! (1-9: one digit, up to 99: two, up to 999: three), so codes grow by one digit for a cluster
//! of up to ten relays and stay plain numbers: clients need no change to carry a relay id.

use std::collections::BTreeMap;

use tracing::info;

use super::Shared;
use super::handshake::Client;
use super::refusals::Refusal;
use crate::protocol::{ErrorCode, Reply, nameplate};

/// Largest relay id.
pub const MAX_RELAY_ID: u32 = 999;

/// This relay's id and how to reach its peers directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    id: u32,
    /// Peer id to its direct control address (`HOST:PORT`, as clients must dial it).
    peers: BTreeMap<u32, String>,
    /// Trailing digits of a nameplate that name its relay.
    width: u32,
}

/// Which relay holds the offer a nameplate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner<'a> {
    /// This relay.
    Here,
    /// A known peer, at this control address.
    Peer { id: u32, addr: &'a str },
    /// An id no relay of the cluster has.
    Unknown { id: u32 },
}

impl Cluster {
    /// A relay with id `id` among `peers` (every other relay of the cluster; each relay must
    /// be given the same ids, or they disagree on how many digits name a relay).
    pub fn new(id: u32, peers: impl IntoIterator<Item = (u32, String)>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (peer, addr) in peers {
            if peer == id {
                return Err(format!("peer {peer} has this relay's own id"));
            }
            if map.insert(peer, addr).is_some() {
                return Err(format!("peer {peer} is given twice"));
            }
        }
        let max = map.keys().copied().chain([id]).max().unwrap_or(id);
        if max > MAX_RELAY_ID {
            return Err(format!("relay ids go from 0 to {MAX_RELAY_ID}, got {max}"));
        }
        Ok(Cluster {
            id,
            peers: map,
            width: max.checked_ilog10().unwrap_or(0) + 1,
        })
    }

    /// This relay's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The largest offer number that still fits a nameplate with the id appended.
    pub(super) fn max_number(&self) -> u64 {
        nameplate::MAX_VALUE / 10u64.pow(self.width)
    }

    /// The nameplate for offer number `n` on this relay.
    pub(super) fn nameplate(&self, n: u64) -> String {
        format!("{n}{:0width$}", self.id, width = self.width as usize)
    }

    /// Which relay holds `nameplate` (a valid one).
    pub(super) fn owner(&self, nameplate: &str) -> Owner<'_> {
        let width = self.width as usize;
        let Some(split) = nameplate.len().checked_sub(width).filter(|&s| s > 0) else {
            return Owner::Here;
        };
        let Ok(id) = nameplate[split..].parse::<u32>() else {
            return Owner::Here;
        };
        if id == self.id {
            return Owner::Here;
        }
        match self.peers.get(&id) {
            Some(addr) => Owner::Peer { id, addr },
            None => Owner::Unknown { id },
        }
    }
}

/// Routes a claim for `nameplate`: the receiver back when this relay holds the nameplate (or
/// is no cluster member); `None` when it was redirected to the peer that does, or refused
/// because no relay of the cluster has the nameplate's id.
pub(super) async fn claim_here(
    mut receiver: Client,
    nameplate: &str,
    shared: &Shared,
) -> Option<Client> {
    let Some(cluster) = &shared.config.cluster else {
        return Some(receiver);
    };
    match cluster.owner(nameplate) {
        Owner::Here => Some(receiver),
        Owner::Peer { id, addr } => {
            // Not a failed claim: the code is fine, it lives on a peer. The receiver follows
            // this once and asks there.
            info!(
                nameplate,
                relay.id = id,
                to = addr,
                "claim for a peer's offer; redirecting"
            );
            let to = addr.to_string();
            let _ = receiver.reply(&Reply::Redirect { to }).await;
            None
        }
        Owner::Unknown { id } => {
            shared.gate.claim_failures.record(receiver.peer.ip().into());
            if shared.refusals.note(Refusal::UnknownNameplate) {
                info!(nameplate, relay.id = id, "claim naming an unknown relay");
            }
            let msg = format!(
                "number {nameplate} names relay {id}, which this relay does not know (wrong code?)"
            );
            receiver.refuse(ErrorCode::UnknownNameplate, msg).await;
            None
        }
    }
}

/// Parses `ID=HOST:PORT`, one peer of `relay --peer`.
pub fn parse_peer(s: &str) -> Result<(u32, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not ID=HOST:PORT (like 2=relay2.example.com:8080)"))?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("peer id '{id}' is not a number from 0 to {MAX_RELAY_ID}"))?;
    crate::net::split_host_port(addr.trim())
        .map_err(|e| format!("peer {id}: {e} (expected ID=HOST:PORT)"))?;
    Ok((id, addr.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: u32, peers: &[u32]) -> Cluster {
        let peers = peers.iter().map(|&p| (p, format!("relay{p}:8080")));
        Cluster::new(id, peers).expect("valid")
    }

    #[test]
    fn nameplates_end_in_the_relay_id_and_lead_back_to_it() {
        let three = cluster(2, &[1, 3]);
        assert_eq!(
            three.nameplate(4711),
            "47112",
            "one digit for up to ten relays"
        );
        assert_eq!(three.owner("47112"), Owner::Here);
        assert_eq!(
            three.owner("47113"),
            Owner::Peer {
                id: 3,
                addr: "relay3:8080"
            }
        );
        assert_eq!(three.owner("47119"), Owner::Unknown { id: 9 });
        assert_eq!(three.owner("2"), Owner::Here, "too short to carry an id");

        let twelve = cluster(3, &[1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(
            twelve.nameplate(4711),
            "471103",
            "zero-padded to two digits"
        );
        assert_eq!(twelve.owner("471103"), Owner::Here);
        assert!(matches!(twelve.owner("471112"), Owner::Peer { id: 12, .. }));
        assert!(matches!(twelve.owner("471110"), Owner::Peer { id: 10, .. }));

        for c in [&three, &twelve, &cluster(999, &[0])] {
            let biggest = c.nameplate(c.max_number());
            assert!(nameplate::is_valid(&biggest), "{biggest}");
            assert!(nameplate::is_valid(&c.nameplate(1)));
            assert_eq!(c.owner(&biggest), Owner::Here);
        }
        assert_eq!(cluster(0, &[1]).nameplate(5), "50", "id 0 never leads");
    }

    #[test]
    fn bad_clusters_and_peers_are_refused() {
        assert!(Cluster::new(1000, []).unwrap_err().contains("0 to 999"));
        assert!(Cluster::new(1, [(1, "a:1".into())]).is_err());
        assert!(Cluster::new(1, [(2, "a:1".into()), (2, "b:1".into())]).is_err());
        assert_eq!(
            parse_peer("2=10.0.0.2:8080").unwrap(),
            (2, "10.0.0.2:8080".into())
        );
        assert_eq!(parse_peer("12=[fd00::2]:80").unwrap().0, 12);
        for bad in ["2", "x=a:1", "2=nohost", "2=a:0x"] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }
}
