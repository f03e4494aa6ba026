//! Visitor resets (protocol version 3). yamux 0.14 drops a stream whose write side is closed
//! without a word to the peer, and ignores the peer's later data for it; a peer out of send
//! credit on that stream would wait for ever. Each side says so on the control stream instead:
//! these tests make each side drop such a stream while the other is pushing, and check that
//! the pusher learns of it, and that a version-2 client keeps working without the new message.

mod common;

use common::*;
use relay_core::codec;
use relay_core::frame::FramedConn;
use relay_core::mux::{self, Role};
use relay_core::protocol::{
    ClientControl, RelayControl, Reply, VisitorHeader, VisitorReply, preface,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const CHUNK: usize = 64 * 1024;
const TO_CLIENT: &str = r#"relay_visitor_resets_total{direction="to_client"}"#;
const FROM_CLIENT: &str = r#"relay_visitor_resets_total{direction="from_client"}"#;
const VISITORS_OPEN: &str = r#"relay_visitors_open{token="-"}"#;

/// Serves a download on `stream` from two tasks: one reads until the visitor's FIN and says so
/// on `fin`, the other writes without end; returns what ended the writing.
fn endless_download<S>(
    stream: S,
    fin: oneshot::Sender<()>,
) -> tokio::task::JoinHandle<std::io::Error>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    tokio::spawn(async move {
        let mut sink = vec![0u8; CHUNK];
        while let Ok(n) = r.read(&mut sink).await {
            if n == 0 {
                let _ = fin.send(());
                break;
            }
        }
        // Keep the read half: dropping it would not matter, but the writer is the point.
        std::future::pending::<()>().await;
    });
    tokio::spawn(async move {
        let chunk = vec![7u8; CHUNK];
        loop {
            if let Err(e) = w.write_all(&chunk).await {
                return e;
            }
        }
    })
}

/// A visitor that reads a little of a download, half-closes, and once its FIN has crossed the
/// tunnel (`fin`), goes away with the rest unread (its close resets the connection).
async fn read_a_little_then_leave(addr: std::net::SocketAddr, fin: oneshot::Receiver<()>) {
    let mut visitor = within("visitor connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut first = vec![0u8; 16 * 1024];
    within("the first bytes", visitor.read_exact(&mut first))
        .await
        .expect("read");
    visitor.shutdown().await.expect("half-close");
    within("the visitor's FIN to cross", fin)
        .await
        .expect("FIN seen");
    drop(visitor);
}

/// The visitor half-closes and leaves during a download: the relay drops its stream
/// half-closed and sends `RelayControl::Reset`, and the application's write that waits for
/// credit fails with a reset instead of waiting for ever.
#[tokio::test]
async fn a_download_whose_visitor_left_fails_at_the_client() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let (fin_tx, fin) = oneshot::channel();
    let serving = tokio::spawn(async move {
        let (stream, _) = within("accept", listener.accept()).await.expect("accept");
        (endless_download(stream, fin_tx), listener)
    });
    read_a_little_then_leave(addr, fin).await;
    let (writer, _listener) = serving.await.expect("join");
    let error = within("the blocked writer to learn of the reset", writer)
        .await
        .expect("join");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    assert_eq!(metric(&relay.metrics, TO_CLIENT), Some(1));
}

/// The other way: the application closes its side and drops the stream while the visitor is
/// still uploading. The client sends `ClientControl::Reset`, and the relay, whose write waited
/// for credit, resets the visitor at once instead of holding it for ever.
#[tokio::test]
async fn an_upload_whose_server_left_resets_the_visitor() {
    let relay = TestRelay::default().await;
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    let serving = tokio::spawn(async move {
        let (mut stream, _) = within("accept", listener.accept()).await.expect("accept");
        let mut first = vec![0u8; 16 * 1024];
        within("the first bytes", stream.read_exact(&mut first))
            .await
            .expect("read");
        stream.shutdown().await.expect("half-close");
        drop(stream);
        listener
    });
    let mut visitor = within("visitor connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let chunk = vec![1u8; CHUNK];
    let uploaded = within("the visitor to be reset", async {
        loop {
            if let Err(e) = visitor.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await;
    assert!(
        matches!(
            uploaded.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{uploaded}"
    );
    let _listener = serving.await.expect("join");
    until_metric(&relay.metrics, FROM_CLIENT, 1).await;
    until_metric(&relay.metrics, VISITORS_OPEN, 0).await;
}

/// A hand-written client speaking `version` serves a download whose visitor half-closes and
/// leaves; returns the control frames the relay sent from then until two ping round trips
/// later. The relay sends a pending reset before it reads the next ping, so a reset it meant
/// to send is among them.
async fn raw_client_download(relay: &TestRelay, version: u16) -> Vec<RelayControl> {
    let sock = within("connect", TcpStream::connect(relay.addr))
        .await
        .expect("connect");
    let mut conn = FramedConn::new(sock, 4096);
    let hello = one_tunnel();
    within(
        "hello",
        conn.write_versioned_preface_and_frame(version, &hello),
    )
    .await
    .expect("hello");
    while conn.buffered().len() < 8 {
        within("preface", conn.fill()).await.expect("preface");
    }
    assert_eq!(
        conn.buffered()[..8],
        preface(version),
        "answered in our version"
    );
    conn.consume(8);
    let reply = within("welcome", conn.read_frame::<Reply>())
        .await
        .expect("welcome");
    let Reply::Welcome(welcome) = reply else {
        panic!("expected a welcome, got {reply:?}");
    };
    let port = welcome.tunnels[0].public_port;
    let (sock, early) = conn.into_parts();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let mut mux = mux::start(sock, &early, Role::Dialer, 16, stop);
    tokio::spawn(std::mem::replace(
        &mut mux.driver,
        Box::pin(async { unreachable!() }),
    ));
    let opened = within("control stream", mux.handle.open())
        .await
        .expect("open");
    let mut control = FramedConn::new(opened, 4096);
    let mut round_trip = async |n: u64, seen: &mut Vec<RelayControl>| {
        control
            .write_frame(&ClientControl::Ping(n))
            .await
            .expect("ping");
        loop {
            match within("pong", control.read_frame::<RelayControl>())
                .await
                .expect("frame")
            {
                RelayControl::Pong(m) if m == n => return,
                other => seen.push(other),
            }
        }
    };
    round_trip(0, &mut Vec::new()).await;

    let (fin_tx, fin) = oneshot::channel();
    let visitor = tokio::spawn(read_a_little_then_leave(([127, 0, 0, 1], port).into(), fin));
    let stream = within("visitor stream", mux.inbound.recv())
        .await
        .expect("stream");
    let mut framed = FramedConn::exact(stream, 4096);
    let header = within("header", framed.read_frame::<VisitorHeader>())
        .await
        .expect("header");
    let (mut stream, _) = framed.into_parts();
    codec::write_frame(&mut stream, &VisitorReply::Accepted)
        .await
        .expect("accept");
    let _writer = endless_download(stream, fin_tx);
    within("visitor", visitor).await.expect("visitor");
    until_metric(&relay.metrics, VISITORS_OPEN, 0).await;

    let mut seen = Vec::new();
    round_trip(1, &mut seen).await;
    round_trip(2, &mut seen).await;
    assert!(
        seen.iter().all(|f| *f
            == RelayControl::Reset {
                visitor_id: header.visitor_id
            }),
        "{seen:?}"
    );
    seen
}

/// A version-2 client still gets a working session (a visitor served, pings answered), in
/// version 2, and never the version-3 message; a version-3 client in the same situation gets it.
#[tokio::test]
async fn a_version_2_client_is_served_and_never_sees_a_reset() {
    let relay = TestRelay::default().await;
    let v2 = raw_client_download(&relay, 2).await;
    assert!(v2.is_empty(), "a version-2 client got {v2:?}");
    assert_eq!(metric(&relay.metrics, TO_CLIENT), Some(0));
    let v3 = raw_client_download(&relay, 3).await;
    assert_eq!(v3.len(), 1, "a version-3 client must be told: {v3:?}");
    assert_eq!(metric(&relay.metrics, TO_CLIENT), Some(1));
}
