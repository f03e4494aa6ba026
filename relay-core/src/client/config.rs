//! [`TunnelConfig`]: the settings of a tunnel client. A file of its own because two owners read
//! them: the listener when it opens the session, and the session's supervisor every time it
//! reconnects (backoff, ports to ask for again, backlog, timeouts).

use std::time::Duration;

use super::ConnectConfig;
use super::session::Reconnect;
use crate::auth::Token;
use crate::protocol::DEFAULT_HANDSHAKE_TIMEOUT;
use crate::tls::ClientTls;

/// Settings of a tunnel client. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Deadline for the handshake with the relay.
    pub handshake_timeout: Duration,
    /// The token the relay requires, if it requires one.
    pub token: Option<Token>,
    /// Speak TLS to the relay, checking its certificate this way; `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// Public port to ask for (granted when free); `None` takes any. For
    /// [`TunnelListener::connect`]; [`TunnelListener::connect_many`] takes one per tunnel.
    ///
    /// [`TunnelListener::connect`]: super::TunnelListener::connect
    /// [`TunnelListener::connect_many`]: super::TunnelListener::connect_many
    pub preferred_port: Option<u16>,
    /// What to do when the session is lost: by default reconnect with backoff, asking for the
    /// same ports again (the relay keeps them leased for a while).
    pub reconnect: Reconnect,
    /// Visitors announced but not yet taken up by `accept`, per tunnel; more are reset, like
    /// connections that find a full listen backlog. (The relay also resets a visitor that is
    /// not answered within its handshake timeout, 10 s by default.)
    pub accept_backlog: usize,
    /// How long a new substream may take to deliver its visitor header.
    pub header_timeout: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            token: None,
            tls: None,
            preferred_port: None,
            reconnect: Reconnect::default(),
            accept_backlog: 1024,
            header_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl TunnelConfig {
    pub(super) fn connect(&self) -> ConnectConfig {
        ConnectConfig {
            handshake_timeout: self.handshake_timeout,
            token: self.token.clone(),
            tls: self.tls.clone(),
        }
    }
}
