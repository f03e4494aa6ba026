//! Every limit has a name, and reaching one gives a clear answer: sessions, public ports and
//! visitors at once, and the deadlines on a handshake, a control stream and a visitor's answer.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::protocol::ErrorCode;
use relay_core::{Error, RelayConfig, TunnelConfig, TunnelListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_exhaustion_and_session_limit_are_clear_errors() {
    // One public port for two sessions: the second client finds no port.
    let port = relay_test_support::free_port();
    let relay = TestRelay::start(RelayConfig {
        public_ports: Some(port..=port),
        max_sessions: 2,
        per_addr: all_from_one_address(),
        ..RelayConfig::default()
    })
    .await;
    let _first = relay.tunnel().await;
    let err = TunnelListener::connect(&relay.control(), TunnelConfig::default())
        .await
        .expect_err("second tunnel has no port");
    match err {
        Error::Rejected {
            code: ErrorCode::NoFreePort,
            message,
        } => {
            assert_eq!(message, format!("no free public port in {port}-{port}"));
        }
        other => panic!("unexpected: {other}"),
    }

    // Ports to spare, two sessions at most: the third client is turned away, naming the limit.
    let relay = TestRelay::start(RelayConfig {
        max_sessions: 2,
        per_addr: all_from_one_address(),
        ..RelayConfig::default()
    })
    .await;
    let first = relay.tunnel().await;
    let _second = relay.tunnel().await;
    let err = within(
        "third tunnel",
        TunnelListener::connect(&relay.control(), TunnelConfig::default()),
    )
    .await
    .expect_err("a third session over the limit of two");
    assert!(
        matches!(
            err,
            Error::Rejected {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("(2 sessions)"), "{err}");

    // Once a session ends its slot is free again. The relay releases it a moment after the
    // client leaves, so a Busy answer until then is expected; nothing but Busy is.
    let gone = public(&first);
    drop(first);
    until_refused(gone).await;
    let third = within("a session after one ended", async {
        loop {
            match TunnelListener::connect(&relay.control(), TunnelConfig::default()).await {
                Ok(listener) => return listener,
                Err(Error::Rejected {
                    code: ErrorCode::Busy,
                    ..
                }) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
    })
    .await;
    let addr = public(&third);
    let _server = serve_echo(third, Vec::new());
    let back = within("echo", visit(addr, b"admitted"))
        .await
        .expect("visit");
    assert_eq!(back, b"admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_beyond_the_limit_are_turned_away() {
    let relay = TestRelay::start(RelayConfig {
        max_visitors_per_tunnel: 2,
        ..RelayConfig::default()
    })
    .await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        within("echo", s.read_exact(&mut b)).await.expect("echo");
        held.push(s);
    }
    // Turned away means reset, as from a full listen backlog; a clean close would look like a
    // server that answered nothing. (The reset can arrive before `connect` has even returned.)
    match TcpStream::connect(addr).await {
        Ok(mut third) => {
            let mut b = [0u8; 1];
            let r = within("third visitor to be reset", third.read(&mut b)).await;
            assert!(is_reset(&r), "third visitor: {r:?}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // A visitor slot frees up when a visitor leaves: close one completely, then retry (the
    // relay's task releases the slot a moment after the visitor sees its EOF).
    let mut leaving = held.pop().expect("held visitor");
    leaving.shutdown().await.expect("fin");
    let mut rest = Vec::new();
    within("visitor to close", leaving.read_to_end(&mut rest))
        .await
        .expect("eof");
    let back = within("visit after a slot freed", async {
        loop {
            match visit(addr, b"again").await {
                Ok(back) if !back.is_empty() => return back,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(back, b"again");
    drop(held);
}

/// Under paused time, so the production default deadline (10 s) costs no real time.
///
/// Reliable with real sockets because nothing here races a timer: until the relay has accepted
/// the connection no timer exists at all, so the idle runtime cannot auto-advance; after that the
/// relay's handshake deadline is the only timer (`within` keeps its deadline on a thread, not a
/// tokio timer), so the clock jumps straight to it and then waits, however long the kernel takes,
/// for the relay's FIN.
#[tokio::test(start_paused = true)]
async fn idle_handshake_is_cut_at_the_deadline() {
    let deadline = relay_core::protocol::DEFAULT_HANDSHAKE_TIMEOUT;
    let relay = TestRelay::on_this_runtime(RelayConfig {
        handshake_timeout: deadline,
        ..RelayConfig::default()
    })
    .await;
    let real = std::time::Instant::now();
    let mut idle = TcpStream::connect(relay.addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = within("relay to close an idle connection", idle.read(&mut buf))
        .await
        .expect("a clean close");
    assert_eq!(n, 0, "the relay must close without sending anything");
    let waited = started.elapsed();
    assert!(waited >= deadline, "closed too early: {waited:?}");
    assert!(
        waited < deadline + Duration::from_secs(1),
        "closed late: {waited:?}"
    );
    // Proof that time really was paused: the 10 s passed without being waited for.
    assert!(real.elapsed() < deadline / 2, "took {:?}", real.elapsed());
}

/// The token check shares the handshake's one deadline: a client that sends its hello and then
/// never answers the challenge is cut when the deadline counted from its connect passes, not a
/// whole deadline later. Paused time, as above.
#[tokio::test(start_paused = true)]
async fn a_silent_challenge_is_cut_at_the_handshake_deadline() {
    use relay_core::protocol::{PREFACE_LEN, Reply};
    let deadline = relay_core::protocol::DEFAULT_HANDSHAKE_TIMEOUT;
    let relay = TestRelay::on_this_runtime(RelayConfig {
        handshake_timeout: deadline,
        access: relay_core::server::Access::single(
            relay_core::auth::Token::new("a-test-token-of-enough-length").expect("token"),
        ),
        ..RelayConfig::default()
    })
    .await;
    let sock = TcpStream::connect(relay.addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    let mut conn = relay_core::frame::FramedConn::new(sock, 4096);
    // A slow client: most of the deadline is gone before its hello arrives.
    tokio::time::sleep(deadline * 3 / 4).await;
    within("hello", conn.write_preface_and_frame(&one_tunnel()))
        .await
        .expect("hello");
    while conn.buffered().len() < PREFACE_LEN {
        within("preface", conn.fill()).await.expect("preface");
    }
    conn.consume(PREFACE_LEN);
    let reply = within("challenge", conn.read_frame())
        .await
        .expect("challenge");
    assert!(matches!(reply, Reply::Challenge { .. }), "{reply:?}");
    let mut rest = Vec::new();
    within("relay to close", conn.get_mut().read_to_end(&mut rest))
        .await
        .expect("a clean close");
    let waited = started.elapsed();
    assert!(waited >= deadline, "closed too early: {waited:?}");
    assert!(
        waited < deadline + Duration::from_secs(1),
        "the token check got a deadline of its own: closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_the_client_never_answers_is_reset_at_the_deadline_and_others_go_on() {
    let relay = TestRelay::start(RelayConfig {
        handshake_timeout: Duration::from_millis(400),
        ..RelayConfig::default()
    })
    .await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    // The first visitor is announced but never answered (held, not accepted or refused); the
    // ones after it are served.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok(first) = listener.next_visitor().await else {
            return;
        };
        let _ = held_tx.send(first);
        let _ = serve_echo(listener, Vec::new()).await;
    });
    let mut ignored = TcpStream::connect(addr).await.expect("visitor");
    ignored.write_all(b"hello?").await.expect("write");
    let _held = within("the client to see the visitor", held_rx)
        .await
        .expect("announced");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let outcome = within(
        "the relay to give up on the visitor",
        ignored.read(&mut buf),
    )
    .await;
    assert!(
        matches!(outcome, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "an unanswered visitor must be reset, got {outcome:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "reset before the deadline: {:?}",
        started.elapsed()
    );
    // The session is unharmed: the next visitor is served.
    let back = within("a later visitor", visit(addr, b"still here"))
        .await
        .expect("visit");
    assert_eq!(back, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_opens_its_control_stream_is_dropped() {
    let relay = TestRelay::start(RelayConfig {
        handshake_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut sock = TcpStream::connect(relay.addr).await.expect("connect");
    let hello = one_tunnel();
    relay_core::codec::write_preface_and_frame(&mut sock, &hello)
        .await
        .expect("hello");
    let mut rest = Vec::new();
    // The relay welcomes the client, then drops the session when no control stream follows.
    let end = within(
        "relay to drop a silent session",
        sock.read_to_end(&mut rest),
    )
    .await;
    assert!(rest.starts_with(&relay_core::protocol::PREFACE), "{rest:?}");
    assert!(end.is_ok() || is_reset(&end), "{end:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "dropped before the deadline: {:?}",
        started.elapsed()
    );
}
