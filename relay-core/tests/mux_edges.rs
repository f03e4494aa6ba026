//! Edges of the multiplexer: lone small frames (gathered, their flush deferred) must get out
//! without other traffic; a stream knows when dropping it would leave the peer uninformed (a
//! yamux 0.14 gap the sessions work around with a reset of their own).
//! Single-threaded runtimes, as the relay's workers and `expose` run.

use std::time::Duration;

use relay_core::mux::{self, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const STEP: Duration = Duration::from_secs(2);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress within {STEP:?}"))
}

struct Pair {
    dialer: mux::Mux,
    acceptor: mux::Mux,
    _stop: tokio_util::sync::DropGuard,
}

async fn pair() -> Pair {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (dialed, (accepted, _)) = (dialed.expect("connect"), accepted.expect("accept"));
    dialed.set_nodelay(true).expect("nodelay");
    accepted.set_nodelay(true).expect("nodelay");
    let stop = CancellationToken::new();
    let mut dialer = mux::start(dialed, &[], Role::Dialer, 16, stop.child_token());
    let mut acceptor = mux::start(accepted, &[], Role::Acceptor, 16, stop.child_token());
    tokio::spawn(std::mem::replace(
        &mut dialer.driver,
        Box::pin(async { unreachable!() }),
    ));
    tokio::spawn(std::mem::replace(
        &mut acceptor.driver,
        Box::pin(async { unreachable!() }),
    ));
    Pair {
        dialer,
        acceptor,
        _stop: stop.drop_guard(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn lone_small_messages_cross_without_other_traffic() {
    let Pair {
        mut dialer,
        acceptor,
        _stop,
    } = pair().await;

    let mut a = within("open", acceptor.handle.open()).await.expect("open");
    let mut msg = [0u8; 64];
    let mut got = [0u8; 64];
    a.write_all(&msg).await.expect("first write");
    let mut b = within("inbound stream", dialer.inbound.recv())
        .await
        .expect("inbound stream");
    within("first message", b.read_exact(&mut got))
        .await
        .expect("read");
    // Echo round trips, one message in flight at a time: every frame is a lone small write.
    for i in 0..200u32 {
        msg[..4].copy_from_slice(&i.to_be_bytes());
        a.write_all(&msg).await.expect("write");
        within("request", b.read_exact(&mut got))
            .await
            .expect("read");
        assert_eq!(got, msg);
        b.write_all(&got).await.expect("echo");
        within("reply", a.read_exact(&mut got)).await.expect("read");
        assert_eq!(got, msg);
    }
}

/// yamux 0.14 sends nothing when a stream is dropped after its own FIN but before the peer's
/// (`on_drop_stream`, `SendClosed`), and ignores data frames for streams it no longer knows
/// (`on_data`), so a peer out of credit on it would wait for ever. The sessions then send a
/// reset of their own on the control stream (`tests/resets.rs`); they rely on
/// `Substream::drop_is_silent` naming exactly that state, on both ends.
#[tokio::test(flavor = "current_thread")]
async fn drop_is_silent_exactly_after_our_fin_alone() {
    let Pair {
        mut dialer,
        acceptor,
        _stop,
    } = pair().await;
    let mut relay_side = within("open", acceptor.handle.open()).await.expect("open");
    relay_side.write_all(b"h").await.expect("announce");
    let mut client_side = within("inbound", dialer.inbound.recv())
        .await
        .expect("inbound");
    assert_eq!(
        relay_side.connection_id(),
        acceptor.handle.connection_id(),
        "a stream knows its connection"
    );
    assert_ne!(client_side.connection_id(), relay_side.connection_id());
    let mut one = [0u8; 1];
    within("announce", client_side.read_exact(&mut one))
        .await
        .expect("read");
    assert!(!relay_side.drop_is_silent() && !client_side.drop_is_silent());
    // Our FIN alone: yamux would drop the stream without a word.
    relay_side.shutdown().await.expect("fin");
    assert!(relay_side.drop_is_silent());
    // The peer sees the FIN: it has not closed its side, so dropping it sends its own FIN.
    let mut rest = Vec::new();
    within("the FIN", client_side.read_to_end(&mut rest))
        .await
        .expect("eof");
    assert!(!client_side.drop_is_silent());
    // Both FINs: closed for good, nothing to tell.
    client_side.shutdown().await.expect("fin");
    let mut rest = Vec::new();
    within("the other FIN", relay_side.read_to_end(&mut rest))
        .await
        .expect("eof");
    assert!(!relay_side.drop_is_silent());
}
