//! `echoserver RELAYHOST RELAYPORT`: the demo tunnel client. Prints its public address and
//! echoes every visitor's bytes back, finishing the echo before closing when a visitor
//! half-closes.

use std::process::ExitCode;

use clap::Parser;
use relay_bin::{announce, fail, init_logging, shutdown_on_signal};
use relay_core::net::join_host_port;
use relay_core::splice::copy_one_way;
use relay_core::{TunnelConfig, TunnelListener, TunnelStream};
use tracing::{Instrument, info, info_span};

/// Echo server reachable through a relay.
///
/// Prints the public HOST:PORT on stdout; every byte a visitor sends there comes back.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    /// Relay host name or address.
    relay_host: String,
    /// Relay control port.
    #[arg(value_parser = relay_core::net::parse_port)]
    relay_port: u16,
    /// Public port to ask the relay for (granted when free).
    #[arg(long, env = "RELAY_PREFERRED_PORT")]
    port: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail("echoserver", format_args!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("echoserver", e),
    }
}

async fn run(args: Args) -> relay_core::Result<()> {
    let relay = join_host_port(&args.relay_host, args.relay_port);
    let config = TunnelConfig {
        preferred_port: args.port,
        ..TunnelConfig::default()
    };
    let listener = TunnelListener::connect(&relay, config).await?;
    announce(listener.public_addr());
    let shutdown = shutdown_on_signal();
    loop {
        let (stream, visitor) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let span = info_span!("visitor", visitor.id = visitor.id, visitor.addr = %visitor.addr);
        tokio::spawn(echo(stream).instrument(span));
    }
}

async fn echo(stream: TunnelStream) {
    info!("visitor connected");
    let (mut read, mut write) = tokio::io::split(stream);
    match copy_one_way(&mut read, &mut write).await {
        Ok(bytes) => info!(bytes, "visitor closed"),
        Err(e) => info!(error = %e, "visitor reset"),
    }
}
