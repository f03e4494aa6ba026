//! Shared pieces of relay's benchmarks: the criterion benches in `benches/`, the `loadgen`
//! load generator, and (through `loadgen`) the whole-system script `benches/run.sh`.
//!
//! # Map
//!
//! | module | what lives there |
//! |---|---|
//! | [`service`] | the tiny wire protocol the bench servers speak (bulk up/down, echo, HTTP) |
//! | [`fixture`] | in-process set-ups: a relay plus tunnel client, a yamux pair, plain TCP |
//! | [`stats`] | latency summaries (mean, percentiles) |
//!
//! Every figure is meant to sit beside a baseline measured in the same run (plain loopback TCP
//! to the same server), because absolute numbers on a shared 2-core machine drift from run to
//! run while ratios hold.

pub mod fixture;
pub mod service;
pub mod stats;

use std::time::Duration;

/// Upper bound on any single benchmark step (one criterion iteration, one load-generator
/// operation). A step that takes longer is a stall, and the bench fails loudly instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the multi-threaded runtime every bench uses. Two workers, because the machine the
/// figures are published for has two cores; benches build it once, outside the timed loop.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}
