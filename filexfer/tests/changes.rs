//! A file that changes while `send` reads it never arrives torn: the send fails with a clear
//! message, and the receiver keeps nothing under the final name.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::{Scratch, error_line, largest_file, relay, start_send, visible, wait_until};
use relay_test_support::{DEADLINE, Proc};

const SIZE: u64 = 1 << 30;

/// Starts a transfer of a sparse 1 GiB file, waits until data arrives, then calls `change`
/// on the source; both sides must fail and nothing may appear under the final name.
fn changed_mid_send(test: &str, change: impl FnOnce(&Path), expect: &str) {
    let relay = relay();
    let dir = Scratch::in_memory(test);
    let src = dir.join("big.img");
    std::fs::File::create(&src)
        .expect("create")
        .set_len(SIZE)
        .expect("sparse");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("big.img"), &[]);
    let out = dir.join("out");
    let mut recv = Proc::spawn("receive", &[&relay.host_port(), &code, &dir.str("out")]);
    wait_until("data arriving", DEADLINE, || largest_file(&out) > 4 << 20);
    change(&src);
    assert!(
        !send.wait_exit(DEADLINE).success(),
        "a changed file was sent"
    );
    let line = error_line(&send, "send", "changed");
    assert!(line.contains(expect), "{line}");
    assert!(
        !recv.wait_exit(DEADLINE).success(),
        "a changed file was received"
    );
    error_line(&recv, "receive", "changed on its side");
    assert_eq!(visible(&out), Vec::<String>::new(), "a final name appeared");
}

#[test]
fn a_file_overwritten_in_place_while_sent_fails_both_sides() {
    changed_mid_send(
        "overwritten",
        |src| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(src)
                .expect("open");
            f.seek(SeekFrom::Start(0)).expect("seek");
            f.write_all(b"torn").expect("overwrite");
        },
        "while it was being sent",
    );
}

#[test]
fn a_file_appended_to_while_sent_fails_both_sides() {
    changed_mid_send(
        "appended",
        |src| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(src)
                .expect("open");
            f.write_all(b"more").expect("append");
        },
        "while it was being sent",
    );
}

#[test]
fn a_file_that_changes_before_the_receiver_comes_is_refused() {
    let relay = relay();
    let dir = Scratch::new("changed-early");
    std::fs::write(dir.join("a.txt"), b"first").expect("write");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.txt"), &[]);
    std::fs::write(dir.join("a.txt"), b"second version").expect("rewrite");
    let mut recv = Proc::spawn("receive", &[&relay.host_port(), &code, &dir.str("out")]);
    assert!(!send.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "changed");
    assert!(line.contains("after send listed it"), "{line}");
    assert!(!recv.wait_exit(DEADLINE).success());
    assert_eq!(visible(&dir.join("out")), Vec::<String>::new());
}
