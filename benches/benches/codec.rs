//! Control-frame encoding and decoding (`relay_core::codec`) for the three frames every tunnel
//! and every visitor costs: `Hello`, `Welcome`, `VisitorHeader`. The baseline in each group is a
//! plain copy of the same frame's bytes, the floor any encoding pays.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use relay_core::codec::{LEN_PREFIX, decode, encode};
use relay_core::protocol::{
    Grant, Hello, LeaseSecret, Reply, TunnelRequest, VisitorHeader, Welcome,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn hello() -> Hello {
    Hello::Tunnel {
        tunnels: vec![TunnelRequest {
            preferred_port: Some(9021),
            lease: Some(LeaseSecret::random()),
        }],
    }
}

fn welcome() -> Reply {
    Reply::Welcome(Welcome {
        session_id: 123_456_789,
        tunnels: vec![Grant {
            public_port: 9021,
            lease: Some(LeaseSecret::random()),
        }],
        public_host: Some("relay.example.com".into()),
        max_visitors: 16_000,
        heartbeat_interval_ms: 10_000,
        lease_ttl_ms: 30_000,
    })
}

fn visitor_header() -> VisitorHeader {
    VisitorHeader {
        visitor_id: 987_654_321,
        tunnel: 0,
        peer_addr: SocketAddr::from(([203, 0, 113, 7], 54_321)),
        relay_addr: SocketAddr::from(([198, 51, 100, 1], 8081)),
    }
}

fn bench_message<T>(c: &mut Criterion, name: &str, msg: &T)
where
    T: Serialize + DeserializeOwned,
{
    let frame = encode(msg).expect("message encodes");
    let mut g = c.benchmark_group(format!("codec/{name}"));
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function(BenchmarkId::new("encode", frame.len()), |b| {
        b.iter(|| encode(black_box(msg)).expect("encodes"))
    });
    g.bench_function(BenchmarkId::new("decode", frame.len()), |b| {
        b.iter(|| decode::<T>(black_box(&frame[LEN_PREFIX..])).expect("decodes"))
    });
    g.bench_function(BenchmarkId::new("baseline_copy", frame.len()), |b| {
        b.iter(|| black_box(&frame[..]).to_vec())
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    bench_message(c, "hello", &hello());
    bench_message(c, "welcome", &welcome());
    bench_message(c, "visitor_header", &visitor_header());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
