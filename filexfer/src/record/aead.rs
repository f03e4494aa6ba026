//! The AEADs behind records: [`Cipher`] choices, and a [`Sealer`] / [`Opener`] per direction
//! with its 64-bit record counter as nonce.

use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::{KIND_LEN, Kind, LEN_PREFIX, MAX_PAYLOAD, PAYLOAD_AT, RecordBuf, TAG_LEN};
use crate::error::{Error, Result};

/// The AEAD that seals records; both take a 32-byte key, a 96-bit nonce and give a 16-byte
/// tag, so the record layout is the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// Record-layer generation 2 (the first releases).
    ChaCha20Poly1305,
    /// Record-layer generation 3 on: several times faster where the CPU has AES instructions.
    Aes256Gcm,
}

impl Cipher {
    /// What this program uses when the peer speaks the same generation.
    pub const DEFAULT: Cipher = Cipher::Aes256Gcm;

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        }
    }
}

/// Encrypts one direction's records.
pub struct Sealer {
    cipher: LessSafeKey,
    counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("cipher", self.cipher.algorithm())
            .field("counter", &self.counter)
            .finish()
    }
}

impl Sealer {
    /// A sealer with [`Cipher::DEFAULT`] for the direction keyed with `key`; the first record
    /// uses counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Sealer::with_cipher(Cipher::DEFAULT, key)
    }

    /// A sealer with `cipher` for the direction keyed with `key`.
    pub fn with_cipher(cipher: Cipher, key: &[u8; 32]) -> Self {
        Sealer {
            cipher: bind(cipher, key),
            counter: 0,
        }
    }

    /// The cipher this sealer uses.
    pub fn cipher(&self) -> Cipher {
        cipher_of(&self.cipher)
    }

    /// Encrypts `record`'s payload in place as a record of `kind`; afterwards
    /// [`RecordBuf::wire`] holds the bytes to send. This is the hot path, and what the
    /// benchmarks measure:
    ///
    /// ```
    /// use filexfer::record::{Kind, RecordBuf, Sealer, DATA_CHUNK};
    /// let mut sealer = Sealer::new(&[7; 32]);
    /// let mut rec = RecordBuf::new(DATA_CHUNK);
    /// rec.payload_mut(DATA_CHUNK).fill(0xab);
    /// sealer.seal_in_place(Kind::Data, &mut rec).unwrap();
    /// assert_eq!(rec.wire().len(), 4 + 1 + DATA_CHUNK + 16);
    /// ```
    pub fn seal_in_place(&mut self, kind: Kind, record: &mut RecordBuf) -> Result<()> {
        let nonce = next_nonce(&mut self.counter)?;
        let body_len = KIND_LEN + record.payload_len + TAG_LEN;
        let prefix = u32::try_from(body_len)
            .map_err(|_| Error::Protocol("record too large".into()))?
            .to_be_bytes();
        record.bytes[..LEN_PREFIX].copy_from_slice(&prefix);
        record.bytes[LEN_PREFIX] = kind as u8;
        let plain_end = PAYLOAD_AT + record.payload_len;
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(prefix),
                &mut record.bytes[LEN_PREFIX..plain_end],
            )
            .map_err(|_| Error::Protocol("encryption failed".into()))?;
        record.bytes[plain_end..plain_end + TAG_LEN].copy_from_slice(tag.as_ref());
        record.kind = Some(kind);
        Ok(())
    }
}

/// Decrypts and authenticates one direction's records.
pub struct Opener {
    cipher: LessSafeKey,
    counter: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("cipher", self.cipher.algorithm())
            .field("counter", &self.counter)
            .finish()
    }
}

impl Opener {
    /// An opener with [`Cipher::DEFAULT`] for the direction keyed with `key`; the first record
    /// must carry counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Opener::with_cipher(Cipher::DEFAULT, key)
    }

    /// An opener with `cipher` for the direction keyed with `key`.
    pub fn with_cipher(cipher: Cipher, key: &[u8; 32]) -> Self {
        Opener {
            cipher: bind(cipher, key),
            counter: 0,
        }
    }

    /// The cipher this opener uses.
    pub fn cipher(&self) -> Cipher {
        cipher_of(&self.cipher)
    }

    /// Checks the body length announced by a length prefix, before anything is read.
    pub(super) fn body_len(prefix: [u8; LEN_PREFIX], capacity: usize) -> Result<usize> {
        let len = u32::from_be_bytes(prefix) as usize;
        if len < KIND_LEN + TAG_LEN || len > KIND_LEN + capacity.min(MAX_PAYLOAD) + TAG_LEN {
            return Err(Error::Corrupt(format!(
                "a record announced an impossible length ({len} bytes)"
            )));
        }
        Ok(len)
    }

    /// Decrypts a record whose wire bytes are in `record` (see [`RecordReader`]); returns its
    /// kind with the plaintext payload left in place.
    pub(super) fn open_in_place(
        &mut self,
        record: &mut RecordBuf,
        body_len: usize,
    ) -> Result<Kind> {
        let nonce = next_nonce(&mut self.counter)?;
        let mut prefix = [0u8; LEN_PREFIX];
        prefix.copy_from_slice(&record.bytes[..LEN_PREFIX]);
        self.cipher
            .open_in_place(
                nonce,
                Aad::from(prefix),
                &mut record.bytes[LEN_PREFIX..LEN_PREFIX + body_len],
            )
            .map_err(|_| {
                Error::Corrupt(
                    "a record failed authentication (altered, replayed or reordered in transit)"
                        .into(),
                )
            })?;
        let kind = Kind::from_byte(record.bytes[LEN_PREFIX])
            .ok_or_else(|| Error::Protocol("a record of unknown kind".into()))?;
        record.payload_len = body_len - KIND_LEN - TAG_LEN;
        record.kind = Some(kind);
        Ok(kind)
    }
}

fn next_nonce(counter: &mut u64) -> Result<Nonce> {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    // 2^64 records cannot happen; refusing beats ever reusing a nonce.
    *counter = counter
        .checked_add(1)
        .ok_or_else(|| Error::Protocol("record counter exhausted".into()))?;
    Ok(Nonce::assume_unique_for_key(nonce))
}

fn bind(cipher: Cipher, key: &[u8; 32]) -> LessSafeKey {
    // Both ciphers take exactly 32-byte keys, so this cannot fail.
    let key = UnboundKey::new(cipher.algorithm(), key)
        .unwrap_or_else(|_| unreachable!("both AEADs take 32-byte keys"));
    LessSafeKey::new(key)
}

fn cipher_of(key: &LessSafeKey) -> Cipher {
    if key.algorithm() == &AES_256_GCM {
        Cipher::Aes256Gcm
    } else {
        Cipher::ChaCha20Poly1305
    }
}
