//! Throughput of the per-byte work a transfer does, one core: sealing records, opening them,
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
    rate("seal (ChaCha20-Poly1305)", start);

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

    let data = vec![0x5au8; DATA_CHUNK];
    let mut h = blake3::Hasher::new();
    let start = Instant::now();
    for _ in 0..TOTAL / DATA_CHUNK {
        h.update(&data);
    }
    std::hint::black_box(h.finalize());
    rate("BLAKE3", start);
}
