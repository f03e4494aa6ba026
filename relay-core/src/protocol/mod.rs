//! Wire messages and protocol limits: pure data, no I/O.
//!
//! Every connection to the control port starts with a [`PREFACE`] in each direction (magic plus
//! version), then exactly one [`Hello`] frame from the client and one [`Reply`] frame from the
//! relay. What follows depends on the role: yamux for tunnels, heartbeats then raw bytes for file
//! transfers. `docs/protocol.md` is the full specification; the frame encoding lives in
//! [`crate::codec`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod nameplate;
mod secret;

pub(crate) use secret::hex;
pub use secret::{LeaseSecret, Proof};

/// Identifies a relay control connection: six bytes of magic followed by a big-endian
/// [`PROTOCOL_VERSION`]. Both peers send it before anything else.
pub const MAGIC: [u8; 6] = *b"RELAY\0";

/// Bumped on any incompatible change to the messages below or to the stream layout.
/// Version 2: several tunnels per session, leased ports, token challenges, redirects.
/// Version 3: [`RelayControl::Reset`] and [`ClientControl::Reset`], because yamux 0.14 drops a
/// half-closed stream without telling the peer (`docs/protocol.md`, 7.4).
pub const PROTOCOL_VERSION: u16 = 3;

/// The oldest version a relay still serves. Versions 2 and 3 differ only in the two `Reset`
/// messages, which a relay never sends to a version-2 client (and such a client never sends).
pub const OLDEST_PROTOCOL_VERSION: u16 = 2;

/// Length of the preface: [`MAGIC`] plus the two version bytes.
pub const PREFACE_LEN: usize = MAGIC.len() + 2;

/// The preface this build sends.
pub const PREFACE: [u8; PREFACE_LEN] = preface(PROTOCOL_VERSION);

/// The preface announcing `version` (a relay answers a client in the client's version).
pub const fn preface(version: u16) -> [u8; PREFACE_LEN] {
    let mut p = [0u8; PREFACE_LEN];
    let mut i = 0;
    while i < MAGIC.len() {
        p[i] = MAGIC[i];
        i += 1;
    }
    let v = version.to_be_bytes();
    p[MAGIC.len()] = v[0];
    p[MAGIC.len() + 1] = v[1];
    p
}

/// Whether a relay of this build serves clients of `version`.
pub fn is_served(version: u16) -> bool {
    (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version)
}

/// Hard ceiling on a control frame body. Every message here is far smaller; the ceiling keeps a
/// hostile length prefix from ever causing a large allocation.
pub const MAX_FRAME_LEN: usize = 16 * 1024;

/// Default limit a relay applies to frames it reads (configurable up to [`MAX_FRAME_LEN`]).
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 * 1024;

/// Default deadline for the whole handshake (preface plus hello) on the control port.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default interval between client heartbeats, announced by the relay in [`Welcome`] and
/// [`Reply::Offered`].
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// A peer that has heard nothing for this many heartbeat intervals treats the other side as gone.
pub const HEARTBEAT_TOLERANCE: u32 = 3;

/// yamux stream limit both ends of a tunnel session configure. Exceeding yamux's stream limit
/// kills the whole connection, so the relay keeps visitors per tunnel strictly below this (see
/// [`MAX_VISITORS_PER_TUNNEL`]) and both sides must allow at least this many streams.
pub const MUX_MAX_STREAMS: usize = 16_400;

/// Upper bound for a relay's visitors-per-tunnel setting: leaves headroom below
/// [`MUX_MAX_STREAMS`] for the control substream and streams still closing.
pub const MAX_VISITORS_PER_TUNNEL: u32 = 16_000;

/// Most tunnels one session may ask for.
pub const MAX_TUNNELS_PER_SESSION: usize = 64;

/// First message from a client, right after its preface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// Ask for tunnels: public ports whose visitors arrive as substreams of this connection.
    Tunnel {
        /// One entry per public port wanted (1 to [`MAX_TUNNELS_PER_SESSION`]); visitors say
        /// which one they came through by its index here.
        tunnels: Vec<TunnelRequest>,
    },
    /// Offer a file transfer: the relay assigns a nameplate and holds the connection until a
    /// receiver claims it.
    Send,
    /// Claim the offer registered under `nameplate`.
    Receive {
        /// The relay-assigned, public part of the transfer code.
        nameplate: String,
    },
}

/// One public port a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRequest {
    /// A public port the client would like (for example the one it had before the relay
    /// restarted). Granted when free, in range and allowed, otherwise another port.
    pub preferred_port: Option<u16>,
    /// The secret of a port this client held before its session was lost: while the relay
    /// still holds the lease, it gives that port back (and to nobody else).
    pub lease: Option<LeaseSecret>,
}

/// The relay's answer to a [`Hello`] (or, after a [`Reply::Challenge`], to the [`Proof`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The tunnels exist; yamux starts on this connection right after this frame.
    Welcome(Welcome),
    /// The offer is registered; heartbeats follow until a receiver claims it.
    Offered {
        /// What the receiver must present.
        nameplate: String,
        /// How often the sender must send [`SenderMessage::Ping`].
        heartbeat_interval_ms: u32,
    },
    /// Sent to a receiver once its sender has confirmed the pairing: from the next byte on the
    /// connection carries the peer's raw bytes.
    Paired,
    /// The request was refused; the relay closes the connection after this frame.
    ///
    /// Frozen across protocol versions (variant index 3, then `code`, then `message`): a relay
    /// answers a client of any other version with it, so the client can show why.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation, safe to show to the user as is.
        message: String,
    },
    /// The relay wants proof that the client holds a token: the client answers with one
    /// [`Proof`] frame, and the relay then gives its real reply.
    Challenge {
        /// Fresh for every connection, so a recorded proof is worth nothing on another.
        nonce: [u8; 32],
    },
    /// This relay does not hold what was asked for; another one does. The client may connect
    /// there and ask again, once.
    Redirect {
        /// The other relay's control address, `HOST:PORT`.
        to: String,
    },
}

/// The tunnels a relay granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Relay-unique id of this session, for correlating logs on both sides.
    pub session_id: u64,
    /// One per requested tunnel, in the same order.
    pub tunnels: Vec<Grant>,
    /// Host name to advertise, when the relay operator configured one. Without it the client
    /// advertises the host it dialed.
    pub public_host: Option<String>,
    /// Most visitors the relay lets in at once on each tunnel.
    pub max_visitors: u32,
    /// How often the client must send [`ClientControl::Ping`] on the control substream.
    pub heartbeat_interval_ms: u32,
    /// How long the relay keeps a lost session's ports for it (0: it does not).
    pub lease_ttl_ms: u32,
}

/// One granted tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The public port visitors connect to.
    pub public_port: u16,
    /// Presented after a lost session to get the same port back; `None` when the relay keeps
    /// no leases.
    pub lease: Option<LeaseSecret>,
}

/// Why a relay refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The client's preface carried another protocol version.
    VersionMismatch,
    /// A frame could not be decoded or broke a limit.
    BadRequest,
    /// The relay is at its session or offer limit.
    Busy,
    /// Every public port in the relay's range is taken.
    NoFreePort,
    /// No offer is registered under that nameplate (never was, expired, or already claimed).
    UnknownNameplate,
    /// The sender went away before the transfer could start.
    PeerGone,
    /// The relay is shutting down.
    ShuttingDown,
    /// Something failed inside the relay.
    Internal,
    /// The relay requires a token, and none or a wrong one was presented.
    Unauthorized,
    /// The token does not allow this (a port outside its range, too many tunnels, transfers).
    Forbidden,
    /// The relay accepts only TLS connections.
    TlsRequired,
}

impl ErrorCode {
    /// Whether trying again later cannot help (so a reconnecting client should stop).
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            ErrorCode::VersionMismatch
                | ErrorCode::BadRequest
                | ErrorCode::Unauthorized
                | ErrorCode::Forbidden
                | ErrorCode::TlsRequired
        )
    }
}

/// Written by the relay as the first frame of every substream it opens: one visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorHeader {
    /// Relay-unique id of the visitor, for logs on both sides.
    pub visitor_id: u64,
    /// Which tunnel the visitor came through: an index into the hello's `tunnels`.
    pub tunnel: u16,
    /// The address on the relay the visitor connected to (its end of the public port), for
    /// PROXY protocol headers and logs.
    pub relay_addr: SocketAddr,
    /// Address the visitor connected from.
    pub peer_addr: SocketAddr,
}

/// The client's immediate answer to a [`VisitorHeader`], before any data. Answering at once
/// matters: yamux acknowledges a stream only with the first frame the peer sends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisitorReply {
    /// Raw bytes follow in both directions.
    Accepted,
    /// The client cannot serve this visitor; the relay closes it.
    Refused {
        /// Shown in the relay's log.
        reason: String,
    },
}

/// Client to relay, on the control substream the client opens right after [`Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientControl {
    /// Liveness probe; the relay answers with [`RelayControl::Pong`] carrying the same number.
    Ping(u64),
    /// The client is stopping on purpose: the relay frees its ports at once instead of keeping
    /// them leased. Sent just before the client closes.
    Goodbye,
    /// The client takes no more visitors on one tunnel (its listener is gone, or it asked to
    /// stop), but keeps the session for the visitors inside. The relay turns new visitors of
    /// that tunnel away at once; the session and its other tunnels go on.
    StopAccepting {
        /// Which tunnel: an index into the hello's `tunnels`.
        tunnel: u16,
    },
    /// Version 3. The client dropped this visitor's stream after closing its own side, before
    /// the relay closed the other: yamux tells the relay nothing in that state, so this does.
    /// The relay ends the visitor at once (its connection is reset); whatever the relay still
    /// writes on the stream would never be read. An id the relay no longer knows is ignored.
    Reset {
        /// The visitor, as its [`VisitorHeader`] named it.
        visitor_id: u64,
    },
}

/// Relay to client, on the control substream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayControl {
    /// Answer to [`ClientControl::Ping`].
    Pong(u64),
    /// The relay is going away; the session ends shortly.
    Shutdown {
        /// Human-readable reason.
        reason: String,
    },
    /// The relay no longer accepts the token this session was opened with; the session ends
    /// now, and reconnecting with the same token will be refused.
    Revoked {
        /// Human-readable reason.
        reason: String,
    },
    /// Version 3, never sent to a version-2 client. The relay dropped this visitor's stream
    /// (the visitor went away) after closing its own side of it: yamux tells the client
    /// nothing in that state, so this does. The client drops its side too; reads and writes on
    /// it fail with a reset, and nothing written on it will be read. An id the client no longer
    /// knows is ignored (the stream may have ended normally meanwhile).
    Reset {
        /// The visitor, as its [`VisitorHeader`] named it.
        visitor_id: u64,
    },
}

/// Sender to relay, on a connection that made an offer, until the pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SenderMessage {
    /// Liveness probe, answered with [`OfferEvent::Pong`].
    Ping(u64),
    /// Answer to [`OfferEvent::Paired`]: the last frame; raw bytes follow.
    PairedAck,
}

/// Relay to sender, on a connection that made an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferEvent {
    /// Answer to [`SenderMessage::Ping`].
    Pong(u64),
    /// A receiver claimed the nameplate. The sender answers [`SenderMessage::PairedAck`], and
    /// from the next byte on the connection carries the receiver's raw bytes.
    Paired,
    /// The offer is withdrawn (relay shutting down); the connection closes after this frame.
    Closed {
        /// Human-readable reason.
        reason: String,
    },
}

/// Splits a preface into its magic and version; `None` when the magic is wrong.
pub fn parse_preface(preface: &[u8; PREFACE_LEN]) -> Option<u16> {
    let (magic, version) = preface.split_at(MAGIC.len());
    (magic == MAGIC).then(|| u16::from_be_bytes([version[0], version[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_round_trips() {
        assert_eq!(parse_preface(&PREFACE), Some(PROTOCOL_VERSION));
        let mut other = PREFACE;
        other[PREFACE_LEN - 1] ^= 0xff;
        assert_eq!(parse_preface(&other), Some(PROTOCOL_VERSION ^ 0xff));
        assert_eq!(parse_preface(b"GET / HT"), None);
        assert_eq!(parse_preface(&preface(2)), Some(2));
        assert!(is_served(2) && is_served(3) && !is_served(1) && !is_served(4));
    }

    #[test]
    fn nameplate_rules() {
        assert!(nameplate::is_valid("7"));
        assert!(nameplate::is_valid(&nameplate::MAX_VALUE.to_string()));
        assert_eq!(
            nameplate::MAX_VALUE.to_string().len(),
            nameplate::MAX_DIGITS
        );
        for bad in ["", "0", "007", "1234567890123", "12a", "-1", "١"] {
            assert!(!nameplate::is_valid(bad), "{bad:?}");
            assert!(nameplate::problem(bad).is_some(), "{bad:?}");
        }
        assert!(
            nameplate::problem("1234567890123")
                .unwrap()
                .contains("at most 12 digits")
        );
    }

    #[test]
    fn visitor_cap_leaves_headroom_below_the_mux_limit() {
        assert!((MAX_VISITORS_PER_TUNNEL as usize) < MUX_MAX_STREAMS - 100);
    }
}
