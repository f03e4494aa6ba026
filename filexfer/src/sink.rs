//! The receiver's output: a temporary file inside OUTDIR, written and hashed by a blocking
//! thread, synced, and moved to its final name only after verification.
//!
//! The final name is never opened for writing. The temporary file is created with
//! `create_new` (so it cannot follow a planted symlink) under a random name with a prefix
//! peers may not use; it becomes the final name by a hard link, which fails if the name exists,
//! so nothing is overwritten even if a file appears meanwhile (plain `rename`, which replaces,
//! only with `--force`). Any exit short of success removes the temporary file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result, is_disk_full};
use crate::names::{self, TEMP_PREFIX};
use crate::record::{DATA_CHUNK, RecordBuf};
use crate::source::PIPELINE_DEPTH;

/// Creates OUTDIR (and its parents) if needed, and checks that it is a directory. Returns the
/// directories it created, deepest first, so a failed transfer can remove them again
/// ([`remove_created`]).
pub fn prepare_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let write_err = |source| Error::Write {
        path: shown(dir),
        source,
    };
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        if p.as_os_str().is_empty() || p.symlink_metadata().is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    fs::create_dir_all(dir).map_err(write_err)?;
    if !fs::metadata(dir).map_err(write_err)?.is_dir() {
        return Err(write_err(io::Error::other("not a directory")));
    }
    Ok(missing)
}

/// Removes directories [`prepare_dir`] created, as long as they are empty.
pub fn remove_created(dirs: &[PathBuf]) {
    for dir in dirs {
        if fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

/// A file being received.
#[derive(Debug)]
pub struct Sink {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    force: bool,
    committed: bool,
}

impl Sink {
    /// Starts receiving `name` into `dir`: checks the name, refuses an existing file unless
    /// `force`, and creates the temporary file.
    pub fn create(dir: &Path, name: &str, force: bool) -> Result<Sink> {
        let target = names::target_in(dir, name)?;
        if !force && target.symlink_metadata().is_ok() {
            return Err(Error::Exists {
                path: shown(&target),
            });
        }
        let mut attempts = 0;
        loop {
            let temp = dir.join(format!("{TEMP_PREFIX}{:016x}.part", rand::random::<u64>()));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    return Ok(Sink {
                        file: Some(file),
                        temp,
                        target,
                        force,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
                Err(source) => {
                    return Err(Error::Write {
                        path: shown(&temp),
                        source,
                    });
                }
            }
        }
    }

    /// The temporary file's path (for tests and messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Appends `data` to the temporary file.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let written = match self.file.as_mut() {
            Some(file) => file.write_all(data),
            None => Err(io::Error::other("already closed")),
        };
        written.map_err(|e| self.io_error(e))
    }

    /// Makes the file durable and gives it its final name. Returns the final path.
    pub fn commit(mut self) -> Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| self.io_error(io::Error::other("already closed")))?;
        // Delayed allocation can report a full disk only here.
        file.sync_all().map_err(|e| self.io_error(e))?;
        drop(file);
        if self.force {
            fs::rename(&self.temp, &self.target).map_err(|e| self.io_error(e))?;
        } else {
            match fs::hard_link(&self.temp, &self.target) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.temp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::Exists {
                        path: shown(&self.target),
                    });
                }
                // No hard links on this file system: check, then rename. A file created in
                // between would be replaced; the window is one system call wide.
                Err(_) if self.target.symlink_metadata().is_err() => {
                    fs::rename(&self.temp, &self.target).map_err(|e| self.io_error(e))?;
                }
                Err(_) => {
                    return Err(Error::Exists {
                        path: shown(&self.target),
                    });
                }
            }
        }
        self.committed = true;
        if let Some(dir) = self.target.parent() {
            // Makes the new directory entry durable; some file systems cannot, which is fine.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.target.clone())
    }

    fn io_error(&self, source: io::Error) -> Error {
        if is_disk_full(&source) {
            Error::DiskFull {
                path: shown(&self.target),
            }
        } else {
            Error::Write {
                path: shown(&self.temp),
                source,
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.committed {
            drop(self.file.take());
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// What the writer thread produced.
#[derive(Debug)]
pub(crate) struct Written {
    /// The file, ready to commit once the checksum is confirmed.
    pub sink: Sink,
    /// Bytes written.
    pub len: u64,
    /// BLAKE3 of those bytes.
    pub blake3: [u8; 32],
}

/// The writer thread's channels.
#[derive(Debug)]
pub(crate) struct Writer {
    /// Opened data records to write; dropping it tells the thread the data is complete.
    pub to_disk: mpsc::UnboundedSender<RecordBuf>,
    /// Empty buffers to read the next records into.
    pub free: mpsc::UnboundedReceiver<RecordBuf>,
    /// The thread: the file and its checksum, or the write error that stopped it.
    pub done: JoinHandle<Result<Written>>,
}

/// Starts writing to `sink` on a blocking thread, with [`PIPELINE_DEPTH`] buffers to circulate.
pub(crate) fn spawn_writer(mut sink: Sink) -> Writer {
    let (to_disk, mut incoming) = mpsc::unbounded_channel::<RecordBuf>();
    let (free_tx, free) = mpsc::unbounded_channel();
    for _ in 0..PIPELINE_DEPTH {
        let _ = free_tx.send(RecordBuf::new(DATA_CHUNK));
    }
    let done = tokio::task::spawn_blocking(move || {
        let mut hash = blake3::Hasher::new();
        let mut len = 0u64;
        while let Some(buf) = incoming.blocking_recv() {
            hash.update(buf.payload());
            sink.write(buf.payload())?;
            len += buf.payload().len() as u64;
            // The network side may already have stopped; then the buffer is simply freed.
            let _ = free_tx.send(buf);
        }
        Ok(Written {
            sink,
            len,
            blake3: hash.finalize().into(),
        })
    });
    Writer {
        to_disk,
        free,
        done,
    }
}

fn shown(path: &Path) -> String {
    names::escape(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("filexfer-sink-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        prepare_dir(&dir).expect("dir");
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn created_directories_can_be_taken_back() {
        let root = scratch_dir("mkdir");
        let deep = root.join("a/b/c");
        let created = prepare_dir(&deep).expect("create");
        assert_eq!(created, [deep.clone(), root.join("a/b"), root.join("a")]);
        assert!(prepare_dir(&deep).expect("exists").is_empty());
        std::fs::write(root.join("a/keep.txt"), b"x").expect("file");
        remove_created(&created);
        // Empty directories went; the one with a file stayed, and so did its parent.
        assert_eq!(entries(&root.join("a")), ["keep.txt"]);
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn a_committed_file_appears_only_at_commit() {
        let dir = scratch_dir("commit");
        let mut sink = Sink::create(&dir, "a.txt", false).expect("create");
        sink.write(b"hello").expect("write");
        assert!(!dir.join("a.txt").exists());
        let path = sink.commit().expect("commit");
        assert_eq!(fs::read(&path).expect("read"), b"hello");
        assert_eq!(entries(&dir), ["a.txt"]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn existing_files_survive_unless_forced() {
        let dir = scratch_dir("exists");
        fs::write(dir.join("a.txt"), b"old").expect("seed");
        assert!(matches!(
            Sink::create(&dir, "a.txt", false),
            Err(Error::Exists { .. })
        ));
        // A file that appears while the transfer runs is not replaced either.
        fs::remove_file(dir.join("a.txt")).expect("rm");
        let mut sink = Sink::create(&dir, "a.txt", false).expect("create");
        sink.write(b"new").expect("write");
        fs::write(dir.join("a.txt"), b"raced").expect("race");
        assert!(matches!(sink.commit(), Err(Error::Exists { .. })));
        assert_eq!(fs::read(dir.join("a.txt")).expect("read"), b"raced");
        assert_eq!(entries(&dir), ["a.txt"], "temporary file left behind");

        let mut sink = Sink::create(&dir, "a.txt", true).expect("forced");
        sink.write(b"new").expect("write");
        sink.commit().expect("commit");
        assert_eq!(fs::read(dir.join("a.txt")).expect("read"), b"new");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_abandoned_sink_leaves_nothing() {
        let dir = scratch_dir("drop");
        let mut sink = Sink::create(&dir, "a.txt", false).expect("create");
        sink.write(b"partial").expect("write");
        assert!(sink.temp_path().exists());
        drop(sink);
        assert!(entries(&dir).is_empty());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn malicious_names_never_leave_the_directory() {
        let root = scratch_dir("evil");
        let dir = root.join("out");
        prepare_dir(&dir).expect("out");
        for evil in [
            "../escaped",
            "/tmp/escaped",
            "..",
            ".",
            "",
            "a/../../escaped",
            "x\0y",
        ] {
            assert!(
                matches!(Sink::create(&dir, evil, true), Err(Error::NameRefused(_))),
                "{evil:?} accepted"
            );
        }
        assert_eq!(entries(&root), ["out"]);
        assert!(entries(&dir).is_empty());
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_named_as_such() {
        let sink = Sink {
            file: Some(
                OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .expect("/dev/full"),
            ),
            temp: PathBuf::from("/dev/full"),
            target: PathBuf::from("/nonexistent/out.bin"),
            force: false,
            // Never remove /dev/full on drop.
            committed: true,
        };
        let mut sink = sink;
        let err = sink.write(&[0; 4096]).expect_err("ENOSPC");
        assert!(matches!(err, Error::DiskFull { .. }), "{err}");
        assert!(err.to_string().contains("disk full"));
    }
}
