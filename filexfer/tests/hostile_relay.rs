//! A relay that alters or cuts the stream between a real sender and receiver: the receiver
//! keeps nothing under a final name and both sides report what happened.

mod common;

use common::{Scratch, entries, random_file, visible};
use filexfer::{Code, Error, NoProgress, ReceiveOptions, Source, receive_over, send_over};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn code() -> Code {
    Code::parse("7-abandon-ability-able").expect("code")
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
    assert_eq!(
        entries(&dir.join("out")),
        Vec::<String>::new(),
        "corrupt data kept"
    );
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
    assert_eq!(visible(&dir.join("out")), Vec::<String>::new());
}

#[tokio::test]
async fn an_honest_relay_delivers() {
    let dir = Scratch::new("honest");
    let (sent, received) = through_hostile_relay(&dir, |_, _| true).await;
    let received = received.expect("receive");
    assert_eq!(sent.expect("send"), received.size);
    let original = std::fs::read(dir.join("data.bin")).expect("original");
    assert!(std::fs::read(&received.paths[0]).expect("copy") == original);
    assert_eq!(
        entries(&dir.join("out")),
        ["data.bin"],
        "staging left behind"
    );
}
