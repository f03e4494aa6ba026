//! `expose RELAYHOST RELAYPORT LOCAL [LOCAL...]` (or `expose --config FILE`): put unmodified local
//! TCP servers behind the relay, each on its own public port, all over one connection.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use relay_bin::expose_config::{self, ExposeConfig};
use relay_bin::local::LocalServer;
use relay_bin::proxy_header::{self, ProxyVersion};
use relay_bin::visitors::VisitorStats;
use relay_bin::{
    ClientOptions, announce, drain_visitors, fail, follow_address, init_logging, parse_token,
    shutdown_on_signal,
};
use relay_core::net::{join_host_port, reset_on_close, split_host_port, tune_data_socket};
use relay_core::splice::{Meter, splice};
use relay_core::{IncomingVisitor, TunnelConfig, TunnelListener};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

relay_bin::use_mimalloc!();

/// How long a visitor waits for the local server to accept before it is refused.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Expose local TCP servers through a relay.
///
/// Prints one public HOST:PORT line per LOCAL on stdout, in order, then gives every visitor a
/// fresh connection to its LOCAL, spliced both ways. All tunnels share one connection to the
/// relay. Logs go to stderr.
#[derive(Debug, Parser)]
#[command(version, max_term_width = 100)]
struct Args {
    /// Relay host name or address.
    #[arg(required_unless_present = "config")]
    relay_host: Option<String>,
    /// Relay control port.
    #[arg(value_parser = relay_core::net::parse_port, required_unless_present = "config")]
    relay_port: Option<u16>,
    /// Local servers: PORT (on 127.0.0.1) or HOST:PORT, one public port each.
    #[arg(required_unless_present = "config")]
    local: Vec<String>,
    /// Read the relay, the options and the tunnels from a TOML file instead (see the README).
    #[arg(long, env = "RELAY_EXPOSE_CONFIG", conflicts_with_all = ["relay_host", "port"])]
    config: Option<PathBuf>,
    /// Public port to ask the relay for (with a single LOCAL; the config file sets one per
    /// tunnel).
    #[arg(long, env = "RELAY_PREFERRED_PORT")]
    port: Option<u16>,
    /// Start every local connection with a PROXY protocol header carrying the visitor's
    /// address, for servers that log or limit by client address.
    #[arg(long, env = "RELAY_PROXY_PROTOCOL", value_enum)]
    proxy_protocol: Option<ProxyVersion>,
    #[command(flatten)]
    client: ClientOptions,
}

/// One local server and how its tunnel is asked for.
#[derive(Debug)]
struct Forward {
    local: String,
    preferred_port: Option<u16>,
    proxy: Option<ProxyVersion>,
}

/// Everything `serve` needs, from the command line or the config file.
#[derive(Debug)]
struct Plan {
    relay: String,
    config: TunnelConfig,
    threads: usize,
    forwards: Vec<Forward>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging("info");
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => return fail("expose", e),
    };
    relay_bin::run("expose", plan.threads, serve(plan))
}

fn plan(args: Args) -> Result<Plan, String> {
    let Some(path) = &args.config else {
        let (Some(host), Some(port)) = (&args.relay_host, args.relay_port) else {
            return Err("give RELAYHOST RELAYPORT LOCAL..., or --config FILE".into());
        };
        if args.port.is_some() && args.local.len() > 1 {
            return Err("--port asks for one public port; with several LOCALs, \
                        choose each tunnel's port in a --config file"
                .into());
        }
        let forwards = args
            .local
            .iter()
            .map(|l| {
                Ok(Forward {
                    local: parse_local(l)?,
                    preferred_port: args.port,
                    proxy: args.proxy_protocol,
                })
            })
            .collect::<Result<_, String>>()?;
        return Ok(Plan {
            relay: join_host_port(host, port),
            config: args.client.tunnel_config().map_err(|e| e.to_string())?,
            threads: args.client.threads,
            forwards,
        });
    };
    let file: ExposeConfig = expose_config::load(path)?;
    split_host_port(&file.relay).map_err(|e| format!("config {}: relay {e}", path.display()))?;
    let mut config = args.client.tunnel_config().map_err(|e| e.to_string())?;
    // The command line and the environment win over the file.
    if config.token.is_none() {
        config.token = file.token.as_deref().map(parse_token).transpose()?;
    }
    if !file.reconnect {
        config.reconnect = relay_core::client::Reconnect::never();
    }
    let forwards = file
        .tunnels
        .iter()
        .map(|t| {
            Ok(Forward {
                local: parse_local(&t.local)
                    .map_err(|e| format!("config {}: {e}", path.display()))?,
                preferred_port: t.port,
                proxy: t
                    .proxy_protocol
                    .or(args.proxy_protocol)
                    .or(file.proxy_protocol),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Plan {
        relay: file.relay,
        config,
        threads: file.threads.unwrap_or(args.client.threads),
        forwards,
    })
}

fn parse_local(local: &str) -> Result<String, String> {
    if local.bytes().all(|b| b.is_ascii_digit()) {
        let port = relay_core::net::parse_port(local)?;
        return Ok(join_host_port("127.0.0.1", port));
    }
    let (host, port) = split_host_port(local)?;
    Ok(join_host_port(&host, port))
}

/// A tunnel's local end: where its visitors go, and how.
#[derive(Debug)]
struct Target {
    server: LocalServer,
    proxy: Option<ProxyVersion>,
}

async fn serve(plan: Plan) -> relay_core::Result<()> {
    let mut targets = Vec::with_capacity(plan.forwards.len());
    for f in &plan.forwards {
        let server = LocalServer::resolve(&f.local).await.map_err(|e| {
            let message = format!("cannot resolve the local server {}: {e}", f.local);
            std::io::Error::new(e.kind(), message)
        })?;
        targets.push(Arc::new(Target {
            server,
            proxy: f.proxy,
        }));
    }
    let ports: Vec<Option<u16>> = plan.forwards.iter().map(|f| f.preferred_port).collect();
    let listeners = TunnelListener::connect_many(&plan.relay, plan.config, &ports).await?;
    for (listener, target) in listeners.iter().zip(&targets) {
        announce(&listener.public_addr());
        follow_address(listener.watch_public_addr());
        info!(public = %listener.public_addr(), local = %target.server.name(), "forwarding visitors");
    }
    let shutdown = shutdown_on_signal();
    let visitors = TaskTracker::new();
    let stats = VisitorStats::new();
    let summaries = stats.spawn_summaries();
    let listeners: Vec<Arc<TunnelListener>> = listeners.into_iter().map(Arc::new).collect();
    let accepting: Vec<_> = listeners
        .iter()
        .zip(targets)
        .map(|(listener, target)| {
            let accept = accept(listener.clone(), target, &visitors, &stats, &shutdown);
            tokio::spawn(accept)
        })
        .collect();
    let mut result = Ok(());
    for task in accepting {
        if let Ok(Err(e)) = task.await {
            // A lost client fails every listener alike; the first says why.
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    // New visitors are turned away from now on; those inside finish.
    for listener in &listeners {
        listener.stop_accepting();
    }
    drain_visitors(&visitors).await;
    summaries.stop().await;
    if let Some(listener) = listeners.first() {
        // The visitors are done (or out of time): goodbye, and wait for the relay to close.
        listener.shutdown(Duration::ZERO).await;
    }
    result
}

/// Takes one tunnel's visitors until shutdown, or until the client stops for good.
fn accept(
    listener: Arc<TunnelListener>,
    target: Arc<Target>,
    visitors: &TaskTracker,
    stats: &VisitorStats,
    shutdown: &CancellationToken,
) -> impl Future<Output = relay_core::Result<()>> + use<> {
    let (visitors, stats, shutdown) = (visitors.clone(), stats.clone(), shutdown.clone());
    async move {
        loop {
            let incoming = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                v = listener.next_visitor() => v?,
            };
            let visitor = incoming.visitor();
            let span = info_span!("visitor", visitor.id = visitor.id, visitor.addr = %visitor.addr);
            let task = forward(incoming, target.clone(), stats.clone());
            visitors.spawn(task.instrument(span));
        }
    }
}

async fn forward(incoming: IncomingVisitor, target: Arc<Target>, stats: VisitorStats) {
    let connected = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, target.server.connect()).await;
    let local = target.server.name();
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
    let visitor = incoming.visitor();
    if let Some(version) = target.proxy {
        // Written before anything of the visitor's, as the server expects it first.
        let header = proxy_header::header(version, visitor.addr, visitor.relay_addr);
        if let Err(e) = local_conn.write_all(&header).await {
            stats.refused(format_args!("local server {local} closed: {e}"));
            incoming.refuse(&format!("local server {local}: {e}")).await;
            return;
        }
    }
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
