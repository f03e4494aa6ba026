//! One connection to the control port, from its first byte to its end: PROXY header, TLS or
//! plain, the hello, the token check, admission, then a tunnel session or a transfer.

use tracing::debug;

use super::*;

/// Serves one connection from its first byte to its end.
///
/// Every stage but the tunnel session runs boxed: the task's future is as large as its largest
/// stage, and a tunnel session may stay idle for days, while the TLS opening and the token
/// check are over in a moment. Inline, they kept every idle session's task at 7 KiB of heap;
/// boxed, they cost one short-lived allocation per connection (docs/benchmark.md).
pub(super) async fn handle_connection(
    mut sock: TcpStream,
    peer: SocketAddr,
    trusted: bool,
    shared: Arc<Shared>,
    mut handshake_permit: HandshakeTicket,
    shutdown: CancellationToken,
) {
    tune_session_socket(&sock);
    let config = &shared.config;
    // One deadline for the whole handshake: PROXY header, TLS, hello, token check.
    let deadline = tokio::time::Instant::now() + config.handshake_timeout;
    let peer = match trusted {
        false => peer,
        true => {
            let origin = tokio::select! {
                () = shutdown.cancelled() => return,
                origin = tokio::time::timeout_at(deadline, Box::pin(proxied::read_header(&mut sock))) => origin,
            };
            match proxy_gate::behind_proxy(origin, peer, &shared, &mut handshake_permit) {
                Ok(Some(real)) => real,
                Ok(None) => return,
                Err(refused) => {
                    let answer = Box::pin(refuse(&mut sock, refused.code, refused.message));
                    let _ = tokio::time::timeout(config.handshake_timeout, answer).await;
                    return;
                }
            }
        }
    };
    let opened = tokio::select! {
        () = shutdown.cancelled() => return,
        opened = tokio::time::timeout_at(deadline, Box::pin(opening::open(sock, config, &shared.refusals))) => opened,
    };
    let conn = match opened {
        Ok(Some(conn)) => conn,
        Ok(None) => return,
        Err(_) => {
            debug!(timeout = ?config.handshake_timeout, "handshake timed out before a hello; closing");
            return;
        }
    };
    let tls = conn.is_tls();
    let mut conn = FramedConn::new(conn, config.max_frame_len);
    let hello = tokio::select! {
        () = shutdown.cancelled() => return,
        hello = tokio::time::timeout_at(deadline, read_hello(&mut conn)) => hello,
    };
    let (hello, hello_bytes, version) = match hello {
        Err(_) => {
            shared.metrics.handshake_failed("timeout");
            debug!(timeout = ?config.handshake_timeout, "handshake timed out; closing");
            return;
        }
        Ok(Err(rejection)) => {
            shared.metrics.hello_rejected(&rejection);
            log_rejection(&rejection);
            let _ = tokio::time::timeout(
                config.handshake_timeout,
                Box::pin(answer_rejection(conn.get_mut(), &rejection)),
            )
            .await;
            return;
        }
        Ok(Ok(hello)) => hello,
    };
    tracing::Span::current().record("tls", tls);
    let client = Client::new(conn, peer, version);
    let checked = Box::pin(admission::check_token(
        client,
        &hello_bytes,
        deadline,
        &shared,
        &mut handshake_permit,
        &shutdown,
    ));
    let Some(client) = checked.await else {
        return;
    };
    drop(handshake_permit);
    // Held (the address's session or offer slot) for as long as the client is served.
    let _admitted = match admission::admit(&client, &hello, &shared) {
        Ok(admitted) => admitted,
        Err(refused) => return Box::pin(refused.answer(client, &shared.refusals)).await,
    };
    match hello {
        Hello::Tunnel { tunnels } => session::run(client, tunnels, shared, shutdown).await,
        Hello::Send => Box::pin(rendezvous::offer(client, shared, shutdown)).await,
        Hello::Receive { nameplate } => {
            Box::pin(rendezvous::claim(client, nameplate, shared)).await
        }
    }
}

fn log_rejection(rejection: &Rejection) {
    match rejection {
        Rejection::Frame(crate::codec::CodecError::Closed) => {
            debug!("connection closed before its handshake")
        }
        _ => info!(reason = %rejection, "handshake rejected"),
    }
}
