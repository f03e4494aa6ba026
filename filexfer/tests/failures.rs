//! Everything that must fail, failing cleanly: one clear line, a non-zero exit, no file.

mod common;

use common::{
    Scratch, entries, error_line, random_file, relay, run_receive, start_send, wait_until,
};
use relay_test_support::{DEADLINE, Proc, Relay};

#[test]
fn wrong_words_fail_on_both_sides_and_write_nothing() {
    let relay = relay();
    let dir = Scratch::new("wrong-words");
    random_file(&dir.join("secret.bin"), 100_000);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("secret.bin"), &[]);
    // Same nameplate, different (valid) words.
    let nameplate = code.split('-').next().expect("nameplate");
    let words = if code.ends_with("-abandon-ability-able") {
        "about-above-absent"
    } else {
        "abandon-ability-able"
    };
    let wrong = format!("{nameplate}-{words}");

    let (recv, status) = run_receive(&[&relay.host_port(), &wrong, &dir.str("out")]);
    assert!(!status.success(), "receive accepted a wrong code");
    let line = error_line(&recv, "receive", "wrong code");
    assert!(line.contains("receive: wrong code"), "{line}");
    assert!(
        !send.wait_exit(DEADLINE).success(),
        "send accepted a wrong code"
    );
    let line = error_line(&send, "send", "wrong code");
    assert!(line.contains("send: wrong code"), "{line}");
    // No file, and not even the OUTDIR that receive created for it.
    assert!(
        !dir.join("out").exists(),
        "OUTDIR left behind: {:?}",
        entries(&dir.join("out"))
    );
    // Still nothing on stdout but the code.
    assert_eq!(send.rest_of_stdout(DEADLINE), "");
}

#[test]
fn an_unknown_nameplate_is_refused() {
    let relay = relay();
    let dir = Scratch::new("unknown");
    let (recv, status) = run_receive(&[
        &relay.host_port(),
        "4242-abandon-ability-able",
        &dir.str("out"),
    ]);
    assert!(!status.success());
    let line = error_line(&recv, "receive", "unknown or already used code");
    assert!(line.contains("unknown or already used code"), "{line}");
    assert!(!dir.join("out").exists());
}

#[test]
fn a_used_code_cannot_be_used_again() {
    let relay = relay();
    let dir = Scratch::new("reuse");
    random_file(&dir.join("once.bin"), 10_000);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("once.bin"), &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("first")]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());

    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("second")]);
    assert!(!status.success(), "a used code worked twice");
    let line = error_line(&recv, "receive", "unknown or already used code");
    assert!(line.contains("unknown or already used code"), "{line}");
    assert!(!dir.join("second").exists());
}

/// Starts sending a sparse 8 GiB file (read instantly, yet long enough to still be running when
/// a side is killed) and returns once the receiver's temporary file holds data.
fn big_transfer_under_way(relay: &Relay, dir: &Scratch) -> (Proc, Proc, std::path::PathBuf) {
    let big = std::fs::File::create(dir.join("huge.iso")).expect("create");
    big.set_len(8 << 30).expect("sparse 8 GiB");
    drop(big);
    let (send, code) = start_send(&relay.host_port(), &dir.str("huge.iso"), &[]);
    let out = dir.join("out");
    let recv = Proc::spawn(
        "receive",
        &[&relay.host_port(), &code, out.to_str().expect("path")],
    );
    wait_until("receiving started", DEADLINE, || {
        common::largest_file(&out) > 1 << 20
    });
    (send, recv, out)
}

#[test]
fn a_killed_receiver_fails_the_sender_and_leaves_no_file() {
    let relay = relay();
    let dir = Scratch::new("killed");
    let (mut send, mut recv, out) = big_transfer_under_way(&relay, &dir);
    recv.kill();

    let status = send.wait_exit(DEADLINE);
    assert!(!status.success(), "send succeeded without the receiver");
    let line = error_line(&send, "send", "receiver went away");
    assert!(line.contains("receiver went away"), "{line}");
    assert!(
        !out.join("huge.iso").exists(),
        "a partial file got the final name"
    );
    // Whatever is left is only the hidden temporary file of the killed process.
    for name in entries(&out) {
        assert!(name.starts_with(".filexfer-"), "unexpected file {name}");
    }
}

#[test]
fn a_sender_that_vanishes_mid_transfer_fails_the_receiver() {
    let relay = relay();
    let dir = Scratch::new("sender-killed");
    let (mut send, mut recv, out) = big_transfer_under_way(&relay, &dir);
    send.kill();
    assert!(!recv.wait_exit(DEADLINE).success());
    let line = error_line(&recv, "receive", "sender went away");
    assert!(line.contains("sender went away"), "{line}");
    // No final name; what it verified stays hidden, for a resume.
    assert_eq!(common::visible(&out), Vec::<String>::new());
    recv.wait_stderr(
        "send the same files again into the same OUTDIR to resume",
        DEADLINE,
    );
}

#[test]
fn an_unreachable_relay_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let at = format!("127.0.0.1:{port}");
    let dir = Scratch::new("unreachable");
    random_file(&dir.join("a.bin"), 10);
    let mut send = Proc::spawn("send", &[&at, &dir.str("a.bin")]);
    assert!(!send.wait_exit(DEADLINE).success());
    error_line(&send, "send", "cannot reach the relay");
    assert_eq!(send.rest_of_stdout(DEADLINE), "", "a code was printed");

    let (recv, status) = run_receive(&[&at, "12-abandon-ability-able", &dir.str("out/sub")]);
    assert!(!status.success());
    error_line(&recv, "receive", "cannot reach the relay");
    assert!(!dir.join("out").exists(), "OUTDIR left behind");
}

#[test]
fn an_unreadable_file_fails_before_any_code() {
    let relay = relay();
    let dir = Scratch::new("unreadable");
    let mut send = Proc::spawn("send", &[&relay.host_port(), &dir.str("missing.bin")]);
    assert!(!send.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "cannot read");
    assert!(
        line.contains("cannot read") && line.contains("missing.bin"),
        "{line}"
    );
    assert_eq!(send.rest_of_stdout(DEADLINE), "");

    let mut send = Proc::spawn("send", &[&relay.host_port(), "/dev/null"]);
    assert!(!send.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "cannot read");
    assert!(
        line.contains("it is a device, not a regular file"),
        "{line}"
    );
}

#[test]
fn a_fifo_is_refused_at_once_and_signals_always_work() {
    let relay = relay();
    let dir = Scratch::new("fifo");
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Nobody writes to the FIFO: opening it for reading would block forever.
    let mut send = Proc::spawn("send", &[&relay.host_port(), &dir.str("pipe")]);
    assert!(!send.wait_exit(DEADLINE).success(), "a FIFO was offered");
    let line = error_line(&send, "send", "cannot read");
    assert!(line.contains("named pipe (FIFO)"), "{line}");
    assert_eq!(send.rest_of_stdout(DEADLINE), "");

    // In a tree it is skipped with a warning; the rest goes.
    std::fs::create_dir(dir.join("tree")).expect("tree");
    std::fs::write(dir.join("tree/a.txt"), b"a").expect("file");
    std::fs::rename(&fifo, dir.join("tree/pipe")).expect("move fifo");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("tree"), &[]);
    send.wait_stderr("skipping", DEADLINE);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert!(
        send.stderr().contains("named pipe (FIFO)"),
        "{}",
        send.stderr()
    );
    assert_eq!(entries(&dir.join("out/tree")), ["a.txt"]);

    // A sender reading stdin that never ends still dies on SIGTERM.
    let mut send = common::Piped::spawn("send", &[&relay.host_port(), "-"]);
    let code = send.first_line();
    let mut recv = Proc::spawn("receive", &[&relay.host_port(), &code, "-"]);
    recv.wait_stderr("receiving", DEADLINE);
    send.signal("TERM");
    assert!(!send.wait_exit().success());
    common::wait_until("send's error line", DEADLINE, || {
        send.stderr().contains("send: interrupted")
    });
    assert!(!recv.wait_exit(DEADLINE).success());
}

#[test]
fn a_name_the_receiver_would_refuse_is_refused_by_the_sender() {
    let relay = relay();
    let dir = Scratch::new("badname");
    std::fs::write(dir.join("line\nbreak.txt"), b"x").expect("file");
    let mut send = Proc::spawn("send", &[&relay.host_port(), &dir.str("line\nbreak.txt")]);
    assert!(!send.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "name refused");
    assert!(
        line.contains("name refused") && line.contains("\\u{a}"),
        "{line}"
    );
    assert_eq!(send.rest_of_stdout(DEADLINE), "");
}

#[test]
fn the_wait_for_a_receiver_can_time_out() {
    let relay = relay();
    let dir = Scratch::new("timeout");
    random_file(&dir.join("a.bin"), 10);
    let (mut send, code) = start_send(
        &relay.host_port(),
        &dir.str("a.bin"),
        &["--timeout", "300ms"],
    );
    assert!(!send.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "no receiver came");
    assert!(line.contains("no receiver came"), "{line}");
    assert_eq!(
        send.rest_of_stdout(DEADLINE),
        "",
        "more than the code on stdout"
    );
    // The offer is gone with it.
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(!status.success());
    error_line(&recv, "receive", "unknown or already used code");
}

#[test]
fn ctrl_c_ends_the_wait_with_a_clear_message() {
    let relay = relay();
    let dir = Scratch::new("sigint");
    random_file(&dir.join("a.bin"), 10);
    let (mut send, _code) = start_send(&relay.host_port(), &dir.str("a.bin"), &[]);
    send.wait_stderr("waiting for the receiver", DEADLINE);
    send.signal("INT");
    assert!(!send.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "interrupted while waiting for the receiver");
    assert!(
        line.contains("interrupted while waiting for the receiver"),
        "{line}"
    );
}

#[test]
fn malformed_codes_are_refused_before_contacting_the_relay() {
    let dir = Scratch::new("malformed");
    // Port 9 (discard) on loopback is not a relay; the code is checked before any connection.
    for (code, needle) in [
        ("hello", "NUMBER-WORD-WORD-WORD"),
        ("12-abandon-ability-zzzz", "not in the word list"),
    ] {
        let (recv, status) = run_receive(&["127.0.0.1:9", code, &dir.str("out")]);
        assert!(!status.success());
        let err = recv.wait_stderr(needle, DEADLINE);
        assert!(!err.contains("cannot reach"), "{err}");
    }
    let (recv, status) = run_receive(&["no-port", "12-abandon-ability-able", &dir.str("out")]);
    assert!(!status.success());
    recv.wait_stderr("HOST:PORT", DEADLINE);
    // Nothing was created for a run that could not start.
    assert!(!dir.join("out").exists());
}

#[test]
fn a_full_disk_fails_cleanly_on_both_sides() {
    use std::process::{Command, Stdio};
    // The receiver runs in a private mount namespace with a 1 MiB tmpfs as OUTDIR, so the
    // file system really fills up and nothing outside this test sees the mount. (Nothing else
    // gives a real ENOSPC on a directory: /dev/full is a device, and a file size limit gives
    // EFBIG.) That needs root (as in CI) and unshare(1); without them the test says it skipped.
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .stderr(Stdio::piped())
        .output();
    let cannot = match probe {
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "cannot mount a tmpfs in a private mount namespace (needs root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    };
    if let Some(reason) = cannot {
        common::skip("a_full_disk_fails_cleanly_on_both_sides", &reason);
        return;
    }
    let relay = relay();
    let dir = Scratch::new("disk-full");
    random_file(&dir.join("big.bin"), 4 << 20);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("big.bin"), &[]);
    std::fs::create_dir_all(dir.join("small")).expect("mount point");
    let receive = relay_test_support::bin("receive");
    let script = r#"mount -t tmpfs -o size=1m tmpfs "$1" || exit 99
"$2" "$3" "$4" "$1"; rc=$?
ls -A "$1"
exit $rc"#;
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(dir.join("small"))
        .arg(&receive)
        .args([relay.host_port().as_str(), code.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start receive in a namespace");
    // Its output is collected while it runs (a full pipe would stall it), on a thread so the
    // wait can have a deadline.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let out = finished
        .recv_timeout(DEADLINE)
        .expect("receive did not finish")
        .expect("output");
    let status = out.status;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(status.code(), Some(99), "mount failed: {stderr}");
    assert!(!status.success(), "receive succeeded on a full disk");
    assert!(stderr.contains("receive: disk full"), "{stderr}");
    // Neither the final file nor the temporary one is left on the full file system.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "files left behind"
    );
    assert!(!send.wait_exit(DEADLINE).success());
    error_line(&send, "send", "its disk is full");
}
