//! Tokens: who gets in, what a scoped token may do, replays, and revocation while sessions
//! run. (Wrong tokens answered ever more slowly: `per_addr.rs`.)

mod common;

use common::*;
use relay_core::auth::Token;
use relay_core::client::{ConnectConfig, claim_with, offer_with};
use relay_core::protocol::{ErrorCode, Hello, PREFACE, Reply, TunnelRequest};
use relay_core::server::{Access, NamedToken, Scope};
use relay_core::{Error, RelayConfig, SessionEnd, TunnelConfig, TunnelListener};
use tokio::io::AsyncWriteExt;

const SECRET: &str = "the right secret, long enough";

fn token(secret: &str) -> Token {
    Token::new(secret).expect("token")
}

fn with_token(token: Option<Token>) -> TunnelConfig {
    TunnelConfig {
        token,
        reconnect: relay_core::client::Reconnect::never(),
        ..TunnelConfig::default()
    }
}

fn assert_rejected(err: &Error, code: ErrorCode, needle: &str) {
    match err {
        Error::Rejected { code: c, message } if *c == code => {
            assert!(message.contains(needle), "{message}")
        }
        other => panic!("expected {code:?} ({needle}), got: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_and_transfers_need_the_right_token() {
    let relay = TestRelay::start(RelayConfig {
        access: Access::single(token(SECRET)),
        ..RelayConfig::default()
    })
    .await;
    let control = relay.control();
    let wrong = Some(token("a wrong secret, long enough"));
    for (who, t) in [("no token", None), ("a wrong token", wrong.clone())] {
        let err = within(
            who,
            TunnelListener::connect(&control, with_token(t.clone())),
        )
        .await
        .expect_err(who);
        assert_rejected(&err, ErrorCode::Unauthorized, "authentication failed");
        let connect = ConnectConfig {
            token: t,
            ..ConnectConfig::default()
        };
        let err = within(who, offer_with(&control, &connect))
            .await
            .expect_err(who);
        assert_rejected(&err, ErrorCode::Unauthorized, "authentication failed");
        let err = within(who, claim_with(&control, "12", &connect))
            .await
            .expect_err(who);
        assert_rejected(&err, ErrorCode::Unauthorized, "authentication failed");
    }

    let listener = within(
        "right token",
        TunnelListener::connect(&control, with_token(Some(token(SECRET)))),
    )
    .await
    .expect("the right token opens a tunnel");
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let back = within("echo", visit(addr, b"let in")).await.expect("visit");
    assert_eq!(back, b"let in");

    let connect = ConnectConfig {
        token: Some(token(SECRET)),
        ..ConnectConfig::default()
    };
    let offer = within("offer", offer_with(&control, &connect))
        .await
        .expect("offer with the right token");
    let nameplate = offer.nameplate().to_string();
    let waiting = tokio::spawn(offer.wait_for_receiver());
    within("claim", claim_with(&control, &nameplate, &connect))
        .await
        .expect("claim with the right token");
    within("pairing", waiting)
        .await
        .expect("join")
        .expect("paired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_handshake_replayed_byte_for_byte_is_refused() {
    let relay = TestRelay::start(RelayConfig {
        access: Access::single(token(SECRET)),
        ..RelayConfig::default()
    })
    .await;
    // What a legitimate client sends, captured: preface, hello, then its proof.
    let hello = one_tunnel();
    let (_conn, reply) = raw_hello_from(HOME, relay.addr, &hello, Some(&token(SECRET))).await;
    assert!(matches!(reply, Reply::Welcome(_)), "{reply:?}");
    let (mut conn, challenge) = raw_hello_from(HOME, relay.addr, &hello, None).await;
    let Reply::Challenge { nonce } = challenge else {
        panic!("no challenge: {challenge:?}");
    };
    let frame = relay_core::codec::encode(&hello).expect("encode");
    let proof = token(SECRET).prove(
        &nonce,
        &relay_core::auth::NO_BINDING,
        &frame[relay_core::codec::LEN_PREFIX..],
    );
    drop(conn.get_mut().shutdown().await);
    let mut captured = PREFACE.to_vec();
    captured.extend_from_slice(&frame);
    captured.extend_from_slice(&relay_core::codec::encode(&proof).expect("encode"));

    // Replayed on a new connection, it answers a nonce that is no longer the relay's.
    let sock = connect_from(HOME, relay.addr).await.expect("connect");
    let mut replay = relay_core::frame::FramedConn::new(sock, 4096);
    within("replay", replay.get_mut().write_all(&captured))
        .await
        .expect("replay");
    while replay.buffered().len() < PREFACE.len() {
        within("preface", replay.fill()).await.expect("preface");
    }
    replay.consume(PREFACE.len());
    let first: Reply = within("challenge", replay.read_frame())
        .await
        .expect("frame");
    assert!(matches!(first, Reply::Challenge { .. }), "{first:?}");
    let answer: Reply = within("answer", replay.read_frame()).await.expect("frame");
    match answer {
        Reply::Error {
            code: ErrorCode::Unauthorized,
            message,
        } => assert!(message.contains("authentication failed"), "{message}"),
        other => panic!("a replayed handshake got {other:?}"),
    }
}

fn scoped(name: &str, secret: &str, scope: Scope) -> NamedToken {
    NamedToken::new(name, token(secret)).with_scope(scope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_is_held_to_its_scope() {
    let base = relay_test_support::free_port();
    let narrow = Scope {
        ports: Some(base + 2..=base + 3),
        max_tunnels: Some(1),
        max_visitors: Some(7),
        transfers: false,
    };
    let relay = TestRelay::start(RelayConfig {
        public_ports: Some(base..=base + 9),
        // This test is about the token, not about its address's share of a small pool.
        per_addr: relay_core::server::PerAddrLimits {
            ports: Some(10),
            ..Default::default()
        },
        access: Access::from_tokens([
            scoped("narrow", "narrow secret 0123456789", narrow),
            NamedToken::new("wide", token(SECRET)),
        ]),
        ..RelayConfig::default()
    })
    .await;
    let control = relay.control();
    let narrow = || Some(token("narrow secret 0123456789"));

    // A port outside its range.
    let outside = TunnelConfig {
        preferred_port: Some(base),
        ..with_token(narrow())
    };
    let err = within("outside", TunnelListener::connect(&control, outside))
        .await
        .expect_err("port outside the scope");
    assert_rejected(&err, ErrorCode::Forbidden, "allows public ports");
    assert!(
        err.to_string().contains(&format!("port {base} is outside")),
        "{err}"
    );

    // More tunnels in one session than it allows.
    let err = within(
        "two tunnels",
        TunnelListener::connect_many(&control, with_token(narrow()), &[None, None]),
    )
    .await
    .expect_err("two tunnels");
    assert_rejected(&err, ErrorCode::Forbidden, "at most 1 tunnels");

    // Within its scope: a port from its range, and its visitor limit announced.
    let hello = Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: None,
            lease: None,
        }],
    };
    let (_held, reply) = raw_hello_from(HOME, relay.addr, &hello, narrow().as_ref()).await;
    let Reply::Welcome(welcome) = reply else {
        panic!("no welcome: {reply:?}");
    };
    assert_eq!(
        welcome.tunnels[0].public_port,
        base + 2,
        "lowest port of its range"
    );
    assert_eq!(welcome.max_visitors, 7);

    // Over its tunnel count across sessions: the first session holds its one tunnel.
    let err = within(
        "second session",
        TunnelListener::connect(&control, with_token(narrow())),
    )
    .await
    .expect_err("over the tunnel count");
    assert_rejected(&err, ErrorCode::Forbidden, "holds them all");

    // No transfers, either way.
    let connect = ConnectConfig {
        token: narrow(),
        ..ConnectConfig::default()
    };
    let err = within("offer", offer_with(&control, &connect))
        .await
        .expect_err("offer");
    assert_rejected(&err, ErrorCode::Forbidden, "does not allow file transfers");
    let err = within("claim", claim_with(&control, "12", &connect))
        .await
        .expect_err("claim");
    assert_rejected(&err, ErrorCode::Forbidden, "does not allow file transfers");

    // The other token is not limited by it.
    let wide = within(
        "wide",
        TunnelListener::connect_many(
            &control,
            with_token(Some(token(SECRET))),
            &[Some(base), None],
        ),
    )
    .await
    .expect("an unscoped token");
    assert_eq!(wide.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_token_ends_its_sessions_and_only_those() {
    let relay = RelayServerWithHandle::start(Access::from_tokens([
        NamedToken::new("alice", token("alice's secret, long enough")),
        NamedToken::new("bob", token("bob's secret, long enough!")),
    ]))
    .await;
    let control = relay.relay.control();
    // Alice's client would reconnect after an ordinary loss; a revocation must stop it.
    let alice = TunnelConfig {
        token: Some(token("alice's secret, long enough")),
        ..TunnelConfig::default()
    };
    let alice = within("alice", TunnelListener::connect(&control, alice))
        .await
        .expect("alice");
    let bob = within(
        "bob",
        TunnelListener::connect(
            &control,
            with_token(Some(token("bob's secret, long enough!"))),
        ),
    )
    .await
    .expect("bob");
    let bob_addr = public(&bob);
    let _bob = serve_echo(bob, b"bob:".to_vec());

    // Alice also has a file offer waiting for its receiver.
    let alice_connect = ConnectConfig {
        token: Some(token("alice's secret, long enough")),
        ..ConnectConfig::default()
    };
    let offer = within("alice's offer", offer_with(&control, &alice_connect))
        .await
        .expect("offer");
    let offer = tokio::spawn(offer.wait_for_receiver());

    relay.access.replace(Access::from_tokens([NamedToken::new(
        "bob",
        token("bob's secret, long enough!"),
    )]));
    let err = within("alice's session to end", alice.accept())
        .await
        .expect_err("alice is revoked");
    match err {
        Error::SessionLost(SessionEnd::Revoked(reason)) => {
            assert!(reason.contains("token 'alice'"), "{reason}")
        }
        other => panic!("alice's session ended otherwise: {other}"),
    }
    match within("alice's offer to end", offer).await.expect("join") {
        Err(Error::SessionLost(SessionEnd::Withdrawn(reason))) => {
            assert!(reason.contains("token 'alice'"), "{reason}")
        }
        other => panic!("alice's offer ended otherwise: {other:?}"),
    }
    let back = within("bob's echo", visit(bob_addr, b"still here"))
        .await
        .expect("bob's tunnel");
    assert_eq!(back, b"bob:still here");
    // And alice is now refused outright.
    let err = within(
        "alice again",
        TunnelListener::connect(
            &control,
            with_token(Some(token("alice's secret, long enough"))),
        ),
    )
    .await
    .expect_err("alice refused");
    assert_rejected(&err, ErrorCode::Unauthorized, "authentication failed");
}

/// A relay whose token set the test swaps.
struct RelayServerWithHandle {
    relay: TestRelay,
    access: relay_core::server::AccessHandle,
}

impl RelayServerWithHandle {
    async fn start(access: Access) -> Self {
        let listener =
            relay_core::net::bind_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let server = relay_core::RelayServer::new(
            listener,
            RelayConfig {
                access,
                ..RelayConfig::default()
            },
        )
        .expect("config");
        let handle = server.access_handle();
        let relay = TestRelay::adopt(server);
        RelayServerWithHandle {
            relay,
            access: handle,
        }
    }
}
