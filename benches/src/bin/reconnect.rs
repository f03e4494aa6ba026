//! `reconnect`: measures how tunnels survive outages, with the real binaries (loopback only):
//!
//! * time from a relay restart (kill -9, started again on the same port) until a tunnel echoes
//!   again, over repeated trials;
//! * visitors refused during a client outage (its connection cut, the way back closed for a
//!   while) while new visitors keep arriving;
//! * relay memory and descriptors before and after many reconnects at once.
//!
//! Run it from a release build: `cargo run --release -p relay-benches --bin reconnect`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use relay_core::client::Reconnect;
use relay_core::{TunnelConfig, TunnelListener};
use relay_test_support::{Forwarder, Proc, Relay, exchange, free_port};

/// Outage and restart measurements; prints `key=value` lines.
#[derive(Debug, Parser)]
#[command(max_term_width = 100)]
struct Args {
    /// Relay restarts to time.
    #[arg(long, default_value_t = 20)]
    restarts: usize,
    /// Length of the client outage, in seconds.
    #[arg(long, default_value_t = 2.0)]
    outage: f64,
    /// New visitors per second during the outage.
    #[arg(long, default_value_t = 25)]
    visitor_rate: u32,
    /// Clients in the reconnect storms.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Storms (each cuts every client once).
    #[arg(long, default_value_t = 10)]
    storms: usize,
}

fn main() {
    let args = Args::parse();
    restarts(args.restarts);
    outage(Duration::from_secs_f64(args.outage), args.visitor_rate);
    storms(args.clients, args.storms);
}

/// Polls until `public` echoes, within a minute; returns how long that took.
fn until_echoes(public: &str) -> Duration {
    let started = Instant::now();
    while exchange(public, b"ping").map_or(true, |b| b != b"ping") {
        assert!(started.elapsed() < Duration::from_secs(60), "no echo");
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn restarts(trials: usize) {
    let control = format!("127.0.0.1:{}", free_port());
    let mut relay = Relay::start_at(&control, &[], &[("RUST_LOG", "warn")]);
    let port = relay.port().to_string();
    let mut echo = Proc::spawn_with("echoserver", &["127.0.0.1", &port], &[("RUST_LOG", "warn")]);
    let public = echo.first_line();
    until_echoes(&public);
    let mut took = Vec::with_capacity(trials);
    for _ in 0..trials {
        relay.proc.kill();
        relay = Relay::start_at(&control, &[], &[("RUST_LOG", "warn")]);
        took.push(until_echoes(&public));
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = took[((took.len() * 99).div_ceil(100)).saturating_sub(1)];
    println!(
        "restart_to_echo trials={} median_ms={:.0} p99_ms={:.0} max_ms={:.0}",
        took.len(),
        ms(took[took.len() / 2]),
        ms(p99),
        ms(took[took.len() - 1])
    );
    echo.kill();
}

fn outage(length: Duration, rate: u32) {
    let relay = Relay::start_with(&[], &[("RUST_LOG", "warn")]);
    let forwarder = Forwarder::start(relay.addr);
    let via = forwarder.addr.port().to_string();
    let mut echo = Proc::spawn_with("echoserver", &["127.0.0.1", &via], &[("RUST_LOG", "warn")]);
    let public = echo.first_line();
    until_echoes(&public);
    forwarder.pause();
    forwarder.cut_all();
    let started = Instant::now();
    let mut visitors = Vec::new();
    let gap = Duration::from_secs(1) / rate;
    while started.elapsed() < length {
        let public = public.clone();
        let i = visitors.len();
        visitors.push(std::thread::spawn(move || {
            let data = format!("visitor {i}");
            exchange(&public, data.as_bytes()).is_ok_and(|b| b == data.as_bytes())
        }));
        std::thread::sleep(gap);
    }
    forwarder.resume();
    let total = visitors.len();
    let served = visitors
        .into_iter()
        .map(|v| v.join())
        .filter(|v| matches!(v, Ok(true)))
        .count();
    println!(
        "outage seconds={:.1} visitors={total} served={served} refused_or_cut={}",
        length.as_secs_f64(),
        total - served
    );
    echo.kill();
}

/// The relay's resident memory (KiB) and open descriptors.
fn footprint(relay: &Relay) -> (u64, usize) {
    let pid = relay.proc.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

fn storms(clients: usize, storms: usize) {
    let relay = Relay::start_with(&[], &[("RUST_LOG", "warn")]);
    let forwarder = Forwarder::start(relay.addr);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = TunnelConfig {
        reconnect: Reconnect {
            enabled: true,
            initial: Duration::from_millis(20),
            max: Duration::from_millis(500),
        },
        ..TunnelConfig::default()
    };
    let via: SocketAddr = forwarder.addr;
    let listeners: Vec<TunnelListener> = runtime.block_on(async {
        let mut all = Vec::with_capacity(clients);
        for _ in 0..clients {
            let l = TunnelListener::connect(&via.to_string(), config.clone()).await;
            all.push(l.expect("tunnel"));
        }
        all
    });
    let ports: Vec<u16> = listeners.iter().map(|l| l.public_addr().port).collect();
    let storm = |n: usize| {
        forwarder.cut_all();
        let started = Instant::now();
        while forwarder.connections() < (clients * (n + 1)) as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "clients did not return"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let cold = footprint(&relay);
    storm(1);
    let before = footprint(&relay);
    let started = Instant::now();
    for n in 2..=storms + 1 {
        storm(n);
    }
    let took = started.elapsed();
    // Let the last sessions' ends settle.
    std::thread::sleep(Duration::from_secs(1));
    let after = footprint(&relay);
    let kept = listeners
        .iter()
        .zip(&ports)
        .filter(|(l, p)| l.public_addr().port == **p)
        .count();
    println!(
        "storms clients={clients} reconnects={} seconds={:.1} same_port={kept}/{clients} \
         relay_rss_kib cold={} before={} after={} relay_fds before={} after={}",
        clients * storms,
        took.as_secs_f64(),
        cold.0,
        before.0,
        after.0,
        before.1,
        after.1
    );
    drop(listeners);
}
