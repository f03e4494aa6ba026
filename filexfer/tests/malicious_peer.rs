//! Library-level attacks on a receiver: a peer that knows the code but sends hostile names or
//! data, and a relay that alters or cuts the stream. Nothing may land outside OUTDIR, and no
//! file may get its final name unless it arrived intact.

mod common;

use std::path::Path;

use common::{Scratch, entries, random_file};
use filexfer::handshake::{Role, handshake};
use filexfer::message::FileOffer;
use filexfer::record::{CONTROL_PAYLOAD, Kind, RecordBuf, RecordReader, RecordWriter};
use filexfer::{Code, Error, NoProgress, ReceiveOptions, Source, receive_over, send_over};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

const CODE: &str = "7-abandon-ability-able";

fn code() -> Code {
    Code::parse(CODE).expect("code")
}

async fn receive_into(stream: DuplexStream, outdir: &Path) -> filexfer::Result<filexfer::Received> {
    receive_over(
        stream,
        &code(),
        outdir,
        ReceiveOptions::default(),
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
}

/// A peer that knows the code and offers `name`, then sends `data` and a matching end record.
/// Returns the receiver's first answer.
async fn hostile_sender(mut stream: DuplexStream, name: &str, data: &[u8]) -> Option<Kind> {
    let keys = handshake(&mut stream, &code(), Role::Sender)
        .await
        .expect("handshake");
    let (rd, wr) = tokio::io::split(stream);
    let mut writer = RecordWriter::new(wr, keys.sealer);
    let mut reader = RecordReader::new(rd, keys.opener);
    let offer = FileOffer {
        name: name.to_string(),
        size: data.len() as u64,
    };
    writer.send(Kind::Offer, &offer.encode()).await.ok()?;
    let mut reply = RecordBuf::new(CONTROL_PAYLOAD);
    let answer = reader.read_record(&mut reply).await.ok()?;
    if answer == Some(Kind::Accept) {
        // Even an accepted name gets data that overruns the announced size.
        let mut buf = RecordBuf::new(data.len() + 10);
        buf.payload_mut(data.len() + 10).fill(0x41);
        let _ = writer.write_record(Kind::Data, &mut buf).await;
    }
    answer
}

#[tokio::test]
async fn hostile_names_never_escape_outdir() {
    let scratch = Scratch::new("hostile-names");
    let outdir = scratch.join("out");
    std::fs::create_dir_all(&outdir).expect("outdir");
    for name in [
        "../escaped.txt",
        "../../escaped.txt",
        "/tmp/escaped.txt",
        "sub/escaped.txt",
        "..\\escaped.txt",
        "..",
        ".",
        "",
        "esc\u{1b}[2J.txt",
        "nul\0.txt",
        "evil\u{202E}txt.exe",
        "CON",
        ".filexfer-0000000000000000.part",
    ] {
        let (s, r) = tokio::io::duplex(64 * 1024);
        let (answer, received) =
            tokio::join!(hostile_sender(s, name, b"pwned"), receive_into(r, &outdir));
        let err = received.expect_err(name);
        assert!(matches!(err, Error::NameRefused(_)), "{name:?}: {err}");
        assert_eq!(
            answer,
            Some(Kind::Abort),
            "{name:?}: the sender was not told"
        );
        assert!(
            !err.to_string().contains('\u{1b}'),
            "raw escape printed: {err:?}"
        );
        assert_eq!(
            entries(scratch.path()),
            ["out"],
            "{name:?}: something escaped"
        );
        assert_eq!(
            entries(&outdir),
            Vec::<String>::new(),
            "{name:?}: file written"
        );
    }
    assert!(!Path::new("/tmp/escaped.txt").exists());
}

#[tokio::test]
async fn more_data_than_announced_is_refused() {
    let scratch = Scratch::new("overrun");
    let outdir = scratch.join("out");
    let (s, r) = tokio::io::duplex(64 * 1024);
    let (answer, received) = tokio::join!(
        hostile_sender(s, "fine.txt", b"12345"),
        receive_into(r, &outdir)
    );
    assert_eq!(answer, Some(Kind::Accept));
    let err = received.expect_err("overrun accepted");
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert_eq!(entries(&outdir), Vec::<String>::new());
}

/// Runs a real sender and receiver through a "relay" that hands every byte to `tamper`
/// (with its offset in the sender-to-receiver stream); `tamper` returns false to cut the
/// connection.
async fn through_hostile_relay(
    dir: &Scratch,
    tamper: impl Fn(u64, &mut [u8]) -> bool + Send + Sync + 'static,
) -> (filexfer::Result<u64>, filexfer::Result<filexfer::Received>) {
    let data_path = dir.join("data.bin");
    random_file(&data_path, 2 * 1024 * 1024 + 5);
    let (sender_end, mut relay_a) = tokio::io::duplex(256 * 1024);
    let (mut relay_b, receiver_end) = tokio::io::duplex(256 * 1024);
    let relay = tokio::spawn(async move {
        let (mut a_rd, mut a_wr) = tokio::io::split(&mut relay_a);
        let (mut b_rd, mut b_wr) = tokio::io::split(&mut relay_b);
        let forward = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut at = 0u64;
            loop {
                let n = a_rd.read(&mut buf).await.unwrap_or(0);
                if n == 0 || !tamper(at, &mut buf[..n]) {
                    break;
                }
                at += n as u64;
                if b_wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        let back = async {
            let _ = tokio::io::copy(&mut b_rd, &mut a_wr).await;
        };
        // Either direction ending ends the relay's part, like a cut connection.
        tokio::select! {
            () = forward => {}
            () = back => {}
        }
    });
    let cancel = CancellationToken::new();
    let source = Source::open(&data_path).expect("source");
    let outdir = dir.join("out");
    let progress = NoProgress;
    let code = code();
    let result = tokio::join!(
        send_over(sender_end, &code, source, &progress, &cancel),
        receive_over(
            receiver_end,
            &code,
            &outdir,
            ReceiveOptions::default(),
            &progress,
            &cancel
        )
    );
    relay.abort();
    result
}

#[tokio::test]
async fn a_relay_that_flips_a_bit_is_caught() {
    let dir = Scratch::new("bitflip");
    // Well past the handshake, inside the file data.
    let target = 1024 * 1024;
    let (sent, received) = through_hostile_relay(&dir, move |at, buf| {
        if (at..at + buf.len() as u64).contains(&target) {
            buf[(target - at) as usize] ^= 0x04;
        }
        true
    })
    .await;
    let err = received.expect_err("tampered file accepted");
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    let err = sent.expect_err("sender saw success");
    assert!(err.to_string().contains("corrupted"), "{err}");
    assert_eq!(entries(&dir.join("out")), Vec::<String>::new());
}

#[tokio::test]
async fn a_relay_that_cuts_the_stream_is_caught() {
    let dir = Scratch::new("truncate");
    let (sent, received) = through_hostile_relay(&dir, |at, _| at < 1024 * 1024).await;
    let err = received.expect_err("truncated file accepted");
    assert!(matches!(err, Error::PeerVanished { .. }), "{err}");
    // The relay cut both directions: the sender must report its peer gone, not success and not
    // some unrelated failure.
    let err = sent.expect_err("sender saw success");
    assert!(
        matches!(
            err,
            Error::PeerVanished {
                peer: "receiver",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(entries(&dir.join("out")), Vec::<String>::new());
}

#[tokio::test]
async fn an_honest_relay_delivers() {
    let dir = Scratch::new("honest");
    let (sent, received) = through_hostile_relay(&dir, |_, _| true).await;
    let received = received.expect("receive");
    assert_eq!(sent.expect("send"), received.size);
    let original = std::fs::read(dir.join("data.bin")).expect("original");
    assert!(std::fs::read(&received.path).expect("copy") == original);
}
