//! [`FrameWatch`]: spots a GoAway among the frames yamux writes. rust-yamux answers a protocol
//! violation by queueing a GoAway and carries on; the session socket layer
//! ([`super::session_io`]) feeds every write through this watch so that the driver learns this
//! side has said goodbye. Kept apart from the socket layer because it is a small yamux frame
//! parser of its own, with its own test, that the buffering never needs to know about.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Follows the yamux frames written to the socket, to see a GoAway among them. Costs a few
/// comparisons per write: data bodies are skipped by length, never scanned.
#[derive(Debug, Default)]
pub(super) struct FrameWatch {
    header: [u8; FRAME_HEADER],
    have: usize,
    body_left: usize,
    goaway: Arc<AtomicBool>,
}

/// yamux frame header: version, type, flags (2), stream id (4), length (4).
const FRAME_HEADER: usize = 12;
const TYPE_DATA: u8 = 0;
const TYPE_GOAWAY: u8 = 3;

impl FrameWatch {
    /// A watch that sets `goaway` once a GoAway frame has gone by.
    pub(super) fn new(goaway: Arc<AtomicBool>) -> Self {
        FrameWatch {
            goaway,
            ..FrameWatch::default()
        }
    }

    pub(super) fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEADER {
                self.have = 0;
                match self.header[1] {
                    TYPE_DATA => {
                        let len: [u8; 4] = [
                            self.header[8],
                            self.header[9],
                            self.header[10],
                            self.header[11],
                        ];
                        self.body_left = u32::from_be_bytes(len) as usize;
                    }
                    TYPE_GOAWAY => self.goaway.store(true, Ordering::Release),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goaway_is_seen_among_data_frames_whatever_the_write_sizes() {
        let mut frames = Vec::new();
        // A data frame whose body looks like a GoAway header must not count.
        let body = [0u8, TYPE_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        frames.extend([0u8, TYPE_DATA, 0, 0, 0, 0, 0, 1, 0, 0, 0, 12]);
        frames.extend(body);
        frames.extend([0u8, 1, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0]); // window update
        let mut watch = FrameWatch::default();
        for piece in frames.chunks(5) {
            watch.observe(piece);
        }
        assert!(!watch.goaway.load(Ordering::Acquire));
        watch.observe(&[0u8, TYPE_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(watch.goaway.load(Ordering::Acquire));
    }
}
