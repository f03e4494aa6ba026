//! The examples, run as a user would: the real `relay`, the example service, and plain HTTP/1.1
//! requests from visitors on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use relay_test_support::{DEADLINE, Proc, Relay};

/// A response as a visitor read it: status line, headers, decoded body.
#[derive(Debug)]
struct Response {
    status: String,
    body: Vec<u8>,
}

/// Sends one request with `Connection: close` and reads until the server closes; a reset
/// anywhere is an error.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: example\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    let mut writer = s.try_clone()?;
    let body = body.to_vec();
    // Written alongside the read: the echo streams back while the body goes up.
    let sending = std::thread::spawn(move || writer.write_all(&body));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    sending.join().expect("writer thread")?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    let headers = headers.to_string();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).ok_or_else(|| bad("truncated chunked body"))?;
    }
    Ok(Response {
        status: status.to_string(),
        body,
    })
}

/// Decodes a chunked body; `None` unless it ends with the last (empty) chunk.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Starts an example service against `relay` and returns it with its public address.
fn service(name: &str, relay: &Relay) -> (Proc, String) {
    let mut proc = Proc::spawn(name, &[&relay.host_port()]);
    let public = proc.first_line();
    (proc, public)
}

fn serves_get_echo_and_concurrent_requests(name: &str) {
    let relay = Relay::start(&[]);
    let (_service, public) = service(name, &relay);

    let hello = request(&public, "GET", "/", b"").expect("GET /");
    assert!(hello.status.contains("200"), "{hello:?}");
    // The handler sees the visitor's own address.
    let text = String::from_utf8_lossy(&hello.body).into_owned();
    assert!(text.starts_with("hello, 127.0.0.1:"), "{text}");
    let port: u16 = text
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_ne!(port, relay.port());

    let big = payload(10 * 1024 * 1024);
    let echoed = request(&public, "POST", "/echo", &big).expect("POST /echo");
    assert!(echoed.status.contains("200"), "{}", echoed.status);
    assert_eq!(echoed.body.len(), big.len());
    assert!(echoed.body == big, "10 MiB echo differs");

    let started = Instant::now();
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let public = public.clone();
            std::thread::spawn(move || {
                let body = format!("request {i}").into_bytes();
                let r = request(&public, "POST", "/echo", &body).expect("concurrent echo");
                assert_eq!(r.body, body);
            })
        })
        .collect();
    for r in requests {
        r.join().expect("request thread");
    }
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn axum_example_serves_get_a_10_mib_echo_and_50_concurrent_requests() {
    serves_get_echo_and_concurrent_requests("axum-service");
}

#[test]
fn hyper_example_serves_get_a_10_mib_echo_and_50_concurrent_requests() {
    serves_get_echo_and_concurrent_requests("hyper-service");
}

#[test]
fn a_long_answer_in_flight_at_sigterm_completes_with_a_clean_end_20_of_20() {
    let relay = Relay::start(&[]);
    for trial in 0..20 {
        let (mut service, public) = service("axum-service", &relay);
        let mut s = TcpStream::connect(&public).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: example\r\n\r\n")
            .expect("request");
        // The answer has begun (its first line is out) when the shutdown starts.
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(6).any(|w| w == b"line 0") {
            let n = s.read(&mut buf).expect("first line");
            assert!(n > 0, "trial {trial}: closed early: {raw:?}");
            raw.extend_from_slice(&buf[..n]);
        }
        service.signal("TERM");
        // Every line, then a clean end of stream (a reset fails `read_to_end`).
        s.read_to_end(&mut raw).unwrap_or_else(|e| {
            panic!(
                "trial {trial}: {e} after {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
        let response = parse(&raw).expect("response");
        let body = String::from_utf8_lossy(&response.body).into_owned();
        assert_eq!(
            body, "line 0\nline 1\nline 2\nline 3\nline 4\n",
            "trial {trial}: {response:?}"
        );
        // The visitor closes its side, as a browser would; the service exits, having said
        // goodbye: a new visitor finds the port closed.
        let _ = s.shutdown(Shutdown::Both);
        let status = service.wait_exit(DEADLINE);
        assert!(
            status.success(),
            "trial {trial}: {status}; {}",
            service.stderr()
        );
        let refused = TcpStream::connect(&public);
        assert!(
            refused.is_err(),
            "trial {trial}: port still open after exit"
        );
    }
}
