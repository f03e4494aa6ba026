//! `relay [ADDR]`: the relay daemon.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use relay_bin::{init_logging, one_line, parse_duration, parse_port_range, shutdown_on_signal};
use relay_core::net::{bind_all_interfaces, bind_listener, parse_port, split_host_port};
use relay_core::server::{self, RelayConfig, RelayServer};
use tokio::net::TcpListener;

relay_bin::use_mimalloc!();

/// Relay daemon: gives clients behind NAT a public port, and pairs file transfers.
///
/// Clients (echoserver, expose, send, receive, or a program using relay-core) dial the control
/// port; each tunnel gets a public port from the range, and every visitor there reaches its
/// client over the client's one connection.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    /// Control port to listen on: PORT or :PORT (all interfaces), HOST:PORT, or [V6]:PORT.
    #[arg(env = "RELAY_ADDR", default_value = "8080")]
    addr: String,

    /// Public ports to hand out, LOW-HIGH [default: the 1000 ports above the control port].
    #[arg(long, env = "RELAY_PORTS", value_parser = parse_port_range)]
    ports: Option<RangeInclusive<u16>>,

    /// Host name advertised to clients [default: none; each client shows the host it dialed].
    #[arg(long, env = "RELAY_PUBLIC_HOST")]
    public_host: Option<String>,

    /// Tunnel sessions open at once.
    #[arg(long, env = "RELAY_MAX_SESSIONS", default_value_t = server::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,

    /// Visitors connected at once to one tunnel (at most 16000).
    #[arg(long, env = "RELAY_MAX_VISITORS", default_value_t = server::DEFAULT_MAX_VISITORS_PER_TUNNEL)]
    max_visitors: u32,

    /// File transfers (waiting plus running) at once.
    #[arg(long, env = "RELAY_MAX_TRANSFERS", default_value_t = server::DEFAULT_MAX_TRANSFERS)]
    max_transfers: usize,

    /// Connections still in their handshake at once.
    #[arg(long, env = "RELAY_MAX_HANDSHAKES", default_value_t = server::DEFAULT_MAX_HANDSHAKES)]
    max_handshakes: usize,

    /// Deadline for a new connection's handshake.
    #[arg(long, env = "RELAY_HANDSHAKE_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    handshake_timeout: Duration,

    /// Largest control frame accepted, in bytes (64-16384).
    #[arg(long, env = "RELAY_MAX_FRAME", default_value_t = relay_core::protocol::DEFAULT_MAX_FRAME_LEN)]
    max_frame: usize,

    /// Heartbeat interval clients must keep; three silent intervals end a session.
    #[arg(long, env = "RELAY_HEARTBEAT", value_parser = parse_duration, default_value = "10s")]
    heartbeat: Duration,

    /// How long a file offer may wait for its receiver.
    #[arg(long, env = "RELAY_OFFER_TTL", value_parser = parse_duration, default_value = "24h")]
    offer_ttl: Duration,

    /// Threads in all, each serving whole sessions; the first also accepts connections
    /// (0: one per CPU).
    #[arg(long, env = "RELAY_THREADS", default_value_t = 0)]
    threads: usize,

    /// On SIGINT/SIGTERM, how long to let sessions and transfers finish.
    #[arg(long, env = "RELAY_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    drain_timeout: Duration,

    /// How long the ports of a client whose connection was lost stay reserved for it (0: freed
    /// at once).
    #[arg(long, env = "RELAY_LEASE_TTL", value_parser = parse_duration, default_value = "30s")]
    lease_ttl: Duration,

    /// Secret every client must prove it holds (at least 16 characters) [default: none, the
    /// relay is open to anyone].
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true, value_parser = relay_bin::parse_token)]
    token: Option<relay_core::auth::Token>,

    #[command(flatten)]
    tls: relay_bin::tls::ServerTlsArgs,

    /// TOML file of named tokens, each with an optional scope (ports, max_tunnels,
    /// max_visitors, transfers); SIGHUP re-reads it.
    #[arg(long, env = "RELAY_TOKENS", conflicts_with = "token")]
    tokens: Option<std::path::PathBuf>,

    /// Connections from one address (IPv6: one /64) in their handshake at once [default:
    /// max(1, min(H/4, max(8, H/16))) of --max-handshakes H].
    #[arg(long, env = "RELAY_MAX_HANDSHAKES_PER_ADDR")]
    max_handshakes_per_addr: Option<usize>,

    /// Tunnel sessions from one address at once [default: max(1, min(S/4, max(32, S/16))) of
    /// --max-sessions S].
    #[arg(long, env = "RELAY_MAX_SESSIONS_PER_ADDR")]
    max_sessions_per_addr: Option<usize>,

    /// Public ports one address may hold, leased ones included [default: max(1, min(P/4,
    /// max(32, P/16))) of the P ports in --ports].
    #[arg(long, env = "RELAY_MAX_PORTS_PER_ADDR")]
    max_ports_per_addr: Option<usize>,

    /// File offers from one address at once [default: max(1, min(T/4, max(32, T/16))) of
    /// --max-transfers T].
    #[arg(long, env = "RELAY_MAX_OFFERS_PER_ADDR")]
    max_offers_per_addr: Option<usize>,

    /// Wrong transfer codes one address may try per minute; successful claims never count.
    #[arg(long, env = "RELAY_MAX_FAILED_CLAIMS", default_value_t = server::DEFAULT_MAX_FAILED_CLAIMS)]
    max_failed_claims: u32,

    /// Visitors open at once across all tunnels; further visitors are reset [default: as many
    /// as fit, each at its worst-case kernel socket memory, in 3/4 of the kernel's TCP
    /// memory-pressure threshold (tcp_mem); logged at start].
    #[arg(long, env = "RELAY_MAX_OPEN_VISITORS")]
    max_open_visitors: Option<usize>,

    /// Visitors open at once for the tunnels of one client address (IPv6: one /64) [default: a
    /// quarter of --max-open-visitors].
    #[arg(long, env = "RELAY_MAX_OPEN_VISITORS_PER_ADDR")]
    max_open_visitors_per_addr: Option<usize>,
    /// Load balancer address or network (CIDR) whose connections, on the control port and on
    /// public ports, must start with a PROXY header (v1 or v2) naming the real client; from
    /// any other address no header is honoured. Repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "RELAY_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<server::TrustedNet>,

    /// This relay's id among several (0-999): the nameplates it issues end in it, so any relay
    /// can send a receiver to the one holding its offer (see docs/scaling.md).
    #[arg(long, env = "RELAY_ID", value_name = "ID", value_parser = clap::value_parser!(u32).range(0..=i64::from(server::MAX_RELAY_ID)))]
    relay_id: Option<u32>,

    /// Another relay of the cluster, as ID=HOST:PORT (its direct control address, as clients
    /// dial it); receivers of its codes are redirected there. Give every relay all the others.
    #[arg(long = "peer", env = "RELAY_PEERS", value_name = "ID=HOST:PORT", value_delimiter = ',', value_parser = server::parse_peer, requires = "relay_id")]
    peers: Vec<(u32, String)>,
    /// SO_SNDBUF of each public visitor socket: bytes (256KiB, 4MiB) or auto (kernel
    /// auto-tuning). A fixed size caps one visitor's download at about this much per round
    /// trip (256KiB: 20 Mbit/s at 100 ms); what a visitor that stops reading pins is bounded
    /// either way (the unsent queue is kept short).
    #[arg(long, env = "RELAY_VISITOR_SEND_BUFFER", value_name = "SIZE", value_parser = relay_bin::parse_buffer_size,
          default_value = "auto")]
    visitor_send_buffer: relay_bin::BufferSize,

    /// SO_RCVBUF of each public visitor socket: bytes or auto. One visitor uploads at most
    /// about this much per round trip; a stalled client lets each visitor park twice this
    /// (auto: what the kernel grew it to, at most net.ipv4.tcp_rmem's maximum).
    #[arg(long, env = "RELAY_VISITOR_RECV_BUFFER", value_name = "SIZE", value_parser = relay_bin::parse_buffer_size,
          default_value = "auto")]
    visitor_recv_buffer: relay_bin::BufferSize,

    /// Visitor (and tunnel session) sockets at once whose auto-tuned send buffer may grow past
    /// net.ipv4.tcp_wmem's maximum (to twice net.core.wmem_max) once they fill it, so downloads
    /// over long, fast paths keep the path full; 0: never. Only with --visitor-send-buffer auto.
    #[arg(long, env = "RELAY_WIDE_VISITORS", value_name = "N", default_value_t = server::WIDE_VISITORS)]
    wide_visitors: usize,

    /// How long bytes sent to a visitor may stay unacknowledged, or wait behind its closed
    /// window, before the relay's kernel cuts the connection (TCP_USER_TIMEOUT): bounds what a
    /// visitor that stops acknowledging pins, and reaps visitors whose host is gone. 0: off
    /// (the kernel's retransmission limits, about 15 minutes).
    #[arg(long, env = "RELAY_VISITOR_STALL_TIMEOUT", value_name = "DURATION", value_parser = parse_duration,
          default_value = "2m")]
    visitor_stall_timeout: Duration,

    /// Serve Prometheus metrics at /metrics and a health check at /healthz (200 while
    /// accepting, 503 while draining) on PORT, HOST:PORT or [V6]:PORT [default: off].
    #[arg(long, env = "RELAY_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging("info");
    relay_bin::purge::start_purging();
    // The main thread runs a single-threaded runtime that is also worker 0 (see `Workers`), so
    // `--threads N` means N threads in all; a separate pool just for accepting and signals
    // would sit idle beside the workers.
    relay_bin::run("relay", 1, async {
        run(args).await.map_err(|e| one_line(&e))
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = bind_control(&args.addr).await?;
    // A generated certificate names the advertised host, so a CA-less client could check
    // the name too; clients of a self-signed relay pin the fingerprint anyway.
    let names: Vec<String> = args.public_host.iter().cloned().collect();
    let tls = args.tls.load(&names)?;
    let access = match (&args.tokens, &args.token) {
        (Some(path), _) => relay_bin::tokens::load(path)?,
        (None, Some(token)) => server::Access::single(token.clone()),
        (None, None) => server::Access::open(),
    };
    let open = access.is_open();
    let cluster = args
        .relay_id
        .map(|id| server::Cluster::new(id, args.peers.clone()))
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("invalid --relay-id/--peer")?;
    let config = RelayConfig {
        public_ports: args.ports,
        public_host: args.public_host,
        max_sessions: args.max_sessions,
        max_visitors_per_tunnel: args.max_visitors,
        max_handshakes: args.max_handshakes,
        handshake_timeout: args.handshake_timeout,
        max_frame_len: args.max_frame,
        heartbeat_interval: args.heartbeat,
        max_transfers: args.max_transfers,
        offer_ttl: args.offer_ttl,
        drain_timeout: args.drain_timeout,
        lease_ttl: args.lease_ttl,
        access,
        tls: tls.clone(),
        require_tls: args.tls.require_tls,
        per_addr: server::PerAddrLimits {
            handshakes: args.max_handshakes_per_addr,
            sessions: args.max_sessions_per_addr,
            ports: args.max_ports_per_addr,
            offers: args.max_offers_per_addr,
        },
        max_failed_claims: args.max_failed_claims,
        max_open_visitors: args.max_open_visitors,
        max_open_visitors_per_addr: args.max_open_visitors_per_addr,
        trusted_proxies: args.trusted_proxies.clone(),
        cluster,
        visitor_send_buffer: args.visitor_send_buffer.0,
        visitor_recv_buffer: args.visitor_recv_buffer.0,
        wide_visitors: args.wide_visitors,
        visitor_stall_timeout: Some(args.visitor_stall_timeout).filter(|t| !t.is_zero()),
    };
    let workers = Workers::start(args.threads).context("cannot start worker threads")?;
    // Its errors name the setting already ("invalid setting: ...").
    let relay = RelayServer::new(listener, config)?.with_workers(workers.handles());
    let control = relay.local_addr()?;
    let ports = relay.public_ports();
    let fd_limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    tracing::info!(
        control = %control,
        public_ports = %format_args!("{}-{}", ports.start(), ports.end()),
        fd_limit,
        relay.id = args.relay_id,
        trusted_proxies = args.trusted_proxies.len(),
        "relay listening"
    );
    if let Some(tls) = &tls {
        tracing::info!(
            fingerprint = %tls.fingerprint(),
            self_signed = args.tls.tls_self_signed,
            require_tls = args.tls.require_tls,
            "TLS on the control port; clients may pin the certificate with --tls-fingerprint {}",
            tls.fingerprint()
        );
    }
    if open && !control.ip().is_loopback() {
        tracing::warn!(
            "no token set: anyone who can reach this relay may open tunnels on it; \
             set --token or RELAY_TOKEN before exposing it to the internet"
        );
    }
    if fd_limit < 4096 {
        tracing::warn!(
            fd_limit,
            "the open-file limit caps visitors and sessions at about this many; raise it with `ulimit -n`"
        );
    }
    if let Some(path) = args.tokens.clone() {
        relay_bin::tokens::reload_on_hangup(path, relay.access_handle())
            .context("cannot watch for SIGHUP")?;
    }
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = &args.metrics {
        let listener = bind_control(addr).await.context("cannot serve --metrics")?;
        tracing::info!(metrics = %listener.local_addr()?, "metrics listening");
        let serving =
            relay_bin::metrics_http::serve(listener, relay.metrics(), stop_metrics.clone());
        tokio::spawn(serving);
    }
    let shutdown = shutdown_on_signal();
    // The metrics keep being served through the drain: `/healthz` answers 503 meanwhile.
    let _stop_metrics = stop_metrics.drop_guard();
    relay.run(shutdown).await?;
    drop(workers);
    tracing::info!("relay stopped");
    Ok(())
}

/// One single-threaded runtime per worker thread; the relay hands each new connection to the
/// next one, so a session and all its visitors live on one thread. Worker 0 is the runtime this
/// is started on (the main thread's), the others get threads of their own.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Workers {
    /// `count` workers in all (one per CPU for 0), the calling runtime being the first.
    fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let mut workers = Workers {
            handles: vec![tokio::runtime::Handle::current()],
            threads: Vec::new(),
            stop,
        };
        for i in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("relay-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.handles.clone()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Binds the control port from `PORT`, `:PORT`, `HOST:PORT` or `[V6]:PORT`.
async fn bind_control(addr: &str) -> anyhow::Result<TcpListener> {
    let port_only = addr.strip_prefix(':').unwrap_or(addr);
    if port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port = parse_control_port(port_only)?;
        return bind_all_interfaces(port)
            .with_context(|| format!("cannot listen on port {port} (all interfaces)"));
    }
    let (host, port) = split_host_port(addr).map_err(anyhow::Error::msg)?;
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve '{host}'"))?
        .collect();
    let mut last_error = None;
    for candidate in &candidates {
        match bind_listener(*candidate) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
        None => bail!("'{host}' resolves to no address"),
    }
}

fn parse_control_port(s: &str) -> anyhow::Result<u16> {
    // Port 0 lets the system choose (useful for tests); `relay_core` refuses it for clients.
    if s == "0" {
        return Ok(0);
    }
    parse_port(s).map_err(anyhow::Error::msg)
}
