//! The relay's metrics: live counts and running totals, kept as things happen and rendered in
//! the Prometheus text format when scraped.
//!
//! Labels are bounded by configuration, never by traffic: a token's *name* (from the relay's
//! configured set, `-` on an open relay), a refusal's, ending's or handshake failure's fixed
//! label, a direction. Addresses, ports and ids never become labels, so a scrape costs the same
//! with ten visitors as with ten thousand.
//!
//! Bytes are read from [`Meter`]s that every visitor and transfer feeds as its bytes move
//! (visitor → session → token → here), so totals grow during a long download, not only when
//! it ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

mod live;
mod open;

use live::{ACCEPTING, DRAINING, Live};
pub(super) use open::{Open, SessionMetrics, VisitorMetrics};

use super::handshake::Rejection;
use super::resets::ResetCounters;
use crate::codec::CodecError;
use crate::protocol::PROTOCOL_VERSION;
use crate::splice::Meter;

/// One fixed label: `reason`, `direction`.
type Label = [(&'static str, &'static str); 1];
/// The name of the token a client proved to hold.
type TokenLabel = [(&'static str, Arc<str>); 1];

/// The token label of clients on an open relay.
const NO_TOKEN: &str = "-";

/// Every `reason` of `relay_handshake_failures_total`, listed up front so each shows from the
/// first scrape (a rate over a series that appears late misses its first increase).
const HANDSHAKE_FAILURES: [&str; 6] = [
    "timeout",
    "closed",
    "not_relay",
    "http",
    "version",
    "bad_frame",
];

/// A relay's metrics, for whoever serves them (`relay --metrics`): the Prometheus text and the
/// health a load balancer checks. Cheap to clone; see [`RelayServer::metrics`].
///
/// [`RelayServer::metrics`]: super::RelayServer::metrics
#[derive(Debug, Clone)]
pub struct RelayMetrics(pub(super) Arc<Metrics>);

impl RelayMetrics {
    /// The `Content-Type` of what [`encode`](Self::encode) returns (Prometheus text 0.0.4).
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// Every metric, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail, and none of our collectors fails either.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.registry);
        out
    }

    /// Whether the relay accepts new clients: from the start of `run` until its drain begins.
    pub fn is_accepting(&self) -> bool {
        self.0.live.state.load(Ordering::Relaxed) == ACCEPTING
    }

    /// Whether the relay is draining: it no longer accepts clients and lets those inside finish.
    pub fn is_draining(&self) -> bool {
        self.0.live.state.load(Ordering::Relaxed) == DRAINING
    }
}

/// The counters and gauges every part of the relay updates.
#[derive(Debug)]
pub(super) struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    sessions_open: Family<TokenLabel, Gauge>,
    sessions: Family<TokenLabel, Counter>,
    session_ends: Family<Label, Counter>,
    tunnels_open: Family<TokenLabel, Gauge>,
    tunnels: Family<TokenLabel, Counter>,
    visitors_open: Family<TokenLabel, Gauge>,
    visitors: Family<TokenLabel, Counter>,
    handshake_failures: Family<Label, Counter>,
    /// Fed by [`super::refusals::Refusals::note`].
    pub(super) refusals: Family<Label, Counter>,
    visitor_resets: Family<Label, Counter>,
    visitor_stalls: Counter,
    offers_open: Gauge,
    offers: Counter,
    transfers_open: Gauge,
    transfers: Counter,
    leases_reclaimed: Counter,
    /// Fed by [`super::leases::Leases`].
    pub(super) leases_expired: Counter,
    /// Fed by [`crate::wide::WidePool`].
    pub(super) wide_visitors: Gauge,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut r = Registry::with_prefix("relay");
        let live = Arc::new(Live::default());
        let m = Metrics {
            registry: Registry::default(),
            live: live.clone(),
            sessions_open: Family::default(),
            sessions: Family::default(),
            session_ends: Family::default(),
            tunnels_open: Family::default(),
            tunnels: Family::default(),
            visitors_open: Family::default(),
            visitors: Family::default(),
            handshake_failures: Family::default(),
            refusals: Family::default(),
            visitor_resets: Family::default(),
            visitor_stalls: Counter::default(),
            offers_open: Gauge::default(),
            offers: Counter::default(),
            transfers_open: Gauge::default(),
            transfers: Counter::default(),
            leases_reclaimed: Counter::default(),
            leases_expired: Counter::default(),
            wide_visitors: Gauge::default(),
        };
        let version = [("version", env!("CARGO_PKG_VERSION").to_string())];
        let protocol = [("protocol", PROTOCOL_VERSION.to_string())];
        r.register(
            "build",
            "The relay's version and protocol version",
            Info::new((version, protocol)),
        );
        r.register(
            "sessions_open",
            "Tunnel sessions open now, by token",
            m.sessions_open.clone(),
        );
        r.register(
            "sessions",
            "Tunnel sessions opened, by token",
            m.sessions.clone(),
        );
        r.register(
            "session_ends",
            "Tunnel sessions ended, by reason",
            m.session_ends.clone(),
        );
        r.register(
            "tunnels_open",
            "Public ports served by open sessions, by token",
            m.tunnels_open.clone(),
        );
        r.register(
            "tunnels",
            "Public ports granted to sessions, by token",
            m.tunnels.clone(),
        );
        r.register(
            "visitors_open",
            "Visitors connected now, by token",
            m.visitors_open.clone(),
        );
        r.register(
            "visitors",
            "Visitors accepted, by token",
            m.visitors.clone(),
        );
        r.register(
            "handshake_failures",
            "Connections to the control port that produced no valid hello, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "refusals",
            "Clients, visitors and claims turned away, by the limit or check that refused them \
             (auth_failed counts authentication failures)",
            m.refusals.clone(),
        );
        r.register(
            "visitor_resets",
            "Visitors whose stream was dropped half-closed and so reset on the control stream \
             (protocol version 3), by direction: to_client, from_client",
            m.visitor_resets.clone(),
        );
        r.register(
            "visitor_stalls",
            "Visitors cut because bytes sent to them stayed unacknowledged, or behind a window \
             they kept shut, for --visitor-stall-timeout",
            m.visitor_stalls.clone(),
        );
        r.register(
            "offers_open",
            "File offers waiting for their receiver now",
            m.offers_open.clone(),
        );
        r.register("offers", "File offers registered", m.offers.clone());
        r.register(
            "transfers_open",
            "File transfers under way now",
            m.transfers_open.clone(),
        );
        r.register(
            "transfers",
            "File transfers started (paired)",
            m.transfers.clone(),
        );
        r.register(
            "leases_reclaimed",
            "Leased public ports reclaimed by their reconnecting client",
            m.leases_reclaimed.clone(),
        );
        r.register(
            "leases_expired",
            "Leased public ports freed because their client did not come back in time",
            m.leases_expired.clone(),
        );
        r.register(
            "wide_visitors",
            "Visitor and session sockets whose send buffer the relay lifted past the kernel's \
             auto-tuning ceiling, now (at most --wide-visitors)",
            m.wide_visitors.clone(),
        );
        r.register_collector(Box::new(live));
        for reason in HANDSHAKE_FAILURES {
            let _ = m.handshake_failures.get_or_create(&[("reason", reason)]);
        }
        let _ = m.reset_counters();
        Metrics { registry: r, ..m }
    }

    pub(super) fn set_accepting(&self) {
        self.live.state.store(ACCEPTING, Ordering::Relaxed);
    }

    pub(super) fn set_draining(&self) {
        self.live.state.store(DRAINING, Ordering::Relaxed);
    }

    /// Counts a connection that did not produce a valid hello.
    pub(super) fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a rejected hello under its [`HANDSHAKE_FAILURES`] reason.
    pub(super) fn hello_rejected(&self, rejection: &Rejection) {
        let reason = match rejection {
            Rejection::NotRelay {
                looks_like_http: true,
            } => "http",
            Rejection::NotRelay { .. } => "not_relay",
            Rejection::Version(_) => "version",
            Rejection::Frame(CodecError::Closed | CodecError::Io(_)) => "closed",
            Rejection::Frame(_) => "bad_frame",
        };
        self.handshake_failed(reason);
    }

    /// Counts a session that was welcomed with `tunnels` public ports, `reclaimed` of them from
    /// a lease; it stays counted as open until the returned value is dropped.
    pub(super) fn session_opened(
        &self,
        token: Option<&str>,
        tunnels: usize,
        reclaimed: usize,
    ) -> SessionMetrics {
        let label: TokenLabel = [("token", Arc::from(token.unwrap_or(NO_TOKEN)))];
        self.sessions.get_or_create(&label).inc();
        let tunnels = tunnels as i64;
        self.tunnels.get_or_create(&label).inc_by(tunnels as u64);
        self.leases_reclaimed.inc_by(reclaimed as u64);
        let bytes = self.live.tunnel_meter(&label[0].1);
        SessionMetrics {
            _session: Open::new(self.sessions_open.get_or_create(&label).clone(), 1),
            _tunnels: Open::new(self.tunnels_open.get_or_create(&label).clone(), tunnels),
            visitors: VisitorMetrics {
                open: self.visitors_open.get_or_create(&label).clone(),
                total: self.visitors.get_or_create(&label).clone(),
                stalled: self.visitor_stalls.clone(),
            },
            bytes,
        }
    }

    pub(super) fn session_ended(&self, reason: &'static str) {
        self.session_ends.get_or_create(&[("reason", reason)]).inc();
    }

    /// The counters of `relay_visitor_resets_total`, which exist from the first scrape.
    pub(super) fn reset_counters(&self) -> ResetCounters {
        let by = |d| {
            self.visitor_resets
                .get_or_create(&[("direction", d)])
                .clone()
        };
        ResetCounters {
            to_client: by("to_client"),
            from_client: by("from_client"),
        }
    }

    /// Counts an offer; it stays counted as waiting until the returned value is dropped.
    pub(super) fn offer_waiting(&self) -> Open {
        self.offers.inc();
        Open::new(self.offers_open.clone(), 1)
    }

    /// Counts a transfer; it stays counted as under way until the returned value is dropped.
    pub(super) fn transfer_started(&self) -> Open {
        self.transfers.inc();
        Open::new(self.transfers_open.clone(), 1)
    }

    /// A meter for one transfer (`a_to_b`: sender to receiver) that feeds the relay's totals.
    pub(super) fn transfer_meter(&self) -> Meter {
        Meter::with_parent(self.live.transfer_bytes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn gauges_follow_what_is_open_and_totals_stay() {
        let metrics = Arc::new(Metrics::new());
        let handle = RelayMetrics(metrics.clone());
        assert!(!handle.is_accepting() && !handle.is_draining());
        let session = metrics.session_opened(Some("alice"), 2, 1);
        let visitor = session.visitors.opened();
        session.bytes.record(10, 20);
        let m = &handle.encode();
        assert_eq!(value(m, r#"relay_sessions_open{token="alice"}"#), Some(1.0));
        assert_eq!(value(m, r#"relay_tunnels_open{token="alice"}"#), Some(2.0));
        assert_eq!(value(m, r#"relay_visitors_open{token="alice"}"#), Some(1.0));
        assert_eq!(value(m, "relay_leases_reclaimed_total"), Some(1.0));
        let bytes = r#"relay_tunnel_bytes_total{direction="client_to_visitor",token="alice"}"#;
        assert_eq!(value(m, bytes), Some(20.0));
        assert_eq!(
            value(m, r#"relay_handshake_failures_total{reason="version"}"#),
            Some(0.0),
            "every reason shows from the start:\n{m}"
        );
        assert!(m.contains(r#"relay_build_info{version=""#), "{m}");
        drop((visitor, session));
    }

    #[test]
    fn dropping_counts_out() {
        let m = Arc::new(Metrics::new());
        let session = m.session_opened(None, 1, 0);
        let visitor = session.visitors.opened();
        drop(visitor);
        drop(session);
        let text = RelayMetrics(m.clone()).encode();
        assert_eq!(value(&text, r#"relay_sessions_open{token="-"}"#), Some(0.0));
        assert_eq!(value(&text, r#"relay_visitors_open{token="-"}"#), Some(0.0));
        assert_eq!(
            value(&text, r#"relay_visitors_total{token="-"}"#),
            Some(1.0)
        );
        m.set_draining();
        assert!(RelayMetrics(m.clone()).is_draining());
        assert!(RelayMetrics(m).encode().contains("relay_draining 1\n"));
    }
}
