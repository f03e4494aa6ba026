//! Tokens and the challenge-response that proves a client holds one, without the token ever
//! crossing the wire.
//!
//! The relay sends a fresh 32-byte nonce; the client answers with
//! `HMAC-SHA256(token, LABEL || nonce || binding || hello)`, where `binding` ties the proof to
//! the TLS session when there is one (an exporter secret; zeros over plain TCP) and `hello` is
//! the client's hello frame exactly as sent, so the proof cannot be moved to another connection
//! or another request. A token is found by its key id, an HMAC of the token under a fixed label:
//! naming it costs the relay one lookup, not one HMAC per configured token.

use std::fmt;

use ring::hmac;

use crate::protocol::{Proof, hex};

/// Shortest token accepted: anything shorter is too easy to guess from a recorded proof.
pub const MIN_TOKEN_LEN: usize = 16;

const PROOF_LABEL: &[u8] = b"relay v2 token proof\0";
const KEY_ID_LABEL: &[u8] = b"relay v2 token id\0";

/// Channel binding over plain TCP: nothing to bind to.
pub const NO_BINDING: [u8; 32] = [0; 32];

/// A shared secret. `Debug` never shows it.
#[derive(Clone)]
pub struct Token {
    key: hmac::Key,
    id: [u8; 8],
}

impl Token {
    /// A token from its secret text (at least [`MIN_TOKEN_LEN`] bytes).
    pub fn new(secret: &str) -> Result<Token, String> {
        if secret.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "a token must be at least {MIN_TOKEN_LEN} characters (this one has {}); \
                 generate one with: head -c 24 /dev/urandom | base64",
                secret.len()
            ));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, KEY_ID_LABEL);
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag.as_ref()[..8]);
        Ok(Token { key, id })
    }

    /// The token's public name in proofs.
    pub fn key_id(&self) -> [u8; 8] {
        self.id
    }

    /// Answers a challenge.
    pub fn prove(&self, nonce: &[u8; 32], binding: &[u8; 32], hello: &[u8]) -> Proof {
        let tag = hmac::sign(&self.key, &proof_input(nonce, binding, hello));
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        Proof {
            key_id: self.id,
            mac,
        }
    }

    /// Checks an answer to a challenge, in constant time.
    pub fn verify(
        &self,
        proof: &Proof,
        nonce: &[u8; 32],
        binding: &[u8; 32],
        hello: &[u8],
    ) -> bool {
        hmac::verify(&self.key, &proof_input(nonce, binding, hello), &proof.mac).is_ok()
    }
}

fn proof_input(nonce: &[u8; 32], binding: &[u8; 32], hello: &[u8]) -> Vec<u8> {
    [PROOF_LABEL, nonce, binding, hello].concat()
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(id {}, secret ***)", hex(&self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "correct horse battery staple";

    #[test]
    fn a_proof_holds_only_for_its_nonce_binding_and_hello() {
        let token = Token::new(SECRET).expect("token");
        let nonce = [7u8; 32];
        let proof = token.prove(&nonce, &NO_BINDING, b"hello");
        assert!(token.verify(&proof, &nonce, &NO_BINDING, b"hello"));
        assert!(
            !token.verify(&proof, &[8u8; 32], &NO_BINDING, b"hello"),
            "replayed"
        );
        assert!(
            !token.verify(&proof, &nonce, &[1u8; 32], b"hello"),
            "other TLS session"
        );
        assert!(
            !token.verify(&proof, &nonce, &NO_BINDING, b"hellO"),
            "other request"
        );
        let other = Token::new("another secret of enough length").expect("token");
        assert!(!other.verify(&proof, &nonce, &NO_BINDING, b"hello"));
        assert_ne!(other.key_id(), token.key_id());
    }

    #[test]
    fn short_tokens_are_refused_and_secrets_never_shown() {
        assert!(Token::new("short").unwrap_err().contains("at least 16"));
        let token = Token::new(SECRET).expect("token");
        assert!(!format!("{token:?}").contains("horse"));
    }
}
