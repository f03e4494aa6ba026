//! Visitor resets on the relay (protocol version 3): telling the client about a visitor whose
//! stream the relay dropped half-closed, and failing the writes of a visitor the client reset.
//!
//! yamux 0.14 says nothing when a stream whose write side is closed is dropped, and ignores
//! the peer's later data for it: a client that is out of send credit on it (a download whose
//! visitor half-closed and left) would wait for ever, holding its local connection. So the
//! visitor's task, as it ends, leaves the visitor's id for the session task, which owns the
//! control stream's writes and sends `RelayControl::Reset`. The same holds the other way: a
//! client that drops such a stream sends `ClientControl::Reset`; the relay's writes on it then
//! fail (a write parked for credit at once), which ends the visitor with a reset.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tracing::debug;

use crate::protocol::{MUX_MAX_STREAMS, OLDEST_PROTOCOL_VERSION, RelayControl};
use crate::reset::ResetSignal;

/// The visitors of one session that the client may reset, and the way to tell the client.
#[derive(Debug)]
pub(super) struct Resets {
    /// Whether the client understands resets (version 3 and later).
    tells_client: bool,
    /// Visitors whose reset the session task must send. A queue of its own rather than a
    /// channel: a tokio channel allocates its first block of slots when it is made, half a KiB
    /// per session, idle sessions included; this holds nothing until a reset happens.
    to_client: Mutex<VecDeque<u64>>,
    queued: Notify,
    sent_to_client: Counter,
    visitors: Mutex<HashMap<u64, Arc<ResetSignal>>>,
    from_client: Counter,
}

/// `relay_visitor_resets_total` by direction.
#[derive(Debug, Clone, Default)]
pub(super) struct ResetCounters {
    pub(super) to_client: Counter,
    pub(super) from_client: Counter,
}

impl Resets {
    /// For a session whose client speaks `version`.
    pub(super) fn new(version: u16, counters: ResetCounters) -> Resets {
        Resets {
            tells_client: version > OLDEST_PROTOCOL_VERSION,
            to_client: Mutex::default(),
            queued: Notify::new(),
            sent_to_client: counters.to_client,
            visitors: Mutex::default(),
            from_client: counters.from_client,
        }
    }

    fn visitors(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ResetSignal>>> {
        self.visitors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets the client reset visitor `id` until the returned guard is dropped.
    pub(super) fn register(&self, id: u64) -> Registered<'_> {
        let signal = Arc::new(ResetSignal::default());
        self.visitors().insert(id, signal.clone());
        Registered {
            resets: self,
            id,
            signal,
        }
    }

    /// The client reset visitor `id`: writes on its stream fail from now on. An id no longer
    /// known (the visitor ended meanwhile) is ignored.
    pub(super) fn reset_by_client(&self, id: u64) {
        let signal = self.visitors().remove(&id);
        debug!(
            visitor.id = id,
            known = signal.is_some(),
            "the client reset a visitor"
        );
        if let Some(signal) = signal {
            self.from_client.inc();
            signal.reset();
        }
    }

    /// The visitor's task dropped its stream half-closed: the client must be told. Never waits.
    pub(super) fn tell_client(&self, id: u64) {
        if !self.tells_client {
            return;
        }
        // Each visitor leaves at most one id, and the session task takes them as fast as the
        // control stream takes frames, so with room for every stream a session may carry at
        // once (visitors per tunnel are capped below that) the queue fills only when the
        // client stops reading its control stream: it would not act on a reset then anyway,
        // and a visitor task must never wait for it.
        let mut queue = self
            .to_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= MUX_MAX_STREAMS {
            debug!(
                visitor.id = id,
                "the client reads no control frames; reset not sent"
            );
            return;
        }
        queue.push_back(id);
        drop(queue);
        self.queued.notify_one();
    }

    /// The next reset the session task must send; never resolves for a version-2 client.
    /// Cancel-safe: an id is taken only when it is returned.
    pub(super) async fn next_for_client(&self) -> RelayControl {
        if !self.tells_client {
            return std::future::pending().await;
        }
        loop {
            let queued = self.queued.notified();
            let next = self
                .to_client
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(visitor_id) = next {
                self.sent_to_client.inc();
                return RelayControl::Reset { visitor_id };
            }
            queued.await;
        }
    }

    /// Visitors registered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.visitors().len()
    }
}

/// A visitor the client may reset; unregistered when dropped.
#[derive(Debug)]
pub(super) struct Registered<'a> {
    resets: &'a Resets,
    id: u64,
    signal: Arc<ResetSignal>,
}

impl Registered<'_> {
    /// What the visitor's stream watches.
    pub(super) fn signal(&self) -> Arc<ResetSignal> {
        self.signal.clone()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.resets.visitors().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_version_2_session_never_gets_a_reset_and_entries_go_with_their_visitor() {
        let resets = Resets::new(2, ResetCounters::default());
        resets.tell_client(1);
        let next = futures::FutureExt::now_or_never(resets.next_for_client());
        assert!(next.is_none(), "nothing for a version-2 client");

        let resets = Resets::new(3, ResetCounters::default());
        {
            let _one = resets.register(1);
            let _two = resets.register(2);
            assert_eq!(resets.len(), 2);
        }
        assert_eq!(resets.len(), 0, "registrations outlived their visitors");
        resets.tell_client(7);
        assert_eq!(
            resets.next_for_client().await,
            RelayControl::Reset { visitor_id: 7 }
        );
        resets.reset_by_client(99); // unknown: ignored
    }
}
