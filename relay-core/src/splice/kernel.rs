//! The same pump as [`super::splice`] for two plain TCP connections, with the bytes moved by
//! the kernel: `splice(2)` from one socket into a pipe and from the pipe into the other socket.
//! The data then never enters the relay's memory. A paired file transfer is a long bulk copy,
//! and the two user-space copies of the read/write path were a quarter of the relay's CPU per
//! byte (the rest is the loopback TCP stack itself, which stays).
//!
//! Per direction the relay holds a pipe (two descriptors) whose buffer is the kernel's default
//! 16 pages; what sits in it are references to the pages of the received segments, not copies,
//! and never more than one pipe's worth, so a transfer still pins a small fixed amount of
//! memory, now in the kernel rather than the relay's heap.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{CHUNK, Meter};
use crate::transport::Conn;

/// Copies `a` to `b` and `b` to `a` like [`super::splice`], by `splice(2)` when both are plain
/// TCP (and the pipes can be had), through user space otherwise.
pub async fn splice_conns(a: &mut Conn, b: &mut Conn, meter: &Meter) -> io::Result<()> {
    if !a.is_tls()
        && !b.is_tls()
        && let (Ok(ab), Ok(ba)) = (Pipe::new(), Pipe::new())
    {
        let (a, b) = (a.tcp(), b.tcp());
        tokio::try_join!(
            ab.pump(a, b, |n| meter.record(n, 0)),
            ba.pump(b, a, |n| meter.record(0, n)),
        )?;
        return Ok(());
    }
    super::splice(a, b, meter).await
}

/// A pipe between a socket that is read and one that is written.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe { read, write })
    }

    /// Moves `from` to `to` until `from` ends, then shuts `to`'s write side down (so a
    /// half-close passes through). The pipe is always emptied before it is filled again: a
    /// `splice` into it that would block then means the socket has nothing, never that the
    /// pipe is full.
    async fn pump(self, from: &TcpStream, to: &TcpStream, count: impl Fn(u64)) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        loop {
            from.readable().await?;
            let filled = from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, &self.write, None, CHUNK, flags)?)
            });
            let mut left = match filled {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            while left > 0 {
                to.writable().await?;
                let moved = to.try_io(Interest::WRITABLE, || {
                    Ok(splice(&self.read, None, to, None, left, flags)?)
                });
                match moved {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        left -= n;
                        count(n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)
    }
}
