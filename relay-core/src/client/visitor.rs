//! A visitor as the tunnel client sees it: announced by the relay, then accepted or refused.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::resets::StreamReset;
use super::stream::{StreamGuard, TunnelStream};
use crate::codec;
use crate::mux::Substream;
use crate::protocol::VisitorReply;

/// Longest refusal reason sent to the relay; longer ones are cut (the frame limit is small).
const MAX_REASON_LEN: usize = 512;

/// Who connected to the tunnel's public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visitor {
    /// The relay's id for this visitor (matches the relay's logs).
    pub id: u64,
    /// The address the visitor connected from, as the relay saw it.
    pub addr: SocketAddr,
    /// The address on the relay the visitor connected to.
    pub relay_addr: SocketAddr,
}

/// A visitor the relay announced, not yet answered. Answer promptly: the relay holds the
/// visitor's bytes until then, and yamux acknowledges the stream only with the answer.
/// Dropping it unanswered resets the visitor.
#[derive(Debug)]
pub struct IncomingVisitor {
    pub(super) stream: Substream,
    pub(super) visitor: Visitor,
    pub(super) guard: StreamGuard,
    pub(super) reset: StreamReset,
}

impl IncomingVisitor {
    /// Who this is.
    pub fn visitor(&self) -> Visitor {
        self.visitor
    }

    /// Accepts the visitor: from now on the stream carries the visitor's bytes both ways.
    ///
    /// Cancel safety: dropping the future drops the visitor (it is reset).
    pub async fn accept(mut self) -> io::Result<TunnelStream> {
        codec::write_frame(&mut self.stream, &VisitorReply::Accepted)
            .await
            .map_err(io::Error::other)?;
        Ok(TunnelStream::new(
            self.stream,
            self.visitor,
            self.guard,
            self.reset,
        ))
    }

    /// Refuses the visitor; the relay closes its connection and logs `reason`.
    ///
    /// Cancel safety: dropping the future resets the visitor instead.
    pub async fn refuse(self, reason: &str) {
        refuse(self.stream, reason).await
    }
}

/// Answers a visitor's substream with a refusal and closes it.
pub(super) async fn refuse(mut stream: Substream, reason: &str) {
    let mut reason = reason.to_string();
    if reason.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    let _ = codec::write_frame(&mut stream, &VisitorReply::Refused { reason }).await;
    let _ = stream.shutdown().await;
}
