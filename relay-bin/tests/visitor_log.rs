//! What tunnel clients log about visitors at the default level: no line per visitor, a summary
//! instead (here the one logged at shutdown), and one warning for a burst of refusals.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use relay_test_support::{DEADLINE, Proc, Relay, free_port};

/// Sends `data`, half-closes, and reads until the far end closes (or resets).
fn visit(addr: &str, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("visitor connects");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

/// Stops a tunnel client with SIGTERM and returns all it wrote to stderr.
fn stop(mut client: Proc) -> String {
    client.signal("TERM");
    assert!(client.wait_exit(DEADLINE).success(), "{}", client.stderr());
    client.stderr()
}

#[test]
fn echoserver_sums_up_visitors_instead_of_a_line_each() {
    let relay = Relay::start(&[]);
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    let public = echo.first_line();
    for _ in 0..3 {
        assert_eq!(visit(&public, b"hello"), b"hello");
    }
    let log = stop(echo);
    assert!(
        !log.contains("visitor connected"),
        "per-visitor line at info:\n{log}"
    );
    assert!(
        !log.contains("visitor closed"),
        "per-visitor line at info:\n{log}"
    );
    let summary = log
        .lines()
        .find(|l| l.contains("visitors since the last summary"))
        .unwrap_or_else(|| panic!("no summary at shutdown:\n{log}"));
    for field in [
        "opened=3",
        "closed=3",
        "refused=0",
        "open=0",
        "bytes_in=15",
        "bytes_out=15",
    ] {
        assert!(summary.contains(field), "{field} missing: {summary}");
    }
}

#[test]
fn echoserver_per_visitor_lines_are_at_debug() {
    let relay = Relay::start(&[]);
    let mut echo = Proc::spawn_with(
        "echoserver",
        &["127.0.0.1", &relay.port().to_string()],
        &[("RUST_LOG", "debug")],
    );
    let public = echo.first_line();
    assert_eq!(visit(&public, b"hi"), b"hi");
    echo.wait_stderr("visitor closed", DEADLINE);
    let log = stop(echo);
    assert!(log.contains("visitor connected"), "{log}");
}

#[test]
fn expose_warns_once_about_a_burst_of_refusals_and_counts_them() {
    let dead_port = free_port();
    let relay = Relay::start(&[]);
    let mut expose = Proc::spawn(
        "expose",
        &[
            "127.0.0.1",
            &relay.port().to_string(),
            &dead_port.to_string(),
        ],
    );
    let public = expose.first_line();
    for _ in 0..5 {
        assert_eq!(visit(&public, b"x"), b"", "a refused visitor got data");
    }
    let log = stop(expose);
    let warnings = log.matches("refusing visitor").count();
    assert_eq!(warnings, 1, "one warning per refusal is a flood:\n{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("visitors since the last summary"))
        .unwrap_or_else(|| panic!("no summary at shutdown:\n{log}"));
    for field in ["opened=0", "refused=5", "open=0"] {
        assert!(summary.contains(field), "{field} missing: {summary}");
    }
}
