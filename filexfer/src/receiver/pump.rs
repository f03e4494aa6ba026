//! The data phase of a receive: file records checked for order and size against the manifest
//! on their way to the writer thread.

use std::collections::HashMap;

use tokio::io::AsyncRead;

use super::PEER;
use crate::error::{Error, Result};
use crate::manifest::{Entry, Manifest};
use crate::message::{Checkpoint, FileEnd, FileStart};
use crate::progress::Progress;
use crate::record::{Kind, RecordReader};
use crate::sink::{Output, ToDisk};
use crate::transfer::{self, unstalled};

/// Reads file records into the writer thread until `Complete`, checking order and sizes
/// against the manifest; returns the writer's output and the bytes that did not cross
/// (resumed). On failure, returns the output too when the thread gave it back, so the caller
/// decides what stays.
pub(super) async fn pump<R: AsyncRead + Unpin>(
    reader: &mut RecordReader<R>,
    mut disk: crate::sink::Writer,
    manifest: &Manifest,
    offered: &HashMap<u32, u64>,
    checkpoints: bool,
    progress: &dyn Progress,
) -> std::result::Result<(Output, u64), (Error, Option<Output>)> {
    let mut next_index = 0usize;
    // The current file: its entry, and bytes still allowed (None: unknown size).
    let mut current: Option<(usize, Option<u64>)> = None;
    let mut resumed = 0u64;
    let mut buf = None;
    let outcome: Result<()> = async {
        loop {
            let mut b = match buf.take() {
                Some(b) => b,
                None => match disk.free.recv().await {
                    Some(b) => b,
                    // The writer thread stopped early: its error says why.
                    None => return Ok(()),
                },
            };
            let kind = unstalled(transfer::read(reader, &mut b, PEER, "mid-transfer")).await?;
            let item = match kind {
                Some(Kind::Data) => {
                    let n = b.payload().len() as u64;
                    match current.as_mut() {
                        Some((_, Some(left))) if *left >= n => *left -= n,
                        Some((_, None)) => {}
                        _ => {
                            return Err(Error::Corrupt(
                                "the sender sent more data than it announced".into(),
                            ));
                        }
                    }
                    progress.advance(n);
                    ToDisk::Data(b)
                }
                Some(Kind::FileStart) => {
                    let start = FileStart::decode(b.payload())?;
                    buf = Some(b);
                    let index = start.index as usize;
                    let entry = manifest.entries.get(index).filter(|e| e.has_data());
                    let (Some(entry), None) = (entry, current) else {
                        return Err(Error::Protocol("a file start out of place".into()));
                    };
                    if index < next_index {
                        return Err(Error::Protocol("files out of order".into()));
                    }
                    let kept = offered.get(&start.index).copied();
                    if start.offset != 0 && Some(start.offset) != kept {
                        return Err(Error::Protocol("a resume nobody offered".into()));
                    }
                    if start.offset == 0 && kept.is_some_and(|k| k > 0) {
                        progress.note(&format!(
                            "the sender's {} differs from the partial copy kept here; \
                             starting it over",
                            crate::names::quote(&entry.path)
                        ));
                    }
                    resumed += start.offset;
                    next_index = index + 1;
                    current = Some((index, entry.size.map(|s| s - start.offset)));
                    progress.file(&entry.path, entry.size, start.offset);
                    ToDisk::Start(start)
                }
                Some(Kind::Checkpoint) if checkpoints => {
                    let checkpoint = Checkpoint::decode(b.payload())?;
                    buf = Some(b);
                    if current.is_none() {
                        return Err(Error::Protocol("a checkpoint outside a file".into()));
                    }
                    ToDisk::Checkpoint(checkpoint)
                }
                Some(Kind::FileEnd) => {
                    let end = FileEnd::decode(b.payload())?;
                    buf = Some(b);
                    match current.take() {
                        Some((_, Some(0) | None)) => {}
                        _ => {
                            return Err(Error::Corrupt(
                                "a file ended before its announced size".into(),
                            ));
                        }
                    }
                    progress.file_done();
                    ToDisk::End(end)
                }
                Some(Kind::Complete) => {
                    let missing = manifest.entries[next_index..].iter().any(Entry::has_data);
                    if current.is_some() || missing {
                        return Err(Error::Protocol("the sender skipped files".into()));
                    }
                    return Ok(());
                }
                None => {
                    return Err(Error::PeerVanished {
                        peer: PEER,
                        when: "mid-transfer (the stream ended before the last file)".into(),
                    });
                }
                other => return Err(transfer::unexpected(other, "file data")),
            };
            if disk.to_disk.send(item).is_err() {
                return Ok(());
            }
        }
    }
    .await;
    // Closing the channel lets the thread finish; its result says whether all went well.
    drop(disk.to_disk);
    let written = disk
        .done
        .await
        .map_err(|e| Error::local_thread("the file writer", &e));
    match (outcome, written) {
        (Ok(()), Ok(Ok(output))) => {
            if current.is_some() || manifest.entries[next_index..].iter().any(Entry::has_data) {
                // The writer stopped and gave back its output without an error: cannot
                // happen, but never call that a success.
                return Err((
                    Error::LocalThread {
                        thread: "the file writer",
                        cause: "it stopped before the end of the data".into(),
                    },
                    Some(output),
                ));
            }
            Ok((output, resumed))
        }
        (Err(e), Ok(Ok(output))) => Err((e, Some(output))),
        (Err(e), _) => Err((e, None)),
        (Ok(()), Ok(Err(e)) | Err(e)) => Err((e, None)),
    }
}
