//! Tunnels that stay up: clients come back by themselves after a relay restart or a cut
//! connection, with the same public port, and visitors who arrive in the gap are served.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use relay_test_support::{DEADLINE, Forwarder, Proc, Relay, exchange, free_port};

/// Polls `exchange` until the tunnel echoes `data` back, within the deadline.
fn until_echoes(public: &str, data: &[u8]) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(back) = exchange(public, data) {
            if back == data {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{public} did not echo again within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A local echo server for `expose`, on a thread per connection.
fn local_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn clients_come_back_with_the_same_port_after_the_relay_is_killed_and_restarted() {
    let control = format!("127.0.0.1:{}", free_port());
    let relay = Relay::start_at(&control, &[], &[]);
    let port = relay.port().to_string();
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &port]);
    let echo_public = echo.first_line();
    let local = local_echo().to_string();
    let mut expose = Proc::spawn("expose", &["127.0.0.1", &port, &local]);
    let expose_public = expose.first_line();
    until_echoes(&echo_public, b"before");
    until_echoes(&expose_public, b"before");

    drop(relay); // kill -9: no goodbye, no drain, nothing stored
    let _relay = Relay::start_at(&control, &[], &[]);
    let took = until_echoes(&echo_public, b"after");
    until_echoes(&expose_public, b"after");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Same address, so nothing new on stdout; the reconnects are on stderr.
    for client in [&mut echo, &mut expose] {
        client.wait_stderr("reconnected to the relay", DEADLINE);
        client.kill();
        assert_eq!(client.rest_of_stdout(DEADLINE), "", "a second address line");
    }
}

#[test]
fn a_cut_connection_is_reclaimed_through_the_lease_and_waiting_visitors_are_served() {
    let relay = Relay::start(&[]);
    let forwarder = Forwarder::start(relay.addr);
    let via = forwarder.addr.port().to_string();
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &via]);
    let public = echo.first_line();
    until_echoes(&public, b"first");

    // The connection dies underneath both ends, and the way back stays closed for a while.
    forwarder.pause();
    forwarder.cut_all();
    relay.proc.wait_stderr("leased=true", DEADLINE);
    // A visitor arrives in the gap: the public port still takes it, and holds its bytes.
    let mut visitor = TcpStream::connect(&public).expect("the leased port accepts");
    visitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    visitor.write_all(b"sent during the outage").expect("write");
    visitor.shutdown(Shutdown::Write).expect("half-close");
    // Another client asking for that very port meanwhile gets a different one.
    let leased_port = public.rsplit(':').next().expect("port").to_string();
    let port = relay.port().to_string();
    let mut other = Proc::spawn("echoserver", &["--port", &leased_port, "127.0.0.1", &port]);
    let other_public = other.first_line();
    assert_ne!(other_public, public, "a leased port went to someone else");

    forwarder.resume();
    let mut back = Vec::new();
    visitor
        .read_to_end(&mut back)
        .expect("echo after the reconnect");
    assert_eq!(back, b"sent during the outage");
    relay.proc.wait_stderr("leased port reclaimed", DEADLINE);
    until_echoes(&public, b"and after");
    echo.kill();
    assert_eq!(echo.rest_of_stdout(DEADLINE), "", "the address changed");
}

#[test]
fn an_expired_lease_resets_its_waiting_visitors_and_frees_the_port() {
    let relay = Relay::start(&["--lease-ttl", "1s"]);
    let port = relay.port().to_string();
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &port]);
    let public = echo.first_line();
    until_echoes(&public, b"x");
    echo.kill();
    relay.proc.wait_stderr("leased=true", DEADLINE);
    let mut waiting = TcpStream::connect(&public).expect("the leased port accepts");
    waiting.set_read_timeout(Some(DEADLINE)).expect("timeout");
    waiting.write_all(b"anyone?").expect("write");
    let started = Instant::now();
    let end = waiting.read(&mut [0u8; 16]);
    assert!(
        matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset when the lease expired, got {end:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    relay.proc.wait_stderr("lease expired", DEADLINE);
    // Free again: a client asking for it gets it.
    let leased_port = public.rsplit(':').next().expect("port").to_string();
    let mut again = Proc::spawn("echoserver", &["--port", &leased_port, "127.0.0.1", &port]);
    assert_eq!(again.first_line(), public);
}

#[test]
fn no_reconnect_exits_one_soon_after_the_loss() {
    let relay = Relay::start(&[]);
    let port = relay.port().to_string();
    let mut echo = Proc::spawn("echoserver", &["--no-reconnect", "127.0.0.1", &port]);
    echo.first_line();
    drop(relay);
    let killed = Instant::now();
    let status = echo.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", echo.stderr());
    assert!(killed.elapsed() < Duration::from_secs(5));
    let last = echo.stderr().lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("echoserver: "), "{last}");
}

#[test]
fn a_first_connection_that_fails_is_not_retried() {
    let mut echo = Proc::spawn("echoserver", &["127.0.0.1", &free_port().to_string()]);
    let status = echo.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1));
    assert!(
        echo.stderr().contains("cannot reach the relay"),
        "{}",
        echo.stderr()
    );
}

#[test]
fn three_locals_share_one_connection_and_each_port_reaches_its_own_server() {
    let relay = Relay::start(&[]);
    let port = relay.port().to_string();
    // Three servers that each answer with their own name.
    let names = ["alpha", "beta", "gamma"];
    let locals: Vec<String> = names
        .iter()
        .map(|name| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let local = listener.local_addr().expect("addr").port().to_string();
            let name = name.to_string();
            std::thread::spawn(move || {
                for mut conn in listener.incoming().flatten() {
                    let _ = conn.write_all(name.as_bytes());
                }
            });
            local
        })
        .collect();
    let mut args = vec!["127.0.0.1", port.as_str()];
    args.extend(locals.iter().map(String::as_str));
    let mut expose = Proc::spawn("expose", &args);
    let publics = expose.stdout_lines(3, DEADLINE);
    let publics: Vec<&str> = publics.lines().collect();
    assert_eq!(publics.len(), 3, "{publics:?}");
    for (public, name) in publics.iter().zip(names) {
        let mut s = TcpStream::connect(public).expect("visitor");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut got = vec![0u8; name.len()];
        s.read_exact(&mut got).expect("greeting");
        assert_eq!(got, name.as_bytes(), "{public}");
    }
    let log = relay.proc.stderr();
    assert_eq!(log.matches("session opened").count(), 1, "{log}");
}

/// The relay's resident memory (KiB) and open descriptors, from /proc.
fn relay_footprint(relay: &Relay) -> (u64, usize) {
    let pid = relay.proc.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    (rss, fds)
}

#[test]
fn a_reconnect_storm_leaves_the_relay_as_it_was() {
    const CLIENTS: usize = 50;
    const STORMS: u64 = 4;
    let relay = Relay::start(&[]);
    let forwarder = Forwarder::start(relay.addr);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = relay_core::TunnelConfig {
        reconnect: relay_core::client::Reconnect {
            enabled: true,
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        ..relay_core::TunnelConfig::default()
    };
    let via = forwarder.addr.to_string();
    let listeners: Vec<_> = runtime.block_on(async {
        let mut all = Vec::new();
        for _ in 0..CLIENTS {
            let l = relay_core::TunnelListener::connect(&via, config.clone()).await;
            all.push(l.expect("tunnel"));
        }
        all
    });
    let ports: Vec<u16> = listeners.iter().map(|l| l.public_addr().port).collect();
    // Every storm cuts every session at once; all come back through their leases.
    let storm = |n: u64| {
        forwarder.cut_all();
        let started = Instant::now();
        while forwarder.connections() < CLIENTS as u64 * (n + 1) {
            assert!(
                started.elapsed() < DEADLINE,
                "only {} reconnects",
                forwarder.connections()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The new sessions are whole once the relay has taken every leased port back.
        while (relay.proc.stderr().matches("leased port reclaimed").count() as u64)
            < CLIENTS as u64 * n
        {
            assert!(started.elapsed() < DEADLINE, "not every port was reclaimed");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    storm(1); // warm-up: allocator pools, lease tables at their working size
    let before = relay_footprint(&relay);
    for n in 2..=STORMS {
        storm(n);
    }
    let settled = Instant::now();
    let after = loop {
        let now = relay_footprint(&relay);
        if now.1 <= before.1 || settled.elapsed() > Duration::from_secs(5) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let same_ports: Vec<u16> = listeners.iter().map(|l| l.public_addr().port).collect();
    assert_eq!(same_ports, ports, "a client lost its port in the storm");
    assert!(
        after.1 <= before.1,
        "descriptors {} -> {}",
        before.1,
        after.1
    );
    assert!(
        after.0 <= before.0 + 4096,
        "relay RSS grew from {} KiB to {} KiB over {} reconnects",
        before.0,
        after.0,
        CLIENTS as u64 * (STORMS - 1)
    );
    drop(listeners);
}
