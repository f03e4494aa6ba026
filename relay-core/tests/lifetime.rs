//! How long a tunnel client's pieces live: `stop_accepting`, `shutdown(grace)`, the visitors
//! in flight meanwhile, and the tokio-style ways to accept (`poll_accept`, `incoming`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use relay_core::{Error, SessionEnd, TunnelConfig, TunnelListener, TunnelStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what a visitor sends until it half-closes, then answers with `reply` and shuts the
/// stream down (a clean end).
async fn answer_after_eof(mut stream: TunnelStream, reply: Vec<u8>) -> std::io::Result<()> {
    let mut request = Vec::new();
    stream.read_to_end(&mut request).await?;
    stream.write_all(&reply).await?;
    stream.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_stop_accepting_new_visitors_are_turned_away_and_those_inside_finish() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);

    // One visitor inside, its answer still to come.
    let mut inside = TcpStream::connect(addr).await.expect("connect");
    inside.write_all(b"question").await.expect("write");
    let (stream, visitor) = within("accept", listener.accept()).await.expect("accept");
    assert_eq!(stream.peer_addr(), inside.local_addr().expect("local addr"));
    assert_eq!(stream.visitor(), visitor);

    listener.stop_accepting();
    // `accept` says so at once, with a reason to match on.
    let err = within("accept after stop", listener.accept())
        .await
        .expect_err("no more visitors");
    assert!(
        matches!(err, Error::SessionLost(SessionEnd::Closed)),
        "{err:?}"
    );
    // A new visitor is turned away promptly (well before the relay's 10 s answer timeout).
    let started = Instant::now();
    let turned_away = within("new visitor", visit_apart(addr, b"hello")).await;
    assert!(turned_away.was_reset(), "{turned_away:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // The visitor inside gets its whole answer and a clean end.
    let reply = payload(1, 512 * 1024);
    let serving = tokio::spawn(answer_after_eof(stream, reply.clone()));
    inside.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    within("answer", inside.read_to_end(&mut back))
        .await
        .expect("clean end");
    assert_eq!(back.len(), reply.len());
    assert!(back == reply);
    serving.await.expect("join").expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_tunnel_leaves_the_others_taking_visitors() {
    let relay = TestRelay::default().await;
    let config = TunnelConfig {
        reconnect: relay_core::Reconnect::never(),
        ..TunnelConfig::default()
    };
    let mut listeners = within(
        "two tunnels",
        TunnelListener::connect_many(&relay.control(), config, &[None, None]),
    )
    .await
    .expect("tunnels");
    let second = listeners.pop().expect("second");
    let first = listeners.pop().expect("first");
    let (a, b) = (public(&first), public(&second));
    drop(first);
    let echo = serve_echo(second, b"2:".to_vec());
    let turned_away = within("visitor of the dropped tunnel", visit_apart(a, b"x")).await;
    assert!(turned_away.was_reset(), "{turned_away:?}");
    let back = within("visitor of the other tunnel", visit(b, b"y"))
        .await
        .expect("echo");
    assert_eq!(back, b"2:y");
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_long_answer_in_flight_then_frees_the_port() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let mut visitor = TcpStream::connect(addr).await.expect("connect");
    visitor.write_all(b"GET").await.expect("write");
    visitor.shutdown().await.expect("half-close");
    let (mut stream, _) = within("accept", listener.accept()).await.expect("accept");
    let reply = payload(2, 2 * 1024 * 1024);
    // The answer trickles out in pieces while the shutdown is under way.
    let body = reply.clone();
    let serving = tokio::spawn(async move {
        for chunk in body.chunks(256 * 1024) {
            stream.write_all(chunk).await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        stream.shutdown().await
    });
    let reading = tokio::spawn(async move {
        let mut back = Vec::new();
        visitor.read_to_end(&mut back).await.map(|_| back)
    });
    let started = Instant::now();
    within("shutdown", listener.shutdown(Duration::from_secs(10))).await;
    assert!(
        serving.is_finished(),
        "shutdown returned before the stream was done"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    serving.await.expect("join").expect("served");
    let back = within("answer", reading)
        .await
        .expect("join")
        .expect("a clean end, not a reset");
    assert!(back == reply, "{} of {} bytes", back.len(), reply.len());
    // The goodbye freed the port.
    until_refused(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_open_after_the_grace_is_reset_and_shutdown_returns() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let session = listener.session();
    let mut visitor = TcpStream::connect(addr).await.expect("connect");
    visitor.write_all(b"hang").await.expect("write");
    // Accepted and then neither answered nor closed.
    let (stream, _) = within("accept", listener.accept()).await.expect("accept");
    drop(listener);
    let started = Instant::now();
    within("shutdown", session.shutdown(Duration::from_millis(300))).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(within("ended", session.ended()).await, SessionEnd::Closed);
    let mut rest = Vec::new();
    let end = within("visitor cut", visitor.read_to_end(&mut rest)).await;
    assert!(is_reset(&end), "expected a reset, got {end:?}");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_and_poll_accept_deliver_visitors_like_accept() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let visitors: Vec<_> = (0..3u64)
        .map(|i| tokio::spawn(async move { visit(addr, format!("visitor {i}").as_bytes()).await }))
        .collect();
    let mut incoming = listener.incoming();
    for _ in 0..3 {
        let (stream, visitor) = within("incoming", incoming.next())
            .await
            .expect("an item")
            .expect("a visitor");
        assert_eq!(stream.id(), visitor.id);
        tokio::spawn(answer_after_eof(stream, b"ok".to_vec()));
    }
    for v in visitors {
        assert_eq!(
            within("answer", v).await.expect("join").expect("visit"),
            b"ok"
        );
    }
    // poll_accept, driven by hand.
    let v = tokio::spawn(visit(addr, b"polled"));
    let (stream, _) = within(
        "poll_accept",
        std::future::poll_fn(|cx| listener.poll_accept(cx)),
    )
    .await
    .expect("accept");
    tokio::spawn(answer_after_eof(stream, b"ok".to_vec()));
    assert_eq!(
        within("answer", v).await.expect("join").expect("visit"),
        b"ok"
    );
    // After the tunnel stops, the stream yields the reason once and ends.
    listener.stop_accepting();
    let mut incoming = listener.incoming();
    assert!(matches!(
        within("end", incoming.next()).await,
        Some(Err(Error::SessionLost(SessionEnd::Closed)))
    ));
    assert!(within("end", incoming.next()).await.is_none());
}

#[test]
fn stop_accepting_is_encoded_as_the_protocol_says() {
    // docs/protocol.md §5.4
    let frame = relay_core::codec::encode(&relay_core::protocol::ClientControl::StopAccepting {
        tunnel: 0,
    })
    .expect("encode");
    assert_eq!(frame, [0, 0, 0, 2, 2, 0]);
}
