//! The `axum` feature: a [`TunnelListener`] is an `axum::serve::Listener`, so
//! `axum::serve(listener, app)` works as with a `tokio::net::TcpListener`, connect info
//! included.

use std::fmt;
use std::io;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tracing::warn;

use super::public_addr::PublicAddr;
use super::stream::TunnelStream;
use super::tunnel::TunnelListener;
use super::visitor::Visitor;

/// An address at either end of a tunnel: the `Addr` of [`TunnelListener`] as an
/// `axum::serve::Listener`. `local_addr` gives the public address, `accept` the visitor.
///
/// For handlers, ask for the visitor directly:
///
/// ```no_run
/// use axum::extract::ConnectInfo;
/// use axum::{Router, routing::get};
/// use relay_core::{TunnelConfig, TunnelListener, Visitor};
///
/// async fn hello(ConnectInfo(visitor): ConnectInfo<Visitor>) -> String {
///     format!("hello, {}\n", visitor.addr)
/// }
///
/// # async fn run() -> relay_core::Result<()> {
/// let listener = TunnelListener::connect("relay.example.com:8080", TunnelConfig::default()).await?;
/// let app = Router::new().route("/", get(hello));
/// axum::serve(listener, app.into_make_service_with_connect_info::<Visitor>()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelAddr {
    /// The tunnel's public address on the relay.
    Public(PublicAddr),
    /// A visitor that connected there.
    Visitor(Visitor),
}

impl TunnelAddr {
    /// The visitor, for an address `accept` gave.
    pub fn visitor(&self) -> Option<Visitor> {
        match self {
            TunnelAddr::Visitor(v) => Some(*v),
            TunnelAddr::Public(_) => None,
        }
    }
}

impl fmt::Display for TunnelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelAddr::Public(addr) => addr.fmt(f),
            TunnelAddr::Visitor(v) => v.addr.fmt(f),
        }
    }
}

/// `accept` never fails (the trait cannot say so): when the tunnel can take no more visitors
/// (the session was lost for good, or [`TunnelListener::stop_accepting`] was called), it logs
/// why once and then waits forever. To stop the server when the session is lost, put
/// [`SessionHandle::ended`](crate::SessionHandle::ended) into its graceful-shutdown signal.
impl Listener for TunnelListener {
    type Io = TunnelStream;
    type Addr = TunnelAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match TunnelListener::accept(self).await {
            Ok((stream, visitor)) => (stream, TunnelAddr::Visitor(visitor)),
            Err(e) => {
                warn!(error = %e, public = %self.public_addr(), "tunnel takes no more visitors");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TunnelAddr::Public(self.public_addr()))
    }
}

impl Connected<IncomingStream<'_, TunnelListener>> for Visitor {
    fn connect_info(stream: IncomingStream<'_, TunnelListener>) -> Self {
        stream.io().visitor()
    }
}

impl Connected<IncomingStream<'_, TunnelListener>> for TunnelAddr {
    fn connect_info(stream: IncomingStream<'_, TunnelListener>) -> Self {
        stream.remote_addr().clone()
    }
}
