//! `send`'s side: offer a file at the relay, wait for the receiver, run the key exchange, send.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::code::Code;
use crate::error::{Error, Result};
use crate::handshake::Role;
use crate::message::FileOffer;
use crate::progress::Progress;
use crate::record::{CONTROL_PAYLOAD, Kind, RecordBuf, RecordReader, RecordWriter};
use crate::source::{Chunk, Source, spawn_reader};
use crate::transfer::{self, abort, unstalled, write_failed};

const PEER: &str = "receiver";

/// An offer registered at the relay, with its code, waiting for its receiver.
#[derive(Debug)]
pub struct Offered {
    offer: relay_core::client::Offer,
    code: Code,
    source: Source,
}

impl Offered {
    /// Registers an offer for `source` at the relay at `relay` (`HOST:PORT` or `[V6]:PORT`)
    /// and makes its code.
    pub async fn register(relay: &str, source: Source) -> Result<Offered> {
        Self::register_with(relay, &Default::default(), source).await
    }

    /// [`register`](Self::register), with a token and other connection settings.
    pub async fn register_with(
        relay: &str,
        connect: &relay_core::client::ConnectConfig,
        source: Source,
    ) -> Result<Offered> {
        let offer = relay_core::client::offer_with(relay, connect)
            .await
            .map_err(Error::from_relay)?;
        let code = Code::generate(offer.nameplate())?;
        Ok(Offered {
            offer,
            code,
            source,
        })
    }

    /// The code to give to the receiver.
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// Waits for the receiver (at most `wait`, if given) and sends the file. Returns the bytes
    /// sent once the receiver has confirmed that the whole file arrived intact.
    pub async fn run(
        self,
        wait: Option<Duration>,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let arrival = async {
            match wait {
                Some(limit) => tokio::time::timeout(limit, self.offer.wait_for_receiver())
                    .await
                    .map_err(|_| Error::Timeout {
                        what: "no receiver came; the code is no longer valid",
                        after: limit,
                    })?
                    .map_err(Error::from_relay),
                None => self
                    .offer
                    .wait_for_receiver()
                    .await
                    .map_err(Error::from_relay),
            }
        };
        let stream = tokio::select! {
            s = arrival => s?,
            () = cancel.cancelled() => {
                return Err(Error::Cancelled("while waiting for the receiver; the code is no longer valid"));
            }
        };
        progress.note("the receiver is here; checking the code");
        send_over(stream, &self.code, self.source, progress, cancel).await
    }
}

/// Runs the sender's side of a transfer on `stream`, an already paired connection to the
/// receiver (through a relay, or anything else that carries bytes).
pub async fn send_over<S>(
    stream: S,
    code: &Code,
    source: Source,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut writer, mut reader) = transfer::secure(stream, code, Role::Sender, cancel).await?;
    let mut reply = RecordBuf::new(CONTROL_PAYLOAD);
    let result = tokio::select! {
        r = converse(&mut writer, &mut reader, &mut reply, source, progress) => r,
        () = cancel.cancelled() => Err(Error::Cancelled("mid-transfer; the receiver keeps nothing")),
    };
    match result {
        Ok(sent) => Ok(sent),
        Err(e) => {
            debug!(error = %e, "transfer failed");
            progress.failed();
            abort(&mut writer, &mut reader, &e).await;
            Err(e)
        }
    }
}

async fn converse<R, W>(
    writer: &mut RecordWriter<W>,
    reader: &mut RecordReader<R>,
    reply: &mut RecordBuf,
    source: Source,
    progress: &dyn Progress,
) -> Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let offer = FileOffer {
        name: source.name().to_string(),
        size: source.size(),
    };
    unstalled(async {
        writer
            .send(Kind::Offer, &offer.encode())
            .await
            .map_err(write_failed(PEER, "before the transfer started"))
    })
    .await?;
    let answer = unstalled(transfer::read(
        reader,
        reply,
        PEER,
        "before accepting the file",
    ))
    .await?;
    match answer {
        Some(Kind::Accept) => {}
        None => {
            return Err(Error::PeerVanished {
                peer: PEER,
                when: "before accepting the file".into(),
            });
        }
        other => return Err(transfer::unexpected(other, "the receiver's answer")),
    }
    debug!(size = offer.size, "the receiver accepted the file");
    progress.start(&offer.name, offer.size);

    // The receiver only speaks again to confirm or to abort; listen for it while sending, so
    // an abort (disk full, say) stops the sender at once with the receiver's reason.
    let verdict = transfer::read(reader, reply, PEER, "mid-transfer");
    tokio::pin!(verdict);
    let sent = tokio::select! {
        biased;
        early = &mut verdict => {
            return Err(match early {
                Ok(None) => Error::PeerVanished { peer: PEER, when: "mid-transfer".into() },
                Ok(kind) => transfer::unexpected(kind, "no answer before the end of the data"),
                Err(e) => e,
            });
        }
        sent = pump(writer, source, progress) => sent?,
    };
    debug!(
        sent,
        "end record sent; waiting for the receiver's confirmation"
    );
    // Syncing a large file on a slow disk can take long; the wait stays cancellable.
    match verdict.await {
        Ok(Some(Kind::Done)) => {
            progress.finish(sent);
            Ok(sent)
        }
        Ok(None) => Err(Error::PeerVanished {
            peer: PEER,
            when: "before confirming the file".into(),
        }),
        Ok(kind) => Err(transfer::unexpected(kind, "the receiver's confirmation")),
        Err(e) => Err(e),
    }
}

/// Sends the file's data records and the end record.
async fn pump<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    source: Source,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut file = spawn_reader(source);
    let mut sent = 0u64;
    loop {
        let Some(chunk) = file.filled.recv().await else {
            return Err(file.failure().await);
        };
        let chunk = chunk?;
        match chunk {
            Chunk::Data(mut buf) => {
                let n = buf.payload().len() as u64;
                unstalled(async {
                    writer
                        .write_record(Kind::Data, &mut buf)
                        .await
                        .map_err(write_failed(PEER, "mid-transfer"))
                })
                .await?;
                sent += n;
                progress.advance(n);
                let _ = file.free.send(buf);
            }
            Chunk::End(end) => {
                unstalled(async {
                    writer
                        .send(Kind::End, &end.encode())
                        .await
                        .map_err(write_failed(PEER, "mid-transfer"))
                })
                .await?;
                return Ok(sent);
            }
        }
    }
}
