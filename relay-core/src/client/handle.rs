//! What the listeners, streams and handles of one tunnel client share, and [`SessionHandle`]:
//! the part of it a program keeps to end the session once its listeners are gone (for example
//! after `axum::serve` returned).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::incoming::Arrivals;
use super::stream::{Hold, StreamGuard};
use super::visitor::IncomingVisitor;
use crate::ending::SessionEnd;
use crate::error::{Error, Result};

/// How long `accept` waits for the session task to record why it ended.
const LAST_WORD: Duration = Duration::from_millis(500);

/// What the listeners, streams and handles of one connection share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) arrivals: Arc<Arrivals>,
    pub(super) max_visitors: u32,
    pub(super) session_id: watch::Receiver<u64>,
    /// Why the client stopped, once it has.
    pub(super) ended: watch::Receiver<Option<SessionEnd>>,
    /// Cancelled by a shutdown, or when the last [`Hold`] is dropped: say goodbye and stop.
    pub(super) stop: CancellationToken,
    /// Per tunnel: whether it still takes visitors (the session task tells the relay).
    pub(super) accepting: watch::Sender<Vec<bool>>,
    /// One token per open stream (and per visitor not yet answered).
    pub(super) streams: TaskTracker,
}

impl Shared {
    /// Tunnel `index` takes no more visitors.
    pub(super) fn stop_accepting(&self, index: usize) {
        self.arrivals.stop(index);
        self.accepting.send_if_modified(|accepting| {
            let changed = accepting.get(index).copied().unwrap_or(false);
            if changed {
                accepting[index] = false;
            }
            changed
        });
    }

    /// The next visitor of tunnel `index`, holding the session for as long as it is open.
    /// Cancel-safe.
    pub(super) async fn next_visitor(
        &self,
        index: usize,
        hold: &Arc<Hold>,
    ) -> Result<IncomingVisitor> {
        if self.arrivals.is_stopped(index) {
            return Err(Error::SessionLost(SessionEnd::Closed));
        }
        let mut ended = self.ended.clone();
        let announced = tokio::select! {
            visitor = self.arrivals.next(index) => match visitor {
                Some(v) => v,
                None if self.arrivals.is_stopped(index) => return Err(Error::SessionLost(SessionEnd::Closed)),
                None => return Err(self.lost().await),
            },
            () = ended_signal(&mut ended) => return Err(self.lost().await),
        };
        Ok(IncomingVisitor {
            stream: announced.stream,
            visitor: announced.visitor,
            reset: announced.reset,
            guard: StreamGuard {
                _open: self.streams.token(),
                _hold: hold.clone(),
            },
        })
    }

    /// The error for a client that has stopped, with its reason.
    pub(super) async fn lost(&self) -> Error {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(LAST_WORD, ended_signal(&mut ended)).await;
        let reason = ended.borrow().clone();
        Error::SessionLost(reason.unwrap_or(SessionEnd::PeerClosed))
    }

    pub(super) async fn shutdown(&self, grace: Duration) {
        let tunnels = self.accepting.borrow().len();
        for index in 0..tunnels {
            self.stop_accepting(index);
        }
        self.streams.close();
        let _ = tokio::time::timeout(grace, self.streams.wait()).await;
        self.stop.cancel();
        self.ended().await;
    }

    pub(super) async fn ended(&self) -> SessionEnd {
        let mut ended = self.ended.clone();
        ended_signal(&mut ended).await;
        let end = ended.borrow().clone();
        end.unwrap_or(SessionEnd::Closed)
    }
}

/// Resolves once the client has recorded why it stopped. (A helper, so the watch's read guard
/// never lives across an await.)
async fn ended_signal(ended: &mut watch::Receiver<Option<SessionEnd>>) {
    let _ = ended.wait_for(Option::is_some).await;
}

/// A handle on a tunnel client's session that does not keep it up: for ending it, or learning
/// why it ended, once the listeners are out of reach (moved into `axum::serve`, say).
///
/// ```no_run
/// # async fn run(app: impl FnOnce(relay_core::TunnelListener)) -> relay_core::Result<()> {
/// use std::time::Duration;
/// use relay_core::{TunnelConfig, TunnelListener};
///
/// let listener = TunnelListener::connect("relay.example.com:8080", TunnelConfig::default()).await?;
/// let session = listener.session();
/// app(listener); // serves until its graceful shutdown, then drops the listener
/// // Wait for the streams still open, say goodbye, and wait until the relay has closed.
/// session.shutdown(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub(super) shared: Arc<Shared>,
}

impl SessionHandle {
    /// The relay's id for the current session (matches the relay's logs).
    pub fn session_id(&self) -> u64 {
        *self.shared.session_id.borrow()
    }

    /// Ends the session on purpose, for every tunnel of the connection: see
    /// [`TunnelListener::shutdown`](super::TunnelListener::shutdown).
    ///
    /// Cancel safety: dropping the future does not undo what was started (the tunnels stay
    /// closed to new visitors); the rest of the shutdown then happens when the listeners and
    /// streams are dropped.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.shutdown(grace).await
    }

    /// Resolves once the client has stopped for good, with the reason: after a shutdown, once
    /// the listeners and streams are all gone, or when a lost session could not be had back.
    /// Cancel-safe. Useful as (part of) a graceful-shutdown signal, since `axum::serve` cannot
    /// report a lost session.
    pub async fn ended(&self) -> SessionEnd {
        self.shared.ended().await
    }
}
