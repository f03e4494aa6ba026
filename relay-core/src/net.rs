//! Socket set-up shared by the relay and its clients: addresses, listeners, TCP options.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::error::{Error, Result};

/// Listen backlog for public and control listeners. tokio's default (1024) overflowed in bursts
/// of a few thousand connects; the kernel still caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 8192;

/// Idle time before the kernel starts probing a silent peer.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Interval between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel drops the connection.
const KEEPALIVE_RETRIES: u32 = 3;
/// How long written data may stay unacknowledged before the kernel gives up on the peer.
const USER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for a TCP connection to the relay to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits `HOST:PORT` or `[V6]:PORT` into host and port.
///
/// ```
/// use relay_core::net::split_host_port;
/// assert_eq!(split_host_port("localhost:8080").unwrap(), ("localhost".to_string(), 8080));
/// assert_eq!(split_host_port("[::1]:9021").unwrap(), ("::1".to_string(), 9021));
/// assert!(split_host_port("localhost").is_err());
/// ```
pub fn split_host_port(s: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, rest) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{s}': missing ']' after an IPv6 address"))?;
        let port = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("'{s}': expected ':PORT' after ']'"))?;
        (host, port)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("'{s}': expected HOST:PORT"))?
    };
    if host.contains(':') && !s.starts_with('[') {
        return Err(format!("'{s}': write IPv6 addresses as [ADDRESS]:PORT"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("'{s}': '{port}' is not a port number (0-65535)"))?;
    Ok((host.to_string(), port))
}

/// Parses a TCP port number (1-65535).
pub fn parse_port(s: &str) -> std::result::Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed here".to_string()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("'{s}' is not a port number (1-65535)")),
    }
}

/// Joins a host and a port, bracketing IPv6 literals: `("::1", 80)` gives `[::1]:80`.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Binds a listener with `SO_REUSEADDR` and a large backlog. An unspecified IPv6 address is
/// bound dual-stack, so one listener serves both families.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        SockRef::from(&socket).set_only_v6(false)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds a listener on every interface: IPv6 dual-stack where the machine has IPv6, else IPv4.
pub fn bind_all_interfaces(port: u16) -> io::Result<TcpListener> {
    bind_listener(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).or_else(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            return Err(e);
        }
        bind_listener(SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port,
        ))
    })
}

/// Options for a long-lived connection between a client and the relay: dead-peer detection by
/// keepalive probes and `TCP_USER_TIMEOUT`, and no Nagle delay for small control frames.
pub fn tune_session_socket(stream: &TcpStream) {
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    // Failures only cost dead-peer detection speed; heartbeats still catch a dead peer.
    let _ = sock.set_tcp_keepalive(&keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = sock.set_tcp_user_timeout(Some(USER_TIMEOUT));
    let _ = stream.set_nodelay(true);
}

/// Options for a visitor or local-service connection: bytes go out as soon as they arrive, since
/// the relay cannot know which writes are latency-sensitive.
pub fn tune_data_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Makes the next close of `stream` send a TCP reset instead of a FIN, so the peer sees an
/// abort rather than a clean (and possibly truncated) end of stream.
pub fn reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Shows IPv4 peers of a dual-stack listener as plain IPv4 (`1.2.3.4`, not `::ffff:1.2.3.4`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Connects to `addr` (`HOST:PORT`, names resolved, every address tried) within
/// [`CONNECT_TIMEOUT`].
pub async fn connect(addr: &str) -> Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Connect {
            addr: addr.to_string(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {CONNECT_TIMEOUT:?}"),
            ),
        })?
        .map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("[2001:db8::1]:443").expect("v6"),
            ("2001:db8::1".to_string(), 443)
        );
        assert!(split_host_port("::1:80").is_err());
        assert_eq!(
            split_host_port("host:0").expect("any port"),
            ("host".into(), 0)
        );
        assert!(split_host_port("host:99999").is_err());
        assert!(split_host_port("[::1]80").is_err());
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("localhost", 80), "localhost:80");
    }
}
