//! The whole tunnel path in one process: visitor -> relay -> session (yamux) -> tunnel client
//! -> service, against a direct loopback TCP connection to the same service code.
//!
//! * `tunnel/bulk/*`: bulk throughput with 1 and 8 visitors, both directions;
//! * `tunnel/connect_first_byte`: connect plus a 1-byte echo, as a new visitor sees it;
//! * `tunnel/pingpong_64B`: one 64-byte round trip on an open connection.
//!
//! The relay, the client and the load share one 2-worker runtime, so a figure here is the
//! cost of the code path, not of process boundaries; `benches/run.sh` measures the binaries.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use relay_benches::fixture::{
    Direction, Service, TcpServer, TunnelServer, connect_first_byte, connect_n, round_trip,
    time_lanes,
};
use relay_benches::{STEP_TIMEOUT, runtime};

/// Bytes moved per iteration, split evenly over the visitors.
const BYTES_PER_ITER: u64 = 16 * 1024 * 1024;

fn bulk(c: &mut Criterion) {
    let rt = runtime();
    let direct = rt
        .block_on(TcpServer::start(Service::Bench))
        .expect("direct server");
    let tunnel = rt
        .block_on(TunnelServer::start(Service::Bench))
        .expect("relay and tunnel");
    for visitors in [1usize, 8] {
        for dir in [Direction::Upload, Direction::Download] {
            let mut g =
                c.benchmark_group(format!("tunnel/bulk/{visitors}_visitors/{}", dir.name()));
            g.throughput(Throughput::Bytes(BYTES_PER_ITER));
            g.sampling_mode(SamplingMode::Flat);
            let per_lane = BYTES_PER_ITER / visitors as u64;
            let mut conns = rt
                .block_on(connect_n(direct.addr, visitors))
                .expect("connect direct");
            g.bench_function("direct", |b| {
                b.iter_custom(|iters| rt.block_on(time_lanes(iters, &mut conns, per_lane, dir)))
            });
            let mut conns = rt
                .block_on(connect_n(tunnel.public, visitors))
                .expect("connect through the relay");
            g.bench_function("relay", |b| {
                b.iter_custom(|iters| rt.block_on(time_lanes(iters, &mut conns, per_lane, dir)))
            });
            g.finish();
        }
    }
}

fn latency(c: &mut Criterion) {
    let rt = runtime();
    let direct = rt
        .block_on(TcpServer::start(Service::Echo))
        .expect("direct echo");
    let tunnel = rt
        .block_on(TunnelServer::start(Service::Echo))
        .expect("relay and echo tunnel");
    let targets = [("direct", direct.addr), ("relay", tunnel.public)];

    let mut g = c.benchmark_group("tunnel/connect_first_byte");
    for (name, addr) in targets {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let conn = tokio::time::timeout(STEP_TIMEOUT, connect_first_byte(addr))
                            .await
                            .expect("connect stalled")
                            .expect("connect and echo");
                        timed += start.elapsed();
                        // Closing is not part of the figure.
                        drop(conn);
                    }
                    timed
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("tunnel/pingpong_64B");
    g.throughput(Throughput::Bytes(2 * 64));
    for (name, addr) in targets {
        let mut conn = rt.block_on(connect_n(addr, 1)).expect("connect").remove(0);
        let mut buf = [0x42u8; 64];
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        tokio::time::timeout(STEP_TIMEOUT, round_trip(&mut conn, &mut buf))
                            .await
                            .expect("round trip stalled")
                            .expect("round trip");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bulk, latency
}
criterion_main!(benches);
