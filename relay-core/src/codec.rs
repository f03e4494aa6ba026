//! Control-frame encoding: a big-endian `u32` length followed by that many bytes of bincode.
//!
//! This is the only module that knows about bincode, so the serializer can be replaced without
//! touching the rest. Reading frames from a stream is [`crate::frame`]'s job.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::protocol::{MAX_FRAME_LEN, PREFACE_LEN, PROTOCOL_VERSION, preface};

/// Size of the length prefix in front of every frame.
pub const LEN_PREFIX: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announced more than the reader allows.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The bytes were not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer closed the connection before a whole frame arrived.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Encodes `msg` as one frame: length prefix plus body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; LEN_PREFIX];
    bincode::serde::encode_into_std_write(msg, &mut frame, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    let body_len = frame.len() - LEN_PREFIX;
    if body_len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len: body_len,
            max: MAX_FRAME_LEN,
        });
    }
    let len = u32::try_from(body_len).map_err(|_| CodecError::TooLarge {
        len: body_len,
        max: MAX_FRAME_LEN,
    })?;
    frame[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Decodes one frame body (without its length prefix). Trailing bytes are an error: a frame
/// holds exactly one message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed(format!(
            "{} unexpected bytes after the message",
            body.len() - used
        )));
    }
    Ok(msg)
}

/// Reads a length prefix and checks it against `max_len` before anything is allocated.
pub fn check_len(prefix: [u8; LEN_PREFIX], max_len: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    let max = max_len.min(MAX_FRAME_LEN);
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    Ok(len)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    let frame = encode(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Writes this build's preface followed by one frame, in a single write.
pub async fn write_preface_and_frame<W, T>(w: &mut W, msg: &T) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    write_versioned_preface_and_frame(w, PROTOCOL_VERSION, msg).await
}

/// Writes the preface of protocol `version` followed by one frame, in a single write.
pub async fn write_versioned_preface_and_frame<W, T>(
    w: &mut W,
    version: u16,
    msg: &T,
) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    let frame = encode(msg)?;
    let mut out = Vec::with_capacity(PREFACE_LEN + frame.len());
    out.extend_from_slice(&preface(version));
    out.extend_from_slice(&frame);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode(&msg).expect("encodes");
        let len = check_len(frame[..4].try_into().expect("prefix"), MAX_FRAME_LEN).expect("fits");
        assert_eq!(len, frame.len() - LEN_PREFIX);
        assert_eq!(decode::<T>(&frame[LEN_PREFIX..]).expect("decodes"), msg);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Hello::Tunnel {
            tunnels: vec![
                TunnelRequest {
                    preferred_port: Some(8081),
                    lease: Some(LeaseSecret::random()),
                },
                TunnelRequest {
                    preferred_port: None,
                    lease: None,
                },
            ],
        });
        round_trip(Hello::Send);
        round_trip(Hello::Receive {
            nameplate: "42".into(),
        });
        round_trip(Reply::Welcome(Welcome {
            session_id: u64::MAX,
            tunnels: vec![Grant {
                public_port: 65535,
                lease: Some(LeaseSecret::random()),
            }],
            public_host: Some("relay.example.com".into()),
            max_visitors: 16_000,
            heartbeat_interval_ms: 10_000,
            lease_ttl_ms: 30_000,
        }));
        round_trip(Reply::Challenge { nonce: [9; 32] });
        round_trip(Reply::Redirect {
            to: "relay2.example.com:8080".into(),
        });
        round_trip(Proof {
            key_id: [1; 8],
            mac: [2; 32],
        });
        round_trip(ClientControl::Goodbye);
        round_trip(Reply::Error {
            code: ErrorCode::NoFreePort,
            message: "no free public port in 8081-9080".into(),
        });
        round_trip(Reply::Offered {
            nameplate: "7".into(),
            heartbeat_interval_ms: 1,
        });
        round_trip(Reply::Paired);
        round_trip(VisitorHeader {
            visitor_id: 1,
            tunnel: 63,
            peer_addr: "[::1]:40000".parse().expect("addr"),
            relay_addr: "[::1]:8081".parse().expect("addr"),
        });
        round_trip(VisitorReply::Refused {
            reason: "connection refused".into(),
        });
        round_trip(ClientControl::Ping(3));
        round_trip(RelayControl::Shutdown {
            reason: "bye".into(),
        });
        round_trip(SenderMessage::PairedAck);
        round_trip(OfferEvent::Closed { reason: "x".into() });
        round_trip(RelayControl::Reset {
            visitor_id: u64::MAX,
        });
        round_trip(ClientControl::Reset { visitor_id: 7 });
    }

    /// Version 3 only appended variants: every version-2 message keeps its encoding.
    #[test]
    fn resets_are_appended_after_the_version_2_variants() {
        assert_eq!(
            encode(&RelayControl::Reset { visitor_id: 2 }).expect("encodes"),
            [0, 0, 0, 2, 3, 2]
        );
        assert_eq!(
            encode(&ClientControl::Reset { visitor_id: 2 }).expect("encodes"),
            [0, 0, 0, 2, 3, 2]
        );
        assert_eq!(
            encode(&ClientControl::StopAccepting { tunnel: 1 }).expect("encodes"),
            [0, 0, 0, 2, 2, 1]
        );
    }

    /// Relays of every version answer a client of another version with this exact encoding of
    /// `Reply::Error`, so it must never change (see `protocol::Reply`).
    #[test]
    fn error_reply_encoding_is_frozen() {
        let frame = encode(&Reply::Error {
            code: ErrorCode::VersionMismatch,
            message: "v".into(),
        })
        .expect("encodes");
        assert_eq!(frame, [0, 0, 0, 4, 3, 0, 1, b'v']);
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let err = check_len(u32::MAX.to_be_bytes(), DEFAULT_MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { max, .. } if max == DEFAULT_MAX_FRAME_LEN));
        // A configured limit above the protocol ceiling is clamped to it.
        let err = check_len(((MAX_FRAME_LEN + 1) as u32).to_be_bytes(), usize::MAX).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { max, .. } if max == MAX_FRAME_LEN));
    }

    #[test]
    fn oversized_message_is_refused_on_encode() {
        let huge = Reply::Error {
            code: ErrorCode::Internal,
            message: "x".repeat(MAX_FRAME_LEN + 1),
        };
        assert!(encode(&huge).is_err());
    }

    #[test]
    fn junk_and_trailing_bytes_are_malformed() {
        assert!(matches!(
            decode::<Hello>(&[0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Hello>(&[]),
            Err(CodecError::Malformed(_))
        ));
        let mut frame = encode(&Hello::Send).expect("encodes");
        frame.push(0);
        assert!(matches!(
            decode::<Hello>(&frame[LEN_PREFIX..]),
            Err(CodecError::Malformed(_))
        ));
        // A string length far beyond the frame must not allocate or panic.
        let body = [2u8, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Hello>(&body).is_err());
    }

    #[tokio::test]
    async fn preface_and_frame_are_written_together() {
        let mut out = Vec::new();
        write_preface_and_frame(&mut out, &Hello::Send)
            .await
            .expect("writes");
        let preface: &[u8; PREFACE_LEN] = out.first_chunk().expect("preface");
        assert_eq!(parse_preface(preface), Some(PROTOCOL_VERSION));
        let frame = &out[PREFACE_LEN..];
        let len = check_len(
            frame[..LEN_PREFIX].try_into().expect("prefix"),
            MAX_FRAME_LEN,
        );
        assert_eq!(len.expect("fits"), frame.len() - LEN_PREFIX);
        assert_eq!(
            decode::<Hello>(&frame[LEN_PREFIX..]).expect("hello"),
            Hello::Send
        );
    }
}
