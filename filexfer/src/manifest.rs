//! The manifest: everything a sender offers, listed before any data moves. Entries are files,
//! directories or one text, named by `/`-separated paths relative to OUTDIR; the order is the
//! order in which file data follows, and a directory is listed before anything inside it.
//!
//! One entry on the wire (big-endian):
//!
//! ```text
//! kind u8 (0 file, 1 directory, 2 text) | flags u8 (bit 0 size known, bit 1 executable,
//! bit 2 mtime known) | size u64 | mtime seconds i64 | mtime nanoseconds u32 |
//! path length u16 | path (UTF-8)
//! ```
//!
//! Entries are packed into `Manifest` records of at most [`MANIFEST_PAYLOAD`] bytes, followed
//! by one `ManifestEnd` record (`entries u64 | total bytes u64`). The receiver trusts none of
//! it: [`Manifest::check`] runs the same rules on both sides, so a sender refuses, before a code
//! exists, what a receiver would refuse.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::names;

/// Largest payload of a `Manifest` record.
pub const MANIFEST_PAYLOAD: usize = 64 * 1024;

/// Most entries one transfer may list: bounds what a receiver keeps in memory for the list
/// (about 100 bytes per entry).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Longest text accepted (`send --text`): texts are held in memory and printed.
pub const MAX_TEXT: u64 = 1024 * 1024;

/// Fixed part of an encoded entry.
const ENTRY_HEAD: usize = 1 + 1 + 8 + 8 + 4 + 2;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or a stream read to its end, when the size is unknown).
    File,
    /// A directory, possibly empty.
    Dir,
    /// A message for the receiver's stdout (`send --text`).
    Text,
}

/// One offered file, directory or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// `/`-separated path relative to OUTDIR, unchecked until [`Manifest::check`].
    pub path: String,
    /// Bytes of data that follow; `None` for a stream read to its end (stdin).
    pub size: Option<u64>,
    /// Whether the sender's copy is executable.
    pub executable: bool,
    /// Modification time, when the sender has one.
    pub mtime: Option<SystemTime>,
}

impl Entry {
    /// Whether data records follow for this entry.
    pub fn has_data(&self) -> bool {
        self.kind != EntryKind::Dir
    }

    /// Appends the wire form of this entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (secs, nanos) = self.mtime.map_or((0, 0), split_time);
        let mut flags = 0u8;
        if self.size.is_some() {
            flags |= 1;
        }
        if self.executable {
            flags |= 2;
        }
        if self.mtime.is_some() {
            flags |= 4;
        }
        out.push(match self.kind {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Text => 2,
        });
        out.push(flags);
        out.extend_from_slice(&self.size.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&secs.to_be_bytes());
        out.extend_from_slice(&nanos.to_be_bytes());
        let path = self.path.as_bytes();
        // Paths are checked to at most names::MAX_PATH_BYTES before they are offered.
        out.extend_from_slice(&(path.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(path);
    }

    /// Bytes this entry takes on the wire.
    pub fn wire_len(&self) -> usize {
        ENTRY_HEAD + self.path.len()
    }

    /// Parses entries packed into one record payload.
    pub fn decode_all(mut payload: &[u8], into: &mut Vec<Entry>) -> Result<()> {
        let bad = |why: &str| Error::Protocol(format!("malformed manifest: {why}"));
        while !payload.is_empty() {
            if payload.len() < ENTRY_HEAD {
                return Err(bad("truncated entry"));
            }
            let (head, rest) = payload.split_at(ENTRY_HEAD);
            let kind = match head[0] {
                0 => EntryKind::File,
                1 => EntryKind::Dir,
                2 => EntryKind::Text,
                k => return Err(bad(&format!("unknown entry kind {k}"))),
            };
            let flags = head[1];
            let size = u64::from_be_bytes(array(&head[2..10]));
            let secs = i64::from_be_bytes(array(&head[10..18]));
            let nanos = u32::from_be_bytes(array(&head[18..22]));
            let len = usize::from(u16::from_be_bytes(array(&head[22..24])));
            if rest.len() < len {
                return Err(bad("truncated path"));
            }
            let (path, rest) = rest.split_at(len);
            let path = String::from_utf8(path.to_vec()).map_err(|_| {
                Error::NameRefused(format!(
                    "an announced path is not valid UTF-8 ({})",
                    names::escape(&String::from_utf8_lossy(path))
                ))
            })?;
            if nanos >= 1_000_000_000 {
                return Err(bad("modification time out of range"));
            }
            into.push(Entry {
                kind,
                path,
                size: (flags & 1 != 0).then_some(size),
                executable: flags & 2 != 0,
                mtime: if flags & 4 != 0 {
                    Some(join_time(secs, nanos).ok_or_else(|| bad("time out of range"))?)
                } else {
                    None
                },
            });
            payload = rest;
        }
        Ok(())
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// Seconds and nanoseconds since the epoch (negative seconds before it).
pub fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                (-secs, 0)
            } else {
                (-secs - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    }
}

fn join_time(secs: i64, nanos: u32) -> Option<SystemTime> {
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// The `ManifestEnd` payload: `entries u64 | total bytes u64`, a check on what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEnd {
    /// Number of entries listed.
    pub entries: u64,
    /// Sum of the known sizes.
    pub bytes: u64,
}

impl ManifestEnd {
    /// The record payload.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.entries.to_be_bytes());
        out[8..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<ManifestEnd> {
        if payload.len() != 16 {
            return Err(Error::Protocol("malformed manifest end".into()));
        }
        Ok(ManifestEnd {
            entries: u64::from_be_bytes(array(&payload[..8])),
            bytes: u64::from_be_bytes(array(&payload[8..])),
        })
    }
}

/// A checked list of entries.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// The entries, in wire order.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Checks `entries` as a receiver must before creating anything: every path passes
    /// [`names::check_path`]; no two paths are equal or differ only in case (they would
    /// collide on case-insensitive file systems); every directory is listed before what it
    /// contains and every parent is a listed directory; a text or a stream of unknown size
    /// stands alone; sizes add up without overflow.
    pub fn check(entries: Vec<Entry>) -> Result<Manifest> {
        if entries.is_empty() {
            return Err(Error::Protocol("the sender offered nothing".into()));
        }
        if entries.len() > MAX_ENTRIES {
            return Err(Error::Protocol(format!(
                "the sender offered more than {MAX_ENTRIES} entries"
            )));
        }
        let alone = entries
            .iter()
            .any(|e| e.kind == EntryKind::Text || (e.kind == EntryKind::File && e.size.is_none()));
        if alone && entries.len() > 1 {
            return Err(Error::Protocol(
                "a text or a stream of unknown size must be the only entry".into(),
            ));
        }
        let mut seen: HashMap<String, (&str, EntryKind)> = HashMap::with_capacity(entries.len());
        let mut total = 0u64;
        for entry in &entries {
            let parts = names::check_path(&entry.path)?;
            if entry.kind == EntryKind::Text && parts.len() != 1 {
                return Err(Error::Protocol(
                    "a text cannot be inside a directory".into(),
                ));
            }
            if entry.kind == EntryKind::Text && entry.size.is_none_or(|s| s > MAX_TEXT) {
                return Err(Error::Protocol(format!(
                    "a text must have a size of at most {MAX_TEXT} bytes"
                )));
            }
            if entry.kind == EntryKind::Dir && entry.size.is_some_and(|s| s != 0) {
                return Err(Error::Protocol("a directory with a size".into()));
            }
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                match seen.get(&fold(parent)) {
                    Some((p, EntryKind::Dir)) if *p == parent => {}
                    _ => {
                        return Err(Error::NameRefused(format!(
                            "{} is not inside a directory listed before it",
                            names::quote(&entry.path)
                        )));
                    }
                }
            }
            if let Some((earlier, _)) = seen.get(&fold(&entry.path)) {
                return Err(Error::NameRefused(if *earlier == entry.path {
                    format!("{} is listed twice", names::quote(&entry.path))
                } else {
                    format!(
                        "{} and {} differ only in case; they would be one file on many \
                         file systems",
                        names::quote(earlier),
                        names::quote(&entry.path)
                    )
                }));
            }
            seen.insert(fold(&entry.path), (&entry.path, entry.kind));
            total = total
                .checked_add(entry.size.unwrap_or(0))
                .ok_or_else(|| Error::Protocol("the offered sizes overflow".into()))?;
        }
        drop(seen);
        Ok(Manifest { entries })
    }

    /// Sum of the known sizes.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().filter_map(|e| e.size).sum()
    }

    /// Number of entries that carry data (files and texts).
    pub fn files(&self) -> u64 {
        self.entries.iter().filter(|e| e.has_data()).count() as u64
    }

    /// The top-level names, in order.
    pub fn tops(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.path.contains('/'))
    }

    /// The text, when this manifest is one.
    pub fn is_text(&self) -> bool {
        self.entries.len() == 1 && self.entries[0].kind == EntryKind::Text
    }

    /// The wire records: `Manifest` payloads of at most [`MANIFEST_PAYLOAD`] bytes.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        let mut cur = Vec::new();
        for entry in &self.entries {
            if !cur.is_empty() && cur.len() + entry.wire_len() > MANIFEST_PAYLOAD {
                records.push(std::mem::take(&mut cur));
            }
            entry.encode_into(&mut cur);
        }
        records.push(cur);
        records
    }

    /// The `ManifestEnd` payload for this manifest.
    pub fn end(&self) -> ManifestEnd {
        ManifestEnd {
            entries: self.entries.len() as u64,
            bytes: self.bytes(),
        }
    }
}

/// The key under which two paths collide on a case-insensitive file system.
fn fold(path: &str) -> String {
    path.to_lowercase()
}

#[cfg(test)]
mod tests;
