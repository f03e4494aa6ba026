//! [`ClientTls`]: how a client checks that it talks to its relay.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{Fingerprint, VERSIONS, provider};
use crate::error::{Error, Result};

/// A client's side of TLS: how the relay's certificate is checked. Cheap to clone.
///
/// ```no_run
/// # fn run() -> relay_core::Result<()> {
/// use relay_core::tls::ClientTls;
/// let public = ClientTls::system_roots()?;                      // a relay with a CA-signed certificate
/// let private = ClientTls::ca_file("relay-ca.pem".as_ref())?;   // a relay signed by our own CA
/// let pinned = ClientTls::pinned("3f:a0:…".parse().map_err(relay_core::Error::Tls)?)?; // --tls-self-signed
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    check: Check,
}

/// What the relay's certificate is checked against (shown by `Debug`).
#[derive(Debug, Clone)]
enum Check {
    SystemRoots,
    #[allow(dead_code)] // read by `Debug`
    CaFile(PathBuf),
    Roots,
    #[allow(dead_code)] // read by `Debug`
    Pinned(Fingerprint),
}

impl ClientTls {
    /// Verifies the relay's certificate against the operating system's trusted roots, and its
    /// name against the host the client dials.
    pub fn system_roots() -> Result<Self> {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none installed".to_string(), |e| e.to_string());
            return Err(Error::Tls(format!(
                "cannot load the system's trusted certificates ({why}); pass --tls-ca FILE or \
                 --tls-fingerprint HEX"
            )));
        }
        let mut roots = RootCertStore::empty();
        // Some system bundles carry certificates webpki cannot parse; the rest still count.
        roots.add_parsable_certificates(found.certs);
        Self::with_roots(roots, Check::SystemRoots)
    }

    /// Verifies the relay's certificate against the CA certificates in a PEM file, and its
    /// name against the host the client dials.
    pub fn ca_file(path: &Path) -> Result<Self> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| Error::Tls(format!("cannot read the CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Tls(format!(
                "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| {
                Error::Tls(format!(
                    "unusable CA certificate in {}: {e}",
                    path.display()
                ))
            })?;
        }
        Self::with_roots(roots, Check::CaFile(path.to_path_buf()))
    }

    /// Verifies the relay's certificate against these CA certificates.
    pub fn ca_certificates(certs: Vec<CertificateDer<'static>>) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("unusable CA certificate: {e}")))?;
        }
        Self::with_roots(roots, Check::Roots)
    }

    /// Accepts exactly the relay certificate whose SHA-256 is `fingerprint`, whatever signed
    /// it and whatever names it carries (for a relay with a self-signed certificate). The
    /// handshake still proves that the relay holds the certificate's key.
    pub fn pinned(fingerprint: Fingerprint) -> Result<Self> {
        let provider = provider();
        let verifier = Pinned {
            fingerprint,
            provider: provider.clone(),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            check: Check::Pinned(fingerprint),
        })
    }

    fn with_roots(roots: RootCertStore, check: Check) -> Result<Self> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            check,
        })
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The name to present and check for `host`. A pinned certificate ignores it; a host that
    /// is not a valid name stands for itself in the error the verifier then reports.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        match ServerName::try_from(host.to_string()) {
            Ok(name) => Ok(name),
            Err(_) if matches!(self.check, Check::Pinned(_)) => {
                Ok(ServerName::try_from("relay").map_err(|e| Error::Tls(e.to_string()))?)
            }
            Err(e) => Err(Error::Tls(format!(
                "'{host}' cannot be checked against a certificate: {e}"
            ))),
        }
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientTls").field(&self.check).finish()
    }
}

/// Accepts the one certificate with the pinned fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
}

/// The relay presented another certificate than the pinned one.
#[derive(Debug)]
pub(crate) struct PinMismatch {
    pinned: Fingerprint,
    found: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "its certificate's fingerprint is {}, not the pinned {}",
            self.found, self.pinned
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let found = Fingerprint::of(end_entity);
        // A fingerprint is public: no need for a constant-time comparison.
        if found == self.fingerprint {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            pinned: self.fingerprint,
            found,
        };
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
