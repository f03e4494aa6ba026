//! Leases under refusal: a reconnect whose hello cannot be granted in full must not cost its
//! owner the ports it holds leases for.

mod common;

use common::*;
use relay_core::RelayConfig;
use relay_core::protocol::{Hello, Reply, TunnelRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reconnect_keeps_its_leased_port() {
    // A 4-port pool: one address may hold one port of it.
    let base = relay_test_support::free_port().min(65_000 - 4);
    let relay = TestRelay::start(RelayConfig {
        public_ports: Some(base..=base + 3),
        ..RelayConfig::default()
    })
    .await;
    let (mut lost, reply) = raw_hello_from(HOME, relay.addr, &one_tunnel(), None).await;
    let Reply::Welcome(welcome) = reply else {
        panic!("first session refused: {reply:?}");
    };
    let grant = welcome.tunnels[0].clone();
    // Lost without a goodbye: the port is leased.
    within("close", lost.get_mut().shutdown())
        .await
        .expect("shutdown");
    let mut rest = Vec::new();
    within(
        "the relay to end the session",
        lost.get_mut().read_to_end(&mut rest),
    )
    .await
    .expect("read");

    // The owner comes back asking for its port and one more, beyond its share: refused.
    let reclaim = TunnelRequest {
        preferred_port: Some(grant.public_port),
        lease: grant.lease.clone(),
    };
    let greedy = Hello::Tunnel {
        tunnels: vec![
            reclaim.clone(),
            TunnelRequest {
                preferred_port: None,
                lease: None,
            },
        ],
    };
    let (_refused, reply) = raw_hello_from(HOME, relay.addr, &greedy, None).await;
    assert!(
        matches!(reply, Reply::Error { .. }),
        "two ports granted beyond a share of one: {reply:?}"
    );

    // The port is still leased: another address asking for it by number gets another one.
    let squatter = Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: Some(grant.public_port),
            lease: None,
        }],
    };
    let (_other, reply) = raw_hello_from(NEIGHBOUR, relay.addr, &squatter, None).await;
    let Reply::Welcome(w) = reply else {
        panic!("neighbour refused: {reply:?}");
    };
    assert_ne!(
        w.tunnels[0].public_port, grant.public_port,
        "a refused reconnect freed its owner's leased port"
    );

    // And the owner, asking for just its port, gets it back.
    let modest = Hello::Tunnel {
        tunnels: vec![reclaim],
    };
    let (_back, reply) = raw_hello_from(HOME, relay.addr, &modest, None).await;
    let Reply::Welcome(w) = reply else {
        panic!("lease not honoured after a refused reconnect: {reply:?}");
    };
    assert_eq!(w.tunnels[0].public_port, grant.public_port);
}

/// A reclaimed lease takes its expiry timer with it. Each lost session leases its ports until
/// they are reclaimed or expire; the timer used to stay asleep for the whole lease time after
/// a reclaim, so a client reconnecting in a loop grew the relay by about 256 bytes a time.
#[tokio::test(flavor = "current_thread")]
async fn reclaimed_leases_leave_no_timer_behind() {
    const RECONNECTS: usize = 30;
    let relay = TestRelay::on_this_runtime(RelayConfig {
        lease_ttl: std::time::Duration::from_secs(3600),
        ..RelayConfig::default()
    })
    .await;
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let (mut conn, reply) = raw_hello_from(HOME, relay.addr, &one_tunnel(), None).await;
    let Reply::Welcome(welcome) = reply else {
        panic!("first session refused: {reply:?}");
    };
    let grant = welcome.tunnels[0].clone();
    let reclaim = Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: Some(grant.public_port),
            lease: grant.lease.clone(),
        }],
    };
    let mut baseline = None;
    for _ in 0..RECONNECTS {
        // Lost without a goodbye: the port is leased until the owner comes back for it.
        within("close", conn.get_mut().shutdown())
            .await
            .expect("shutdown");
        let mut rest = Vec::new();
        within("the session to end", conn.get_mut().read_to_end(&mut rest))
            .await
            .expect("read");
        let (next, reply) = raw_hello_from(HOME, relay.addr, &reclaim, None).await;
        let Reply::Welcome(w) = reply else {
            panic!("lease not honoured: {reply:?}");
        };
        assert_eq!(w.tunnels[0].public_port, grant.public_port);
        conn = next;
        baseline.get_or_insert_with(alive);
    }
    let (before, after) = (baseline.expect("one reconnect at least"), alive());
    assert!(
        after <= before + 2,
        "{} tasks alive after {RECONNECTS} reconnects, {before} after the first",
        after
    );
}
