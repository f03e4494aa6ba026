//! What one connection's task costs while it is an idle tunnel session.
//!
//! A task's future is as large as the largest state it can be in, and a relay holds one per
//! tunnel session, idle sessions included (10,000 of them is the goal, at 16 KiB each in all).
//! The handshake's stages are large and short: they run boxed, so the task stays the size of
//! a session. These bounds fail when a large stage is inlined again.

use std::mem::size_of_val;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::admission::HandshakeTicket;
use super::{RelayConfig, RelayServer, handle_connection};

/// The connection's task future must stay below this (in the test build, where it is 3.8 KiB:
/// mostly the session's serving loop, heartbeats and accept loops). Inlining the TLS opening
/// again makes it 5.5 KiB.
const CONNECTION_FUTURE_MAX: usize = 4608;

#[tokio::test]
async fn a_connections_task_is_the_size_of_a_session() {
    let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = control.local_addr().expect("addr");
    let relay = RelayServer::new(control, RelayConfig::default()).expect("relay");
    let sock = TcpStream::connect(addr).await.expect("connect");
    let ticket = HandshakeTicket {
        global: None,
        addr: None,
    };
    let conn = handle_connection(
        sock,
        addr,
        false,
        relay.shared.clone(),
        ticket,
        CancellationToken::new(),
    );
    let size = size_of_val(&conn);
    println!("connection future: {size} bytes");
    assert!(
        size <= CONNECTION_FUTURE_MAX,
        "a connection's future is {size} bytes (at most {CONNECTION_FUTURE_MAX}): \
         a handshake stage was inlined again?"
    );
}
