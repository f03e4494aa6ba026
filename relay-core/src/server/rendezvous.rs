//! File-transfer rendezvous on the relay: hold an offer under a nameplate, pair it with the one
//! receiver that claims it, then pump bytes between the two without looking at them.
//!
//! The relay never sees the words of a code: peers prove knowledge of the full code to each other
//! end to end, over the spliced bytes. Per transfer the relay holds at most one splice backlog
//! per direction ([`crate::splice::CHUNK`] bytes each) and a small frame buffer before pairing;
//! between two plain TCP connections not even that: the kernel moves the bytes
//! ([`crate::splice::splice_conns`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Shared;
use super::cluster::Cluster;
use super::handshake::{Client, Handover};
use super::refusals::Refusal;
use crate::codec::CodecError;
use crate::ending::{Peer, SessionEnd};
use crate::frame::FramedConn;
use crate::liveness::{Beat, Liveness};
use crate::net::reset_on_close;
use crate::protocol::{ErrorCode, OfferEvent, Reply, SenderMessage, nameplate};
use crate::splice::{Meter, splice_conns};
use crate::transport::Conn;

/// A receiver on its way to the offer it claimed (which may run on another worker thread).
type Claimant = Handover;

/// Offers waiting for their receiver, by nameplate.
#[derive(Debug, Default)]
pub(super) struct Offers {
    waiting: Mutex<HashMap<String, (u64, oneshot::Sender<Claimant>)>>,
    next: AtomicU64,
}

impl Offers {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Registers an offer under a fresh random nameplate: a number drawn from `1..=space`,
    /// with this relay's id appended when it is one of several.
    fn register(
        &self,
        space: u64,
        cluster: Option<&Cluster>,
        claim: oneshot::Sender<Claimant>,
    ) -> (String, u64) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // The space is at least ten times the offer limit, so a free number turns up fast.
        let nameplate = loop {
            let n: u64 = rand::random_range(1..=space);
            let candidate = cluster.map_or_else(|| n.to_string(), |c| c.nameplate(n));
            if !waiting.contains_key(&candidate) {
                break candidate;
            }
        };
        waiting.insert(nameplate.clone(), (id, claim));
        (nameplate, id)
    }

    /// Takes the offer out of the registry: a nameplate serves one pairing attempt only.
    fn take(&self, nameplate: &str) -> Option<oneshot::Sender<Claimant>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // An offer whose task has stopped waiting (its sender gone) is as good as withdrawn.
        waiting
            .remove(nameplate)
            .map(|(_, tx)| tx)
            .filter(|tx| !tx.is_closed())
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
pub(super) async fn offer(mut sender: Client, shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = &shared.config;
    let Ok(_permit) = shared.transfers.clone().try_acquire_owned() else {
        if shared.refusals.note(Refusal::TransferCap) {
            warn!(
                limit = config.max_transfers,
                "transfer limit reached; refusing offer"
            );
        }
        let msg = format!(
            "relay is full ({} transfers); try again later",
            config.max_transfers
        );
        sender.refuse(ErrorCode::Busy, msg).await;
        return;
    };
    let cluster = config.cluster.as_ref();
    let space = (config.max_transfers as u64).saturating_mul(10).clamp(
        9999,
        cluster.map_or(nameplate::MAX_VALUE, Cluster::max_number),
    );
    let (claim_tx, claim_rx) = oneshot::channel();
    let (nameplate, id) = shared.offers.register(space, cluster, claim_tx);
    let _withdraw = Withdraw {
        offers: &shared.offers,
        nameplate: nameplate.clone(),
        id,
    };
    let offered = Reply::Offered {
        nameplate: nameplate.clone(),
        heartbeat_interval_ms: config.heartbeat_interval_ms(),
    };
    if sender.reply(&offered).await.is_err() {
        return;
    }
    let span = info_span!("offer", nameplate = %nameplate);
    async {
        info!("offer registered");
        let mut claim_rx = claim_rx;
        let meter = shared.metrics.transfer_meter();
        let token = sender.token.as_deref();
        let outcome = transfer(
            sender.conn,
            token,
            &mut claim_rx,
            &shared,
            &shutdown,
            &meter,
        )
        .await;
        // A receiver may have been handed over just as the offer ended: answer it too.
        claim_rx.close();
        if let Ok(receiver) = claim_rx.try_recv() {
            if let Ok(receiver) = Client::adopt(receiver) {
                let msg = "the sender went away".to_string();
                receiver.refuse(ErrorCode::PeerGone, msg).await;
            }
        }
        let (up, down) = (meter.a_to_b(), meter.b_to_a());
        match outcome {
            Ok(()) => info!(
                sender_to_receiver = up,
                receiver_to_sender = down,
                "transfer finished"
            ),
            Err(Ended::Waiting(end)) => {
                info!(reason = end.label(), detail = %end.seen_by(Peer::Sender), "offer ended")
            }
            Err(Ended::Transfer(why)) => info!(
                reason = %why,
                sender_to_receiver = up,
                receiver_to_sender = down,
                "transfer broke off"
            ),
        }
    }
    .instrument(span)
    .await
}

/// How an offer ended without a finished transfer.
enum Ended {
    /// Before a receiver came.
    Waiting(SessionEnd),
    /// During the pairing or the transfer.
    Transfer(String),
}

async fn transfer(
    mut sender: FramedConn<Conn>,
    token: Option<&super::NamedToken>,
    claim: &mut oneshot::Receiver<Claimant>,
    shared: &Shared,
    shutdown: &CancellationToken,
    meter: &Meter,
) -> Result<(), Ended> {
    let waited = wait_for_receiver(&mut sender, token, claim, shared, shutdown).await;
    // Out of the registry before the sender's connection closes: a claim that comes once the
    // sender is seen gone must find no offer, not a dead one.
    claim.close();
    let receiver = waited.map_err(Ended::Waiting)?;
    let mut receiver = Client::adopt(receiver)
        .map_err(|e| Ended::Transfer(format!("cannot adopt the receiver's connection: {e}")))?;
    info!(receiver.addr = %receiver.peer, "offer claimed");

    // Pairing: the sender confirms, then both sides switch to raw bytes. Heartbeats that were in
    // flight are discarded; bytes after the confirmation belong to the receiver. Half the
    // handshake deadline, so the receiver (whose own deadline covers the pairing) hears
    // `PeerGone` rather than timing out.
    let limit = shared.config.handshake_timeout / 2;
    let confirmed = tokio::time::timeout(limit, confirm_pairing(&mut sender)).await;
    let why = match confirmed {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some((
            "the sender went away before the transfer started",
            e.to_string(),
        )),
        Err(_) => Some((
            "the sender did not answer",
            "no confirmation in time".to_string(),
        )),
    };
    if let Some((told, logged)) = why {
        receiver.refuse(ErrorCode::PeerGone, told.into()).await;
        return Err(Ended::Transfer(format!(
            "sender did not confirm the pairing: {logged}"
        )));
    }
    let started = receiver.reply(&Reply::Paired).await;
    let (mut sender, sender_early) = sender.into_parts();
    let (mut receiver, receiver_early) = receiver.conn.into_parts();
    let start = async {
        started?;
        receiver.write_all(&sender_early).await?;
        sender.write_all(&receiver_early).await?;
        Ok::<_, CodecError>(())
    };
    if let Err(e) = start.await {
        return Err(Ended::Transfer(format!(
            "a peer left as the transfer started: {e}"
        )));
    }
    let _running = shared.metrics.transfer_started();
    meter.record(sender_early.len() as u64, receiver_early.len() as u64);
    debug!(early_bytes = sender_early.len(), "paired; splicing");
    let result = tokio::select! {
        r = splice_conns(&mut sender, &mut receiver, meter) => r,
        // A transfer under way may finish during the relay's drain, not after it.
        () = shared.hard_stop.cancelled() => Err(std::io::Error::other("relay shut down before the transfer finished")),
    };
    result.map_err(|e| {
        // Both peers must see an abort, never a clean end of a cut-off stream.
        reset_on_close(sender.tcp());
        reset_on_close(receiver.tcp());
        Ended::Transfer(e.to_string())
    })
}

/// Keeps the offer alive until a receiver claims it, answering the sender's heartbeats.
async fn wait_for_receiver(
    sender: &mut FramedConn<Conn>,
    token: Option<&super::NamedToken>,
    claim: &mut oneshot::Receiver<Claimant>,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<Claimant, SessionEnd> {
    let config = &shared.config;
    let _waiting = shared.metrics.offer_waiting();
    let mut liveness = Liveness::new(config.heartbeat_interval);
    let expiry = tokio::time::sleep(config.offer_ttl);
    tokio::pin!(expiry);
    loop {
        let frame = tokio::select! {
            claimed = &mut *claim => {
                return claimed.map_err(|_| SessionEnd::Protocol("offer lost from the registry".into()));
            }
            () = shutdown.cancelled() => {
                let reason = "relay is shutting down".to_string();
                let _ = sender.write_frame(&OfferEvent::Closed { reason: reason.clone() }).await;
                return Err(SessionEnd::RelayShutdown(reason));
            }
            // The sender's token was removed from the relay's tokens.
            () = shared.gate.access.revoked(token) => {
                let reason = super::AccessHandle::revocation_reason(token);
                let _ = sender.write_frame(&OfferEvent::Closed { reason: reason.clone() }).await;
                return Err(SessionEnd::Revoked(reason));
            }
            () = &mut expiry => {
                let reason = format!("offer expired after {:?} without a receiver", config.offer_ttl);
                let _ = sender.write_frame(&OfferEvent::Closed { reason: reason.clone() }).await;
                return Err(SessionEnd::Withdrawn(reason));
            }
            beat = liveness.beat() => match beat {
                Beat::Ping => continue,
                Beat::Gone { silent_for } => return Err(SessionEnd::PeerSilent { silent_for }),
            },
            frame = sender.read_frame::<SenderMessage>() => frame,
        };
        liveness.heard();
        let result = match frame {
            Ok(SenderMessage::Ping(seq)) => sender.write_frame(&OfferEvent::Pong(seq)).await,
            Ok(SenderMessage::PairedAck) => {
                let why = "acknowledged a pairing that never happened";
                return Err(SessionEnd::Protocol(why.into()));
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(CodecError::Closed) => return Err(SessionEnd::PeerClosed),
            Err(CodecError::Io(e)) => return Err(SessionEnd::ConnectionLost(e.to_string())),
            Err(e) => return Err(SessionEnd::Protocol(e.to_string())),
        }
    }
}

/// Tells the sender it is paired and waits for its acknowledgement, the last frame it sends.
async fn confirm_pairing(sender: &mut FramedConn<Conn>) -> Result<(), CodecError> {
    sender.write_frame(&OfferEvent::Paired).await?;
    loop {
        match sender.read_frame::<SenderMessage>().await? {
            SenderMessage::PairedAck => return Ok(()),
            SenderMessage::Ping(_) => continue,
        }
    }
}

/// Serves a receiver: hands its connection to the offer registered under `nameplate`.
pub(super) async fn claim(receiver: Client, nameplate: String, shared: Arc<Shared>) {
    let refusals = &shared.refusals;
    // Nameplates are short, so without a limit a client could claim numbers in a loop and
    // spoil other people's offers (it would still learn nothing: the words are never sent to
    // the relay). Only wrong codes count: an office behind one address may receive freely.
    let group = receiver.peer.ip().into();
    let failures = &shared.gate.claim_failures;
    let limit = shared.config.max_failed_claims;
    if failures.count(group) >= limit {
        if refusals.note(Refusal::ClaimRate) {
            warn!(client.addr = %receiver.peer, limit, "failed-claim limit reached");
        }
        let msg = format!(
            "too many wrong codes from your address ({limit} a minute at most); wait a minute"
        );
        receiver.refuse(ErrorCode::Busy, msg).await;
        return;
    }
    // Refused without being echoed back.
    if !nameplate::is_valid(&nameplate) {
        failures.record(group);
        if refusals.note(Refusal::BadNameplate) {
            info!("claim with a malformed nameplate");
        }
        let msg = "the code must start with the number the sender's relay assigned".to_string();
        receiver.refuse(ErrorCode::BadRequest, msg).await;
        return;
    }
    // A peer's nameplate: the receiver is sent there (or refused when no peer has it).
    let Some(receiver) = super::cluster::claim_here(receiver, &nameplate, &shared).await else {
        return;
    };
    let Some(offer) = shared.offers.take(&nameplate) else {
        failures.record(group);
        if refusals.note(Refusal::UnknownNameplate) {
            info!(nameplate = %nameplate, "claim for an unknown nameplate");
        }
        let msg = format!(
            "no transfer is waiting under number {nameplate} (wrong code, already used, or the sender stopped)"
        );
        receiver.refuse(ErrorCode::UnknownNameplate, msg).await;
        return;
    };
    // The offer may live on another worker thread; it adopts the socket there.
    let receiver = receiver.into_handover();
    if let Err(receiver) = offer.send(receiver) {
        if let Ok(receiver) = Client::adopt(receiver) {
            receiver
                .refuse(ErrorCode::PeerGone, "the sender went away".into())
                .await;
        }
    }
}
