//! Heartbeats: each side notices a peer that stays connected but falls silent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::client::Reconnect;
use relay_core::codec;
use relay_core::frame::FramedConn;
use relay_core::mux::{self, Role};
use relay_core::protocol::{ClientControl, Grant, Hello, PREFACE_LEN, Reply, Welcome};
use relay_core::{Error, RelayConfig, SessionEnd, TunnelConfig, TunnelListener};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_drops_a_session_whose_client_stops_sending_heartbeats() {
    let relay = TestRelay::start(RelayConfig {
        heartbeat_interval: Duration::from_millis(100),
        // No lease, so the public port closing shows the session's end.
        lease_ttl: Duration::ZERO,
        ..RelayConfig::default()
    })
    .await;
    // A client that completes the handshake and opens its control stream, then goes silent
    // while keeping the TCP connection open.
    let (conn, welcome) = raw_hello(relay.addr, &one_tunnel()).await;
    let Reply::Welcome(Welcome { tunnels, .. }) = welcome else {
        panic!("no welcome");
    };
    let public_port = tunnels[0].public_port;
    let keep = CancellationToken::new();
    let (sock, early) = conn.into_parts();
    let silent = mux::start(sock, &early, Role::Dialer, 16, keep.clone());
    tokio::spawn(silent.driver);
    let mut control = within("control stream", silent.handle.open())
        .await
        .expect("control stream");
    codec::write_frame(&mut control, &ClientControl::Ping(0))
        .await
        .expect("first ping");

    let started = Instant::now();
    let public = std::net::SocketAddr::from(([127, 0, 0, 1], public_port));
    until_refused(public).await;
    within("mux to close", silent.handle.closed()).await;
    // Three silent intervals, not the first one.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    drop(control);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_notices_a_relay_that_stops_answering() {
    // A fake relay: answers the handshake, runs yamux, accepts the control stream, and then
    // never answers a ping.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        let mut conn = FramedConn::new(sock, 4096);
        while conn.buffered().len() < PREFACE_LEN {
            conn.fill().await.expect("preface");
        }
        conn.consume(PREFACE_LEN);
        let _hello: Hello = conn.read_frame().await.expect("hello");
        let welcome = Reply::Welcome(Welcome {
            session_id: 1,
            tunnels: vec![Grant {
                public_port: 1,
                lease: None,
            }],
            public_host: None,
            max_visitors: 10,
            heartbeat_interval_ms: 100,
            lease_ttl_ms: 0,
        });
        conn.write_preface_and_frame(&welcome)
            .await
            .expect("welcome");
        let token = CancellationToken::new();
        let (sock, early) = conn.into_parts();
        let mut m = mux::start(sock, &early, Role::Acceptor, 16, token.clone());
        tokio::spawn(m.driver);
        let control = m.inbound.recv().await.expect("control stream");
        // Hold everything open, answer nothing.
        std::future::pending::<()>().await;
        drop((control, token));
    });

    let config = TunnelConfig {
        reconnect: Reconnect::never(),
        ..TunnelConfig::default()
    };
    let listener = TunnelListener::connect(&addr.to_string(), config)
        .await
        .expect("tunnel");
    let started = Instant::now();
    let err = within("client to give up on a silent relay", listener.accept())
        .await
        .expect_err("session lost");
    match err {
        Error::SessionLost(end) => assert!(
            matches!(end, SessionEnd::PeerSilent { .. }),
            "{end:?}: {end}"
        ),
        other => panic!("unexpected: {other}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    fake.abort();
}
