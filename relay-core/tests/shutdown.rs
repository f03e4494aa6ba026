//! How sessions end: the client leaves, the relay shuts down, visitors inside at that moment.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::RelayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_closes_its_visitors_and_public_port() {
    // Dropping the listener is a goodbye: the port closes at once, visitors still inside get
    // the relay's drain time to finish, and this one never finishes.
    let drain = Duration::from_millis(500);
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

    // Dropping the serving task drops the listener: the session ends.
    server.abort();
    let started = Instant::now();
    // Nobody can connect to the tunnel any more, well before the drain is over.
    until_refused(addr).await;
    assert!(started.elapsed() < drain, "took {:?}", started.elapsed());
    let mut rest = Vec::new();
    let end = within("visitor to be closed", visitor.read_to_end(&mut rest)).await;
    // The visitor's stream was cut, so it must see a reset: a clean EOF would tell it (an HTTP/1.0
    // client, say) that the answer was complete. The visitor only reads here, so the reset is
    // reported to this read (see `Visit::was_reset`).
    assert!(is_reset(&end), "expected a reset, got {end:?}");
    assert!(
        rest.is_empty(),
        "{} bytes after the client left",
        rest.len()
    );
    assert!(
        started.elapsed() >= drain && started.elapsed() < drain * 4,
        "cut after {:?}",
        started.elapsed()
    );
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
