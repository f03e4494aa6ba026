//! `relay-core`: a TCP relay and reverse tunnel, as a library.
//!
//! A *requesting client* behind NAT dials the relay once and keeps that one TCP connection (a
//! *session*). The relay gives it a public port (its *tunnel*); every *visitor* that connects
//! there arrives at the client as a new [`TunnelStream`], carried by a yamux *substream* the
//! relay opens on the session. The same relay also pairs file-transfer *offers* with their
//! receivers and pumps bytes between them without being able to read them.
//!
//! # Embedding a service behind NAT
//!
//! [`TunnelListener`] is used where a `tokio::net::TcpListener` was:
//!
//! ```no_run
//! # async fn run() -> relay_core::Result<()> {
//! use std::time::Duration;
//! use relay_core::{TunnelConfig, TunnelListener};
//!
//! let listener = TunnelListener::connect("relay.example.com:8080", TunnelConfig::default()).await?;
//! println!("public address: {}", listener.public_addr());
//! loop {
//!     tokio::select! {
//!         accepted = listener.accept() => {
//!             let (stream, visitor) = accepted?; // stream: tokio AsyncRead + AsyncWrite
//!             tokio::spawn(async move {
//!                 // serve `stream` exactly as a TcpStream accepted from a TcpListener;
//!                 // `stream.peer_addr()` is `visitor.addr`
//!                 # drop((stream, visitor));
//!             });
//!         }
//!         _ = tokio::signal::ctrl_c() => break,
//!     }
//! }
//! // No new visitors; those inside get 10 s to finish; then goodbye, and wait for the relay.
//! listener.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! Accepted streams outlive the listener, as `TcpStream`s do; the session ends when the
//! listener and every stream are gone, or on [`TunnelListener::shutdown`]. With the `axum`
//! feature, `axum::serve(listener, app)` works directly (see [`TunnelAddr`] and
//! `relay-core/examples/` for axum and hyper services with graceful shutdown).
//!
//! # Map
//!
//! | module | what lives there |
//! |---|---|
//! | [`client`] | [`TunnelListener`], [`TunnelStream`], and [`client::offer`] / [`client::claim`] for transfers |
//! | [`tls`] | certificates, fingerprints, how clients verify the relay |
//! | [`transport`] | [`transport::Conn`]: plain TCP or TLS, one byte stream either way |
//! | [`server`] | the relay: control port, tunnel sessions, visitors, rendezvous |
//! | [`auth`] | relay tokens and their challenge proofs |
//! | `ending` | [`SessionEnd`]: why a session or offer ended |
//! | `error` | [`Error`] and [`Result`] |
//! | `protocol` | wire messages and protocol limits (pure data; `docs/protocol.md` is the spec) |
//! | `codec` | length-prefixed bincode frames; the only place bincode is named |
//! | `frame` | framed connections: cancel-safe frame reads, hand-over to raw bytes |
//! | `liveness` | heartbeat timing: when to ping, when a peer is gone, our own stalls |
//! | `mux` | the yamux driver task and its handle; the only place yamux is named |
//! | `reset` | a visitor stream reset by the peer's word on the control stream (version 3) |
//! | `splice` | the bidirectional byte pump with half-close |
//! | `net` | address parsing, listeners, TCP options |
//!
//! The modules without a link are internal: public only for this workspace's binaries, tests
//! and benches, hidden from the documentation, and not covered by any stability promise.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod client;
#[doc(hidden)]
pub mod codec;
#[doc(hidden)]
pub mod ending;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod frame;
#[doc(hidden)]
pub mod liveness;
#[doc(hidden)]
pub mod mux;
#[doc(hidden)]
pub mod net;
#[doc(hidden)]
pub mod protocol;
mod reset;
pub mod server;
#[doc(hidden)]
pub mod splice;
pub mod tls;
pub mod transport;
mod wide;

#[cfg(feature = "axum")]
pub use client::TunnelAddr;
pub use client::{
    Incoming, IncomingVisitor, PublicAddr, Reconnect, SessionHandle, TunnelConfig, TunnelListener,
    TunnelStream, Visitor,
};
pub use ending::SessionEnd;
pub use error::{Error, Result};
pub use protocol::{ErrorCode, MAX_TUNNELS_PER_SESSION};
pub use server::{RelayConfig, RelayServer};
