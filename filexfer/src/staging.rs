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
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{EntryKind, Manifest, split_time};
use crate::message::ResumeOffer;
use crate::names::{self, TEMP_PREFIX};
use crate::sink::shown;

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
        self.journal
            .write_all(line.as_bytes())
            .map_err(|source| Error::Write {
                path: shown(&self.root),
                source,
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn time_field(mtime: Option<std::time::SystemTime>) -> String {
    mtime.map_or_else(
        || "-".to_string(),
        |t| {
            let (s, n) = split_time(t);
            format!("{s}.{n:09}")
        },
    )
}

struct Record {
    offset: u64,
    size: u64,
    mtime: String,
    prefix: [u8; 32],
}

/// The last complete, well-formed line per path; anything else is ignored.
fn read_journal(path: &Path) -> HashMap<String, Record> {
    let mut out = HashMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return out;
    };
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let mut parts = line.splitn(5, ' ');
        let (Some(offset), Some(size), Some(mtime), Some(hash), Some(rel)) = (
            parts.next().and_then(|s| s.parse().ok()),
            parts.next().and_then(|s| s.parse().ok()),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let mut prefix = [0u8; 32];
        if hash.len() != 64
            || (0..32).any(|i| {
                u8::from_str_radix(&hash[2 * i..2 * i + 2], 16)
                    .map(|b| prefix[i] = b)
                    .is_err()
            })
        {
            continue;
        }
        out.insert(
            rel.to_string(),
            Record {
                offset,
                size,
                mtime: mtime.to_string(),
                prefix,
            },
        );
    }
    out
}

/// Hashes the first `len` bytes of `path` (a regular file, not followed if a link).
fn hash_prefix(path: &Path, len: u64) -> Option<(blake3::Hasher, [u8; 32])> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(crate::source::open_flags(true, false))
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() < len {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        file.read_exact(&mut buf[..want]).ok()?;
        hasher.update(&buf[..want]);
        left -= want as u64;
    }
    let hash = hasher.finalize().into();
    Some((hasher, hash))
}

/// A verified file to its final name: never replacing anything without `force`, never
/// replacing a directory.
fn place_file(from: &Path, to: &Path, force: bool) -> Result<()> {
    let occupied = |to: &Path| {
        if to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            Error::IsDirectory { path: shown(to) }
        } else {
            Error::Exists { path: shown(to) }
        }
    };
    let failed = |source| Error::Write {
        path: shown(to),
        source,
    };
    if force {
        if to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return Err(occupied(to));
        }
        return fs::rename(from, to).map_err(failed);
    }
    match fs::hard_link(from, to) {
        Ok(()) => {
            let _ = fs::remove_file(from);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(occupied(to)),
        // No hard links on this file system: check, then rename (a one-call-wide window).
        Err(_) if to.symlink_metadata().is_err() => fs::rename(from, to).map_err(failed),
        Err(_) => Err(occupied(to)),
    }
}

/// A verified tree to its final name: renamed whole when the name is free; merged into an
/// existing directory (files replaced, directories kept, links never followed) with `force`.
fn place_dir(from: &Path, to: &Path, force: bool) -> Result<()> {
    match to.symlink_metadata() {
        Err(_) => match fs::rename(from, to) {
            Ok(()) => Ok(()),
            Err(_) if to.symlink_metadata().is_ok() => place_dir(from, to, force),
            Err(source) => Err(Error::Write {
                path: shown(to),
                source,
            }),
        },
        Ok(meta) if force && meta.is_dir() => {
            let entries = fs::read_dir(from).map_err(|source| Error::Write {
                path: shown(from),
                source,
            })?;
            for entry in entries.flatten() {
                let (src, dst) = (entry.path(), to.join(entry.file_name()));
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    place_dir(&src, &dst, force)?;
                } else {
                    place_file(&src, &dst, force)?;
                }
            }
            Ok(())
        }
        Ok(_) => Err(Error::Exists { path: shown(to) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("filexfer-stg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn one_file(size: u64) -> Manifest {
        Manifest::check(vec![Entry {
            kind: EntryKind::File,
            path: "a.bin".into(),
            size: Some(size),
            executable: false,
            mtime: None,
        }])
        .expect("manifest")
    }

    #[test]
    fn a_second_receive_of_the_same_names_is_refused_while_the_first_runs() {
        let dir = scratch("busy");
        let m = one_file(10);
        let first = Staging::open(&dir, &m, false).expect("first");
        let err = Staging::open(&dir, &m, false).expect_err("second");
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        drop(first);
        // Nothing verified: the staging directory went with the first receive.
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 0);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn only_whole_journal_lines_that_still_hash_right_are_offered() {
        let dir = scratch("journal");
        let m = one_file(10);
        let data = b"0123456789";
        let mut staging = Staging::open(&dir, &m, false).expect("open");
        fs::write(staging.path_of("a.bin").expect("path"), &data[..6]).expect("partial");
        let prefix = |n: usize| -> [u8; 32] { blake3::hash(&data[..n]).into() };
        staging
            .checkpoint("a.bin", 4, 10, None, &prefix(4))
            .expect("cp");
        drop(staging);
        // A torn last line (a crash mid-write) is ignored; the one before it counts.
        let mut journal = OpenOptions::new()
            .append(true)
            .open(dir.join(staging_name(&m)).join("journal"))
            .expect("journal");
        journal.write_all(b"6 10 - abc").expect("torn");
        drop(journal);
        let staging = Staging::open(&dir, &m, false).expect("again");
        let plan = staging.plan_resume(&m);
        assert_eq!(plan.offers.len(), 1, "{:?}", plan.notes);
        assert_eq!(
            (plan.offers[0].offset, plan.offers[0].prefix),
            (4, prefix(4))
        );
        // Altered on disk: no longer offered, and said so.
        fs::write(staging.path_of("a.bin").expect("path"), b"XX2345").expect("tamper");
        let plan = staging.plan_resume(&m);
        assert!(plan.offers.is_empty());
        assert!(plan.notes[0].contains("does not match"), "{:?}", plan.notes);
        // Another size: a changed file.
        let plan = staging.plan_resume(&one_file(11));
        assert!(plan.notes[0].contains("changed since"), "{:?}", plan.notes);
        staging.discard();
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
