//! The relay's side of the handshake: judge the preface, read one hello, answer errors.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{self, CodecError};
use crate::protocol::{ErrorCode, Hello, PROTOCOL_VERSION, Reply, parse_preface};

/// Why a connection did not produce a hello.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Not our magic: someone pointed another program at the control port.
    NotRelay { looks_like_http: bool },
    /// Our magic, another protocol version.
    Version(u16),
    /// The hello frame was too large, malformed or cut short.
    Frame(CodecError),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NotRelay {
                looks_like_http: true,
            } => f.write_str("an HTTP request, not a relay client"),
            Rejection::NotRelay { .. } => f.write_str("not a relay client (wrong magic)"),
            Rejection::Version(v) => write!(
                f,
                "client speaks protocol version {v}, this relay speaks {PROTOCOL_VERSION}"
            ),
            Rejection::Frame(e) => write!(f, "bad hello: {e}"),
        }
    }
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"CONN", b"PATC", b"TRAC",
];

/// Reads the client's preface and hello.
pub(crate) async fn read_hello(
    sock: &mut TcpStream,
    max_frame_len: usize,
) -> Result<Hello, Rejection> {
    let preface = codec::read_preface(sock).await.map_err(Rejection::Frame)?;
    match parse_preface(&preface) {
        None => Err(Rejection::NotRelay {
            looks_like_http: HTTP_METHODS.iter().any(|m| preface.starts_with(m)),
        }),
        Some(v) if v != PROTOCOL_VERSION => Err(Rejection::Version(v)),
        Some(_) => codec::read_frame(sock, max_frame_len)
            .await
            .map_err(Rejection::Frame),
    }
}

/// Tells the peer why it is being turned away, in a form it can understand.
pub(crate) async fn answer_rejection<W: AsyncWrite + Unpin>(w: &mut W, rejection: &Rejection) {
    match rejection {
        Rejection::NotRelay {
            looks_like_http: true,
        } => {
            let body = "This is the control port of a relay, not a web server.\n\
                        Tunnels are reached on the public port their client printed.\n";
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = w.write_all(response.as_bytes()).await;
        }
        // Anything else that is not ours gets no answer it could misread.
        Rejection::NotRelay { .. } => {}
        Rejection::Version(_) => refuse(w, ErrorCode::VersionMismatch, rejection.to_string()).await,
        Rejection::Frame(CodecError::Closed | CodecError::Truncated | CodecError::Io(_)) => {}
        Rejection::Frame(_) => refuse(w, ErrorCode::BadRequest, rejection.to_string()).await,
    }
}

/// Sends the relay's preface and an error reply; failures are ignored since the connection is
/// being closed either way.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, code: ErrorCode, message: String) {
    let _ = codec::write_preface_and_frame(w, &Reply::Error { code, message }).await;
    let _ = w.shutdown().await;
}
