//! `send` and `receive` against a relay that requires a token: without the right one each
//! exits 1 with one line saying authentication failed; with it (flag or environment) the file
//! arrives.

mod common;

use common::{Scratch, random_file, run_receive};
use relay_test_support::{DEADLINE, Proc, Relay};

const SECRET: &str = "transfer-secret-0123456789";
const WRONG: &str = "not-the-secret-0123456789";

fn assert_auth_failed(mut proc: Proc, program: &str) {
    let status = proc.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", proc.stderr());
    let err = proc.stderr();
    let line = err.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {err}");
    assert!(line.starts_with(&format!("{program}: ")), "{line}");
    assert!(line.contains("authentication failed"), "{line}");
}

#[test]
fn send_and_receive_need_the_right_token() {
    let relay = Relay::start(&["--token", SECRET]);
    let dir = Scratch::new("tokens");
    let data = random_file(&dir.join("a.bin"), 10_000);
    let file = dir.str("a.bin");
    let control = relay.host_port();

    assert_auth_failed(Proc::spawn("send", &[&control, &file]), "send");
    assert_auth_failed(
        Proc::spawn("send", &[&control, &file, "--token", WRONG]),
        "send",
    );

    let mut send = Proc::spawn_with("send", &[&control, &file], &[("RELAY_TOKEN", SECRET)]);
    let code = send.first_line();
    assert!(common::is_code_shaped(&code), "{code:?}: {}", send.stderr());
    let out = dir.str("out");
    let (recv, _) = run_receive(&[&control, &code, &out]);
    assert_auth_failed(recv, "receive");
    let (recv, _) = run_receive(&[&control, &code, &out, "--token", WRONG]);
    assert_auth_failed(recv, "receive");

    // Refused before the claim: the code is still good.
    let (recv, status) = run_receive(&[&control, &code, &out, "--token", SECRET]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(
        std::fs::read(dir.join("out/a.bin")).expect("received"),
        data
    );
    assert!(!relay.proc.stderr().contains(SECRET));
}
