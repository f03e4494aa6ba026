//! `expose RELAYHOST RELAYPORT LOCAL`: put an unmodified local TCP server behind the relay.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use relay_bin::local::LocalServer;
use relay_bin::visitors::VisitorStats;
use relay_bin::{RelayArgs, drain_visitors, fail, init_logging, shutdown_on_signal};
use relay_core::IncomingVisitor;
use relay_core::net::{join_host_port, reset_on_close, split_host_port, tune_data_socket};
use relay_core::splice::{Meter, splice};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

relay_bin::use_mimalloc!();

/// How long a visitor waits for the local server to accept before it is refused.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Expose a local TCP server through a relay.
///
/// Prints the public HOST:PORT on stdout, then gives every visitor a fresh connection to LOCAL,
/// spliced both ways. Logs go to stderr.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,
    /// Local server: PORT (on 127.0.0.1) or HOST:PORT.
    local: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging("info");
    let local = match parse_local(&args.local) {
        Ok(l) => l,
        Err(e) => return fail("expose", e),
    };
    relay_bin::run("expose", args.relay.threads, serve(args, local))
}

fn parse_local(local: &str) -> Result<String, String> {
    if local.bytes().all(|b| b.is_ascii_digit()) {
        let port = relay_core::net::parse_port(local)?;
        return Ok(join_host_port("127.0.0.1", port));
    }
    let (host, port) = split_host_port(local)?;
    Ok(join_host_port(&host, port))
}

async fn serve(args: Args, local: String) -> relay_core::Result<()> {
    let local = match LocalServer::resolve(&local).await {
        Ok(l) => Arc::new(l),
        Err(e) => {
            let message = format!("cannot resolve the local server {local}: {e}");
            return Err(std::io::Error::new(e.kind(), message).into());
        }
    };
    let listener = args.relay.open_tunnel().await?;
    info!(local = %local.name(), addrs = ?local.addrs(), "forwarding visitors");
    let shutdown = shutdown_on_signal();
    let visitors = TaskTracker::new();
    let stats = VisitorStats::new();
    let summaries = stats.spawn_summaries();
    let result = loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            v = listener.next_visitor() => match v {
                Ok(v) => v,
                Err(e) => break Err(e),
            },
        };
        let visitor = incoming.visitor();
        let span = info_span!("visitor", visitor.id = visitor.id, visitor.addr = %visitor.addr);
        visitors.spawn(forward(incoming, local.clone(), stats.clone()).instrument(span));
    };
    drain_visitors(&visitors).await;
    summaries.stop().await;
    result
}

async fn forward(incoming: IncomingVisitor, local: Arc<LocalServer>, stats: VisitorStats) {
    let connected = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, local.connect()).await;
    let local = local.name();
    let mut local_conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            stats.refused(format_args!("local server {local} unreachable: {e}"));
            incoming.refuse(&format!("local server {local}: {e}")).await;
            return;
        }
        Err(_) => {
            stats.refused(format_args!("local server {local} did not accept in time"));
            incoming
                .refuse(&format!("local server {local}: connect timed out"))
                .await;
            return;
        }
    };
    tune_data_socket(&local_conn);
    let mut stream = match incoming.accept().await {
        Ok(s) => s,
        Err(e) => return debug!(error = %e, "visitor left before it was accepted"),
    };
    stats.opened();
    let meter = Meter::new();
    match splice(&mut stream, &mut local_conn, &meter).await {
        Ok(()) => stats.closed(meter.a_to_b(), meter.b_to_a()),
        Err(e) => {
            reset_on_close(&local_conn);
            stats.reset(e, &meter);
        }
    }
}
