//! Visitor resets on the tunnel client (protocol version 3).
//!
//! yamux 0.14 drops a stream whose write side is closed without a word to the peer, and
//! ignores the peer's later data for it, so a peer out of send credit on it would wait for
//! ever. Whichever side drops such a stream says so on the control stream instead:
//! `RelayControl::Reset` when the relay dropped one (its visitor went away after
//! half-closing), `ClientControl::Reset` when this client did. Each session keeps its
//! visitors by id, so that a reset from the relay reaches the right [`TunnelStream`], and each
//! stream knows its session, to send its own reset there.
//!
//! Streams of several sessions share one queue (a reconnecting client keeps it), and a
//! restarted relay numbers its visitors from the start again, so a visitor is known by its
//! session's connection and its id.
//!
//! [`TunnelStream`]: super::TunnelStream

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tracing::debug;

use crate::protocol::{ClientControl, MUX_MAX_STREAMS};
use crate::reset::{ResetSignal, Side};

/// Every session of one client that may reset, or be told of resets, by connection.
#[derive(Debug, Default)]
pub(super) struct Resets {
    sessions: Mutex<HashMap<u64, Arc<SessionResets>>>,
}

/// One session's visitors, and the way to its control stream.
#[derive(Debug)]
struct SessionResets {
    visitors: Mutex<HashMap<u64, Arc<ResetSignal>>>,
    to_relay: mpsc::Sender<u64>,
}

/// The session task's end: resets to send, and resets the relay sent.
#[derive(Debug)]
pub(super) struct Inbox {
    resets: Arc<Resets>,
    connection: u64,
    session: Arc<SessionResets>,
    queue: mpsc::Receiver<u64>,
}

/// What a visitor's stream holds: whether the relay reset it, and the way to reset it.
#[derive(Debug)]
pub(super) struct StreamReset {
    /// `None` when its session had already ended: nothing will come, nothing can be sent.
    session: Option<Arc<SessionResets>>,
    id: u64,
    signal: Arc<ResetSignal>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Resets {
    /// Starts keeping the visitors of the session on `connection`; they are forgotten when the
    /// inbox is dropped.
    pub(super) fn open_session(self: &Arc<Self>, connection: u64) -> Inbox {
        // Each stream leaves at most one id, and the session task takes them as fast as the
        // control stream takes frames: with room for every stream the connection may carry,
        // the queue fills only if the relay stops reading the control stream, when a reset
        // would not help anyway. A stream's drop never waits. (Room is allocated as it fills.)
        let (to_relay, queue) = mpsc::channel(MUX_MAX_STREAMS);
        let session = Arc::new(SessionResets {
            visitors: Mutex::default(),
            to_relay,
        });
        lock(&self.sessions).insert(connection, session.clone());
        Inbox {
            resets: self.clone(),
            connection,
            session,
            queue,
        }
    }

    /// Registers visitor `id` of the session on `connection`, for as long as the returned
    /// value lives.
    pub(super) fn register(&self, connection: u64, id: u64) -> StreamReset {
        let signal = Arc::new(ResetSignal::default());
        let session = lock(&self.sessions).get(&connection).cloned();
        if let Some(session) = &session {
            lock(&session.visitors).insert(id, signal.clone());
        }
        StreamReset {
            session,
            id,
            signal,
        }
    }

    /// Visitors registered now, over every session.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let sessions = lock(&self.sessions);
        sessions.values().map(|s| lock(&s.visitors).len()).sum()
    }
}

impl Inbox {
    /// The next reset to send to the relay. Cancel-safe.
    pub(super) async fn next(&mut self) -> ClientControl {
        match self.queue.recv().await {
            Some(visitor_id) => ClientControl::Reset { visitor_id },
            // This inbox holds a sender itself, so the queue never closes.
            None => std::future::pending().await,
        }
    }

    /// The relay reset visitor `id`: its stream fails from now on. An unknown id (the stream
    /// ended meanwhile) is ignored.
    pub(super) fn reset_by_relay(&self, id: u64) {
        let signal = lock(&self.session.visitors).remove(&id);
        debug!(
            visitor.id = id,
            known = signal.is_some(),
            "the relay reset a visitor"
        );
        if let Some(signal) = signal {
            signal.reset();
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut sessions = lock(&self.resets.sessions);
        if sessions
            .get(&self.connection)
            .is_some_and(|s| Arc::ptr_eq(s, &self.session))
        {
            sessions.remove(&self.connection);
        }
    }
}

impl StreamReset {
    pub(super) fn is_reset(&self) -> bool {
        self.signal.is_reset()
    }

    /// Ready once the relay reset the stream; otherwise `cx` is woken when it does.
    pub(super) fn poll_reset(&self, cx: &mut Context<'_>, side: Side) -> Poll<()> {
        self.signal.poll_reset(cx, side)
    }

    /// Tells the relay that this stream is dropped half-closed. Never waits.
    pub(super) fn tell_relay(&self) {
        let Some(session) = &self.session else { return };
        if session.to_relay.try_send(self.id).is_err() {
            debug!(
                visitor.id = self.id,
                "session gone or not writing; reset not sent"
            );
        }
    }
}

impl Drop for StreamReset {
    fn drop(&mut self) {
        let Some(session) = &self.session else { return };
        let mut visitors = lock(&session.visitors);
        // Only our own entry: a reused id (a relay restarted) may belong to a newer stream.
        if visitors
            .get(&self.id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.signal))
        {
            visitors.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn resets_reach_the_right_session_and_entries_go_with_their_streams() {
        let resets = Arc::new(Resets::default());
        let mut one = resets.open_session(1);
        let two = resets.open_session(2);
        let a = resets.register(1, 5);
        let b = resets.register(2, 5);
        let orphan = resets.register(3, 5);
        assert_eq!(resets.len(), 2);
        two.reset_by_relay(5);
        assert!(b.is_reset() && !a.is_reset() && !orphan.is_reset());
        two.reset_by_relay(5); // stale: ignored
        a.tell_relay();
        orphan.tell_relay(); // no session: nothing to do
        assert_eq!(
            one.next().now_or_never(),
            Some(ClientControl::Reset { visitor_id: 5 })
        );
        drop((a, b, orphan));
        assert_eq!(resets.len(), 0, "entries outlived their streams");
        drop((one, two));
        assert!(lock(&resets.sessions).is_empty());
    }
}
