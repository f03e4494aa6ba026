//! What a user sees when OUTDIR is unusable, a temporary file is left over, or the relay dies:
//! one line naming the cause, found before the code is used whenever it can be.

mod common;

use std::path::PathBuf;

use common::{
    Scratch, entries, error_line, random_file, relay, run_receive, start_send, wait_until,
};
use relay_test_support::{DEADLINE, Proc, Relay};

/// After a receive failed on a local problem, the same code still works.
fn code_still_works(relay: &Relay, code: &str, send: &mut Proc, dir: &Scratch) {
    let (recv, status) = run_receive(&[&relay.host_port(), code, &dir.str("good")]);
    assert!(status.success(), "the code was used up: {}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
}

#[test]
fn an_outdir_that_is_a_file_is_named_and_the_code_survives() {
    let relay = relay();
    let dir = Scratch::new("outdir-file");
    random_file(&dir.join("a.bin"), 1000);
    std::fs::write(dir.join("notes.txt"), b"x").expect("file");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.bin"), &[]);

    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("notes.txt")]);
    assert!(!status.success());
    let line = error_line(&recv, "receive", "OUTDIR");
    assert!(
        line.ends_with("notes.txt as OUTDIR: it is a file, not a directory"),
        "{line}"
    );
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("notes.txt/sub")]);
    assert!(!status.success());
    let line = error_line(&recv, "receive", "OUTDIR");
    assert!(
        line.ends_with("notes.txt is a file, not a directory"),
        "{line}"
    );

    code_still_works(&relay, &code, &mut send, &dir);
}

#[test]
fn a_directory_at_the_final_name_is_named_not_the_temporary_file() {
    let relay = relay();
    let dir = Scratch::new("final-dir");
    random_file(&dir.join("a.bin"), 1000);
    std::fs::create_dir_all(dir.join("out/a.bin")).expect("directory in the way");
    for force in [&[][..], &["--force"][..]] {
        let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.bin"), &[]);
        let mut args = force.to_vec();
        let (relay_addr, out) = (relay.host_port(), dir.str("out"));
        args.extend([relay_addr.as_str(), code.as_str(), out.as_str()]);
        let (recv, status) = run_receive(&args);
        assert!(!status.success(), "{force:?}");
        let line = error_line(&recv, "receive", "is a directory");
        assert!(
            line.contains("out/a.bin is a directory; not replacing it") && !line.contains(".part"),
            "{line}"
        );
        assert!(!send.wait_exit(DEADLINE).success());
        error_line(&send, "send", "it has a directory of that name");
    }
    assert_eq!(entries(&dir.join("out")), ["a.bin"]);
    assert!(dir.join("out/a.bin").is_dir());
}

/// Whether this process runs as root (permission bits do not stop root's writes).
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[test]
fn an_unwritable_outdir_is_found_before_the_code_is_used() {
    use std::process::{Command, Stdio};
    let relay = relay();
    let dir = Scratch::new("outdir-ro");
    random_file(&dir.join("a.bin"), 1000);
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).expect("dir");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.bin"), &[]);
    let receive = relay_test_support::bin("receive");
    let mut cmd = if is_root() {
        // Root writes through permission bits, so OUTDIR becomes a read-only mount in a
        // private mount namespace.
        let can_mount = Command::new("unshare")
            .args(["-m", "sh", "-c", "mount -t tmpfs -o ro,size=64k tmpfs /mnt"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !can_mount {
            eprintln!(
                "running as root without unshare/mount: cannot make OUTDIR unwritable; skipping"
            );
            return;
        }
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            r#"mount -t tmpfs -o ro,size=64k tmpfs "$1" || exit 99; shift; exec "$@""#,
            "sh",
        ])
        .arg(&ro)
        .arg(&receive);
        cmd
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        Command::new(&receive)
    };
    let out = cmd
        .args([relay.host_port().as_str(), code.as_str()])
        .arg(&ro)
        .stdin(Stdio::null())
        .output()
        .expect("run receive");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(99), "mount failed: {stderr}");
    assert!(
        !out.status.success(),
        "receive wrote into a read-only OUTDIR"
    );
    assert!(
        stderr.contains("as OUTDIR: cannot create files in it"),
        "{stderr}"
    );
    code_still_works(&relay, &code, &mut send, &dir);
}

/// A sparse 8 GiB file that is still being received when the test acts; returns once the
/// receiver's temporary file holds data.
fn big_transfer_under_way(relay: &Relay, dir: &Scratch) -> (Proc, Proc, PathBuf) {
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
fn a_temporary_file_left_by_a_killed_receive_is_cleaned_up_by_the_next() {
    let relay = relay();
    let dir = Scratch::new("stale-part");
    let (mut send, mut recv, out) = big_transfer_under_way(&relay, &dir);
    recv.kill();
    assert!(!send.wait_exit(DEADLINE).success());
    let left = entries(&out);
    assert!(
        left.len() == 1 && left[0].starts_with(".filexfer-"),
        "{left:?}"
    );

    // The same name again, now a small file.
    std::fs::create_dir(dir.join("again")).expect("dir");
    let data = random_file(&dir.join("again/huge.iso"), 10_000);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("again/huge.iso"), &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, out.to_str().expect("path")]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success());
    assert_eq!(
        entries(&out),
        ["huge.iso"],
        "the stale temporary file stayed"
    );
    assert_eq!(std::fs::read(out.join("huge.iso")).expect("read"), data);
}

#[test]
fn a_relay_killed_mid_transfer_is_not_blamed_on_the_peer_alone() {
    let mut relay = relay();
    let dir = Scratch::new("relay-killed");
    let (mut send, mut recv, out) = big_transfer_under_way(&relay, &dir);
    relay.proc.kill();
    assert!(!send.wait_exit(DEADLINE).success());
    assert!(!recv.wait_exit(DEADLINE).success());
    let line = error_line(&send, "send", "the connection through the relay was cut");
    assert!(
        line.ends_with("the relay or the receiver went away"),
        "{line}"
    );
    let line = error_line(&recv, "receive", "the connection through the relay was cut");
    assert!(
        line.ends_with("the relay or the sender went away"),
        "{line}"
    );
    assert_eq!(
        common::visible(&out),
        Vec::<String>::new(),
        "the receiver left files under final names"
    );
}
