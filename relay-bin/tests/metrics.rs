//! `relay --metrics`: what a Prometheus scraper and a load balancer's health check see, from the
//! real binary.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use relay_test_support::{DEADLINE, Proc, Relay};

/// Starts `relay` with metrics on a port the system chose; returns it and that address.
fn relay_with_metrics(extra: &[&str]) -> (Relay, SocketAddr) {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let relay = Relay::start(&args);
    let log = relay.proc.wait_stderr("metrics listening", DEADLINE);
    let addr = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .expect("metrics= in the relay's log")
        .parse()
        .expect("metrics address");
    (relay, addr)
}

/// One HTTP/1.1 GET; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

fn series(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

#[test]
fn healthz_is_200_while_accepting_and_503_from_the_start_of_the_drain() {
    let (mut relay, metrics) = relay_with_metrics(&["--drain-timeout", "20s"]);
    // The metrics port opens just before the relay starts accepting.
    let end = Instant::now() + DEADLINE;
    while get(metrics, "/healthz") != (200, "ok\n".to_string()) {
        assert!(Instant::now() < end, "/healthz never turned 200");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("relay_build_info{version=\""), "{body}");
    assert_eq!(series(&body, "relay_draining"), 0);
    assert_eq!(get(metrics, "/nope").0, 404);

    // A visitor inside an echo tunnel holds the drain open.
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &relay.port().to_string()]);
    let public = echo.first_line();
    let mut visitor = TcpStream::connect(&public).expect("visit");
    visitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    visitor.write_all(b"hello").expect("write");
    visitor.read_exact(&mut [0u8; 5]).expect("echo");
    let (_, body) = get(metrics, "/metrics");
    assert_eq!(series(&body, r#"relay_visitors_open{token="-"}"#), 1);

    relay.proc.signal("TERM");
    let end = Instant::now() + DEADLINE;
    while get(metrics, "/healthz").0 != 503 {
        assert!(Instant::now() < end, "/healthz never turned 503");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still draining (the visitor is inside), and still scraped meanwhile.
    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(series(&body, "relay_draining"), 1);
    assert_eq!(get(metrics, "/healthz"), (503, "draining\n".to_string()));

    visitor.shutdown(Shutdown::Both).expect("leave");
    drop(visitor);
    assert!(relay.proc.wait_exit(DEADLINE).success());
}
