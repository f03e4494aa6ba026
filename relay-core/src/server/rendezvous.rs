//! File-transfer rendezvous on the relay: hold an offer under a nameplate, pair it with the one
//! receiver that claims it, then pump bytes between the two without looking at them.
//!
//! The relay never sees the words of a code: peers prove knowledge of the full code to each other
//! end to end, over the spliced bytes. Per transfer the relay holds at most one splice backlog
//! per direction ([`crate::splice::CHUNK`] bytes each) and a small frame buffer before pairing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::handshake::refuse;
use crate::codec;
use crate::net::reset_on_close;
use crate::protocol::{
    ErrorCode, HEARTBEAT_TOLERANCE, OfferEvent, Reply, SenderMessage, nameplate,
};
use crate::splice::splice;

/// Claims one address may make per [`CLAIM_WINDOW`]. Nameplates are short, so without a limit a
/// client could claim numbers in a loop and spoil other people's offers (it would still learn
/// nothing: the words are never sent to the relay).
const CLAIMS_PER_WINDOW: u32 = 30;
const CLAIM_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; beyond this the oldest windows are dropped first.
const MAX_TRACKED_CLAIMERS: usize = 65_536;

/// Offers waiting for their receiver, by nameplate.
#[derive(Debug, Default)]
pub(super) struct Offers {
    waiting: Mutex<HashMap<String, (u64, oneshot::Sender<std::net::TcpStream>)>>,
    next: AtomicU64,
    claimers: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Offers {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Registers an offer under a fresh random nameplate drawn from `1..=space`.
    fn register(&self, space: u64, claim: oneshot::Sender<std::net::TcpStream>) -> (String, u64) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // The space is at least ten times the offer limit, so a free number turns up fast.
        let nameplate = loop {
            let n: u64 = rand::random_range(1..=space);
            let candidate = n.to_string();
            if !waiting.contains_key(&candidate) {
                break candidate;
            }
        };
        waiting.insert(nameplate.clone(), (id, claim));
        (nameplate, id)
    }

    /// Takes the offer out of the registry: a nameplate serves one pairing attempt only.
    fn take(&self, nameplate: &str) -> Option<oneshot::Sender<std::net::TcpStream>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.remove(nameplate).map(|(_, tx)| tx)
    }

    /// Counts a claim from `ip`; false once the address is over its budget for this window.
    fn allow_claim(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut claimers = self.claimers.lock().unwrap_or_else(PoisonError::into_inner);
        if claimers.len() >= MAX_TRACKED_CLAIMERS {
            claimers.retain(|_, (start, _)| now.duration_since(*start) < CLAIM_WINDOW);
            if claimers.len() >= MAX_TRACKED_CLAIMERS {
                claimers.clear();
            }
        }
        let (start, count) = claimers.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= CLAIM_WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= CLAIMS_PER_WINDOW
    }

    /// Removes the offer if it is still the one registered as `id`.
    fn withdraw(&self, nameplate: &str, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting
            .get(nameplate)
            .is_some_and(|(owner, _)| *owner == id)
        {
            waiting.remove(nameplate);
        }
    }
}

/// Removes an offer from the registry however its task ends.
struct Withdraw<'a> {
    offers: &'a Offers,
    nameplate: String,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.offers.withdraw(&self.nameplate, self.id);
    }
}

/// Serves a sender: registers the offer, keeps it alive, and runs the transfer once claimed.
pub(super) async fn offer(mut sender: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = &shared.config;
    let Ok(_permit) = shared.transfers.clone().try_acquire_owned() else {
        warn!(
            limit = config.max_transfers,
            "transfer limit reached; refusing offer"
        );
        let msg = format!(
            "relay is full ({} transfers); try again later",
            config.max_transfers
        );
        refuse(&mut sender, ErrorCode::Busy, msg).await;
        return;
    };
    let space = (config.max_transfers as u64)
        .saturating_mul(10)
        .clamp(9999, nameplate::MAX_VALUE);
    let (claim_tx, claim_rx) = oneshot::channel();
    let (nameplate, id) = shared.offers.register(space, claim_tx);
    let _withdraw = Withdraw {
        offers: &shared.offers,
        nameplate: nameplate.clone(),
        id,
    };
    let offered = Reply::Offered {
        nameplate: nameplate.clone(),
        heartbeat_interval_ms: config.heartbeat_interval_ms(),
    };
    if codec::write_preface_and_frame(&mut sender, &offered)
        .await
        .is_err()
    {
        return;
    }
    let span = info_span!("offer", nameplate = %nameplate);
    async {
        info!("offer registered");
        let mut claim_rx = claim_rx;
        let outcome = wait_and_transfer(&mut sender, &mut claim_rx, &shared, &shutdown).await;
        // A receiver may have been handed over just as the offer ended: answer it too.
        claim_rx.close();
        if let Ok(Ok(mut receiver)) = claim_rx.try_recv().map(TcpStream::from_std) {
            refuse(
                &mut receiver,
                ErrorCode::PeerGone,
                "the sender went away".into(),
            )
            .await;
        }
        match outcome {
            Ok((up, down)) => info!(
                sender_to_receiver = up,
                receiver_to_sender = down,
                "transfer finished"
            ),
            Err(reason) => info!(%reason, "offer ended"),
        }
    }
    .instrument(span)
    .await
}

async fn wait_and_transfer(
    sender: &mut TcpStream,
    claim: &mut oneshot::Receiver<std::net::TcpStream>,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(u64, u64), String> {
    let config = &shared.config;
    let silence_limit = config.heartbeat_interval * HEARTBEAT_TOLERANCE;
    let frames = LengthDelimitedCodec::builder()
        .length_field_length(codec::LEN_PREFIX)
        .max_frame_length(config.max_frame_len)
        .new_codec();
    let (read_half, mut write_half) = sender.split();
    let mut framed = FramedRead::new(read_half, frames);
    let expiry = tokio::time::sleep(config.offer_ttl);
    tokio::pin!(expiry);

    let mut receiver = loop {
        let frame = tokio::select! {
            claimed = &mut *claim => match claimed.map(TcpStream::from_std) {
                Ok(Ok(receiver)) => break receiver,
                Ok(Err(e)) => return Err(format!("cannot adopt the receiver's connection: {e}")),
                Err(_) => return Err("offer lost from the registry".into()),
            },
            () = shutdown.cancelled() => {
                let bye = OfferEvent::Closed { reason: "relay is shutting down".into() };
                let _ = codec::write_frame(&mut write_half, &bye).await;
                return Err("relay shutting down".into());
            }
            () = &mut expiry => {
                let bye = OfferEvent::Closed { reason: format!("offer expired after {:?} without a receiver", config.offer_ttl) };
                let _ = codec::write_frame(&mut write_half, &bye).await;
                return Err("offer expired".into());
            }
            frame = tokio::time::timeout(silence_limit, framed.next()) => frame,
        };
        match frame {
            Err(_) => {
                return Err(format!(
                    "no heartbeat from the sender for {silence_limit:?}"
                ));
            }
            Ok(None) => return Err("sender left before a receiver came".into()),
            Ok(Some(Err(e))) => return Err(format!("sender connection failed: {e}")),
            Ok(Some(Ok(body))) => match codec::decode::<SenderMessage>(&body) {
                Ok(SenderMessage::Ping(seq)) => {
                    codec::write_frame(&mut write_half, &OfferEvent::Pong(seq))
                        .await
                        .map_err(|e| format!("sender connection failed: {e}"))?;
                }
                Ok(SenderMessage::PairedAck) => {
                    return Err("sender acknowledged a pairing that never happened".into());
                }
                Err(e) => return Err(format!("bad frame from the sender: {e}")),
            },
        }
    };
    info!(receiver.addr = ?receiver.peer_addr().ok(), "offer claimed");

    // Pairing: the sender confirms, then both sides switch to raw bytes. Heartbeats that were in
    // flight are discarded; bytes after the confirmation belong to the receiver.
    let confirmed = async {
        codec::write_frame(&mut write_half, &OfferEvent::Paired)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match framed.next().await {
                Some(Ok(body)) => match codec::decode::<SenderMessage>(&body) {
                    Ok(SenderMessage::PairedAck) => return Ok(()),
                    Ok(SenderMessage::Ping(_)) => continue,
                    Err(e) => return Err(e.to_string()),
                },
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("sender left".to_string()),
            }
        }
    };
    // Half the handshake deadline, so the receiver (whose own deadline covers the pairing)
    // hears `PeerGone` rather than timing out.
    match tokio::time::timeout(config.handshake_timeout / 2, confirmed).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            refuse(
                &mut receiver,
                ErrorCode::PeerGone,
                "the sender went away before the transfer started".into(),
            )
            .await;
            return Err(format!("sender did not confirm the pairing: {e}"));
        }
        Err(_) => {
            refuse(
                &mut receiver,
                ErrorCode::PeerGone,
                "the sender did not answer".into(),
            )
            .await;
            return Err("sender did not confirm the pairing in time".into());
        }
    }
    let early = framed.read_buffer().to_vec();
    drop(framed);
    let start = async {
        codec::write_preface_and_frame(&mut receiver, &Reply::Paired).await?;
        receiver.write_all(&early).await?;
        Ok::<_, codec::CodecError>(())
    };
    if let Err(e) = start.await {
        return Err(format!("receiver left before the transfer started: {e}"));
    }
    debug!(early_bytes = early.len(), "paired; splicing");
    let result = tokio::select! {
        r = splice(sender, &mut receiver) => r,
        // A transfer under way may finish during the relay's drain, not after it.
        () = shared.hard_stop.cancelled() => Err(std::io::Error::other("relay shut down before the transfer finished")),
    };
    match result {
        Ok(t) => Ok((t.a_to_b + early.len() as u64, t.b_to_a)),
        Err(e) => {
            // Both peers must see an abort, never a clean end of a cut-off stream.
            reset_on_close(sender);
            reset_on_close(&receiver);
            Err(format!("transfer broke off: {e}"))
        }
    }
}

/// Serves a receiver: hands its connection to the offer registered under `nameplate`.
pub(super) async fn claim(
    mut receiver: TcpStream,
    peer: IpAddr,
    nameplate: String,
    shared: Arc<Shared>,
) {
    if !shared.offers.allow_claim(peer) {
        warn!(claims = CLAIMS_PER_WINDOW, window = ?CLAIM_WINDOW, "claim rate limit reached");
        let msg = format!(
            "too many codes tried from your address (more than {CLAIMS_PER_WINDOW} a minute); wait a minute"
        );
        refuse(&mut receiver, ErrorCode::Busy, msg).await;
        return;
    }
    // Refused without being echoed back.
    if !nameplate::is_valid(&nameplate) {
        info!("claim with a malformed nameplate");
        let msg = "the code must start with the number the sender's relay assigned".to_string();
        refuse(&mut receiver, ErrorCode::BadRequest, msg).await;
        return;
    }
    let Some(offer) = shared.offers.take(&nameplate) else {
        info!(nameplate = %nameplate, "claim for an unknown nameplate");
        let msg = format!(
            "no transfer is waiting under number {nameplate} (wrong code, already used, or the sender stopped)"
        );
        refuse(&mut receiver, ErrorCode::UnknownNameplate, msg).await;
        return;
    };
    // The offer may live on another worker thread; it adopts the socket there.
    let receiver = match receiver.into_std() {
        Ok(r) => r,
        Err(e) => return warn!(error = %e, "cannot hand the receiver to its offer"),
    };
    if let Err(receiver) = offer.send(receiver) {
        if let Ok(mut receiver) = TcpStream::from_std(receiver) {
            refuse(
                &mut receiver,
                ErrorCode::PeerGone,
                "the sender went away".into(),
            )
            .await;
        }
    }
}
