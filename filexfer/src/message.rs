//! Payloads of the control records ([`Kind::Offer`](crate::record::Kind::Offer),
//! [`Kind::End`](crate::record::Kind::End), [`Kind::Abort`](crate::record::Kind::Abort)).
//! Fixed big-endian layouts, decoded with explicit bounds; data records carry raw file bytes.

use crate::error::{Error, Result};
use crate::names;

/// Longest abort reason sent or accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Longest announced name accepted (the receiver then applies [`names::check`]).
const MAX_WIRE_NAME: usize = 1024;

/// What the sender offers: `size (u64) | name length (u16) | name (UTF-8)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    /// The file's base name, unchecked until the receiver checks it.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
}

impl FileOffer {
    /// The record payload.
    pub fn encode(&self) -> Vec<u8> {
        let name = self.name.as_bytes();
        let mut out = Vec::with_capacity(10 + name.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        // Names are checked to at most 255 bytes before they are offered.
        out.extend_from_slice(&(name.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(name);
        out
    }

    /// Parses a payload.
    pub fn decode(payload: &[u8]) -> Result<FileOffer> {
        let bad = |why: &str| Error::Protocol(format!("malformed file offer: {why}"));
        if payload.len() < 10 {
            return Err(bad("too short"));
        }
        let (size, rest) = payload.split_at(8);
        let (len, name) = rest.split_at(2);
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len != name.len() || len > MAX_WIRE_NAME {
            return Err(bad("name length does not match"));
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| {
            Error::NameRefused(format!(
                "the announced name is not valid UTF-8 ({})",
                names::escape(&String::from_utf8_lossy(name))
            ))
        })?;
        Ok(FileOffer {
            name,
            size: u64::from_be_bytes(size.try_into().map_err(|_| bad("size"))?),
        })
    }
}

/// The sender's last word: `length (u64) | BLAKE3 (32 bytes)` of everything it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEnd {
    /// Bytes of file data sent.
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
    fn offers_round_trip() {
        let o = FileOffer {
            name: "corgis.mp4".into(),
            size: 5 << 32,
        };
        assert_eq!(FileOffer::decode(&o.encode()).expect("decode"), o);
    }

    #[test]
    fn malformed_offers_are_refused() {
        let good = FileOffer {
            name: "a".into(),
            size: 1,
        }
        .encode();
        assert!(FileOffer::decode(&good[..9]).is_err());
        let mut long = good.clone();
        long.push(b'x');
        assert!(FileOffer::decode(&long).is_err());
        let mut not_utf8 = good.clone();
        *not_utf8.last_mut().expect("name byte") = 0xff;
        assert!(matches!(
            FileOffer::decode(&not_utf8),
            Err(Error::NameRefused(_))
        ));
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
