//! The sender's file: opened and checked before an offer is made, then read, hashed and cut
//! into record buffers by a blocking thread while the async side encrypts and sends.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::message::FileEnd;
use crate::names;
use crate::record::{DATA_CHUNK, RecordBuf};

/// Record buffers in flight between the reader thread and the network: enough to keep both
/// busy, small enough that a sender holds ~1 MiB whatever the file size.
pub const PIPELINE_DEPTH: usize = 4;

/// A file ready to be offered.
#[derive(Debug)]
pub struct Source {
    file: File,
    shown: String,
    name: String,
    size: u64,
}

impl Source {
    /// Opens `path` and checks that it is a regular, readable file with an acceptable name.
    pub fn open(path: &Path) -> Result<Source> {
        let shown = names::escape(&path.to_string_lossy());
        let unreadable = |source| Error::Unreadable {
            path: shown.clone(),
            source,
        };
        let file = File::open(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "it is a directory"
            } else {
                "it is not a regular file"
            };
            return Err(unreadable(std::io::Error::other(what)));
        }
        let name = names::base_name(path)?;
        Ok(Source {
            file,
            shown,
            name,
            size: meta.len(),
        })
    }

    /// The name the receiver will see.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's length when it was opened; exactly this many bytes are sent.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// What the reader thread hands to the network side.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// The next payload, ready to seal.
    Data(RecordBuf),
    /// Everything was read: the end record's contents.
    End(FileEnd),
}

/// The reader thread's channels.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Filled buffers (then one `End`, or one error).
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
                cause: "it stopped before the end of the file".into(),
            },
        }
    }
}

/// Starts reading `source` on a blocking thread. The thread stops when the file is done, on a
/// read error (sent as the last item), or when the network side drops its channels.
pub(crate) fn spawn_reader(source: Source) -> Reader {
    let (filled_tx, filled) = mpsc::unbounded_channel();
    let (free, mut free_rx) = mpsc::unbounded_channel();
    for _ in 0..PIPELINE_DEPTH {
        let _ = free.send(RecordBuf::new(DATA_CHUNK));
    }
    let done = tokio::task::spawn_blocking(move || {
        let Source {
            mut file,
            shown,
            size,
            ..
        } = source;
        let mut hash = blake3::Hasher::new();
        let mut left = size;
        while left > 0 {
            let Some(mut buf) = free_rx.blocking_recv() else {
                return;
            };
            let want = usize::try_from(left).map_or(DATA_CHUNK, |l| l.min(DATA_CHUNK));
            let chunk = buf.payload_mut(want);
            if let Err(e) = read_full(&mut file, chunk, &shown) {
                let _ = filled_tx.send(Err(e));
                return;
            }
            hash.update(&*chunk);
            left -= want as u64;
            if filled_tx.send(Ok(Chunk::Data(buf))).is_err() {
                return;
            }
        }
        let end = FileEnd {
            len: size,
            blake3: hash.finalize().into(),
        };
        let _ = filled_tx.send(Ok(Chunk::End(end)));
    });
    Reader { filled, free, done }
}

/// Fills `buf` from `file`; a file that got shorter since it was opened is an error rather
/// than a short transfer.
fn read_full(file: &mut File, mut buf: &mut [u8], shown: &str) -> Result<()> {
    while !buf.is_empty() {
        match file.read(buf) {
            Ok(0) => {
                return Err(Error::Unreadable {
                    path: shown.to_string(),
                    source: std::io::Error::other("the file got shorter while it was being sent"),
                });
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Unreadable {
                    path: shown.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_missing_files_are_refused_up_front() {
        let dir = std::env::temp_dir();
        let err = Source::open(&dir).expect_err("directory");
        assert!(err.to_string().contains("directory"), "{err}");
        let err = Source::open(&dir.join("surely-not-here-4b1d")).expect_err("missing");
        assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_reader_hashes_exactly_the_announced_bytes() {
        let path = std::env::temp_dir().join(format!("filexfer-src-{}", std::process::id()));
        let data: Vec<u8> = (0..(DATA_CHUNK * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).expect("write");
        let source = Source::open(&path).expect("open");
        assert_eq!(source.size(), data.len() as u64);
        let mut reader = spawn_reader(source);
        let mut got = Vec::new();
        let end = loop {
            match reader.filled.recv().await.expect("item").expect("ok") {
                Chunk::Data(buf) => {
                    got.extend_from_slice(buf.payload());
                    let _ = reader.free.send(buf);
                }
                Chunk::End(end) => break end,
            }
        };
        std::fs::remove_file(&path).expect("cleanup");
        assert_eq!(got, data);
        assert_eq!(end.len, data.len() as u64);
        assert_eq!(end.blake3, <[u8; 32]>::from(blake3::hash(&data)));
    }
}
