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

/// A hand-made client: connects, sends `hello`, and reads the relay's preface and first
/// reply, each within the deadline. The connection stays framed for what follows.
pub async fn raw_hello(
    addr: SocketAddr,
    hello: &relay_core::protocol::Hello,
) -> (
    relay_core::frame::FramedConn<TcpStream>,
    relay_core::protocol::Reply,
) {
    use relay_core::protocol::{PREFACE, PREFACE_LEN};
    let sock = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut conn = relay_core::frame::FramedConn::new(sock, 4096);
    within("hello", conn.write_preface_and_frame(hello))
        .await
        .expect("hello");
    while conn.buffered().len() < PREFACE_LEN {
        within("preface", conn.fill()).await.expect("preface");
    }
    assert_eq!(conn.buffered()[..PREFACE_LEN], PREFACE);
    conn.consume(PREFACE_LEN);
    let reply = within("reply", conn.read_frame()).await.expect("reply");
    (conn, reply)
}

/// Every wait in these tests ends here at the latest; hitting it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Worker threads of a [`TestRelay`], as `relay --threads 2` would run them.
pub const WORKERS: usize = 2;

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`] of *real* time.
///
/// The deadline is kept by a plain thread, not a tokio timer: under `tokio::time::pause` a
/// tokio timer would be the next thing the idle runtime auto-advances to, so a test whose
/// awaited event never comes would "time out" at once, and one whose event lags in the kernel
/// would time out spuriously. A thread's clock is immune to both.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let (expired_tx, expired) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // Returns early (Disconnected) as soon as `done` is dropped: the wait is over.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(DEADLINE) {
            let _ = expired_tx.send(());
        }
    });
    let out = tokio::select! {
        out = fut => out,
        _ = expired => panic!("{what}: no result within {DEADLINE:?}"),
    };
    drop(done);
    out
}

/// A relay running in this process; stopped when dropped.
///
/// Like the `relay` binary, it serves connections on [`WORKERS`] worker threads, each running
/// a single-threaded runtime, so these tests cover the hand-over of every accepted connection
/// to a worker (`into_std`/`from_std`) and sessions, visitors and offers that live on different
/// threads. [`TestRelay::on_this_runtime`] keeps everything on the test's own runtime instead.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<relay_core::Result<()>>>,
    pub metrics: relay_core::server::RelayMetrics,
    /// Declared last, so it is dropped after the relay's shutdown has been signalled.
    workers: Workers,
}

impl TestRelay {
    /// A relay with [`WORKERS`] worker threads.
    pub async fn start(config: RelayConfig) -> TestRelay {
        Self::with_workers(config, WORKERS)
    }

    /// A relay that runs every connection on the calling runtime. For tests under
    /// `tokio::time::pause`: a worker's runtime has its own clock, which would not be paused.
    pub async fn on_this_runtime(config: RelayConfig) -> TestRelay {
        Self::with_workers(config, 0)
    }

    fn with_workers(config: RelayConfig, workers: usize) -> TestRelay {
        // As the binary does: the large backlog matters in the bursts these tests make.
        let listener = relay_core::net::bind_listener("127.0.0.1:0".parse().expect("addr"))
            .expect("bind control port");
        let workers = Workers::start(workers);
        let relay = RelayServer::new(listener, config)
            .expect("relay config")
            .with_workers(workers.handles.clone());
        let addr = relay.local_addr().expect("control address");
        let metrics = relay.metrics();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        TestRelay {
            addr,
            shutdown,
            task: Some(task),
            metrics,
            workers,
        }
    }

    /// Runs an already built relay (for tests that keep a handle on it) on [`WORKERS`]
    /// worker threads.
    pub fn adopt(relay: RelayServer) -> TestRelay {
        let workers = Workers::start(WORKERS);
        let relay = relay.with_workers(workers.handles.clone());
        let addr = relay.local_addr().expect("control address");
        let metrics = relay.metrics();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        TestRelay {
            addr,
            shutdown,
            task: Some(task),
            metrics,
            workers,
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
        // `workers` drops next: its runtimes end, and with them whatever still runs there.
    }
}

/// One single-threaded runtime per thread, as `relay`'s `Workers` (relay-bin/src/bin/relay.rs)
/// starts them; stopped and joined on drop.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    fn start(count: usize) -> Workers {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("worker runtime");
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("test-relay-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))
                .expect("worker thread");
            threads.push(thread);
        }
        Workers {
            handles,
            threads,
            stop,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            // A panic inside a worker's task is the task's, reported through its JoinHandle;
            // the thread itself only waits for `stop`.
            let _ = thread.join();
        }
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

/// Whether `r` is the error a TCP reset gives.
pub fn is_reset<T>(r: &std::io::Result<T>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// What a visitor saw: the outcome of sending (payload, then a half-close) and of reading to
/// the end, each on its own.
#[derive(Debug)]
pub struct Visit {
    pub sent: std::io::Result<()>,
    pub read: std::io::Result<Vec<u8>>,
}

impl Visit {
    /// Whether the visitor was reset. Linux reports a received reset to exactly one call on the
    /// socket (whichever comes first, write or read) and a clean end to the calls after it, so
    /// both sides of the visit are looked at.
    pub fn was_reset(&self) -> bool {
        is_reset(&self.sent) || is_reset(&self.read)
    }
}

/// Like [`visit`], but keeps the send and receive outcomes apart (see [`Visit::was_reset`]).
pub async fn visit_apart(addr: SocketAddr, payload: &[u8]) -> Visit {
    let mut sock = match TcpStream::connect(addr).await {
        Ok(sock) => sock,
        // The reset can arrive before `connect` has even returned.
        Err(e) => {
            return Visit {
                sent: Err(e),
                read: Ok(Vec::new()),
            };
        }
    };
    let (mut r, mut w) = sock.split();
    let send = async {
        w.write_all(payload).await?;
        w.shutdown().await
    };
    let recv = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.map(|_| back)
    };
    let (sent, read) = tokio::join!(send, recv);
    Visit { sent, read }
}

/// Connects to `addr` from the loopback address `src` (127.0.0.2 is another source address
/// for the relay's per-address limits), within [`DEADLINE`].
pub async fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    within("connect", sock.connect(addr)).await
}

/// Like [`raw_hello`], from source address `src`, answering a token challenge with `token`
/// when the relay sends one. Returns the relay's real reply (not the challenge).
pub async fn raw_hello_from(
    src: std::net::IpAddr,
    addr: SocketAddr,
    hello: &relay_core::protocol::Hello,
    token: Option<&relay_core::auth::Token>,
) -> (
    relay_core::frame::FramedConn<TcpStream>,
    relay_core::protocol::Reply,
) {
    use relay_core::protocol::{PREFACE, PREFACE_LEN, Reply};
    let sock = connect_from(src, addr).await.expect("connect");
    let mut conn = relay_core::frame::FramedConn::new(sock, 4096);
    within("hello", conn.write_preface_and_frame(hello))
        .await
        .expect("hello");
    while conn.buffered().len() < PREFACE_LEN {
        within("preface", conn.fill()).await.expect("preface");
    }
    assert_eq!(conn.buffered()[..PREFACE_LEN], PREFACE);
    conn.consume(PREFACE_LEN);
    let reply = within("reply", conn.read_frame()).await.expect("reply");
    let (Reply::Challenge { nonce }, Some(token)) = (&reply, token) else {
        return (conn, reply);
    };
    let frame = relay_core::codec::encode(hello).expect("encode");
    let body = &frame[relay_core::codec::LEN_PREFIX..];
    let proof = token.prove(nonce, &relay_core::auth::NO_BINDING, body);
    within("proof", conn.write_frame(&proof))
        .await
        .expect("proof");
    let reply = within("reply", conn.read_frame()).await.expect("reply");
    (conn, reply)
}

/// The loopback address every test client uses by default.
pub const HOME: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
/// Another loopback source address: another "address" for the relay's per-address limits.
pub const NEIGHBOUR: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// Per-address shares as large as the relay's totals: for tests that reach a relay-wide limit
/// from one address, where the address's own share must not come first (the shares are tested
/// in `per_addr.rs`).
pub fn all_from_one_address() -> relay_core::server::PerAddrLimits {
    relay_core::server::PerAddrLimits {
        handshakes: Some(usize::MAX),
        sessions: Some(usize::MAX),
        ports: Some(usize::MAX),
        offers: Some(usize::MAX),
    }
}

/// The value of one metrics series (`name{labels}`, exactly as exposed), if it is there.
pub fn metric(metrics: &relay_core::server::RelayMetrics, series: &str) -> Option<u64> {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `series` reads `want`: the relay counts a session just after its welcome, a
/// visitor's bytes just after writing them, and a task's end just after it ended.
pub async fn until_metric(metrics: &relay_core::server::RelayMetrics, series: &str, want: u64) {
    let waited = tokio::time::timeout(DEADLINE, async {
        while metric(metrics, series) != Some(want) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{series} never became {want}:\n{}",
        metrics.encode()
    );
}
