//! The byte traces of `docs/protocol.md`: what each side writes, step by step, built with the
//! real codec. The yamux frame headers are built here from the yamux specification; the live
//! test (`live.rs`) checks them against what rust-yamux really writes.

use relay_core::protocol::*;

use super::examples::*;

/// One step of a trace: who writes, what it is, the bytes.
pub type Step = (&'static str, String, Vec<u8>);

pub const CLIENT: &str = "client>relay";
pub const RELAY: &str = "relay>client";
pub const SENDER: &str = "sender>relay";
pub const TO_SENDER: &str = "relay>sender";
pub const RECEIVER: &str = "receiver>relay";
pub const TO_RECEIVER: &str = "relay>receiver";

pub const DATA: u8 = 0;
pub const PING: u8 = 2;
pub const SYN: u16 = 1;
pub const ACK: u16 = 2;
pub const FIN: u16 = 4;

/// A yamux frame: version 0, type, flags, stream id, length (all big-endian), then the body.
pub fn yamux(kind: u8, flags: u16, stream: u32, body: &[u8]) -> Vec<u8> {
    let len = if kind == PING { 0 } else { body.len() as u32 };
    let mut out = vec![0, kind];
    out.extend(flags.to_be_bytes());
    out.extend(stream.to_be_bytes());
    out.extend(len.to_be_bytes());
    out.extend(body);
    out
}

fn step(who: &'static str, what: &str, bytes: Vec<u8>) -> Step {
    (who, what.to_string(), bytes)
}

/// The visitor's bytes in the tunnel trace, echoed back by the client.
pub const GREETING: &[u8] = b"hello\n";

/// A tunnel session on a relay that requires a token: handshake, the first yamux frames, the
/// control stream's first ping, and one visitor that sends a line, gets it back, and leaves.
pub fn tunnel() -> Vec<Step> {
    let hello = one_tunnel();
    let header = visitor_header(2, addr(RELAY_SIDE), addr(VISITOR));
    vec![
        step(CLIENT, "preface", PREFACE.to_vec()),
        step(CLIENT, "Hello::Tunnel { [ {None, None} ] }", frame(&hello)),
        step(RELAY, "preface", PREFACE.to_vec()),
        step(
            RELAY,
            "Reply::Challenge { nonce }",
            frame(&Reply::Challenge { nonce: NONCE }),
        ),
        step(
            CLIENT,
            "Proof { key_id, mac }",
            frame(&proof(&NONCE, &hello)),
        ),
        step(
            RELAY,
            "Reply::Welcome",
            frame(&welcome(1, PUBLIC_PORT, Some(lease()))),
        ),
        step(
            RELAY,
            "yamux Ping|SYN, opaque 0 (RTT probe)",
            yamux(PING, SYN, 0, &[]),
        ),
        step(CLIENT, "yamux Ping|SYN, opaque 0", yamux(PING, SYN, 0, &[])),
        step(
            CLIENT,
            "Data|SYN stream 1: ClientControl::Ping(0)",
            yamux(DATA, SYN, 1, &frame(&ClientControl::Ping(0))),
        ),
        step(CLIENT, "Ping|ACK, opaque 0", yamux(PING, ACK, 0, &[])),
        step(RELAY, "Ping|ACK, opaque 0", yamux(PING, ACK, 0, &[])),
        step(
            RELAY,
            "Data|ACK stream 1: RelayControl::Pong(0)",
            yamux(DATA, ACK, 1, &frame(&RelayControl::Pong(0))),
        ),
        step(
            RELAY,
            "Data|SYN stream 2: VisitorHeader",
            yamux(DATA, SYN, 2, &frame(&header)),
        ),
        step(
            RELAY,
            "Data stream 2: the visitor's bytes",
            yamux(DATA, 0, 2, GREETING),
        ),
        step(
            CLIENT,
            "Data|ACK stream 2: VisitorReply::Accepted",
            yamux(DATA, ACK, 2, &frame(&VisitorReply::Accepted)),
        ),
        step(
            CLIENT,
            "Data stream 2: the answer",
            yamux(DATA, 0, 2, GREETING),
        ),
        step(
            RELAY,
            "Data|FIN stream 2: the visitor closed",
            yamux(DATA, FIN, 2, &[]),
        ),
        step(
            CLIENT,
            "Data|FIN stream 2: the client closed",
            yamux(DATA, FIN, 2, &[]),
        ),
    ]
}

/// A transfer without a token: offer, one heartbeat, claim, pairing, a few raw bytes each way.
pub fn transfer() -> Vec<Step> {
    let mut ack_and_bytes = frame(&SenderMessage::PairedAck);
    ack_and_bytes.extend(b"hi");
    let mut paired_and_bytes = PREFACE.to_vec();
    paired_and_bytes.extend(frame(&Reply::Paired));
    paired_and_bytes.extend(b"hi");
    let mut send = PREFACE.to_vec();
    send.extend(frame(&Hello::Send));
    let mut offered = PREFACE.to_vec();
    offered.extend(frame(&Reply::Offered {
        nameplate: NAMEPLATE.into(),
        heartbeat_interval_ms: 10_000,
    }));
    let mut receive = PREFACE.to_vec();
    receive.extend(frame(&Hello::Receive {
        nameplate: NAMEPLATE.into(),
    }));
    vec![
        step(SENDER, "preface, Hello::Send", send),
        step(
            TO_SENDER,
            "preface, Reply::Offered { \"4821\", 10000 }",
            offered,
        ),
        step(
            SENDER,
            "SenderMessage::Ping(1)",
            frame(&SenderMessage::Ping(1)),
        ),
        step(
            TO_SENDER,
            "OfferEvent::Pong(1)",
            frame(&OfferEvent::Pong(1)),
        ),
        step(RECEIVER, "preface, Hello::Receive { \"4821\" }", receive),
        step(TO_SENDER, "OfferEvent::Paired", frame(&OfferEvent::Paired)),
        step(
            SENDER,
            "SenderMessage::PairedAck, then raw \"hi\"",
            ack_and_bytes,
        ),
        step(
            TO_RECEIVER,
            "preface, Reply::Paired, then \"hi\"",
            paired_and_bytes,
        ),
        step(RECEIVER, "raw \"ok\"", b"ok".to_vec()),
        step(TO_SENDER, "raw \"ok\"", b"ok".to_vec()),
    ]
}

pub fn all() -> Vec<(&'static str, Vec<Step>)> {
    vec![("trace-tunnel", tunnel()), ("trace-transfer", transfer())]
}
