//! The receiver's writer thread: writes and hashes each file's data as it arrives (into the
//! staging directory, or to a stream such as stdout), checkpoints long files in the journal,
//! verifies each file against the sender's end record, and then gives it the sender's
//! executable bit and modification time. The network side has already checked the order and
//! sizes of what it forwards; this thread does the disk I/O and the hashing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result, is_disk_full};
use crate::manifest::{Entry, Manifest};
use crate::message::{Checkpoint, FileEnd, FileStart};
use crate::names;
use crate::record::{DATA_CHUNK, RecordBuf};
use crate::source::PIPELINE_DEPTH;
use crate::staging::{Kept, Staging};

/// A long file is checkpointed in the journal every this many bytes: what a `kill -9` can
/// cost a resume at most.
pub const CHECKPOINT: u64 = 16 * 1024 * 1024;

/// The sender's first checkpoint in a file (conversation version 3 on), from where its data
/// starts; the next ones double the distance up to [`CHECKPOINT`]. A receiver that does not
/// hash can journal only what a checkpoint covers, so an interrupted transfer keeps at least
/// half of what arrived (and all but [`CHECKPOINT`] at most).
pub const FIRST_CHECKPOINT: u64 = 1024 * 1024;

/// Where the sender's checkpoint after `at` (bytes from where its data started) falls.
pub fn next_checkpoint(at: u64) -> u64 {
    at.saturating_add(at.clamp(FIRST_CHECKPOINT, CHECKPOINT))
}

/// Where the writer thread puts what arrives.
#[derive(Debug)]
pub(crate) enum Output {
    /// Files into a staging directory.
    Staging(Staging),
    /// One file or text, streamed (stdout).
    Stream(io::Stdout),
    /// A text, held in memory for the caller.
    Text(Vec<u8>),
}

/// What the network side forwards, in order.
#[derive(Debug)]
pub(crate) enum ToDisk {
    /// Data of this entry follows from this offset (checked against the manifest and the
    /// resume offers already).
    Start(FileStart),
    /// An opened data record.
    Data(RecordBuf),
    /// The sender's hash of the current file's prefix so far.
    Checkpoint(Checkpoint),
    /// The sender's end of the current file.
    End(FileEnd),
}

/// The writer thread's channels.
#[derive(Debug)]
pub(crate) struct Writer {
    /// What to write; dropping it tells the thread the data is complete.
    pub to_disk: mpsc::UnboundedSender<ToDisk>,
    /// Empty buffers to read the next records into.
    pub free: mpsc::UnboundedReceiver<RecordBuf>,
    /// The thread: the output, or the error that stopped it.
    pub done: JoinHandle<Result<Output>>,
}

/// Starts writing into `output` on a blocking thread, continuing the prefixes in `kept`. With
/// `checkpoints` (a sender of conversation version 3 on) the journal takes the sender's
/// checkpoints and only resumed files are hashed here; otherwise every file is hashed and
/// checkpointed here.
pub(crate) fn spawn_writer(
    output: Output,
    manifest: Arc<Manifest>,
    kept: HashMap<u32, Kept>,
    checkpoints: bool,
) -> Writer {
    let (to_disk, mut incoming) = mpsc::unbounded_channel::<ToDisk>();
    let (free_tx, free) = mpsc::unbounded_channel();
    for _ in 0..PIPELINE_DEPTH {
        let _ = free_tx.send(RecordBuf::new(DATA_CHUNK));
    }
    let done = tokio::task::spawn_blocking(move || {
        let mut thread = Thread {
            output,
            manifest,
            kept,
            checkpoints,
            current: None,
        };
        let mut run = || {
            while let Some(item) = incoming.blocking_recv() {
                match item {
                    ToDisk::Start(start) => thread.start(start)?,
                    ToDisk::Data(buf) => {
                        let written = thread.data(buf.payload());
                        // The network side may already have stopped; then the buffer is freed.
                        let _ = free_tx.send(buf);
                        written?;
                    }
                    ToDisk::Checkpoint(c) => thread.sender_checkpoint(&c)?,
                    ToDisk::End(end) => thread.end(end)?,
                }
            }
            // The data stopped mid-file: what arrived was authenticated record by record, so
            // it is a verified prefix worth keeping for a resume (up to the last checkpoint
            // when the sender's checkpoints stand in for a hash of our own).
            thread.checkpoint()
        };
        match run() {
            Ok(()) => Ok(thread.output),
            Err(e) => {
                // What failed verification must not be offered for a resume.
                if let (Error::Corrupt(_), Output::Staging(staging)) = (&e, thread.output) {
                    staging.discard();
                }
                Err(e)
            }
        }
    });
    Writer {
        to_disk,
        free,
        done,
    }
}

struct Current {
    index: usize,
    file: Option<File>,
    written: u64,
    checkpointed: u64,
    /// The hash of what the file holds so far; `None` when the sender's checkpoints and the
    /// AEAD stand in for it (a file received whole from a version-3 sender).
    hasher: Option<blake3::Hasher>,
}

struct Thread {
    output: Output,
    manifest: Arc<Manifest>,
    kept: HashMap<u32, Kept>,
    /// The sender sends checkpoints (conversation version 3 on).
    checkpoints: bool,
    current: Option<Current>,
}

impl Thread {
    fn entry(&self, index: usize) -> &Entry {
        &self.manifest.entries[index]
    }

    fn start(&mut self, start: FileStart) -> Result<()> {
        let index = start.index as usize;
        let kept = self.kept.remove(&start.index);
        let (hasher, written) = match kept {
            // A resumed file is hashed on, so its end checks the kept prefix too.
            Some(k) if k.offset == start.offset => (Some(k.hasher), k.offset),
            _ => ((!self.checkpoints).then(blake3::Hasher::new), 0),
        };
        let file = match &self.output {
            Output::Staging(staging) => {
                let path = staging.path_of(&self.entry(index).path)?;
                let io_err = |e| write_error(&path, e);
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(written == 0)
                    .custom_flags(crate::source::open_flags(false, false))
                    .open(&path)
                    .map_err(io_err)?;
                if written > 0 {
                    // Anything past the checkpoint was never verified: cut it and go on.
                    file.set_len(written).map_err(io_err)?;
                    (&file).seek(SeekFrom::Start(written)).map_err(io_err)?;
                }
                Some(file)
            }
            Output::Stream(_) | Output::Text(_) => None,
        };
        self.current = Some(Current {
            index,
            file,
            written,
            checkpointed: written,
            hasher,
        });
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Err(Error::Protocol("file data outside a file".into()));
        };
        if let Some(hasher) = cur.hasher.as_mut() {
            hasher.update(data);
        }
        cur.written += data.len() as u64;
        match (&mut self.output, cur.file.as_mut()) {
            (Output::Staging(staging), Some(file)) => {
                let rel = &self.manifest.entries[cur.index].path;
                if let Err(e) = file.write_all(data) {
                    return Err(write_error(&staging.path_of(rel)?, e));
                }
                if !self.checkpoints && cur.written - cur.checkpointed >= CHECKPOINT {
                    self.checkpoint()?;
                }
            }
            (Output::Stream(out), _) => out.write_all(data).map_err(|e| stream_error(&e))?,
            (Output::Text(text), _) => text.extend_from_slice(data),
            (Output::Staging(_), None) => {}
        }
        Ok(())
    }

    /// Records the current file's progress in the journal, if it is being staged.
    fn checkpoint(&mut self) -> Result<()> {
        if let (Some(cur), Output::Staging(staging)) = (self.current.as_mut(), &mut self.output)
            && cur.file.is_some()
            && cur.written > cur.checkpointed
            && let Some(hasher) = &cur.hasher
        {
            let entry = &self.manifest.entries[cur.index];
            let prefix = hasher.finalize().into();
            let size = entry.size.unwrap_or(u64::MAX);
            staging.checkpoint(&entry.path, cur.written, size, entry.mtime, &prefix)?;
            cur.checkpointed = cur.written;
        }
        Ok(())
    }

    /// Journals the sender's hash of the prefix that arrived (checked against our own when
    /// the file is hashed here).
    fn sender_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Err(Error::Protocol("a checkpoint outside a file".into()));
        };
        let entry = &self.manifest.entries[cur.index];
        if checkpoint.offset != cur.written {
            return Err(Error::Protocol(format!(
                "{}: a checkpoint for {} bytes came after {}",
                names::quote(&entry.path),
                checkpoint.offset,
                cur.written
            )));
        }
        if let Some(hasher) = &cur.hasher
            && <[u8; 32]>::from(hasher.finalize()) != checkpoint.prefix
        {
            return Err(Error::Corrupt(format!(
                "the checksum of the first {} bytes of {} differs from the sender's",
                checkpoint.offset,
                names::quote(&entry.path)
            )));
        }
        if let (Output::Staging(staging), Some(_)) = (&mut self.output, &cur.file) {
            let size = entry.size.unwrap_or(u64::MAX);
            staging.checkpoint(
                &entry.path,
                cur.written,
                size,
                entry.mtime,
                &checkpoint.prefix,
            )?;
            cur.checkpointed = cur.written;
        }
        Ok(())
    }

    fn end(&mut self, end: FileEnd) -> Result<()> {
        let Some(cur) = self.current.take() else {
            return Err(Error::Protocol("a file end outside a file".into()));
        };
        let entry = self.manifest.entries[cur.index].clone();
        if cur.written != end.len || entry.size.is_some_and(|s| s != end.len) {
            return Err(Error::Corrupt(format!(
                "{}: {} bytes arrived, the sender reported {}",
                names::quote(&entry.path),
                cur.written,
                end.len
            )));
        }
        let hash = cur.hasher.map_or(end.blake3, |h| h.finalize().into());
        if hash != end.blake3 {
            return Err(Error::Corrupt(format!(
                "the checksum of {} differs from the sender's",
                names::quote(&entry.path)
            )));
        }
        match (&mut self.output, cur.file) {
            (Output::Staging(staging), Some(file)) => {
                let path = staging.path_of(&entry.path)?;
                finish_file(&file, &entry).map_err(|e| write_error(&path, e))?;
                drop(file);
                staging.checkpoint(&entry.path, end.len, end.len, entry.mtime, &hash)?;
            }
            (Output::Stream(out), _) => out.flush().map_err(|e| stream_error(&e))?,
            _ => {}
        }
        Ok(())
    }
}

/// Gives a verified file the sender's executable bit (to whoever may read it, as `git` does)
/// and modification time. Durability comes later, for all files at once
/// ([`Staging::commit`] syncs the file system before anything gets its final name): one sync
/// per file costs ~2 ms each on a journaling file system, 20 s for 10,000 files.
fn finish_file(file: &File, entry: &Entry) -> io::Result<()> {
    if entry.executable {
        let mut perms = file.metadata()?.permissions();
        let mode = perms.mode();
        perms.set_mode(mode | ((mode & 0o444) >> 2));
        file.set_permissions(perms)?;
    }
    if let Some(mtime) = entry.mtime {
        file.set_times(std::fs::FileTimes::new().set_modified(mtime))?;
    }
    Ok(())
}

fn write_error(path: &Path, source: io::Error) -> Error {
    if is_disk_full(&source) {
        Error::DiskFull { path: shown(path) }
    } else {
        Error::Write {
            path: shown(path),
            source,
        }
    }
}

fn stream_error(source: &io::Error) -> Error {
    Error::Write {
        path: "stdout".into(),
        source: io::Error::new(source.kind(), source.to_string()),
    }
}

pub(crate) fn shown(path: &Path) -> String {
    names::escape(&path.to_string_lossy())
}
