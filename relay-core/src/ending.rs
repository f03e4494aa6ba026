//! Why a session ended: one type for the client's errors, the relay's logs, and later metrics.

use std::fmt;
use std::time::Duration;

/// Why a tunnel session, or an offer waiting for its receiver, ended.
///
/// `Display` speaks from the client's side ("the relay stopped answering"); the relay's logs
/// use [`label`](SessionEnd::label) plus the variant's details.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The relay is shutting down, in its own words.
    RelayShutdown(String),
    /// The relay withdrew the offer (it expired, or the relay is going away), in its own words.
    Withdrawn(String),
    /// The peer stopped answering heartbeats.
    PeerSilent {
        /// How long nothing was heard.
        silent_for: Duration,
    },
    /// This process was not running for a while (stopped, or the machine asleep), and the
    /// session did not survive it.
    Suspended {
        /// How long this process did not run.
        stalled: Duration,
    },
    /// The peer closed the connection without saying why.
    PeerClosed,
    /// The peer ended the session on purpose (a client that stops says goodbye).
    PeerLeft,
    /// A new connection of the same client took its tunnels over.
    Replaced,
    /// The connection failed (reset, or an I/O error).
    ConnectionLost(String),
    /// The peer broke the protocol.
    Protocol(String),
    /// This side ended it (the listener was dropped, or a shutdown was asked for).
    Closed,
    /// The relay no longer accepts this client's token (it was removed from the relay's
    /// tokens), in the relay's words. Reconnecting cannot help.
    Revoked(String),
    /// Reconnecting, the relay refused for a reason that will not go away (a token it no
    /// longer accepts, for example).
    Refused {
        /// Machine-readable reason.
        code: crate::protocol::ErrorCode,
        /// The relay's explanation.
        message: String,
    },
}

/// Which side's point of view a description takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Relay,
    Client,
    Sender,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Relay => "relay",
            Peer::Client => "client",
            Peer::Sender => "sender",
        }
    }
}

impl SessionEnd {
    /// A short, stable name for logs and metrics: `relay_shutdown`, `peer_silent`, ...
    pub fn label(&self) -> &'static str {
        match self {
            SessionEnd::RelayShutdown(_) => "relay_shutdown",
            SessionEnd::Withdrawn(_) => "withdrawn",
            SessionEnd::PeerSilent { .. } => "peer_silent",
            SessionEnd::Suspended { .. } => "suspended",
            SessionEnd::PeerClosed => "peer_closed",
            SessionEnd::PeerLeft => "peer_left",
            SessionEnd::Replaced => "replaced",
            SessionEnd::ConnectionLost(_) => "connection_lost",
            SessionEnd::Protocol(_) => "protocol_error",
            SessionEnd::Closed => "closed",
            SessionEnd::Refused { .. } => "refused",
            SessionEnd::Revoked(_) => "revoked",
        }
    }

    /// Whether the relay is going away on purpose (so a draining session keeps its streams).
    pub fn is_relay_shutdown(&self) -> bool {
        matches!(self, SessionEnd::RelayShutdown(_))
    }

    /// Describes the ending as seen from the side whose peer is `peer`.
    pub(crate) fn seen_by(&self, peer: Peer) -> impl fmt::Display + '_ {
        Described { end: self, peer }
    }
}

struct Described<'a> {
    end: &'a SessionEnd,
    peer: Peer,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = self.peer.name();
        match self.end {
            SessionEnd::RelayShutdown(why) => write!(f, "the relay shut down ({why})"),
            SessionEnd::Withdrawn(why) => write!(f, "the relay withdrew the offer: {why}"),
            SessionEnd::PeerSilent { silent_for } => {
                write!(
                    f,
                    "the {peer} stopped answering heartbeats for {silent_for:.0?}"
                )
            }
            SessionEnd::Suspended { stalled } => write!(
                f,
                "this process did not run for {stalled:.0?} (stopped, or the machine asleep), \
                 and the {peer} ended the session meanwhile"
            ),
            SessionEnd::PeerClosed => write!(f, "the {peer} closed the connection"),
            SessionEnd::PeerLeft => write!(f, "the {peer} ended the session"),
            SessionEnd::Replaced => f.write_str("a newer connection took the tunnels over"),
            SessionEnd::ConnectionLost(why) => {
                write!(f, "the connection to the {peer} failed: {why}")
            }
            SessionEnd::Protocol(why) => write!(f, "the {peer} broke the protocol: {why}"),
            SessionEnd::Closed => f.write_str("closed by this side"),
            SessionEnd::Revoked(why) => write!(f, "the relay ended the session: {why}"),
            SessionEnd::Refused { message, .. } => {
                write!(f, "the {peer} refused to take the client back: {message}")
            }
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.seen_by(Peer::Relay).fmt(f)
    }
}
