//! TLS between clients and the relay: certificates, verification, fingerprints.
//!
//! The relay serves TLS and plain connections on one control port and tells them apart by the
//! first byte (a TLS record starts with `0x16`, our preface with `R`). Clients verify the relay
//! against a CA (the system's roots or a file) or pin its certificate's [`Fingerprint`].
//! Everything between a client and the relay, tunnels and transfers alike, then travels inside
//! TLS; visitors' public ports are untouched.
//!
//! Choices, and why:
//!
//! * **rustls with `ring`**: no OpenSSL; `ring` is already in the tree (tokens' HMAC) and its
//!   AES-GCM uses AES-NI and carry-less multiply where the CPU has them.
//! * **TLS 1.3 only**: both ends are ours; one round trip; and its exporter is safe to bind a
//!   token proof to (TLS 1.2's is not without extended master secret).
//! * **AES-128-GCM first**, then AES-256-GCM and ChaCha20-Poly1305: the fastest where AES is in
//!   hardware, which is what a relay runs on.
//! * **Channel binding**: a token proof covers [`BINDING_LABEL`]'s exporter secret of the TLS
//!   session, so a proof seen by a man in the middle (with a certificate the client wrongly
//!   trusted) is worthless on the middle's own session to the relay.
//!
//! | file | what lives there |
//! |---|---|
//! | `fingerprint.rs` | [`Fingerprint`] |
//! | `server.rs` | [`ServerTls`]: the relay's certificate, from PEM files or self-signed |
//! | `client.rs` | [`ClientTls`]: how a client verifies the relay |

mod client;
mod fingerprint;
mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use client::ClientTls;
pub(crate) use client::PinMismatch;
pub use fingerprint::Fingerprint;
pub use server::ServerTls;

/// The first byte of every TLS connection (a handshake record); our preface starts with `R`.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Exporter label of the channel binding that token proofs cover (RFC 8446 section 7.5).
pub const BINDING_LABEL: &[u8] = b"EXPORTER-relay-token-binding";

/// The TLS versions both ends speak.
pub(crate) static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// `ring`, with the cipher suites in our order of preference.
///
/// rustls deprecates ring's provider because ring has no post-quantum key exchange
/// (X25519MLKEM768); aws-lc-rs has one but needs cmake and a C build this workspace does not
/// have. Switching is this function and one feature in the workspace `Cargo.toml`.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}
