//! How sessions end: the client leaves, the relay shuts down, visitors inside at that moment.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::RelayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_listener_keeps_its_streams_and_the_session_ends_with_the_last() {
    // Like a TcpListener: dropping it turns new visitors away, but the streams it accepted
    // live on; the session (and the public port) ends with the last of them. A goodbye would
    // give them only the relay's drain time, kept short here.
    let drain = Duration::from_millis(200);
    let relay = TestRelay::start(RelayConfig {
        drain_timeout: drain,
        ..RelayConfig::default()
    })
    .await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let server = serve_echo(listener, Vec::new());
    let mut visitor = TcpStream::connect(addr).await.expect("connect");
    visitor.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    within("echo", visitor.read_exact(&mut buf))
        .await
        .expect("echo");

    // Dropping the serving task drops the listener, not the visitor tasks it spawned.
    server.abort();
    let _ = server.await;
    // A new visitor is turned away at once.
    let turned_away = within("new visitor turned away", async {
        loop {
            let v = visit_apart(addr, b"hello").await;
            assert!(
                v.read.as_ref().is_ok_and(|b| b.is_empty()) || v.was_reset(),
                "{v:?}"
            );
            if v.was_reset() || v.sent.is_err() {
                return v;
            }
        }
    })
    .await;
    assert!(turned_away.was_reset(), "{turned_away:?}");
    // Not a wait for an event: the stream must outlive what a drain would have allowed.
    tokio::time::sleep(drain * 3).await;
    // The visitor inside keeps being served, through to a clean end.
    let payload = payload(7, 256 * 1024);
    let (mut r, mut w) = visitor.split();
    let send = async {
        w.write_all(&payload).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let (sent, read) = within("echo after the listener is gone", async {
        tokio::join!(send, r.read_to_end(&mut back))
    })
    .await;
    sent.expect("send");
    read.expect("clean end after the echo");
    assert_eq!(back, payload);
    drop(visitor);
    // With the last stream gone the client says goodbye: the relay frees the port.
    until_refused(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_shutdown_ends_sessions_with_a_reason() {
    let mut relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    relay.stop().await;
    let err = within("accept after shutdown", listener.accept())
        .await
        .expect_err("session ends");
    // The Display text, not a variant or field: it is what the user reads, and it stays put
    // when the reason becomes a type.
    let text = err.to_string();
    assert!(text.contains("the relay shut down"), "{text}");
    until_refused(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_visitors_inside_finish_then_cuts_the_rest() {
    let mut relay = TestRelay::start(RelayConfig {
        drain_timeout: Duration::from_secs(2),
        ..RelayConfig::default()
    })
    .await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let mut finishing = TcpStream::connect(addr).await.expect("visitor");
    let mut lingering = TcpStream::connect(addr).await.expect("visitor");
    for v in [&mut finishing, &mut lingering] {
        v.write_all(b"a").await.expect("write");
        let mut b = [0u8; 1];
        within("echo", v.read_exact(&mut b)).await.expect("echo");
    }

    relay.shutdown.cancel();
    until_refused(addr).await;
    // Still served during the drain: a full exchange, then a clean close.
    finishing
        .write_all(b"bye")
        .await
        .expect("write during drain");
    finishing.shutdown().await.expect("fin");
    let mut rest = Vec::new();
    within("echo during drain", finishing.read_to_end(&mut rest))
        .await
        .expect("clean end");
    assert_eq!(rest, b"bye");
    // The one that never leaves is cut at the drain deadline, with a reset.
    let started = Instant::now();
    let mut rest = Vec::new();
    let end = within(
        "lingering visitor to be cut",
        lingering.read_to_end(&mut rest),
    )
    .await;
    assert!(is_reset(&end), "expected a reset, got {end:?}");
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "cut too early"
    );
    relay.stop().await;
}
