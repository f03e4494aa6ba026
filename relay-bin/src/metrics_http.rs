//! `relay --metrics ADDR`: Prometheus metrics at `/metrics` and a load balancer health check at
//! `/healthz` (200 while the relay accepts clients, 503 from the moment it starts draining).
//!
//! Hand-rolled HTTP/1.1 rather than hyper: two fixed `GET` paths answered with
//! `Connection: close` need no keep-alive, request bodies, chunking or routing, and the whole
//! server with every bound explicit (request size, time, connections at once) is shorter than
//! the glue hyper would need, without adding its dependency tree to a daemon that otherwise
//! speaks no HTTP.

use std::sync::Arc;
use std::time::Duration;

use relay_core::server::RelayMetrics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Largest request head read; anything longer is answered 431 and closed.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a connection may take to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed unanswered. Scrapers and health checkers open
/// a handful, so reaching this means someone is flooding the port.
pub const MAX_CONNECTIONS: usize = 32;

/// Serves `/metrics` and `/healthz` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, metrics: RelayMetrics, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut sock, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                warn!(error = %e, "accept failed on the metrics port; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(peer = %peer, "too many metrics connections; closing");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(REQUEST_TIMEOUT, answer(&mut sock, &metrics))
                .await
                .is_err()
            {
                debug!(peer = %peer, "metrics request timed out");
            }
        });
    }
}

/// Reads one request head and writes its response.
pub async fn answer<S: AsyncRead + AsyncWrite + Unpin>(sock: &mut S, metrics: &RelayMetrics) {
    let response = match read_head(sock).await {
        Ok(head) => respond(&head, metrics),
        Err(Some(status)) => Response::text(status, status_text(status)),
        Err(None) => return,
    };
    let _ = sock.write_all(&response.into_bytes()).await;
    let _ = sock.shutdown().await;
}

/// The request head up to its blank line; `Err(Some(status))` when it cannot be served,
/// `Err(None)` when the peer left.
async fn read_head<S: AsyncRead + Unpin>(sock: &mut S) -> Result<String, Option<u16>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| Some(400));
        }
        if buf.len() >= MAX_REQUEST {
            return Err(Some(431));
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn respond(head: &str, metrics: &RelayMetrics) -> Response {
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(505, "HTTP Version Not Supported\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" && path != "/healthz" {
        return Response::text(404, "Not Found: try /metrics or /healthz\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::text(405, "Method Not Allowed\n"),
    };
    let mut response = if path == "/metrics" {
        Response {
            status: 200,
            content_type: RelayMetrics::CONTENT_TYPE,
            body: metrics.encode(),
        }
    } else if metrics.is_accepting() {
        Response::text(200, "ok\n")
    } else if metrics.is_draining() {
        Response::text(503, "draining\n")
    } else {
        Response::text(503, "starting\n")
    };
    if head_only {
        response.body.clear();
    }
    response
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            status_text(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::{RelayConfig, RelayServer};

    async fn ask(request: &[u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let relay = RelayServer::new(listener, RelayConfig::default()).expect("relay");
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let metrics = relay.metrics();
        let served = tokio::spawn(async move { answer(&mut server, &metrics).await });
        client.write_all(request).await.expect("write");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read");
        served.await.expect("served");
        String::from_utf8(back).expect("utf-8")
    }

    #[tokio::test]
    async fn routes_and_refusals() {
        let metrics = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("relay_build_info"), "{metrics}");
        // Not running yet: not ready for clients either.
        let health = ask(b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
        let head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
        assert!(ask(b"GET / HTTP/1.1\r\n\r\n").await.contains(" 404 "));
        assert!(
            ask(b"POST /metrics HTTP/1.1\r\n\r\n")
                .await
                .contains(" 405 ")
        );
        assert!(ask(b"junk\r\n\r\n").await.contains(" 400 "));
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST + 100, b'a');
        assert!(ask(&huge).await.starts_with("HTTP/1.1 431 "));
    }
}
