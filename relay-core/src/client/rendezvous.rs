//! Client side of the file-transfer rendezvous: make an offer, or claim one.
//!
//! What comes back is the raw TCP connection, now spliced by the relay to the peer. The relay
//! can read everything on it, so callers encrypt end to end (the `filexfer` crate does).

use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::codec::{self, LEN_PREFIX};
use crate::error::{Error, Result};
use crate::protocol::{
    DEFAULT_MAX_FRAME_LEN, ErrorCode, HEARTBEAT_TOLERANCE, Hello, OfferEvent, Reply, SenderMessage,
};

/// Shortest heartbeat interval a sender accepts from a relay, whatever it announces.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// A registered offer: the relay holds it under [`nameplate`](Offer::nameplate) until a
/// receiver claims it.
#[derive(Debug)]
pub struct Offer {
    sock: TcpStream,
    nameplate: String,
    heartbeat: Duration,
}

/// Registers an offer with the relay at `relay` (`HOST:PORT` or `[V6]:PORT`).
pub async fn offer(relay: &str, handshake_timeout: Duration) -> Result<Offer> {
    let (sock, reply) = super::handshake(relay, &Hello::Send, handshake_timeout).await?;
    match reply {
        Reply::Offered {
            nameplate,
            heartbeat_interval_ms,
        } => Ok(Offer {
            sock,
            nameplate,
            heartbeat: Duration::from_millis(heartbeat_interval_ms.into()).max(MIN_HEARTBEAT),
        }),
        other => Err(Error::Protocol(format!("expected an offer, got {other:?}"))),
    }
}

impl Offer {
    /// The relay-assigned part of the code, to pass to the receiver.
    pub fn nameplate(&self) -> &str {
        &self.nameplate
    }

    /// Keeps the offer alive with heartbeats until a receiver claims it, then returns the
    /// connection, which from then on carries the receiver's bytes. Drop the future to
    /// withdraw the offer.
    pub async fn wait_for_receiver(mut self) -> Result<TcpStream> {
        let silence_limit = self.heartbeat * HEARTBEAT_TOLERANCE;
        let frames = LengthDelimitedCodec::builder()
            .length_field_length(LEN_PREFIX)
            .max_frame_length(DEFAULT_MAX_FRAME_LEN)
            .new_codec();
        let (read, mut write) = self.sock.split();
        let mut events = FramedRead::new(read, frames);
        let mut ticks = tokio::time::interval(self.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if last_heard.elapsed() > silence_limit {
                        return Err(Error::SessionLost(format!("the relay stopped answering for {silence_limit:?}")));
                    }
                    seq += 1;
                    codec::write_frame(&mut write, &SenderMessage::Ping(seq)).await?;
                }
                frame = events.next() => {
                    let body = match frame {
                        Some(body) => body?,
                        None => return Err(Error::SessionLost("the relay closed the connection".into())),
                    };
                    match codec::decode::<OfferEvent>(&body)? {
                        OfferEvent::Pong(_) => last_heard = Instant::now(),
                        OfferEvent::Closed { reason } => return Err(Error::Rejected { code: ErrorCode::ShuttingDown, message: reason }),
                        OfferEvent::Paired => break,
                    }
                }
            }
        }
        // The relay sends nothing after `Paired` until it has our acknowledgement, so the
        // frame reader cannot hold any of the peer's bytes.
        if !events.read_buffer().is_empty() {
            return Err(Error::Protocol("unexpected bytes after the pairing".into()));
        }
        drop(events);
        codec::write_frame(&mut write, &SenderMessage::PairedAck).await?;
        Ok(self.sock)
    }
}

/// Claims the offer registered under `nameplate` on the relay at `relay`; returns the
/// connection, which from then on carries the sender's bytes.
pub async fn claim(relay: &str, nameplate: &str, handshake_timeout: Duration) -> Result<TcpStream> {
    let hello = Hello::Receive {
        nameplate: nameplate.to_string(),
    };
    let (sock, reply) = super::handshake(relay, &hello, handshake_timeout).await?;
    match reply {
        Reply::Paired => Ok(sock),
        other => Err(Error::Protocol(format!(
            "expected a pairing, got {other:?}"
        ))),
    }
}
