//! A hyper service behind a relay, with its own accept loop: `hyper-service RELAYHOST:PORT`.
//!
//! The lower-level way, for when you want the loop in your hands: every accepted
//! [`TunnelStream`](relay_core::TunnelStream) is wrapped in `hyper_util::rt::TokioIo` (hyper
//! has I/O traits of its own) and served by `hyper::server::conn::http1`; the visitor that
//! `accept` returns is what `ConnectInfo` would carry. Serves `GET /` (greets the visitor by
//! address) and `POST /echo` (streams the body back).
//!
//! On SIGINT or SIGTERM: stop taking visitors, let each connection finish its request in
//! flight (`hyper_util::server::graceful`), say goodbye to the relay, exit.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use relay_core::{TunnelConfig, TunnelListener, Visitor};

/// How long the requests in flight get once a shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = std::env::args()
        .nth(1)
        .ok_or("usage: hyper-service RELAYHOST:PORT")?;
    let listener = TunnelListener::connect(&relay, TunnelConfig::default()).await?;
    println!("{}", listener.public_addr());

    let connections = GracefulShutdown::new();
    let mut stop = std::pin::pin!(signal());
    loop {
        let (stream, visitor) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut stop => break,
        };
        let service = service_fn(move |req| handle(req, visitor));
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("visitor {}: {e}", visitor.addr);
            }
        });
    }
    eprintln!("shutting down");
    // No new visitors; each connection finishes the request in flight and closes cleanly.
    listener.stop_accepting();
    if tokio::time::timeout(GRACE, connections.shutdown())
        .await
        .is_err()
    {
        eprintln!("connections still open after {GRACE:?}");
    }
    // Say goodbye and wait until the relay has let the last bytes through.
    listener.shutdown(Duration::ZERO).await;
    Ok(())
}

async fn handle(req: Request<Incoming>, visitor: Visitor) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => Response::new(full(format!("hello, {}\n", visitor.addr))),
        (&Method::POST, "/echo") => Response::new(req.into_body().boxed()),
        _ => {
            let mut not_found = Response::new(full("not found\n".to_string()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            not_found
        }
    };
    Ok(response)
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
