//! Throughput of the per-byte work a transfer does, one core: sealing records, opening them
//! (the default cipher), each AEAD alone,
//! and the BLAKE3 file checksum. `cargo run --release -p filexfer --example primitives`.

use std::time::Instant;

use filexfer::record::{DATA_CHUNK, Kind, Opener, RecordBuf, RecordReader, Sealer};

const TOTAL: usize = 1 << 30;

fn rate(what: &str, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!("{what:>24}: {:7.0} MB/s", TOTAL as f64 / secs / 1e6);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut sealer = Sealer::new(&[7; 32]);
    let mut rec = RecordBuf::new(DATA_CHUNK);
    rec.payload_mut(DATA_CHUNK).fill(0xab);
    let start = Instant::now();
    for _ in 0..TOTAL / DATA_CHUNK {
        rec.payload_mut(DATA_CHUNK);
        sealer.seal_in_place(Kind::Data, &mut rec).expect("seal");
    }
    rate("seal (record, AES-256-GCM)", start);

    let mut first = Sealer::new(&[7; 32]);
    rec.payload_mut(DATA_CHUNK);
    first.seal_in_place(Kind::Data, &mut rec).expect("seal");
    let wire = rec.wire().to_vec();
    let mut out = RecordBuf::new(DATA_CHUNK);
    let start = Instant::now();
    for _ in 0..TOTAL / DATA_CHUNK {
        // A fresh opener each time, so the same record opens again.
        let mut reader = RecordReader::new(&wire[..], Opener::new(&[7; 32]));
        reader.read_record(&mut out).await.expect("open");
    }
    rate("open", start);

    // The alternatives, on the same record size, straight through ring.
    for (name, alg) in [
        ("ring ChaCha20-Poly1305", &ring::aead::CHACHA20_POLY1305),
        ("ring AES-256-GCM", &ring::aead::AES_256_GCM),
        ("ring AES-128-GCM", &ring::aead::AES_128_GCM),
    ] {
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(alg, &[7u8; 32][..alg.key_len()]).expect("key"),
        );
        let mut buf = vec![0x5au8; DATA_CHUNK];
        let start = Instant::now();
        for i in 0..TOTAL / DATA_CHUNK {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let nonce = ring::aead::Nonce::assume_unique_for_key(n);
            let _tag = std::hint::black_box(
                key.seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), &mut buf)
                    .expect("seal"),
            );
        }
        rate(name, start);
    }

    let data = vec![0x5au8; DATA_CHUNK];
    let mut h = blake3::Hasher::new();
    let start = Instant::now();
    for _ in 0..TOTAL / DATA_CHUNK {
        h.update(&data);
    }
    std::hint::black_box(h.finalize());
    rate("BLAKE3", start);
}
