//! Library-level attacks on a receiver by a peer that knows the code but sends hostile names or
//! data (a relay that alters or cuts the stream: `hostile_relay.rs`). Nothing may land outside
//! OUTDIR, and no file may get its final name unless it arrived intact.

mod common;

use std::path::Path;

use common::{Scratch, code, entries, open_as_sender, visible};
use filexfer::handshake::{Role, handshake};
use filexfer::manifest::{Entry, EntryKind, Manifest};
use filexfer::message::{FileStart, Hello};
use filexfer::record::{Kind, RecordBuf, RecordReader, RecordWriter};
use filexfer::{Error, NoProgress, ReceiveOptions, receive_over};
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

async fn receive_into(stream: DuplexStream, outdir: &Path) -> filexfer::Result<filexfer::Received> {
    receive_with(stream, outdir, ReceiveOptions::default()).await
}

async fn receive_with(
    stream: DuplexStream,
    outdir: &Path,
    options: ReceiveOptions,
) -> filexfer::Result<filexfer::Received> {
    receive_over(
        stream,
        &code(),
        outdir,
        options,
        &NoProgress,
        &CancellationToken::new(),
    )
    .await
}

fn file(path: &str, size: u64) -> Entry {
    Entry {
        kind: EntryKind::File,
        path: path.into(),
        size: Some(size),
        executable: false,
        mtime: None,
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        path: path.into(),
        size: None,
        executable: true,
        mtime: None,
    }
}

/// A peer that knows the code and offers `entries` as they are (no checks), then, if accepted,
/// sends `data` as the first file's content: more than announced when `overrun`. Returns the
/// receiver's first answer.
async fn hostile_sender(stream: DuplexStream, entries: Vec<Entry>, data: &[u8]) -> Option<Kind> {
    let mut reply = RecordBuf::new(64 * 1024);
    let (mut writer, mut reader) =
        open_as_sender(stream, &Hello::ours().encode(), &mut reply).await?;
    // Unchecked: encoded the way Manifest would, whatever the entries say.
    let manifest = Manifest {
        entries: entries.clone(),
    };
    for payload in manifest.encode() {
        writer.send(Kind::Manifest, &payload).await.ok()?;
    }
    writer
        .send(Kind::ManifestEnd, &manifest.end().encode())
        .await
        .ok()?;
    let answer = loop {
        match reader.read_record(&mut reply).await.ok()? {
            Some(Kind::Resume) => continue,
            other => break other,
        }
    };
    if answer == Some(Kind::Accept) {
        let start = FileStart {
            index: 0,
            offset: 0,
        };
        let _ = writer.send(Kind::FileStart, &start.encode()).await;
        let mut buf = RecordBuf::new(data.len());
        buf.payload_mut(data.len()).copy_from_slice(data);
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
        ".filexfer-0000000000000000",
    ] {
        let (s, r) = tokio::io::duplex(64 * 1024);
        let (answer, received) = tokio::join!(
            hostile_sender(s, vec![file(name, 5)], b"pwned"),
            receive_into(r, &outdir)
        );
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
async fn hostile_directory_names_are_refused_before_anything_is_written() {
    let scratch = Scratch::new("hostile-dirs");
    let outdir = scratch.join("out");
    std::fs::create_dir_all(&outdir).expect("outdir");
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dot-dot inside",
            vec![dir("photos"), file("photos/../../escaped", 5)],
        ),
        (
            "dot-dot component",
            vec![dir("photos"), dir("photos/.."), file("photos/../x", 5)],
        ),
        ("absolute", vec![dir("/tmp"), file("/tmp/escaped", 5)]),
        (
            "backslash",
            vec![dir("photos"), file("photos/..\\..\\escaped", 5)],
        ),
        ("parent never listed", vec![file("photos/a.jpg", 5)]),
        (
            "parent is a file",
            vec![file("photos", 5), file("photos/a.jpg", 5)],
        ),
        (
            "case twins",
            vec![
                dir("photos"),
                file("photos/A.jpg", 5),
                file("photos/a.jpg", 5),
            ],
        ),
        (
            "case twin dirs",
            vec![dir("photos"), dir("Photos"), file("Photos/x", 5)],
        ),
        (
            "parent in other case",
            vec![dir("photos"), file("PHOTOS/x", 5)],
        ),
        (
            "device name",
            vec![dir("photos"), file("photos/nul.txt", 5)],
        ),
        (
            "device dir",
            vec![dir("photos"), dir("photos/COM1"), file("photos/COM1/x", 5)],
        ),
        ("listed twice", vec![dir("photos"), dir("photos")]),
        (
            "temporary prefix",
            vec![dir("photos"), file("photos/.filexfer-x", 5)],
        ),
        ("empty component", vec![dir("photos"), file("photos//x", 5)]),
        (
            "control character",
            vec![dir("pho\ntos"), file("pho\ntos/x", 5)],
        ),
    ];
    for (why, list) in cases {
        let (s, r) = tokio::io::duplex(64 * 1024);
        let (answer, received) =
            tokio::join!(hostile_sender(s, list, b"pwned"), receive_into(r, &outdir));
        let err = received.expect_err(why);
        assert!(
            matches!(err, Error::NameRefused(_) | Error::Protocol(_)),
            "{why}: {err}"
        );
        assert_eq!(answer, Some(Kind::Abort), "{why}: the sender was not told");
        assert_eq!(entries(scratch.path()), ["out"], "{why}: something escaped");
        assert_eq!(entries(&outdir), Vec::<String>::new(), "{why}: written");
    }
}

#[tokio::test]
async fn a_planted_link_in_outdir_is_never_followed_even_with_force() {
    let scratch = Scratch::new("planted-link");
    let outdir = scratch.join("out");
    let outside = scratch.join("outside");
    std::fs::create_dir_all(&outdir).expect("outdir");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, outdir.join("photos")).expect("link");
    let (s, r) = tokio::io::duplex(64 * 1024);
    let force = ReceiveOptions {
        force: true,
        ..ReceiveOptions::default()
    };
    let (answer, received) = tokio::join!(
        hostile_sender(s, vec![dir("photos"), file("photos/x", 5)], b"pwned"),
        receive_with(r, &outdir, force)
    );
    assert!(received.is_err(), "merged through a link");
    assert_eq!(answer, Some(Kind::Abort));
    assert_eq!(
        entries(&outside),
        Vec::<String>::new(),
        "written through the link"
    );
}

#[tokio::test]
async fn a_peer_of_an_incompatible_version_is_named_with_both_versions() {
    let scratch = Scratch::new("versions");
    let outdir = scratch.join("out");
    let (mut s, r) = tokio::io::duplex(64 * 1024);
    let future_sender = async move {
        let keys = handshake(&mut s, &code(), Role::Sender)
            .await
            .expect("handshake");
        let (rd, wr) = tokio::io::split(s);
        let mut writer = RecordWriter::new(wr, keys.sealer);
        let mut reader = RecordReader::new(rd, keys.opener);
        let hello = Hello {
            version: 9,
            min_version: 7,
            release: "9.1.0".into(),
        };
        writer.send(Kind::Hello, &hello.encode()).await.ok()?;
        let mut reply = RecordBuf::new(64 * 1024);
        reader.read_record(&mut reply).await.ok()?; // its hello
        reader.read_record(&mut reply).await.ok()? // then its verdict
    };
    let both = async { tokio::join!(future_sender, receive_into(r, &outdir)) };
    let (answer, received) = tokio::time::timeout(relay_test_support::DEADLINE, both)
        .await
        .expect("the receiver neither refused nor went on within the deadline");
    let err = received.expect_err("incompatible versions agreed");
    let msg = err.to_string();
    assert!(
        msg.contains("the sender speaks file-transfer protocol 7-9 (release 9.1.0)")
            && msg.contains("this program speaks 2-3 (release "),
        "{msg}"
    );
    assert_eq!(answer, Some(Kind::Abort), "the other side was not told");
}

#[tokio::test]
async fn more_data_than_announced_is_refused() {
    let scratch = Scratch::new("overrun");
    let outdir = scratch.join("out");
    let (s, r) = tokio::io::duplex(64 * 1024);
    let (answer, received) = tokio::join!(
        hostile_sender(s, vec![file("fine.txt", 5)], b"123456789"),
        receive_into(r, &outdir)
    );
    assert_eq!(answer, Some(Kind::Accept));
    let err = received.expect_err("overrun accepted");
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    assert_eq!(visible(&outdir), Vec::<String>::new());
}
