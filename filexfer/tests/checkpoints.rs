//! Conversation version 3: the sender's checkpoints stand in for the receiver's own hash of a
//! file it receives whole (the AEAD already authenticates every byte), and go into the journal
//! that a resume checks; a version-2 peer on either side still gets version 2: no checkpoint
//! records, and a receiver that hashes and checks the end hash itself.

mod common;

use std::path::Path;

use common::{Scratch, code, open_as_sender, random_file, visible};
use filexfer::handshake::{Role, handshake};
use filexfer::manifest::{Entry, EntryKind, Manifest};
use filexfer::message::{Checkpoint, FileEnd, FileStart, Hello};
use filexfer::record::{Kind, RecordBuf, RecordReader, RecordWriter};
use filexfer::{Error, NoProgress, ReceiveOptions, Source, receive_over, send_over};
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

fn hello(version: u16) -> Hello {
    Hello {
        version,
        min_version: 2,
        release: "test".into(),
    }
}

/// What a scripted sender sends after `FileStart { 0, 0 }`.
enum Step {
    Data(Vec<u8>),
    Checkpoint(u64, [u8; 32]),
    End(u64, [u8; 32]),
    Complete,
}

/// A sender of conversation `version` offering one file `f.bin` of `size` bytes, then sending
/// `steps` if the receiver accepts. Returns the receiver's last record kind.
async fn scripted_sender(
    stream: DuplexStream,
    version: u16,
    size: u64,
    steps: Vec<Step>,
) -> Option<Kind> {
    let mut reply = RecordBuf::new(64 * 1024);
    let (mut writer, mut reader) =
        open_as_sender(stream, &hello(version).encode(), &mut reply).await?;
    let manifest = Manifest {
        entries: vec![Entry {
            kind: EntryKind::File,
            path: "f.bin".into(),
            size: Some(size),
            executable: false,
            mtime: None,
        }],
    };
    for payload in manifest.encode() {
        writer.send(Kind::Manifest, &payload).await.ok()?;
    }
    let end = manifest.end().encode();
    writer.send(Kind::ManifestEnd, &end).await.ok()?;
    if reader.read_record(&mut reply).await.ok()? != Some(Kind::Accept) {
        return None;
    }
    let start = FileStart {
        index: 0,
        offset: 0,
    };
    writer.send(Kind::FileStart, &start.encode()).await.ok()?;
    for step in steps {
        let (kind, payload) = match step {
            Step::Data(bytes) => (Kind::Data, bytes),
            Step::Checkpoint(offset, prefix) => (
                Kind::Checkpoint,
                Checkpoint { offset, prefix }.encode().to_vec(),
            ),
            Step::End(len, blake3) => (Kind::FileEnd, FileEnd { len, blake3 }.encode().to_vec()),
            Step::Complete => (Kind::Complete, Vec::new()),
        };
        writer.send(kind, &payload).await.ok()?;
    }
    writer.shutdown().await.ok()?;
    reader.read_record(&mut reply).await.ok()?
}

async fn receive_into(stream: DuplexStream, outdir: &Path) -> filexfer::Result<filexfer::Received> {
    let options = ReceiveOptions::default();
    let cancel = CancellationToken::new();
    receive_over(stream, &code(), outdir, options, &NoProgress, &cancel).await
}

fn hash(data: &[u8]) -> [u8; 32] {
    blake3::hash(data).into()
}

#[tokio::test]
async fn a_version_2_sender_is_checked_against_the_receivers_own_hash() {
    let scratch = Scratch::new("ckpt-v2");
    let data = vec![7u8; 1000];
    for (end_hash, good) in [(hash(&data), true), ([1; 32], false)] {
        let outdir = scratch.join(if good { "good" } else { "bad" });
        let (s, r) = tokio::io::duplex(64 * 1024);
        let steps = vec![
            Step::Data(data.clone()),
            Step::End(1000, end_hash),
            Step::Complete,
        ];
        let (_, received) =
            tokio::join!(scripted_sender(s, 2, 1000, steps), receive_into(r, &outdir));
        if good {
            received.expect("a version-2 sender with the right hash");
            assert_eq!(std::fs::read(outdir.join("f.bin")).expect("read"), data);
        } else {
            let err = received.expect_err("a wrong end hash from a version-2 sender passed");
            assert!(matches!(err, Error::Corrupt(_)), "{err}");
            assert_eq!(visible(&outdir), Vec::<String>::new());
        }
    }
}

#[tokio::test]
async fn a_checkpoint_out_of_place_is_refused() {
    let scratch = Scratch::new("ckpt-place");
    let outdir = scratch.join("out");
    let data = vec![9u8; 1000];
    let (s, r) = tokio::io::duplex(64 * 1024);
    let steps = vec![
        Step::Data(data.clone()),
        Step::Checkpoint(999, hash(&data[..999])),
        Step::End(1000, hash(&data)),
        Step::Complete,
    ];
    let (answer, received) =
        tokio::join!(scripted_sender(s, 3, 1000, steps), receive_into(r, &outdir));
    let err = received.expect_err("a checkpoint at the wrong offset passed");
    assert!(
        err.to_string()
            .contains("a checkpoint for 999 bytes came after 1000"),
        "{err}"
    );
    assert_eq!(answer, Some(Kind::Abort));
    assert_eq!(visible(&outdir), Vec::<String>::new());
}

#[tokio::test]
async fn the_senders_checkpoints_go_into_the_journal() {
    let scratch = Scratch::new("ckpt-journal");
    let outdir = scratch.join("out");
    let data = vec![3u8; 1000];
    let (s, r) = tokio::io::duplex(64 * 1024);
    // The sender goes away after its checkpoint: what it covers is kept for a resume.
    let steps = vec![
        Step::Data(data.clone()),
        Step::Checkpoint(1000, hash(&data)),
    ];
    let (_, received) = tokio::join!(scripted_sender(s, 3, 5000, steps), receive_into(r, &outdir));
    received.expect_err("an unfinished transfer succeeded");
    let staging = std::fs::read_dir(&outdir)
        .expect("outdir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains(".filexfer-"))
        .expect("the staging directory was not kept");
    let journal = std::fs::read_to_string(staging.join("journal")).expect("journal");
    let hex: String = hash(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("1000 5000 ") && l.contains(&hex)),
        "{journal}"
    );
}

/// A receiver of conversation `version` that accepts everything and counts the checkpoint
/// records it gets before `Complete`.
async fn counting_receiver(mut stream: DuplexStream, version: u16) -> usize {
    let keys = handshake(&mut stream, &code(), Role::Receiver)
        .await
        .expect("handshake");
    let (rd, wr) = tokio::io::split(stream);
    let mut writer = RecordWriter::new(wr, keys.sealer);
    let mut reader = RecordReader::new(rd, keys.opener);
    writer
        .send(Kind::Hello, &hello(version).encode())
        .await
        .expect("hello");
    let mut buf = RecordBuf::new(1024 * 1024);
    while reader.read_record(&mut buf).await.expect("record") != Some(Kind::ManifestEnd) {}
    writer.send(Kind::Accept, &[]).await.expect("accept");
    let mut checkpoints = 0;
    loop {
        match reader.read_record(&mut buf).await.expect("record") {
            Some(Kind::Checkpoint) => checkpoints += 1,
            Some(Kind::Complete) => break,
            Some(_) => {}
            None => panic!("the sender stopped before Complete"),
        }
    }
    writer.send(Kind::Done, &[]).await.expect("done");
    checkpoints
}

#[tokio::test]
async fn checkpoints_go_only_to_a_receiver_of_version_3() {
    let scratch = Scratch::in_memory("ckpt-versions");
    // Checkpoints after 1 and 2 MiB.
    random_file(&scratch.join("f.bin"), 3 << 20);
    for (version, expected) in [(2, 0), (3, 2)] {
        let (s, r) = tokio::io::duplex(1 << 20);
        let source = Source::open(&scratch.join("f.bin")).expect("source");
        let (cancel, code) = (CancellationToken::new(), code());
        let (sent, checkpoints) = tokio::join!(
            send_over(s, &code, source, &NoProgress, &cancel),
            counting_receiver(r, version)
        );
        sent.expect("send");
        assert_eq!(checkpoints, expected, "to a receiver of version {version}");
    }
}
