//! TLS with the real binaries: `relay --tls-self-signed` logs its fingerprint, clients pin it
//! with `--tls-fingerprint`, and a plain client of a `--require-tls` relay is told why it
//! cannot connect.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use relay_test_support::{DEADLINE, Proc, Relay};

/// The fingerprint the relay logged at start.
fn logged_fingerprint(relay: &Relay) -> String {
    let log = relay.proc.wait_stderr("fingerprint=", DEADLINE);
    let fp = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fingerprint="))
        .expect("fingerprint= in the relay's log")
        .to_string();
    assert_eq!(fp.len(), 64, "{fp}");
    assert!(
        fp.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "not lowercase hex: {fp}"
    );
    fp
}

fn echo_once(addr: &str, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("visit");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(data).expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read back");
    back
}

#[test]
fn pinned_clients_reach_a_self_signed_relay_and_plain_ones_are_told_why_not() {
    let relay = Relay::start(&["--tls-self-signed", "--require-tls"]);
    let fp = logged_fingerprint(&relay);
    let port = relay.port().to_string();

    // Pinned, with the colon form `openssl x509 -fingerprint` prints, in upper case.
    let colons: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let mut echo = Proc::spawn(
        "echoserver",
        &["127.0.0.1", &port, "--tls-fingerprint", &colons.join(":")],
    );
    let public = echo.first_line();
    assert_eq!(echo_once(&public, b"through TLS\n"), b"through TLS\n");

    let mut plain = Proc::spawn("echoserver", &["127.0.0.1", &port, "--no-reconnect"]);
    assert!(!plain.wait_exit(DEADLINE).success());
    let err = plain.wait_stderr("only TLS", DEADLINE);
    assert!(err.contains("--tls"), "{err}");

    let wrong = "00".repeat(32);
    let mut mistaken = Proc::spawn(
        "expose",
        &[
            "127.0.0.1",
            &port,
            "127.0.0.1:9",
            "--tls-fingerprint",
            &wrong,
        ],
    );
    assert!(!mistaken.wait_exit(DEADLINE).success());
    mistaken.wait_stderr(&format!("not the pinned {wrong}"), DEADLINE);
}

#[test]
fn a_tls_client_of_a_plain_relay_is_told_so() {
    let relay = Relay::start(&[]);
    let mut echo = Proc::spawn(
        "echoserver",
        &[
            "127.0.0.1",
            &relay.port().to_string(),
            "--tls-fingerprint",
            &"ab".repeat(32),
        ],
    );
    assert!(!echo.wait_exit(DEADLINE).success());
    echo.wait_stderr("does not speak TLS", DEADLINE);
}
