//! `relay-core`: a TCP relay and reverse tunnel, as a library.
//!
//! A *requesting client* behind NAT dials the relay once and keeps that one TCP connection (a
//! *session*). The relay gives it a public port (its *tunnel*); every *visitor* that connects
//! there arrives at the client as a new yamux *substream* the relay opens on the session. The
//! same relay also pairs file-transfer *offers* with their receivers and pumps bytes between
//! them without being able to read them.
//!
//! # Map
//!
//! | module | what lives there |
//! |---|---|
//! | [`protocol`] | wire messages and protocol limits (pure data) |
//! | [`codec`] | length-prefixed bincode frames; the only place bincode is named |
//! | [`frame`] | framed connections: cancel-safe frame reads, hand-over to raw bytes |
//! | [`liveness`] | heartbeat timing: when to ping, when a peer is gone, our own stalls |
//! | [`ending`] | [`SessionEnd`]: why a session or offer ended |
//! | [`mux`] | the yamux driver task and its handle; the only place yamux is named |
//! | [`splice`] | the bidirectional byte pump with half-close |
//! | [`net`] | address parsing, listeners, TCP options |
//! | [`tls`] | certificates, fingerprints, how clients verify the relay |
//! | [`transport`] | [`transport::Conn`]: plain TCP or TLS, one byte stream either way |
//! | [`server`] | the relay: control port, tunnel sessions, visitors, rendezvous |
//! | [`client`] | [`TunnelListener`], and [`client::offer`] / [`client::claim`] for transfers |
//! | [`error`] | [`Error`] and [`Result`] |
//!
//! # Embedding a service behind NAT
//!
//! ```no_run
//! # async fn run() -> relay_core::Result<()> {
//! let listener = relay_core::TunnelListener::connect("relay.example.com:8080", Default::default()).await?;
//! println!("public address: {}", listener.public_addr());
//! loop {
//!     let (stream, visitor) = listener.accept().await?; // tokio AsyncRead + AsyncWrite
//!     tokio::spawn(async move {
//!         // serve `stream` exactly as a TcpStream accepted from a TcpListener
//!         # drop((stream, visitor));
//!     });
//! }
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod client;
pub mod codec;
pub mod ending;
pub mod error;
pub mod frame;
pub mod liveness;
pub mod mux;
pub mod net;
pub mod protocol;
pub mod server;
pub mod splice;
pub mod tls;
pub mod transport;

pub use client::{IncomingVisitor, PublicAddr, TunnelConfig, TunnelListener, Visitor};
pub use ending::SessionEnd;
pub use error::{Error, Result};
pub use mux::Substream as TunnelStream;
pub use server::{RelayConfig, RelayServer};
