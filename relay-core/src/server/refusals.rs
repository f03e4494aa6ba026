//! Refusals, counted and logged in aggregate: under the floods the limits exist for, one log
//! line per refused connection would flood the log too.
//!
//! The first refusal of each kind in a window is logged at once (with its details, by the
//! caller); the rest are counted, and the counts of the window are logged in one line when it
//! closes.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::info;

/// How often the counts are summed up in the log.
pub(super) const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// What was refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A connection found every handshake slot taken.
    HandshakeCap,
    /// A tunnel client found every session slot taken.
    SessionCap,
    /// A tunnel client found no free public port.
    NoFreePort,
    /// A visitor found its tunnel at its visitor limit.
    VisitorCap,
    /// A sender found every transfer slot taken.
    TransferCap,
    /// An address tried too many wrong codes.
    ClaimRate,
    /// A claim named no waiting offer.
    UnknownNameplate,
    /// A claim's nameplate was malformed.
    BadNameplate,
    /// A client presented no valid token.
    AuthFailed,
    /// A plain client found a relay that requires TLS.
    TlsRequired,
    /// A TLS client found a relay without a certificate.
    TlsUnavailable,
    /// A TLS handshake failed (the client rejected the certificate, or sent junk).
    TlsHandshake,
    /// A connection found its address's share of handshake slots taken.
    AddrHandshakeCap,
    /// A tunnel client's address holds its share of sessions.
    AddrSessionCap,
    /// A tunnel client's address holds its share of public ports.
    AddrPortShare,
    /// A sender's address holds its share of offers.
    AddrOfferCap,
    /// A token's scope does not allow what was asked.
    Forbidden,
    /// A visitor found the relay-wide cap on open visitors reached.
    OpenVisitorCap,
    /// A visitor's tunnel client address holds its share of the relay-wide visitor cap.
    AddrVisitorShare,
    /// A connection from a trusted proxy had no valid PROXY header.
    ProxyHeader,
}

impl Refusal {
    const ALL: [Refusal; 20] = [
        Refusal::HandshakeCap,
        Refusal::SessionCap,
        Refusal::NoFreePort,
        Refusal::VisitorCap,
        Refusal::TransferCap,
        Refusal::ClaimRate,
        Refusal::UnknownNameplate,
        Refusal::BadNameplate,
        Refusal::AuthFailed,
        Refusal::TlsRequired,
        Refusal::TlsUnavailable,
        Refusal::TlsHandshake,
        Refusal::AddrHandshakeCap,
        Refusal::AddrSessionCap,
        Refusal::AddrPortShare,
        Refusal::AddrOfferCap,
        Refusal::Forbidden,
        Refusal::OpenVisitorCap,
        Refusal::AddrVisitorShare,
        Refusal::ProxyHeader,
    ];

    /// A short, stable name for logs and metrics.
    pub(super) fn label(self) -> &'static str {
        match self {
            Refusal::HandshakeCap => "handshake_cap",
            Refusal::SessionCap => "session_cap",
            Refusal::NoFreePort => "no_free_port",
            Refusal::VisitorCap => "visitor_cap",
            Refusal::TransferCap => "transfer_cap",
            Refusal::ClaimRate => "claim_rate",
            Refusal::UnknownNameplate => "unknown_nameplate",
            Refusal::BadNameplate => "bad_nameplate",
            Refusal::AuthFailed => "auth_failed",
            Refusal::TlsRequired => "tls_required",
            Refusal::TlsUnavailable => "tls_unavailable",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::AddrHandshakeCap => "addr_handshake_cap",
            Refusal::AddrSessionCap => "addr_session_cap",
            Refusal::AddrPortShare => "addr_port_share",
            Refusal::AddrOfferCap => "addr_offer_cap",
            Refusal::Forbidden => "forbidden",
            Refusal::OpenVisitorCap => "open_visitor_cap",
            Refusal::AddrVisitorShare => "addr_visitor_share",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

/// Refusal counts of the current window.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    /// Serialises summaries, so two threads never log the same window twice.
    summary: Mutex<()>,
    /// Totals since the start, by label, for the relay's metrics.
    totals: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Refusals {
    /// Refusals that also count into `totals` (every kind listed from the start, at zero).
    pub(super) fn counting_into(
        totals: Family<[(&'static str, &'static str); 1], Counter>,
    ) -> Self {
        for what in Refusal::ALL {
            let _ = totals.get_or_create(&[("reason", what.label())]);
        }
        Refusals {
            totals,
            ..Self::default()
        }
    }

    /// Counts a refusal; true for the first of its kind in this window, which the caller logs
    /// with its details.
    pub(super) fn note(&self, what: Refusal) -> bool {
        self.totals.get_or_create(&[("reason", what.label())]).inc();
        self.counts[what as usize].fetch_add(1, Ordering::Relaxed) == 0
    }

    /// Closes the window: logs one line with the refusals beyond the first of each kind.
    pub(super) fn summarize(&self) {
        let _one_at_a_time = self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        let mut more = Vec::new();
        for what in Refusal::ALL {
            let n = self.counts[what as usize].swap(0, Ordering::Relaxed);
            if n > 1 {
                more.push(format!("{}={}", what.label(), n - 1));
            }
        }
        if !more.is_empty() {
            info!(window = ?REFUSAL_WINDOW, more = %more.join(" "), "more refusals beyond the ones logged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_kind_per_window_is_flagged() {
        let r = Refusals::default();
        assert!(r.note(Refusal::HandshakeCap));
        assert!(!r.note(Refusal::HandshakeCap));
        assert!(r.note(Refusal::ClaimRate), "kinds are counted apart");
        r.summarize();
        assert!(r.note(Refusal::HandshakeCap), "a new window starts fresh");
    }
}
