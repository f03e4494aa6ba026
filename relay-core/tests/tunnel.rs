//! Tunnels end to end inside one process, the data path: relay, tunnel clients and visitors on
//! real loopback sockets. Limits, shutdown and hostile input have files of their own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::RelayConfig;
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

/// More open visitors from one client address (all tests connect from 127.0.0.1) than the
/// relay-wide budget derived from `tcp_mem` allows by default on a small host: these tests are
/// about many visitors, not about the budget (`relay-bin/tests/memory_budget.rs` is).
fn many_visitors() -> RelayConfig {
    RelayConfig {
        max_open_visitors: Some(10_000),
        max_open_visitors_per_addr: Some(10_000),
        ..RelayConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sessions_with_a_hundred_visitors_each_stay_apart() {
    const VISITORS: usize = 100;
    const LEN: usize = 64 * 1024 + 3;
    let relay = TestRelay::start(many_visitors()).await;
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
async fn two_thousand_visitors_open_at_once_on_one_session() {
    const VISITORS: usize = 2000;
    let relay = TestRelay::start(many_visitors()).await;
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
async fn refused_visitors_are_closed_promptly_and_others_unaffected() {
    // The relay's own deadline for an answer (10 s by default) is far longer than "promptly":
    // a refused visitor must be reset on the client's refusal, not when the relay gives up.
    const PROMPTLY: Duration = Duration::from_secs(3);
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
        let data = payload(i, 1000);
        let started = Instant::now();
        let visit = within("visit", visit_apart(addr, &data)).await;
        match &visit.read {
            Ok(back) if *back == data && visit.sent.is_ok() => served += 1,
            // A refusal is a reset, never a clean (and so seemingly complete) empty answer.
            _ if visit.was_reset() => {
                assert_eq!(
                    visit.read.as_ref().map(Vec::len).unwrap_or(0),
                    0,
                    "a refused visitor got data"
                );
                assert!(
                    started.elapsed() < PROMPTLY,
                    "refused visitor closed only after {:?}",
                    started.elapsed()
                );
                refused += 1;
            }
            _ => panic!("visitor {i} neither served nor reset: {visit:?}"),
        }
    }
    // Visitor ids count up one per visitor, so the ten alternate between the two answers.
    assert_eq!((served, refused), (5, 5));
}
