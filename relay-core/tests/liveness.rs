//! Heartbeats: each side notices a peer that stays connected but falls silent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::codec;
use relay_core::mux::{self, Role};
use relay_core::protocol::{ClientControl, Hello, PREFACE, Reply, Welcome};
use relay_core::{RelayConfig, TunnelConfig, TunnelListener};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_drops_a_session_whose_client_stops_sending_heartbeats() {
    let relay = TestRelay::start(RelayConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..RelayConfig::default()
    })
    .await;
    // A client that completes the handshake and opens its control stream, then goes silent
    // while keeping the TCP connection open.
    let mut sock = TcpStream::connect(relay.addr).await.expect("connect");
    codec::write_preface_and_frame(
        &mut sock,
        &Hello::Tunnel {
            preferred_port: None,
        },
    )
    .await
    .expect("hello");
    let mut preface = [0u8; 8];
    within(
        "preface",
        tokio::io::AsyncReadExt::read_exact(&mut sock, &mut preface),
    )
    .await
    .expect("preface");
    assert_eq!(preface, PREFACE);
    let Reply::Welcome(Welcome { public_port, .. }) =
        within("welcome", codec::read_frame(&mut sock, 4096))
            .await
            .expect("welcome")
    else {
        panic!("no welcome");
    };
    let keep = CancellationToken::new();
    let silent = mux::start(sock, Role::Dialer, 16, keep.clone());
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
        let (mut sock, _) = listener.accept().await.expect("accept");
        let _hello: Hello = {
            let mut preface = [0u8; 8];
            tokio::io::AsyncReadExt::read_exact(&mut sock, &mut preface)
                .await
                .expect("preface");
            codec::read_frame(&mut sock, 4096).await.expect("hello")
        };
        let welcome = Reply::Welcome(Welcome {
            session_id: 1,
            public_port: 1,
            public_host: None,
            max_visitors: 10,
            heartbeat_interval_ms: 100,
        });
        codec::write_preface_and_frame(&mut sock, &welcome)
            .await
            .expect("welcome");
        let token = CancellationToken::new();
        let mut m = mux::start(sock, Role::Acceptor, 16, token.clone());
        tokio::spawn(m.driver);
        let control = m.inbound.recv().await.expect("control stream");
        // Hold everything open, answer nothing.
        std::future::pending::<()>().await;
        drop((control, token));
    });

    let listener = TunnelListener::connect(&addr.to_string(), TunnelConfig::default())
        .await
        .expect("tunnel");
    let started = Instant::now();
    let err = within("client to give up on a silent relay", listener.accept())
        .await
        .expect_err("session lost");
    // The Display text, so the check survives the reason becoming a type.
    let text = err.to_string();
    assert!(
        text.contains("session with the relay lost") && text.contains("stopped answering"),
        "{text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    fake.abort();
}
