//! [`PublicAddr`]: where visitors reach a tunnel. A value type of its own because it travels:
//! the listener hands it out, the session's supervisor publishes a new one when a reconnect
//! could not keep the port, and the axum glue reports it as the listener's address.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::net::{join_host_port, split_host_port};

/// Where visitors reach a tunnel: `host:port` (IPv6 hosts in brackets), what
/// `TcpListener::local_addr` is for a local listener.
///
/// It prints as `host:port` and parses back from it, and resolves like a `host:port` string:
///
/// ```
/// use relay_core::PublicAddr;
///
/// let addr: PublicAddr = "relay.example.com:40001".parse().unwrap();
/// assert_eq!((addr.host.as_str(), addr.port), ("relay.example.com", 40001));
/// assert_eq!(addr.to_string(), "relay.example.com:40001");
/// let v6: PublicAddr = "[::1]:40001".parse().unwrap();
/// assert_eq!((v6.host.as_str(), v6.to_string()), ("::1", "[::1]:40001".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicAddr {
    /// The relay's advertised host name, or the host the client dialed (an IPv6 address
    /// without brackets).
    pub host: String,
    /// The public port.
    pub port: u16,
}

impl fmt::Display for PublicAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join_host_port(&self.host, self.port))
    }
}

impl FromStr for PublicAddr {
    type Err = io::Error;

    /// Parses `host:port` or `[v6]:port`.
    fn from_str(s: &str) -> io::Result<Self> {
        let (host, port) =
            split_host_port(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PublicAddr { host, port })
    }
}

impl ToSocketAddrs for PublicAddr {
    type Iter = std::vec::IntoIter<SocketAddr>;

    /// Resolves the host (a blocking DNS lookup for a name), as `(host, port)` would.
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (self.host.as_str(), self.port).to_socket_addrs()
    }
}
