//! The tunnel trace of `docs/protocol.md` against a real session: a relay that requires a
//! token, a `TunnelListener` and a visitor, with a recorder between client and relay. What the
//! recorder saw, with the random and machine-dependent values (nonce, MAC, port, lease secret,
//! addresses) replaced by the document's example values, must hold the trace's handshake byte
//! for byte and the trace's yamux frames in order on each stream.

use std::net::SocketAddr;

use relay_core::codec::{LEN_PREFIX, decode};
use relay_core::protocol::*;
use relay_core::server::Access;
use relay_core::{RelayConfig, TunnelConfig, TunnelListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::common::{TestRelay, public, within};
use super::examples::*;
use super::traces::{self, CLIENT, DATA, FIN, GREETING, RELAY};

/// A yamux frame: stream id and its whole bytes (header and body).
type Frame = (u32, Vec<u8>);

/// Forwards one connection to `upstream`, recording each direction.
async fn recorder(upstream: SocketAddr) -> (SocketAddr, [watch::Receiver<Vec<u8>>; 2]) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (up_tx, up) = watch::channel(Vec::new());
    let (down_tx, down) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept");
        let relay = TcpStream::connect(upstream).await.expect("connect");
        let (cr, cw) = client.into_split();
        let (rr, rw) = relay.into_split();
        tokio::join!(pump(cr, rw, up_tx), pump(rr, cw, down_tx));
    });
    (addr, [up, down])
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    seen: watch::Sender<Vec<u8>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        seen.send_modify(|v| v.extend_from_slice(&buf[..n]));
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Splits one direction of a session into its handshake (preface and two frames) and the yamux
/// frames after it; `None` while the bytes are incomplete.
fn split(bytes: &[u8]) -> Option<(Vec<Vec<u8>>, Vec<Frame>)> {
    let mut at = PREFACE_LEN;
    let mut handshake = vec![bytes.get(..at)?.to_vec()];
    for _ in 0..2 {
        let len = u32::from_be_bytes(bytes.get(at..at + LEN_PREFIX)?.try_into().ok()?) as usize;
        handshake.push(bytes.get(at..at + LEN_PREFIX + len)?.to_vec());
        at += LEN_PREFIX + len;
    }
    let mut frames = Vec::new();
    while at < bytes.len() {
        let header = bytes.get(at..at + 12)?;
        let stream = u32::from_be_bytes(header[4..8].try_into().ok()?);
        let len = u32::from_be_bytes(header[8..12].try_into().ok()?) as usize;
        let body = if header[1] == DATA { len } else { 0 };
        frames.push((stream, bytes.get(at..at + 12 + body)?.to_vec()));
        at += 12 + body;
    }
    Some((handshake, frames))
}

/// The relay's direction with its nonce, port, lease secret and the visitor's addresses
/// replaced by the example values; returns the nonce it had.
fn normalize_relay(handshake: &mut [Vec<u8>], frames: &mut [Frame]) -> [u8; 32] {
    let Reply::Challenge { nonce } = decode(&handshake[1][LEN_PREFIX..]).expect("challenge") else {
        panic!("the relay's first reply is not a challenge");
    };
    handshake[1] = frame(&Reply::Challenge { nonce: NONCE });
    let Reply::Welcome(mut welcome) = decode(&handshake[2][LEN_PREFIX..]).expect("welcome") else {
        panic!("the relay's second reply is not a welcome");
    };
    assert_eq!(welcome.tunnels.len(), 1);
    welcome.tunnels[0] = Grant {
        public_port: PUBLIC_PORT,
        lease: Some(lease()),
    };
    handshake[2] = frame(&Reply::Welcome(welcome));
    for (stream, bytes) in frames.iter_mut() {
        // The first data frame the relay sends on stream 2 is the visitor's header.
        if *stream == 2 && bytes[3] & traces::SYN as u8 != 0 {
            let header: VisitorHeader = decode(&bytes[12 + LEN_PREFIX..]).expect("header");
            assert_eq!((header.tunnel, header.visitor_id), (0, 2), "{header:?}");
            let example = visitor_header(2, addr(RELAY_SIDE), addr(VISITOR));
            *bytes = traces::yamux(DATA, traces::SYN, 2, &frame(&example));
        }
    }
    nonce
}

/// The client's direction with its proof recomputed for the example nonce, after checking it
/// was right for the real one.
fn normalize_client(handshake: &mut [Vec<u8>], real_nonce: &[u8; 32]) {
    let hello: Hello = decode(&handshake[1][LEN_PREFIX..]).expect("hello");
    let sent: Proof = decode(&handshake[2][LEN_PREFIX..]).expect("proof");
    assert!(sent == proof(real_nonce, &hello), "the client's proof");
    handshake[2] = frame(&proof(&NONCE, &hello));
}

/// Whether `wanted` appear in `got` in the same order on each stream (other frames, such as
/// window updates, may come between), and stream 0 (pings) in any order.
fn holds(got: &[Frame], wanted: &[Frame]) -> Result<(), String> {
    let mut pings: Vec<&Vec<u8>> = got.iter().filter(|f| f.0 == 0).map(|f| &f.1).collect();
    for (_, ping) in wanted.iter().filter(|f| f.0 == 0) {
        let at = pings.iter().position(|p| *p == ping);
        let at = at.ok_or_else(|| format!("no ping frame {ping:02x?}"))?;
        pings.remove(at);
    }
    let streams: std::collections::BTreeSet<u32> = wanted.iter().map(|f| f.0).collect();
    for stream in streams.into_iter().filter(|s| *s != 0) {
        let mut on_stream = got.iter().filter(|f| f.0 == stream).map(|f| &f.1);
        for (_, frame) in wanted.iter().filter(|f| f.0 == stream) {
            if !on_stream.any(|g| g == frame) {
                return Err(format!("stream {stream}: no frame {frame:02x?} in order"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_trace_is_what_a_real_session_writes() {
    let token = relay_core::auth::Token::new(TOKEN).expect("token");
    let relay = TestRelay::start(RelayConfig {
        access: Access::single(token.clone()),
        ..RelayConfig::default()
    })
    .await;
    let (tap, [mut up, mut down]) = recorder(relay.addr).await;
    let config = TunnelConfig {
        token: Some(token),
        reconnect: relay_core::client::Reconnect::never(),
        ..TunnelConfig::default()
    };
    let listener = within("tunnel", TunnelListener::connect(&tap.to_string(), config))
        .await
        .expect("tunnel");
    let visitor_addr = public(&listener);
    let echo = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("visitor");
        let (mut read, mut write) = tokio::io::split(stream);
        tokio::io::copy(&mut read, &mut write).await.expect("echo");
        write.shutdown().await.expect("shutdown");
        listener
    });
    within("one visitor", async {
        let mut visitor = TcpStream::connect(visitor_addr).await.expect("visit");
        visitor.write_all(GREETING).await.expect("send");
        let mut back = vec![0u8; GREETING.len()];
        visitor.read_exact(&mut back).await.expect("echo");
        assert_eq!(back, GREETING);
        visitor.shutdown().await.expect("fin");
        let mut rest = Vec::new();
        visitor.read_to_end(&mut rest).await.expect("clean end");
        assert!(rest.is_empty());
    })
    .await;
    let _listener = within("echo task", echo).await.expect("echo task");

    let trace = super::doc::examples()
        .remove("trace-tunnel")
        .expect("the document has the tunnel trace");
    let (mut want_relay, mut want_relay_frames) =
        split(&trace.streams[RELAY]).expect("trace: relay's side");
    let (mut want_client, want_client_frames) =
        split(&trace.streams[CLIENT]).expect("trace: client's side");
    // The document's values are the example ones already: normalizing keeps them.
    let doc_nonce = normalize_relay(&mut want_relay, &mut want_relay_frames);
    normalize_client(&mut want_client, &doc_nonce);

    // Wait until both sides have written every frame of the trace (the last ones are FINs).
    let wanted_fin = traces::yamux(DATA, FIN, 2, &[]);
    let complete = |bytes: &Vec<u8>| {
        split(bytes).is_some_and(|(_, frames)| frames.iter().any(|f| f.1 == wanted_fin))
    };
    within("the relay's frames", down.wait_for(complete))
        .await
        .expect("recorder");
    within("the client's frames", up.wait_for(complete))
        .await
        .expect("recorder");
    let (mut relay_side, mut relay_frames) = split(&down.borrow()).expect("relay's side");
    let (mut client_side, client_frames) = split(&up.borrow()).expect("client's side");
    let nonce = normalize_relay(&mut relay_side, &mut relay_frames);
    normalize_client(&mut client_side, &nonce);

    assert_eq!(relay_side, want_relay, "the relay's handshake");
    assert_eq!(client_side, want_client, "the client's handshake");
    holds(&relay_frames, &want_relay_frames).unwrap_or_else(|e| panic!("relay: {e}"));
    holds(&client_frames, &want_client_frames).unwrap_or_else(|e| panic!("client: {e}"));
}
