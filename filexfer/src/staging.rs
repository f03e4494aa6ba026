//! Where a receiver keeps a transfer until every file is verified: a hidden directory
//! `OUTDIR/.filexfer-<key>/` (key: a hash of the offered top-level names), holding
//!
//! * `data/`, the offered tree as it arrives (files written in place, directories made up
//!   front, modes and times set as each file is verified);
//! * `journal`, one line appended per checkpoint: `offset size mtime blake3-of-prefix path`,
//!   written only after the bytes it covers were written, so even after `kill -9` every line
//!   describes data that is on disk;
//! * `lock`, locked while a receive runs, so two receives never share one staging directory.
//!
//! When everything is verified, [`Staging::commit`] moves each top-level name into OUTDIR
//! (a file by hard link, which never replaces anything; `rename` only with `--force`) and the
//! staging directory goes. Until then no final name exists. An interrupted receive keeps the
//! staging directory when it verified anything: the next receive of the same names into the
//! same OUTDIR re-hashes what the journal describes ([`Staging::plan_resume`]) and offers the
//! sender to continue from there.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{EntryKind, Manifest};
use crate::message::ResumeOffer;
use crate::names::{self, TEMP_PREFIX};
use crate::sink::shown;

mod journal;
mod place;

use journal::{hash_prefix, hex, read_journal, time_field};
use place::{place_dir, place_file};

/// Name of the data directory inside a staging directory.
const DATA: &str = "data";

/// A prefix the receiver already holds, verified against its journal.
#[derive(Debug)]
pub(crate) struct Kept {
    /// Bytes held.
    pub offset: u64,
    /// The hash state after them, to continue hashing the rest of the file.
    pub hasher: blake3::Hasher,
}

/// What [`Staging::plan_resume`] found.
#[derive(Debug, Default)]
pub(crate) struct ResumePlan {
    /// Offers for the sender.
    pub offers: Vec<ResumeOffer>,
    /// Per entry index, what is kept.
    pub kept: HashMap<u32, Kept>,
    /// Lines for the user (a file that changed, a partial copy that was altered).
    pub notes: Vec<String>,
}

/// A transfer's staging directory, locked by this process.
#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
    outdir: PathBuf,
    journal: File,
    journaled: bool,
    force: bool,
    /// Committed or discarded: nothing left to decide on drop.
    settled: bool,
    _lock: File,
}

impl Drop for Staging {
    /// A staging directory that recorded nothing verified is worth nothing: it goes (which
    /// also frees a full disk). One that did stays for a resume.
    fn drop(&mut self) {
        if !self.settled && !self.journaled {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

impl Staging {
    /// Checks the offered top-level names against OUTDIR (an existing name is refused unless
    /// `force`, a directory is never replaced by a file), then opens (or creates) and locks the
    /// staging directory and makes the offered directories inside it.
    pub fn open(outdir: &Path, manifest: &Manifest, force: bool) -> Result<Staging> {
        for top in manifest.tops() {
            let target = names::target_in(outdir, &top.path)?;
            let Ok(meta) = target.symlink_metadata() else {
                continue;
            };
            if meta.is_dir() && top.kind != EntryKind::Dir {
                return Err(Error::IsDirectory {
                    path: shown(&target),
                });
            }
            if !force || (top.kind == EntryKind::Dir && !meta.is_dir()) {
                return Err(Error::Exists {
                    path: shown(&target),
                });
            }
        }
        let root = outdir.join(staging_name(manifest));
        let write = |path: &Path| {
            let path = shown(path);
            move |source| Error::Write { path, source }
        };
        fs::create_dir_all(root.join(DATA)).map_err(write(&root))?;
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("lock"))
            .map_err(write(&root))?;
        // flock(2): released by the kernel however this process ends, `kill -9` included.
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(Error::Busy {
                what: manifest
                    .tops()
                    .map(|e| names::quote(&e.path))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let journal = OpenOptions::new()
            .append(true)
            .create(true)
            .open(root.join("journal"))
            .map_err(write(&root))?;
        let journaled = journal.metadata().is_ok_and(|m| m.len() > 0);
        let staging = Staging {
            root,
            outdir: outdir.to_path_buf(),
            journal,
            journaled,
            force,
            settled: false,
            _lock: lock,
        };
        for entry in &manifest.entries {
            if entry.kind == EntryKind::Dir {
                let dir = staging.path_of(&entry.path)?;
                fs::create_dir_all(&dir).map_err(write(&dir))?;
            }
        }
        Ok(staging)
    }

    /// Where the entry `rel` is written.
    pub fn path_of(&self, rel: &str) -> Result<PathBuf> {
        names::path_in(&self.root.join(DATA), rel)
    }

    /// The staging directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Appends a checkpoint: the first `offset` bytes of `rel` (announced as `size` bytes with
    /// modification time `mtime`) are written and hash to `prefix`.
    pub fn checkpoint(
        &mut self,
        rel: &str,
        offset: u64,
        size: u64,
        mtime: Option<std::time::SystemTime>,
        prefix: &[u8; 32],
    ) -> Result<()> {
        let line = format!(
            "{offset} {size} {} {} {rel}\n",
            time_field(mtime),
            hex(prefix)
        );
        // One write of one line: a process killed around it leaves the line whole or absent.
        self.journal.write_all(line.as_bytes()).map_err(|source| {
            let path = shown(&self.root);
            if crate::error::is_disk_full(&source) {
                Error::DiskFull { path }
            } else {
                Error::Write { path, source }
            }
        })?;
        self.journaled = true;
        Ok(())
    }

    /// Finds, for every offered file, a prefix this OUTDIR already holds from an interrupted
    /// transfer of the same file (same path, size and modification time), re-hashes it, and
    /// keeps it only if it still hashes to what the journal recorded.
    pub(crate) fn plan_resume(&self, manifest: &Manifest) -> ResumePlan {
        let mut plan = ResumePlan::default();
        let records = read_journal(&self.root.join("journal"));
        if records.is_empty() {
            return plan;
        }
        for (index, entry) in manifest.entries.iter().enumerate() {
            let (EntryKind::File, Some(size)) = (entry.kind, entry.size) else {
                continue;
            };
            let Some(record) = records.get(&entry.path) else {
                continue;
            };
            let quoted = names::quote(&entry.path);
            if record.size != size || record.mtime != time_field(entry.mtime) {
                plan.notes.push(format!(
                    "{quoted} changed since the interrupted transfer; starting it over"
                ));
                continue;
            }
            let Ok(path) = self.path_of(&entry.path) else {
                continue;
            };
            match hash_prefix(&path, record.offset) {
                Some((hasher, hash)) if hash == record.prefix => {
                    plan.offers.push(ResumeOffer {
                        index: index as u32,
                        offset: record.offset,
                        prefix: hash,
                    });
                    plan.kept.insert(
                        index as u32,
                        Kept {
                            offset: record.offset,
                            hasher,
                        },
                    );
                }
                _ => plan.notes.push(format!(
                    "the partial copy of {quoted} kept here does not match what was verified \
                     (altered or lost); starting it over"
                )),
            }
        }
        plan
    }

    /// Moves every top-level name into OUTDIR, sets the directories' times, and removes the
    /// staging directory. Returns the final paths.
    pub fn commit(mut self, manifest: &Manifest) -> Result<Vec<PathBuf>> {
        // Everything written is made durable at once (one `syncfs` instead of a sync per
        // file) before any of it gets a final name; a full disk can show up only now.
        let synced =
            File::open(&self.root).and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from));
        if let Err(e) = synced {
            return Err(if crate::error::is_disk_full(&e) {
                Error::DiskFull {
                    path: shown(&self.root),
                }
            } else {
                Error::Write {
                    path: shown(&self.root),
                    source: e,
                }
            });
        }
        let mut placed = Vec::new();
        for top in manifest.tops() {
            let from = self.path_of(&top.path)?;
            let to = names::target_in(&self.outdir, &top.path)?;
            if top.kind == EntryKind::Dir {
                place_dir(&from, &to, self.force)?;
            } else {
                place_file(&from, &to, self.force)?;
            }
            placed.push(to);
        }
        // Children before parents: filling a directory moves its modification time.
        for entry in manifest.entries.iter().rev() {
            if let (EntryKind::Dir, Some(mtime)) = (entry.kind, entry.mtime) {
                let dir = names::path_in(&self.outdir, &entry.path)?;
                let _ = File::open(&dir)
                    .and_then(|d| d.set_times(fs::FileTimes::new().set_modified(mtime)));
            }
        }
        let _ = File::open(&self.outdir).and_then(|d| d.sync_all());
        let _ = fs::remove_dir_all(&self.root);
        self.settled = true;
        Ok(placed)
    }

    /// Removes the staging directory and everything in it (a corrupt transfer, or nothing kept).
    pub fn discard(mut self) {
        let _ = fs::remove_dir_all(&self.root);
        self.settled = true;
    }

    /// Whether anything verified is recorded (worth keeping for a resume).
    pub fn keeps_anything(&self) -> bool {
        self.journaled
    }
}

/// `.filexfer-<hash of the top-level names>`: the same offer always lands in the same place.
fn staging_name(manifest: &Manifest) -> String {
    let mut hasher = blake3::Hasher::new();
    for top in manifest.tops() {
        hasher.update(top.path.as_bytes());
        hasher.update(b"\0");
    }
    format!("{TEMP_PREFIX}{}", &hex(hasher.finalize().as_bytes())[..16])
}

#[cfg(test)]
mod tests;
