//! Liveness: the one place that decides a peer is gone.
//!
//! rust-yamux has no keepalive, and a TCP connection through NAT can die without a packet, so
//! each side of a session (and of a waiting offer) watches for the other's frames. A
//! [`Liveness`] knows the interval, the tolerance and when the peer was last heard; its
//! [`beat`](Liveness::beat) says when to send a ping and when the silence has lasted too long.
//!
//! Its own timer also tells when *this* process was not running (stopped with SIGSTOP, a laptop
//! asleep): a beat that comes far later than scheduled means the silence was ours, so the peer
//! gets a fresh window instead of being declared gone, and an ending can say what happened.

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::HEARTBEAT_TOLERANCE;

/// Shortest interval accepted, whatever a relay announces: a hostile or misconfigured relay
/// must not make its clients spin.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// What to do now that a beat is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Time to send a ping (a side that only answers ignores this).
    Ping,
    /// Nothing heard from the peer for this long: it is gone.
    Gone {
        /// How long the peer has been silent.
        silent_for: Duration,
    },
}

/// Interval, tolerance and last-heard time of one peer.
#[derive(Debug)]
pub struct Liveness {
    interval: Duration,
    tolerance: u32,
    last_heard: Instant,
    next_beat: Instant,
    /// The longest time this process was seen not running, if ever.
    stalled: Option<Duration>,
}

impl Liveness {
    /// Watches a peer that must be heard at least once per `interval` × [`HEARTBEAT_TOLERANCE`].
    pub fn new(interval: Duration) -> Self {
        let interval = interval.max(MIN_HEARTBEAT);
        let now = Instant::now();
        Liveness {
            interval,
            tolerance: HEARTBEAT_TOLERANCE,
            last_heard: now,
            next_beat: now + interval,
            stalled: None,
        }
    }

    /// The interval between beats.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long the peer may stay silent before it counts as gone.
    pub fn silence_limit(&self) -> Duration {
        self.interval * self.tolerance
    }

    /// The peer was just heard from (any frame counts).
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Waits for the next beat. Cancel-safe: dropping it loses nothing.
    pub async fn beat(&mut self) -> Beat {
        tokio::time::sleep_until(self.next_beat).await;
        let now = Instant::now();
        let late = now - self.next_beat;
        self.next_beat = now + self.interval;
        if late > self.interval {
            // We were not running: the peer's silence is (also) ours. Ping, and give it time.
            self.stalled = Some(self.stalled.map_or(late, |s| s.max(late)));
            self.last_heard = now;
            return Beat::Ping;
        }
        let silent_for = now - self.last_heard;
        if silent_for > self.silence_limit() {
            Beat::Gone { silent_for }
        } else {
            Beat::Ping
        }
    }

    /// How long this process had stopped running, if it has: seen from a beat that came late,
    /// or from one overdue right now (the peer's goodbye may be noticed before the late timer).
    pub fn stalled(&self) -> Option<Duration> {
        let overdue = Instant::now().saturating_duration_since(self.next_beat);
        if overdue > self.interval {
            return Some(self.stalled.map_or(overdue, |s| s.max(overdue)));
        }
        self.stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_gone_after_the_tolerance() {
        let mut peer = Liveness::new(SECOND);
        let start = Instant::now();
        for _ in 0..HEARTBEAT_TOLERANCE {
            assert_eq!(peer.beat().await, Beat::Ping);
        }
        let Beat::Gone { silent_for } = peer.beat().await else {
            panic!("still alive after {:?} of silence", start.elapsed());
        };
        assert_eq!(silent_for, SECOND * (HEARTBEAT_TOLERANCE + 1));
        assert!(peer.stalled().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_stays_alive() {
        let mut peer = Liveness::new(SECOND);
        for _ in 0..100 {
            assert_eq!(peer.beat().await, Beat::Ping);
            peer.heard();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn our_own_stall_is_not_the_peers_silence() {
        let mut peer = Liveness::new(SECOND);
        assert_eq!(peer.beat().await, Beat::Ping);
        // The process stops for a minute: no timer runs meanwhile.
        tokio::time::advance(60 * SECOND).await;
        assert!(peer.stalled().is_some_and(|s| s >= 59 * SECOND));
        assert_eq!(
            peer.beat().await,
            Beat::Ping,
            "a fresh window after the stall"
        );
        assert!(peer.stalled().is_some_and(|s| s >= 59 * SECOND));
        // Then an ordinary silence ends it as usual.
        let mut beats = 0;
        while peer.beat().await == Beat::Ping {
            beats += 1;
            assert!(beats <= HEARTBEAT_TOLERANCE, "never declared gone");
        }
    }

    #[test]
    fn intervals_are_clamped() {
        let l = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(async { Liveness::new(Duration::ZERO) });
        assert_eq!(l.interval(), MIN_HEARTBEAT);
        assert_eq!(l.silence_limit(), MIN_HEARTBEAT * HEARTBEAT_TOLERANCE);
    }
}
