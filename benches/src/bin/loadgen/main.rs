//! `loadgen`: the load generator and bench servers behind `benches/run.sh`.
//!
//! Servers (`serve echo|bench|http`) print their bound `HOST:PORT` as the first stdout line, like
//! `echoserver` and `expose` do. Clients print one line of `key=value` results. Every client is
//! bounded by a count and a deadline, and refuses any address outside loopback.

mod auth;
mod bulk;
mod hold;
mod probe;
mod sessions;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use relay_benches::fixture::{Direction, Service, accept_loop};
use relay_core::net::bind_listener;
use tokio_util::sync::CancellationToken;

/// Load generator and bench servers for relay's whole-system benchmark (loopback only).
#[derive(Debug, Parser)]
#[command(max_term_width = 100)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve echo, bulk (bench protocol) or a minimal HTTP/1.1 responder.
    Serve {
        /// What to serve.
        kind: Kind,
        /// Address to bind (loopback); port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0", value_parser = loopback)]
        addr: SocketAddr,
        /// Exit after this many seconds, whatever happens.
        #[arg(long, default_value_t = 3600)]
        lifetime: u64,
    },
    /// Round trips of SIZE bytes on one connection to an echo server; reports latency.
    Pingpong {
        /// Echo server.
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// Timed round trips.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Untimed round trips first.
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Sequential new connections, each a connect plus a 1-byte echo; reports latency.
    Connect {
        /// Echo server.
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// Timed connections.
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Sustained new connections per second (connect, 1-byte echo, close) for a fixed time.
    Rate {
        /// Echo server.
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// How long to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Connections in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Stop after this many connections even before the time is up.
        #[arg(long, default_value_t = 1_000_000)]
        max_count: u64,
    },
    /// Opens COUNT connections, proves each live with a 1-byte echo, holds them idle until
    /// SIGUSR1/SIGINT/SIGTERM or the hold time, proves them live again, then closes them.
    Hold {
        /// Echo server.
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// Connections to hold.
        #[arg(long)]
        count: usize,
        /// Connections being opened (or checked) at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Longest hold.
        #[arg(long, default_value_t = 120)]
        hold_seconds: u64,
    },
    /// Handshakes with a wrong token at a fixed rate (a token-guessing flood), from SOURCES
    /// loopback addresses (127.1.x.y) in turn; reports how the relay answered.
    Auth {
        /// The relay's control port (one that requires a token).
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// Attempts per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// How long to keep it up.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Source addresses to spread the attempts over.
        #[arg(long, default_value_t = 1000)]
        sources: u32,
        /// Attempts in flight at once.
        #[arg(long, default_value_t = 8000)]
        concurrency: usize,
        /// Stop after this many attempts even before the time is up.
        #[arg(long, default_value_t = 100_000)]
        max_count: u64,
    },
    /// Idle tunnel sessions in rising steps (raw protocol, each with its heartbeat), from
    /// SOURCES loopback addresses (127.3.x.y); SIGUSR1 moves to the next step, then closes all.
    Sessions {
        /// The relay's control port.
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// Sessions open after each step, rising: `1000,5000,10000`.
        #[arg(long, value_parser = sessions::parse_steps)]
        steps: sessions::Steps,
        /// Source addresses to spread the sessions over.
        #[arg(long, default_value_t = 64)]
        sources: u32,
        /// Sessions being opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Longest wait at each step.
        #[arg(long, default_value_t = 300)]
        hold_seconds: u64,
    },
    /// Bulk transfer for a fixed time over PARALLEL connections to a `serve bench` server.
    Bulk {
        /// Bench server.
        #[arg(long, value_parser = loopback)]
        addr: SocketAddr,
        /// How long to send or receive.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Connections at once.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// `up`: client to server; `down`: server to client.
        #[arg(long, default_value = "up")]
        direction: Dir,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Echo,
    Bench,
    Http,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dir {
    Up,
    Down,
}

/// Parses a socket address and insists on loopback: this tool only ever loads this machine.
fn loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("'{s}' is not IP:PORT (names are not resolved)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; loadgen only targets 127.0.0.0/8 and ::1"
        ));
    }
    Ok(addr)
}

/// Seconds from the command line as a `Duration`, refusing what makes no sense.
fn seconds(s: f64) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
        bail!("seconds must be in (0, 3600], got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = relay_benches::runtime();
    rt.block_on(run(args.cmd))
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve {
            kind,
            addr,
            lifetime,
        } => serve(kind, addr, Duration::from_secs(lifetime)).await,
        Cmd::Pingpong {
            addr,
            count,
            warmup,
            size,
        } => probe::pingpong(addr, count, warmup, size).await,
        Cmd::Connect { addr, count } => probe::connect(addr, count).await,
        Cmd::Rate {
            addr,
            seconds: s,
            concurrency,
            max_count,
        } => probe::rate(addr, seconds(s)?, concurrency.max(1), max_count).await,
        Cmd::Hold {
            addr,
            count,
            concurrency,
            hold_seconds,
        } => {
            hold::hold(
                addr,
                count,
                concurrency.max(1),
                Duration::from_secs(hold_seconds),
            )
            .await
        }
        Cmd::Auth {
            addr,
            rate,
            seconds: s,
            sources,
            concurrency,
            max_count,
        } => {
            auth::auth(
                addr,
                rate,
                seconds(s)?,
                sources,
                concurrency.max(1),
                max_count,
            )
            .await
        }
        Cmd::Sessions {
            addr,
            steps,
            sources,
            concurrency,
            hold_seconds,
        } => {
            let hold = Duration::from_secs(hold_seconds.min(3600));
            sessions::sessions(addr, &steps.0, sources, concurrency.max(1), hold).await
        }
        Cmd::Bulk {
            addr,
            seconds: s,
            parallel,
            direction,
        } => {
            let dir = match direction {
                Dir::Up => Direction::Upload,
                Dir::Down => Direction::Download,
            };
            bulk::bulk(addr, seconds(s)?, parallel.max(1), dir).await
        }
    }
}

async fn serve(kind: Kind, addr: SocketAddr, lifetime: Duration) -> anyhow::Result<()> {
    let listener = bind_listener(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    println!("{local}");
    let service = match kind {
        Kind::Echo => Service::Echo,
        Kind::Bench => Service::Bench,
        Kind::Http => Service::Http,
    };
    let stop = CancellationToken::new();
    let server = tokio::spawn(accept_loop(listener, service, stop.clone()));
    // Bounded even if whoever started it forgets to stop it.
    tokio::time::sleep(lifetime).await;
    stop.cancel();
    let _ = server.await;
    Ok(())
}
