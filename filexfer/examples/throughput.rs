//! One transfer through a relay on loopback, encrypted (the real `send`/`receive` code paths)
//! and as a plain socket copy of the same file through the same relay, measured in the same run.
//!
//! ```text
//! cargo run --release -p filexfer --example throughput -- [MIB] [DIR] [ROUNDS]
//! ```
//!
//! MIB defaults to 1024, DIR to /dev/shm (so the disk does not set the pace), ROUNDS to 3.
//! The relay, the sender and the receiver each get their own 2-thread runtime, as the three
//! processes would.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use filexfer::{Code, NoProgress, Offered, ReceiveOptions, Source};
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).map_or(1024, |s| s.parse().expect("MIB"));
    let base = args.get(2).map_or_else(
        || {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        },
        PathBuf::from,
    );
    let rounds: usize = args.get(3).map_or(3, |s| s.parse().expect("ROUNDS"));
    let dir = base.join(format!("filexfer-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let file = dir.join("payload.bin");
    make_file(&file, mib);

    let relay_rt = runtime();
    let relay = relay_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = relay_core::RelayServer::new(listener, Default::default()).expect("relay");
        let addr = server.local_addr().expect("addr").to_string();
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));
        (addr, stop)
    });

    let bytes = mib << 20;
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let p = plain_copy(&relay.0, &file, &dir.join("plain.out"));
        let s = encrypted(&relay.0, &file, &dir.join("out"));
        println!(
            "round {}: plain {:6.0} MB/s   encrypted {:6.0} MB/s",
            round + 1,
            mbps(bytes, p),
            mbps(bytes, s)
        );
        plain.push(p);
        sealed.push(s);
    }
    let (p, s) = (median(&mut plain), median(&mut sealed));
    println!(
        "median of {rounds}, {mib} MiB: plain socket copy {:.0} MB/s, encrypted {:.0} MB/s, ratio {:.2}",
        mbps(bytes, p),
        mbps(bytes, s),
        p.as_secs_f64() / s.as_secs_f64()
    );
    relay.1.cancel();
    drop(relay_rt);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn make_file(path: &Path, mib: u64) {
    let mut out = std::fs::File::create(path).expect("create payload");
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        rand::fill(&mut block[..]);
        out.write_all(&block).expect("write payload");
    }
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The whole `send` + `receive` path minus process start-up; timed from the receiver's claim
/// to the sender's confirmation.
fn encrypted(relay: &str, file: &Path, outdir: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(outdir);
    let (code_tx, code_rx) = mpsc::channel::<Code>();
    let sender = {
        let (relay, file) = (relay.to_string(), file.to_path_buf());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let offered = Offered::register(&relay, Source::open(&file).expect("source"))
                    .await
                    .expect("offer");
                code_tx.send(offered.code().clone()).expect("code");
                let cancel = CancellationToken::new();
                offered.run(None, &NoProgress, &cancel).await.expect("send");
            });
        })
    };
    let code = code_rx.recv().expect("code");
    let start = Instant::now();
    runtime().block_on(async {
        let cancel = CancellationToken::new();
        filexfer::receive(
            relay,
            &code,
            outdir,
            ReceiveOptions {
                force: true,
                ..ReceiveOptions::default()
            },
            &NoProgress,
            &cancel,
        )
        .await
        .expect("receive");
    });
    sender.join().expect("sender thread");
    start.elapsed()
}

/// The baseline: the same relay pairing, then a plain copy on each side (`sendfile` from the
/// file to the socket, a read/write loop with 1 MiB reads from the socket to the file).
fn plain_copy(relay: &str, file: &Path, out: &Path) -> Duration {
    let (np_tx, np_rx) = mpsc::channel::<String>();
    let sender = {
        let (relay, file) = (relay.to_string(), file.to_path_buf());
        std::thread::spawn(move || {
            let sock = runtime().block_on(async {
                let offer = relay_core::client::offer(&relay, Duration::from_secs(10))
                    .await
                    .expect("offer");
                np_tx
                    .send(offer.nameplate().to_string())
                    .expect("nameplate");
                offer.wait_for_receiver().await.expect("paired")
            });
            let (sock, early) = sock.into_parts();
            assert!(
                early.is_empty(),
                "the receiver sends nothing in this baseline"
            );
            let mut sock = blocking(sock);
            let mut src = std::fs::File::open(&file).expect("open");
            std::io::copy(&mut src, &mut sock).expect("send");
            let mut buf = [0u8; 1];
            sock.shutdown(std::net::Shutdown::Write).expect("shutdown");
            // Wait for the receiver's close, so both loops finished when we return.
            let _ = sock.read(&mut buf);
        })
    };
    let nameplate = np_rx.recv().expect("nameplate");
    let start = Instant::now();
    let sock = runtime()
        .block_on(relay_core::client::claim(
            relay,
            &nameplate,
            Duration::from_secs(10),
        ))
        .expect("claim");
    let (sock, early) = sock.into_parts();
    let mut sock = blocking(sock);
    let mut dst = std::fs::File::create(out).expect("create");
    dst.write_all(&early).expect("write file");
    // std's copy would use an 8 KiB buffer for socket to file; give the baseline large reads.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = sock.read(&mut buf).expect("receive");
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).expect("write file");
    }
    drop(sock);
    sender.join().expect("sender thread");
    let took = start.elapsed();
    std::fs::remove_file(out).expect("remove copy");
    took
}

fn blocking(sock: relay_core::transport::Conn) -> std::net::TcpStream {
    let sock = sock.into_plain().expect("a plain connection");
    let sock = sock.into_std().expect("std socket");
    sock.set_nonblocking(false).expect("blocking");
    sock
}
