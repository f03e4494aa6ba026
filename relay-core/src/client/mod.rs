//! Client side of the protocol: tunnels ([`TunnelListener`]) and file-transfer rendezvous
//! ([`Offer`], [`claim`]).

#[cfg(feature = "axum")]
mod axum;
mod config;
mod control;
mod handle;
mod incoming;
mod public_addr;
mod rendezvous;
mod resets;
mod session;
mod stream;
mod tunnel;
mod visitor;

use std::time::Duration;

#[cfg(feature = "axum")]
pub use axum::TunnelAddr;
pub use config::TunnelConfig;
pub use handle::SessionHandle;
pub use public_addr::PublicAddr;
pub use rendezvous::{Offer, PairedStream, claim, claim_with, offer, offer_with};
pub use session::Reconnect;
pub use stream::TunnelStream;
pub use tunnel::{Incoming, TunnelListener};
pub use visitor::{IncomingVisitor, Visitor};

use crate::auth::Token;
use crate::codec::{self, CodecError};
use crate::error::{Error, Result};
use crate::frame::FramedConn;
use crate::net::{connect, tune_session_socket};
use crate::protocol::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_FRAME_LEN, ErrorCode, Hello, PREFACE_LEN,
    PROTOCOL_VERSION, Reply, parse_preface,
};
use crate::tls::ClientTls;
use crate::transport::{Conn, connect_tls};

/// How a client reaches the relay: shared by tunnels and transfers.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Deadline for the handshake (connecting has its own deadline on top).
    pub handshake_timeout: Duration,
    /// The token the relay requires, if it requires one. Never sent: the client proves it
    /// holds it by answering the relay's challenge.
    pub token: Option<Token>,
    /// Speak TLS to the relay, checking its certificate this way; `None`: plain TCP.
    pub tls: Option<ClientTls>,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            token: None,
            tls: None,
        }
    }
}

/// Dials the relay, sends `hello`, answers a token challenge, and reads the relay's reply, all
/// within the handshake deadline. Error replies become [`Error::Rejected`]; a redirect is
/// followed once. The connection comes back framed: bytes the relay sent after its reply are
/// still buffered.
pub(crate) async fn handshake(
    relay: &str,
    hello: &Hello,
    config: &ConnectConfig,
) -> Result<(FramedConn<Conn>, Reply)> {
    let first = exchange(relay, hello, config).await?;
    let (conn, reply) = match first {
        (_, Reply::Redirect { to }) => {
            tracing::debug!(relay, to, "redirected to another relay");
            let answer = exchange(&to, hello, config).await.map_err(|e| match e {
                // The relay named in a code is down: say so, rather than a bare connect error.
                Error::Connect { addr, source } if matches!(hello, Hello::Receive { .. }) => {
                    Error::Connect {
                        source: std::io::Error::new(
                            source.kind(),
                            format!(
                                "{source}; that relay holds this code's transfer, so if it is \
                                 down the transfer is gone: ask the sender for a new code"
                            ),
                        ),
                        addr,
                    }
                }
                e => e,
            })?;
            match answer {
                (_, Reply::Redirect { .. }) => {
                    return Err(Error::Protocol(format!(
                        "the relay at {to} redirected again; giving up"
                    )));
                }
                answer => answer,
            }
        }
        answer => answer,
    };
    match reply {
        Reply::Error { code, message } => Err(Error::Rejected { code, message }),
        reply => Ok((conn, reply)),
    }
}

async fn exchange(
    relay: &str,
    hello: &Hello,
    config: &ConnectConfig,
) -> Result<(FramedConn<Conn>, Reply)> {
    let sock = connect(relay).await?;
    tune_session_socket(&sock);
    let deadline = config.handshake_timeout;
    let talk = async {
        let conn = match &config.tls {
            Some(tls) => connect_tls(relay, sock, tls).await?,
            None => Conn::plain(sock),
        };
        let mut conn = FramedConn::new(conn, DEFAULT_MAX_FRAME_LEN);
        conn.write_preface_and_frame(hello).await?;
        let reply = read_reply(&mut conn).await?;
        let Reply::Challenge { nonce } = reply else {
            return Ok((conn, reply));
        };
        let Some(token) = &config.token else {
            return Err(Error::Rejected {
                code: ErrorCode::Unauthorized,
                message: "authentication failed: this relay requires a token; pass --token or \
                          set RELAY_TOKEN"
                    .into(),
            });
        };
        // The proof covers the hello exactly as it was sent.
        let frame = codec::encode(hello)?;
        // Bound to this TLS session, so it is worthless on any other.
        let binding = conn.get_ref().channel_binding();
        let proof = token.prove(&nonce, &binding, &frame[codec::LEN_PREFIX..]);
        conn.write_frame(&proof).await?;
        let reply = conn.read_frame().await?;
        Ok((conn, reply))
    };
    tokio::time::timeout(deadline, talk)
        .await
        .map_err(|_| Error::timeout("handshake with the relay", deadline))?
}

/// Reads the relay's preface and its first reply frame.
async fn read_reply(conn: &mut FramedConn<Conn>) -> Result<Reply> {
    while conn.buffered().len() < PREFACE_LEN {
        conn.fill().await.map_err(|e| match e {
            CodecError::Closed | CodecError::Truncated => Error::Protocol(
                "the relay closed the connection during the handshake (is this a relay's control port?)".into(),
            ),
            e => Error::Codec(e),
        })?;
    }
    let preface = conn.buffered()[..PREFACE_LEN]
        .try_into()
        .map_err(|_| Error::Protocol("short preface".into()))?;
    conn.consume(PREFACE_LEN);
    match parse_preface(&preface) {
        None => Err(Error::Protocol(
            "the server at that address is not a relay".into(),
        )),
        Some(v) if v != PROTOCOL_VERSION => {
            // A relay that refuses before it has read our preface (busy, TLS required) answers
            // in the oldest version it serves; `Reply::Error` reads the same in every version,
            // and its code is what counts.
            match conn.read_frame().await {
                Ok(Reply::Error { code, message }) if code != ErrorCode::VersionMismatch => {
                    return Err(Error::Rejected { code, message });
                }
                _ => {}
            }
            // The relay's own explanation (`Reply::Error` reads the same in every version)
            // names the two versions too, but not what to do about it.
            let advice = if v < PROTOCOL_VERSION {
                format!("upgrade the relay, or use a client release that speaks version {v}")
            } else {
                "upgrade this client".to_string()
            };
            Err(Error::Rejected {
                code: ErrorCode::VersionMismatch,
                message: format!(
                    "the relay speaks protocol version {v}, this client speaks \
                     {PROTOCOL_VERSION}: {advice}"
                ),
            })
        }
        Some(_) => Ok(conn.read_frame().await?),
    }
}
