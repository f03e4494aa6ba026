//! Tunnels end to end inside one process: relay, tunnel clients and visitors on real loopback
//! sockets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::protocol::ErrorCode;
use relay_core::{Error, RelayConfig, TunnelConfig, TunnelListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_a_tunnel() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    assert_eq!(listener.public_addr().host, "127.0.0.1");
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let back = within("echo", visit(addr, b"Hello, world!\n"))
        .await
        .expect("visit");
    assert_eq!(back, b"Hello, world!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_value_passes_unaltered() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 1024 + 17).collect();
    let back = within("echo", visit(addr, &all)).await.expect("visit");
    assert!(back == all, "bytes were altered, reordered or lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sessions_with_a_hundred_visitors_each_stay_apart() {
    const VISITORS: usize = 100;
    const LEN: usize = 64 * 1024 + 3;
    let relay = TestRelay::default().await;
    let mut addrs = Vec::new();
    let mut servers = Vec::new();
    for client in 0..3u8 {
        let listener = relay.tunnel().await;
        addrs.push(public(&listener));
        servers.push(serve_echo(listener, vec![b'C', client]));
    }
    let mut visits = tokio::task::JoinSet::new();
    for (client, addr) in addrs.iter().copied().enumerate() {
        for v in 0..VISITORS {
            let seed = (client * VISITORS + v) as u64;
            visits.spawn(async move {
                let data = payload(seed, LEN);
                let back = visit(addr, &data).await.expect("visit");
                assert_eq!(
                    &back[..2],
                    &[b'C', client as u8],
                    "visitor routed to the wrong client"
                );
                assert!(back[2..] == data[..], "payload of visitor {seed} corrupted");
            });
        }
    }
    let done = within("300 concurrent visitors", async {
        let mut n = 0;
        while let Some(r) = visits.join_next().await {
            r.expect("visitor task");
            n += 1;
        }
        n
    })
    .await;
    assert_eq!(done, 3 * VISITORS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_gets_the_whole_reply_then_eof() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    // A server that answers only after the visitor's EOF, as HTTP/1.0 or `nc -N` peers expect.
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("visitor");
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.expect("request");
        let reply = payload(7, 1 << 20);
        stream.write_all(&request).await.expect("echo");
        stream.write_all(&reply).await.expect("reply");
        stream.shutdown().await.expect("fin");
        std::future::pending::<()>().await;
    });
    let back = within("half-closed visit", visit(addr, b"GET / HTTP/1.0\r\n\r\n"))
        .await
        .expect("visit");
    assert_eq!(&back[..18], b"GET / HTTP/1.0\r\n\r\n");
    assert!(back[18..] == payload(7, 1 << 20)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_client_closes_its_visitors_and_public_port() {
    let relay = TestRelay::default().await;
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
    let end = within("visitor to be closed", async {
        let mut rest = Vec::new();
        visitor.read_to_end(&mut rest).await
    })
    .await;
    // A reset is the expected signal; a clean EOF would be acceptable only with no data lost.
    match end {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("unexpected {n} bytes after the client left"),
    }
    until_refused(addr).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_visitor_does_not_block_the_others() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());

    // The stalled visitor sends 64 MiB and never reads: its echo backs up through the relay,
    // the substream window, and the client, far beyond what socket buffers can absorb.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let flood = tokio::spawn(async move {
        let chunk = vec![0xAB; 64 * 1024];
        for _ in 0..1024 {
            if stalled.write_all(&chunk).await.is_err() {
                break;
            }
        }
        stalled
    });
    for i in 0..20u64 {
        let data = payload(100 + i, 128 * 1024);
        let back = within("visitor next to a stalled one", visit(addr, &data))
            .await
            .expect("visit");
        assert!(back == data);
    }
    assert!(
        !flood.is_finished(),
        "the stalled visitor's writes should be blocked"
    );
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshake_is_cut_at_the_deadline() {
    let relay = TestRelay::start(RelayConfig {
        handshake_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let mut idle = TcpStream::connect(relay.addr).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = within("relay to close an idle connection", idle.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the relay must close without sending anything");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_control_port_leaves_tunnels_untouched() {
    let relay = TestRelay::start(RelayConfig {
        handshake_timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    })
    .await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let mut busy = TcpStream::connect(addr).await.expect("visitor");

    // An HTTP request gets a plain HTTP answer.
    let mut http = TcpStream::connect(relay.addr).await.expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    within("HTTP answer", http.read_to_end(&mut answer))
        .await
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A wrong version gets the relay's preface and a VersionMismatch error.
    let mut preface = relay_core::protocol::PREFACE;
    preface[7] = 99;
    let reply = raw_exchange(relay.addr, &preface).await;
    assert!(reply.starts_with(&relay_core::protocol::PREFACE));
    let frame: relay_core::protocol::Reply =
        relay_core::codec::decode(&reply[12..]).expect("error frame");
    assert!(matches!(
        frame,
        relay_core::protocol::Reply::Error {
            code: ErrorCode::VersionMismatch,
            ..
        }
    ));

    // An oversized frame length is refused without reading (or allocating) the body.
    let mut oversized = relay_core::protocol::PREFACE.to_vec();
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let reply = raw_exchange(relay.addr, &oversized).await;
    let frame: relay_core::protocol::Reply =
        relay_core::codec::decode(&reply[12..]).expect("error frame");
    assert!(matches!(
        frame,
        relay_core::protocol::Reply::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));

    // A flood of random junk, truncated frames and stalled prefaces, all at once.
    let mut junk = tokio::task::JoinSet::new();
    for i in 0..300u64 {
        let control = relay.addr;
        junk.spawn(async move {
            let Ok(mut s) = TcpStream::connect(control).await else {
                return;
            };
            let bytes = match i % 3 {
                0 => payload(i, 1 + (i as usize * 37) % 5000),
                1 => {
                    let mut b = relay_core::protocol::PREFACE.to_vec();
                    b.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
                    b
                }
                // A slow start of the magic. (An idle client that sends nothing at all may, in a
                // burst, never reach the relay: its final handshake ACK can be dropped with SYN
                // cookies in play, and only data would establish it.)
                _ => b"RE".to_vec(),
            };
            let _ = s.write_all(&bytes).await;
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
    }
    within("junk connections to be closed", async {
        while let Some(r) = junk.join_next().await {
            r.expect("junk task");
        }
    })
    .await;

    // The tunnel and its open visitor still work, and new tunnels can still be opened.
    busy.write_all(b"still here").await.expect("write");
    let mut buf = [0u8; 10];
    within("echo after junk", busy.read_exact(&mut buf))
        .await
        .expect("echo");
    assert_eq!(&buf, b"still here");
    let second = relay.tunnel().await;
    let addr2 = public(&second);
    let _server2 = serve_echo(second, Vec::new());
    assert_eq!(
        within("second tunnel", visit(addr2, b"x"))
            .await
            .expect("visit"),
        b"x"
    );
}

/// Sends `bytes` to the control port and returns everything the relay answers before closing.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    let _ = within("relay answer", s.read_to_end(&mut reply)).await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_visitors_are_closed_promptly_and_others_unaffected() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    tokio::spawn(async move {
        loop {
            let Ok(incoming) = listener.next_visitor().await else {
                return;
            };
            if incoming.visitor().id % 2 == 0 {
                incoming.refuse("local server down").await;
            } else if let Ok(stream) = incoming.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(stream);
                    let _ =
                        relay_core::splice::copy_one_way(&mut r, &mut w, &Default::default()).await;
                });
            }
        }
    });
    let (mut served, mut refused) = (0, 0);
    for i in 0..10u64 {
        match within("visit", visit(addr, &payload(i, 1000))).await {
            Ok(back) if back == payload(i, 1000) => served += 1,
            Ok(back) if back.is_empty() => refused += 1,
            Err(_) => refused += 1,
            Ok(back) => panic!("partial echo of {} bytes", back.len()),
        }
    }
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_exhaustion_and_session_limit_are_clear_errors() {
    let port = relay_test_support::free_port();
    let relay = TestRelay::start(RelayConfig {
        public_ports: Some(port..=port),
        max_sessions: 2,
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
    assert!(matches!(err, Error::SessionLost(_)), "{err}");
    until_refused(addr).await;
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
    // The reset can arrive before `connect` has even returned.
    if let Ok(mut third) = TcpStream::connect(addr).await {
        let mut b = [0u8; 1];
        let r = within("third visitor to be reset", third.read(&mut b)).await;
        assert!(matches!(r, Ok(0) | Err(_)), "third visitor got data");
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
    let mut sock = TcpStream::connect(relay.addr).await.expect("connect");
    let hello = one_tunnel();
    relay_core::codec::write_preface_and_frame(&mut sock, &hello)
        .await
        .expect("hello");
    let mut rest = Vec::new();
    let _ = within(
        "relay to drop a silent session",
        sock.read_to_end(&mut rest),
    )
    .await;
    assert!(rest.starts_with(&relay_core::protocol::PREFACE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_visitors_open_at_once_on_one_session() {
    const VISITORS: usize = 2000;
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    // All connect and prove they are live (more than the 256 streams yamux lets wait for an
    // acknowledgement), then all stay open together before any leaves.
    let mut open = Vec::with_capacity(VISITORS);
    let connects = futures::future::join_all((0..VISITORS).map(|i| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let msg = (i as u32).to_be_bytes();
        s.write_all(&msg).await.expect("write");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(back, msg);
        s
    }));
    open.extend(within("2000 visitors to connect and echo", connects).await);
    // Every one of them still works with all the others open.
    let checks = futures::future::join_all(open.iter_mut().enumerate().map(|(i, s)| async move {
        let msg = payload(i as u64, 512);
        s.write_all(&msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("echo");
        assert!(back == msg);
    }));
    within("2000 open visitors to echo again", checks).await;
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
    assert!(end.is_err(), "expected a reset, got {end:?}");
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "cut too early"
    );
    relay.stop().await;
}
