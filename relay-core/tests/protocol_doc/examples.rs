//! What every example in `docs/protocol.md` must hold, built with the real codec.

use std::net::SocketAddr;

use relay_core::auth::{NO_BINDING, Token};
use relay_core::codec::{LEN_PREFIX, encode};
use relay_core::protocol::*;
use serde::Serialize;

/// The token of the examples (never a real one).
pub const TOKEN: &str = "correct horse battery staple";
/// The nonce of the example challenge: bytes 0 to 31, easy to spot in a trace.
pub const NONCE: [u8; 32] = {
    let mut n = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        n[i] = i as u8;
        i += 1;
    }
    n
};
/// The example lease secret: bytes a0 to af.
pub const LEASE: [u8; 16] = {
    let mut n = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        n[i] = 0xa0 + i as u8;
        i += 1;
    }
    n
};
pub const PUBLIC_PORT: u16 = 8081;
pub const VISITOR: &str = "203.0.113.7:51000";
pub const RELAY_SIDE: &str = "198.51.100.1:8081";
pub const NAMEPLATE: &str = "4821";

pub fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
    encode(msg).expect("every example encodes")
}

fn body<T: Serialize>(msg: &T) -> Vec<u8> {
    frame(msg)[LEN_PREFIX..].to_vec()
}

pub fn lease() -> LeaseSecret {
    relay_core::codec::decode(&LEASE).expect("16 bytes are a lease secret")
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("example address")
}

pub fn one_tunnel() -> Hello {
    Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: None,
            lease: None,
        }],
    }
}

/// The proof for `hello` under the example token and nonce, over plain TCP.
pub fn proof(nonce: &[u8; 32], hello: &Hello) -> Proof {
    let token = Token::new(TOKEN).expect("token");
    token.prove(nonce, &NO_BINDING, &body(hello))
}

pub fn welcome(session_id: u64, port: u16, lease: Option<LeaseSecret>) -> Reply {
    Reply::Welcome(Welcome {
        session_id,
        tunnels: vec![Grant {
            public_port: port,
            lease,
        }],
        public_host: None,
        max_visitors: 16_000,
        heartbeat_interval_ms: 10_000,
        lease_ttl_ms: 30_000,
    })
}

pub fn visitor_header(id: u64, relay_addr: SocketAddr, peer_addr: SocketAddr) -> VisitorHeader {
    VisitorHeader {
        visitor_id: id,
        tunnel: 0,
        relay_addr,
        peer_addr,
    }
}

/// Every single-message example: its name in the document and its bytes.
pub fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let reason = |s: &str| s.to_string();
    let varints: Vec<u8> = [0u64, 250, 251, 8081, 65_535, 65_536, 1 << 32, u64::MAX]
        .iter()
        .flat_map(body)
        .collect();
    vec![
        ("preface", PREFACE.to_vec()),
        ("preface-v2", preface(2).to_vec()),
        ("varints", varints),
        ("hello-tunnel", frame(&one_tunnel())),
        (
            "hello-tunnel-two",
            frame(&Hello::Tunnel {
                tunnels: vec![
                    TunnelRequest {
                        preferred_port: Some(PUBLIC_PORT),
                        lease: Some(lease()),
                    },
                    TunnelRequest {
                        preferred_port: Some(250),
                        lease: None,
                    },
                ],
            }),
        ),
        ("hello-send", frame(&Hello::Send)),
        (
            "hello-receive",
            frame(&Hello::Receive {
                nameplate: NAMEPLATE.into(),
            }),
        ),
        (
            "reply-welcome",
            frame(&welcome(1, PUBLIC_PORT, Some(lease()))),
        ),
        (
            "reply-welcome-host",
            frame(&Reply::Welcome(Welcome {
                session_id: 300,
                tunnels: vec![
                    Grant {
                        public_port: PUBLIC_PORT,
                        lease: None,
                    },
                    Grant {
                        public_port: 8082,
                        lease: None,
                    },
                ],
                public_host: Some("relay.example.com".into()),
                max_visitors: 100,
                heartbeat_interval_ms: 10_000,
                lease_ttl_ms: 0,
            })),
        ),
        (
            "reply-offered",
            frame(&Reply::Offered {
                nameplate: NAMEPLATE.into(),
                heartbeat_interval_ms: 10_000,
            }),
        ),
        ("reply-paired", frame(&Reply::Paired)),
        (
            "reply-error-frozen",
            frame(&Reply::Error {
                code: ErrorCode::VersionMismatch,
                message: "v".into(),
            }),
        ),
        (
            "reply-error-unauthorized",
            frame(&Reply::Error {
                code: ErrorCode::Unauthorized,
                message: "no".into(),
            }),
        ),
        ("reply-challenge", frame(&Reply::Challenge { nonce: NONCE })),
        (
            "reply-redirect",
            frame(&Reply::Redirect {
                to: "relay2.example.com:8080".into(),
            }),
        ),
        ("proof", frame(&proof(&NONCE, &one_tunnel()))),
        ("client-ping-0", frame(&ClientControl::Ping(0))),
        ("client-ping-251", frame(&ClientControl::Ping(251))),
        ("client-goodbye", frame(&ClientControl::Goodbye)),
        (
            "client-stop-accepting",
            frame(&ClientControl::StopAccepting { tunnel: 1 }),
        ),
        (
            "client-reset",
            frame(&ClientControl::Reset { visitor_id: 300 }),
        ),
        ("relay-pong-0", frame(&RelayControl::Pong(0))),
        (
            "relay-shutdown",
            frame(&RelayControl::Shutdown {
                reason: reason("relay is shutting down"),
            }),
        ),
        (
            "relay-revoked",
            frame(&RelayControl::Revoked {
                reason: reason("revoked"),
            }),
        ),
        ("relay-reset", frame(&RelayControl::Reset { visitor_id: 2 })),
        (
            "visitor-header",
            frame(&visitor_header(2, addr(RELAY_SIDE), addr(VISITOR))),
        ),
        (
            "visitor-header-v6",
            frame(&VisitorHeader {
                visitor_id: 70_000,
                tunnel: 3,
                relay_addr: addr("[2001:db8::1]:443"),
                peer_addr: addr("[2001:db8::7]:51000"),
            }),
        ),
        ("visitor-accepted", frame(&VisitorReply::Accepted)),
        (
            "visitor-refused",
            frame(&VisitorReply::Refused {
                reason: reason("local server down"),
            }),
        ),
        ("sender-ping-1", frame(&SenderMessage::Ping(1))),
        ("sender-paired-ack", frame(&SenderMessage::PairedAck)),
        ("offer-pong-1", frame(&OfferEvent::Pong(1))),
        ("offer-paired", frame(&OfferEvent::Paired)),
        (
            "offer-closed",
            frame(&OfferEvent::Closed {
                reason: reason("bye"),
            }),
        ),
    ]
}
