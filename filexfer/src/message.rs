//! Payloads of the control records (hello, file start and end, resume offers, abort); the
//! manifest's are in [`crate::manifest`]. Fixed big-endian layouts, decoded with explicit
//! bounds; data records carry raw file bytes.

use crate::error::{Error, Result};
use crate::names;

/// Longest abort reason sent or accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Version of the conversation after the key exchange (manifest, resume, per-file records).
/// Version 1 was one file per transfer, without a hello record. Version 3 adds the sender's
/// [`Checkpoint`] records, which spare the receiver hashing what it receives (see
/// [`SENDER_CHECKPOINTS`]); a version-2 peer gets none and hashes as before.
pub const PROTOCOL: u16 = 3;

/// First conversation version in which the sender sends a [`Checkpoint`] every
/// [`crate::sink::CHECKPOINT`] bytes of a file, and the receiver hashes only files it resumes:
/// a file it receives whole is authenticated record by record by the AEAD (the sender's own
/// bytes, in order, none missing), so hashing it again checked nothing the relay could change,
/// and the journal takes its prefix hashes from the sender's checkpoints.
pub const SENDER_CHECKPOINTS: u16 = 3;

/// Oldest conversation version this program still speaks.
pub const MIN_PROTOCOL: u16 = 2;

/// This program's release, sent in the hello so a refusal can name both sides' releases.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The first encrypted record each side sends:
/// `version u16 | min version u16 | release length u8 | release (UTF-8)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Newest conversation version the side speaks.
    pub version: u16,
    /// Oldest it still speaks.
    pub min_version: u16,
    /// Its release, e.g. `0.1.0` (escaped before printing).
    pub release: String,
}

impl Hello {
    /// This program's hello.
    pub fn ours() -> Hello {
        Hello {
            version: PROTOCOL,
            min_version: MIN_PROTOCOL,
            release: RELEASE.into(),
        }
    }

    /// The record payload.
    pub fn encode(&self) -> Vec<u8> {
        let release = &self.release.as_bytes()[..self.release.len().min(64)];
        let mut out = Vec::with_capacity(5 + release.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.min_version.to_be_bytes());
        out.push(release.len() as u8);
        out.extend_from_slice(release);
        out
    }

    /// Parses a payload. Bytes after the release are ignored: later versions may add fields.
    pub fn decode(payload: &[u8]) -> Result<Hello> {
        let bad = || Error::Protocol("malformed hello record".into());
        if payload.len() < 5 {
            return Err(bad());
        }
        let len = usize::from(payload[4]);
        let release = payload.get(5..5 + len).ok_or_else(bad)?;
        Ok(Hello {
            version: u16::from_be_bytes([payload[0], payload[1]]),
            min_version: u16::from_be_bytes([payload[2], payload[3]]),
            release: names::escape(&String::from_utf8_lossy(release)),
        })
    }

    /// The version both sides speak, or an error naming both sides' versions and releases.
    pub fn agree(&self, peer: &Hello, peer_name: &str) -> Result<u16> {
        let version = self.version.min(peer.version);
        if version < self.min_version.max(peer.min_version) {
            return Err(Error::Protocol(format!(
                "the {peer_name} speaks file-transfer protocol {}-{} (release {}), this program \
                 speaks {}-{} (release {}); update the older one",
                peer.min_version,
                peer.version,
                peer.release,
                self.min_version,
                self.version,
                self.release
            )));
        }
        Ok(version)
    }
}

/// Where the data of one file starts: `index u32 | offset u64`. Data records for the entry
/// follow, carrying its bytes from `offset` on; a receiver that kept a verified prefix of the
/// file gets an offset past it, and offset 0 means "all of it".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStart {
    /// Index of the entry in the manifest.
    pub index: u32,
    /// First byte that follows.
    pub offset: u64,
}

impl FileStart {
    /// The record payload.
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.index.to_be_bytes());
        out[4..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<FileStart> {
        let bytes: &[u8; 12] = payload
            .try_into()
            .map_err(|_| Error::Protocol("malformed file start".into()))?;
        let mut index = [0u8; 4];
        index.copy_from_slice(&bytes[..4]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[4..]);
        Ok(FileStart {
            index: u32::from_be_bytes(index),
            offset: u64::from_be_bytes(offset),
        })
    }
}

/// A receiver's offer to resume one file: it holds the first `offset` bytes, whose BLAKE3 is
/// `prefix`. `Resume` records carry any number of these (`index u32 | offset u64 | prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeOffer {
    /// Index of the entry in the manifest.
    pub index: u32,
    /// Bytes the receiver holds, verified.
    pub offset: u64,
    /// BLAKE3 of those bytes.
    pub prefix: [u8; 32],
}

impl ResumeOffer {
    /// Bytes one offer takes.
    pub const LEN: usize = 44;

    /// Appends the wire form.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.prefix);
    }

    /// Parses a `Resume` record's payload.
    pub fn decode_all(payload: &[u8], into: &mut Vec<ResumeOffer>) -> Result<()> {
        if payload.len() % Self::LEN != 0 {
            return Err(Error::Protocol("malformed resume record".into()));
        }
        for chunk in payload.chunks_exact(Self::LEN) {
            let mut index = [0u8; 4];
            index.copy_from_slice(&chunk[..4]);
            let mut offset = [0u8; 8];
            offset.copy_from_slice(&chunk[4..12]);
            let mut prefix = [0u8; 32];
            prefix.copy_from_slice(&chunk[12..]);
            into.push(ResumeOffer {
                index: u32::from_be_bytes(index),
                offset: u64::from_be_bytes(offset),
                prefix,
            });
        }
        Ok(())
    }
}

/// The end of one file's data: `length (u64) | BLAKE3 (32 bytes)` of the whole file (the
/// prefix the receiver kept included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEnd {
    /// Length of the whole file.
    pub len: u64,
    /// BLAKE3 of those bytes.
    pub blake3: [u8; 32],
}

impl FileEnd {
    /// Length of the payload.
    pub const LEN: usize = 40;

    /// The record payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.len.to_be_bytes());
        out[8..].copy_from_slice(&self.blake3);
        out
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<FileEnd> {
        let bytes: &[u8; Self::LEN] = payload
            .try_into()
            .map_err(|_| Error::Protocol("malformed end record".into()))?;
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[..8]);
        let mut blake3 = [0u8; 32];
        blake3.copy_from_slice(&bytes[8..]);
        Ok(FileEnd {
            len: u64::from_be_bytes(len),
            blake3,
        })
    }
}

/// The BLAKE3 of the first `offset` bytes of the current file, sent after the data record
/// that ends at `offset` (conversation version 3 on): `offset u64 | BLAKE3 (32 bytes)`, the
/// layout of [`FileEnd`]. The receiver journals it as a verified prefix for a later resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Bytes of the file it covers, from its start (a resumed prefix included).
    pub offset: u64,
    /// BLAKE3 of those bytes.
    pub prefix: [u8; 32],
}

impl Checkpoint {
    /// The record payload.
    pub fn encode(&self) -> [u8; FileEnd::LEN] {
        FileEnd {
            len: self.offset,
            blake3: self.prefix,
        }
        .encode()
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<Checkpoint> {
        let end = FileEnd::decode(payload)
            .map_err(|_| Error::Protocol("malformed checkpoint record".into()))?;
        Ok(Checkpoint {
            offset: end.len,
            prefix: end.blake3,
        })
    }
}

/// An abort reason as sent: UTF-8, cut to [`MAX_REASON_BYTES`].
pub fn encode_reason(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.as_bytes()[..end].to_vec()
}

/// An abort reason as received, escaped for printing.
pub fn decode_reason(payload: &[u8]) -> String {
    let cut = &payload[..payload.len().min(MAX_REASON_BYTES)];
    names::escape(&String::from_utf8_lossy(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_agree_or_name_both_versions() {
        let ours = Hello::ours();
        assert_eq!(Hello::decode(&ours.encode()).expect("decode"), ours);
        let newer = Hello {
            version: 7,
            min_version: 2,
            release: "9.9.9".into(),
        };
        assert_eq!(ours.agree(&newer, "sender").expect("overlap"), PROTOCOL);
        let too_new = Hello {
            version: 9,
            min_version: 5,
            release: "5.0.0".into(),
        };
        let err = ours.agree(&too_new, "sender").expect_err("no overlap");
        let msg = err.to_string();
        assert!(
            msg.contains("5-9 (release 5.0.0)")
                && msg.contains(&format!("2-3 (release {RELEASE})")),
            "{msg}"
        );
        assert!(Hello::decode(&[0, 2, 0]).is_err());
    }

    #[test]
    fn starts_and_resume_offers_round_trip() {
        let s = FileStart {
            index: 9,
            offset: 5 << 32,
        };
        assert_eq!(FileStart::decode(&s.encode()).expect("decode"), s);
        assert!(FileStart::decode(&[0; 11]).is_err());
        let offers = [
            ResumeOffer {
                index: 1,
                offset: 2,
                prefix: [3; 32],
            },
            ResumeOffer {
                index: 4,
                offset: 5,
                prefix: [6; 32],
            },
        ];
        let mut wire = Vec::new();
        for o in &offers {
            o.encode_into(&mut wire);
        }
        let mut back = Vec::new();
        ResumeOffer::decode_all(&wire, &mut back).expect("decode");
        assert_eq!(back, offers);
        assert!(ResumeOffer::decode_all(&wire[1..], &mut back).is_err());
    }

    #[test]
    fn ends_round_trip() {
        let e = FileEnd {
            len: 42,
            blake3: [3; 32],
        };
        assert_eq!(FileEnd::decode(&e.encode()).expect("decode"), e);
        assert!(FileEnd::decode(&[0; 39]).is_err());
    }

    #[test]
    fn reasons_are_bounded_and_escaped() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let enc = encode_reason(&long);
        assert!(enc.len() <= MAX_REASON_BYTES);
        assert!(std::str::from_utf8(&enc).is_ok());
        assert_eq!(decode_reason(b"disk\x1b[2J full"), "disk\\u{1b}[2J full");
    }
}
