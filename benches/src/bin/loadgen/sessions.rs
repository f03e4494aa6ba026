//! Many idle tunnel sessions at once, each speaking the protocol itself (preface, hello, welcome,
//! yamux, control stream) and sending its heartbeat, without the library's reconnecting client:
//! what a relay holds per idle session.
//!
//! Sessions open in steps; after each step one `open` line is printed and the sessions idle
//! until SIGUSR1 (or the hold time), then the next step opens more; after the last step's
//! SIGUSR1 all close, and a `closed` line counts the heartbeats answered and failed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use relay_core::frame::FramedConn;
use relay_core::mux::{self, Role};
use relay_core::protocol::{
    ClientControl, DEFAULT_MAX_FRAME_LEN, Hello, PREFACE_LEN, RelayControl, Reply, TunnelRequest,
};
use tokio::net::TcpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Deadline for opening one session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Counters every session task updates.
#[derive(Default)]
struct Tally {
    pings: AtomicU64,
    failed: AtomicU64,
}

pub async fn sessions(
    addr: SocketAddr,
    steps: &[usize],
    sources: u32,
    concurrency: usize,
    hold_for: Duration,
) -> anyhow::Result<()> {
    if sources == 0 || sources > 65_000 || steps.is_empty() || !steps.is_sorted() {
        bail!("sources must be in 1..=65000 and steps a rising list");
    }
    let stop = CancellationToken::new();
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut opened = 0usize;
    let mut errors = 0usize;
    let mut first_error = None;
    for &step in steps {
        let start = Instant::now();
        let mut opening = JoinSet::new();
        while opened + opening.len() < step {
            let permit = gate.clone().acquire_owned().await?;
            let n = (opened + opening.len()) as u32 % sources + 1;
            let src = IpAddr::V4(Ipv4Addr::new(127, 3, (n >> 8) as u8, (n & 0xff) as u8));
            opening.spawn(async move {
                let r = tokio::time::timeout(OPEN_TIMEOUT, open(src, addr)).await;
                drop(permit);
                r.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
            });
        }
        while let Some(r) = opening.join_next().await {
            match r? {
                Ok((control, interval, done)) => {
                    opened += 1;
                    running.spawn(beat(control, interval, done, stop.clone(), tally.clone()));
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        println!(
            "open sessions={} step={step} errors={errors} ms={} first_error={:?}",
            running.len(),
            start.elapsed().as_millis(),
            first_error.clone().unwrap_or_default()
        );
        tokio::select! {
            _ = usr1.recv() => {}
            _ = term.recv() => break,
            () = tokio::time::sleep(hold_for) => {}
        }
    }
    stop.cancel();
    let held = running.len();
    let closing = Instant::now();
    while running.join_next().await.is_some() {}
    println!(
        "closed sessions={held} heartbeats={} failed={} ms={}",
        tally.pings.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        closing.elapsed().as_millis()
    );
    Ok(())
}

type Control = FramedConn<mux::Substream>;

/// One session: handshake, multiplexer, control stream with its first ping answered.
async fn open(
    src: IpAddr,
    addr: SocketAddr,
) -> anyhow::Result<(Control, Duration, CancellationToken)> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let mut conn = FramedConn::new(sock.connect(addr).await?, DEFAULT_MAX_FRAME_LEN);
    let hello = Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: None,
            lease: None,
        }],
    };
    conn.write_preface_and_frame(&hello).await?;
    while conn.buffered().len() < PREFACE_LEN {
        conn.fill().await?;
    }
    conn.consume(PREFACE_LEN);
    let welcome = match conn.read_frame::<Reply>().await? {
        Reply::Welcome(w) => w,
        other => bail!("expected a welcome, got {other:?}"),
    };
    let (sock, early) = conn.into_parts();
    let done = CancellationToken::new();
    // Nothing is opened by the relay towards an idle client; a queue of one is enough.
    let (inbound, _) = tokio::sync::mpsc::channel(1);
    let (handle, driver) = mux::start_into(sock, &early, Role::Dialer, inbound, done.clone());
    tokio::spawn(driver);
    let mut control = FramedConn::new(handle.open().await?, DEFAULT_MAX_FRAME_LEN);
    control.write_frame(&ClientControl::Ping(0)).await?;
    match control.read_frame::<RelayControl>().await? {
        RelayControl::Pong(0) => {}
        other => bail!("expected the first pong, got {other:?}"),
    }
    let interval = Duration::from_millis(welcome.heartbeat_interval_ms.into());
    Ok((control, interval, done))
}

/// Pings every interval and waits for each pong, until `stop`.
async fn beat(
    mut control: Control,
    interval: Duration,
    done: CancellationToken,
    stop: CancellationToken,
    tally: Arc<Tally>,
) {
    let _close = done.drop_guard();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = control.write_frame(&ClientControl::Goodbye).await;
                return;
            }
            () = tokio::time::sleep(interval) => {}
        }
        seq += 1;
        let answered = async {
            control.write_frame(&ClientControl::Ping(seq)).await?;
            loop {
                if let RelayControl::Pong(n) = control.read_frame::<RelayControl>().await? {
                    if n == seq {
                        return Ok::<_, anyhow::Error>(());
                    }
                }
            }
        };
        match tokio::time::timeout(interval, answered).await {
            Ok(Ok(())) => {
                tally.pings.fetch_add(1, Ordering::Relaxed);
            }
            r => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                let why = r.map_or_else(|_| "no pong in time".to_string(), |e| format!("{e:?}"));
                eprintln!("loadgen sessions: a session failed its heartbeat: {why}");
                return;
            }
        }
    }
}

/// Session counts to reach one after another.
#[derive(Debug, Clone)]
pub struct Steps(pub Vec<usize>);

/// `1000,5000,10000` as a list of counts.
pub fn parse_steps(s: &str) -> Result<Steps, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{p}' is not a count"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() || v.iter().any(|&n| n == 0 || n > 100_000) {
                Err("counts must be in 1..=100000".into())
            } else {
                Ok(Steps(v))
            }
        })
}
