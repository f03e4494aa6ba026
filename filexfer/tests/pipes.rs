//! Texts and pipes with the real binaries: `send --text`, `send RELAY -` from stdin, and
//! `receive RELAY CODE -` writing the one file or text to stdout and nothing else there.

mod common;

use std::io::Write;

use common::{Piped, Scratch, entries, error_line, random_file, relay, start_send};
use relay_test_support::{DEADLINE, Proc};

#[test]
fn a_text_goes_to_the_receivers_stdout_and_nowhere_else() {
    let relay = relay();
    let dir = Scratch::new("text");
    let text = "meet at the corgi café\nline two";
    let mut send = Proc::spawn("send", &["--text", text, &relay.host_port()]);
    let code = send.first_line();
    let mut recv = Piped::spawn("receive", &[&relay.host_port(), &code, "-"]);
    assert_eq!(recv.all_stdout(), text.as_bytes());
    assert!(recv.wait_exit().success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(send.rest_of_stdout(DEADLINE), "");

    // Into an OUTDIR a text is printed too, and no file is written.
    let mut send = Proc::spawn("send", &["--text", text, &relay.host_port()]);
    let code = send.first_line();
    let mut recv = Piped::spawn("receive", &[&relay.host_port(), &code, &dir.str("out")]);
    assert_eq!(recv.all_stdout(), text.as_bytes());
    assert!(recv.wait_exit().success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success());
    assert_eq!(entries(&dir.join("out")), Vec::<String>::new());
}

#[test]
fn stdin_goes_to_a_file_or_to_stdout() {
    let relay = relay();
    let dir = Scratch::new("stdin");
    let data = random_file(&dir.join("src.bin"), 3 * 1024 * 1024 + 7);

    // stdin to stdout, bytes exactly.
    let mut send = Piped::spawn("send", &[&relay.host_port(), "-"]);
    let code = send.first_line();
    let mut recv = Piped::spawn("receive", &[&relay.host_port(), &code, "-"]);
    let mut input = send.stdin.take().expect("stdin");
    let feed = data.clone();
    let writer = std::thread::spawn(move || {
        // In pieces, as a pipe delivers them.
        for piece in feed.chunks(100_000) {
            input.write_all(piece).expect("feed send");
        }
    });
    let got = recv.all_stdout();
    writer.join().expect("writer");
    assert!(
        got == data,
        "stdout differs ({} bytes, want {})",
        got.len(),
        data.len()
    );
    assert!(recv.wait_exit().success(), "{}", recv.stderr());
    assert!(send.wait_exit().success(), "{}", send.stderr());

    // stdin into OUTDIR under --name.
    let mut send = Piped::spawn("send", &["--name", "notes.bin", &relay.host_port(), "-"]);
    let code = send.first_line();
    let mut input = send.stdin.take().expect("stdin");
    input.write_all(&data[..1000]).expect("feed");
    drop(input);
    let mut recv = Proc::spawn("receive", &[&relay.host_port(), &code, &dir.str("out")]);
    assert!(recv.wait_exit(DEADLINE).success(), "{}", recv.stderr());
    assert!(send.wait_exit().success(), "{}", send.stderr());
    assert_eq!(entries(&dir.join("out")), ["notes.bin"]);
    assert_eq!(
        std::fs::read(dir.join("out/notes.bin")).expect("r"),
        &data[..1000]
    );
}

#[test]
fn a_file_goes_to_stdout_but_a_directory_is_refused_there() {
    let relay = relay();
    let dir = Scratch::new("to-stdout");
    let data = random_file(&dir.join("a.bin"), 600_000);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.bin"), &[]);
    let mut recv = Piped::spawn("receive", &[&relay.host_port(), &code, "-"]);
    assert!(recv.all_stdout() == data);
    assert!(recv.wait_exit().success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success());

    std::fs::create_dir(dir.join("d")).expect("dir");
    std::fs::write(dir.join("d/x"), b"x").expect("file");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("d"), &[]);
    let mut recv = Proc::spawn("receive", &[&relay.host_port(), &code, "-"]);
    assert!(!recv.wait_exit(DEADLINE).success());
    assert_eq!(
        recv.rest_of_stdout(DEADLINE),
        "",
        "something reached stdout"
    );
    let line = error_line(&recv, "receive", "stdout");
    assert!(line.contains("receive into a directory instead"), "{line}");
    assert!(!send.wait_exit(DEADLINE).success());
    assert!(
        !std::path::Path::new("-").exists(),
        "an OUTDIR called - was made"
    );
}
