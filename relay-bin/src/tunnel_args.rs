//! What tunnel clients (`echoserver`, `expose`) are told on the command line, and how they show
//! their public addresses on stdout.

use std::io::Write;

use relay_core::client::Reconnect;
use relay_core::{PublicAddr, TunnelConfig, TunnelListener};

use crate::parse_token;

/// Options every tunnel client takes, whatever it serves.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    /// Runtime worker threads (0: one per CPU).
    #[arg(long, env = "RELAY_CLIENT_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Exit (status 1) when the session with the relay is lost, instead of reconnecting; for
    /// running under a supervisor that restarts the client (systemd `Restart=`).
    #[arg(long, env = "RELAY_NO_RECONNECT")]
    pub no_reconnect: bool,
    /// Secret the relay requires, if it requires one.
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<relay_core::auth::Token>,
    #[command(flatten)]
    pub tls: crate::tls::ClientTlsArgs,
}

impl ClientOptions {
    /// The tunnel settings these options ask for (fails on an unreadable CA file).
    pub fn tunnel_config(&self) -> relay_core::Result<TunnelConfig> {
        Ok(TunnelConfig {
            token: self.token.clone(),
            tls: self.tls.client_tls()?,
            reconnect: if self.no_reconnect {
                Reconnect::never()
            } else {
                Reconnect::default()
            },
            ..TunnelConfig::default()
        })
    }
}

/// Where a tunnel client with one tunnel (`echoserver`) finds its relay.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Relay host name or address.
    pub relay_host: String,
    /// Relay control port.
    #[arg(value_parser = relay_core::net::parse_port)]
    pub relay_port: u16,
    /// Public port to ask the relay for (granted when free).
    #[arg(long, env = "RELAY_PREFERRED_PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub client: ClientOptions,
}

impl RelayArgs {
    /// Opens the tunnel and prints its public address (stdout: `HOST:PORT` only), and prints it
    /// again whenever a reconnect gives it another one.
    pub async fn open_tunnel(&self) -> relay_core::Result<TunnelListener> {
        let relay = relay_core::net::join_host_port(&self.relay_host, self.relay_port);
        let config = TunnelConfig {
            preferred_port: self.port,
            ..self.client.tunnel_config()?
        };
        let listener = TunnelListener::connect(&relay, config).await?;
        announce(&listener.public_addr());
        follow_address(listener.watch_public_addr());
        Ok(listener)
    }
}

/// Prints every later public address of a tunnel as a new stdout line (the library warns on
/// stderr when it changes, saying why).
pub fn follow_address(mut addr: tokio::sync::watch::Receiver<PublicAddr>) {
    addr.mark_unchanged();
    tokio::spawn(async move {
        while addr.changed().await.is_ok() {
            let now = addr.borrow_and_update().clone();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{now}");
            let _ = out.flush();
        }
    });
}

/// Prints a tunnel's public address: stdout gets exactly `HOST:PORT` (flushed at once, for
/// scripts), people get a line on stderr.
pub fn announce(addr: &PublicAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{addr}");
    let _ = out.flush();
    eprintln!("established relay address: ({}, {})", addr.host, addr.port);
}
