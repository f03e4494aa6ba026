//! Per-address shares: one source address (IPv4, or IPv6 /64) cannot take more than a small
//! share of the relay's ports, sessions, handshake slots or code guesses, and its wrong tokens
//! slow only itself down; others still get in. 127.0.0.2 plays the other address.

mod common;

use common::*;
use relay_core::auth::Token;
use relay_core::client::claim;
use relay_core::protocol::{ErrorCode, Hello, Reply, TunnelRequest};
use relay_core::server::Access;
use relay_core::{RelayConfig, TunnelConfig, TunnelListener};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HS: std::time::Duration = relay_core::protocol::DEFAULT_HANDSHAKE_TIMEOUT;

fn busy_naming(reply: &Reply, needle: &str) {
    match reply {
        Reply::Error {
            code: ErrorCode::Busy,
            message,
        } => assert!(message.contains(needle), "{message}"),
        other => panic!("expected Busy ({needle}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_a_small_pool_and_leases_count() {
    // A 40-port pool: with the defaults one address may hold 10 of its ports.
    let base = relay_test_support::free_port().min(65_000 - 40);
    let relay = TestRelay::start(RelayConfig {
        public_ports: Some(base..=base + 39),
        ..RelayConfig::default()
    })
    .await;
    let hello = one_tunnel();
    let mut held = Vec::new();
    let refusal = loop {
        let (conn, reply) = raw_hello_from(HOME, relay.addr, &hello, None).await;
        match reply {
            Reply::Welcome(w) => held.push((conn, w)),
            other => break other,
        }
        assert!(held.len() <= 40, "one address took the whole pool");
    };
    assert_eq!(held.len(), 10, "one address's share of a 40-port pool");
    busy_naming(&refusal, "public ports");

    // A session lost without a goodbye keeps its port leased, and the lease still counts.
    let (mut lost, lost_welcome) = held.remove(0);
    within("close", lost.get_mut().shutdown())
        .await
        .expect("shutdown");
    let mut rest = Vec::new();
    within(
        "the relay to end the lost session",
        lost.get_mut().read_to_end(&mut rest),
    )
    .await
    .expect("read");
    let (_c, reply) = raw_hello_from(HOME, relay.addr, &hello, None).await;
    busy_naming(&reply, "leased ones");

    // Another address still gets a tunnel.
    let (_other, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &hello, None).await;
    assert!(matches!(reply, Reply::Welcome(_)), "{reply:?}");

    // The owner gets its leased port back even at its share: it was charged once.
    let grant = &lost_welcome.tunnels[0];
    let reclaim = Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: Some(grant.public_port),
            lease: grant.lease.clone(),
        }],
    };
    let (_back, reply) = raw_hello_from(HOME, relay.addr, &reclaim, None).await;
    let Reply::Welcome(w) = reply else {
        panic!("lease not honoured: {reply:?}");
    };
    assert_eq!(w.tunnels[0].public_port, grant.public_port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_opening_sessions_until_refused_leaves_room_for_another() {
    // Eight sessions in all: one address may have two.
    let relay = TestRelay::start(RelayConfig {
        max_sessions: 8,
        ..RelayConfig::default()
    })
    .await;
    let config = || TunnelConfig {
        reconnect: relay_core::client::Reconnect::never(),
        ..TunnelConfig::default()
    };
    let mut mine = Vec::new();
    let err = loop {
        match within(
            "tunnel",
            TunnelListener::connect(&relay.control(), config()),
        )
        .await
        {
            Ok(l) => mine.push(l),
            Err(e) => break e,
        }
        assert!(mine.len() <= 8, "one address took every session");
    };
    assert_eq!(mine.len(), 2);
    match &err {
        relay_core::Error::Rejected {
            code: ErrorCode::Busy,
            message,
        } => assert!(message.contains("2 sessions open"), "{message}"),
        other => panic!("unexpected: {other}"),
    }
    let (_other, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &one_tunnel(), None).await;
    assert!(matches!(reply, Reply::Welcome(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_address_leaves_room_for_another() {
    // 64 handshake slots in all; one address may fill 8 of them.
    let relay = TestRelay::start(RelayConfig {
        max_handshakes: 64,
        ..RelayConfig::default()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..80 {
        silent.push(connect_from(HOME, relay.addr).await.expect("connect"));
    }
    // The relay takes connections in order: once the last one has its answer, every silent
    // one before it has been seen.
    let last = silent.last_mut().expect("a connection");
    let mut answer = Vec::new();
    within(
        "the flood's last connection to be answered",
        last.read_to_end(&mut answer),
    )
    .await
    .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("from your address"), "{text:?}");

    let (_conn, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &one_tunnel(), None).await;
    assert!(matches!(reply, Reply::Welcome(_)), "{reply:?}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_wrong_codes_count_against_an_address() {
    let relay = TestRelay::start(RelayConfig {
        max_failed_claims: 3,
        ..RelayConfig::default()
    })
    .await;
    let control = relay.control();
    let unknown = |r: relay_core::Result<relay_core::client::PairedStream>| match r {
        Err(relay_core::Error::Rejected {
            code: ErrorCode::UnknownNameplate,
            ..
        }) => {}
        other => panic!("expected an unknown code, got {other:?}"),
    };
    for n in ["901", "902"] {
        unknown(within("wrong claim", claim(&control, n, HS)).await);
    }
    // Many successful transfers from the same address: none of them count.
    for _ in 0..5 {
        let offer = within("offer", relay_core::client::offer(&control, HS))
            .await
            .expect("offer");
        let nameplate = offer.nameplate().to_string();
        let waiting = tokio::spawn(offer.wait_for_receiver());
        let mut stream = within("claim", claim(&control, &nameplate, HS))
            .await
            .expect("a right code is never limited");
        let mut sender = within("pairing", waiting)
            .await
            .expect("join")
            .expect("paired");
        within("bytes", sender.write_all(b"x"))
            .await
            .expect("write");
        let mut b = [0u8; 1];
        within("bytes", stream.read_exact(&mut b))
            .await
            .expect("read");
    }
    unknown(within("third wrong claim", claim(&control, "903", HS)).await);
    match within("fourth wrong claim", claim(&control, "904", HS)).await {
        Err(relay_core::Error::Rejected {
            code: ErrorCode::Busy,
            message,
        }) => assert!(message.contains("3 a minute"), "{message}"),
        other => panic!("expected the limit, got {other:?}"),
    }
    // Another address is not limited by this one's mistakes.
    let hello = Hello::Receive {
        nameplate: "905".into(),
    };
    let (_c, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &hello, None).await;
    assert!(
        matches!(
            reply,
            Reply::Error {
                code: ErrorCode::UnknownNameplate,
                ..
            }
        ),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_held_to_its_share_of_offers() {
    let relay = TestRelay::start(RelayConfig {
        per_addr: relay_core::server::PerAddrLimits {
            offers: Some(1),
            ..Default::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let (_first, reply) = raw_hello_from(HOME, relay.addr, &Hello::Send, None).await;
    assert!(matches!(reply, Reply::Offered { .. }), "{reply:?}");
    let (_second, reply) = raw_hello_from(HOME, relay.addr, &Hello::Send, None).await;
    busy_naming(&reply, "1 file offers");
    let (_other, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &Hello::Send, None).await;
    assert!(matches!(reply, Reply::Offered { .. }), "{reply:?}");
}

const SECRET: &str = "the right secret, long enough";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_tokens_from_one_address_are_answered_ever_more_slowly() {
    let relay = TestRelay::start(RelayConfig {
        access: Access::single(Token::new(SECRET).expect("token")),
        ..RelayConfig::default()
    })
    .await;
    let wrong = Token::new("a wrong secret, long enough").expect("token");
    let hello = one_tunnel();
    let mut times = Vec::new();
    for _ in 0..4 {
        let start = Instant::now();
        let (_c, reply) = raw_hello_from(HOME, relay.addr, &hello, Some(&wrong)).await;
        assert!(
            matches!(
                reply,
                Reply::Error {
                    code: ErrorCode::Unauthorized,
                    ..
                }
            ),
            "{reply:?}"
        );
        times.push(start.elapsed());
    }
    assert!(
        times[0] < Duration::from_millis(200),
        "a first mistake is answered at once: {times:?}"
    );
    // 0, 250 ms, 500 ms, 1 s.
    assert!(
        times[3] >= Duration::from_millis(900),
        "the fourth is slowed down: {times:?}"
    );
    assert!(times[3] > times[1], "{times:?}");
    // Another address is not slowed down by this one's failures, and neither is the right
    // token from the same address.
    let start = Instant::now();
    let (_c, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &hello, Some(&wrong)).await;
    assert!(matches!(reply, Reply::Error { .. }), "{reply:?}");
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let (_c, reply) = raw_hello_from(
        HOME,
        relay.addr,
        &hello,
        Some(&Token::new(SECRET).expect("token")),
    )
    .await;
    assert!(matches!(reply, Reply::Welcome(_)), "{reply:?}");
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
}
