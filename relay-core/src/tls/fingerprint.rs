//! [`Fingerprint`]: the SHA-256 of a certificate's DER encoding, the name a client pins.

use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a certificate's DER encoding. Shown as 64 lowercase hex digits; parsed from
/// hex with or without colons between bytes (`ab:cd:…`, as `openssl x509 -fingerprint -sha256`
/// prints it), in either case.
///
/// ```
/// use relay_core::tls::Fingerprint;
/// let fp = Fingerprint::of(b"not really a certificate");
/// let with_colons = fp.to_string().as_bytes().chunks(2)
///     .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
///     .collect::<Vec<_>>().join(":");
/// assert_eq!(with_colons.parse::<Fingerprint>().unwrap(), fp);
/// assert!("abcd".parse::<Fingerprint>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the certificate whose DER encoding is `der`.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let digits: Vec<u8> = s.trim().bytes().filter(|b| *b != b':').collect();
        let wrong = || {
            format!(
                "'{s}' is not a certificate fingerprint: expected the SHA-256 of the certificate \
                 as 64 hex digits (colons between bytes allowed)"
            )
        };
        if digits.len() != 64 {
            return Err(wrong());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| wrong())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| wrong())?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_lowercase_parsed_with_or_without_colons() {
        let fp = Fingerprint::of(b"x");
        let hex = fp.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(hex.parse::<Fingerprint>().expect("plain"), fp);
        assert_eq!(
            hex.to_uppercase().parse::<Fingerprint>().expect("upper"),
            fp
        );
        let colons: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
        assert_eq!(colons.join(":").parse::<Fingerprint>().expect("colons"), fp);
        assert!(hex[..62].parse::<Fingerprint>().is_err(), "short");
        assert!(format!("{}zz", &hex[..62]).parse::<Fingerprint>().is_err());
        assert!("é".repeat(32).parse::<Fingerprint>().is_err(), "not ascii");
    }
}
