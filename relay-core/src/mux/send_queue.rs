//! [`SendQueue`]: how many data bytes a session's streams have handed to yamux and the socket
//! has not yet taken, shared by all its streams, with a cap.
//!
//! yamux lets every stream queue up to its whole send window (256 KiB and more) in frames
//! waiting for the connection's one writer. With many busy streams that is megabytes of frames
//! copied in, then written out long after, by which time they have left the CPU cache: the
//! sending side's CPU per byte grew with the number of streams. Capping the bytes queued across
//! the session keeps them few and warm; a stream that finds the queue full waits until the
//! driver has written some out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Waker};

/// Most data bytes a session's streams may have queued towards the socket. Several full
/// frames, so the socket never runs dry while writers are woken.
pub const SEND_QUEUE_LIMIT: usize = 1024 * 1024;

/// The session-wide count of queued data bytes and the streams waiting for room.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    queued: AtomicUsize,
    waiting: Mutex<Vec<Waker>>,
    /// The connection has ended: nothing drains the queue any more, so nobody waits for it.
    closed: AtomicBool,
}

impl SendQueue {
    /// Whether a stream may queue more now; if not, `cx` is woken once it may.
    pub(super) fn poll_room(&self, cx: &mut Context<'_>) -> bool {
        if self.has_room() {
            return true;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: the driver may have drained it meanwhile, and it wakes
        // the waiting list under the same lock.
        if self.has_room() {
            return true;
        }
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        false
    }

    fn has_room(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || self.queued.load(Ordering::Acquire) < SEND_QUEUE_LIMIT
    }

    /// A stream handed `n` data bytes to yamux.
    pub(super) fn queued(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::AcqRel);
    }

    /// The socket layer took `n` data bytes.
    pub(super) fn sent(&self, n: usize) {
        let before = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            })
            .unwrap_or(0);
        if before >= SEND_QUEUE_LIMIT && before.saturating_sub(n) < SEND_QUEUE_LIMIT {
            self.wake_all();
        }
    }

    /// The connection ended: wake everyone, and let every later write through (to fail).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for w in waiting {
            w.wake();
        }
    }
}
