//! Client side of the protocol: tunnels ([`TunnelListener`]) and file-transfer rendezvous
//! ([`Offer`], [`claim`]).

mod rendezvous;
mod tunnel;
mod visitor;

use std::time::Duration;

use tokio::net::TcpStream;

pub use rendezvous::{Offer, claim, offer};
pub use tunnel::{PublicAddr, TunnelConfig, TunnelListener};
pub use visitor::{IncomingVisitor, Visitor};

use crate::codec;
use crate::error::{Error, Result};
use crate::net::{connect, tune_session_socket};
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, Hello, PROTOCOL_VERSION, Reply, parse_preface};

/// Dials the relay, sends `hello`, and reads the relay's one reply, all within `deadline`
/// (connecting has its own deadline on top). Error replies become [`Error::Rejected`].
pub(crate) async fn handshake(
    relay: &str,
    hello: &Hello,
    deadline: Duration,
) -> Result<(TcpStream, Reply)> {
    let mut sock = connect(relay).await?;
    tune_session_socket(&sock);
    let exchange = async {
        codec::write_preface_and_frame(&mut sock, hello).await?;
        let reply = read_reply(&mut sock).await?;
        Ok::<_, Error>(reply)
    };
    let reply = tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| Error::timeout("handshake with the relay", deadline))??;
    match reply {
        Reply::Error { code, message } => Err(Error::Rejected { code, message }),
        reply => Ok((sock, reply)),
    }
}

/// Reads the relay's preface and one reply frame.
pub(crate) async fn read_reply(sock: &mut TcpStream) -> Result<Reply> {
    let preface = codec::read_preface(sock).await.map_err(|e| match e {
        codec::CodecError::Closed | codec::CodecError::Truncated => Error::Protocol(
            "the relay closed the connection during the handshake (is this a relay's control port?)".into(),
        ),
        e => Error::Codec(e),
    })?;
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
            match codec::read_frame(sock, DEFAULT_MAX_FRAME_LEN).await {
                Ok(Reply::Error { code, message }) => Err(Error::Rejected {
                    code,
                    message: format!("{message} ({mismatch})"),
                }),
                _ => Err(Error::Protocol(mismatch)),
            }
        }
        Some(_) => Ok(codec::read_frame(sock, DEFAULT_MAX_FRAME_LEN).await?),
    }
}
