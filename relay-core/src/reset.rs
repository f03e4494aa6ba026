//! [`ResetSignal`]: how a session's control stream tells one visitor's stream that the peer
//! reset it (protocol version 3, `RelayControl::Reset` / `ClientControl::Reset`).
//!
//! yamux 0.14 drops a stream whose write side is closed without telling the peer, and ignores
//! the peer's later frames for it, so a peer out of send credit on that stream would wait for
//! ever. The side that dropped the stream says so on the control stream instead; the signal
//! carries that word to whoever holds the other end, and wakes it wherever it is parked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// Set once, when the peer has reset the stream; wakes the reader and the writer parked on it
/// (they may be two tasks, as with `tokio::io::split`).
#[derive(Debug, Default)]
pub(crate) struct ResetSignal {
    reset: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

/// Which waker a poll registers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    Read,
    Write,
}

impl ResetSignal {
    /// Marks the stream reset and wakes whoever waits on it.
    pub(crate) fn reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    pub(crate) fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    /// Ready once the stream is reset; otherwise `cx` is woken when it is. Registering before
    /// the second look means a reset between the two is never missed.
    pub(crate) fn poll_reset(&self, cx: &mut Context<'_>, side: Side) -> Poll<()> {
        if self.is_reset() {
            return Poll::Ready(());
        }
        match side {
            Side::Read => self.reader.register(cx.waker()),
            Side::Write => self.writer.register(cx.waker()),
        }
        if self.is_reset() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_parked_waiter_is_woken_by_the_reset() {
        let signal = Arc::new(ResetSignal::default());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { poll_fn(|cx| signal.poll_reset(cx, Side::Write)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        signal.reset();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("join");
        assert!(signal.is_reset());
    }
}
