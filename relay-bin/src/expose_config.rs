//! `expose --config FILE`: the relay, the options and the tunnels of one `expose` in a TOML
//! file, so that a service runs from one file instead of a long command line.
//!
//! ```toml
//! relay = "relay.example.com:8080"
//! # token = "..."            # or RELAY_TOKEN in the environment
//! # reconnect = true         # false: exit on the first lost session
//! # proxy_protocol = "v2"    # default for every tunnel: "v1" or "v2"
//!
//! [[tunnel]]
//! local = "127.0.0.1:3000"   # or just a port: "3000"
//! port = 8081                # public port to ask for (optional)
//!
//! [[tunnel]]
//! local = "localhost:22"
//! proxy_protocol = "v1"
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::proxy_header::ProxyVersion;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeConfig {
    /// The relay's control address, `HOST:PORT`.
    pub relay: String,
    /// The token the relay requires (the environment's `RELAY_TOKEN` wins over it).
    pub token: Option<String>,
    /// Reconnect when the session is lost (default true).
    #[serde(default = "yes")]
    pub reconnect: bool,
    /// Runtime worker threads (0: one per CPU).
    pub threads: Option<usize>,
    /// PROXY protocol header for every tunnel that does not choose its own.
    pub proxy_protocol: Option<ProxyVersion>,
    /// One entry per public port.
    #[serde(rename = "tunnel", default)]
    pub tunnels: Vec<TunnelEntry>,
}

/// One local server behind its own public port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelEntry {
    /// `PORT` (on 127.0.0.1) or `HOST:PORT`.
    pub local: String,
    /// Public port to ask the relay for.
    pub port: Option<u16>,
    /// PROXY protocol header for this tunnel's local connections.
    pub proxy_protocol: Option<ProxyVersion>,
}

fn yes() -> bool {
    true
}

/// Reads and checks a config file; errors are one line naming the file, the line and the
/// problem.
pub fn load(path: &Path) -> Result<ExposeConfig, String> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read config {shown}: {e}"))?;
    let config: ExposeConfig = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map_or(String::new(), |l| format!(" line {l}:"));
        format!("config {shown}:{at} {}", e.message().trim())
    })?;
    if config.tunnels.is_empty() {
        return Err(format!(
            "config {shown}: no [[tunnel]] entry; add one with local = \"PORT\" or \"HOST:PORT\""
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file in the temp directory, removed on drop.
    struct TempConfig(std::path::PathBuf);

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(text: &str) -> TempConfig {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("expose-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write config");
        TempConfig(path)
    }

    #[test]
    fn a_full_file_reads_back() {
        let f = write(
            "relay = \"r.example:8080\"\nproxy_protocol = \"v2\"\n\n[[tunnel]]\nlocal = \"3000\"\nport = 9001\n\n[[tunnel]]\nlocal = \"localhost:22\"\nproxy_protocol = \"v1\"\n",
        );
        let c = load(&f.0).expect("valid");
        assert_eq!(c.relay, "r.example:8080");
        assert!(c.reconnect);
        assert_eq!(c.tunnels.len(), 2);
        assert_eq!(c.tunnels[0].port, Some(9001));
        assert_eq!(c.tunnels[1].proxy_protocol, Some(ProxyVersion::V1));
        assert_eq!(c.proxy_protocol, Some(ProxyVersion::V2));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let f = write("relay = \"r:1\"\n\n[[tunnel]]\nlocal = \"3000\"\nprot = 9001\n");
        let e = load(&f.0).unwrap_err();
        assert!(e.contains("line 5") && e.contains("prot"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let f = write("relay = \"r:1\"\n");
        assert!(load(&f.0).unwrap_err().contains("no [[tunnel]]"));
        let e = load(Path::new("/nonexistent/expose.toml")).unwrap_err();
        assert!(
            e.starts_with("cannot read config /nonexistent/expose.toml"),
            "{e}"
        );
    }
}
