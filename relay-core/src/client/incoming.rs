//! Visitors on their way to the listeners: one queue of substreams for all the tunnels of a
//! client (and for all its sessions, across reconnects), read by whichever listener is
//! accepting, and routed to the listener of the visitor's tunnel.
//!
//! No task of its own: the listener that calls `accept` reads the visitor headers (they arrive
//! with a stream's first frame), so a visitor costs no extra task or wake-up. One accepting
//! listener at a time holds the reader; a visitor for another tunnel is queued for that
//! tunnel's listener and its accept is woken.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::resets::{Resets, StreamReset};
use super::visitor::{Visitor, refuse};
use crate::frame::FramedConn;
use crate::mux::Substream;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, VisitorHeader};

/// What a refused visitor's relay logs.
const NOT_ACCEPTING: &str = "the tunnel no longer accepts visitors";

/// A visitor whose header arrived, not yet handed to a listener.
#[derive(Debug)]
pub(super) struct Announced {
    pub(super) stream: Substream,
    pub(super) visitor: Visitor,
    pub(super) reset: StreamReset,
}

/// A visitor with the index of the tunnel it came through.
type Routed = (usize, Announced);

/// Substreams not yet known to belong to any tunnel, and their headers being read.
struct Reader {
    streams: mpsc::Receiver<Substream>,
    closed: bool,
    headers: FuturesUnordered<BoxFuture<'static, Option<Routed>>>,
    header_timeout: Duration,
    resets: Arc<Resets>,
}

/// The visitors of every tunnel of one client.
pub(super) struct Arrivals {
    reader: tokio::sync::Mutex<Reader>,
    ready: Vec<Mutex<VecDeque<Announced>>>,
    wake: Vec<Notify>,
    /// Cancelled for a tunnel that takes no more visitors.
    stopped: Vec<CancellationToken>,
    backlog: usize,
}

impl std::fmt::Debug for Arrivals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrivals")
            .field("tunnels", &self.ready.len())
            .finish()
    }
}

impl Arrivals {
    /// Visitors for `tunnels` tunnels arrive on `streams` (and are registered in `resets`); at
    /// most `backlog` may wait per tunnel, like connections in a full listen backlog (more are
    /// reset).
    pub(super) fn new(
        (streams, resets): (mpsc::Receiver<Substream>, Arc<Resets>),
        tunnels: usize,
        backlog: usize,
        header_timeout: Duration,
    ) -> Self {
        Arrivals {
            reader: tokio::sync::Mutex::new(Reader {
                streams,
                closed: false,
                headers: FuturesUnordered::new(),
                header_timeout,
                resets,
            }),
            ready: (0..tunnels).map(|_| Mutex::default()).collect(),
            wake: (0..tunnels).map(|_| Notify::new()).collect(),
            stopped: (0..tunnels).map(|_| CancellationToken::new()).collect(),
            backlog: backlog.max(1),
        }
    }

    /// Whether tunnel `tunnel` has stopped taking visitors.
    pub(super) fn is_stopped(&self, tunnel: usize) -> bool {
        self.stopped.get(tunnel).is_none_or(|s| s.is_cancelled())
    }

    /// Tunnel `tunnel` takes no more visitors: those queued are refused, a pending `next` for
    /// it returns `None`. Once every tunnel has stopped, a task refuses what still arrives.
    pub(super) fn stop(self: &Arc<Self>, tunnel: usize) {
        let Some(stopped) = self.stopped.get(tunnel) else {
            return;
        };
        if stopped.is_cancelled() {
            return;
        }
        stopped.cancel();
        let queued = std::mem::take(&mut *self.queue(tunnel));
        for announced in queued {
            refuse_later(announced);
        }
        if !self.stopped.iter().all(CancellationToken::is_cancelled) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let arrivals = Arc::clone(self);
            runtime.spawn(async move {
                let mut reader = arrivals.reader.lock().await;
                while let Some((_, announced)) = reader.next().await {
                    refuse_later(announced);
                }
            });
        }
    }

    /// The next visitor of tunnel `tunnel`; `None` once no more can come, or the tunnel has
    /// stopped. Cancel-safe.
    pub(super) async fn next(&self, tunnel: usize) -> Option<Announced> {
        let stopped = self.stopped.get(tunnel)?;
        let visitor = tokio::select! {
            biased;
            () = stopped.cancelled() => None,
            visitor = self.next_until_stopped(tunnel) => visitor,
        };
        match visitor {
            Some(v) if stopped.is_cancelled() => {
                refuse_later(v);
                None
            }
            v => v,
        }
    }

    async fn next_until_stopped(&self, tunnel: usize) -> Option<Announced> {
        loop {
            if let Some(v) = self.pop(tunnel) {
                return Some(v);
            }
            tokio::select! {
                biased;
                () = self.wake[tunnel].notified() => continue,
                mut reader = self.reader.lock() => loop {
                    // Another reader may have queued one for us before we took over.
                    if let Some(v) = self.pop(tunnel) {
                        return Some(v);
                    }
                    match reader.next().await? {
                        (t, v) if t == tunnel => return Some(v),
                        (t, v) => self.push(t, v),
                    }
                },
            }
        }
    }

    fn queue(&self, tunnel: usize) -> std::sync::MutexGuard<'_, VecDeque<Announced>> {
        self.ready[tunnel]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn pop(&self, tunnel: usize) -> Option<Announced> {
        self.queue(tunnel).pop_front()
    }

    fn push(&self, tunnel: usize, visitor: Announced) {
        if tunnel >= self.ready.len() {
            debug!(
                tunnel,
                "visitor for a tunnel this client did not ask for; resetting it"
            );
            return;
        }
        let mut queue = self.queue(tunnel);
        // Checked under the queue's lock, which `stop` takes after setting the flag: a
        // visitor is either refused here or drained there.
        if self.is_stopped(tunnel) {
            drop(queue);
            return refuse_later(visitor);
        }
        if queue.len() >= self.backlog {
            debug!(tunnel, "accept backlog full; resetting visitor");
            return;
        }
        queue.push_back(visitor);
        drop(queue);
        self.wake[tunnel].notify_one();
    }
}

impl Reader {
    /// The next visitor whose header arrived, of any tunnel; `None` once the queue is closed
    /// and drained. Cancel-safe.
    async fn next(&mut self) -> Option<Routed> {
        loop {
            if self.closed && self.headers.is_empty() {
                return None;
            }
            tokio::select! {
                Some(visitor) = self.headers.next(), if !self.headers.is_empty() => {
                    if visitor.is_some() {
                        return visitor;
                    }
                }
                stream = self.streams.recv(), if !self.closed => match stream {
                    Some(stream) => self.headers.push(read_header(stream, self.header_timeout, self.resets.clone()).boxed()),
                    None => self.closed = true,
                },
            }
        }
    }
}

/// Reads a new substream's visitor header; `None` (after logging why) when it has none.
async fn read_header(stream: Substream, timeout: Duration, resets: Arc<Resets>) -> Option<Routed> {
    // Exact reads: the visitor's first bytes follow the header in the same stream.
    let mut conn = FramedConn::exact(stream, DEFAULT_MAX_FRAME_LEN);
    let header = tokio::time::timeout(timeout, conn.read_frame::<VisitorHeader>()).await;
    let (stream, _) = conn.into_parts();
    match header {
        Ok(Ok(h)) => Some((
            usize::from(h.tunnel),
            Announced {
                reset: resets.register(stream.connection_id(), h.visitor_id),
                stream,
                visitor: Visitor {
                    id: h.visitor_id,
                    addr: h.peer_addr,
                    relay_addr: h.relay_addr,
                },
            },
        )),
        Ok(Err(e)) => {
            debug!(error = %e, "substream without a valid visitor header");
            None
        }
        Err(_) => {
            debug!("substream sent no visitor header in time");
            None
        }
    }
}

/// Refuses a visitor of a tunnel that stopped accepting, without waiting for the answer to go
/// out. (Without a runtime, dropping the stream resets the visitor instead.)
fn refuse_later(announced: Announced) {
    debug!(
        visitor.id = announced.visitor.id,
        "refusing visitor: tunnel not accepting"
    );
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(refuse(announced.stream, NOT_ACCEPTING));
    }
}
