//! The multiplexer alone: yamux (configured exactly as relay-core configures it) over one real
//! loopback TCP connection, against the same bytes over plain TCP connections, 1, 16 and 64
//! streams, both directions. The substreams are opened by the acceptor, as the relay opens
//! visitors. The 64-stream row is where the sending side's CPU per byte grows (see
//! docs/benchmark.md, "Many visitors on one session").
//!
//! Connections and substreams stay open across iterations, so only the transfer is timed.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use relay_benches::fixture::{Direction, MuxPair, Service, TcpServer, connect_n, time_lanes};
use relay_benches::runtime;

/// Bytes moved per iteration, split evenly over the streams.
const BYTES_PER_ITER: u64 = 16 * 1024 * 1024;

fn mux(c: &mut Criterion) {
    let rt = runtime();
    let tcp = rt
        .block_on(TcpServer::start(Service::Bench))
        .expect("tcp server");
    let pair = rt.block_on(MuxPair::start()).expect("yamux pair");
    for streams in [1usize, 16, 64] {
        for dir in [Direction::Upload, Direction::Download] {
            let mut g = c.benchmark_group(format!("mux/{streams}_streams/{}", dir.name()));
            g.throughput(Throughput::Bytes(BYTES_PER_ITER));
            g.sampling_mode(SamplingMode::Flat);
            let per_lane = BYTES_PER_ITER / streams as u64;

            let mut conns = rt.block_on(connect_n(tcp.addr, streams)).expect("connect");
            g.bench_function("tcp", |b| {
                b.iter_custom(|iters| rt.block_on(time_lanes(iters, &mut conns, per_lane, dir)))
            });
            let mut subs = rt.block_on(pair.open(streams)).expect("open substreams");
            g.bench_function("yamux", |b| {
                b.iter_custom(|iters| rt.block_on(time_lanes(iters, &mut subs, per_lane, dir)))
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = mux
}
criterion_main!(benches);
