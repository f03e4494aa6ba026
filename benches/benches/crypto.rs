//! File-transfer crypto: sealing and opening `filexfer`'s encrypted records (AES-256-GCM,
//! 256 KiB data records) beside a plain copy of the same bytes. This is the per-byte work
//! `send` and `receive` add on top of the relay; the target is >= 500 MB/s for one
//! transfer end to end (`cargo run --release -p filexfer --example throughput` measures that).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filexfer::record::{DATA_CHUNK, Kind, Opener, RecordBuf, RecordReader, RecordWriter, Sealer};

/// Records per iteration of the round-trip bench.
const RECORDS: usize = 16;

fn crypto(c: &mut Criterion) {
    let key = [7u8; 32];
    let mut g = c.benchmark_group("transfer_crypto");

    g.throughput(Throughput::Bytes(DATA_CHUNK as u64));
    let mut record = RecordBuf::new(DATA_CHUNK);
    record.payload_mut(DATA_CHUNK).fill(0x5a);
    let mut sealer = Sealer::new(&key);
    g.bench_function("seal_256KiB", |b| {
        b.iter(|| {
            sealer
                .seal_in_place(Kind::Data, black_box(&mut record))
                .expect("seal")
        })
    });
    let plain = vec![0x5a_u8; DATA_CHUNK];
    let mut copy = vec![0u8; DATA_CHUNK];
    g.bench_function("baseline_copy_256KiB", |b| {
        b.iter(|| copy.copy_from_slice(black_box(&plain)))
    });

    // Seal RECORDS records into memory and open them again, through the same reader and
    // writer the transfer uses (no sockets: this is the CPU cost alone).
    g.throughput(Throughput::Bytes((DATA_CHUNK * RECORDS) as u64));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut wire: Vec<u8> = Vec::with_capacity((DATA_CHUNK + 64) * RECORDS);
    let mut out = RecordBuf::new(DATA_CHUNK);
    g.bench_function("seal_and_open_4MiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                wire.clear();
                let mut writer = RecordWriter::new(&mut wire, Sealer::new(&key));
                for _ in 0..RECORDS {
                    record.payload_mut(DATA_CHUNK).fill(0x5a);
                    writer
                        .write_record(Kind::Data, &mut record)
                        .await
                        .expect("write");
                }
                let mut reader = RecordReader::new(&wire[..], Opener::new(&key));
                for _ in 0..RECORDS {
                    let kind = reader.read_record(&mut out).await.expect("open");
                    assert_eq!(kind, Some(Kind::Data));
                }
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = crypto
}
criterion_main!(benches);
