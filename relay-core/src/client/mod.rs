//! Client side of the protocol: tunnels ([`TunnelListener`]) and file-transfer rendezvous
//! ([`Offer`], [`claim`]).

mod rendezvous;
mod tunnel;
mod visitor;

use std::time::Duration;

use tokio::net::TcpStream;

pub use rendezvous::{Offer, PairedStream, claim, offer};
pub use tunnel::{PublicAddr, TunnelConfig, TunnelListener};
pub use visitor::{IncomingVisitor, Visitor};

use crate::codec::CodecError;
use crate::error::{Error, Result};
use crate::frame::FramedConn;
use crate::net::{connect, tune_session_socket};
use crate::protocol::{
    DEFAULT_MAX_FRAME_LEN, Hello, PREFACE_LEN, PROTOCOL_VERSION, Reply, parse_preface,
};

/// Dials the relay, sends `hello`, and reads the relay's one reply, all within `deadline`
/// (connecting has its own deadline on top). Error replies become [`Error::Rejected`]. The
/// connection comes back framed: bytes the relay sent after its reply are still buffered.
pub(crate) async fn handshake(
    relay: &str,
    hello: &Hello,
    deadline: Duration,
) -> Result<(FramedConn<TcpStream>, Reply)> {
    let sock = connect(relay).await?;
    tune_session_socket(&sock);
    let mut conn = FramedConn::new(sock, DEFAULT_MAX_FRAME_LEN);
    let exchange = async {
        conn.write_preface_and_frame(hello).await?;
        read_reply(&mut conn).await
    };
    let reply = tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| Error::timeout("handshake with the relay", deadline))??;
    match reply {
        Reply::Error { code, message } => Err(Error::Rejected { code, message }),
        reply => Ok((conn, reply)),
    }
}

/// Reads the relay's preface and one reply frame.
async fn read_reply(conn: &mut FramedConn<TcpStream>) -> Result<Reply> {
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
            // `Reply::Error` is encoded the same in every version, so the relay's own
            // explanation is readable; anything else gets ours.
            let mismatch = format!(
                "the relay speaks protocol version {v}, this client speaks {PROTOCOL_VERSION}"
            );
            match conn.read_frame().await {
                Ok(Reply::Error { code, message }) => Err(Error::Rejected {
                    code,
                    message: format!("{message} ({mismatch})"),
                }),
                _ => Err(Error::Protocol(mismatch)),
            }
        }
        Some(_) => Ok(conn.read_frame().await?),
    }
}
