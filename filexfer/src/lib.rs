//! `filexfer`: end-to-end encrypted file transfer through a relay. The `send` and `receive`
//! binaries (flags, signals, the progress bar) live in the `filexfer-cli` package
//! (`filexfer/cli/`); this library does no printing of its own.
//!
//! The relay pairs a sender with its receiver and splices their bytes; everything on the
//! spliced connection is encrypted and authenticated with keys the two peers agree from the
//! transfer code by a PAKE, so the relay can neither read nor undetectably change the file.
//! `docs/filexfer.md` describes the protocol and the threat model.
//!
//! # Map
//!
//! | module | what lives there |
//! |---|---|
//! | [`code`] | transfer codes `NAMEPLATE-WORD-WORD-WORD`: generation and parsing |
//! | [`handshake`] | SPAKE2 + HKDF-SHA256 key exchange with two-way key confirmation |
//! | [`record`] | AES-256-GCM (ChaCha20-Poly1305 with older peers) records with counter nonces; [`record::Sealer`] is the hot path |
//! | [`manifest`] | the list of offered files, directories or text, and the receiver's checks |
//! | [`message`] | payloads of the control records (hello, file start/end, resume, abort) |
//! | [`transfer`] | the conversation after the handshake, its limits, aborting |
//! | [`sender`] | offer at the relay, wait, send ([`Offered`], [`send_over`]) |
//! | [`receiver`] | claim at the relay, receive, verify ([`receive`], [`receive_over`]) |
//! | [`source`] | what the sender offers: paths walked into a manifest, stdin, a text |
//! | [`reader`] | the sender's reader thread: resume check, read + hash, change detection |
//! | [`outdir`] | OUTDIR checked (a writable directory) before the code is used |
//! | [`staging`] | the receiver's hidden staging directory, resume journal, no-overwrite commit |
//! | [`sink`] | the receiver's writer thread: write + hash, checkpoints, verify, modes and times |
//! | [`names`] | which file names cross the wire, and escaping them for display |
//! | [`progress`] | the [`Progress`] trait a transfer reports to, and [`NoProgress`] |
//! | [`error`] | [`Error`]: one variant per thing a user can act on |
//!
//! # Sending from a program
//!
//! ```no_run
//! # async fn run() -> filexfer::Result<()> {
//! use filexfer::{NoProgress, Offered, Source};
//! let source = Source::open("corgis.mp4".as_ref())?;
//! let offered = Offered::register("relay.example.com:9021", source).await?;
//! println!("{}", offered.code());
//! let cancel = tokio_util::sync::CancellationToken::new();
//! offered.run(None, &NoProgress, &cancel).await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod code;
pub mod error;
pub mod handshake;
pub mod manifest;
pub mod message;
pub mod names;
pub mod outdir;
pub mod progress;
pub(crate) mod reader;
pub mod receiver;
pub mod record;
pub mod sender;
pub mod sink;
pub mod source;
pub mod staging;
pub mod transfer;

pub use code::Code;
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
pub use receiver::{ReceiveOptions, Received, receive, receive_over, receive_with};
pub use sender::{Offered, send_over};
pub use source::Source;
