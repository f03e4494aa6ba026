//! The README's example session and the binaries' contracts, run with the real binaries as a
//! user would: `relay`, `echoserver`, `expose`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use relay_test_support::{DEADLINE, Proc, Relay, exchange, exchange_reset, free_port};

fn check_example_session(relay_arg: &str, port: u16) {
    let relay = Proc::spawn("relay", &[relay_arg]);
    relay.wait_stderr("relay listening", DEADLINE);
    let mut echo = Proc::spawn("echoserver", &["localhost", &port.to_string()]);
    let out = echo.stdout_lines(1, DEADLINE);
    let line = out.strip_suffix('\n').expect("one full line");
    let public_port: u16 = line
        .strip_prefix("localhost:")
        .unwrap_or_else(|| panic!("expected localhost:PORT, got {line:?}"))
        .parse()
        .expect("port number");
    assert!(
        public_port > port && public_port <= port + 1000,
        "{public_port} out of range"
    );
    echo.wait_stderr(
        &format!("established relay address: (localhost, {public_port})"),
        DEADLINE,
    );

    let back = exchange(&format!("localhost:{public_port}"), b"Hello, world!\r\n")
        .expect("telnet-like visit");
    assert_eq!(back, b"Hello, world!\r\n");
    // Nothing but the address ever goes to stdout.
    echo.kill();
    assert_eq!(echo.rest_of_stdout(DEADLINE), "");
}

#[test]
fn example_session_with_a_bare_port() {
    let port = free_port();
    check_example_session(&port.to_string(), port);
}

#[test]
fn example_session_with_colon_port() {
    let port = free_port();
    check_example_session(&format!(":{port}"), port);
}

#[test]
fn first_tunnel_gets_the_port_right_above_the_control_port() {
    // Below the ephemeral range, so no test's outgoing connection sits on the port above.
    let port = free_port();
    let relay = Proc::spawn("relay", &[&format!("127.0.0.1:{port}")]);
    relay.wait_stderr("relay listening", DEADLINE);
    let relay = Relay {
        proc: relay,
        addr: ([127, 0, 0, 1], port).into(),
    };
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    let line = echo.first_line();
    let expected = relay.port() + 1;
    let got: u16 = line
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    if got != expected {
        // Only acceptable if another program on this machine holds the port above.
        assert!(
            TcpListener::bind(("127.0.0.1", expected)).is_err(),
            "port {expected} was free but the relay handed out {got}"
        );
    }
}

#[test]
fn expose_serves_an_http_server_to_concurrent_visitors() {
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = http.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in http.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&req)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let body = format!("you asked for {path}\n").repeat(1000);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });

    let relay = Relay::start(&[]);
    let mut expose = Proc::spawn(
        "expose",
        &[
            "127.0.0.1",
            &relay.port().to_string(),
            &http_port.to_string(),
        ],
    );
    let public = expose.first_line();
    let workers: Vec<_> = (0..32)
        .map(|i| {
            let public = public.clone();
            std::thread::spawn(move || {
                let req = format!("GET /item/{i} HTTP/1.0\r\nHost: x\r\n\r\n");
                let resp = exchange(&public, req.as_bytes()).expect("request");
                let resp = String::from_utf8(resp).expect("utf-8");
                let body = format!("you asked for /item/{i}\n").repeat(1000);
                assert!(resp.starts_with("HTTP/1.0 200 OK\r\n"), "{resp:.80}");
                assert!(
                    resp.ends_with(&body),
                    "request {i} got the wrong or a partial body"
                );
            })
        })
        .collect();
    for w in workers {
        w.join().expect("request thread");
    }
}

#[test]
fn expose_closes_visitors_promptly_when_the_local_server_is_down() {
    let dead_port = free_port();
    // Per-visitor lines are at debug.
    let relay = Relay::start_with(&[], &[("RUST_LOG", "debug")]);
    let mut expose = Proc::spawn(
        "expose",
        &[
            "127.0.0.1",
            &relay.port().to_string(),
            &dead_port.to_string(),
        ],
    );
    let public = expose.first_line();
    let started = Instant::now();
    // Reset, not closed cleanly: an empty clean answer would look like a server with nothing
    // to say.
    let (reset, back) = exchange_reset(&public, b"hello");
    assert!(reset, "the visitor was not reset (got {back:?})");
    assert!(back.is_empty(), "{back:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    expose.wait_stderr("refusing visitor", DEADLINE);
    relay
        .proc
        .wait_stderr("visitor refused by the client", DEADLINE);
}

#[test]
fn killing_the_client_closes_its_public_port_within_two_seconds() {
    // Without a lease: with one, the port stays open for the client to come back.
    let relay = Relay::start(&["--lease-ttl", "0"]);
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    let public = echo.first_line();
    let mut visitor = TcpStream::connect(&public).expect("visitor");
    visitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    visitor.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    visitor.read_exact(&mut b).expect("echo");

    echo.signal("KILL");
    let killed = Instant::now();
    let mut rest = Vec::new();
    let end = visitor.read_to_end(&mut rest);
    // Its stream was cut: a reset, never a clean end (the visitor only reads, so this read is
    // the call the reset is reported to).
    assert!(
        matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, got {end:?}"
    );
    assert!(
        rest.is_empty(),
        "{} bytes after the client died",
        rest.len()
    );
    loop {
        match TcpStream::connect(&public) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {
                assert!(
                    killed.elapsed() < Duration::from_secs(2),
                    "public port still open"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "visitor closed after {:?}",
        killed.elapsed()
    );
}

#[test]
fn relay_exits_zero_on_sigterm_and_sigint() {
    for sig in ["TERM", "INT"] {
        let mut relay = Relay::start(&[]);
        let port = relay.port().to_string();
        let mut echo = Proc::spawn("echoserver", &["--no-reconnect", "127.0.0.1", &port]);
        let _ = echo.first_line();
        relay.proc.signal(sig);
        let status = relay.proc.wait_exit(DEADLINE);
        assert!(status.success(), "relay exited with {status} on SIG{sig}");
        // The client learns the session is gone and exits non-zero with one line.
        let status = echo.wait_exit(DEADLINE);
        assert!(!status.success());
        let err = echo.stderr();
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("echoserver: "), "{err}");
        assert!(last.contains("the relay shut down"), "{err}");
    }
}

#[test]
fn bad_arguments_and_busy_ports_fail_with_one_line() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let mut relay = Proc::spawn("relay", &[&addr]);
    assert!(!relay.wait_exit(DEADLINE).success());
    let err = relay.stderr();
    assert!(
        err.starts_with("relay: cannot listen on") && err.lines().count() == 1,
        "{err}"
    );

    let mut relay = Proc::spawn("relay", &["--ports", "9000-8000", "127.0.0.1:0"]);
    assert!(!relay.wait_exit(DEADLINE).success());
    assert!(
        relay.stderr().contains("range is empty"),
        "{}",
        relay.stderr()
    );

    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &free_port().to_string()]);
    assert!(!echo.wait_exit(DEADLINE).success());
    let err = echo.stderr();
    assert!(
        err.starts_with("echoserver: cannot reach the relay at 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(echo.rest_of_stdout(DEADLINE), "");
}

#[test]
fn no_free_port_is_reported_by_the_client() {
    let port = free_port();
    let relay = Relay::start(&["--ports", &format!("{port}-{port}")]);
    let mut first = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    assert_eq!(first.first_line(), format!("127.0.0.1:{port}"));
    let mut second = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    assert!(!second.wait_exit(DEADLINE).success());
    let err = second.stderr();
    assert!(
        err.contains(&format!("no free public port in {port}-{port}")),
        "{err}"
    );
}
