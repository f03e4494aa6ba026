//! A visitor that vanishes with bytes in flight to it: the relay's kernel gives up on it after
//! the stall timeout (`TCP_USER_TIMEOUT`), not after the ~15 minutes of retransmissions it
//! would otherwise take, so the bytes it pinned and its stream come back.
//!
//! Vanishing takes a link that can go down under a live connection, so the visitor lives in a
//! network namespace this test creates (joined to the host by a veth pair) and the relay
//! listens on the host's end. That needs root and `ip`; without them that test is skipped.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use relay_core::client::{Reconnect, TunnelConfig, TunnelListener};
use relay_core::server::{RelayConfig, RelayServer};
use tokio::io::AsyncWriteExt;

/// A namespace joined to the host by a veth pair; both go when it is dropped.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// `None` where namespaces cannot be made (not root, no `ip`).
    fn create() -> Option<Netns> {
        let id = std::process::id();
        // Interface names have at most 15 bytes; the subnet is picked from the process id so
        // that two runs of the suite at once do not collide.
        let net = 1 + id % 250;
        let ns = Netns {
            name: format!("rstall{id}"),
            host_if: format!("rsh{id}"),
            ns_if: format!("rsn{id}"),
            host_ip: Ipv4Addr::new(10, 213, net as u8, 1),
            ns_ip: Ipv4Addr::new(10, 213, net as u8, 2),
        };
        if !ip(&["netns", "add", &ns.name]) {
            return None;
        }
        let host_cidr = format!("{}/24", ns.host_ip);
        let ns_cidr = format!("{}/24", ns.ns_ip);
        let made = ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]) && ip(&["link", "set", &ns.ns_if, "netns", &ns.name])
            && ip(&["addr", "add", &host_cidr, "dev", &ns.host_if])
            && ip(&["link", "set", &ns.host_if, "up"])
            && ns.exec_ok(&["ip", "addr", "add", &ns_cidr, "dev", &ns.ns_if])
            && ns.exec_ok(&["ip", "link", "set", &ns.ns_if, "up"])
            && ns.exec_ok(&["ip", "link", "set", "lo", "up"])
            && ns.reaches_host();
        // Dropped (and so removed) on failure too.
        made.then_some(ns)
    }

    /// Whether a process in the namespace can connect to the host's end, the way the visitor
    /// below will (a host that makes namespaces but not this is skipped, not failed).
    fn reaches_host(&self) -> bool {
        let Ok(probe) = std::net::TcpListener::bind((self.host_ip, 0)) else {
            return false;
        };
        let Ok(addr) = probe.local_addr() else {
            return false;
        };
        let script = format!("exec 3<>/dev/tcp/{}/{}", self.host_ip, addr.port());
        self.exec_ok(&["timeout", "5", "bash", "-c", &script])
    }

    fn exec_ok(&self, args: &[&str]) -> bool {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Starts `args` inside the namespace.
    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a process in the namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

/// Kills the process it holds when dropped, by its own id.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const OPEN: &str = r#"relay_visitors_open{token="-"}"#;
const STALLS: &str = "relay_visitor_stalls_total";

#[tokio::test]
async fn a_visitor_gone_with_bytes_in_flight_is_cut_after_the_stall_timeout() {
    let Some(ns) = Netns::create() else {
        eprintln!("skipped: cannot create a network namespace here (needs root and `ip`)");
        return;
    };
    let listener = relay_core::net::bind_listener(SocketAddr::new(IpAddr::V4(ns.host_ip), 0))
        .expect("bind the control port on the veth address");
    let config = RelayConfig {
        visitor_stall_timeout: Some(Duration::from_secs(2)),
        ..RelayConfig::default()
    };
    let relay = TestRelay::adopt(RelayServer::new(listener, config).expect("relay"));
    assert_eq!(metric(&relay.metrics, STALLS), Some(0));
    let tunnel_config = TunnelConfig {
        reconnect: Reconnect::never(),
        ..TunnelConfig::default()
    };
    let tunnel = within(
        "tunnel handshake",
        TunnelListener::connect(&relay.control(), tunnel_config),
    )
    .await
    .expect("tunnel");
    let port = tunnel.public_addr().port;

    // The service writes without end; the visitor (bash, reading the socket into /dev/null)
    // takes everything as fast as it comes, so the relay's window to it opens wide.
    let (far_enough, reached) = tokio::sync::oneshot::channel();
    let service = tokio::spawn(async move {
        let (mut stream, _) = tunnel.accept().await.expect("accept");
        let chunk = vec![7u8; 64 * 1024];
        let (mut written, mut far_enough) = (0, Some(far_enough));
        while stream.write_all(&chunk).await.is_ok() {
            written += chunk.len();
            if written >= 64 << 20
                && let Some(tx) = far_enough.take()
            {
                let _ = tx.send(());
            }
        }
        // The relay cut the visitor: the stream ends, and the session is still there.
        drop(tunnel);
    });
    let script = format!(
        "exec 3<>/dev/tcp/{}/{port} && cat <&3 >/dev/null",
        ns.host_ip
    );
    let _visitor = Reaped(ns.spawn(&["bash", "-c", &script]));
    within("64 MiB to the visitor", reached)
        .await
        .expect("the service wrote 64 MiB");
    until_metric(&relay.metrics, OPEN, 1).await;

    // The visitor's side of the link goes down: nothing it was sent is acknowledged any more,
    // and nothing tells the relay so (no reset, no FIN).
    assert!(
        ns.exec_ok(&["ip", "link", "set", &ns.ns_if, "down"]),
        "cannot take the link down"
    );
    within("the service learning that the visitor was cut", service)
        .await
        .expect("service task");
    until_metric(&relay.metrics, OPEN, 0).await;
    until_metric(&relay.metrics, STALLS, 1).await;
}

/// The same timeout covers a visitor that stays connected but takes nothing: once its window
/// has been shut for that long, it is cut, like nginx's `send_timeout` cuts such a client
/// (on loopback: nothing needs to vanish).
#[tokio::test]
async fn a_visitor_that_reads_nothing_for_the_stall_timeout_is_cut() {
    let config = RelayConfig {
        visitor_stall_timeout: Some(Duration::from_secs(2)),
        ..RelayConfig::default()
    };
    let relay = TestRelay::start(config).await;
    let tunnel = relay.tunnel().await;
    let addr = public(&tunnel);
    let service = tokio::spawn(async move {
        let (mut stream, _) = tunnel.accept().await.expect("accept");
        let chunk = vec![7u8; 64 * 1024];
        while stream.write_all(&chunk).await.is_ok() {}
        drop(tunnel);
    });
    let _visitor = within("visitor connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    within("the service learning that the visitor was cut", service)
        .await
        .expect("service task");
    until_metric(&relay.metrics, OPEN, 0).await;
    until_metric(&relay.metrics, STALLS, 1).await;
}
