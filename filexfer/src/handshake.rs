//! The key exchange: SPAKE2 over the full code, HKDF-SHA256 to per-direction keys, and key
//! confirmation in both directions before anything else moves.
//!
//! Each side writes, without waiting for the other:
//!
//! ```text
//! "RLYXFER\0" | version (u16 BE) | len (u8) | SPAKE2 message (symmetric mode)
//! ```
//!
//! reads the peer's, derives the shared secret, and expands it with HKDF-SHA256 into a key per
//! direction and a confirmation value per role. Each side then writes its own confirmation
//! before checking the peer's, so with a wrong code *both* sides see a mismatch and report it,
//! and neither has sent a byte encrypted under an unconfirmed key. Someone without the code (the
//! relay included) gets one guess per nameplate, and learns nothing it could test offline.

use hkdf::Hkdf;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::code::Code;
use crate::error::{Error, Result};
use crate::record::{Cipher, Opener, Sealer};

/// Identifies this protocol at the start of the peer-to-peer stream.
pub const MAGIC: [u8; 8] = *b"RLYXFER\0";

/// Version sent in the clear hello. Version 1 programs refuse anything but 1, so they stop
/// here with a message naming both versions. From version 2 on this field is the generation
/// of the handshake and record layer: a peer accepts any value of at least [`MIN_VERSION`],
/// both use the lower of the two generations (2: ChaCha20-Poly1305 records, 3: AES-256-GCM),
/// and the conversation version is agreed in the first encrypted record
/// ([`crate::message::Hello`]).
pub const VERSION: u16 = 3;

/// The oldest record-layer generation this program still speaks.
pub const MIN_VERSION: u16 = 2;

/// Binds the PAKE to this application and version, so a code can never be replayed into
/// another protocol that also uses SPAKE2.
const IDENTITY: &[u8] = b"relay/filexfer/v1";

/// HKDF salt, fixed per protocol version.
const SALT: &[u8] = b"relay/filexfer/v1 key schedule";

/// A symmetric SPAKE2 message on Ed25519: one side byte and a point.
const PAKE_MSG_LEN: usize = 33;

/// Which end of the transfer this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs `send`: writes the file.
    Sender,
    /// Runs `receive`: reads the file.
    Receiver,
}

impl Role {
    /// The other side's role, as a word for messages.
    pub fn peer_name(self) -> &'static str {
        match self {
            Role::Sender => "receiver",
            Role::Receiver => "sender",
        }
    }
}

/// The confirmed keys of one side: a sealer for what it sends, an opener for what it receives.
#[derive(Debug)]
pub struct Keys {
    /// Encrypts this side's records.
    pub sealer: Sealer,
    /// Decrypts the peer's records.
    pub opener: Opener,
}

/// Runs the key exchange and confirmation as `role` on `stream`. A different code on the other
/// side gives [`Error::WrongCode`]; the caller bounds the whole exchange in time.
pub async fn handshake<S>(stream: &mut S, code: &Code, role: Role) -> Result<Keys>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    handshake_as(stream, code, role, VERSION).await
}

/// [`handshake`] claiming record-layer generation `version`, as an older release would.
pub(crate) async fn handshake_as<S>(
    stream: &mut S,
    code: &Code,
    role: Role,
    version: u16,
) -> Result<Keys>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ours = version;
    let peer = role.peer_name();
    let io_err = |e: std::io::Error| Error::vanished(peer, "during the key exchange", &e);

    let password = code.to_string();
    let (pake, msg) = Spake2::<Ed25519Group>::start_symmetric(
        &Password::new(password.as_bytes()),
        &Identity::new(IDENTITY),
    );
    let mut hello = Vec::with_capacity(MAGIC.len() + 3 + msg.len());
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&ours.to_be_bytes());
    hello.push(u8::try_from(msg.len()).map_err(|_| Error::Protocol("PAKE message size".into()))?);
    hello.extend_from_slice(&msg);
    stream.write_all(&hello).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;

    let mut head = [0u8; MAGIC.len() + 3];
    stream.read_exact(&mut head).await.map_err(io_err)?;
    if head[..MAGIC.len()] != MAGIC {
        return Err(Error::Protocol(format!(
            "the {peer} does not speak the file-transfer protocol"
        )));
    }
    let version = u16::from_be_bytes([head[MAGIC.len()], head[MAGIC.len() + 1]]);
    if version < MIN_VERSION {
        return Err(Error::Protocol(format!(
            "the {peer} speaks file-transfer protocol version {version}, this program speaks \
             versions {MIN_VERSION}-{ours} (release {}); update the older one",
            crate::message::RELEASE
        )));
    }
    let cipher = if version.min(ours) >= 3 {
        Cipher::Aes256Gcm
    } else {
        Cipher::ChaCha20Poly1305
    };
    let len = usize::from(head[MAGIC.len() + 2]);
    if len != PAKE_MSG_LEN {
        return Err(Error::Protocol(format!(
            "the {peer} sent a key-exchange message of {len} bytes"
        )));
    }
    let mut peer_msg = [0u8; PAKE_MSG_LEN];
    stream.read_exact(&mut peer_msg).await.map_err(io_err)?;
    let secret = pake
        .finish(&peer_msg)
        .map_err(|e| Error::Protocol(format!("bad key-exchange message from the {peer}: {e}")))?;

    let schedule = Schedule::derive(&secret, cipher);
    let (mine, theirs, seal_key, open_key) = match role {
        Role::Sender => (
            schedule.sender_confirm,
            schedule.receiver_confirm,
            schedule.sender_key,
            schedule.receiver_key,
        ),
        Role::Receiver => (
            schedule.receiver_confirm,
            schedule.sender_confirm,
            schedule.receiver_key,
            schedule.sender_key,
        ),
    };
    stream.write_all(&mine).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;
    let mut got = [0u8; 32];
    stream.read_exact(&mut got).await.map_err(io_err)?;
    if !constant_time_eq(&got, &theirs) {
        return Err(Error::WrongCode);
    }
    Ok(Keys {
        sealer: Sealer::with_cipher(cipher, &seal_key),
        opener: Opener::with_cipher(cipher, &open_key),
    })
}

/// Everything derived from the PAKE's shared secret. Distinct confirmation values per role mean
/// a relay that reflects a side's own messages back cannot pass confirmation.
struct Schedule {
    sender_key: [u8; 32],
    receiver_key: [u8; 32],
    sender_confirm: [u8; 32],
    receiver_confirm: [u8; 32],
}

impl Schedule {
    fn derive(secret: &[u8], cipher: Cipher) -> Schedule {
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret);
        let expand = |info: &[u8]| {
            let mut out = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
            hk.expand(info, &mut out)
                .unwrap_or_else(|_| unreachable!("HKDF output length is valid"));
            out
        };
        // Keys are labelled with their cipher, so one key never serves two algorithms; the
        // generation-2 labels stay as they were, for the releases that speak only that.
        let (sender_key, receiver_key) = match cipher {
            Cipher::ChaCha20Poly1305 => (
                expand(b"sender to receiver: key"),
                expand(b"receiver to sender: key"),
            ),
            Cipher::Aes256Gcm => (
                expand(b"sender to receiver: AES-256-GCM key"),
                expand(b"receiver to sender: AES-256-GCM key"),
            ),
        };
        Schedule {
            sender_key,
            receiver_key,
            sender_confirm: expand(b"sender: key confirmation"),
            receiver_confirm: expand(b"receiver: key confirmation"),
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, RecordBuf};

    async fn pair(a: &str, b: &str) -> (Result<Keys>, Result<Keys>) {
        let (mut s, mut r) = tokio::io::duplex(4096);
        let a = Code::parse(a).expect("code a");
        let b = Code::parse(b).expect("code b");
        tokio::join!(
            handshake(&mut s, &a, Role::Sender),
            handshake(&mut r, &b, Role::Receiver)
        )
    }

    #[tokio::test]
    async fn same_code_gives_working_keys_in_both_directions() {
        let (s, r) = pair("7-apple-river-stone", "7-apple-river-stone").await;
        let (mut s, mut r) = (s.expect("sender"), r.expect("receiver"));
        let mut buf = RecordBuf::new(64);
        buf.set_payload(b"to receiver");
        s.sealer.seal_in_place(Kind::Data, &mut buf).expect("seal");
        let wire = buf.wire().to_vec();
        let mut reader = crate::record::RecordReader::new(&wire[..], r.opener);
        let mut out = RecordBuf::new(64);
        assert_eq!(
            reader.read_record(&mut out).await.expect("open"),
            Some(Kind::Data)
        );
        assert_eq!(out.payload(), b"to receiver");
        // The other direction uses the other key: the sender's own sealer output does not open
        // with the sender's opener.
        buf.set_payload(b"x");
        r.sealer.seal_in_place(Kind::Done, &mut buf).expect("seal");
        let mut back = crate::record::RecordReader::new(buf.wire(), s.opener);
        assert_eq!(
            back.read_record(&mut out).await.expect("open"),
            Some(Kind::Done)
        );
    }

    #[tokio::test]
    async fn a_generation_2_peer_gets_chacha_records_and_a_current_one_aes() {
        let code = Code::parse("7-apple-river-stone").expect("code");
        for (old, expected) in [
            (Some(Role::Sender), Cipher::ChaCha20Poly1305),
            (Some(Role::Receiver), Cipher::ChaCha20Poly1305),
            (None, Cipher::Aes256Gcm),
        ] {
            let version = |role| if old == Some(role) { 2 } else { VERSION };
            let (mut a, mut b) = tokio::io::duplex(4096);
            let (s, r) = tokio::join!(
                handshake_as(&mut a, &code, Role::Sender, version(Role::Sender)),
                handshake_as(&mut b, &code, Role::Receiver, version(Role::Receiver))
            );
            let (mut s, r) = (s.expect("sender"), r.expect("receiver"));
            for cipher in [s.sealer.cipher(), s.opener.cipher(), r.sealer.cipher()] {
                assert_eq!(cipher, expected, "old side {old:?}");
            }
            let mut buf = RecordBuf::new(64);
            buf.set_payload(b"across generations");
            s.sealer.seal_in_place(Kind::Data, &mut buf).expect("seal");
            let mut reader = crate::record::RecordReader::new(buf.wire(), r.opener);
            let mut out = RecordBuf::new(64);
            assert_eq!(
                reader.read_record(&mut out).await.expect("open"),
                Some(Kind::Data)
            );
            assert_eq!(out.payload(), b"across generations");
        }
    }

    #[tokio::test]
    async fn wrong_words_fail_on_both_sides() {
        let (s, r) = pair("7-apple-river-stone", "7-apple-river-stove").await;
        assert!(matches!(s, Err(Error::WrongCode)), "{s:?}");
        assert!(matches!(r, Err(Error::WrongCode)), "{r:?}");
    }

    #[tokio::test]
    async fn the_nameplate_is_part_of_the_password() {
        let (s, r) = pair("7-apple-river-stone", "8-apple-river-stone").await;
        assert!(matches!(s, Err(Error::WrongCode)));
        assert!(matches!(r, Err(Error::WrongCode)));
    }

    #[tokio::test]
    async fn a_reflected_handshake_fails() {
        // A relay that echoes the sender's bytes back must not pass confirmation.
        let (mut s, echo) = tokio::io::duplex(4096);
        let (mut rd, mut wr) = tokio::io::split(echo);
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        });
        let code = Code::parse("7-apple-river-stone").expect("code");
        let got = handshake(&mut s, &code, Role::Sender).await;
        // Its own message passes the PAKE (symmetric SPAKE2 cannot tell it from a peer's), so
        // only key confirmation, whose values differ per role, can catch the reflection. Any
        // other error would mean the test stopped short of that check.
        let err = got.expect_err("a reflected handshake succeeded");
        assert!(matches!(err, Error::WrongCode), "{err}");
        assert!(err.to_string().starts_with("wrong code"), "{err}");
    }

    #[tokio::test]
    async fn other_protocols_and_versions_are_named() {
        let (mut s, mut other) = tokio::io::duplex(4096);
        let code = Code::parse("7-apple-river-stone").expect("code");
        // A release of protocol version 1, which had no encrypted hello: named with ours.
        let mut old = b"RLYXFER\0\x00\x01\x21".to_vec();
        old.extend_from_slice(&[0; 33]);
        other.write_all(&old).await.expect("write");
        let err = handshake(&mut s, &code, Role::Receiver)
            .await
            .expect_err("version");
        let msg = err.to_string();
        assert!(
            msg.contains("the sender speaks file-transfer protocol version 1")
                && msg.contains("this program speaks versions 2-3 (release "),
            "{msg}"
        );

        let (mut s, mut other) = tokio::io::duplex(4096);
        other
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let err = handshake(&mut s, &code, Role::Receiver)
            .await
            .expect_err("magic");
        assert!(err.to_string().contains("does not speak"), "{err}");
    }

    #[tokio::test]
    async fn a_vanished_peer_is_reported_as_such() {
        let (mut s, other) = tokio::io::duplex(4096);
        drop(other);
        let code = Code::parse("7-apple-river-stone").expect("code");
        let err = handshake(&mut s, &code, Role::Sender)
            .await
            .expect_err("gone");
        assert!(
            matches!(
                err,
                Error::PeerVanished {
                    peer: "receiver",
                    ..
                }
            ),
            "{err}"
        );
    }
}
