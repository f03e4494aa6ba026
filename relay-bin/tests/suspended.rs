//! A client that was stopped (SIGSTOP, a laptop asleep) says so when it finds its session gone,
//! instead of blaming the relay for the silence.

use std::io::{Read, Write};
use std::net::TcpStream;

use relay_test_support::{DEADLINE, Proc, Relay};

#[test]
fn a_stopped_client_says_it_was_not_running() {
    let relay = Relay::start(&["--heartbeat", "200ms"]);
    let port = relay.port().to_string();
    let mut echo = Proc::spawn("echoserver", &["--no-reconnect", "127.0.0.1", &port]);
    let public = echo.first_line();
    // One echo proves the session is whole (the relay lets visitors in only once the
    // client's control stream is open), so its heartbeats are running.
    let mut visitor = TcpStream::connect(&public).expect("visitor");
    visitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    visitor.write_all(b"x").expect("write");
    visitor.read_exact(&mut [0u8; 1]).expect("echo");
    echo.signal("STOP");
    // The relay gives up on the silent client after three intervals.
    relay.proc.wait_stderr("session closed", DEADLINE);
    echo.signal("CONT");
    let status = echo.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", echo.stderr());
    let stderr = echo.stderr();
    assert!(stderr.contains("did not run for"), "{stderr}");
    assert!(!stderr.contains("stopped answering"), "{stderr}");
}
