//! A tunnel client whose visitors never read, pushing as fast as the windows allow: the real
//! `relay` must hold no more than its documented budget, kernel socket buffers included.
//!
//! Kernel TCP memory is read from `/proc/net/sockstat`, which counts every TCP socket of the
//! host (this test's visitors too, so they ask for tiny receive buffers); the relay's own
//! memory is its resident set.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay_core::server::Budget;
use relay_core::{TunnelConfig, TunnelListener};
use relay_test_support::{DEADLINE, Relay};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Visitors that never read.
const VISITORS: usize = 64;

/// What the test's own visitors may hold: each asks for a 4 KiB receive buffer (the kernel
/// doubles it and rounds up), plus some room for sockets elsewhere on the host.
const SLACK: usize = VISITORS * 16 * 1024 + 4 * 1024 * 1024;

fn tcp_mem_bytes() -> usize {
    let stat = std::fs::read_to_string("/proc/net/sockstat").expect("read /proc/net/sockstat");
    let pages: usize = stat
        .lines()
        .find_map(|l| l.strip_prefix("TCP: "))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no TCP mem in {stat}"));
    pages * 4096
}

fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("relay status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// One series from `/metrics`, over plain HTTP.
async fn scrape(metrics: SocketAddr, series: &str) -> u64 {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(metrics)
        .await
        .expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("response");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// The address the relay's `--metrics` server listens on, from its start-up log.
fn metrics_addr(relay: &Relay) -> SocketAddr {
    let log = relay.proc.wait_stderr("metrics listening", DEADLINE);
    log.split_whitespace()
        .find_map(|w| w.strip_prefix("metrics="))
        .and_then(|a| a.parse().ok())
        .expect("metrics address")
}

/// A tunnel client that gives every visitor an endless stream of bytes; its public address
/// and its task.
async fn pushing_client(relay: &Relay) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let config = TunnelConfig {
        reconnect: relay_core::client::Reconnect::never(),
        ..TunnelConfig::default()
    };
    let listener = TunnelListener::connect(&relay.host_port(), config)
        .await
        .expect("tunnel");
    let public = SocketAddr::from(([127, 0, 0, 1], listener.public_addr().port));
    let client = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5a_u8; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    (public, client)
}

/// Up to `n` visitors of `public` with tiny receive buffers that never read. A refused visitor
/// may be reset before its connect returns: it is left out.
async fn stalled_visitors(public: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut visitors = Vec::new();
    for _ in 0..n {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        if let Ok(visitor) = sock.connect(public).await {
            visitors.push(visitor);
        }
    }
    visitors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_that_never_read_stay_within_the_budget() {
    let relay = Relay::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&relay);
    let (kernel_before, rss_before) = (tcp_mem_bytes(), rss_bytes(relay.proc.id()));

    let (public, client) = pushing_client(&relay).await;
    let visitors = stalled_visitors(public, VISITORS).await;
    assert_eq!(visitors.len(), VISITORS, "every visitor connects");

    // Pushed as far as the windows allow: the bytes written to visitors stop growing.
    let moved = r#"relay_tunnel_bytes_total{direction="client_to_visitor",token="-"}"#;
    let end = Instant::now() + DEADLINE;
    let (mut last, mut steady) = (0, 0);
    while steady < 5 {
        assert!(Instant::now() < end, "the push never stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = scrape(metrics, moved).await;
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    let open = r#"relay_visitors_open{token="-"}"#;
    assert_eq!(scrape(metrics, open).await, VISITORS as u64);

    let kernel = tcp_mem_bytes().saturating_sub(kernel_before);
    let rss = rss_bytes(relay.proc.id()).saturating_sub(rss_before);
    let budget = Budget::new(relay_core::server::DEFAULT_MAX_VISITORS_PER_TUNNEL);
    // Visitors that stop reading pin the send side only (their uploads are not stalled).
    let allowed =
        budget.session_fixed + VISITORS * (budget.visitor_send_queue + budget.visitor_user) + SLACK;
    println!(
        "{VISITORS} stalled visitors ({last} bytes delivered): kernel TCP +{} KiB, relay RSS +{} KiB, \
         {} KiB per visitor; budget {} KiB",
        kernel / 1024,
        rss / 1024,
        (kernel + rss) / VISITORS / 1024,
        allowed / 1024
    );
    assert!(
        kernel + rss <= allowed,
        "kernel +{kernel} and RSS +{rss} bytes exceed the budget of {allowed}"
    );
    // They stopped reading: what they pin is the send side's bound.
    assert!(
        kernel <= VISITORS * budget.visitor_send_queue + SLACK,
        "kernel TCP memory +{kernel} bytes exceeds {VISITORS} x {}",
        budget.visitor_send_queue
    );
    drop(visitors);
    client.abort();
}

/// The relay-wide cap, and one client address's share of it: a client whose visitors never
/// read gets its share of visitors and no more (the rest are reset at once and counted), so
/// what it pins stays within the share's budget, while the relay keeps room for other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_gets_its_share_of_the_relay_wide_visitor_cap() {
    const CAP: usize = 64;
    const SHARE: usize = CAP / 4;
    const TRIED: usize = 3 * SHARE;
    let relay = Relay::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--max-open-visitors",
        &CAP.to_string(),
    ]);
    let budget_line = relay.proc.wait_stderr("visitor budget", DEADLINE);
    assert!(
        budget_line.contains(&format!("open_visitors={CAP}"))
            && budget_line.contains(&format!("per_client_addr={SHARE}")),
        "start line states the budget: {budget_line}"
    );
    let metrics = metrics_addr(&relay);
    let (kernel_before, rss_before) = (tcp_mem_bytes(), rss_bytes(relay.proc.id()));

    let (public, client) = pushing_client(&relay).await;
    let visitors = stalled_visitors(public, TRIED).await;

    let refused = r#"relay_refusals_total{reason="addr_visitor_share"}"#;
    let moved = r#"relay_tunnel_bytes_total{direction="client_to_visitor",token="-"}"#;
    let end = Instant::now() + DEADLINE;
    let (mut last, mut steady) = (0, 0);
    while steady < 5 || scrape(metrics, refused).await < (TRIED - SHARE) as u64 {
        assert!(Instant::now() < end, "the refusals or the stall never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = scrape(metrics, moved).await;
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    assert_eq!(scrape(metrics, refused).await, (TRIED - SHARE) as u64);
    let relay_wide = r#"relay_refusals_total{reason="open_visitor_cap"}"#;
    assert_eq!(
        scrape(metrics, relay_wide).await,
        0,
        "the relay had room left"
    );
    let open = r#"relay_visitors_open{token="-"}"#;
    assert_eq!(scrape(metrics, open).await, SHARE as u64);

    let kernel = tcp_mem_bytes().saturating_sub(kernel_before);
    let rss = rss_bytes(relay.proc.id()).saturating_sub(rss_before);
    let budget = Budget::new(relay_core::server::DEFAULT_MAX_VISITORS_PER_TUNNEL);
    // Refused visitors' sockets are gone on the relay; the test's own count in SLACK. These
    // visitors never read, so each pins its send queue and relay-side windows; nothing here
    // uploads, so the auto-tuned receive buffers stay at their start size (in SLACK).
    let allowed =
        budget.session_fixed + SHARE * (budget.visitor_send_queue + budget.visitor_user) + SLACK;
    println!(
        "{TRIED} stalled visitors tried, {SHARE} admitted: kernel TCP +{} KiB, relay RSS +{} KiB; \
         budget {} KiB",
        kernel / 1024,
        rss / 1024,
        allowed / 1024
    );
    assert!(
        kernel + rss <= allowed,
        "kernel +{kernel} and RSS +{rss} bytes exceed the share's budget of {allowed}"
    );
    drop(visitors);
    client.abort();
}
