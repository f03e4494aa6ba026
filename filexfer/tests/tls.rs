//! `send` and `receive` through a relay that accepts only TLS.

mod common;

use common::{Scratch, random_file, run_receive, start_send};
use relay_test_support::{DEADLINE, Relay};

#[test]
fn a_file_crosses_a_tls_only_relay() {
    let relay = Relay::start(&["--tls-self-signed", "--require-tls"]);
    let log = relay.proc.wait_stderr("fingerprint=", DEADLINE);
    let fp = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fingerprint="))
        .expect("fingerprint in the log")
        .to_string();
    let dir = Scratch::new("tls");
    let data = random_file(&dir.join("a.bin"), 300_000);
    let pin = ["--tls-fingerprint", fp.as_str()];
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("a.bin"), &pin);
    let out = dir.str("out");
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &out, pin[0], pin[1]]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert!(std::fs::read(dir.join("out/a.bin")).expect("received") == data);

    // Without TLS the relay says what is missing.
    let (plain, status) = run_receive(&[&relay.host_port(), "7-apple-river-stone", &out]);
    assert!(!status.success());
    plain.wait_stderr("only TLS", DEADLINE);
}
