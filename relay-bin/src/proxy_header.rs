//! PROXY protocol headers (HAProxy's v1 text and v2 binary forms) that `expose` writes at the
//! start of every local connection, so the server behind the tunnel sees who really connected.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};

/// Which PROXY protocol header to send, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// `PROXY TCP4 ...\r\n`: text, understood by nearly everything.
    V1,
    /// The binary form: smaller, and what HAProxy, nginx and others prefer.
    V2,
}

/// The header for a visitor that connected from `visitor` to `relay` (the public address).
pub fn header(version: ProxyVersion, visitor: SocketAddr, relay: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(visitor, relay);
    let v1 = || {
        ppp::v1::Addresses::from((src, dst))
            .to_string()
            .into_bytes()
    };
    match version {
        ProxyVersion::V1 => v1(),
        // Building into memory only fails if writing to a `Vec` does, which it does not; the
        // text form is the fallback all the same, rather than a connection without a header.
        ProxyVersion::V2 => {
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
                .build()
                .unwrap_or_else(|_| v1())
        }
    }
}

/// Both addresses in one family (the header has one): IPv4 becomes IPv4-mapped IPv6 when the
/// other one is IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_one_text_line() {
        let h = header(
            ProxyVersion::V1,
            "203.0.113.7:54321".parse().expect("addr"),
            "198.51.100.1:8081".parse().expect("addr"),
        );
        assert_eq!(h, b"PROXY TCP4 203.0.113.7 198.51.100.1 54321 8081\r\n");
    }

    #[test]
    fn v2_carries_both_addresses_in_binary() {
        let h = header(
            ProxyVersion::V2,
            "203.0.113.7:54321".parse().expect("addr"),
            "198.51.100.1:8081".parse().expect("addr"),
        );
        let signature = b"\r\n\r\n\0\r\nQUIT\n";
        assert_eq!(&h[..12], signature);
        assert_eq!(h[12], 0x21, "version 2, PROXY command");
        assert_eq!(h[13], 0x11, "TCP over IPv4");
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 12);
        assert_eq!(&h[16..20], [203, 0, 113, 7]);
        assert_eq!(&h[20..24], [198, 51, 100, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 54321);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8081);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let h = header(
            ProxyVersion::V1,
            "203.0.113.7:1".parse().expect("addr"),
            "[2001:db8::1]:2".parse().expect("addr"),
        );
        assert_eq!(h, b"PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 1 2\r\n");
    }
}
