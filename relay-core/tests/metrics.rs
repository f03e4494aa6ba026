//! The relay's metrics after known traffic: counts, bytes while they move, refusals, failures.

mod common;

use std::time::Duration;

use common::*;
use relay_core::RelayConfig;
use relay_core::client::{claim, offer};
use relay_core::server::RelayMetrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The value of one series; fails the test if absent.
fn value(metrics: &RelayMetrics, series: &str) -> u64 {
    metric(metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{}", metrics.encode()))
}

const VISITORS_TOTAL: &str = r#"relay_visitors_total{token="-"}"#;
const VISITORS_OPEN: &str = r#"relay_visitors_open{token="-"}"#;
const BYTES_IN: &str = r#"relay_tunnel_bytes_total{direction="visitor_to_client",token="-"}"#;
const BYTES_OUT: &str = r#"relay_tunnel_bytes_total{direction="client_to_visitor",token="-"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_shows_the_right_counts() {
    let relay = TestRelay::start(RelayConfig {
        max_visitors_per_tunnel: 2,
        ..RelayConfig::default()
    })
    .await;
    let m = &relay.metrics;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let client = serve_echo(listener, b"hi".to_vec());
    until_metric(m, r#"relay_sessions_open{token="-"}"#, 1).await;
    assert_eq!(value(m, r#"relay_tunnels_open{token="-"}"#), 1);

    for (i, len) in [1000, 2000, 3000].into_iter().enumerate() {
        let back = within("visit", visit(addr, &payload(i as u64, len)))
            .await
            .expect("visit");
        assert_eq!(back.len(), len + 2);
    }
    assert_eq!(value(m, VISITORS_TOTAL), 3);
    // Counted right after each write, so a visitor may read the bytes a moment before.
    until_metric(m, BYTES_IN, 6000).await;
    until_metric(m, BYTES_OUT, 6006).await;
    until_metric(m, VISITORS_OPEN, 0).await;

    // Two visitors fill the tunnel; the third is refused at the visitor cap.
    let mut inside = Vec::new();
    for _ in 0..2 {
        let mut v = TcpStream::connect(addr).await.expect("connect");
        let mut hi = [0u8; 2];
        within("greeting", v.read_exact(&mut hi))
            .await
            .expect("greeting");
        inside.push(v);
    }
    assert_eq!(value(m, VISITORS_OPEN), 2);
    let refused = visit_apart(addr, b"x").await;
    assert!(refused.was_reset(), "{refused:?}");
    until_metric(m, r#"relay_refusals_total{reason="visitor_cap"}"#, 1).await;
    assert_eq!(value(m, VISITORS_TOTAL), 5, "the refused one is no visitor");
    drop(inside);
    until_metric(m, VISITORS_OPEN, 0).await;

    // Not relay clients: an HTTP request and junk.
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"hello relay\n"] {
        let mut s = TcpStream::connect(relay.addr).await.expect("connect");
        s.write_all(junk).await.expect("write");
        let _ = within("rejection", s.read_to_end(&mut Vec::new())).await;
    }
    until_metric(m, r#"relay_handshake_failures_total{reason="http"}"#, 1).await;
    until_metric(
        m,
        r#"relay_handshake_failures_total{reason="not_relay"}"#,
        1,
    )
    .await;
    assert_eq!(
        value(m, r#"relay_handshake_failures_total{reason="version"}"#),
        0
    );

    // One file transfer of 1000 bytes one way and 7 back.
    let offered = offer(&relay.control(), DEADLINE).await.expect("offer");
    until_metric(m, "relay_offers_open", 1).await;
    let nameplate = offered.nameplate().to_string();
    let sender = tokio::spawn(async move {
        let mut sock = offered.wait_for_receiver().await.expect("paired");
        sock.write_all(&[7u8; 1000]).await.expect("send");
        sock.shutdown().await.expect("fin");
        sock.read_to_end(&mut Vec::new()).await.expect("answer")
    });
    let mut receiver = within("claim", claim(&relay.control(), &nameplate, DEADLINE))
        .await
        .expect("claim");
    let mut got = Vec::new();
    within("transfer", receiver.read_to_end(&mut got))
        .await
        .expect("receive");
    receiver.write_all(b"thanks!").await.expect("answer");
    receiver.shutdown().await.expect("fin");
    assert_eq!(within("sender", sender).await.expect("join"), 7);
    assert_eq!(value(m, "relay_offers_total"), 1);
    assert_eq!(value(m, "relay_transfers_total"), 1);
    let up = r#"relay_transfer_bytes_total{direction="sender_to_receiver"}"#;
    assert_eq!(value(m, up), 1000);
    let down = r#"relay_transfer_bytes_total{direction="receiver_to_sender"}"#;
    assert_eq!(value(m, down), 7);
    until_metric(m, "relay_transfers_open", 0).await;
    assert_eq!(value(m, "relay_offers_open"), 0);

    // The client goes: its session and tunnel are counted out, and why it ended is counted.
    client.abort();
    until_metric(m, r#"relay_sessions_open{token="-"}"#, 0).await;
    assert_eq!(value(m, r#"relay_tunnels_open{token="-"}"#), 0);
    assert_eq!(value(m, r#"relay_sessions_total{token="-"}"#), 1);
    let text = m.encode();
    let ended: u64 = text
        .lines()
        .filter(|l| l.starts_with("relay_session_ends_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(ended, 1, "{text}");
}

/// Bytes show while a long transfer runs, not only once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_grow_during_a_long_transfer() {
    let relay = TestRelay::default().await;
    let m = &relay.metrics;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _client = serve_echo(listener, Vec::new());
    let mut visitor = TcpStream::connect(addr).await.expect("connect");
    let chunk = payload(9, 256 * 1024);
    let mut back = vec![0u8; chunk.len()];
    for round in 1..=8u64 {
        visitor.write_all(&chunk).await.expect("write");
        within("echo", visitor.read_exact(&mut back))
            .await
            .expect("echo");
        let moved = round * chunk.len() as u64;
        until_metric(m, BYTES_IN, moved).await;
        until_metric(m, BYTES_OUT, moved).await;
        assert_eq!(value(m, VISITORS_OPEN), 1, "still under way");
    }
}

/// Health follows the relay: accepting while it runs, draining from the moment it stops
/// accepting until the last session is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_to_draining_when_the_drain_starts() {
    let mut relay = TestRelay::start(RelayConfig {
        drain_timeout: DEADLINE,
        ..RelayConfig::default()
    })
    .await;
    let m = relay.metrics.clone();
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _client = serve_echo(listener, Vec::new());
    assert!(m.is_accepting() && !m.is_draining());
    // A visitor inside keeps the drain going until it leaves.
    let mut visitor = TcpStream::connect(addr).await.expect("connect");
    visitor.write_all(b"x").await.expect("write");
    within("echo", visitor.read_exact(&mut [0u8; 1]))
        .await
        .expect("echo");
    relay.shutdown.cancel();
    let flipped = tokio::time::timeout(DEADLINE, async {
        while !m.is_draining() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(flipped.is_ok(), "never draining");
    assert!(!m.is_accepting());
    assert!(m.encode().contains("relay_draining 1\n"));
    let task = relay.task.as_ref().expect("running");
    assert!(
        !task.is_finished(),
        "the visitor still holds the drain open"
    );
    drop(visitor);
    relay.stop().await;
    assert!(m.is_draining(), "a stopped relay does not come back");
}
