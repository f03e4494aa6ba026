//! Shared helpers for relay-core's integration tests: an in-process relay on 127.0.0.1:0,
//! tunnel clients, and deadlines on every wait.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use relay_core::{RelayConfig, RelayServer, TunnelConfig, TunnelListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A hello asking for one tunnel on any port, as a raw client sends it.
pub fn one_tunnel() -> relay_core::protocol::Hello {
    relay_core::protocol::Hello::Tunnel {
        tunnels: vec![relay_core::protocol::TunnelRequest {
            preferred_port: None,
            lease: None,
        }],
    }
}

/// Every wait in these tests ends here at the latest; hitting it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {DEADLINE:?}"),
    }
}

/// A relay running in this process; stopped when dropped.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<relay_core::Result<()>>>,
}

impl TestRelay {
    pub async fn start(config: RelayConfig) -> TestRelay {
        // As the binary does: the large backlog matters in the bursts these tests make.
        let listener = relay_core::net::bind_listener("127.0.0.1:0".parse().expect("addr"))
            .expect("bind control port");
        let relay = RelayServer::new(listener, config).expect("relay config");
        let addr = relay.local_addr().expect("control address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        TestRelay {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    pub async fn default() -> TestRelay {
        Self::start(RelayConfig::default()).await
    }

    pub fn control(&self) -> String {
        self.addr.to_string()
    }

    /// Opens a tunnel on this relay, one that does not reconnect (so a lost session shows as an
    /// error at once; the reconnect tests configure their own).
    pub async fn tunnel(&self) -> TunnelListener {
        let config = TunnelConfig {
            reconnect: relay_core::client::Reconnect::never(),
            ..TunnelConfig::default()
        };
        within(
            "tunnel handshake",
            TunnelListener::connect(&self.control(), config),
        )
        .await
        .expect("tunnel")
    }

    /// Stops the relay and waits for it to finish draining.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            within("relay shutdown", task)
                .await
                .expect("join")
                .expect("relay run");
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The visitor-facing address of a tunnel, on loopback.
pub fn public(listener: &TunnelListener) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], listener.public_addr().port))
}

/// Serves every visitor of `listener` by echoing; the first `prefix` bytes sent to each
/// visitor identify this client. Returns the serving task, which (like the binaries) keeps the
/// session until its visitors are done once `accept` fails.
pub fn serve_echo(
    listener: TunnelListener,
    prefix: Vec<u8>,
) -> tokio::task::JoinHandle<relay_core::Error> {
    tokio::spawn(async move {
        let visitors = tokio_util::task::TaskTracker::new();
        loop {
            let (stream, _visitor) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Like the binaries: keep the session until the visitors inside are done.
                    visitors.close();
                    visitors.wait().await;
                    return e;
                }
            };
            let prefix = prefix.clone();
            visitors.spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                if w.write_all(&prefix).await.is_err() {
                    return;
                }
                let _ = relay_core::splice::copy_one_way(&mut r, &mut w, &Default::default()).await;
            });
        }
    })
}

/// Connects a visitor, sends `payload`, half-closes, and returns everything read back.
pub async fn visit(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut sock = TcpStream::connect(addr).await?;
    let (mut r, mut w) = sock.split();
    let send = async {
        w.write_all(payload).await?;
        w.shutdown().await
    };
    let mut back = Vec::with_capacity(payload.len());
    let recv = r.read_to_end(&mut back);
    tokio::try_join!(send, recv)?;
    Ok(back)
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Waits until connecting to `addr` is refused (the listener is gone), within [`DEADLINE`].
pub async fn until_refused(addr: SocketAddr) {
    within("public port to close", async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}
