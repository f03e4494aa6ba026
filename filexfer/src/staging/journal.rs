//! The journal's line format (`offset size mtime blake3-of-prefix path`) and the re-hash of a
//! kept prefix that a resume is based on.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::path::Path;

use crate::manifest::split_time;

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn time_field(mtime: Option<std::time::SystemTime>) -> String {
    mtime.map_or_else(
        || "-".to_string(),
        |t| {
            let (s, n) = split_time(t);
            format!("{s}.{n:09}")
        },
    )
}

pub(super) struct Record {
    pub(super) offset: u64,
    pub(super) size: u64,
    pub(super) mtime: String,
    pub(super) prefix: [u8; 32],
}

/// The last complete, well-formed line per path; anything else is ignored.
pub(super) fn read_journal(path: &Path) -> HashMap<String, Record> {
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
pub(super) fn hash_prefix(path: &Path, len: u64) -> Option<(blake3::Hasher, [u8; 32])> {
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
