//! `send`'s side: offer files at the relay, wait for the receiver, run the key exchange, announce
//! the manifest, take the receiver's resume offers, send.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::code::Code;
use crate::error::{Error, Result};
use crate::handshake::Role;
use crate::manifest::{EntryKind, MANIFEST_PAYLOAD};
use crate::message::{FileEnd, FileStart, ResumeOffer, SENDER_CHECKPOINTS};
use crate::progress::Progress;
use crate::reader::{Chunk, spawn_reader};
use crate::record::{Kind, RecordBuf, RecordReader, RecordWriter};
use crate::source::Source;
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
        Self::register_with(relay, &relay_core::client::ConnectConfig::default(), source).await
    }

    /// [`register`](Self::register), with a token, TLS and other connection settings.
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

    /// Waits for the receiver (at most `wait`, if given) and sends. Returns the bytes of file
    /// data that crossed once the receiver has confirmed that everything arrived intact.
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
/// receiver (through a relay, or anything else that carries bytes). Returns the bytes of file
/// data that crossed (a resumed prefix does not).
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
    let mut reply = RecordBuf::new(MANIFEST_PAYLOAD);
    let result = tokio::select! {
        r = converse(&mut writer, &mut reader, &mut reply, source, progress) => r,
        () = cancel.cancelled() => Err(Error::Cancelled("mid-transfer; the receiver keeps only what it verified")),
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
    let version = transfer::greet(writer, reader, PEER).await?;
    let manifest = source.manifest();
    for payload in manifest.encode() {
        send(
            writer,
            Kind::Manifest,
            &payload,
            "before the transfer started",
        )
        .await?;
    }
    let summary = manifest.end();
    send(
        writer,
        Kind::ManifestEnd,
        &summary.encode(),
        "before the transfer started",
    )
    .await?;

    // The receiver answers with what it already holds, then accepts (or aborts).
    let mut offers = Vec::new();
    loop {
        let answer = unstalled(transfer::read(
            reader,
            reply,
            PEER,
            "before accepting the files",
        ))
        .await?;
        match answer {
            Some(Kind::Resume) => ResumeOffer::decode_all(reply.payload(), &mut offers)?,
            Some(Kind::Accept) => break,
            None => {
                return Err(Error::PeerVanished {
                    peer: PEER,
                    when: "before accepting the files".into(),
                });
            }
            other => return Err(transfer::unexpected(other, "the receiver's answer")),
        }
    }
    let mut resume = HashMap::new();
    for offer in offers {
        let entry = manifest.entries.get(offer.index as usize);
        let fits = entry.is_some_and(|e| {
            e.kind == EntryKind::File && e.size.is_some_and(|s| offer.offset <= s)
        });
        if !fits || resume.insert(offer.index, offer).is_some() {
            return Err(Error::Protocol(
                "the receiver offered an impossible resume".into(),
            ));
        }
    }
    debug!(
        entries = summary.entries,
        resumable = resume.len(),
        "the receiver accepted"
    );
    progress.start(source.name(), manifest.files(), summary.bytes);

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
        sent = pump(writer, source, resume, version, progress) => sent?,
    };
    debug!(
        sent,
        "all data sent; waiting for the receiver's confirmation"
    );
    // Syncing a large file on a slow disk can take long; the wait stays cancellable.
    match verdict.await {
        Ok(Some(Kind::Done)) => {
            progress.finish(sent);
            Ok(sent)
        }
        Ok(None) => Err(Error::PeerVanished {
            peer: PEER,
            when: "before confirming the files".into(),
        }),
        Ok(kind) => Err(transfer::unexpected(kind, "the receiver's confirmation")),
        Err(e) => Err(e),
    }
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    kind: Kind,
    payload: &[u8],
    during: &str,
) -> Result<()> {
    unstalled(async {
        writer
            .send(kind, payload)
            .await
            .map_err(write_failed(PEER, during))
    })
    .await
}

async fn start_file<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    entries: &[(String, Option<u64>)],
    start: FileStart,
    progress: &dyn Progress,
) -> Result<()> {
    if let Some((path, size)) = entries.get(start.index as usize) {
        progress.file(path, *size, start.offset);
    }
    queue(writer, Kind::FileStart, &start.encode()).await
}

async fn end_file<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    end: FileEnd,
    progress: &dyn Progress,
) -> Result<()> {
    queue(writer, Kind::FileEnd, &end.encode()).await?;
    progress.file_done();
    Ok(())
}

/// Seals and queues one data record, then gives its buffer back to the reader thread.
async fn data<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    file: &crate::reader::Reader,
    mut buf: RecordBuf,
    progress: &dyn Progress,
) -> Result<u64> {
    let n = buf.payload().len() as u64;
    unstalled(async {
        writer
            .queue_record(Kind::Data, &mut buf)
            .await
            .map_err(write_failed(PEER, "mid-transfer"))
    })
    .await?;
    progress.advance(n);
    let _ = file.free.send(buf);
    Ok(n)
}

async fn queue<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    kind: Kind,
    payload: &[u8],
) -> Result<()> {
    unstalled(async {
        writer
            .queue(kind, payload)
            .await
            .map_err(write_failed(PEER, "mid-transfer"))
    })
    .await
}

/// Sends every file's start, data and end records, then `Complete`. Returns the data bytes
/// sent.
async fn pump<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    source: Source,
    resume: HashMap<u32, ResumeOffer>,
    version: u16,
    progress: &dyn Progress,
) -> Result<u64> {
    let entries: Vec<(String, Option<u64>)> = source
        .manifest()
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.size))
        .collect();
    let mut file = spawn_reader(source, resume);
    let mut sent = 0u64;
    loop {
        // Records of small files are queued and go out together; whatever is queued goes out
        // before waiting for the reader thread, so nothing is held back while it reads.
        let next = match file.filled.try_recv() {
            Ok(chunk) => Some(chunk),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                unstalled(async {
                    writer
                        .flush()
                        .await
                        .map_err(write_failed(PEER, "mid-transfer"))
                })
                .await?;
                file.filled.recv().await
            }
        };
        let Some(chunk) = next else {
            return Err(file.failure().await);
        };
        match chunk? {
            Chunk::Data(buf) => sent += data(writer, &file, buf, progress).await?,
            Chunk::Start(start) => start_file(writer, &entries, start, progress).await?,
            Chunk::End(end) => end_file(writer, end, progress).await?,
            Chunk::Checkpoint(c) if version >= SENDER_CHECKPOINTS => {
                queue(writer, Kind::Checkpoint, &c.encode()).await?;
            }
            Chunk::Checkpoint(_) => {}
            Chunk::Whole(start, buf, end) => {
                start_file(writer, &entries, start, progress).await?;
                if let Some(buf) = buf {
                    sent += data(writer, &file, buf, progress).await?;
                }
                end_file(writer, end, progress).await?;
            }
            Chunk::Note(note) => progress.note(&note),
            Chunk::Complete => {
                send(writer, Kind::Complete, &[], "mid-transfer").await?;
                return Ok(sent);
            }
        }
    }
}
