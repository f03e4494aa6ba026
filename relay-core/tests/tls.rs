//! TLS on the control port: CA files, pinned fingerprints, refusals in both directions, token
//! proofs bound to the TLS session, and no visitor byte in clear between client and relay.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use relay_core::auth::Token;
use relay_core::client::{ConnectConfig, Reconnect, claim_with, offer_with};
use relay_core::protocol::ErrorCode;
use relay_core::server::Access;
use relay_core::tls::{ClientTls, Fingerprint, ServerTls};
use relay_core::{Error, RelayConfig, TunnelConfig, TunnelListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "a token of sufficient length";

fn tls_relay(tls: ServerTls) -> RelayConfig {
    RelayConfig {
        tls: Some(tls),
        ..RelayConfig::default()
    }
}

fn client(tls: Option<ClientTls>) -> TunnelConfig {
    TunnelConfig {
        tls,
        reconnect: Reconnect::never(),
        ..TunnelConfig::default()
    }
}

async fn tunnel(control: &str, config: TunnelConfig) -> relay_core::Result<TunnelListener> {
    within("tunnel handshake", TunnelListener::connect(control, config)).await
}

/// Opens a tunnel, echoes one visitor through it, and checks the bytes.
async fn echo_works(control: &str, config: TunnelConfig) {
    let listener = tunnel(control, config).await.expect("tunnel");
    let addr = public(&listener);
    let _server = serve_echo(listener, Vec::new());
    let data = payload(7, 200_000);
    let back = within("echo", visit(addr, &data)).await.expect("visit");
    assert!(back == data, "echo through a TLS session altered the bytes");
}

/// A scratch directory for PEM files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("relay-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, and a relay certificate it signed for 127.0.0.1, as PEM files: (ca, cert, key).
fn ca_and_relay_cert(dir: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "relay test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("relay key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("relay cert");
    (
        dir.write("ca.pem", &ca_cert.pem()),
        dir.write("cert.pem", &cert.pem()),
        dir.write("key.pem", &key.serialize_pem()),
    )
}

fn load(cert: &Path, key: &Path) -> ServerTls {
    ServerTls::from_pem_files(cert, key).expect("relay certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_certificate_checked_against_a_ca_file() {
    let dir = Scratch::new("ca");
    let (ca, cert, key) = ca_and_relay_cert(&dir);
    let relay = TestRelay::start(tls_relay(load(&cert, &key))).await;
    let tls = ClientTls::ca_file(&ca).expect("CA file");
    echo_works(&relay.control(), client(Some(tls))).await;

    // Another CA does not vouch for this relay.
    let other = Scratch::new("other-ca");
    let (other_ca, _, _) = ca_and_relay_cert(&other);
    let tls = ClientTls::ca_file(&other_ca).expect("CA file");
    let err = tunnel(&relay.control(), client(Some(tls)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_fingerprint_accepts_its_relay_and_nothing_else() {
    let tls = ServerTls::self_signed(&[]).expect("self-signed");
    let fingerprint = tls.fingerprint();
    let relay = TestRelay::start(tls_relay(tls)).await;
    let pinned = ClientTls::pinned(fingerprint).expect("pinned");
    echo_works(&relay.control(), client(Some(pinned))).await;

    let wrong = Fingerprint::of(b"some other certificate");
    let pinned = ClientTls::pinned(wrong).expect("pinned");
    let err = tunnel(&relay.control(), client(Some(pinned)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Tls(_)), "{msg}");
    assert!(
        msg.contains(&fingerprint.to_string()) && msg.contains(&wrong.to_string()),
        "the error should name both fingerprints: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_are_served_beside_tls_unless_tls_is_required() {
    let tls = ServerTls::self_signed(&[]).expect("self-signed");
    let relay = TestRelay::start(tls_relay(tls.clone())).await;
    echo_works(&relay.control(), client(None)).await;

    let strict = TestRelay::start(RelayConfig {
        require_tls: true,
        ..tls_relay(tls.clone())
    })
    .await;
    let err = tunnel(&strict.control(), client(None)).await.unwrap_err();
    match &err {
        Error::Rejected {
            code: ErrorCode::TlsRequired,
            message,
        } => assert!(message.contains("only TLS"), "{message}"),
        other => panic!("expected a TlsRequired refusal, got {other}"),
    }
    let pinned = ClientTls::pinned(tls.fingerprint()).expect("pinned");
    echo_works(&strict.control(), client(Some(pinned))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_is_told_when_the_relay_does_not_speak_tls() {
    let relay = TestRelay::default().await;
    let pinned = ClientTls::pinned(Fingerprint::of(b"x")).expect("pinned");
    let err = tunnel(&relay.control(), client(Some(pinned)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not speak TLS"),
        "unclear error: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_proof_is_bound_to_the_tls_session() {
    let tls = ServerTls::self_signed(&[]).expect("self-signed");
    let relay_fp = tls.fingerprint();
    let token = Token::new(SECRET).expect("token");
    let relay = TestRelay::start(RelayConfig {
        access: Access::single(token.clone()),
        ..tls_relay(tls)
    })
    .await;
    let pinned = ClientTls::pinned(relay_fp).expect("pinned");
    let config = TunnelConfig {
        token: Some(token.clone()),
        ..client(Some(pinned))
    };
    echo_works(&relay.control(), config).await;

    // Someone in the middle whose certificate the client trusts passes every frame on, on a
    // TLS session of its own to the relay: the proof it passes on must not verify there.
    let middle_tls = ServerTls::self_signed(&[]).expect("self-signed");
    let middle = tls_middle(middle_tls.clone(), relay.addr, relay_fp).await;
    let pinned = ClientTls::pinned(middle_tls.fingerprint()).expect("pinned");
    let config = TunnelConfig {
        token: Some(token),
        ..client(Some(pinned))
    };
    let err = tunnel(&middle.to_string(), config).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rejected {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "a relayed proof was accepted: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_travel_inside_tls() {
    let tls = ServerTls::self_signed(&[]).expect("self-signed");
    let pinned = ClientTls::pinned(tls.fingerprint()).expect("pinned");
    let relay = TestRelay::start(tls_relay(tls)).await;
    let (forwarder, seen) = recording_forwarder(relay.addr).await;
    let config = ConnectConfig {
        tls: Some(pinned),
        ..ConnectConfig::default()
    };
    let offer = within("offer", offer_with(&forwarder.to_string(), &config))
        .await
        .expect("offer");
    assert!(offer_is_tls(&seen), "the offer was not made over TLS");
    let nameplate = offer.nameplate().to_string();
    let data = marker(100_000);
    let sender = tokio::spawn({
        let data = data.clone();
        async move {
            let mut paired = offer.wait_for_receiver().await.expect("paired");
            assert!(paired.get_ref().is_tls());
            paired.write_all(&data).await.expect("send");
            paired.shutdown().await.expect("shutdown");
        }
    });
    // The receiver dials the relay directly: each side has its own session.
    let mut receiver = within("claim", claim_with(&relay.control(), &nameplate, &config))
        .await
        .expect("claim");
    let mut got = Vec::new();
    within("receive", receiver.read_to_end(&mut got))
        .await
        .expect("receive");
    assert!(got == data);
    within("sender", sender).await.expect("sender");
    assert!(!contains(&seen.lock().expect("lock"), &data[..64]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_bytes_never_cross_in_clear() {
    let tls = ServerTls::self_signed(&[]).expect("self-signed");
    let pinned = ClientTls::pinned(tls.fingerprint()).expect("pinned");
    let relay = TestRelay::start(tls_relay(tls)).await;
    let data = marker(300_000);
    // The same path without TLS first: the forwarder does see the bytes, so it would notice.
    for (tls, should_see) in [(None, true), (Some(pinned), false)] {
        let (forwarder, seen) = recording_forwarder(relay.addr).await;
        let listener = tunnel(&forwarder.to_string(), client(tls))
            .await
            .expect("tunnel");
        let addr = public(&listener);
        let _server = serve_echo(listener, Vec::new());
        let back = within("echo", visit(addr, &data)).await.expect("visit");
        assert!(back == data);
        let seen = seen.lock().expect("lock");
        assert!(seen.len() > data.len(), "the forwarder missed the traffic");
        assert_eq!(
            contains(&seen, &data[1000..1032]),
            should_see,
            "visitor bytes in clear on the client's connection: {should_see} expected"
        );
    }
}

/// Distinctive bytes that no TLS record would carry in clear by chance.
fn marker(len: usize) -> Vec<u8> {
    b"VISITOR-SECRET-"
        .iter()
        .copied()
        .chain(payload(99, 64))
        .cycle()
        .take(len)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn offer_is_tls(seen: &Mutex<Vec<u8>>) -> bool {
    seen.lock().expect("lock").first() == Some(&relay_core::tls::TLS_HANDSHAKE_BYTE)
}

/// A TCP forwarder to `to` for one connection, recording every byte in both directions.
async fn recording_forwarder(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let Ok((a, _)) = listener.accept().await else {
            return;
        };
        let Ok(b) = TcpStream::connect(to).await else {
            return;
        };
        let (ar, aw) = a.into_split();
        let (br, bw) = b.into_split();
        tokio::join!(pump(ar, bw, record.clone()), pump(br, aw, record.clone()));
    });
    (addr, seen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        seen.lock().expect("lock").extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Someone in the middle: terminates the client's TLS with `tls`, opens its own TLS session
/// to the relay, and passes bytes both ways, for one connection.
async fn tls_middle(tls: ServerTls, relay: SocketAddr, relay_fp: Fingerprint) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut from_client) = relay_core::transport::accept_tls(tcp, &tls).await else {
            return;
        };
        let Ok(tcp) = TcpStream::connect(relay).await else {
            return;
        };
        let to_relay = ClientTls::pinned(relay_fp).expect("pinned");
        let Ok(mut to_relay) =
            relay_core::transport::connect_tls(&relay.to_string(), tcp, &to_relay).await
        else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut from_client, &mut to_relay).await;
    });
    addr
}
