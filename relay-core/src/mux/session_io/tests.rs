//! Tests of the session socket layer: what goes through gathering and vectored writes arrives
//! complete and in order, end of stream marks the session lost, a GoAway is seen among the
//! frames, an idle session holds no buffers. In a file of their own so that the layer stays
//! under the size limit without any of its code moving: that code is on the hot path, and
//! moving part of it to another module changed how the compiler inlines the mux driver.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

#[tokio::test]
async fn small_and_large_writes_arrive_in_order_after_flushes() {
    // Large enough for everything: the reader only starts at the end.
    let (a, mut b) = duplex(8 << 20);
    let lost = Arc::new(AtomicBool::new(false));
    let mut io = SessionIo::new(a, lost.clone(), &[]);
    let mut expected = Vec::new();
    for i in 0..200usize {
        let chunk: Vec<u8> = (0..(i * 97) % 20_000).map(|j| (i + j) as u8).collect();
        io.write_all(&chunk).await.expect("write");
        expected.extend_from_slice(&chunk);
        if i % 7 == 0 {
            io.flush().await.expect("flush");
        }
    }
    // Two flushes: the first may be deferred, the second always writes.
    io.flush().await.expect("flush");
    io.flush().await.expect("flush");
    let mut got = vec![0; expected.len()];
    b.read_exact(&mut got).await.expect("read");
    assert!(got == expected);
    assert!(!lost.load(Ordering::Acquire));
}

#[tokio::test]
async fn writes_into_a_full_socket_wait_and_keep_their_order() {
    // A pipe far smaller than the bodies: every large write meets a full socket, and
    // vectored writes go out in pieces.
    let (a, mut b) = duplex(3000);
    let lost = Arc::new(AtomicBool::new(false));
    let chunks: Vec<Vec<u8>> = (0..300usize)
        .map(|i| {
            (0..(i * 7919) % 40_000)
                .map(|j| (i * 31 + j) as u8)
                .collect()
        })
        .collect();
    let expected: Vec<u8> = chunks.concat();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        got
    });
    let mut io = SessionIo::new(a, lost.clone(), &[]);
    for chunk in &chunks {
        io.write_all(chunk).await.expect("write");
    }
    io.flush().await.expect("flush");
    io.flush().await.expect("flush");
    io.shutdown().await.expect("shutdown");
    drop(io);
    let got = reader.await.expect("reader");
    assert!(
        got == expected,
        "{} of {} bytes, in order: no",
        got.len(),
        expected.len()
    );
}

#[test]
fn a_goaway_is_seen_among_data_frames_whatever_the_write_sizes() {
    let mut frames = Vec::new();
    // A data frame whose body looks like a GoAway header must not count.
    let body = [0u8, TYPE_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    frames.extend([0u8, TYPE_DATA, 0, 0, 0, 0, 0, 1, 0, 0, 0, 12]);
    frames.extend(body);
    frames.extend([0u8, 1, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0]); // window update
    let mut watch = FrameWatch::default();
    for piece in frames.chunks(5) {
        watch.observe(piece);
    }
    assert!(!watch.goaway.load(Ordering::Acquire));
    watch.observe(&[0u8, TYPE_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(watch.goaway.load(Ordering::Acquire));
}

/// An idle session holds no read buffer, and a burst's write buffer is handed back.
#[tokio::test]
async fn an_idle_session_keeps_no_buffers() {
    use futures::FutureExt;
    let (a, mut b) = duplex(1 << 20);
    let mut io = SessionIo::new(a, Arc::default(), &[]);
    b.write_all(&[7u8; 100]).await.expect("write");
    let mut got = [0u8; 100];
    io.read_exact(&mut got).await.expect("read");
    assert!(io.read_buf.capacity() > 0, "reads go through the buffer");
    let mut more = [0u8; 12];
    assert!(
        io.read(&mut more).now_or_never().is_none(),
        "nothing to read"
    );
    assert_eq!(
        io.read_buf.capacity(),
        0,
        "the read buffer was kept while idle"
    );
    for _ in 0..100 {
        io.write_all(&[1u8; 1000]).await.expect("write");
    }
    io.flush().await.expect("flush");
    io.flush().await.expect("flush");
    assert!(io.pending_write().is_empty());
    assert_eq!(io.gathered.capacity(), 0, "the burst's buffer was kept");
}

#[tokio::test]
async fn reads_are_buffered_and_eof_marks_the_session_lost() {
    let (a, mut b) = duplex(1 << 20);
    let lost = Arc::new(AtomicBool::new(false));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    // The first bytes were read during the handshake; they come first all the same.
    let mut io = SessionIo::new(a, lost.clone(), &data[..100]);
    b.write_all(&data[100..]).await.expect("write");
    drop(b);
    let mut got = Vec::new();
    let mut small = [0u8; 12];
    loop {
        let n = io.read(&mut small).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&small[..n]);
    }
    assert!(got == data);
    assert!(lost.load(Ordering::Acquire));
}
