//! Record layer: round trips, and every way a relay could tamper with the stream.

use super::*;

const KEY: [u8; 32] = [7; 32];

/// Seals `records` with a fresh sealer and returns the wire bytes of each.
fn seal_all(records: &[(Kind, &[u8])]) -> Vec<Vec<u8>> {
    let mut sealer = Sealer::new(&KEY);
    let mut buf = RecordBuf::new(MAX_PAYLOAD);
    records
        .iter()
        .map(|(kind, payload)| {
            buf.set_payload(payload);
            sealer.seal_in_place(*kind, &mut buf).expect("seal");
            buf.wire().to_vec()
        })
        .collect()
}

/// Reads every record from `wire` with a fresh opener; stops at the first error.
async fn read_all(wire: &[u8]) -> (Vec<(Kind, Vec<u8>)>, Option<ReadError>) {
    let mut reader = RecordReader::new(wire, Opener::new(&KEY));
    let mut buf = RecordBuf::new(MAX_PAYLOAD);
    let mut got = Vec::new();
    loop {
        match reader.read_record(&mut buf).await {
            Ok(Some(kind)) => got.push((kind, buf.payload().to_vec())),
            Ok(None) => return (got, None),
            Err(e) => return (got, Some(e)),
        }
    }
}

fn sample() -> Vec<Vec<u8>> {
    seal_all(&[
        (Kind::Manifest, b"offer"),
        (Kind::Data, &[1u8; 1000]),
        (Kind::Data, &[2u8; 1000]),
        (Kind::FileEnd, b""),
    ])
}

#[tokio::test]
async fn records_round_trip() {
    let (got, err) = read_all(&sample().concat()).await;
    assert!(err.is_none());
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], (Kind::Manifest, b"offer".to_vec()));
    assert_eq!(got[2], (Kind::Data, vec![2u8; 1000]));
    assert_eq!(got[3], (Kind::FileEnd, vec![]));
}

#[tokio::test]
async fn the_payload_is_not_in_the_clear() {
    let wire = seal_all(&[(Kind::Data, b"attack at dawn, bring corgis")]).concat();
    assert!(!wire.windows(6).any(|w| w == b"attack"));
}

#[tokio::test]
async fn any_flipped_bit_is_detected() {
    let wire = sample().concat();
    // Every byte of the second record: prefix, kind, payload and tag.
    let first = sample()[0].len();
    for at in first..first + 40 {
        let mut bad = wire.clone();
        bad[at] ^= 0x01;
        let (got, err) = read_all(&bad).await;
        assert_eq!(got.len(), 1, "byte {at}");
        assert!(err.is_some(), "byte {at}: flip not detected");
    }
    let last_tag_byte = wire.len() - 1;
    let mut bad = wire.clone();
    bad[last_tag_byte] ^= 0x80;
    assert!(matches!(
        read_all(&bad).await.1,
        Some(ReadError::Invalid(Error::Corrupt(_)))
    ));
}

#[tokio::test]
async fn reordering_dropping_and_replaying_are_detected() {
    let r = sample();
    for (what, order) in [
        ("swap", vec![0, 2, 1, 3]),
        ("drop", vec![0, 2, 3]),
        ("replay", vec![0, 1, 1, 2, 3]),
    ] {
        let wire: Vec<u8> = order.iter().flat_map(|&i| r[i].clone()).collect();
        let (got, err) = read_all(&wire).await;
        assert!(
            matches!(err, Some(ReadError::Invalid(Error::Corrupt(_)))),
            "{what}: {err:?}"
        );
        assert!(got.len() < order.len(), "{what}");
    }
}

#[tokio::test]
async fn truncation_inside_a_record_is_an_error() {
    let wire = sample().concat();
    for cut in [1, 3, 4, 10, wire.len() - 1] {
        let (_, err) = read_all(&wire[..cut]).await;
        assert!(
            matches!(&err, Some(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "cut at {cut}: {err:?}"
        );
    }
    // A cut between records reads as a clean end: the transfer layer's end record is what
    // tells a complete stream from a truncated one.
    let two = sample()[..2].concat();
    let (got, err) = read_all(&two).await;
    assert!(err.is_none());
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn a_huge_length_is_refused_before_reading() {
    for len in [u32::MAX, (MAX_PAYLOAD + 1 + TAG_LEN + 1) as u32, 0, 16] {
        let mut wire = len.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 64]);
        let (_, err) = read_all(&wire).await;
        assert!(
            matches!(err, Some(ReadError::Invalid(Error::Corrupt(_)))),
            "length {len}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_record_larger_than_the_readers_buffer_is_refused() {
    let wire = seal_all(&[(Kind::Data, &[0u8; 5000])]).concat();
    let mut reader = RecordReader::new(&wire[..], Opener::new(&KEY));
    let mut small = RecordBuf::new(4096);
    assert!(matches!(
        reader.read_record(&mut small).await,
        Err(ReadError::Invalid(Error::Corrupt(_)))
    ));
}

#[tokio::test]
async fn the_wrong_key_opens_nothing() {
    let wire = sample().concat();
    let mut reader = RecordReader::new(&wire[..], Opener::new(&[8; 32]));
    let mut buf = RecordBuf::new(MAX_PAYLOAD);
    assert!(matches!(
        reader.read_record(&mut buf).await,
        Err(ReadError::Invalid(Error::Corrupt(_)))
    ));
}

#[tokio::test]
async fn writer_and_reader_agree_over_a_pipe() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let send = async move {
        let mut w = RecordWriter::new(a, Sealer::new(&KEY));
        w.send(Kind::Manifest, b"hello").await.expect("send");
        let mut big = RecordBuf::new(DATA_CHUNK);
        big.payload_mut(DATA_CHUNK).fill(9);
        w.write_record(Kind::Data, &mut big).await.expect("data");
        w.shutdown().await.expect("shutdown");
    };
    let recv = async move {
        let mut r = RecordReader::new(b, Opener::new(&KEY));
        let mut buf = RecordBuf::new(DATA_CHUNK);
        assert_eq!(
            r.read_record(&mut buf).await.expect("1"),
            Some(Kind::Manifest)
        );
        assert_eq!(buf.payload(), b"hello");
        assert_eq!(r.read_record(&mut buf).await.expect("2"), Some(Kind::Data));
        assert!(buf.payload().iter().all(|&b| b == 9));
        assert_eq!(buf.payload().len(), DATA_CHUNK);
        assert_eq!(r.read_record(&mut buf).await.expect("eof"), None);
    };
    tokio::join!(send, recv);
}

/// Keeps every `write` call apart, to count them.
#[derive(Default)]
struct Writes(Vec<Vec<u8>>);

impl AsyncWrite for Writes {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.push(buf.to_vec());
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn queued_records_go_out_together_and_in_order() {
    let mut writer = RecordWriter::new(Writes::default(), Sealer::new(&KEY));
    let mut small = RecordBuf::new(DATA_CHUNK);
    small.set_payload(&[1; 1000]);
    writer
        .queue(Kind::FileStart, b"start")
        .await
        .expect("queue");
    writer
        .queue_record(Kind::Data, &mut small)
        .await
        .expect("queue");
    writer.queue(Kind::FileEnd, b"end").await.expect("queue");
    assert!(writer.inner.0.is_empty(), "queued records were written");
    writer.flush().await.expect("flush");
    assert_eq!(writer.inner.0.len(), 1, "one write for three records");
    // A record too big to queue goes out after what is queued, never before it.
    writer.queue(Kind::FileStart, b"next").await.expect("queue");
    let mut big = RecordBuf::new(DATA_CHUNK);
    big.set_payload(&vec![2; DATA_CHUNK]);
    writer
        .queue_record(Kind::Data, &mut big)
        .await
        .expect("write");
    writer.send(Kind::Complete, &[]).await.expect("send");
    let wire: Vec<u8> = writer.inner.0.concat();
    let (got, err) = read_all(&wire).await;
    assert!(err.is_none(), "{err:?}");
    let kinds: Vec<Kind> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            Kind::FileStart,
            Kind::Data,
            Kind::FileEnd,
            Kind::FileStart,
            Kind::Data,
            Kind::Complete
        ]
    );
    assert_eq!(got[3].1, b"next");
    assert_eq!(got[4].1.len(), DATA_CHUNK);
}
