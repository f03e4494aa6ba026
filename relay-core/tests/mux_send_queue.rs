//! The session-wide cap on data queued towards the socket ([`mux::SEND_QUEUE_LIMIT`]): with a
//! peer that reads nothing, many streams together queue about the cap, not a send window each;
//! they go on once the socket drains, and a lost connection wakes them with an error instead of
//! leaving them waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use relay_core::mux::{self, Role, SEND_QUEUE_LIMIT, SPLIT_SEND_SIZE, STREAM_WINDOW};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio_util::sync::CancellationToken;

const STREAMS: usize = 8;
/// What the pipe standing in for the socket holds.
const PIPE: usize = 16 * 1024;

/// Lets every task run until none can make progress (the clock is paused: it only moves on
/// once the runtime is idle).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn streams_together_queue_about_the_cap_and_resume_when_the_socket_drains() {
    let (ours, mut wire) = duplex(PIPE);
    let stop = CancellationToken::new();
    let mux = mux::start(ours, &[], Role::Dialer, 16, stop.child_token());
    let driver = tokio::spawn(mux.driver);
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..STREAMS {
        let mut stream = mux.handle.open().await.expect("open");
        let accepted = accepted.clone();
        writers.push(tokio::spawn(async move {
            let chunk = vec![7u8; SPLIT_SEND_SIZE];
            // Each stream could queue its whole send window; together far beyond the cap.
            let mut left = STREAM_WINDOW;
            while left > 0 {
                let n = stream.write(&chunk[..left.min(chunk.len())]).await?;
                accepted.fetch_add(n, Ordering::Relaxed);
                left -= n;
            }
            stream.flush().await
        }));
    }
    settle().await;
    let held = accepted.load(Ordering::Relaxed);
    // Without the cap this is STREAMS * STREAM_WINDOW (2 MiB); with it, the cap plus one
    // frame, what the pipe holds and what the socket layer gathers.
    assert!(
        held <= SEND_QUEUE_LIMIT + 2 * SPLIT_SEND_SIZE + PIPE,
        "{held} bytes queued by {STREAMS} streams, cap {SEND_QUEUE_LIMIT}"
    );
    assert!(held >= SEND_QUEUE_LIMIT / 2, "only {held} bytes queued");

    // Reading the wire drains the queue: every stream gets its whole window out.
    let total = STREAMS * STREAM_WINDOW;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        // Frame headers come on top of the data; read at least the data's worth.
        while got < total {
            got += wire.read(&mut buf).await.expect("read");
        }
        wire
    });
    let wire = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the queue drained within 30 s")
        .expect("reader");
    assert_eq!(accepted.load(Ordering::Relaxed), total);

    // A lost connection wakes writers waiting for room with an error.
    let mut stuck = Vec::new();
    for _ in 0..STREAMS {
        let mut stream = mux.handle.open().await.expect("open");
        stuck.push(tokio::spawn(async move {
            let chunk = vec![7u8; SPLIT_SEND_SIZE];
            loop {
                stream.write_all(&chunk).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        }));
    }
    settle().await;
    drop(wire);
    for w in stuck {
        let r = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a waiting writer was woken when the connection ended")
            .expect("writer task");
        assert!(r.is_err(), "writes after the connection ended must fail");
    }
    for w in writers {
        w.await.expect("writer").expect("write");
    }
    stop.cancel();
    let _ = driver.await;
}
