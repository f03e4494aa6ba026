//! The receiver's output: a temporary file inside OUTDIR, written and hashed by a blocking
//! thread, synced, and moved to its final name only after verification.
//!
//! The final name is never opened for writing. The temporary file is created with
//! `create_new` (so it cannot follow a planted symlink) under a name with a prefix peers may
//! not use; it becomes the final name by a hard link, which fails if the name exists, so
//! nothing is overwritten even if a file appears meanwhile (plain `rename`, which replaces,
//! only with `--force`). Any exit short of success removes the temporary file.
//!
//! A process that is killed cannot remove its temporary file, so the name is predictable:
//! `.filexfer-<hash of the final name>-<pid>.part`. The next receive of the same name into the
//! same directory finds the leftovers of processes that no longer run and removes them (a later
//! version may resume from them instead).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result, is_disk_full};
use crate::names::{self, TEMP_PREFIX};
use crate::record::{DATA_CHUNK, RecordBuf};
use crate::source::PIPELINE_DEPTH;

/// The start of every temporary file name for the final name `name`: the prefix peers may
/// not use, and a hash of the name (the name itself could exceed the file system's limit).
fn temp_stem(name: &str) -> String {
    let hash = blake3::hash(name.as_bytes());
    let hex: String = hash.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{TEMP_PREFIX}{hex}-")
}

/// This process's temporary file for `name` in `dir`.
pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}{}.part", temp_stem(name), std::process::id()))
}

/// Removes temporary files for `name` in `dir` left by receive processes that no longer run.
/// Returns how many it removed.
pub fn remove_stale_parts(dir: &Path, name: &str) -> usize {
    let stem = temp_stem(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&stem))
            .and_then(|n| n.strip_suffix(".part"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_runs(pid) && fs::remove_file(entry.path()).is_ok()
        {
            tracing::debug!(file = %shown(&entry.path()), "removed a stale temporary file");
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` runs on this machine. Where that cannot be told, assume it does:
/// leaving a stale file behind is better than pulling one from under a running transfer.
/// (A receive in another PID namespace, or on another host sharing OUTDIR, looks dead here;
/// it would then fail at its commit rather than write a wrong file.)
fn process_runs(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// The error for a final name that is already taken.
fn occupied(target: &Path) -> Error {
    if target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        Error::IsDirectory {
            path: shown(target),
        }
    } else {
        Error::Exists {
            path: shown(target),
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
    /// Starts receiving `name` into `dir`: checks the name, refuses an existing directory, and
    /// an existing file unless `force`, removes stale temporary files for the same name, and
    /// creates this process's temporary file.
    pub fn create(dir: &Path, name: &str, force: bool) -> Result<Sink> {
        let target = names::target_in(dir, name)?;
        if let Ok(meta) = target.symlink_metadata()
            && (meta.is_dir() || !force)
        {
            return Err(occupied(&target));
        }
        remove_stale_parts(dir, name);
        let temp = temp_path(dir, name);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => Ok(Sink {
                file: Some(file),
                temp,
                target,
                force,
                committed: false,
            }),
            Err(source) => Err(Error::Write {
                path: shown(&temp),
                source,
            }),
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
            fs::rename(&self.temp, &self.target).map_err(|e| self.rename_error(e))?;
        } else {
            match fs::hard_link(&self.temp, &self.target) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.temp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(occupied(&self.target));
                }
                // No hard links on this file system: check, then rename. A file created in
                // between would be replaced; the window is one system call wide.
                Err(_) if self.target.symlink_metadata().is_err() => {
                    fs::rename(&self.temp, &self.target).map_err(|e| self.rename_error(e))?;
                }
                Err(_) => return Err(occupied(&self.target)),
            }
        }
        self.committed = true;
        if let Some(dir) = self.target.parent() {
            // Makes the new directory entry durable; some file systems cannot, which is fine.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.target.clone())
    }

    /// A directory that appeared at the final name during the transfer is the likely cause;
    /// say so rather than name the temporary file.
    fn rename_error(&self, source: io::Error) -> Error {
        if self.target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            occupied(&self.target)
        } else {
            self.io_error(source)
        }
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

pub(crate) fn shown(path: &Path) -> String {
    names::escape(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("filexfer-sink-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
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
    fn a_directory_is_never_replaced() {
        let dir = scratch_dir("isdir");
        fs::create_dir(dir.join("a.txt")).expect("seed");
        for force in [false, true] {
            let err = Sink::create(&dir, "a.txt", force).expect_err("a directory is in the way");
            assert!(matches!(err, Error::IsDirectory { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains("a.txt is a directory; not replacing it"),
                "{err}"
            );
        }
        // One that appears during the transfer is named too, not the temporary file.
        fs::remove_dir(dir.join("a.txt")).expect("rm");
        let sink = Sink::create(&dir, "a.txt", true).expect("create");
        fs::create_dir(dir.join("a.txt")).expect("race");
        let err = sink.commit().expect_err("rename onto a directory");
        assert!(matches!(err, Error::IsDirectory { .. }), "{err}");
        assert_eq!(entries(&dir), ["a.txt"], "temporary file left behind");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn stale_temporary_files_of_the_same_name_are_removed() {
        let dir = scratch_dir("stale");
        let stem = temp_stem("a.txt");
        // Above any pid_max: that process cannot run. Process 1 always does.
        let dead = format!("{stem}4294967295.part");
        let live = format!("{stem}1.part");
        let other = format!("{}4294967295.part", temp_stem("b.txt"));
        for name in [&dead, &live, &other] {
            fs::write(dir.join(name), b"partial").expect("seed");
        }
        let sink = Sink::create(&dir, "a.txt", false).expect("create");
        assert_eq!(
            sink.temp_path(),
            temp_path(&dir, "a.txt"),
            "name not predictable"
        );
        let mut left = entries(&dir);
        left.retain(|n| dir.join(n) != sink.temp_path());
        let mut expected = vec![live, other];
        expected.sort();
        assert_eq!(
            left, expected,
            "only the dead process's file of this name goes"
        );
        drop(sink);
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
        fs::create_dir(&dir).expect("out");
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
