//! The sender's reader thread: opens each file as it comes (never blocking on a FIFO, never
//! following a link inside a tree), checks a receiver's resume offer against the file's own
//! prefix, reads and hashes the rest into record buffers, and checks at the end that the file
//! did not change meanwhile (identity before and after, and nothing past the announced size).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::message::{Checkpoint, FileEnd, FileStart, ResumeOffer};
use crate::names;
use crate::record::{DATA_CHUNK, RecordBuf};
use crate::sink::{FIRST_CHECKPOINT, next_checkpoint};
use crate::source::{Identity, Origin, PIPELINE_DEPTH, Source, special_kind};

/// How often (in bytes read) a file's identity is checked again while it is sent.
const RECHECK_EVERY: u64 = 4 * 1024 * 1024;

/// What the reader thread hands to the network side, in order.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Data of the entry `index` follows, from `offset` on.
    Start(FileStart),
    /// The next payload, ready to seal.
    Data(RecordBuf),
    /// The BLAKE3 of the current file's first bytes, after the data that ends there.
    Checkpoint(Checkpoint),
    /// The current file is complete.
    End(FileEnd),
    /// Something to tell the user (e.g. a resume offer that did not match).
    Note(String),
    /// A whole file that fit in one chunk (or none): start, data and end in one message, so
    /// the network side writes them together.
    Whole(FileStart, Option<RecordBuf>, FileEnd),
    /// Every entry was read.
    Complete,
}

/// The reader thread's channels.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Chunks in order (then `Complete`, or one error).
    pub filled: mpsc::UnboundedReceiver<Result<Chunk>>,
    /// Buffers to give back once sent.
    pub free: mpsc::UnboundedSender<RecordBuf>,
    /// The thread itself: awaited only when `filled` closes early, to learn why.
    pub done: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// Why the reader thread stopped without sending its last item (it should not).
    pub async fn failure(self) -> Error {
        match self.done.await {
            Err(e) => Error::local_thread("the file reader", &e),
            Ok(()) => Error::LocalThread {
                thread: "the file reader",
                cause: "it stopped before the end of the files".into(),
            },
        }
    }
}

/// Starts reading `source` on a blocking thread, resuming where `resume` offers (keyed by
/// entry index). The thread stops after the last entry, on an error (sent as the last item),
/// or when the network side drops its channels.
pub(crate) fn spawn_reader(source: Source, resume: HashMap<u32, ResumeOffer>) -> Reader {
    let (filled_tx, filled) = mpsc::unbounded_channel();
    let (free, free_rx) = mpsc::unbounded_channel();
    for _ in 0..PIPELINE_DEPTH {
        let _ = free.send(RecordBuf::new(DATA_CHUNK));
    }
    let done = tokio::task::spawn_blocking(move || {
        let mut thread = Thread {
            filled: filled_tx,
            free: free_rx,
        };
        if let Err(e) = thread.run(source, &resume) {
            let _ = thread.filled.send(Err(e));
        }
    });
    Reader { filled, free, done }
}

struct Thread {
    filled: mpsc::UnboundedSender<Result<Chunk>>,
    free: mpsc::UnboundedReceiver<RecordBuf>,
}

/// The network side went away: stop quietly (it reports why).
struct Gone;

impl From<Gone> for Error {
    fn from(_: Gone) -> Error {
        Error::Cancelled("while reading")
    }
}

impl Thread {
    fn run(&mut self, source: Source, resume: &HashMap<u32, ResumeOffer>) -> Result<()> {
        let Source {
            manifest, origins, ..
        } = source;
        for (index, (entry, origin)) in manifest.entries.iter().zip(origins).enumerate() {
            let index = u32::try_from(index).map_err(|_| Error::Protocol("too many".into()))?;
            match origin {
                Origin::Dir => {}
                Origin::File { path, follow, id } => {
                    let offer = resume.get(&index);
                    self.file(index, &entry.path, &path, follow, id, offer)?;
                }
                Origin::Stdin => {
                    self.stream(index, &mut std::io::stdin().lock(), "stdin")?;
                }
                Origin::Text(text) => self.stream(index, &mut &text[..], "the text")?,
            }
        }
        self.send(Chunk::Complete)?;
        Ok(())
    }

    fn send(&self, chunk: Chunk) -> Result<(), Gone> {
        self.filled.send(Ok(chunk)).map_err(|_| Gone)
    }

    fn buffer(&mut self) -> Result<RecordBuf, Gone> {
        self.free.blocking_recv().ok_or(Gone)
    }

    /// One regular file, from a verified resume offset if the receiver holds a matching prefix.
    fn file(
        &mut self,
        index: u32,
        rel: &str,
        path: &Path,
        follow: bool,
        listed: Identity,
        offer: Option<&ResumeOffer>,
    ) -> Result<()> {
        let shown = names::escape(&path.to_string_lossy());
        let mut file = open_regular(path, follow, &shown)?;
        let changed = |what: &str| Error::Changed {
            path: shown.clone(),
            what: what.to_string(),
        };
        let id = Identity::of(&file.metadata().map_err(|e| unreadable(&shown, e))?);
        if let Some(what) = listed.change(&id) {
            return Err(changed(&format!("{what} after send listed it")));
        }
        let size = id.size;
        let mut hash = blake3::Hasher::new();
        let mut offset = 0;
        if let Some(offer) = offer.filter(|o| o.offset <= size) {
            // The prefix is read once, here, and the hash carries on over the rest: the file is
            // still read exactly once in all.
            let mut left = offer.offset;
            let mut buf = vec![0u8; DATA_CHUNK];
            while left > 0 {
                let want = usize::try_from(left).map_or(DATA_CHUNK, |l| l.min(DATA_CHUNK));
                let chunk = &mut buf[..want];
                read_full(&mut file, chunk, &shown)?;
                hash.update(chunk);
                left -= want as u64;
            }
            if <[u8; 32]>::from(hash.finalize()) == offer.prefix {
                offset = offer.offset;
            } else {
                self.send(Chunk::Note(format!(
                    "{} differs from the receiver's partial copy; sending all of it",
                    names::quote(rel)
                )))?;
                hash = blake3::Hasher::new();
                std::io::Seek::rewind(&mut file).map_err(|e| unreadable(&shown, e))?;
            }
        }
        // The start and the last data chunk are held back to go out with the end: a small
        // file is then one message, whose three records the network side writes in one go
        // (see `RecordWriter::queue`).
        let mut start = Some(FileStart { index, offset });
        let mut last = None;
        let mut left = size - offset;
        let mut since_check = 0u64;
        let mut next_check = FIRST_CHECKPOINT;
        while left > 0 {
            let mut buf = self.buffer()?;
            let want = usize::try_from(left).map_or(DATA_CHUNK, |l| l.min(DATA_CHUNK));
            let chunk = buf.payload_mut(want);
            read_full(&mut file, chunk, &shown)?;
            hash.update(chunk);
            left -= want as u64;
            since_check += want as u64;
            // A change is caught within a few MiB rather than at the end of a long file (an
            // fstat costs a microsecond).
            if since_check >= RECHECK_EVERY {
                since_check = 0;
                let now = Identity::of(&file.metadata().map_err(|e| unreadable(&shown, e))?);
                if let Some(what) = id.change(&now) {
                    return Err(changed(&format!("{what} while it was being sent")));
                }
            }
            if left == 0 {
                last = Some(buf);
                break;
            }
            if let Some(start) = start.take() {
                self.send(Chunk::Start(start))?;
            }
            self.send(Chunk::Data(buf))?;
            // The receiver journals these instead of hashing everything itself.
            if size - left - offset >= next_check {
                next_check = next_checkpoint(next_check);
                self.send(Chunk::Checkpoint(Checkpoint {
                    offset: size - left,
                    prefix: hash.finalize().into(),
                }))?;
            }
        }
        // Nothing may follow the announced size, and nothing about the file may have moved.
        let mut probe = [0u8; 1];
        if read_some(&mut file, &mut probe, &shown)? > 0 {
            return Err(changed("it grew while it was being sent"));
        }
        let after = Identity::of(&file.metadata().map_err(|e| unreadable(&shown, e))?);
        if let Some(what) = id.change(&after) {
            return Err(changed(&format!("{what} while it was being sent")));
        }
        let end = FileEnd {
            len: size,
            blake3: hash.finalize().into(),
        };
        match start {
            Some(start) => self.send(Chunk::Whole(start, last, end))?,
            None => {
                if let Some(buf) = last {
                    self.send(Chunk::Data(buf))?;
                }
                self.send(Chunk::End(end))?;
            }
        }
        Ok(())
    }

    /// A source of unknown length (stdin) or a text, read to its end.
    fn stream(&mut self, index: u32, input: &mut dyn Read, shown: &str) -> Result<()> {
        self.send(Chunk::Start(FileStart { index, offset: 0 }))?;
        let mut hash = blake3::Hasher::new();
        let mut len = 0u64;
        loop {
            let mut buf = self.buffer()?;
            let chunk = buf.payload_mut(DATA_CHUNK);
            // Fill the record as far as the input allows, so a pipe that delivers 4 KiB at a
            // time does not make 4 KiB records.
            let mut filled = 0;
            while filled < chunk.len() {
                match read_some(input, &mut chunk[filled..], shown)? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            hash.update(&chunk[..filled]);
            len += filled as u64;
            buf.payload_mut(filled);
            self.send(Chunk::Data(buf))?;
        }
        self.send(Chunk::End(FileEnd {
            len,
            blake3: hash.finalize().into(),
        }))?;
        Ok(())
    }
}

/// Opens `path` for reading without ever blocking (a FIFO swapped in after the walk would
/// otherwise block `open` until a writer comes) and without following a link unless `follow`,
/// then refuses anything that is not a regular file.
fn open_regular(path: &Path, follow: bool, shown: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(crate::source::open_flags(true, follow))
        .open(path)
        .map_err(|e| unreadable(shown, e))?;
    let meta = file.metadata().map_err(|e| unreadable(shown, e))?;
    if !meta.is_file() {
        return Err(unreadable(
            shown,
            std::io::Error::other(format!("it is {}, not a regular file", special_kind(&meta))),
        ));
    }
    Ok(file)
}

fn unreadable(shown: &str, source: std::io::Error) -> Error {
    Error::Unreadable {
        path: shown.to_string(),
        source,
    }
}

fn read_some(input: &mut dyn Read, buf: &mut [u8], shown: &str) -> Result<usize> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(shown, e)),
        }
    }
}

/// Fills `buf` from `file`; a file that got shorter since it was listed is an error rather
/// than a short transfer.
fn read_full(file: &mut File, mut buf: &mut [u8], shown: &str) -> Result<()> {
    while !buf.is_empty() {
        match read_some(file, buf, shown)? {
            0 => {
                return Err(Error::Changed {
                    path: shown.to_string(),
                    what: "it got shorter while it was being sent".into(),
                });
            }
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
