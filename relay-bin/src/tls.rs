//! TLS flags: the relay's certificate (`relay`), and how clients check it (`expose`,
//! `echoserver`, `send`, `receive`).

use std::path::PathBuf;

use relay_core::tls::{ClientTls, Fingerprint, ServerTls};

/// The relay's TLS flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain (the relay's own certificate first): serve TLS on the control
    /// port beside plain TCP.
    #[arg(
        long,
        env = "RELAY_TLS_CERT",
        value_name = "CERT.pem",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "RELAY_TLS_KEY",
        value_name = "KEY.pem",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve TLS with a certificate generated at start (its fingerprint is logged, for
    /// clients' --tls-fingerprint; it changes at every start).
    #[arg(long, env = "RELAY_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,

    /// Refuse plain connections: clients must use --tls.
    #[arg(long, env = "RELAY_REQUIRE_TLS")]
    pub require_tls: bool,
}

impl ServerTlsArgs {
    /// Loads or generates the certificate these flags ask for; `names` go into a generated
    /// one. `None`: plain TCP only.
    pub fn load(&self, names: &[String]) -> relay_core::Result<Option<ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServerTls::from_pem_files(cert, key).map(Some),
            _ if self.tls_self_signed => ServerTls::self_signed(names).map(Some),
            _ => Ok(None),
        }
    }
}

/// A client's TLS flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsArgs {
    /// Speak TLS to the relay, checking its certificate against the system's trusted roots
    /// (or --tls-ca).
    #[arg(long, env = "RELAY_TLS")]
    pub tls: bool,

    /// Check the relay's certificate against the CA certificates in this PEM file (implies
    /// --tls).
    #[arg(
        long,
        env = "RELAY_TLS_CA",
        value_name = "FILE",
        conflicts_with = "tls_fingerprint"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Accept only the relay certificate with this SHA-256 fingerprint, as the relay logs it
    /// (64 hex digits, colons allowed; implies --tls). For a relay with --tls-self-signed.
    #[arg(long, env = "RELAY_TLS_FINGERPRINT", value_name = "HEX", value_parser = parse_fingerprint)]
    pub tls_fingerprint: Option<Fingerprint>,
}

impl ClientTlsArgs {
    /// How to check the relay these flags ask for; `None`: plain TCP.
    pub fn client_tls(&self) -> relay_core::Result<Option<ClientTls>> {
        if let Some(fingerprint) = self.tls_fingerprint {
            return ClientTls::pinned(fingerprint).map(Some);
        }
        if let Some(ca) = &self.tls_ca {
            return ClientTls::ca_file(ca).map(Some);
        }
        if self.tls {
            return ClientTls::system_roots().map(Some);
        }
        Ok(None)
    }
}

/// Parses a certificate fingerprint (for clap).
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    s.parse()
}
