//! [`ServerTls`]: the relay's certificate and key, ready to accept TLS clients.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Fingerprint, VERSIONS, provider};
use crate::error::{Error, Result};

/// The relay's side of TLS: its certificate chain and private key. Cheap to clone.
///
/// ```no_run
/// # fn run() -> relay_core::Result<()> {
/// use relay_core::tls::ServerTls;
/// let tls = ServerTls::from_pem_files("cert.pem".as_ref(), "key.pem".as_ref())?;
/// println!("clients may pin {}", tls.fingerprint());
/// let self_signed = ServerTls::self_signed(&["relay.example.com".to_string()])?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    fingerprint: Fingerprint,
    certificate: CertificateDer<'static>,
}

impl ServerTls {
    /// Loads a PEM certificate chain (the relay's own certificate first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1). Errors name the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::Tls(format!(
                    "cannot read the TLS certificate {}: {e}",
                    cert.display()
                ))
            })?;
        if chain.is_empty() {
            return Err(Error::Tls(format!(
                "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                cert.display()
            )));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            Error::Tls(format!(
                "cannot read the TLS private key {}: {e} (expected PEM: -----BEGIN PRIVATE KEY-----)",
                key.display()
            ))
        })?;
        Self::from_der(chain, key_der).map_err(|e| {
            Error::Tls(format!(
                "cannot use {} with {}: {e}",
                cert.display(),
                key.display()
            ))
        })
    }

    /// A certificate chain (leaf first) and its key, already decoded.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self> {
        let certificate = chain
            .first()
            .cloned()
            .ok_or_else(|| Error::Tls("an empty certificate chain".into()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::Tls(format!("certificate or key unusable: {e}")))?;
        // Nothing to resume: one session per connection, kept for hours.
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            fingerprint: Fingerprint::of(&certificate),
            config: Arc::new(config),
            certificate,
        })
    }

    /// Generates a fresh self-signed certificate (ECDSA P-256) for `names` (host names or IP
    /// addresses, `localhost` always included). Clients cannot check it against a CA: they pin
    /// its [`fingerprint`](Self::fingerprint), which changes with every call.
    pub fn self_signed(names: &[String]) -> Result<Self> {
        let mut names = names.to_vec();
        if !names.iter().any(|n| n == "localhost") {
            names.push("localhost".into());
        }
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Tls(format!("cannot generate a certificate: {e}")))?;
        let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
        Self::from_der(vec![generated.cert.der().clone()], key.into())
    }

    /// The fingerprint of the relay's own certificate, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The relay's own certificate, PEM-encoded (to give clients as a CA file).
    pub fn certificate_pem(&self) -> String {
        let encoded = base64(&self.certificate);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_round_trip_through_pem() {
        let tls = ServerTls::self_signed(&[]).expect("generate");
        let pem = tls.certificate_pem();
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parse");
        assert_eq!(Fingerprint::of(&back), tls.fingerprint());
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_files_are_named_in_one_line() {
        let dir = std::env::temp_dir().join(format!("relay-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a pem file\n").expect("write");
        let missing = dir.join("missing.pem");
        for (cert, key, wanted) in [
            (&missing, &junk, "missing.pem"),
            (&junk, &junk, "junk.pem holds no certificate"),
        ] {
            let err = ServerTls::from_pem_files(cert, key)
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let tls = ServerTls::self_signed(&[]).expect("generate");
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, tls.certificate_pem()).expect("write");
        let err = ServerTls::from_pem_files(&cert, &junk)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("private key") && err.contains("junk.pem"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
