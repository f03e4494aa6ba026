//! `receive`'s side: claim the offer at the relay, run the key exchange, check the offered
//! name, receive into a temporary file, verify, and move it into place.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::code::Code;
use crate::error::{Error, Result};
use crate::handshake::Role;
use crate::message::{FileEnd, FileOffer};
use crate::outdir::{prepare_dir, remove_created};
use crate::progress::Progress;
use crate::record::{CONTROL_PAYLOAD, Kind, RecordBuf, RecordReader, RecordWriter};
use crate::sink::{Sink, Written, spawn_writer};
use crate::transfer::{self, abort, unstalled, write_failed};

const PEER: &str = "sender";

/// A file that arrived complete and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Where it is now.
    pub path: PathBuf,
    /// Its length.
    pub size: u64,
}

/// What the receiver may do with an existing file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveOptions {
    /// Replace an existing file of the same name.
    pub force: bool,
}

/// Claims the offer behind `code` at the relay at `relay` and receives its file into `outdir`
/// (created if missing).
pub async fn receive(
    relay: &str,
    code: &Code,
    outdir: &Path,
    options: ReceiveOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Received> {
    let connect = Default::default();
    receive_with(relay, &connect, code, outdir, options, progress, cancel).await
}

/// [`receive`], with a token and other settings for reaching the relay.
pub async fn receive_with(
    relay: &str,
    connect: &relay_core::client::ConnectConfig,
    code: &Code,
    outdir: &Path,
    options: ReceiveOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Received> {
    // Before the claim: a directory we cannot create should not use up the code. A failed
    // transfer takes back the directories it created, so it leaves nothing behind.
    let created = prepare_dir(outdir)?;
    let result = async {
        let claim = relay_core::client::claim_with(relay, code.nameplate(), connect);
        let stream = tokio::select! {
            s = claim => s.map_err(Error::from_relay)?,
            () = cancel.cancelled() => return Err(Error::Cancelled("while contacting the relay")),
        };
        receive_over(stream, code, outdir, options, progress, cancel).await
    }
    .await;
    if result.is_err() {
        remove_created(&created);
    }
    result
}

/// Runs the receiver's side of a transfer on `stream`, an already paired connection to the
/// sender. Writes only inside `outdir` (created if missing), and only under the checked name
/// the sender announced.
pub async fn receive_over<S>(
    stream: S,
    code: &Code,
    outdir: &Path,
    options: ReceiveOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Received>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    prepare_dir(outdir)?;
    let (mut writer, mut reader) = transfer::secure(stream, code, Role::Receiver, cancel).await?;
    let result = tokio::select! {
        r = converse(&mut writer, &mut reader, outdir, options, progress) => r,
        () = cancel.cancelled() => Err(Error::Cancelled("mid-transfer; nothing was kept")),
    };
    if let Err(e) = &result {
        debug!(error = %e, "transfer failed");
        progress.failed();
        abort(&mut writer, &mut reader, e).await;
    }
    result
}

async fn converse<R, W>(
    writer: &mut RecordWriter<W>,
    reader: &mut RecordReader<R>,
    outdir: &Path,
    options: ReceiveOptions,
    progress: &dyn Progress,
) -> Result<Received>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut control = RecordBuf::new(CONTROL_PAYLOAD);
    let first = unstalled(transfer::read(
        reader,
        &mut control,
        PEER,
        "before offering a file",
    ))
    .await?;
    let offer = match first {
        Some(Kind::Offer) => FileOffer::decode(control.payload())?,
        None => {
            return Err(Error::PeerVanished {
                peer: PEER,
                when: "before offering a file".into(),
            });
        }
        other => return Err(transfer::unexpected(other, "a file offer")),
    };
    debug!(size = offer.size, "file offered");
    let sink = Sink::create(outdir, &offer.name, options.force)?;
    unstalled(async {
        writer
            .send(Kind::Accept, &[])
            .await
            .map_err(write_failed(PEER, "before the transfer started"))
    })
    .await?;
    progress.start(&offer.name, offer.size);

    let (written, end) = pump(reader, sink, offer.size, progress).await?;
    if written.len != end.len || written.len != offer.size {
        return Err(Error::Corrupt(format!(
            "{} bytes arrived, the sender announced {} and reported sending {}",
            written.len, offer.size, end.len
        )));
    }
    if written.blake3 != end.blake3 {
        return Err(Error::Corrupt(
            "the checksum of what arrived differs from the sender's".into(),
        ));
    }
    let path = written.sink.commit()?;
    debug!(len = written.len, "verified and in place");
    // The file is in place whatever happens to the confirmation: the receiver has succeeded.
    let _ = writer.send(Kind::Done, &[]).await;
    let _ = writer.shutdown().await;
    progress.finish(written.len);
    Ok(Received {
        path,
        size: written.len,
    })
}

/// Reads data records into the writer thread until the end record; returns what the thread
/// wrote and the sender's end record.
async fn pump<R: AsyncRead + Unpin>(
    reader: &mut RecordReader<R>,
    sink: Sink,
    size: u64,
    progress: &dyn Progress,
) -> Result<(Written, FileEnd)> {
    let mut disk = spawn_writer(sink);
    let mut received = 0u64;
    let outcome = loop {
        let Some(mut buf) = disk.free.recv().await else {
            // The writer thread stopped early: its error says why.
            break None;
        };
        let kind = match unstalled(transfer::read(reader, &mut buf, PEER, "mid-transfer")).await {
            Ok(kind) => kind,
            Err(e) => break Some(Err(e)),
        };
        match kind {
            Some(Kind::Data) => {
                let n = buf.payload().len() as u64;
                received += n;
                if received > size {
                    break Some(Err(Error::Corrupt(format!(
                        "the sender sent more than the {size} bytes it announced"
                    ))));
                }
                if disk.to_disk.send(buf).is_err() {
                    break None;
                }
                progress.advance(n);
            }
            Some(Kind::End) => break Some(FileEnd::decode(buf.payload())),
            None => {
                break Some(Err(Error::PeerVanished {
                    peer: PEER,
                    when: "mid-transfer (the stream ended before the end record)".into(),
                }));
            }
            other => break Some(Err(transfer::unexpected(other, "file data"))),
        }
    };
    // Closing the channel lets the thread finish; on failure it drops the sink, which removes
    // the temporary file, before we report.
    drop(disk.to_disk);
    let written = disk
        .done
        .await
        .map_err(|e| Error::local_thread("the file writer", &e));
    match (outcome, written) {
        (Some(Ok(end)), Ok(Ok(written))) => Ok((written, end)),
        (Some(Err(e)), _) => Err(e),
        (_, Ok(Err(e)) | Err(e)) => Err(e),
        (None, Ok(Ok(_))) => Err(Error::LocalThread {
            thread: "the file writer",
            cause: "it stopped before the end of the data".into(),
        }),
    }
}
