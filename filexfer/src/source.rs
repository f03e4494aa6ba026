//! What a sender offers: files and directories walked into a [`Manifest`] before the offer is
//! made (metadata only; nothing is read or hashed yet), stdin, or a text.
//!
//! Walking never follows a symbolic link inside a tree and never opens anything but regular
//! files and directories: links, FIFOs, sockets and devices inside a tree are skipped with a
//! warning; given on the command line, anything but a regular file or a directory is refused at
//! once. Every file's identity (device, inode, size, modification and change time) is kept, so
//! the reader thread can tell when the file changes before or while it is sent.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{Entry, EntryKind, MAX_ENTRIES, MAX_TEXT, Manifest};
use crate::names;

/// Record buffers in flight between a side's file thread and the network: enough to keep both
/// busy, small enough that a side holds ~2 MiB whatever the file size. A small file holds a
/// whole buffer while the file thread spends a few syscalls on it, so trees of small files
/// want more than one large file does: 10,000 files of ~20 KiB took 0.65-0.91 s with 4, 0.52-0.56
/// s with 8 (16 gained nothing more, and cycles more memory through the cache).
pub const PIPELINE_DEPTH: usize = 8;

/// What identifies the state of a file: if any of it moves, the file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    pub(crate) size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub(crate) fn of(meta: &fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// What differs between `self` (before) and `now`, for the message.
    pub(crate) fn change(&self, now: &Identity) -> Option<&'static str> {
        if self.dev != now.dev || self.ino != now.ino {
            Some("it was replaced by another file")
        } else if self.size != now.size {
            Some("its size changed")
        } else if self.mtime != now.mtime {
            Some("its modification time changed")
        } else if self.ctime != now.ctime {
            Some("its change time moved (written or its attributes changed)")
        } else {
            None
        }
    }
}

/// Where an entry's bytes come from.
#[derive(Debug)]
pub(crate) enum Origin {
    /// A regular file: its path, whether the path may be a symbolic link (only when given on the
    /// command line), and its identity when it was listed.
    File {
        path: PathBuf,
        follow: bool,
        id: Identity,
    },
    /// A directory: no data.
    Dir,
    /// This process's stdin, read to its end.
    Stdin,
    /// A text held in memory.
    Text(Vec<u8>),
}

/// Everything a transfer offers, ready to be announced.
#[derive(Debug)]
pub struct Source {
    pub(crate) manifest: Manifest,
    /// Parallel to `manifest.entries`.
    pub(crate) origins: Vec<Origin>,
    warnings: Vec<String>,
}

impl Source {
    /// One file or directory.
    pub fn open(path: &Path) -> Result<Source> {
        Source::paths(&[path.to_path_buf()])
    }

    /// Files and directories (walked recursively), each arriving under its base name.
    pub fn paths(paths: &[PathBuf]) -> Result<Source> {
        let mut walk = Walk::default();
        for path in paths {
            walk.top(path)?;
        }
        walk.finish()
    }

    /// Bytes read from stdin until it ends, stored by the receiver as `name`.
    pub fn stdin(name: &str) -> Result<Source> {
        let entry = Entry {
            kind: EntryKind::File,
            path: names::check(name)?.to_string(),
            size: None,
            executable: false,
            mtime: None,
        };
        Source::single(entry, Origin::Stdin)
    }

    /// A text for the receiver's stdout (at most [`MAX_TEXT`] bytes).
    pub fn text(text: &str) -> Result<Source> {
        if text.len() as u64 > MAX_TEXT {
            return Err(Error::Unreadable {
                path: "the text".into(),
                source: std::io::Error::other(format!("it is longer than {MAX_TEXT} bytes")),
            });
        }
        let entry = Entry {
            kind: EntryKind::Text,
            path: "text".into(),
            size: Some(text.len() as u64),
            executable: false,
            mtime: None,
        };
        Source::single(entry, Origin::Text(text.as_bytes().to_vec()))
    }

    fn single(entry: Entry, origin: Origin) -> Result<Source> {
        Ok(Source {
            manifest: Manifest::check(vec![entry])?,
            origins: vec![origin],
            warnings: Vec::new(),
        })
    }

    /// What will be announced.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the walk skipped, one line each (symbolic links, special files).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The first top-level name (the only one when sending one file).
    pub fn name(&self) -> &str {
        self.manifest
            .entries
            .first()
            .map_or("", |e| e.path.as_str())
    }

    /// Bytes of data that will be sent (streams of unknown size count as 0).
    pub fn size(&self) -> u64 {
        self.manifest.bytes()
    }
}

/// The walk's state: entries and origins in order.
#[derive(Debug, Default)]
struct Walk {
    entries: Vec<Entry>,
    origins: Vec<Origin>,
    warnings: Vec<String>,
}

impl Walk {
    /// A path from the command line: followed if it is a link, refused unless it is a regular
    /// file or a directory.
    fn top(&mut self, path: &Path) -> Result<()> {
        let shown = names::escape(&path.to_string_lossy());
        let unreadable = |source| Error::Unreadable {
            path: shown.clone(),
            source,
        };
        let meta = fs::metadata(path).map_err(unreadable)?;
        let name = names::base_name(path)?;
        if meta.is_file() {
            self.file(name, path.to_path_buf(), true, &meta);
            Ok(())
        } else if meta.is_dir() {
            self.dir(name, path, &meta)
        } else {
            Err(unreadable(std::io::Error::other(format!(
                "it is {}, not a regular file or a directory; refusing it",
                special_kind(&meta)
            ))))
        }
    }

    fn file(&mut self, rel: String, path: PathBuf, follow: bool, meta: &fs::Metadata) {
        self.entries.push(Entry {
            kind: EntryKind::File,
            path: rel,
            size: Some(meta.len()),
            executable: meta.mode() & 0o111 != 0,
            mtime: meta.modified().ok(),
        });
        self.origins.push(Origin::File {
            path,
            follow,
            id: Identity::of(meta),
        });
    }

    /// A directory and everything under it, depth first, in name order.
    fn dir(&mut self, rel: String, path: &Path, meta: &fs::Metadata) -> Result<()> {
        let shown = names::escape(&path.to_string_lossy());
        let unreadable = |source| Error::Unreadable {
            path: shown.clone(),
            source,
        };
        self.entries.push(Entry {
            kind: EntryKind::Dir,
            path: rel.clone(),
            size: None,
            executable: true,
            mtime: meta.modified().ok(),
        });
        self.origins.push(Origin::Dir);
        let mut children: Vec<(String, PathBuf)> = Vec::new();
        for entry in fs::read_dir(path).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let child = entry.path();
            let name = entry.file_name().into_string().map_err(|raw| {
                Error::NameRefused(format!(
                    "the name of {} is not valid UTF-8",
                    names::escape(&path.join(raw).to_string_lossy())
                ))
            })?;
            children.push((name, child));
        }
        children.sort();
        for (name, child) in children {
            if self.entries.len() >= MAX_ENTRIES {
                return Err(Error::NameRefused(format!(
                    "more than {MAX_ENTRIES} files and directories; send them in parts"
                )));
            }
            let child_rel = format!("{rel}/{name}");
            let shown_child = names::escape(&child.to_string_lossy());
            // Never follows a link: what a link points to may be outside the tree.
            let meta = fs::symlink_metadata(&child).map_err(|source| Error::Unreadable {
                path: shown_child.clone(),
                source,
            })?;
            if meta.is_file() {
                names::check(&name)?;
                self.file(child_rel, child, false, &meta);
            } else if meta.is_dir() {
                names::check(&name)?;
                self.dir(child_rel, &child, &meta)?;
            } else {
                self.warnings.push(format!(
                    "skipping {shown_child}: it is {}",
                    special_kind(&meta)
                ));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Source> {
        Ok(Source {
            manifest: Manifest::check(self.entries)?,
            origins: self.origins,
            warnings: self.warnings,
        })
    }
}

/// Flags for `OpenOptionsExt::custom_flags`: `nonblock` so opening a FIFO never waits for
/// a writer; unless `follow`, a symbolic link is refused (`ELOOP`) instead of followed.
pub(crate) fn open_flags(nonblock: bool, follow: bool) -> i32 {
    use rustix::fs::OFlags;
    let mut flags = OFlags::empty();
    if nonblock {
        flags |= OFlags::NONBLOCK;
    }
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    flags.bits() as i32
}

/// What a file that is neither regular nor a directory is, in words.
pub(crate) fn special_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("filexfer-src-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn missing_files_and_specials_are_refused_up_front() {
        let dir = scratch("refuse");
        let err = Source::open(&dir.join("surely-not-here")).expect_err("missing");
        assert!(matches!(err, Error::Unreadable { .. }), "{err}");
        let err = Source::open(Path::new("/dev/null")).expect_err("device");
        assert!(err.to_string().contains("a device"), "{err}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn trees_are_walked_in_order_and_links_skipped() {
        let dir = scratch("walk");
        let top = dir.join("photos");
        fs::create_dir_all(top.join("b/empty")).expect("dirs");
        fs::write(top.join("b/z.txt"), b"z").expect("file");
        fs::write(top.join("a.txt"), b"aa").expect("file");
        std::os::unix::fs::symlink("/etc/passwd", top.join("link")).expect("link");
        let source = Source::open(&top).expect("walk");
        let paths: Vec<&str> = source
            .manifest()
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "photos",
                "photos/a.txt",
                "photos/b",
                "photos/b/empty",
                "photos/b/z.txt"
            ]
        );
        assert_eq!(source.size(), 3);
        assert_eq!(source.warnings().len(), 1);
        assert!(source.warnings()[0].contains("symbolic link"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
