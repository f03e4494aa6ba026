//! `receive`'s side: claim the offer at the relay, run the key exchange, check the manifest,
//! offer what an interrupted transfer left, receive into the staging directory, verify, and move
//! everything into place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::code::Code;
use crate::error::{Error, Result};
use crate::handshake::Role;
use crate::manifest::{Entry, EntryKind, MANIFEST_PAYLOAD, MAX_ENTRIES, Manifest, ManifestEnd};
use crate::message::{ResumeOffer, SENDER_CHECKPOINTS};
use crate::outdir::{prepare_dir, remove_created};
use crate::progress::Progress;
use crate::record::{Kind, RecordBuf, RecordReader, RecordWriter};
use crate::sink::{Output, spawn_writer};
use crate::staging::{ResumePlan, Staging};
use crate::transfer::{self, abort, unstalled, write_failed};

mod pump;

use pump::pump;

const PEER: &str = "sender";

/// What arrived, complete and verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Received {
    /// The top-level names, where they are now (empty for a stream or a text).
    pub paths: Vec<PathBuf>,
    /// Files (and texts) received.
    pub files: u64,
    /// Bytes of all files, resumed prefixes included.
    pub size: u64,
    /// Bytes that were already here from an interrupted transfer and did not cross again.
    pub resumed: u64,
    /// A text (`send --text`), for the caller to show, unless it went to stdout.
    pub text: Option<String>,
}

/// What the receiver may do with existing names, and where data goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceiveOptions {
    /// Replace existing files of the same names (directories are merged, never replaced).
    pub force: bool,
    /// Write the one offered file or text to stdout instead of OUTDIR.
    pub stdout: bool,
}

/// Claims the offer behind `code` at the relay at `relay` and receives what it offers into
/// `outdir` (created if missing), or to stdout with [`ReceiveOptions::stdout`].
pub async fn receive(
    relay: &str,
    code: &Code,
    outdir: &Path,
    options: ReceiveOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Received> {
    let connect = relay_core::client::ConnectConfig::default();
    receive_with(relay, &connect, code, outdir, options, progress, cancel).await
}

/// [`receive`], with a token, TLS and other connection settings.
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
    let created = if options.stdout {
        Vec::new()
    } else {
        prepare_dir(outdir)?
    };
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
/// sender. Writes only inside `outdir` (created if missing), and only under checked names.
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
    if !options.stdout {
        prepare_dir(outdir)?;
    }
    let (mut writer, mut reader) = transfer::secure(stream, code, Role::Receiver, cancel).await?;
    let result = tokio::select! {
        r = converse(&mut writer, &mut reader, outdir, options, progress) => r,
        () = cancel.cancelled() => Err(Error::Cancelled("mid-transfer; only verified data was kept")),
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
    let version = transfer::greet(writer, reader, PEER).await?;
    let checkpoints = version >= SENDER_CHECKPOINTS;
    let manifest = Arc::new(read_manifest(reader).await?);
    let first = manifest.entries[0].clone();
    debug!(
        entries = manifest.entries.len(),
        bytes = manifest.bytes(),
        "manifest received"
    );

    let (output, plan) = if options.stdout {
        if manifest.entries.len() != 1 || first.kind == EntryKind::Dir {
            return Err(Error::Protocol(format!(
                "the sender offers {} entries ({}...); only a single file or text can go to \
                 stdout: receive into a directory instead",
                manifest.entries.len(),
                crate::names::quote(&first.path)
            )));
        }
        (Output::Stream(std::io::stdout()), ResumePlan::default())
    } else if manifest.is_text() {
        (Output::Text(Vec::new()), ResumePlan::default())
    } else {
        let (outdir, m, force) = (outdir.to_path_buf(), manifest.clone(), options.force);
        // Opening re-hashes partial copies from an interrupted transfer: a blocking job.
        tokio::task::spawn_blocking(move || {
            let staging = Staging::open(&outdir, &m, force)?;
            let plan = staging.plan_resume(&m);
            Ok::<_, Error>((Output::Staging(staging), plan))
        })
        .await
        .map_err(|e| Error::local_thread("the file writer", &e))??
    };
    for note in &plan.notes {
        progress.note(note);
    }
    let mut wire = Vec::new();
    for offer in &plan.offers {
        if wire.len() + ResumeOffer::LEN > MANIFEST_PAYLOAD {
            send(writer, Kind::Resume, &wire).await?;
            wire.clear();
        }
        offer.encode_into(&mut wire);
    }
    if !wire.is_empty() {
        send(writer, Kind::Resume, &wire).await?;
    }
    send(writer, Kind::Accept, &[]).await?;
    let offered: HashMap<u32, u64> = plan.offers.iter().map(|o| (o.index, o.offset)).collect();
    progress.start(&first.path, manifest.files(), manifest.bytes());

    let disk = spawn_writer(output, manifest.clone(), plan.kept, checkpoints);
    let pumped = pump(reader, disk, &manifest, &offered, checkpoints, progress).await;
    let (output, resumed) = match pumped {
        Ok(done) => done,
        Err((e, output)) => {
            if let Some(Output::Staging(staging)) = output {
                if matches!(e, Error::Corrupt(_)) || !staging.keeps_anything() {
                    staging.discard();
                } else {
                    progress.note(
                        "verified data was kept in OUTDIR: send the same files again into the same \
                         OUTDIR to resume",
                    );
                }
            }
            return Err(e);
        }
    };
    let mut received = Received {
        files: manifest.files(),
        size: manifest.bytes(),
        resumed,
        ..Received::default()
    };
    match output {
        Output::Staging(staging) => {
            let m = manifest.clone();
            received.paths = tokio::task::spawn_blocking(move || staging.commit(&m))
                .await
                .map_err(|e| Error::local_thread("the file writer", &e))??;
        }
        Output::Text(text) => {
            received.text = Some(String::from_utf8_lossy(&text).into_owned());
        }
        Output::Stream(_) => {}
    }
    debug!(files = received.files, "verified and in place");
    // Everything is in place whatever happens to the confirmation: the receiver has succeeded.
    let _ = writer.send(Kind::Done, &[]).await;
    let _ = writer.shutdown().await;
    progress.finish(received.size - resumed);
    Ok(received)
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut RecordWriter<W>,
    kind: Kind,
    payload: &[u8],
) -> Result<()> {
    unstalled(async {
        writer
            .send(kind, payload)
            .await
            .map_err(write_failed(PEER, "before the transfer started"))
    })
    .await
}

/// Reads `Manifest` records up to `ManifestEnd`, bounded in entries, and checks the result.
async fn read_manifest<R: AsyncRead + Unpin>(reader: &mut RecordReader<R>) -> Result<Manifest> {
    let mut buf = RecordBuf::new(MANIFEST_PAYLOAD);
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let kind = unstalled(transfer::read(
            reader,
            &mut buf,
            PEER,
            "before offering files",
        ))
        .await?;
        match kind {
            Some(Kind::Manifest) => {
                Entry::decode_all(buf.payload(), &mut entries)?;
                if entries.len() > MAX_ENTRIES {
                    return Err(Error::Protocol(format!(
                        "the sender offered more than {MAX_ENTRIES} entries"
                    )));
                }
            }
            Some(Kind::ManifestEnd) => {
                let end = ManifestEnd::decode(buf.payload())?;
                let manifest = Manifest::check(entries)?;
                if end != manifest.end() {
                    return Err(Error::Protocol("the manifest does not add up".into()));
                }
                return Ok(manifest);
            }
            None => {
                return Err(Error::PeerVanished {
                    peer: PEER,
                    when: "before offering files".into(),
                });
            }
            other => return Err(transfer::unexpected(other, "the manifest")),
        }
    }
}
