//! The relay's side of the handshake: judge the preface, read one hello, check the client's
//! token, answer errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::access::{Access, NamedToken};
use crate::codec::{self, CodecError};
use crate::frame::FramedConn;
use crate::protocol::{
    ErrorCode, Hello, MAGIC, OLDEST_PROTOCOL_VERSION, PREFACE_LEN, PROTOCOL_VERSION, Proof, Reply,
    is_served, parse_preface,
};
use crate::transport::Conn;

/// A client past its hello: the connection, and what the relay has learnt about it.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) conn: FramedConn<Conn>,
    pub(super) peer: SocketAddr,
    /// The token it proved to hold, when the relay requires one.
    pub(super) token: Option<Arc<NamedToken>>,
    /// The protocol version it speaks (one this relay serves); the relay answers in it.
    pub(super) version: u16,
    /// The relay's preface went out already (with a challenge).
    preface_sent: bool,
}

impl Client {
    pub(super) fn new(conn: FramedConn<Conn>, peer: SocketAddr, version: u16) -> Self {
        Client {
            conn,
            peer,
            token: None,
            version,
            preface_sent: false,
        }
    }

    /// Sends one reply, behind the relay's preface if it has not gone out yet.
    pub(super) async fn reply(&mut self, reply: &Reply) -> Result<(), CodecError> {
        if self.preface_sent {
            self.conn.write_frame(reply).await
        } else {
            self.preface_sent = true;
            let version = self.version;
            self.conn
                .write_versioned_preface_and_frame(version, reply)
                .await
        }
    }

    /// Refuses the client with `code` and `message`, then closes gently.
    pub(super) async fn refuse(mut self, code: ErrorCode, message: String) {
        let _ = self.reply(&Reply::Error { code, message }).await;
        linger_close(self.conn.get_mut()).await;
    }

    /// Packs the client up, to hand it to a task on another worker thread.
    pub(super) fn into_handover(self) -> Handover {
        let max_len = self.conn.max_len();
        let (conn, early) = self.conn.into_parts();
        Handover {
            conn,
            early,
            max_len,
            peer: self.peer,
            token: self.token,
            version: self.version,
            preface_sent: self.preface_sent,
        }
    }

    /// Takes over a client handed over from another thread, moving its socket's readiness
    /// events to this thread's runtime (a TLS session moves along unchanged).
    pub(super) fn adopt(mut h: Handover) -> std::io::Result<Client> {
        h.conn.rehome()?;
        Ok(Client {
            conn: FramedConn::with_buffered(h.conn, &h.early, h.max_len),
            peer: h.peer,
            token: h.token,
            version: h.version,
            preface_sent: h.preface_sent,
        })
    }

    /// Challenges the client to prove it holds one of `access`'s tokens, bound to `hello` as
    /// it was sent. On failure the client has been told, and the connection is closed.
    pub(super) async fn authenticate(
        &mut self,
        access: &Access,
        hello: &Bytes,
    ) -> Result<(), AuthFailure> {
        let nonce: [u8; 32] = rand::random();
        self.reply(&Reply::Challenge { nonce })
            .await
            .map_err(|_| AuthFailure::Left)?;
        let proof: Proof = match self.conn.read_frame().await {
            Ok(proof) => proof,
            Err(CodecError::Closed | CodecError::Truncated | CodecError::Io(_)) => {
                return Err(AuthFailure::Left);
            }
            Err(_) => return Err(AuthFailure::Wrong),
        };
        let token = access.find(&proof.key_id).ok_or(AuthFailure::Wrong)?;
        // Bound to this TLS session (zeros over plain TCP): a proof relayed by someone in the
        // middle does not verify on the middle's own session.
        let binding = self.conn.get_ref().channel_binding();
        if !token.token.verify(&proof, &nonce, &binding, hello) {
            return Err(AuthFailure::Wrong);
        }
        self.token = Some(token);
        Ok(())
    }
}

/// A client on its way to a task on another worker thread (a receiver to its offer).
#[derive(Debug)]
pub(super) struct Handover {
    conn: Conn,
    early: Bytes,
    max_len: usize,
    peer: SocketAddr,
    token: Option<Arc<NamedToken>>,
    version: u16,
    preface_sent: bool,
}

/// Why a client did not get past the token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthFailure {
    /// No token the relay knows, or a proof that does not check out.
    Wrong,
    /// The client left during the challenge.
    Left,
}

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
                "client speaks protocol version {v}, this relay speaks versions \
                 {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            ),
            Rejection::Frame(e) => write!(f, "bad hello: {e}"),
        }
    }
}

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"CONN", b"PATC", b"TRAC",
];

/// A hello as read: the message, its bytes as sent (what a token proof covers), and the
/// protocol version of the client's preface.
pub(crate) type ReadHello = (Hello, Bytes, u16);

/// Reads the client's preface and hello. A connection whose first bytes are not our magic is
/// turned away as soon as the first wrong byte arrives, so short junk (`GET /` and a newline)
/// does not sit until the handshake deadline. Cancel-safe.
pub(crate) async fn read_hello(conn: &mut FramedConn<Conn>) -> Result<ReadHello, Rejection> {
    while conn.buffered().len() < PREFACE_LEN {
        let head = conn.fill().await.map_err(Rejection::Frame)?;
        let magic_part = head.len().min(MAGIC.len());
        if head[..magic_part] != MAGIC[..magic_part] {
            return Err(Rejection::NotRelay {
                looks_like_http: head.len() >= 3
                    && HTTP_METHODS
                        .iter()
                        .any(|m| head.starts_with(&m[..m.len().min(head.len())])),
            });
        }
    }
    let preface = conn.buffered()[..PREFACE_LEN]
        .try_into()
        .map_err(|_| Rejection::Frame(CodecError::Truncated))?;
    let version = parse_preface(&preface);
    conn.consume(PREFACE_LEN);
    match version {
        Some(v) if is_served(v) => {
            let (hello, bytes) = conn.read_frame_and_body().await.map_err(Rejection::Frame)?;
            Ok((hello, bytes, v))
        }
        Some(v) => Err(Rejection::Version(v)),
        None => Err(Rejection::NotRelay {
            looks_like_http: false,
        }),
    }
}

/// How long, and how many bytes, a refused peer's unread input is drained after the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Tells the peer why it is being turned away, in a form it can understand.
pub(crate) async fn answer_rejection<S: AsyncRead + AsyncWrite + Unpin>(
    w: &mut S,
    rejection: &Rejection,
) {
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
            linger_close(w).await;
        }
        // Anything else that is not ours gets no answer it could misread.
        Rejection::NotRelay { .. } => {}
        Rejection::Version(_) => refuse(w, ErrorCode::VersionMismatch, rejection.to_string()).await,
        Rejection::Frame(CodecError::Closed | CodecError::Truncated | CodecError::Io(_)) => {}
        Rejection::Frame(_) => refuse(w, ErrorCode::BadRequest, rejection.to_string()).await,
    }
}

/// Sends a preface and an error reply to a client whose version is not known (yet); failures
/// are ignored since the connection is being closed either way.
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    code: ErrorCode,
    message: String,
) {
    // A version mismatch goes out in our version, so the client learns which one we speak.
    // Anything else (busy, TLS required) in the oldest version served: clients of that version
    // then act on the code, and newer ones read an error behind an older preface for what it is.
    let version = match code {
        ErrorCode::VersionMismatch => PROTOCOL_VERSION,
        _ => OLDEST_PROTOCOL_VERSION,
    };
    let reply = Reply::Error { code, message };
    let _ = codec::write_versioned_preface_and_frame(s, version, &reply).await;
    linger_close(s).await;
}

/// Sends our FIN, then briefly reads and discards what the peer still sends. Closing a socket
/// with unread input makes the kernel send a reset, which can destroy the answer we just wrote
/// before the peer reads it.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let _ = s.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
