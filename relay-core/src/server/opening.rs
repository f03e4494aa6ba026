//! The first step of every connection to the control port: TLS or plain, told apart by the
//! client's first byte, and refused when it is the kind the relay does not serve.

use tokio::net::TcpStream;
use tracing::{debug, info};

use super::config::RelayConfig;
use super::handshake::refuse;
use super::refusals::{Refusal, Refusals};
use crate::protocol::ErrorCode;
use crate::tls::TLS_HANDSHAKE_BYTE;
use crate::transport::{Conn, accept_tls};

/// Waits for the client's first byte (without consuming it) and opens the connection the way
/// it asks for. `None` when the client was refused or left; it has then been told why where
/// it could understand it. Cancel-safe up to the TLS handshake; the caller bounds the whole
/// with the handshake deadline.
pub(super) async fn open(
    tcp: TcpStream,
    config: &RelayConfig,
    refusals: &Refusals,
) -> Option<Conn> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1..) => {}
        Ok(0) | Err(_) => {
            debug!("connection closed before its first byte");
            return None;
        }
    }
    let wants_tls = first[0] == TLS_HANDSHAKE_BYTE;
    match (&config.tls, wants_tls) {
        (Some(tls), true) => match accept_tls(tcp, tls).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                if refusals.note(Refusal::TlsHandshake) {
                    info!(error = %e, "TLS handshake failed");
                }
                None
            }
        },
        (Some(_), false) if config.require_tls => {
            if refusals.note(Refusal::TlsRequired) {
                info!("plain connection to a relay that requires TLS; refusing");
            }
            let message = "this relay accepts only TLS connections: connect with --tls (and \
                           --tls-ca FILE or --tls-fingerprint HEX unless its certificate is \
                           publicly trusted)";
            let mut tcp = tcp;
            refuse(&mut tcp, ErrorCode::TlsRequired, message.into()).await;
            None
        }
        (None, true) => {
            // The client's TLS stack cannot read this, but the client looks at what arrived
            // when its handshake fails, and shows it.
            if refusals.note(Refusal::TlsUnavailable) {
                info!("TLS client on a relay without a certificate; refusing");
            }
            let message = "this relay does not speak TLS on this port: connect without --tls \
                           (or start the relay with --tls-cert/--tls-key or --tls-self-signed)";
            let mut tcp = tcp;
            refuse(&mut tcp, ErrorCode::BadRequest, message.into()).await;
            None
        }
        _ => Some(Conn::plain(tcp)),
    }
}
