//! The relay says why it turns a client away, and ends a connection that breaks the rules.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::protocol::{ErrorCode, Reply};
use relay_core::{Error, RelayConfig, TunnelConfig, TunnelListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client that finds every handshake slot taken is told the relay is busy, instead of
/// finding a closed connection and guessing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_beyond_the_handshake_cap_is_told_the_relay_is_busy() {
    let relay = TestRelay::start(RelayConfig {
        max_handshakes: 2,
        per_addr: all_from_one_address(),
        ..RelayConfig::default()
    })
    .await;
    // Two connections that say nothing hold both slots until the handshake deadline (10 s).
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(relay.addr).await.expect("connect"));
    }
    let err = within("a refused client", async {
        // The relay may not have accepted the silent ones yet: try until it has.
        loop {
            match TunnelListener::connect(&relay.control(), TunnelConfig::default()).await {
                Ok(listener) => drop(listener),
                Err(e) => return e,
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    match &err {
        Error::Rejected {
            code: ErrorCode::Busy,
            message,
        } => assert!(
            message.contains("(2 connections in their handshake)"),
            "{message}"
        ),
        other => panic!("expected a Busy refusal, got {other:?}: {other}"),
    }
    assert!(err.to_string().contains("the relay is busy"), "{err}");
    // Once the silent ones are gone, clients get in again.
    drop(silent);
    within("a tunnel after the flood", async {
        loop {
            if TunnelListener::connect(&relay.control(), TunnelConfig::default())
                .await
                .is_ok()
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// yamux answers a frame that breaks its rules with GoAway and then carries on; the relay ends
/// the connection as the GoAway announced, instead of keeping it until heartbeats time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_breaks_the_yamux_rules_loses_its_connection_at_once() {
    let relay = TestRelay::start(RelayConfig {
        // Far beyond the test's deadline: only the GoAway can end the session in time.
        heartbeat_interval: Duration::from_secs(60),
        ..RelayConfig::default()
    })
    .await;
    let (conn, reply) = raw_hello(relay.addr, &one_tunnel()).await;
    assert!(matches!(reply, Reply::Welcome(_)), "{reply:?}");
    let (mut sock, _) = conn.into_parts();
    // A Ping with ACK that answers no ping of the relay's: version 0, type 2, flags ACK, stream
    // 0, opaque value.
    let bogus_pong = [0u8, 2, 0, 2, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    sock.write_all(&bogus_pong).await.expect("write");
    let started = Instant::now();
    let mut seen = Vec::new();
    let end = within("the relay to close the connection", async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    assert!(
        end.is_ok() || seen.chunks(12).any(|h| h.len() == 12 && h[1] == 3),
        "{end:?}"
    );
    // GoAway (type 3) with code 1, protocol error, among what the relay sent before closing.
    let goaway = seen
        .windows(12)
        .any(|h| h[0] == 0 && h[1] == 3 && h[8..12] == [0, 0, 0, 1]);
    assert!(goaway, "no protocol-error GoAway in {seen:02x?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
