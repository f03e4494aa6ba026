//! What a scrape reads rather than counts: the relay's state, and the byte meters that every
//! visitor and transfer feeds as its bytes move.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::splice::Meter;

// The relay's state, in `Live::state`: 0 (not running yet) until `run` starts.
pub(super) const ACCEPTING: u8 = 1;
pub(super) const DRAINING: u8 = 2;

/// What is read at scrape time rather than counted: the relay's state, and the byte meters.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) state: AtomicU8,
    /// One meter per token name; as many entries as the relay has tokens (one when open).
    tunnel_bytes: Mutex<HashMap<Arc<str>, Arc<Meter>>>,
    pub(super) transfer_bytes: Arc<Meter>,
}

impl Live {
    pub(super) fn tunnel_meter(&self, token: &Arc<str>) -> Arc<Meter> {
        let mut meters = self
            .tunnel_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        meters.entry(token.clone()).or_default().clone()
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let draining = ConstGauge::new(i64::from(self.state.load(Ordering::Relaxed) == DRAINING));
        let metric = encoder.encode_descriptor(
            "draining",
            "1 while the relay drains (no longer accepting clients), else 0",
            None,
            draining.metric_type(),
        )?;
        draining.encode(metric)?;

        let meters: Vec<(Arc<str>, Arc<Meter>)> = self
            .tunnel_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(token, meter)| (token.clone(), meter.clone()))
            .collect();
        let mut family = encoder.encode_descriptor(
            "tunnel_bytes",
            "Bytes carried by tunnels as they move, by direction and token",
            None,
            MetricType::Counter,
        )?;
        for (token, meter) in &meters {
            for (direction, n) in [
                ("visitor_to_client", meter.a_to_b()),
                ("client_to_visitor", meter.b_to_a()),
            ] {
                let labels = [("direction", direction), ("token", token.as_ref())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "transfer_bytes",
            "Bytes carried by file transfers as they move, by direction",
            None,
            MetricType::Counter,
        )?;
        for (direction, n) in [
            ("sender_to_receiver", self.transfer_bytes.a_to_b()),
            ("receiver_to_sender", self.transfer_bytes.b_to_a()),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&[("direction", direction)])?)?;
        }
        Ok(())
    }
}
