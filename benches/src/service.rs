//! The bench servers' wire protocol, spoken over any byte stream (TCP, a yamux substream, a
//! tunnel visitor), so the same server code measures every transport.
//!
//! A client sends a 9-byte request: one op byte and a big-endian `u64` length.
//!
//! | op | meaning |
//! |---|---|
//! | [`OP_UPLOAD`] | the client sends `len` bytes; the server answers one byte once it has them all |
//! | [`OP_DOWNLOAD`] | the server sends `len` bytes |
//! | [`OP_SINK`] | the client sends until it half-closes; the server answers the count as a `u64` |
//! | [`OP_SOURCE`] | the server sends until the client goes away |
//!
//! Requests repeat on one connection until the client closes it, so benches can keep their
//! connections open across iterations and time only the transfer.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Client sends `len` bytes, server acknowledges with one byte.
pub const OP_UPLOAD: u8 = b'u';
/// Server sends `len` bytes.
pub const OP_DOWNLOAD: u8 = b'd';
/// Client sends until end of stream; server answers the byte count.
pub const OP_SINK: u8 = b'U';
/// Server sends until the client disconnects.
pub const OP_SOURCE: u8 = b'D';

/// Size of the buffers the bench servers and clients read and write with. Matches the relay's
/// own splice chunk, so neither end is the reason a transfer is slow.
pub const IO_CHUNK: usize = 64 * 1024;

const REQUEST_LEN: usize = 9;

/// Serves bench requests on `s` until the client closes it. A client that disappears in the
/// middle of [`OP_SOURCE`] is the normal end of that op, not an error.
pub async fn serve<S>(mut s: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0x5a_u8; IO_CHUNK];
    loop {
        let mut req = [0u8; REQUEST_LEN];
        match s.read_exact(&mut req).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&req[1..]);
        let len = u64::from_be_bytes(len_bytes);
        match req[0] {
            OP_UPLOAD => {
                read_exactly(&mut s, len, &mut buf).await?;
                s.write_all(&[1]).await?;
            }
            OP_DOWNLOAD => write_exactly(&mut s, len, &buf).await?,
            OP_SINK => {
                let mut total = 0u64;
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                s.write_all(&total.to_be_bytes()).await?;
                s.shutdown().await?;
                return Ok(());
            }
            OP_SOURCE => {
                // Ends when the client closes: the write then fails, which is the expected way out.
                loop {
                    if s.write_all(&buf).await.is_err() {
                        return Ok(());
                    }
                }
            }
            op => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown bench op {op:#04x}"),
                ));
            }
        }
    }
}

/// Echoes every byte until the client half-closes, then closes too (half-close honoured).
pub async fn echo<S>(s: S) -> io::Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(s);
    let n = tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(n)
}

/// Sends `len` bytes and waits for the server's acknowledgement.
pub async fn upload<S>(s: &mut S, len: u64, buf: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(&request(OP_UPLOAD, len)).await?;
    write_exactly(s, len, buf).await?;
    s.flush().await?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    Ok(())
}

/// Asks the server for `len` bytes and reads them all.
pub async fn download<S>(s: &mut S, len: u64, buf: &mut [u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    s.write_all(&request(OP_DOWNLOAD, len)).await?;
    s.flush().await?;
    read_exactly(s, len, buf).await
}

/// The 9-byte request for `op` with `len`.
pub fn request(op: u8, len: u64) -> [u8; REQUEST_LEN] {
    let mut req = [0u8; REQUEST_LEN];
    req[0] = op;
    req[1..].copy_from_slice(&len.to_be_bytes());
    req
}

async fn write_exactly<W>(w: &mut W, mut len: u64, buf: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while len > 0 {
        let n = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        w.write_all(&buf[..n]).await?;
        len -= n as u64;
    }
    Ok(())
}

async fn read_exactly<R>(r: &mut R, mut len: u64, buf: &mut [u8]) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    while len > 0 {
        let want = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended with {len} bytes still expected"),
            ));
        }
        len -= n as u64;
    }
    Ok(())
}

/// The fixed answer of the bench HTTP server.
pub const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world\n";

/// A minimal keep-alive HTTP/1.1 server for `wrk`: answers every request head (ended by an
/// empty line) with [`HTTP_RESPONSE`]. Request bodies are not supported; wrk sends none.
pub async fn serve_http<S>(mut s: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut out = Vec::with_capacity(HTTP_RESPONSE.len() * 4);
    loop {
        if filled == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head larger than 16 KiB",
            ));
        }
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        // Answer every complete head in the buffer (wrk may pipeline), keep the partial rest.
        let mut start = 0;
        while let Some(end) = find_head_end(&buf[start..filled]) {
            out.extend_from_slice(HTTP_RESPONSE);
            start += end;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Length of the request head at the start of `buf` including its blank line, if complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn upload_and_download_round_trip() {
        let (mut client, server) = duplex(IO_CHUNK);
        let srv = tokio::spawn(serve(server));
        let mut buf = vec![0u8; IO_CHUNK];
        upload(&mut client, 300_000, &buf.clone())
            .await
            .expect("upload");
        download(&mut client, 300_001, &mut buf)
            .await
            .expect("download");
        drop(client);
        srv.await.expect("join").expect("serve ends cleanly");
    }

    #[tokio::test]
    async fn sink_counts_every_byte() {
        let (mut client, server) = duplex(IO_CHUNK);
        let srv = tokio::spawn(serve(server));
        client.write_all(&request(OP_SINK, 0)).await.expect("req");
        client.write_all(&[7u8; 100_000]).await.expect("data");
        client.shutdown().await.expect("half-close");
        let mut count = [0u8; 8];
        client.read_exact(&mut count).await.expect("count");
        assert_eq!(u64::from_be_bytes(count), 100_000);
        srv.await.expect("join").expect("serve");
    }

    #[tokio::test]
    async fn http_answers_pipelined_requests() {
        let (mut client, server) = duplex(64 * 1024);
        let srv = tokio::spawn(serve_http(server));
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        client
            .write_all(&[&req[..], &req[..], &req[..5]].concat())
            .await
            .expect("w");
        let mut got = vec![0u8; HTTP_RESPONSE.len() * 2];
        client.read_exact(&mut got).await.expect("two answers");
        assert_eq!(got, [HTTP_RESPONSE, HTTP_RESPONSE].concat());
        client.write_all(&req[5..]).await.expect("rest");
        let mut one = vec![0u8; HTTP_RESPONSE.len()];
        client.read_exact(&mut one).await.expect("third answer");
        drop(client);
        srv.await.expect("join").expect("clean end");
    }
}
