//! What a tunnel client (`echoserver`, `expose`) logs about its visitors.
//!
//! One line per visitor at info costs a formatted, written line per connection, and under a
//! flood of visitors (or of refusals while the local server is down) the log is the flood. So
//! per-visitor lines are `debug!` (`RUST_LOG=debug`), and at info a summary line every
//! [`SUMMARY_INTERVAL`] says how many visitors opened, closed and were refused, how many are
//! open now, and the bytes each way of those that closed; quiet periods print nothing. Of the
//! refusals in a period only the first is logged on its own, at warn, with its cause.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the summary line is due (it is skipped when nothing happened).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Counts a tunnel client's visitors for the periodic summary. Cheap to clone; every clone
/// counts into the same totals.
#[derive(Debug, Clone, Default)]
pub struct VisitorStats {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    // Since the last summary.
    opened: AtomicU64,
    closed: AtomicU64,
    refused: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Whether this period's first refusal was already logged at warn.
    refusal_logged: AtomicBool,
    // Since the start, for the number open now.
    opened_ever: AtomicU64,
    closed_ever: AtomicU64,
}

/// One period's figures, as the summary line shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Visitors that connected in the period.
    pub opened: u64,
    /// Visitors that ended in the period (closed or reset).
    pub closed: u64,
    /// Visitors turned away in the period.
    pub refused: u64,
    /// Visitors connected right now.
    pub open: u64,
    /// Bytes from visitors to the local side, counted when a visitor ends.
    pub bytes_in: u64,
    /// Bytes from the local side to visitors, counted when a visitor ends.
    pub bytes_out: u64,
}

impl VisitorStats {
    /// No visitors yet.
    pub fn new() -> VisitorStats {
        VisitorStats::default()
    }

    /// A visitor is connected and being served (call inside its span).
    pub fn opened(&self) {
        self.counts.opened.fetch_add(1, Ordering::Relaxed);
        self.counts.opened_ever.fetch_add(1, Ordering::Relaxed);
        debug!("visitor connected");
    }

    /// A visitor [`opened`](Self::opened) earlier ended normally, after `bytes_in` bytes
    /// from it and `bytes_out` to it.
    pub fn closed(&self, bytes_in: u64, bytes_out: u64) {
        self.end(bytes_in, bytes_out);
        debug!(bytes_in, bytes_out, "visitor closed");
    }

    /// A visitor [`opened`](Self::opened) earlier ended with an error (typically a reset),
    /// after `meter` counted its bytes.
    pub fn reset(&self, error: impl Display, meter: &relay_core::splice::Meter) {
        let (bytes_in, bytes_out) = (meter.a_to_b(), meter.b_to_a());
        self.end(bytes_in, bytes_out);
        debug!(error = %error, bytes_in, bytes_out, "visitor reset");
    }

    /// A visitor was turned away because of `cause`. The first refusal of a period is logged
    /// at warn; the rest only at debug, and all are counted in the summary.
    pub fn refused(&self, cause: impl Display) {
        if self.count_refusal() {
            warn!(
                cause = %cause,
                "refusing visitor (more refusals are counted in the periodic summary)"
            );
        } else {
            debug!(cause = %cause, "refusing visitor");
        }
    }

    /// Counts a refusal; true when it is the first of the period.
    fn count_refusal(&self) -> bool {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        !self.counts.refusal_logged.swap(true, Ordering::Relaxed)
    }

    fn end(&self, bytes_in: u64, bytes_out: u64) {
        let c = &self.counts;
        c.closed.fetch_add(1, Ordering::Relaxed);
        c.closed_ever.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        c.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// The figures since the last call, and starts a new period; `None` when no visitor
    /// opened, closed or was refused meanwhile.
    pub fn take_summary(&self) -> Option<Summary> {
        let c = &self.counts;
        let opened = c.opened.swap(0, Ordering::Relaxed);
        let closed = c.closed.swap(0, Ordering::Relaxed);
        let refused = c.refused.swap(0, Ordering::Relaxed);
        let bytes_in = c.bytes_in.swap(0, Ordering::Relaxed);
        let bytes_out = c.bytes_out.swap(0, Ordering::Relaxed);
        c.refusal_logged.store(false, Ordering::Relaxed);
        if opened == 0 && closed == 0 && refused == 0 {
            return None;
        }
        // Read in this order, a visitor that ends in between can only make `open` too high by
        // one for a moment, never wrap below zero.
        let closed_ever = c.closed_ever.load(Ordering::Relaxed);
        let opened_ever = c.opened_ever.load(Ordering::Relaxed);
        Some(Summary {
            opened,
            closed,
            refused,
            open: opened_ever.saturating_sub(closed_ever),
            bytes_in,
            bytes_out,
        })
    }

    /// Logs the summary line at info, if anything happened since the last one.
    pub fn log_summary(&self) {
        if let Some(s) = self.take_summary() {
            info!(
                opened = s.opened,
                closed = s.closed,
                refused = s.refused,
                open = s.open,
                bytes_in = s.bytes_in,
                bytes_out = s.bytes_out,
                "visitors since the last summary"
            );
        }
    }

    /// Starts logging a summary every [`SUMMARY_INTERVAL`] on the current runtime, until
    /// [`SummaryTask::stop`].
    pub fn spawn_summaries(&self) -> SummaryTask {
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.clone().log_summaries(SUMMARY_INTERVAL, stop.clone()));
        SummaryTask { stop, task }
    }

    /// Logs a summary every `period` until `stop` is cancelled, then a last one, so the final
    /// minutes before a shutdown are not lost.
    pub async fn log_summaries(self, period: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.log_summary(),
                () = stop.cancelled() => break,
            }
        }
        self.log_summary();
    }
}

/// The task [`VisitorStats::spawn_summaries`] started.
#[derive(Debug)]
pub struct SummaryTask {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SummaryTask {
    /// Logs the last summary and ends the task (call once the visitors are drained).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_sums_up_what_happened_in_it() {
        let stats = VisitorStats::new();
        assert_eq!(stats.take_summary(), None, "nothing happened yet");
        for _ in 0..3 {
            stats.opened();
        }
        stats.closed(100, 7);
        stats.reset("connection reset", &relay_core::splice::Meter::new());
        stats.closed(1, 2);
        stats.opened();
        assert_eq!(
            stats.take_summary(),
            Some(Summary {
                opened: 4,
                closed: 3,
                refused: 0,
                open: 1,
                bytes_in: 101,
                bytes_out: 9,
            })
        );
        // A quiet period prints nothing, even with a visitor still open.
        assert_eq!(stats.take_summary(), None);
        stats.clone().closed(5, 5);
        let next = stats.take_summary().expect("a close happened");
        assert_eq!((next.closed, next.open, next.bytes_in), (1, 0, 5));
    }

    #[test]
    fn only_the_first_refusal_of_a_period_stands_alone() {
        let stats = VisitorStats::new();
        assert!(stats.count_refusal(), "the first refusal is logged");
        for _ in 0..999 {
            assert!(
                !stats.count_refusal(),
                "a later refusal was logged on its own"
            );
        }
        let summary = stats.take_summary().expect("refusals happened");
        assert_eq!((summary.refused, summary.open), (1000, 0));
        // A new period: its first refusal is news again.
        assert!(stats.count_refusal());
    }

    #[tokio::test(start_paused = true)]
    async fn summaries_run_until_stopped_and_end_with_one_more() {
        let stats = VisitorStats::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(stats.clone().log_summaries(SUMMARY_INTERVAL, stop.clone()));
        stats.opened();
        tokio::time::sleep(SUMMARY_INTERVAL + Duration::from_secs(1)).await;
        assert_eq!(stats.take_summary(), None, "the tick took the period");
        stats.refused("down");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops when told")
            .expect("task");
        assert_eq!(stats.take_summary(), None, "the last summary took the rest");
    }
}
