//! The example session and the transfers that must work, with the real `relay`, `send`
//! and `receive` binaries on 127.0.0.1.

mod common;

use common::{Scratch, entries, error_line, random_file, relay, run_receive, start_send};
use relay_test_support::DEADLINE;

const MIB: usize = 1024 * 1024;

#[test]
fn example_session_moves_a_random_file_intact() {
    let relay = relay();
    let dir = Scratch::new("example");
    let data = random_file(&dir.join("corgis.mp4"), 6 * MIB + 12345);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("corgis.mp4"), &[]);

    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(status.success(), "receive failed:\n{}", recv.stderr());
    assert!(
        send.wait_exit(DEADLINE).success(),
        "send failed:\n{}",
        send.stderr()
    );

    assert_eq!(entries(&dir.join("out")), ["corgis.mp4"]);
    let got = std::fs::read(dir.join("out/corgis.mp4")).expect("received file");
    assert!(got == data, "received bytes differ from the sent ones");
    // stdout of send is exactly one line: the code.
    assert_eq!(send.rest_of_stdout(DEADLINE), "");
    recv.wait_stderr("received \"corgis.mp4\"", DEADLINE);
}

#[test]
fn example_session_with_localhost_as_written() {
    // `./send localhost:9021 corgis.mp4`: the relay name resolves (to ::1 and 127.0.0.1).
    let relay = relay();
    let dir = Scratch::new("localhost");
    let data = random_file(&dir.join("corgis.mp4"), MIB);
    let at = format!("localhost:{}", relay.port());
    let (mut send, code) = start_send(&at, &dir.str("corgis.mp4"), &[]);
    let (recv, status) = run_receive(&[&at, &code, &dir.str("out/")]);
    assert!(status.success(), "receive failed:\n{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert!(std::fs::read(dir.join("out/corgis.mp4")).expect("file") == data);
}

#[test]
fn ipv6_relay_addresses_work() {
    let Some((_relay, addr)) = common::relay_v6() else {
        common::skip(
            "ipv6_relay_addresses_work",
            "no IPv6 loopback here ([::1]:0 cannot be bound)",
        );
        return;
    };
    assert!(addr.starts_with("[::1]:"), "{addr}");
    let dir = Scratch::new("ipv6");
    let data = random_file(&dir.join("v6.bin"), 100_000);
    let (mut send, code) = start_send(&addr, &dir.str("v6.bin"), &[]);
    let (recv, status) = run_receive(&[&addr, &code, &dir.str("out")]);
    assert!(status.success(), "receive failed:\n{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert!(std::fs::read(dir.join("out/v6.bin")).expect("file") == data);
}

#[test]
fn empty_files_transfer() {
    let relay = relay();
    let dir = Scratch::new("empty");
    std::fs::write(dir.join("empty.txt"), b"").expect("empty file");
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("empty.txt"), &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(status.success(), "receive failed:\n{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(entries(&dir.join("out")), ["empty.txt"]);
    assert_eq!(
        std::fs::metadata(dir.join("out/empty.txt"))
            .expect("meta")
            .len(),
        0
    );
}

#[test]
fn three_concurrent_transfers_stay_apart() {
    let relay = relay();
    let dir = Scratch::new("concurrent");
    let sizes = [3 * MIB + 1, 2 * MIB + 7, MIB + 13];
    let mut senders = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let name = format!("file{i}.bin");
        let data = random_file(&dir.join(&name), size);
        let (send, code) = start_send(&relay.host_port(), &dir.str(&name), &[]);
        senders.push((send, code, name, data));
    }
    // All three receivers run at once, in the reverse order of the offers.
    let receivers: Vec<_> = senders
        .iter()
        .rev()
        .map(|(_, code, _, _)| {
            relay_test_support::Proc::spawn(
                "receive",
                &[&relay.host_port(), code, &dir.str("out"), "--quiet"],
            )
        })
        .collect();
    for mut recv in receivers {
        assert!(
            recv.wait_exit(DEADLINE).success(),
            "receive failed:\n{}",
            recv.stderr()
        );
        assert_eq!(
            recv.stderr_to_end(DEADLINE),
            "",
            "--quiet printed something"
        );
    }
    for (mut send, _, name, data) in senders {
        assert!(
            send.wait_exit(DEADLINE).success(),
            "send failed:\n{}",
            send.stderr()
        );
        let got = std::fs::read(dir.join("out").join(&name)).expect("received file");
        assert!(got == data, "{name}: bytes differ");
    }
    assert_eq!(
        entries(&dir.join("out")),
        ["file0.bin", "file1.bin", "file2.bin"]
    );
}

#[test]
fn an_existing_file_is_kept_unless_forced() {
    let relay = relay();
    let dir = Scratch::new("exists");
    let data = random_file(&dir.join("report.pdf"), 50_000);
    std::fs::create_dir_all(dir.join("out")).expect("out");
    std::fs::write(dir.join("out/report.pdf"), b"precious").expect("existing file");

    let (mut send, code) = start_send(&relay.host_port(), &dir.str("report.pdf"), &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(!status.success(), "receive overwrote without --force");
    let line = error_line(&recv, "receive", "already exists");
    assert!(
        line.contains("already exists") && line.contains("--force"),
        "{line}"
    );
    assert!(!send.wait_exit(DEADLINE).success(), "send claimed success");
    let sent = error_line(&send, "send", "receiver stopped the transfer");
    assert!(sent.contains("already has a file of that name"), "{sent}");
    assert!(
        !sent.contains(dir.path().to_str().expect("path")),
        "local path leaked: {sent}"
    );
    assert_eq!(
        std::fs::read(dir.join("out/report.pdf")).expect("kept"),
        b"precious"
    );
    assert_eq!(
        entries(&dir.join("out")),
        ["report.pdf"],
        "temporary file left behind"
    );

    // With --force the file is replaced.
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("report.pdf"), &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out"), "--force"]);
    assert!(
        status.success(),
        "receive --force failed:\n{}",
        recv.stderr()
    );
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert!(std::fs::read(dir.join("out/report.pdf")).expect("replaced") == data);
}

#[test]
fn outdir_is_created_with_its_parents() {
    let relay = relay();
    let dir = Scratch::new("mkdir");
    let data = random_file(&dir.join("a.bin"), 1000);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.bin"), &["--quiet"]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("x/y/z")]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(
        send.stderr_to_end(DEADLINE),
        "",
        "--quiet printed something"
    );
    assert!(std::fs::read(dir.join("x/y/z/a.bin")).expect("file") == data);
}
