//! A TCP forwarder a test puts between a client and the relay: it can cut every connection
//! underneath both ends (a reset, as a NAT box or a dying Wi-Fi does), hold new connections
//! back for a while (the outage), and count the bytes it carries.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A forwarder on `127.0.0.1`, relaying every connection to one target.
#[derive(Debug)]
pub struct Forwarder {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    paused: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every live connection pair, to cut them.
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
    /// Bytes carried from clients to the target, and back.
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicU64,
}

impl Forwarder {
    /// Starts forwarding to `target`.
    pub fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        std::thread::spawn(move || accept_loop(listener, target, accepting));
        Forwarder { addr, shared }
    }

    /// Resets every connection it carries, on both sides.
    pub fn cut_all(&self) {
        let pairs: Vec<_> = self.shared.live.lock().expect("live").drain(..).collect();
        for (a, b) in pairs {
            for s in [&a, &b] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Stops taking new connections (they wait in the kernel's queue) until [`resume`].
    ///
    /// [`resume`]: Forwarder::resume
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::Release);
    }

    /// Takes new connections again.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::Release);
    }

    /// Bytes carried from clients to the target so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Bytes carried from the target to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::Relaxed)
    }

    /// Connections taken so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.cut_all();
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    // Polls, so that a pause really leaves new connections unaccepted and a stop is noticed.
    while !shared.stop.load(Ordering::Acquire) {
        if shared.paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        if let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) {
            shared.live.lock().expect("live").push((c3, s3));
        }
        let up = shared.clone();
        std::thread::spawn(move || pump(client, server, &up.up));
        let down = shared.clone();
        std::thread::spawn(move || pump(s2, c2, &down.down));
    }
}

/// Copies one direction until either side ends; a FIN is passed on as a FIN.
fn pump(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
