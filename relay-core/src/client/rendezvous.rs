//! Client side of the file-transfer rendezvous: make an offer, or claim one.
//!
//! What comes back is the connection, now spliced by the relay to the peer. The relay can read
//! everything on it, so callers encrypt end to end (the `filexfer` crate does).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ConnectConfig;
use crate::codec::CodecError;
use crate::ending::SessionEnd;
use crate::error::{Error, Result};
use crate::frame::{FramedConn, Rewind};
use crate::liveness::{Beat, Liveness};
use crate::protocol::{Hello, OfferEvent, Reply, SenderMessage};
use crate::transport::Conn;

/// A registered offer: the relay holds it under [`nameplate`](Offer::nameplate) until a
/// receiver claims it.
#[derive(Debug)]
pub struct Offer {
    conn: FramedConn<Conn>,
    nameplate: String,
    heartbeat: Duration,
}

/// A connection to the relay that now carries the peer's bytes, both ways.
#[derive(Debug)]
pub struct PairedStream(Rewind<Conn>);

impl PairedStream {
    /// The connection to the relay underneath (plain TCP or TLS).
    pub fn get_ref(&self) -> &Conn {
        self.0.get_ref()
    }

    /// The connection, and the peer's first bytes, which arrived with the pairing and come
    /// before anything still to be read from the connection.
    pub fn into_parts(self) -> (Conn, bytes::Bytes) {
        self.0.into_parts()
    }
}

/// Registers an offer with the relay at `relay` (`HOST:PORT` or `[V6]:PORT`).
pub async fn offer(relay: &str, handshake_timeout: Duration) -> Result<Offer> {
    let config = ConnectConfig {
        handshake_timeout,
        ..ConnectConfig::default()
    };
    offer_with(relay, &config).await
}

/// [`offer`], with a token and other connection settings.
pub async fn offer_with(relay: &str, config: &ConnectConfig) -> Result<Offer> {
    let (conn, reply) = super::handshake(relay, &Hello::Send, config).await?;
    match reply {
        Reply::Offered {
            nameplate,
            heartbeat_interval_ms,
        } => Ok(Offer {
            conn,
            nameplate,
            heartbeat: Duration::from_millis(heartbeat_interval_ms.into()),
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
    /// withdraw the offer. Fails with [`Error::SessionLost`] when the relay withdraws the offer
    /// or the connection to it is lost.
    pub async fn wait_for_receiver(mut self) -> Result<PairedStream> {
        let mut liveness = Liveness::new(self.heartbeat);
        let mut seq = 0u64;
        loop {
            let event = tokio::select! {
                beat = liveness.beat() => {
                    match beat {
                        Beat::Ping => {
                            seq += 1;
                            let sent = self.conn.write_frame(&SenderMessage::Ping(seq)).await;
                            sent.map_err(|e| lost(e, &liveness))?;
                            continue;
                        }
                        Beat::Gone { silent_for } => {
                            return Err(Error::SessionLost(SessionEnd::PeerSilent { silent_for }));
                        }
                    }
                }
                event = self.conn.read_frame::<OfferEvent>() => event.map_err(|e| lost(e, &liveness))?,
            };
            liveness.heard();
            match event {
                OfferEvent::Pong(_) => {}
                OfferEvent::Closed { reason } => {
                    return Err(Error::SessionLost(SessionEnd::Withdrawn(reason)));
                }
                OfferEvent::Paired => break,
            }
        }
        self.conn.write_frame(&SenderMessage::PairedAck).await?;
        Ok(PairedStream(self.conn.into()))
    }
}

/// The ending for a control connection that failed: if this process had stopped running in the
/// meantime, that is the better explanation.
fn lost(e: CodecError, liveness: &Liveness) -> Error {
    let end = match (liveness.stalled(), e) {
        (Some(stalled), CodecError::Closed | CodecError::Io(_)) => {
            SessionEnd::Suspended { stalled }
        }
        (None, CodecError::Closed) => SessionEnd::PeerClosed,
        (None, CodecError::Io(e)) => SessionEnd::ConnectionLost(e.to_string()),
        (_, e) => SessionEnd::Protocol(e.to_string()),
    };
    Error::SessionLost(end)
}

/// Claims the offer registered under `nameplate` on the relay at `relay`; returns the
/// connection, which from then on carries the sender's bytes.
pub async fn claim(
    relay: &str,
    nameplate: &str,
    handshake_timeout: Duration,
) -> Result<PairedStream> {
    let config = ConnectConfig {
        handshake_timeout,
        ..ConnectConfig::default()
    };
    claim_with(relay, nameplate, &config).await
}

/// [`claim`], with a token and other connection settings. A relay that does not hold the offer
/// may redirect to the one that does; the redirect is followed once.
pub async fn claim_with(
    relay: &str,
    nameplate: &str,
    config: &ConnectConfig,
) -> Result<PairedStream> {
    let hello = Hello::Receive {
        nameplate: nameplate.to_string(),
    };
    let (conn, reply) = super::handshake(relay, &hello, config).await?;
    match reply {
        // Bytes the sender sent right after the pairing may have been read with the reply.
        Reply::Paired => Ok(PairedStream(conn.into())),
        other => Err(Error::Protocol(format!(
            "expected a pairing, got {other:?}"
        ))),
    }
}

impl AsyncRead for PairedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PairedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
