//! Wide send buffers end to end: a visitor that downloads fast through a tunnel and then stops
//! reading leaves its relay socket full at the kernel's auto-tuning ceiling, and the relay lifts
//! it (`relay_wide_visitors`); the slot comes back when the visitor leaves. Where the host
//! cannot lift (`net.core.wmem_max` at most half of `tcp_wmem`'s maximum, as on a stock kernel)
//! there is nothing to check.

mod common;

use common::*;
use relay_core::server::send_buffer_limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WIDE: &str = "relay_wide_visitors";

fn host_can_lift() -> bool {
    matches!(send_buffer_limits(), Some((ceiling, most)) if most > ceiling)
}

/// A tunnel whose server writes without end; a visitor reads `fast` bytes of it as fast as it
/// can, then stops reading. Returns the visitor, still connected.
async fn fast_then_stalled(relay: &TestRelay, fast: usize) -> TcpStream {
    let listener = relay.tunnel().await;
    let addr = public(&listener);
    tokio::spawn(async move {
        let (mut stream, _) = within("accept", listener.accept()).await.expect("accept");
        let chunk = vec![7u8; 64 * 1024];
        while stream.write_all(&chunk).await.is_ok() {}
        drop(listener);
    });
    let mut visitor = within("visitor connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    within("the fast part of the download", async {
        while got < fast {
            let n = visitor.read(&mut buf).await.expect("read");
            assert!(n > 0, "the download ended early");
            got += n;
        }
    })
    .await;
    visitor
}

#[tokio::test]
async fn a_fast_download_is_lifted_and_gives_its_slot_back() {
    if !host_can_lift() {
        eprintln!("skipped: net.core.wmem_max is not above half of tcp_wmem's maximum here");
        return;
    }
    let relay = TestRelay::default().await;
    assert_eq!(metric(&relay.metrics, WIDE), Some(0));
    let visitor = fast_then_stalled(&relay, 64 << 20).await;
    until_metric(&relay.metrics, WIDE, 1).await;
    drop(visitor);
    until_metric(&relay.metrics, WIDE, 0).await;
}
