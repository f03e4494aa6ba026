//! `relay --trusted-proxy`: behind a load balancer the relay sees the real client and visitor
//! addresses, from the real binaries. 127.0.0.2 plays the load balancer (a test-owned one that
//! writes PROXY headers); 127.0.0.1 is anyone else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};

use relay_test_support::{DEADLINE, Proc, Relay};
use tokio::io::AsyncWriteExt;

const BALANCER: &str = "127.0.0.2";

/// PROXY v2 for a connection from `src` to `dst`.
fn v2(src: &str, dst: &str) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let addrs: (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addrs)
        .build()
        .expect("header")
}

/// PROXY v2 LOCAL: the balancer checking on its own behalf.
fn v2_local() -> Vec<u8> {
    use ppp::v2::{AddressFamily, Builder, Command, Protocol, Version};
    Builder::new(
        Version::Two | Command::Local,
        AddressFamily::Unspecified | Protocol::Unspecified,
    )
    .build()
    .expect("header")
}

/// A test-owned load balancer: every connection to the returned address is dialed on to
/// `target` from `from`, `preamble` is written first, then bytes are copied both ways.
fn balancer(target: SocketAddr, from: &str, preamble: Vec<u8>) -> SocketAddr {
    let from: IpAddr = from.parse().expect("ip");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((mut inbound, _)) = listener.accept().await {
                let preamble = preamble.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = dial_from(from, target).await else {
                        return;
                    };
                    if outbound.write_all(&preamble).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    });
    addr
}

async fn dial_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// A blocking connection from `from` to `to`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt
        .block_on(dial_from(from.parse().expect("ip"), to))
        .expect("connect");
    let s = s.into_std().expect("std");
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s
}

fn trusting_relay(extra: &[&str]) -> Relay {
    let mut args = vec![
        "--trusted-proxy",
        "127.0.0.2/32",
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Relay::start_with(&args, &[("RUST_LOG", "info,relay_core=debug")])
}

fn metrics(relay: &Relay) -> String {
    let log = relay.proc.wait_stderr("metrics listening", DEADLINE);
    let addr: SocketAddr = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .expect("metrics=")
        .parse()
        .expect("addr");
    let mut s = TcpStream::connect(addr).expect("metrics");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

/// Sum of every series of `name` (all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_trusted_balancer_passes_the_real_client_and_visitor_on() {
    let relay = trusting_relay(&[]);
    let entry = balancer(
        relay.addr,
        BALANCER,
        v2("203.0.113.9:4242", "198.51.100.1:8080"),
    );
    // The local service behind expose reads the PROXY line expose writes for each visitor.
    let local = TcpListener::bind("127.0.0.1:0").expect("local service");
    let local_port = local.local_addr().expect("addr").port().to_string();
    let mut expose = Proc::spawn(
        "expose",
        &[
            "127.0.0.1",
            &entry.port().to_string(),
            &local_port,
            "--proxy-protocol",
            "v1",
        ],
    );
    let public: SocketAddr = expose.first_line().parse().expect("public address");
    relay
        .proc
        .wait_stderr("client.addr=203.0.113.9:4242", DEADLINE);

    // A visitor relayed by the balancer, with its own header in front of its bytes.
    let mut visitor = connect_from(BALANCER, public);
    visitor
        .write_all(b"PROXY TCP4 198.51.100.77 192.0.2.1 5555 443\r\nhello")
        .expect("visit");
    visitor.shutdown(Shutdown::Write).expect("half-close");
    local.set_nonblocking(false).expect("blocking");
    let (conn, _) = local.accept().expect("a visitor reaches the local service");
    conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).expect("PROXY line from expose");
    assert_eq!(line, "PROXY TCP4 198.51.100.77 192.0.2.1 5555 443\r\n");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("visitor bytes");
    assert_eq!(
        rest, "hello",
        "the visitor's header is not passed on as data"
    );
    let log = relay
        .proc
        .wait_stderr("visitor.addr=198.51.100.77:5555", DEADLINE);
    assert!(!log.contains("client.addr=127.0.0.2"), "{log}");
}

#[test]
fn a_header_from_anyone_else_is_garbage_and_a_trusted_connection_needs_one() {
    let relay = trusting_relay(&[]);
    // 127.0.0.1 is not trusted: its header is not honoured, the connection is no relay client.
    let spoofer = balancer(
        relay.addr,
        "127.0.0.1",
        v2("203.0.113.66:1", "198.51.100.1:2"),
    );
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &spoofer.port().to_string()]);
    assert!(!echo.wait_exit(DEADLINE).success(), "{}", echo.stderr());
    let log = relay.proc.wait_stderr("wrong magic", DEADLINE);
    assert!(
        !log.contains("203.0.113.66"),
        "spoofed address honoured:\n{log}"
    );

    // The balancer's own address without a header: refused, with the reason.
    let bare = balancer(relay.addr, BALANCER, Vec::new());
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &bare.port().to_string()]);
    assert!(!echo.wait_exit(DEADLINE).success());
    let said = echo.stderr();
    assert!(said.contains("PROXY header"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(!relay.proc.stderr().contains("session opened"));
}

#[test]
fn the_balancers_health_checks_count_against_no_one() {
    let relay = trusting_relay(&["--max-handshakes-per-addr", "2"]);
    // Connect-only checks and PROXY LOCAL checks, on the control port, many more than the
    // per-address handshake share.
    for i in 0..40 {
        let mut s = connect_from(BALANCER, relay.addr);
        if i % 2 == 1 {
            s.write_all(&v2_local()).expect("LOCAL header");
        }
        drop(s);
    }
    // Then a real client through the balancer still gets in, and a visitor check on its
    // public port reaches nobody.
    let entry = balancer(
        relay.addr,
        BALANCER,
        v2("203.0.113.9:4242", "198.51.100.1:8080"),
    );
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &entry.port().to_string()]);
    let public: SocketAddr = echo.first_line().parse().expect("public address");
    for _ in 0..10 {
        drop(connect_from(BALANCER, public));
    }
    // A visitor after the checks echoes: the checks took no slot for good.
    let mut visitor = connect_from(BALANCER, public);
    visitor
        .write_all(&v2("198.51.100.5:7", "192.0.2.1:80"))
        .expect("header");
    visitor.write_all(b"ping").expect("ping");
    visitor.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    visitor.read_to_end(&mut back).expect("echo");
    assert_eq!(back, b"ping");
    relay.proc.wait_stderr("visitor closed", DEADLINE);

    let text = metrics(&relay);
    assert_eq!(
        total(&text, "relay_handshake_failures_total"),
        0.0,
        "{text}"
    );
    assert_eq!(total(&text, "relay_refusals_total"), 0.0, "{text}");
    assert_eq!(total(&text, "relay_visitors_total"), 1.0, "{text}");
    assert_eq!(total(&text, "relay_sessions_total"), 1.0, "{text}");
}

#[test]
fn bad_proxy_and_cluster_options_name_the_culprit() {
    for (args, culprit) in [
        (&["--trusted-proxy", "10.0.0.0/33"][..], "'10.0.0.0/33'"),
        (
            &["--trusted-proxy", "lb.example.com"][..],
            "'lb.example.com'",
        ),
        (&["--relay-id", "1000"][..], "1000"),
        (
            &["--relay-id", "2", "--peer", "2=10.0.0.2:7000"][..],
            "peer 2 has this relay's own id",
        ),
        (&["--relay-id", "1", "--peer", "2=nohost"][..], "peer 2"),
        (&["--peer", "2=10.0.0.2:7000"][..], "--relay-id"),
    ] {
        let mut all = vec!["127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut relay = Proc::spawn("relay", &all);
        assert!(!relay.wait_exit(DEADLINE).success(), "{args:?} accepted");
        let err = relay.stderr();
        assert!(err.contains(culprit), "{args:?}: {err}");
    }
}
