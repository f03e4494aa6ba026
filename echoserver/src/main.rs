//! `echoserver RELAYHOST RELAYPORT`: the demo tunnel client. Prints its public address and
//! echoes every visitor's bytes back, finishing the echo before closing when a visitor
//! half-closes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use relay_bin::visitors::VisitorStats;
use relay_bin::{RelayArgs, drain_visitors, init_logging, shutdown_on_signal};
use relay_core::TunnelStream;
use relay_core::splice::{Meter, copy_one_way};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

relay_bin::use_mimalloc!();

/// Echo server reachable through a relay.
///
/// Prints the public HOST:PORT on stdout; every byte a visitor sends there comes back.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging("info");
    relay_bin::run("echoserver", args.relay.client.threads, serve(args))
}

async fn serve(args: Args) -> relay_core::Result<()> {
    let listener = args.relay.open_tunnel().await?;
    let shutdown = shutdown_on_signal();
    let visitors = TaskTracker::new();
    let stats = VisitorStats::new();
    let summaries = stats.spawn_summaries();
    let result = loop {
        let (stream, visitor) = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => break Err(e),
            },
        };
        let span = info_span!("visitor", visitor.id = visitor.id, visitor.addr = %visitor.addr);
        visitors.spawn(echo(stream, stats.clone()).instrument(span));
    };
    // New visitors are turned away from now on; those inside finish.
    listener.stop_accepting();
    drain_visitors(&visitors).await;
    summaries.stop().await;
    // Goodbye: the relay frees the port now instead of keeping it leased for us. The visitors
    // are done (or out of time, and then cut).
    listener.shutdown(Duration::ZERO).await;
    result
}

async fn echo(stream: TunnelStream, stats: VisitorStats) {
    stats.opened();
    let (mut read, mut write) = tokio::io::split(stream);
    let meter = Meter::new();
    match copy_one_way(&mut read, &mut write, &meter).await {
        // Every byte in comes back out.
        Ok(()) => stats.closed(meter.a_to_b(), meter.a_to_b()),
        Err(e) => stats.reset(e, &meter),
    }
}
