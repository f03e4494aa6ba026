//! Many idle connections held open at once: the memory-per-visitor and 10,000-visitor checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_benches::fixture::connect_first_byte;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Deadline for opening (or re-checking) one connection.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn hold(
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    hold_for: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut opening = JoinSet::new();
    for _ in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        opening.spawn(async move {
            let r = tokio::time::timeout(OP_TIMEOUT, connect_first_byte(addr)).await;
            drop(permit);
            r
        });
    }
    let mut conns = Vec::with_capacity(count);
    let mut errors = 0usize;
    let mut first_error = None;
    while let Some(r) = opening.join_next().await {
        match r? {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert_with(|| "timed out".to_string());
            }
        }
    }
    println!(
        "ready opened={} errors={errors} ms={} first_error={:?}",
        conns.len(),
        start.elapsed().as_millis(),
        first_error.unwrap_or_default()
    );

    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = usr1.recv() => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = tokio::time::sleep(hold_for) => {}
    }

    // Still alive after the idle period? Each connection echoes one more byte.
    let mut checking = JoinSet::new();
    for c in conns {
        let permit = gate.clone().acquire_owned().await?;
        checking.spawn(async move {
            let r = tokio::time::timeout(OP_TIMEOUT, still_echoes(c)).await;
            drop(permit);
            matches!(r, Ok(Ok(())))
        });
    }
    let (mut live, mut dead) = (0usize, 0usize);
    while let Some(r) = checking.join_next().await {
        if r? {
            live += 1;
        } else {
            dead += 1;
        }
    }
    println!("verified live={live} errors={dead}");
    Ok(())
}

async fn still_echoes(mut c: TcpStream) -> std::io::Result<()> {
    c.write_all(b"y").await?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await?;
    Ok(())
}
