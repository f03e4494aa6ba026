//! Latency and setup-rate probes: ping-pong, sequential connects, sustained connects per second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use relay_benches::fixture::{connect_first_byte, round_trip};
use relay_benches::stats::Summary;
use tokio::net::TcpStream;

/// Deadline for one connect-and-echo or round trip; a slower one counts as an error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Deadline for a whole sequential probe, so a target that stalls every operation still ends
/// the probe in bounded time (the figures then report the errors).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(120);

/// `count` timed round trips of `size` bytes on one connection, after `warmup` untimed ones.
pub async fn pingpong(
    addr: SocketAddr,
    count: usize,
    warmup: usize,
    size: usize,
) -> anyhow::Result<()> {
    if size == 0 || size > 1 << 20 {
        bail!("size must be 1 byte to 1 MiB");
    }
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_nodelay(true)?;
    let mut buf = vec![0x42u8; size];
    let mut samples = Vec::with_capacity(count);
    let deadline = Instant::now() + PROBE_DEADLINE;
    for i in 0..warmup + count {
        if Instant::now() > deadline {
            bail!("ping-pong did not finish within {PROBE_DEADLINE:?}");
        }
        let start = Instant::now();
        tokio::time::timeout(OP_TIMEOUT, round_trip(&mut s, &mut buf))
            .await
            .context("round trip timed out")?
            .context("round trip failed")?;
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    let summary = Summary::of(&mut samples).context("no samples")?;
    println!("pingpong size={size} {summary}");
    Ok(())
}

/// `count` sequential connect + 1-byte echo latencies (closing is not timed).
pub async fn connect(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let mut samples = Vec::with_capacity(count);
    let mut errors = 0u64;
    // A few untimed connects first, so the first timed one finds every code path warm.
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::from_secs(1), connect_first_byte(addr)).await;
    }
    let deadline = Instant::now() + PROBE_DEADLINE;
    for _ in 0..count {
        if Instant::now() > deadline {
            errors += 1;
            continue;
        }
        let start = Instant::now();
        match tokio::time::timeout(OP_TIMEOUT, connect_first_byte(addr)).await {
            Ok(Ok(conn)) => {
                samples.push(start.elapsed());
                drop(conn);
            }
            _ => errors += 1,
        }
    }
    match Summary::of(&mut samples) {
        Some(summary) => println!("connect {summary} errors={errors}"),
        None => println!("connect n=0 errors={errors}"),
    }
    Ok(())
}

/// New connections per second for `duration` with `concurrency` in flight, at most `max_count`.
pub async fn rate(
    addr: SocketAddr,
    duration: Duration,
    concurrency: usize,
    max_count: u64,
) -> anyhow::Result<()> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let cpu_before = relay_benches::stats::process_cpu();
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (ok, errors, started) = (ok.clone(), errors.clone(), started.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline
                    && started.fetch_add(1, Ordering::Relaxed) < max_count
                {
                    match tokio::time::timeout(OP_TIMEOUT, connect_first_byte(addr)).await {
                        Ok(Ok(conn)) => {
                            drop(conn);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    // The load generator's own CPU per connection, so a run can account for every process.
    let cpu_us_per_conn = match (cpu_before, relay_benches::stats::process_cpu()) {
        (Some(before), Some(after)) if ok > 0 => {
            format!("{:.1}", (after - before).as_secs_f64() * 1e6 / ok as f64)
        }
        _ => "-".to_string(),
    };
    println!(
        "rate conns_per_s={:.0} ok={ok} errors={} seconds={elapsed:.2} concurrency={concurrency} cpu_us_per_conn={cpu_us_per_conn}",
        ok as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
