//! Visitors on their way to the listeners: one queue of substreams for all the tunnels of a
//! client (and for all its sessions, across reconnects), read by whichever listener is
//! accepting, and routed to the listener of the visitor's tunnel.
//!
//! No task of its own: the listener that calls `accept` reads the visitor headers (they arrive
//! with a stream's first frame), so a visitor costs no extra task or wake-up. One accepting
//! listener at a time holds the reader; a visitor for another tunnel is queued for that
//! tunnel's listener and its accept is woken.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use super::visitor::{IncomingVisitor, Visitor};
use crate::frame::FramedConn;
use crate::mux::Substream;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, VisitorHeader};

/// A visitor with the index of the tunnel it came through.
type Routed = (usize, IncomingVisitor);

/// Substreams not yet known to belong to any tunnel, and their headers being read.
struct Reader {
    streams: mpsc::Receiver<Substream>,
    closed: bool,
    headers: FuturesUnordered<BoxFuture<'static, Option<Routed>>>,
    header_timeout: Duration,
}

/// The visitors of every tunnel of one client.
pub(super) struct Incoming {
    reader: tokio::sync::Mutex<Reader>,
    ready: Vec<Mutex<VecDeque<IncomingVisitor>>>,
    wake: Vec<Notify>,
    backlog: usize,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("tunnels", &self.ready.len())
            .finish()
    }
}

impl Incoming {
    /// Visitors for `tunnels` tunnels arrive on `streams`; at most `backlog` may wait per
    /// tunnel, like connections in a full listen backlog (more are reset).
    pub(super) fn new(
        streams: mpsc::Receiver<Substream>,
        tunnels: usize,
        backlog: usize,
        header_timeout: Duration,
    ) -> Self {
        Incoming {
            reader: tokio::sync::Mutex::new(Reader {
                streams,
                closed: false,
                headers: FuturesUnordered::new(),
                header_timeout,
            }),
            ready: (0..tunnels).map(|_| Mutex::default()).collect(),
            wake: (0..tunnels).map(|_| Notify::new()).collect(),
            backlog: backlog.max(1),
        }
    }

    /// The next visitor of tunnel `tunnel`; `None` once no more can come. Cancel-safe.
    pub(super) async fn next(&self, tunnel: usize) -> Option<IncomingVisitor> {
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

    fn pop(&self, tunnel: usize) -> Option<IncomingVisitor> {
        self.ready[tunnel]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    fn push(&self, tunnel: usize, visitor: IncomingVisitor) {
        let Some(queue) = self.ready.get(tunnel) else {
            debug!(
                tunnel,
                "visitor for a tunnel this client did not ask for; resetting it"
            );
            return;
        };
        let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
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
                    Some(stream) => self.headers.push(read_header(stream, self.header_timeout).boxed()),
                    None => self.closed = true,
                },
            }
        }
    }
}

/// Reads a new substream's visitor header; `None` (after logging why) when it has none.
async fn read_header(stream: Substream, timeout: Duration) -> Option<Routed> {
    // Exact reads: the visitor's first bytes follow the header in the same stream.
    let mut conn = FramedConn::exact(stream, DEFAULT_MAX_FRAME_LEN);
    let header = tokio::time::timeout(timeout, conn.read_frame::<VisitorHeader>()).await;
    let (stream, _) = conn.into_parts();
    match header {
        Ok(Ok(h)) => Some((
            usize::from(h.tunnel),
            IncomingVisitor {
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
