//! The local server `expose` forwards visitors to, resolved once rather than per visitor.
//!
//! Connecting to `HOST:PORT` by name resolves the name for every connection: a trip to tokio's
//! blocking pool and a `getaddrinfo` per visitor (measured: 11-27% fewer new visitors per second
//! through `expose localhost:PORT` than through `expose 127.0.0.1:PORT`). A name with several
//! addresses also makes every visitor try the dead ones first, such as `localhost` resolving to
//! `::1` for a server that listens on 127.0.0.1 only. So the name is resolved at start, the address
//! that accepted last is tried first, and the name is resolved again only when none of the known
//! addresses accepts (the server may have moved).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpStream;

/// A local TCP server by name, with its addresses cached.
#[derive(Debug)]
pub struct LocalServer {
    name: String,
    /// Shared so a visitor can try them without holding the lock across its connects.
    addrs: Mutex<Arc<[SocketAddr]>>,
}

impl LocalServer {
    /// Resolves `name` (`HOST:PORT`; an IP address needs no lookup).
    pub async fn resolve(name: &str) -> io::Result<LocalServer> {
        let addrs = lookup(name).await?;
        Ok(LocalServer {
            name: name.to_string(),
            addrs: Mutex::new(addrs),
        })
    }

    /// The name as given, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses a connection tries, in order.
    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects to the first known address that accepts; if none does, resolves the name again
    /// and tries the new addresses, if they differ.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let known = self.addrs();
        let failed = match connect_any(&known).await {
            Ok((stream, at)) => {
                self.prefer(&known, at);
                return Ok(stream);
            }
            Err(e) => e,
        };
        let Ok(fresh) = lookup(&self.name).await else {
            return Err(failed);
        };
        if fresh[..] == known[..] {
            return Err(failed);
        }
        self.replace(&known, fresh.clone());
        let (stream, at) = connect_any(&fresh).await?;
        self.prefer(&fresh, at);
        Ok(stream)
    }

    /// Moves `list[at]` to the front, unless another visitor changed the list meanwhile.
    fn prefer(&self, list: &Arc<[SocketAddr]>, at: usize) {
        if at == 0 {
            return;
        }
        let mut reordered = list.to_vec();
        reordered[..=at].rotate_right(1);
        self.replace(list, reordered.into());
    }

    fn replace(&self, old: &Arc<[SocketAddr]>, new: Arc<[SocketAddr]>) {
        let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::ptr_eq(&addrs, old) {
            *addrs = new;
        }
    }
}

async fn lookup(name: &str) -> io::Result<Arc<[SocketAddr]>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(name).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has no addresses"),
        ));
    }
    Ok(addrs.into())
}

/// The first address in `addrs` that accepts, and its index; else the last address's error.
async fn connect_any(addrs: &[SocketAddr]) -> io::Result<(TcpStream, usize)> {
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, i)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An address nothing listens on: bound, noted, closed.
    fn dead_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    /// A listening socket (keep it alive) and its address.
    async fn live_addr() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// A server named `name` whose cache holds `addrs`.
    fn cached(name: SocketAddr, addrs: Vec<SocketAddr>) -> LocalServer {
        LocalServer {
            name: name.to_string(),
            addrs: Mutex::new(addrs.into()),
        }
    }

    #[tokio::test]
    async fn an_ip_address_needs_no_lookup_and_connects() {
        let (_listener, addr) = live_addr().await;
        let local = LocalServer::resolve(&addr.to_string())
            .await
            .expect("resolve");
        assert_eq!(&local.addrs()[..], &[addr]);
        let stream = local.connect().await.expect("connect");
        assert_eq!(stream.peer_addr().expect("peer"), addr);
    }

    #[tokio::test]
    async fn the_address_that_accepted_is_tried_first_from_then_on() {
        let dead = dead_addr();
        let (_listener, live) = live_addr().await;
        let local = cached(live, vec![dead, live]);
        local
            .connect()
            .await
            .expect("falls through to the live address");
        assert_eq!(&local.addrs()[..], &[live, dead]);
        local.connect().await.expect("connects again");
        assert_eq!(&local.addrs()[..], &[live, dead]);
    }

    #[tokio::test]
    async fn addresses_that_all_refuse_are_resolved_again() {
        let dead = dead_addr();
        let (_listener, live) = live_addr().await;
        // The cache holds a stale address; the name now resolves to the live one.
        let local = cached(live, vec![dead]);
        local.connect().await.expect("re-resolved");
        assert_eq!(&local.addrs()[..], &[live]);
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_a_clear_error() {
        let dead = dead_addr();
        let local = LocalServer::resolve(&dead.to_string())
            .await
            .expect("resolve");
        let err = local.connect().await.expect_err("nothing listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
