//! File-transfer rendezvous through an in-process relay: offers, claims, pairing, raw bytes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use relay_core::client::{claim, offer};
use relay_core::protocol::{ErrorCode, Hello, Reply};
use relay_core::{Error, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HS: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_offer_carries_bytes_both_ways_including_the_first_ones() {
    let relay = TestRelay::default().await;
    let control = relay.control();
    let offered = offer(&control, HS).await.expect("offer");
    let nameplate = offered.nameplate().to_string();
    assert!(nameplate.bytes().all(|b| b.is_ascii_digit()), "{nameplate}");

    let data = payload(1, 3 << 20);
    let expected = data.clone();
    let sender = tokio::spawn(async move {
        let mut sock = offered.wait_for_receiver().await.expect("paired");
        // Written the moment the pairing completes: must not be lost in the switch to raw bytes.
        sock.write_all(&data).await.expect("send");
        sock.shutdown().await.expect("fin");
        let mut answer = Vec::new();
        sock.read_to_end(&mut answer).await.expect("answer");
        answer
    });
    let mut receiver = within("claim", claim(&control, &nameplate, HS))
        .await
        .expect("claim");
    let mut got = Vec::new();
    within("transfer", receiver.read_to_end(&mut got))
        .await
        .expect("receive");
    assert!(got == expected, "bytes differ");
    receiver.write_all(b"thanks").await.expect("answer");
    receiver.shutdown().await.expect("fin");
    assert_eq!(within("sender", sender).await.expect("join"), b"thanks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameplate_serves_one_claim_and_unknown_ones_are_refused() {
    let relay = TestRelay::default().await;
    let control = relay.control();
    let offered = offer(&control, HS).await.expect("offer");
    let nameplate = offered.nameplate().to_string();
    let sender = tokio::spawn(offered.wait_for_receiver());
    let _first = claim(&control, &nameplate, HS).await.expect("first claim");
    let _paired = within("sender", sender)
        .await
        .expect("join")
        .expect("paired");

    for (nameplate, code) in [
        (nameplate.as_str(), ErrorCode::UnknownNameplate),
        // The largest nameplate a relay may issue, and far above what this one draws from.
        ("999999999999", ErrorCode::UnknownNameplate),
        // Never issued (protocol::nameplate): no leading zero, at most 12 digits.
        ("0", ErrorCode::BadRequest),
        ("0123", ErrorCode::BadRequest),
        ("1234567890123", ErrorCode::BadRequest),
        ("12-word", ErrorCode::BadRequest),
        ("", ErrorCode::BadRequest),
    ] {
        match claim(&control, nameplate, HS).await {
            Err(Error::Rejected { code: got, message }) => {
                assert_eq!(got, code, "{nameplate:?}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{nameplate:?}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_sender_is_reported_to_its_receiver() {
    let relay = TestRelay::default().await;
    let control = relay.control();
    let offered = offer(&control, HS).await.expect("offer");
    let nameplate = offered.nameplate().to_string();
    drop(offered);
    // The relay withdraws the offer when the sender's connection closes; until it has noticed,
    // a claim may still reach the dying offer, which answers PeerGone.
    let err = within("claim", claim(&control, &nameplate, HS))
        .await
        .expect_err("no sender");
    assert!(
        matches!(
            err,
            Error::Rejected {
                code: ErrorCode::UnknownNameplate | ErrorCode::PeerGone,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_bounded_in_number_and_time() {
    let relay = TestRelay::start(RelayConfig {
        max_transfers: 1,
        per_addr: all_from_one_address(),
        offer_ttl: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let control = relay.control();
    let first = offer(&control, HS).await.expect("offer");
    match offer(&control, HS).await {
        Err(Error::Rejected {
            code: ErrorCode::Busy,
            message,
        }) => assert!(message.contains("(1 transfers)"), "{message}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    let err = within("offer to expire", first.wait_for_receiver())
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
    // The slot is free again.
    let _again = within("offer after expiry", offer(&control, HS))
        .await
        .expect("offer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sender_loses_its_offer() {
    let relay = TestRelay::start(RelayConfig {
        heartbeat_interval: Duration::from_millis(100),
        ..RelayConfig::default()
    })
    .await;
    let control = relay.control();
    // A sender that registers an offer by hand and then says nothing while keeping its
    // connection open (`client::offer` hides its socket, and its `wait_for_receiver` would send
    // heartbeats). The relay closing that connection is the moment the offer is withdrawn.
    let started = Instant::now();
    let (conn, reply) = raw_hello(relay.addr, &Hello::Send).await;
    let (mut sock, _) = conn.into_parts();
    let Reply::Offered { nameplate, .. } = reply else {
        panic!("expected an offer, got {reply:?}");
    };
    let mut rest = Vec::new();
    let _ = within(
        "relay to drop the silent sender",
        sock.read_to_end(&mut rest),
    )
    .await;
    // Three silent intervals (300 ms), not one.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "dropped after {:?}",
        started.elapsed()
    );
    // The relay withdraws the offer before it closes the sender's connection.
    match within("claim", claim(&control, &nameplate, HS)).await {
        Err(Error::Rejected {
            code: ErrorCode::UnknownNameplate,
            ..
        }) => {}
        other => panic!("the silent sender's offer was not withdrawn: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_one_address_are_rate_limited() {
    let relay = TestRelay::default().await;
    let control = relay.control();
    let mut limited = None;
    for i in 0..40 {
        match claim(&control, &format!("{}", 900_000 + i), HS).await {
            Err(Error::Rejected {
                code: ErrorCode::UnknownNameplate,
                ..
            }) => {}
            Err(Error::Rejected {
                code: ErrorCode::Busy,
                message,
            }) => {
                limited = Some((i, message));
                break;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    let (i, message) = limited.expect("the relay never limited a claim loop");
    assert_eq!(i, 30, "limited after {i} claims");
    assert!(message.contains("too many wrong codes"), "{message}");
}
