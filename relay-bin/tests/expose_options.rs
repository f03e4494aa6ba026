//! `expose` options as a user gives them: PROXY protocol headers for the local server, and a
//! config file instead of the command line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use relay_test_support::{DEADLINE, Proc, Relay};

/// A local server that reads a PROXY header with its own parser (not the one `expose` uses)
/// and reports the source and destination addresses it carried.
fn proxy_server(version: u8) -> (u16, mpsc::Receiver<(SocketAddr, SocketAddr)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let parsed = if version == 1 {
                read_v1(conn)
            } else {
                read_v2(conn)
            };
            let _ = tx.send(parsed);
        }
    });
    (port, rx)
}

fn read_v1(conn: TcpStream) -> (SocketAddr, SocketAddr) {
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .expect("header line");
    let fields: Vec<&str> = line.trim_end_matches("\r\n").split(' ').collect();
    assert_eq!(&fields[..2], ["PROXY", "TCP4"], "{line:?}");
    let addr = |ip: &str, port: &str| format!("{ip}:{port}").parse().expect("address");
    (addr(fields[2], fields[4]), addr(fields[3], fields[5]))
}

fn read_v2(mut conn: TcpStream) -> (SocketAddr, SocketAddr) {
    let mut head = [0u8; 16];
    conn.read_exact(&mut head).expect("v2 header");
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(head[12], 0x21, "v2 PROXY");
    assert_eq!(head[13], 0x11, "TCP over IPv4");
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).expect("addresses");
    let ip = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    (
        SocketAddr::from((ip(&body[0..4]), port(&body[8..10]))),
        SocketAddr::from((ip(&body[4..8]), port(&body[10..12]))),
    )
}

fn check_proxy_header(version: u8) {
    let relay = Relay::start(&[]);
    let (local, headers) = proxy_server(version);
    let flag = format!("v{version}");
    let args = [
        "--proxy-protocol",
        &flag,
        "127.0.0.1",
        &relay.port().to_string(),
        &local.to_string(),
    ];
    let mut expose = Proc::spawn("expose", &args);
    let public = expose.first_line();
    let visitor = TcpStream::connect(&public).expect("visitor");
    let (src, dst) = headers.recv_timeout(DEADLINE).expect("a header");
    assert_eq!(src, visitor.local_addr().expect("visitor address"));
    assert_eq!(dst, visitor.peer_addr().expect("public address"));
}

#[test]
fn proxy_protocol_v1_carries_the_visitors_address() {
    check_proxy_header(1);
}

#[test]
fn proxy_protocol_v2_carries_the_visitors_address() {
    check_proxy_header(2);
}

#[test]
fn a_config_file_describes_the_relay_and_the_tunnels() {
    let relay = Relay::start(&[]);
    let (local, headers) = proxy_server(1);
    let dir = std::env::temp_dir().join(format!("expose-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("expose.toml");
    let text = format!(
        "relay = \"{}\"\n\n[[tunnel]]\nlocal = \"{local}\"\nproxy_protocol = \"v1\"\n",
        relay.host_port()
    );
    std::fs::write(&path, text).expect("config");
    let mut expose = Proc::spawn("expose", &["--config", path.to_str().expect("utf-8")]);
    let public = expose.first_line();
    let mut visitor = TcpStream::connect(&public).expect("visitor");
    visitor.write_all(b"hi").expect("write");
    let (src, _) = headers.recv_timeout(DEADLINE).expect("a header");
    assert_eq!(src, visitor.local_addr().expect("visitor address"));

    // A typo names the key and its line, on one line, and exits 1.
    std::fs::write(
        &path,
        "relay = \"127.0.0.1:1\"\n[[tunnel]]\nlocall = \"1\"\n",
    )
    .expect("bad");
    let mut bad = Proc::spawn("expose", &["--config", path.to_str().expect("utf-8")]);
    assert_eq!(bad.wait_exit(DEADLINE).code(), Some(1));
    let err = bad.stderr();
    assert!(err.contains("line 3") && err.contains("locall"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
