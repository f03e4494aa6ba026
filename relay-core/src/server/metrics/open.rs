//! What a task holds while the thing it counts is open: guards that count themselves out when
//! dropped. A gauge taken down by hand misses the task that ends by an error or a cancelled
//! future; one held by a guard comes down whatever way the session, visitor, offer or transfer
//! ends.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::splice::Meter;

/// What one session's visitors update. Dropping it counts the session and its tunnels closed.
#[derive(Debug)]
pub(in crate::server) struct SessionMetrics {
    pub(super) _session: Open,
    pub(super) _tunnels: Open,
    pub(in crate::server) visitors: VisitorMetrics,
    /// The parent of the session's meter: the bytes of every session with the same token.
    pub(in crate::server) bytes: Arc<Meter>,
}

/// The visitor counters of one token, resolved once per session.
#[derive(Debug, Clone, Default)]
pub(in crate::server) struct VisitorMetrics {
    pub(super) open: Gauge,
    pub(super) total: Counter,
    /// Relay-wide, not per token: `relay_visitor_stalls_total`.
    pub(super) stalled: Counter,
}

impl VisitorMetrics {
    /// Counts a visitor; it stays counted as connected until the returned value is dropped.
    pub(in crate::server) fn opened(&self) -> Open {
        self.total.inc();
        Open::new(self.open.clone(), 1)
    }

    /// Counts a visitor the kernel cut after the stall timeout.
    pub(in crate::server) fn stalled(&self) {
        self.stalled.inc();
    }
}

/// Holds a gauge up by `n` until dropped, so whatever way a task ends, it is counted out.
#[derive(Debug)]
pub(in crate::server) struct Open {
    gauge: Gauge,
    n: i64,
}

impl Open {
    pub(super) fn new(gauge: Gauge, n: i64) -> Self {
        gauge.inc_by(n);
        Open { gauge, n }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec_by(self.n);
    }
}
