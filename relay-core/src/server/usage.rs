//! What each key (a source address group, a token) holds at once: handshakes, sessions,
//! offers, public ports. Every count is held by a [`Slot`] and given back when the slot is
//! dropped, so a count can never drift, and a key's entry exists only while it holds something:
//! the table is bounded by the connections and ports alive, and is never cleared wholesale.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Kinds of things a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// Connections in their handshake.
    Handshake = 0,
    /// Tunnel sessions.
    Session = 1,
    /// Offers (waiting or transferring).
    Offer = 2,
    /// Public ports, leased ones of lost sessions included.
    Port = 3,
}

const KINDS: usize = 4;

type Table<K> = Arc<Mutex<HashMap<K, [usize; KINDS]>>>;

/// Counts per key.
#[derive(Debug)]
pub(super) struct Usage<K> {
    table: Table<K>,
}

impl<K> Default for Usage<K> {
    fn default() -> Self {
        Usage {
            table: Arc::default(),
        }
    }
}

/// One unit of `kind` held by `key`; dropping it gives the unit back.
pub(super) struct Slot<K: Hash + Eq + Copy> {
    table: Table<K>,
    key: K,
    kind: Held,
}

impl<K: Hash + Eq + Copy> Usage<K> {
    /// Takes one unit of `kind` for `key` if it holds fewer than `limit`.
    pub(super) fn try_take(&self, key: K, kind: Held, limit: usize) -> Option<Slot<K>> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = table.entry(key).or_insert([0; KINDS]);
        if counts[kind as usize] >= limit {
            if counts.iter().all(|&c| c == 0) {
                table.remove(&key);
            }
            return None;
        }
        counts[kind as usize] += 1;
        Some(Slot {
            table: self.table.clone(),
            key,
            kind,
        })
    }

    /// How many units of `kind` `key` holds.
    #[cfg(test)]
    pub(super) fn held(&self, key: K, kind: Held) -> usize {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.get(&key).map_or(0, |c| c[kind as usize])
    }

    /// Keys with anything held.
    #[cfg(test)]
    pub(super) fn keys(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K: Hash + Eq + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counts) = table.get_mut(&self.key) {
            let c = &mut counts[self.kind as usize];
            *c = c.saturating_sub(1);
            if counts.iter().all(|&c| c == 0) {
                table.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + Copy + fmt::Debug> fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slot({:?} {:?})", self.key, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_up_to_the_limit_and_give_back_on_drop() {
        let usage: Usage<u8> = Usage::default();
        let a: Vec<_> = (0..3)
            .map_while(|_| usage.try_take(1, Held::Session, 3))
            .collect();
        assert_eq!(a.len(), 3);
        assert!(
            usage.try_take(1, Held::Session, 3).is_none(),
            "at the limit"
        );
        let other = usage
            .try_take(2, Held::Session, 3)
            .expect("other keys apart");
        let port = usage.try_take(1, Held::Port, 1).expect("kinds apart");
        drop(a);
        assert_eq!(usage.held(1, Held::Session), 0);
        assert_eq!(usage.held(1, Held::Port), 1);
        drop(port);
        assert_eq!(usage.keys(), 1, "an entry holding nothing is gone");
        drop(other);
        assert!(usage.try_take(3, Held::Offer, 0).is_none());
        assert_eq!(usage.keys(), 0, "a refused take leaves nothing behind");
    }
}
