//! Where the driver puts the streams the peer opens.
//!
//! A tokio `mpsc` channel allocates its first block of 32 slots when it is made, whatever its
//! bound. With `Substream`s in the slots that is 3.6 KiB per connection, paid by every idle
//! relay session although its client opens one stream in its life. The queue of [`super::Mux`]
//! therefore carries boxes (8 bytes a slot): one small allocation per inbound stream instead,
//! never per frame.

use tokio::sync::mpsc;

use super::Substream;

/// A queue the driver offers inbound streams to, without waiting: a stream that finds it full
/// or closed is dropped, which resets it.
pub(super) trait Offer: Send + Sync + 'static {
    fn offer(&self, stream: Substream);
}

impl Offer for mpsc::Sender<Substream> {
    fn offer(&self, stream: Substream) {
        let _ = self.try_send(stream);
    }
}

impl Offer for mpsc::Sender<Box<Substream>> {
    fn offer(&self, stream: Substream) {
        // Checked first, so a full queue costs no allocation.
        if let Ok(slot) = self.try_reserve() {
            slot.send(Box::new(stream));
        }
    }
}

/// Streams the peer opened, in the order it opened them.
#[derive(Debug)]
pub struct Inbound {
    queue: mpsc::Receiver<Box<Substream>>,
}

impl Inbound {
    pub(super) fn channel(backlog: usize) -> (mpsc::Sender<Box<Substream>>, Self) {
        let (tx, queue) = mpsc::channel(backlog.max(1));
        (tx, Inbound { queue })
    }

    /// The next stream, or `None` once the connection has ended and every stream was taken.
    pub async fn recv(&mut self) -> Option<Substream> {
        self.queue.recv().await.map(|stream| *stream)
    }
}
