//! Failures per source address group in a time window: wrong tokens (answered ever more
//! slowly) and wrong transfer codes (refused past a limit). Only failures count, so an office
//! behind one NAT address that uses the relay a lot is never slowed down by its successes.
//!
//! The table is bounded: when it is full, windows that have passed are dropped first, and if
//! that frees nothing, the older half of the windows. Counts are never reset all at once, so
//! flooding the table with new addresses cannot wipe out the count of the address under
//! watch unless that address has been quiet for longer than half of the others.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::per_addr::AddrGroup;

/// Address groups tracked at once.
pub(super) const MAX_TRACKED: usize = 65_536;

/// Failure counts per address group, each in its own window.
#[derive(Debug)]
pub(super) struct Strikes {
    window: Duration,
    max_tracked: usize,
    entries: Mutex<HashMap<AddrGroup, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    /// The latest failure: a full table forgets the groups quiet the longest.
    last: Instant,
    count: u32,
}

impl Strikes {
    pub(super) fn new(window: Duration) -> Self {
        Self::bounded(window, MAX_TRACKED)
    }

    fn bounded(window: Duration, max_tracked: usize) -> Self {
        Strikes {
            window,
            max_tracked: max_tracked.max(2),
            entries: Mutex::default(),
        }
    }

    /// Failures of `group` in its current window.
    pub(super) fn count(&self, group: AddrGroup) -> u32 {
        let now = Instant::now();
        let entries = self.lock();
        entries
            .get(&group)
            .filter(|w| now.duration_since(w.start) < self.window)
            .map_or(0, |w| w.count)
    }

    /// Counts a failure of `group`; returns its failures in the current window, this one
    /// included.
    pub(super) fn record(&self, group: AddrGroup) -> u32 {
        let now = Instant::now();
        let mut entries = self.lock();
        if !entries.contains_key(&group) && entries.len() >= self.max_tracked {
            self.make_room(&mut entries, now);
        }
        let fresh = Window {
            start: now,
            last: now,
            count: 0,
        };
        let w = entries.entry(group).or_insert(fresh);
        if now.duration_since(w.start) >= self.window {
            *w = fresh;
        }
        w.last = now;
        w.count = w.count.saturating_add(1);
        w.count
    }

    /// Drops passed windows, or else the half quiet the longest.
    fn make_room(&self, entries: &mut HashMap<AddrGroup, Window>, now: Instant) {
        entries.retain(|_, w| now.duration_since(w.start) < self.window);
        if entries.len() < self.max_tracked {
            return;
        }
        let mut lasts: Vec<Instant> = entries.values().map(|w| w.last).collect();
        let middle = lasts.len() / 2;
        let (_, median, _) = lasts.select_nth_unstable(middle);
        let median = *median;
        entries.retain(|_, w| w.last > median);
        // Every failure came at the same instant: keep none rather than stay full.
        if entries.len() >= self.max_tracked {
            entries.clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AddrGroup, Window>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn group(n: u32) -> AddrGroup {
        AddrGroup::from(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[tokio::test(start_paused = true)]
    async fn counts_per_window_and_per_group() {
        let s = Strikes::new(Duration::from_secs(60));
        assert_eq!(s.record(group(1)), 1);
        assert_eq!(s.record(group(1)), 2);
        assert_eq!(s.count(group(2)), 0, "groups apart");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(s.count(group(1)), 0, "the window passed");
        assert_eq!(s.record(group(1)), 1, "a new window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_forgets_the_quietest_half_not_everyone() {
        let s = Strikes::bounded(Duration::from_secs(60), 100);
        for _ in 0..5 {
            s.record(group(0));
        }
        tokio::time::advance(Duration::from_millis(1)).await;
        // The watched address keeps failing while a flood of new addresses fills the table.
        for n in 1..1000u32 {
            s.record(group(n));
            tokio::time::advance(Duration::from_millis(1)).await;
            if n % 10 == 0 {
                s.record(group(0));
            }
        }
        assert!(s.lock().len() <= 100, "bounded");
        assert!(
            s.count(group(0)) >= 5,
            "a recently failing address is not forgotten: {}",
            s.count(group(0))
        );
    }
}
