//! In-process set-ups the criterion benches measure, each on real loopback TCP:
//!
//! * [`TcpServer`]: a plain listener serving a [`Service`] (the baseline);
//! * [`TunnelServer`]: a [`RelayServer`] plus a [`TunnelListener`] serving the same
//!   [`Service`] to visitors of the tunnel's public port (visitor -> relay -> session -> service);
//! * [`MuxPair`]: two yamux ends over one TCP connection, the acceptor opening substreams the
//!   way the relay does, and the dialer serving them the way a tunnel client does.
//!
//! Each returns a guard; dropping it stops every task the set-up spawned.

use std::io;
use std::net::SocketAddr;

use relay_core::mux::Substream as TunnelStream;
use relay_core::mux::{self, MuxHandle, Role};
use relay_core::net::bind_listener;
use relay_core::{RelayConfig, RelayServer, TunnelConfig, TunnelListener};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::service;

/// What a bench server does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// [`service::serve`]: bulk upload and download on request.
    Bench,
    /// [`service::echo`].
    Echo,
    /// [`service::serve_http`].
    Http,
}

impl Service {
    /// Serves one connection. Errors end that connection only; benches see them as a failed
    /// step on the client side, which is where they are reported.
    pub async fn run<S>(self, s: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _ = match self {
            Service::Bench => service::serve(s).await,
            Service::Echo => service::echo(s).await.map(drop),
            Service::Http => service::serve_http(s).await,
        };
    }
}

/// The loopback address benches bind: port 0, so runs never collide.
pub fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A plain TCP server on loopback: the baseline every relayed figure is compared with.
#[derive(Debug)]
pub struct TcpServer {
    /// Where clients connect.
    pub addr: SocketAddr,
    _stop: DropGuard,
}

impl TcpServer {
    /// Binds `127.0.0.1:0` with the relay's own listen backlog and serves `service`.
    pub async fn start(service: Service) -> io::Result<TcpServer> {
        let listener = bind_listener(loopback_any())?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, service, stop.clone()));
        Ok(TcpServer {
            addr,
            _stop: stop.drop_guard(),
        })
    }
}

/// Accepts on `listener` until `stop`, serving each connection in its own task.
pub async fn accept_loop(listener: TcpListener, service: Service, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((sock, _)) => {
                // The relay sets no-delay on its data sockets; the baseline must too.
                let _ = sock.set_nodelay(true);
                tokio::spawn(service.run(sock));
            }
            // Out of descriptors: give the other tasks a moment to release some.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// A relay and one tunnel client in this process, the client serving a [`Service`].
#[derive(Debug)]
pub struct TunnelServer {
    /// The tunnel's public address: where visitors connect.
    pub public: SocketAddr,
    /// The relay's control address.
    pub control: SocketAddr,
    _stop: DropGuard,
}

impl TunnelServer {
    /// Starts a relay with default settings on `127.0.0.1:0` and a tunnel client on it.
    pub async fn start(service: Service) -> io::Result<TunnelServer> {
        let stop = CancellationToken::new();
        let control_listener = bind_listener(loopback_any())?;
        let control = control_listener.local_addr()?;
        let relay =
            RelayServer::new(control_listener, RelayConfig::default()).map_err(io::Error::other)?;
        tokio::spawn(relay.run(stop.child_token()));

        let tunnel = TunnelListener::connect(&control.to_string(), TunnelConfig::default())
            .await
            .map_err(io::Error::other)?;
        let public = SocketAddr::from(([127, 0, 0, 1], tunnel.public_addr().port));
        tokio::spawn(serve_tunnel(tunnel, service, stop.clone()));
        Ok(TunnelServer {
            public,
            control,
            _stop: stop.drop_guard(),
        })
    }
}

async fn serve_tunnel(tunnel: TunnelListener, service: Service, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = tunnel.accept() => a,
        };
        match accepted {
            Ok((stream, _visitor)) => {
                tokio::spawn(service.run(stream));
            }
            Err(_) => return,
        }
    }
}

/// Two yamux ends over one loopback TCP connection, configured exactly as the relay configures
/// them. The acceptor opens substreams (as the relay does for visitors); the dialer serves each
/// with [`Service::Bench`] (as a tunnel client serves a visitor).
#[derive(Debug)]
pub struct MuxPair {
    /// Opens substreams on the acceptor (relay) end.
    pub opener: MuxHandle,
    _stop: DropGuard,
}

impl MuxPair {
    /// Connects the pair and starts both drivers.
    pub async fn start() -> io::Result<MuxPair> {
        let listener = TcpListener::bind(loopback_any()).await?;
        let addr = listener.local_addr()?;
        let (dialed, accepted) = tokio::try_join!(TcpStream::connect(addr), async {
            listener.accept().await.map(|(s, _)| s)
        })?;
        // Same socket options as a real session (relay_core::net::tune_session_socket).
        dialed.set_nodelay(true)?;
        accepted.set_nodelay(true)?;
        let stop = CancellationToken::new();
        let dialer = mux::start(dialed, &[], Role::Dialer, 1024, stop.child_token());
        let acceptor = mux::start(accepted, &[], Role::Acceptor, 1024, stop.child_token());
        tokio::spawn(dialer.driver);
        tokio::spawn(acceptor.driver);
        let mut inbound = dialer.inbound;
        let serve_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = serve_stop.cancelled() => return,
                    s = inbound.recv() => s,
                };
                let Some(stream) = stream else { return };
                tokio::spawn(Service::Bench.run(stream));
            }
        });
        // The acceptor's own inbound streams are never used; keep the receiver alive so the
        // driver does not see a closed channel.
        let acceptor_inbound = acceptor.inbound;
        let hold_stop = stop.clone();
        tokio::spawn(async move {
            hold_stop.cancelled().await;
            drop(acceptor_inbound);
        });
        Ok(MuxPair {
            opener: acceptor.handle,
            _stop: stop.drop_guard(),
        })
    }

    /// Opens `n` substreams. Each is announced to the peer by its first request.
    pub async fn open(&self, n: usize) -> io::Result<Vec<TunnelStream>> {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            streams.push(self.opener.open().await?);
        }
        Ok(streams)
    }
}

/// Opens `n` no-delay TCP connections to `addr`.
pub async fn connect_n(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    Ok(conns)
}

/// Which way a bulk bench moves bytes, seen from the connecting (visitor) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Visitor to service.
    Upload,
    /// Service to visitor.
    Download,
}

impl Direction {
    /// Short name for bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "up",
            Direction::Download => "down",
        }
    }
}

/// Moves `per_lane` bytes over every connection in `lanes` at once, each in its own task, and
/// returns when all are done. The connections come back in `lanes` for the next iteration.
pub async fn run_lanes<S>(lanes: &mut Vec<S>, per_lane: u64, dir: Direction) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tasks: Vec<_> = lanes
        .drain(..)
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = vec![0xa5_u8; service::IO_CHUNK];
                let r = match dir {
                    Direction::Upload => service::upload(&mut s, per_lane, &buf).await,
                    Direction::Download => service::download(&mut s, per_lane, &mut buf).await,
                };
                (s, r)
            })
        })
        .collect();
    let mut first_err = None;
    for t in tasks {
        let (s, r) = t.await.map_err(io::Error::other)?;
        lanes.push(s);
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Runs `iters` rounds of [`run_lanes`] and returns the total time, for criterion's
/// `iter_custom`. Each round has [`crate::STEP_TIMEOUT`]; a stall fails the bench.
pub async fn time_lanes<S>(
    iters: u64,
    lanes: &mut Vec<S>,
    per_lane: u64,
    dir: Direction,
) -> std::time::Duration
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = std::time::Instant::now();
    for _ in 0..iters {
        tokio::time::timeout(crate::STEP_TIMEOUT, run_lanes(lanes, per_lane, dir))
            .await
            .expect("a bench round stalled")
            .expect("a bench transfer failed");
    }
    start.elapsed()
}

/// Connects to an echo server at `addr`, sends one byte and reads it back: a visitor's
/// connect-to-first-byte. Returns the open connection so closing it is not timed.
pub async fn connect_first_byte(addr: SocketAddr) -> io::Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(s)
}

/// One round trip of `buf.len()` bytes on an echo connection.
pub async fn round_trip<S>(s: &mut S, buf: &mut [u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(buf).await?;
    s.read_exact(buf).await?;
    Ok(())
}
