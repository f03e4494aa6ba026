//! Secrets that cross the wire: lease secrets and authentication proofs. Their `Debug` never
//! shows them, and they are compared in constant time.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Proves that a reconnecting client owns a leased public port: handed out with the port,
/// presented again to get the same port back. 128 random bits.
#[derive(Clone, Serialize, Deserialize)]
pub struct LeaseSecret([u8; 16]);

impl LeaseSecret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn random() -> Self {
        LeaseSecret(rand::random())
    }

    /// Whether `self` and `other` are the same secret, in time independent of where they differ.
    pub fn matches(&self, other: &LeaseSecret) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

/// Constant-time, like [`LeaseSecret::matches`].
impl PartialEq for LeaseSecret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl Eq for LeaseSecret {}

impl fmt::Debug for LeaseSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseSecret(***)")
    }
}

/// A client's answer to the relay's challenge: which token, and an HMAC that only its holder can
/// compute (see `relay_core::auth`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// Names the token without revealing it (derived from the secret, not reversible).
    pub key_id: [u8; 8],
    /// HMAC-SHA256 over the challenge, the channel binding and the client's hello.
    pub mac: [u8; 32],
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("key_id", &hex(&self.key_id))
            .field("mac", &"***")
            .finish()
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let lease = LeaseSecret([0xab; 16]);
        assert_eq!(format!("{lease:?}"), "LeaseSecret(***)");
        let proof = Proof {
            key_id: [1; 8],
            mac: [0xcd; 32],
        };
        let shown = format!("{proof:?}");
        assert!(!shown.contains("cd") && !shown.contains("205"), "{shown}");
    }

    #[test]
    fn leases_match_only_themselves() {
        let a = LeaseSecret::random();
        assert!(a.matches(&a.clone()));
        assert!(!a.matches(&LeaseSecret::random()));
    }
}
