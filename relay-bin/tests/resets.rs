//! Visitor resets through the real binaries (protocol version 3): a side that drops a
//! half-closed stream while the other is still pushing must not leave the pusher, and the
//! connection behind it, waiting for ever. And a client meeting a relay too old for it says
//! what to do.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;

use relay_test_support::{DEADLINE, Proc, Relay};

const CHUNK: usize = 64 * 1024;

/// `expose` in front of the local server on `local`, and the public address it printed.
fn expose(relay: &Relay, local: u16) -> (Proc, String) {
    let args = [
        "127.0.0.1",
        &relay.port().to_string(),
        &local.to_string(),
        "--no-reconnect",
    ];
    let mut expose = Proc::spawn("expose", &args);
    let public = expose.first_line();
    (expose, public)
}

/// A visitor downloads from a local server that sends without end, half-closes, and goes
/// away. The relay drops its half-closed stream and resets it on the control stream; `expose`
/// then resets the local connection, where the server's write fails, instead of keeping it
/// (and its buffers) while waiting for credit that never comes.
#[test]
fn the_local_server_of_a_download_whose_visitor_left_sees_its_connection_end() {
    let relay = Relay::start(&[]);
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let local = server.local_addr().expect("addr").port();
    let (ended_tx, ended) = mpsc::channel();
    let (fin_tx, fin) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = server.accept().expect("accept");
        let mut reader = conn.try_clone().expect("clone");
        std::thread::spawn(move || {
            // The visitor's FIN arrives as end of stream (`expose` shuts down our side).
            let mut sink = vec![0u8; CHUNK];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            let _ = fin_tx.send(());
        });
        let chunk = vec![5u8; CHUNK];
        loop {
            if let Err(e) = conn.write_all(&chunk) {
                let _ = ended_tx.send(e.kind());
                return;
            }
        }
    });
    let (_expose, public) = expose(&relay, local);
    let mut visitor = TcpStream::connect(&public).expect("visitor");
    visitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut first = vec![0u8; 16 * 1024];
    visitor.read_exact(&mut first).expect("the first bytes");
    visitor.shutdown(Shutdown::Write).expect("half-close");
    fin.recv_timeout(DEADLINE)
        .expect("the visitor's FIN to reach the local server");
    // Gone with the rest of the download unread.
    drop(visitor);
    let kind = ended
        .recv_timeout(DEADLINE)
        .expect("the local server's connection to end");
    assert!(
        matches!(kind, ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{kind:?}"
    );
}

/// The other way: the local server half-closes, then exits without reading, while the
/// visitor keeps uploading. `expose` drops its half-closed stream and resets it on the control
/// stream; the relay, waiting for credit to write the upload, resets the visitor.
#[test]
fn a_visitor_uploading_to_a_local_server_that_left_is_reset() {
    let relay = Relay::start(&[]);
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let local = server.local_addr().expect("addr").port();
    let (fin_tx, fin) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut conn, _) = server.accept().expect("accept");
        let mut first = vec![0u8; 16 * 1024];
        conn.read_exact(&mut first).expect("the first bytes");
        conn.shutdown(Shutdown::Write).expect("half-close");
        // Once the FIN has crossed (a reset overtaking it would cut the stream while still
        // open, which yamux does report), exit with the rest unread: the close resets the
        // connection to `expose`.
        let _ = fin.recv_timeout(DEADLINE);
    });
    let (_expose, public) = expose(&relay, local);
    let mut visitor = TcpStream::connect(&public).expect("visitor");
    let mut reader = visitor.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut sink = [0u8; 1024];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        let _ = fin_tx.send(());
    });
    // A write that blocks past the deadline fails with `WouldBlock`, failing the test.
    visitor.set_write_timeout(Some(DEADLINE)).expect("timeout");
    let chunk = vec![1u8; CHUNK];
    let error = loop {
        if let Err(e) = visitor.write_all(&chunk) {
            break e;
        }
    };
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "the visitor was not reset: {error}"
    );
}

/// A fake relay of protocol version 2 only: it answers any other version as such a relay
/// does, with its preface and `VersionMismatch`.
fn old_relay() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut preface = [0u8; 8];
            if conn.read_exact(&mut preface).is_err() {
                continue;
            }
            let version = u16::from_be_bytes([preface[6], preface[7]]);
            let message = format!("client speaks protocol version {version}, this relay speaks 2");
            let reply = relay_core::protocol::Reply::Error {
                code: relay_core::ErrorCode::VersionMismatch,
                message,
            };
            let mut out = relay_core::protocol::preface(2).to_vec();
            out.extend(relay_core::codec::encode(&reply).expect("encode"));
            let _ = conn.write_all(&out);
            let _ = conn.shutdown(Shutdown::Write);
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        }
    });
    port
}

/// This client speaks version 3 only; a version-2 relay refuses it, and the user reads one line
/// that names both versions and what to do.
#[test]
fn a_relay_too_old_for_the_client_is_named_with_the_way_out() {
    let port = old_relay().to_string();
    let mut expose = Proc::spawn("expose", &["127.0.0.1", &port, "9", "--no-reconnect"]);
    let status = expose.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", expose.stderr());
    let stderr = expose.stderr();
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(line.starts_with("expose: "), "{line}");
    for part in [
        "protocol version 2",
        "speaks 3",
        "upgrade the relay",
        "client release that speaks version 2",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
}
