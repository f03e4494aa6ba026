//! A client that was stopped (SIGSTOP, a laptop asleep) says so when it finds its session gone,
//! instead of blaming the relay for the silence.

use relay_test_support::{DEADLINE, Proc, Relay};

#[test]
fn a_stopped_client_says_it_was_not_running() {
    let relay = Relay::start(&["--heartbeat", "200ms"]);
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    echo.first_line();
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
