//! Send buffers past the kernel's auto-tuning ceiling, for visitors and sessions on long, fast
//! paths.
//!
//! The kernel grows an auto-tuned send buffer up to `net.ipv4.tcp_wmem`'s maximum (4 MiB by
//! default) and wakes a blocked writer only once a third of the buffer is free again. A program
//! with its data at hand refills the buffer within microseconds of that wake-up; the relay
//! refills it from a substream whose window holds 256 KiB, one client round trip at a time. A
//! visitor whose bytes in flight come near the ceiling (about 700 Mbit/s at 40 ms) then drains
//! the buffer to below what its path holds after every wake-up: 0.80-0.85x of direct TCP over
//! an emulated 40 ms link (docs/benchmark.md, "Wide send buffers").
//!
//! So once a socket's auto-tuned buffer has reached the ceiling and is full, [`Lift`] sets
//! `SO_SNDBUF` itself, which the kernel allows up to twice `net.core.wmem_max`. The larger
//! buffer holds bytes in flight that the path delivers; what a peer that stops reading pins is
//! still bounded by `TCP_NOTSENT_LOWAT`. The same holds for a session's socket when the client
//! is the far one: every visitor of the tunnel crosses it. On the relay at most
//! [`WIDE_VISITORS`] sockets (the [`WidePool`]) are lifted at a time, so the extra kernel memory
//! in flight has a fixed bound; a client lifts its one session socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use prometheus_client::metrics::gauge::Gauge;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Default of [`RelayConfig::wide_visitors`](crate::server::RelayConfig::wide_visitors).
pub const WIDE_VISITORS: usize = 16;

/// Bytes a socket takes between two looks at its buffer size: a look is a system
/// call, and a buffer cannot reach the ceiling before this much has gone through it.
const LOOK_EVERY: usize = 1024 * 1024;

/// How many more sockets may have their send buffer lifted, and the sizes involved.
#[derive(Debug)]
pub(crate) struct WidePool {
    /// `SO_SNDBUF` as the kernel reports it once auto-tuning has grown it all the way.
    ceiling: usize,
    /// What the relay asks for when it lifts a buffer (the kernel doubles it).
    lifted: usize,
    free: AtomicUsize,
    /// Sockets lifted now, as the metrics show them.
    in_use: Gauge,
}

impl WidePool {
    /// A pool of `slots` lifts on this host, or `None` when lifting would not give a larger
    /// buffer than auto-tuning does (`net.core.wmem_max` at most half of `tcp_wmem`'s maximum,
    /// as on a stock kernel) or no slots are allowed.
    pub(crate) fn for_host(slots: usize, in_use: Gauge) -> Option<Arc<WidePool>> {
        WidePool::with_limits(slots, send_buffer_limits(), in_use)
    }

    /// Like [`WidePool::for_host`], for limits already read with [`send_buffer_limits`].
    pub(crate) fn with_limits(
        slots: usize,
        limits: Option<(usize, usize)>,
        in_use: Gauge,
    ) -> Option<Arc<WidePool>> {
        let (ceiling, most) = limits?;
        WidePool::new(slots, ceiling, most / 2, in_use)
    }

    /// A pool of `slots` lifts to `2 * lifted` for buffers that reached `ceiling`.
    fn new(slots: usize, ceiling: usize, lifted: usize, in_use: Gauge) -> Option<Arc<WidePool>> {
        (slots > 0 && lifted.saturating_mul(2) > ceiling).then(|| {
            Arc::new(WidePool {
                ceiling,
                lifted,
                free: AtomicUsize::new(slots),
                in_use,
            })
        })
    }

    #[cfg(test)]
    fn free_slots(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>) -> Option<Slot> {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        self.in_use.inc();
        Some(Slot(self.clone()))
    }
}

/// One lifted socket; its place in the pool comes back when it is dropped.
#[derive(Debug)]
struct Slot(Arc<WidePool>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_use.dec();
        self.0.free.fetch_add(1, Ordering::AcqRel);
    }
}

/// Watches a socket's writes and lifts its send buffer when it qualifies (see the module
/// docs): a look costs a system call, so it looks only when a write was refused, and at most
/// once per [`LOOK_EVERY`] bytes.
#[derive(Debug)]
pub(crate) struct Lift {
    /// `None` once lifted, or when lifting is off.
    pool: Option<Arc<WidePool>>,
    since_look: usize,
    slot: Option<Slot>,
}

impl Lift {
    pub(crate) fn new(pool: Option<Arc<WidePool>>) -> Self {
        Lift {
            pool,
            since_look: 0,
            slot: None,
        }
    }

    /// Notes the outcome of a write to `tcp`.
    #[inline]
    pub(crate) fn after_write(&mut self, tcp: &TcpStream, result: &Poll<io::Result<usize>>) {
        if self.pool.is_some() {
            match result {
                Poll::Ready(Ok(n)) => self.since_look += n,
                Poll::Pending => self.on_full(tcp),
                Poll::Ready(Err(_)) => {}
            }
        }
    }

    /// `tcp` just refused a write: it is full. Lift it if auto-tuning has given it all it can
    /// and the pool has room; otherwise look again after another [`LOOK_EVERY`] bytes.
    fn on_full(&mut self, tcp: &TcpStream) {
        if self.since_look < LOOK_EVERY {
            return;
        }
        self.since_look = 0;
        let Some(pool) = &self.pool else { return };
        let sock = SockRef::from(tcp);
        if sock.send_buffer_size().is_ok_and(|n| n >= pool.ceiling) {
            if let Some(slot) = pool.take() {
                if sock.set_send_buffer_size(pool.lifted).is_ok() {
                    self.slot = Some(slot);
                    self.pool = None;
                }
            }
        }
    }

    #[cfg(test)]
    fn is_lifted(&self) -> bool {
        self.slot.is_some()
    }
}

/// A visitor socket that lifts its own send buffer. Reads and writes go straight to the socket.
#[derive(Debug)]
pub(crate) struct WideSocket<'a> {
    tcp: &'a mut TcpStream,
    lift: Lift,
}

impl<'a> WideSocket<'a> {
    pub(crate) fn new(tcp: &'a mut TcpStream, pool: Option<Arc<WidePool>>) -> Self {
        WideSocket {
            tcp,
            lift: Lift::new(pool),
        }
    }
}

impl AsyncRead for WideSocket<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WideSocket<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut *this.tcp).poll_write(cx, buf);
        this.lift.after_write(this.tcp, &result);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tcp).poll_shutdown(cx)
    }
}

/// This host's send buffer sizes: the most auto-tuning grows one to (`net.ipv4.tcp_wmem`'s
/// maximum) and the most `SO_SNDBUF` gives an unprivileged process (twice `net.core.wmem_max`),
/// if the kernel tells them. Lifting pays only where the second is larger.
pub fn send_buffer_limits() -> Option<(usize, usize)> {
    let ceiling = sysctl_field("/proc/sys/net/ipv4/tcp_wmem", 2)?;
    let wmem_max = sysctl_field("/proc/sys/net/core/wmem_max", 0)?;
    Some((ceiling, wmem_max.saturating_mul(2)))
}

fn sysctl_field(path: &str, field: usize) -> Option<usize> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .nth(field)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::net::TcpListener;

    use super::*;
    use crate::transport::Conn;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn send_buffer(tcp: &TcpStream) -> usize {
        SockRef::from(tcp).send_buffer_size().unwrap()
    }

    /// What [`fill`] writes into: a visitor socket, or a session's connection.
    trait Socket: AsyncWrite + Unpin {
        fn tcp(&self) -> &TcpStream;
    }

    impl Socket for WideSocket<'_> {
        fn tcp(&self) -> &TcpStream {
            self.tcp
        }
    }

    impl Socket for Conn {
        fn tcp(&self) -> &TcpStream {
            Conn::tcp(self)
        }
    }

    /// Writes into `socket` until it refuses a write after more than [`LOOK_EVERY`] bytes:
    /// `peer` reads the first 2 MiB (so the socket takes that much) and then nothing.
    async fn fill(socket: &mut impl Socket, mut peer: TcpStream) -> TcpStream {
        use tokio::io::AsyncReadExt;
        const READ: usize = 2 * 1024 * 1024;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ];
            peer.read_exact(&mut buf).await.unwrap();
            peer
        });
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        let deadline = std::time::Duration::from_secs(10);
        tokio::time::timeout(deadline, async {
            loop {
                let wrote = poll_fn(|cx| match Pin::new(&mut *socket).poll_write(cx, &chunk) {
                    Poll::Pending => Poll::Ready(None),
                    Poll::Ready(r) => Poll::Ready(Some(r.unwrap())),
                })
                .await;
                match wrote {
                    Some(n) => written += n,
                    None if written > READ => return,
                    None => socket.tcp().writable().await.unwrap(),
                }
            }
        })
        .await
        .expect("the socket filled up within 10 s");
        reader.await.unwrap()
    }

    #[tokio::test]
    async fn a_session_connection_is_lifted_like_a_visitor() {
        let (tcp, peer) = pair().await;
        let pool = WidePool::new(1, 4096, 128 * 1024, Gauge::default()).unwrap();
        let mut conn = Conn::plain(tcp);
        conn.lift_send_buffer(Some(pool.clone()));
        let _peer = fill(&mut conn, peer).await;
        assert_eq!(send_buffer(conn.tcp()), 256 * 1024);
        assert_eq!(pool.free_slots(), 0);
        drop(conn);
        assert_eq!(pool.free_slots(), 1);
    }

    #[tokio::test]
    async fn a_full_socket_at_the_ceiling_is_lifted_while_the_pool_has_room() {
        let (mut first, peer1) = pair().await;
        let (mut second, peer2) = pair().await;
        // A ceiling every socket has reached, and a lift to 256 KiB (doubled by the kernel).
        let pool = WidePool::new(1, 4096, 128 * 1024, Gauge::default()).unwrap();

        let mut a = WideSocket::new(&mut first, Some(pool.clone()));
        let _peer1 = fill(&mut a, peer1).await;
        assert!(a.lift.is_lifted(), "a full socket at the ceiling is lifted");
        assert_eq!(send_buffer(a.tcp), 256 * 1024);
        assert_eq!(pool.free_slots(), 0);

        let mut b = WideSocket::new(&mut second, Some(pool.clone()));
        let _peer2 = fill(&mut b, peer2).await;
        assert!(!b.lift.is_lifted(), "no second lift from a pool of one");
        drop(b);

        drop(a);
        assert_eq!(pool.free_slots(), 1, "a closed visitor gives its slot back");
    }

    #[tokio::test]
    async fn a_socket_below_the_ceiling_is_left_to_the_kernel() {
        let (mut tcp, peer) = pair().await;
        let pool = WidePool::new(1, usize::MAX / 4, usize::MAX / 4, Gauge::default()).unwrap();
        let mut socket = WideSocket::new(&mut tcp, Some(pool.clone()));
        let _peer = fill(&mut socket, peer).await;
        assert!(!socket.lift.is_lifted());
        assert_eq!(pool.free_slots(), 1);
    }

    #[test]
    fn no_pool_where_lifting_cannot_beat_auto_tuning() {
        // A stock kernel: tcp_wmem max 4 MiB, wmem_max 208 KiB.
        assert!(WidePool::new(16, 4 << 20, 212_992, Gauge::default()).is_none());
        assert!(WidePool::new(0, 4 << 20, 4 << 20, Gauge::default()).is_none());
        assert!(WidePool::new(16, 4 << 20, 4 << 20, Gauge::default()).is_some());
    }
}
