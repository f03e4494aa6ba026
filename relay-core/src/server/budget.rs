//! What a client can make the relay hold, kernel socket buffers included, and the socket
//! options that bound it.
//!
//! Left to itself the kernel grows a socket's send buffer up to `net.ipv4.tcp_wmem` (4 MiB by
//! default) whenever its peer stops reading. One tunnel client whose own visitors never read
//! thereby pinned about 4 MiB of kernel memory per visitor, and 277 visitors took the host to
//! 99% of `tcp_mem`, which hurts every connection on the machine, not only the relay's. So the
//! relay fixes the buffers of public visitor sockets, keeps unsent bytes short on every socket
//! it writes to, and stops reading from a substream whose visitor does not drain (the splice
//! keeps at most [`CHUNK`] per direction, and yamux stops the client once the stream's window
//! is used up).
//!
//! [`Budget`] adds it all up; the README's "Production notes → Memory" shows the figures.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

use crate::mux::{STREAM_WINDOW, WINDOW_GROWTH_POOL};
use crate::protocol::{MAX_TUNNELS_PER_SESSION, MUX_MAX_STREAMS};
use crate::splice::CHUNK;

/// Default `SO_SNDBUF` of a public visitor socket ([`RelayConfig::visitor_send_buffer`]):
/// `None`, auto-tuned by the kernel, so a visitor far from the relay downloads at the speed of
/// its path (a fixed 256 KiB capped one visitor at about 512 KiB per round trip: 0.12x of
/// direct at 40 ms). What a visitor that stops reading pins does not depend on it: its window
/// closes, everything in flight is acknowledged into the visitor's own receive buffer, and
/// [`NOTSENT_LOWAT`] keeps the unsent rest short. Measured on the relay's own sockets (`ss -m`),
/// 32 stalled visitors held 156-176 KiB each with auto-tuning and the same with 256 KiB. A
/// fixed size is for operators who want a hard cap per socket, in bytes in flight too. With
/// auto-tuning, a visitor that fills the kernel's ceiling may be lifted past it
/// ([`crate::wide`], at most `wide_visitors` at a time).
///
/// [`RelayConfig::visitor_send_buffer`]: super::RelayConfig::visitor_send_buffer
pub const VISITOR_SEND_BUFFER: Option<usize> = None;

/// Default `SO_RCVBUF` of a public visitor socket ([`RelayConfig::visitor_recv_buffer`]):
/// `None`, auto-tuned by the kernel. The kernel grows it only as fast as the relay reads, so a
/// visitor's buffer is about twice what it uploads per round trip; what it can park while its
/// client does not read is that much, at most `net.ipv4.tcp_rmem`'s maximum. A fixed size
/// bounds that (doubled by the kernel) and caps one visitor's upload at about that much per
/// round trip.
///
/// [`RelayConfig::visitor_recv_buffer`]: super::RelayConfig::visitor_recv_buffer
pub const VISITOR_RECV_BUFFER: Option<usize> = None;

/// Smallest visitor socket buffer a relay may be configured with: below this the kernel's own
/// floor (about 2 KiB, doubled) makes the setting meaningless and throughput collapses.
pub const MIN_VISITOR_BUFFER: usize = 16 * 1024;

/// Largest visitor socket buffer a relay may be configured with. The kernel also caps what an
/// unprivileged process may ask for at `net.core.wmem_max` / `net.core.rmem_max`.
pub const MAX_VISITOR_BUFFER: usize = 256 * 1024 * 1024;

/// `TCP_NOTSENT_LOWAT` of every socket the relay writes to: once this many bytes wait unsent,
/// the socket stops taking more. A peer that stops reading closes its window, so everything
/// queued for it is unsent: this keeps such a socket's send queue at about this much plus one
/// write, instead of the whole send buffer, without limiting what may be in flight to a peer
/// that does read (so it costs no throughput on long paths).
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Default of [`RelayConfig::visitor_stall_timeout`]: how long bytes the relay sent a public
/// visitor may stay unacknowledged, or wait behind the visitor's shut window, before the kernel
/// cuts the connection (`TCP_USER_TIMEOUT`).
///
/// Without it a visitor that reads fast, so that its congestion window grows, and then stops
/// acknowledging (a firewall rule on its side, or a host gone from the network) pins everything
/// in flight, up to the whole send buffer (4 MiB auto-tuned, 8 MiB lifted), until the kernel's
/// retransmissions give up after about 15 minutes (`net.ipv4.tcp_retries2`). Two minutes is
/// twice nginx's `send_timeout` default, which cuts a client that takes nothing for 60 s; a
/// visitor whose program only pauses reading for longer than that is cut too.
///
/// [`RelayConfig::visitor_stall_timeout`]: super::RelayConfig::visitor_stall_timeout
pub const VISITOR_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Keepalive of public visitor sockets: a visitor idle this long is probed, so one whose host
/// vanished while nothing was flowing does not hold its port's slot, its stream and the
/// client's local connection for ever. Probes every [`VISITOR_KEEPALIVE_INTERVAL`]; with a
/// stall timeout set, the kernel gives up once that much time has passed without an answer.
const VISITOR_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const VISITOR_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const VISITOR_KEEPALIVE_RETRIES: u32 = 8;

/// What the relay sets on each public visitor socket: buffer sizes (`None` leaves one to the
/// kernel's auto-tuning) and the stall timeout (`None`: the kernel's retransmission limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct VisitorSockets {
    pub(super) send: Option<usize>,
    pub(super) recv: Option<usize>,
    pub(super) stall_timeout: Option<Duration>,
}

/// Sets on a public listener the options of every visitor it accepts: no Nagle delay, the
/// configured buffers, a short unsent queue, the stall timeout and keepalive.
///
/// Linux copies a listener's socket options into each connection it accepts, so they are set
/// once per public port rather than with seven system calls per visitor (the unit test below
/// checks the copy on the running kernel). A receive buffer set here also applies from the
/// handshake on, so the window scale the kernel announces fits it. Failures are ignored: they
/// cost memory bounds, not correctness.
pub(super) fn tune_public_listener(listener: &TcpListener, options: VisitorSockets) {
    let sock = SockRef::from(listener);
    let _ = sock.set_tcp_nodelay(true);
    if let Some(n) = options.send {
        let _ = sock.set_send_buffer_size(n);
    }
    if let Some(n) = options.recv {
        let _ = sock.set_recv_buffer_size(n);
    }
    let keepalive = TcpKeepalive::new()
        .with_time(VISITOR_KEEPALIVE_IDLE)
        .with_interval(VISITOR_KEEPALIVE_INTERVAL)
        .with_retries(VISITOR_KEEPALIVE_RETRIES);
    let _ = sock.set_tcp_keepalive(&keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = sock.set_tcp_user_timeout(options.stall_timeout);
        let _ = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    }
}

/// Options for a session's socket on the relay: a short unsent queue, so a client that stops
/// reading pins [`NOTSENT_LOWAT`] there, not the kernel's 4 MiB. Its buffers stay auto-tuned:
/// every visitor of the session shares them.
pub(super) fn tune_session_socket(tcp: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT);
}

/// Worst cases in bytes, from the constants above and the multiplexer's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Kernel memory one visitor can pin: both directions stalled ([`Budget::visitor_send_queue`]
    /// plus a full receive buffer: the kernel charges twice the configured size, overheads
    /// included, or up to `net.ipv4.tcp_rmem`'s maximum when auto-tuned).
    pub visitor_kernel: usize,
    /// Kernel memory a visitor that stops reading pins: its send buffer (twice a fixed size),
    /// or with an auto-tuned one the unsent queue ([`NOTSENT_LOWAT`] plus one write), doubled
    /// for the kernel's overheads.
    pub visitor_send_queue: usize,
    /// Relay memory one visitor can pin: its substream's receive window full of bytes for a
    /// visitor that does not read, the send credit it was given queued towards a client that
    /// does not read, and a splice backlog each way.
    pub visitor_user: usize,
    /// Per session on top of its visitors: the multiplexer's shared window pool, the session
    /// socket's unsent queue and its receive buffer's usual ceiling (the relay drains it at
    /// once; it fills only while the relay itself is starved of CPU).
    pub session_fixed: usize,
    /// Visitors one session can have at once (its tunnels' caps, and the multiplexer's
    /// stream limit).
    pub visitors_per_session: usize,
}

impl Budget {
    /// The budget of a relay whose tunnels take at most `max_visitors_per_tunnel` visitors,
    /// with the default visitor socket buffers.
    pub fn new(max_visitors_per_tunnel: u32) -> Budget {
        Budget::with_buffers(
            max_visitors_per_tunnel,
            VISITOR_SEND_BUFFER,
            VISITOR_RECV_BUFFER,
        )
    }

    /// Like [`Budget::new`], for visitor sockets with these `SO_SNDBUF` / `SO_RCVBUF` (`None`:
    /// auto-tuned).
    pub fn with_buffers(
        max_visitors_per_tunnel: u32,
        send: Option<usize>,
        recv: Option<usize>,
    ) -> Budget {
        let per_tunnel = max_visitors_per_tunnel as usize;
        let visitor_send_queue = match send {
            Some(n) => 2 * n,
            None => 2 * (NOTSENT_LOWAT as usize + CHUNK),
        };
        let recv = recv.map_or_else(kernel_max_recv_buffer, |n| 2 * n);
        Budget {
            visitor_kernel: visitor_send_queue + recv,
            visitor_send_queue,
            visitor_user: 2 * STREAM_WINDOW + 2 * CHUNK,
            session_fixed: WINDOW_GROWTH_POOL + 2 * NOTSENT_LOWAT as usize + SESSION_RECV_TYPICAL,
            visitors_per_session: (per_tunnel * MAX_TUNNELS_PER_SESSION).min(MUX_MAX_STREAMS),
        }
    }

    /// Everything one visitor can pin, kernel and relay.
    pub fn per_visitor(&self) -> usize {
        self.visitor_kernel + self.visitor_user
    }

    /// Everything one session (one client) can pin with `visitors` visitors.
    pub fn per_session_with(&self, visitors: usize) -> usize {
        self.session_fixed + visitors * self.per_visitor()
    }

    /// Everything one session can pin with as many visitors as it may have.
    pub fn per_session(&self) -> usize {
        self.per_session_with(self.visitors_per_session)
    }
}

/// The part of the kernel's TCP memory-pressure threshold (`tcp_mem[1]`) the relay's visitors
/// may fill at their worst case, as a fraction: the rest stays for every other connection on
/// the host, so stalled visitors alone never reach pressure.
pub const VISITOR_SHARE_OF_TCP_PRESSURE: (usize, usize) = (3, 4);

/// Relay-wide open-visitor cap where the kernel's TCP memory limits cannot be read.
pub const FALLBACK_OPEN_VISITORS: usize = 1024;

/// How many client addresses it takes to fill the relay-wide visitor cap: each holds at most
/// this fraction of it (like the upper bound of the other per-address shares).
pub const CLIENTS_TO_FILL_VISITOR_CAP: usize = 4;

/// Kernel memory one stalled visitor pins with the default buffers, as the cap counts it: its
/// send queue ([`Budget::visitor_send_queue`]) plus a receive buffer at the size the kernel
/// starts an auto-tuned one at (`tcp_rmem[1]`, doubled). An auto-tuned receive buffer grows
/// only while the relay reads fast, so a visitor that uploaded fast before its client stopped
/// reading can park more (up to `tcp_rmem[2]`); `--visitor-recv-buffer SIZE` bounds that.
pub fn stalled_visitor_kernel() -> usize {
    Budget::new(1).visitor_send_queue + 2 * kernel_default_recv_buffer()
}

/// The default relay-wide cap on open visitors: [`CLIENTS_TO_FILL_VISITOR_CAP`] client shares,
/// each as many visitors as fit at [`stalled_visitor_kernel`] in
/// [`VISITOR_SHARE_OF_TCP_PRESSURE`] of `tcp_pressure` bytes, so no one client can take the
/// host to TCP memory pressure; [`FALLBACK_OPEN_VISITORS`] when that is unknown. Never below
/// the number of shares.
pub fn visitor_cap(tcp_pressure: Option<u64>) -> usize {
    let Some(pressure) = tcp_pressure else {
        return FALLBACK_OPEN_VISITORS;
    };
    let (num, den) = VISITOR_SHARE_OF_TCP_PRESSURE;
    let share = pressure.saturating_mul(num as u64) / den as u64;
    let per_client = usize::try_from(share / stalled_visitor_kernel() as u64).unwrap_or(usize::MAX);
    per_client
        .max(1)
        .saturating_mul(CLIENTS_TO_FILL_VISITOR_CAP)
}

/// A client address's default share of the relay-wide visitor cap.
pub fn visitor_share(cap: usize) -> usize {
    (cap / CLIENTS_TO_FILL_VISITOR_CAP).max(1)
}

/// The kernel's TCP memory-pressure threshold in bytes: `tcp_mem[1]` (pages) from `tcp_mem`
/// text, times `page_size`.
pub fn parse_tcp_pressure(tcp_mem: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = tcp_mem.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size))
}

/// This host's TCP memory-pressure threshold in bytes, if the kernel tells it.
pub fn tcp_pressure() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    parse_tcp_pressure(&text, page_size())
}

/// The page size `tcp_mem` counts in: `AT_PAGESZ` from the process's auxiliary vector (pairs of
/// native words), 4096 when that cannot be read.
fn page_size() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 4096;
    };
    let words: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])))
        .collect();
    words
        .chunks_exact(2)
        .find(|pair| pair[0] == AT_PAGESZ)
        .map_or(4096, |pair| pair[1])
}

/// The most an auto-tuned receive buffer grows to: `net.ipv4.tcp_rmem`'s maximum (Linux's
/// default of 6 MiB where it cannot be read).
fn kernel_max_recv_buffer() -> usize {
    tcp_rmem(2).unwrap_or(6 * 1024 * 1024)
}

/// What an auto-tuned receive buffer starts at: `net.ipv4.tcp_rmem`'s default (128 KiB where
/// it cannot be read).
fn kernel_default_recv_buffer() -> usize {
    tcp_rmem(1).unwrap_or(128 * 1024)
}

fn tcp_rmem(field: usize) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").ok()?;
    text.split_whitespace().nth(field)?.parse().ok()
}

/// A session socket's receive buffer as the kernel sizes it by default (`tcp_rmem[1]`).
const SESSION_RECV_TYPICAL: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A visitor accepted on a listener tuned with `options`, and its peer.
    async fn accepted_visitor(options: VisitorSockets) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        tune_public_listener(&listener, options);
        let peer = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (visitor, _) = listener.accept().await.expect("accept");
        (visitor, peer)
    }

    #[tokio::test]
    async fn a_visitor_inherits_its_options_from_the_public_listener() {
        let options = VisitorSockets {
            send: Some(80 * 1024),
            recv: Some(80 * 1024),
            stall_timeout: Some(Duration::from_secs(7)),
        };
        let (visitor, _peer) = accepted_visitor(options).await;
        let sock = SockRef::from(&visitor);
        assert!(sock.tcp_nodelay().expect("nodelay"));
        // The kernel doubles what it is asked for.
        assert_eq!(sock.send_buffer_size().expect("send buffer"), 160 * 1024);
        assert_eq!(sock.recv_buffer_size().expect("receive buffer"), 160 * 1024);
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("idle"),
            VISITOR_KEEPALIVE_IDLE
        );
        assert_eq!(
            sock.tcp_user_timeout().expect("user timeout"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            sock.tcp_notsent_lowat().expect("notsent lowat"),
            NOTSENT_LOWAT
        );

        // Off: the kernel's own limits, and its auto-tuned buffers.
        let (visitor, _peer) = accepted_visitor(VisitorSockets {
            send: None,
            recv: None,
            stall_timeout: None,
        })
        .await;
        let sock = SockRef::from(&visitor);
        assert_eq!(sock.tcp_user_timeout().expect("user timeout"), None);
        assert_ne!(sock.send_buffer_size().expect("send buffer"), 160 * 1024);
    }

    #[test]
    fn figures_the_readme_quotes() {
        let b = Budget::new(crate::protocol::MAX_VISITORS_PER_TUNNEL);
        assert_eq!(b.visitor_send_queue, 384 * 1024);
        assert_eq!(b.visitor_kernel, 384 * 1024 + kernel_max_recv_buffer());
        let fixed = Budget::with_buffers(
            crate::protocol::MAX_VISITORS_PER_TUNNEL,
            Some(256 << 10),
            None,
        );
        assert_eq!(fixed.visitor_send_queue, 512 * 1024);
        let k = 256 * 1024;
        let b = Budget::with_buffers(crate::protocol::MAX_VISITORS_PER_TUNNEL, Some(k), Some(k));
        assert_eq!(b.visitor_kernel, 1024 * 1024);
        assert_eq!(b.visitor_user, 640 * 1024);
        assert_eq!(b.per_visitor(), 1664 * 1024);
        assert_eq!(b.visitors_per_session, MUX_MAX_STREAMS);
        assert_eq!(b.per_session_with(100), 16_768 * 1024 + 100 * 1664 * 1024);
    }

    #[test]
    fn the_visitor_cap_keeps_stalled_visitors_within_a_share_of_tcp_pressure() {
        // tcp_mem of a 24 GiB host: pressure at 383,878 pages of 4 KiB (1.46 GiB).
        let pressure = parse_tcp_pressure("287907\t383878\t575814\n", 4096);
        assert_eq!(pressure, Some(383_878 * 4096));
        let cap = visitor_cap(pressure);
        let share = visitor_share(cap) as u64;
        let worst = stalled_visitor_kernel() as u64;
        // One client at its share stays within three quarters of pressure; one more would not.
        assert!(share * worst <= pressure.unwrap() * 3 / 4);
        assert!((share + 1) * worst > pressure.unwrap() * 3 / 4);
        if kernel_default_recv_buffer() == 128 * 1024 {
            assert_eq!(share, 1799);
            assert_eq!(cap, 4 * 1799);
        }
        assert_eq!(visitor_cap(None), FALLBACK_OPEN_VISITORS);
        assert_eq!(visitor_cap(Some(1)), CLIENTS_TO_FILL_VISITOR_CAP);
        assert_eq!(parse_tcp_pressure("junk", 4096), None);
        assert!(page_size() >= 4096);
    }
}
