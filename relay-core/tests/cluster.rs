//! Several relays without a shared store: nameplates name their relay, a receiver on the
//! wrong relay is redirected once, and a code naming a relay that is gone fails fast.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use relay_core::client::{claim, offer};
use relay_core::protocol::Reply;
use relay_core::server::{Cluster, RelayServer};
use relay_core::{Error, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HS: Duration = Duration::from_secs(10);

/// A fake relay that answers every connection with a redirect to `to`; counts connections.
async fn redirector(to: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let to = to.clone();
            tokio::spawn(async move {
                let mut hello = [0u8; 64];
                let _ = sock.read(&mut hello).await;
                let reply = Reply::Redirect { to };
                let _ = relay_core::codec::write_preface_and_frame(&mut sock, &reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_redirect_is_followed_once_and_never_twice() {
    let (third, third_seen) = redirector("127.0.0.1:9".into()).await;
    let (second, second_seen) = redirector(third).await;
    let (first, first_seen) = redirector(second.clone()).await;
    let Err(err) = within("claim", claim(&first, "12345", HS)).await else {
        panic!("a second redirect is an error");
    };
    assert!(
        err.to_string()
            .contains(&format!("{second} redirected again")),
        "{err}"
    );
    assert_eq!(first_seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        second_seen.load(Ordering::SeqCst),
        1,
        "the redirect was followed"
    );
    assert_eq!(third_seen.load(Ordering::SeqCst), 0, "but only once");
}

/// Two relays, ids 1 and 2, each knowing the other.
async fn pair() -> (TestRelay, TestRelay) {
    let bind =
        || relay_core::net::bind_listener("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let (l1, l2) = (bind(), bind());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let config = |id, peer: u32, addr: std::net::SocketAddr| RelayConfig {
        cluster: Some(Cluster::new(id, [(peer, addr.to_string())]).expect("cluster")),
        ..RelayConfig::default()
    };
    let r1 = RelayServer::new(l1, config(1, 2, a2)).expect("relay 1");
    let r2 = RelayServer::new(l2, config(2, 1, a1)).expect("relay 2");
    (TestRelay::adopt(r1), TestRelay::adopt(r2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_on_the_wrong_relay_is_sent_to_the_right_one() {
    let (one, two) = pair().await;
    let offered = offer(&one.control(), HS).await.expect("offer");
    let nameplate = offered.nameplate().to_string();
    assert!(nameplate.ends_with('1'), "relay 1's nameplate: {nameplate}");
    let sender = tokio::spawn(async move {
        let mut sock = offered.wait_for_receiver().await.expect("paired");
        sock.write_all(b"across relays").await.expect("send");
        sock.shutdown().await.expect("fin");
    });
    let mut receiver = within("claim", claim(&two.control(), &nameplate, HS))
        .await
        .expect("claim through relay 2");
    let mut got = Vec::new();
    within("transfer", receiver.read_to_end(&mut got))
        .await
        .expect("receive");
    assert_eq!(got, b"across relays");
    within("sender", sender).await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_naming_a_relay_that_is_gone_fails_fast_naming_it() {
    let (mut one, two) = pair().await;
    let offered = offer(&one.control(), HS).await.expect("offer");
    let nameplate = offered.nameplate().to_string();
    drop(offered);
    one.stop().await;
    let start = Instant::now();
    let Err(err) = claim(&two.control(), &nameplate, HS).await else {
        panic!("relay 1 is gone");
    };
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let said = err.to_string();
    assert!(said.contains(&one.control()), "names the relay: {said}");
    assert!(said.contains("new code"), "{said}");
    // A number naming no relay of the cluster is refused by the one asked.
    let stray = format!("{}7", &nameplate[..nameplate.len() - 1]);
    let Err(err) = claim(&two.control(), &stray, HS).await else {
        panic!("no relay 7");
    };
    assert!(err.to_string().contains("relay 7"), "{err}");
}
