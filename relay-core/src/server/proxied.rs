//! PROXY protocol headers (v1 text, v2 binary) from load balancers the operator trusts.
//!
//! A connection from a trusted address must open with a header naming the real client or
//! visitor; from anyone else a header is not honoured (on the control port it is the garbage
//! it looks like, on a public port it is the visitor's own bytes). The header is read with
//! exact-length reads, so not one byte past it leaves the socket: the first-byte TLS sniff on
//! the control port, and the visitor's data on a public port, start right after it.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest v1 header, `\r\n` included (the PROXY protocol's own bound).
const V1_MAX: usize = 107;
/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v2 address block plus TLVs accepted. HAProxy's `send-proxy-v2` sends 12 (IPv4) or
/// 36 (IPv6) bytes; its optional TLVs (`proxy-v2-options`) stay far below this.
const V2_MAX_BODY: usize = 512;

/// Addresses whose connections carry a PROXY header: IPv4 or IPv6 networks (`10.0.0.0/8`,
/// `2001:db8::/32`) or single addresses (`10.0.0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet(IpNet);

impl FromStr for TrustedNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let net = if s.contains('/') {
            IpNet::from_str(s).map_err(|_| {
                format!(
                    "'{s}' is not a network: expected ADDRESS/PREFIX like 10.0.0.0/24 or fd00::/64"
                )
            })?
        } else {
            let ip = IpAddr::from_str(s).map_err(|_| {
                format!("'{s}' is not an IP address or network (like 10.0.0.5 or 10.0.0.0/24)")
            })?;
            IpNet::from(ip)
        };
        Ok(TrustedNet(net.trunc()))
    }
}

impl fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TrustedNet {
    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// Whether a connection from `ip` must start with a PROXY header.
pub(super) fn is_trusted(nets: &[TrustedNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

/// Who is really on the other end of a connection from a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Relayed for a client or visitor: its address, and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy speaking for itself (v2 `LOCAL`, v1 `UNKNOWN`, or a family without
    /// addresses): a health check, to be served as a connection from the proxy.
    Local,
    /// Closed before a single byte: a connect-only health check.
    Closed,
}

/// Why a trusted connection's header was not accepted.
#[derive(Debug, thiserror::Error)]
pub(super) enum HeaderError {
    #[error("a connection from a trusted proxy did not start with a PROXY header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("PROXY v2 header of {0} bytes is longer than the {V2_MAX_BODY} accepted")]
    TooLong(usize),
    #[error("connection lost in its PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads one PROXY header (v1 or v2) and nothing after it. The caller bounds it with a
/// deadline; dropping it midway loses the connection, which is then closed anyway.
pub(super) async fn read_header<S: AsyncRead + Unpin>(sock: &mut S) -> Result<Origin, HeaderError> {
    // Both forms are at least 12 bytes long (`PROXY UNKNOWN\r\n` is 15), so the first 12 bytes
    // tell them apart without reading into what follows.
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match sock.read(&mut head[got..12]).await? {
            0 if got == 0 => return Ok(Origin::Closed),
            0 => return Err(HeaderError::Missing),
            n => got += n,
        }
    }
    if head[..12] == V2_SIGNATURE {
        sock.read_exact(&mut head[12..16]).await?;
        let body = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if body > V2_MAX_BODY {
            return Err(HeaderError::TooLong(body));
        }
        let mut whole = Vec::with_capacity(16 + body);
        whole.extend_from_slice(&head);
        whole.resize(16 + body, 0);
        sock.read_exact(&mut whole[16..]).await?;
        let header =
            v2::Header::try_from(&whole[..]).map_err(|e| HeaderError::Malformed(e.to_string()))?;
        return Ok(v2_origin(&header));
    }
    if !head.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    let mut line = head[..12].to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(HeaderError::Malformed(format!(
                "v1 header longer than {V1_MAX} bytes"
            )));
        }
        let mut byte = [0u8; 1];
        sock.read_exact(&mut byte).await?;
        line.push(byte[0]);
    }
    let header =
        ppp::v1::Header::try_from(&line[..]).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Origin::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        ppp::v1::Addresses::Tcp6(a) => proxied(
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        ppp::v1::Addresses::Unknown => Origin::Local,
    })
}

fn v2_origin(header: &v2::Header<'_>) -> Origin {
    if header.command == v2::Command::Local {
        return Origin::Local;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Origin::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v2::Addresses::IPv6(a) => proxied(
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        // No addresses to honour: the specification says to use the connection's own.
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Origin::Local,
    }
}

fn proxied(source: SocketAddr, destination: SocketAddr) -> Origin {
    Origin::Proxied {
        source: crate::net::canonical(source),
        destination: crate::net::canonical(destination),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Origin, HeaderError>, Vec<u8>) {
        let mut sock = bytes;
        let origin = read_header(&mut sock).await;
        (origin, sock.to_vec())
    }

    fn v2(command: v2::Command, src: &str, dst: &str) -> Vec<u8> {
        let addrs: (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, addrs)
            .build()
            .unwrap()
    }

    #[test]
    fn networks_and_single_addresses_parse() {
        let net: TrustedNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().unwrap()),
            "mapped IPv4"
        );
        let one: TrustedNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: TrustedNet = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains("fd00:1::42".parse().unwrap()));
        assert!(!v6.contains("fd00:2::42".parse().unwrap()));
        assert_eq!(
            "10.1.2.3/8".parse::<TrustedNet>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8", "::1/129"] {
            let e = bad.parse::<TrustedNet>().unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[tokio::test]
    async fn v2_and_v1_headers_leave_what_follows_untouched() {
        let mut bytes = v2(v2::Command::Proxy, "203.0.113.7:4242", "198.51.100.1:8080");
        bytes.extend_from_slice(b"\x16rest");
        let (origin, rest) = read(&bytes).await;
        let want = Origin::Proxied {
            source: "203.0.113.7:4242".parse().unwrap(),
            destination: "198.51.100.1:8080".parse().unwrap(),
        };
        assert_eq!(origin.unwrap(), want);
        assert_eq!(
            rest, b"\x16rest",
            "the TLS byte after the header is still there"
        );

        let (origin, rest) = read(b"PROXY TCP4 203.0.113.7 198.51.100.1 4242 8080\r\nRELAY").await;
        assert_eq!(origin.unwrap(), want);
        assert_eq!(rest, b"RELAY");

        let (origin, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n").await;
        assert!(matches!(origin.unwrap(), Origin::Proxied { source, .. } if source.port() == 1));
    }

    #[tokio::test]
    async fn health_checks_are_told_apart() {
        let (origin, _) = read(b"").await;
        assert_eq!(origin.unwrap(), Origin::Closed, "a connect-only check");
        let local = v2(v2::Command::Local, "10.0.0.1:1", "10.0.0.2:2");
        assert_eq!(read(&local).await.0.unwrap(), Origin::Local);
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0.unwrap(), Origin::Local);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let (e, _) = read(b"RELAY\0\0\x02hello from a client").await;
        assert!(matches!(e, Err(HeaderError::Missing)), "{e:?}");
        let (e, _) = read(b"PROXY TCP4 nonsense here 1 2\r\n").await;
        assert!(matches!(e, Err(HeaderError::Malformed(_))), "{e:?}");
        let (e, _) = read(&[b'P'; 300]).await;
        assert!(matches!(e, Err(HeaderError::Missing)), "{e:?}");
        let (e, _) = read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 and on and on and on and on and on and on and on and on and on and on and on").await;
        assert!(e.is_err(), "{e:?}");
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let (e, _) = read(&long).await;
        assert!(matches!(e, Err(HeaderError::TooLong(65535))), "{e:?}");
        let (e, _) = read(b"PROXY TCP4 1.2").await;
        assert!(e.is_err(), "a cut-off header: {e:?}");
    }
}
