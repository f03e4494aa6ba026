//! Handshake attempts with a wrong token at a fixed rate: what a token-guessing flood costs the
//! relay, and what it gets back (answers, busy refusals, connections closed unanswered).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use relay_benches::stats::Summary;
use relay_core::auth::{NO_BINDING, Token};
use relay_core::codec::{LEN_PREFIX, encode};
use relay_core::frame::FramedConn;
use relay_core::protocol::{ErrorCode, Hello, PREFACE_LEN, Reply, TunnelRequest};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Longest one attempt may take (the relay delays wrong tokens by up to 4 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);

/// How one attempt ended.
enum Outcome {
    Unauthorized,
    Busy,
    /// Closed without an answer (over the relay's bound on delayed answers).
    Closed,
    Other(String),
}

/// `rate` attempts per second for `seconds` (at most `max_count`), each from one of `sources`
/// loopback addresses (127.1.x.y) in turn, at most `concurrency` at once.
pub async fn auth(
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
    sources: u32,
    concurrency: usize,
    max_count: u64,
) -> anyhow::Result<()> {
    if !(rate > 0.0 && rate <= 100_000.0) || sources == 0 || sources > 65_000 {
        bail!("rate must be in (0, 100000] and sources in 1..=65000");
    }
    let wrong = Token::new("a wrong token for load tests").map_err(anyhow::Error::msg)?;
    let hello = Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: None,
            lease: None,
        }],
    };
    let frame = encode(&hello)?;
    let shared = Arc::new((wrong, hello, frame));
    let gate = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = JoinSet::new();
    let mut launched = 0u64;
    let mut stalled = 0u64;
    while start.elapsed() < duration && launched < max_count {
        let due = start + interval.mul_f64(launched as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            // Every slot busy: the target rate cannot be held without more concurrency.
            stalled += 1;
            launched += 1;
            continue;
        };
        let n = launched as u32 % sources + 1;
        let src = IpAddr::V4(Ipv4Addr::new(127, 1, (n >> 8) as u8, (n & 0xff) as u8));
        let shared = shared.clone();
        tasks.spawn(async move {
            let began = Instant::now();
            let r = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(src, addr, &shared)).await;
            drop(permit);
            let outcome = r.unwrap_or_else(|_| Outcome::Other("timed out".into()));
            (outcome, began.elapsed())
        });
        launched += 1;
    }
    let sent_for = start.elapsed();
    let (mut unauthorized, mut busy, mut closed, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut first_other = None;
    let mut answered = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (outcome, took) = r?;
        match outcome {
            Outcome::Unauthorized => {
                unauthorized += 1;
                answered.push(took);
            }
            Outcome::Busy => busy += 1,
            Outcome::Closed => closed += 1,
            Outcome::Other(e) => {
                other += 1;
                first_other.get_or_insert(e);
            }
        }
    }
    let per_s = (launched - stalled) as f64 / sent_for.as_secs_f64();
    println!(
        "auth attempts={launched} per_s={per_s:.0} sources={sources} unauthorized={unauthorized} \
         busy={busy} closed_unanswered={closed} errors={other} stalled={stalled} first_error={:?}",
        first_other.unwrap_or_default()
    );
    if let Some(summary) = Summary::of(&mut answered) {
        println!("auth answer_latency {summary}");
    }
    Ok(())
}

async fn attempt(src: IpAddr, addr: SocketAddr, shared: &(Token, Hello, Vec<u8>)) -> Outcome {
    let (token, hello, frame) = shared;
    let run = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let mut conn = FramedConn::new(sock.connect(addr).await?, 4096);
        conn.write_preface_and_frame(hello).await?;
        while conn.buffered().len() < PREFACE_LEN {
            conn.fill().await?;
        }
        conn.consume(PREFACE_LEN);
        let nonce = match conn.read_frame::<Reply>().await? {
            Reply::Challenge { nonce } => nonce,
            Reply::Error {
                code: ErrorCode::Busy,
                ..
            } => return Ok(Outcome::Busy),
            other => return Ok(Outcome::Other(format!("{other:?}"))),
        };
        let proof = token.prove(&nonce, &NO_BINDING, &frame[LEN_PREFIX..]);
        conn.write_frame(&proof).await?;
        Ok::<_, anyhow::Error>(match conn.read_frame::<Reply>().await {
            Ok(Reply::Error {
                code: ErrorCode::Unauthorized,
                ..
            }) => Outcome::Unauthorized,
            Ok(other) => Outcome::Other(format!("{other:?}")),
            Err(relay_core::codec::CodecError::Closed) => Outcome::Closed,
            Err(e) => Outcome::Other(e.to_string()),
        })
    };
    run.await.unwrap_or_else(|e| Outcome::Other(e.to_string()))
}
