//! Time-bounded bulk transfer over P connections (the iperf3 stand-in).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use relay_benches::fixture::Direction;
use relay_benches::service::{IO_CHUNK, OP_SINK, OP_SOURCE, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Extra time a connection gets beyond `duration` to deliver its last bytes and count.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

pub async fn bulk(
    addr: SocketAddr,
    duration: Duration,
    parallel: usize,
    dir: Direction,
) -> anyhow::Result<()> {
    let mut conns = Vec::with_capacity(parallel);
    for _ in 0..parallel {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|s| {
            tokio::spawn(tokio::time::timeout(duration + DRAIN_GRACE, async move {
                match dir {
                    Direction::Upload => upload(s, deadline).await,
                    Direction::Download => download(s, deadline).await,
                }
            }))
        })
        .collect();
    let mut total = 0u64;
    for t in tasks {
        total += t.await?.context("bulk connection stalled")??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "bulk direction={} parallel={parallel} gbit_s={:.3} bytes={total} seconds={secs:.2}",
        dir.name(),
        total as f64 * 8.0 / secs / 1e9
    );
    Ok(())
}

/// Sends until `deadline`, half-closes, and returns the byte count the server reports.
async fn upload(mut s: TcpStream, deadline: Instant) -> anyhow::Result<u64> {
    let buf = vec![0xa5u8; IO_CHUNK];
    s.write_all(&request(OP_SINK, 0)).await?;
    while Instant::now() < deadline {
        s.write_all(&buf).await?;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .await
        .context("server did not report its count")?;
    Ok(u64::from_be_bytes(count))
}

/// Receives until `deadline`, then closes; returns the bytes received.
async fn download(mut s: TcpStream, deadline: Instant) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; IO_CHUNK];
    s.write_all(&request(OP_SOURCE, 0)).await?;
    let mut total = 0u64;
    while Instant::now() < deadline {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!("server closed the connection early");
        }
        total += n as u64;
    }
    Ok(total)
}
