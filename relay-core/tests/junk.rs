//! Hostile and malformed input on the control port: answered or dropped, and tunnels already
//! open are not disturbed.

mod common;

use std::time::Duration;

use common::*;
use relay_core::RelayConfig;
use relay_core::protocol::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
