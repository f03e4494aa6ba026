//! An axum service behind a relay: `axum-service RELAYHOST:PORT`.
//!
//! Prints its public address on stdout, then serves
//! * `GET /`: greets the visitor by address (from `ConnectInfo<Visitor>`),
//! * `POST /echo`: streams the request body back,
//! * `GET /slow`: five lines, 200 ms apart (a long answer, to watch a graceful shutdown).
//!
//! On SIGINT or SIGTERM it stops taking visitors, lets the requests in flight finish, says
//! goodbye to the relay and exits. It also stops when the session is lost for good.
//!
//! ```text
//! cargo run -p relay-examples --bin axum-service -- relay.example.com:8080
//! ```

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use relay_core::{TunnelConfig, TunnelListener, Visitor};

/// How long the requests in flight get once a shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = std::env::args()
        .nth(1)
        .ok_or("usage: axum-service RELAYHOST:PORT")?;
    let listener = TunnelListener::connect(&relay, TunnelConfig::default()).await?;
    println!("{}", listener.public_addr());
    // `axum::serve` takes the listener; this handle ends the session once it has returned.
    let session = listener.session();

    let app = Router::new()
        .route("/", get(hello))
        .route("/echo", post(echo))
        .route("/slow", get(slow));
    let lost = session.clone();
    let stop = async move {
        tokio::select! {
            () = signal() => eprintln!("shutting down"),
            end = lost.ended() => eprintln!("session ended: {end}"),
        }
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<Visitor>(),
    )
    .with_graceful_shutdown(stop)
    .await?;
    // Every connection is closed by now, each with a clean end: say goodbye and wait until the
    // relay has let the last bytes through.
    session.shutdown(GRACE).await;
    Ok(())
}

async fn hello(ConnectInfo(visitor): ConnectInfo<Visitor>) -> String {
    format!("hello, {}\n", visitor.addr)
}

async fn echo(body: Body) -> Body {
    Body::from_stream(body.into_data_stream())
}

async fn slow() -> Body {
    let lines = five_lines();
    Body::from_stream(lines)
}

/// Five lines, 200 ms apart.
fn five_lines() -> impl futures::stream::Stream<Item = Result<String, std::convert::Infallible>> {
    futures::stream::unfold(0, |i| async move {
        if i == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Some((Ok(format!("line {i}\n")), i + 1))
    })
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
