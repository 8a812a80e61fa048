//! The socket as the reader and the writer see it: a source of bytes and a
//! sink for them. Plain TCP (the hot path) is one `TcpStream` shared by the
//! reader, the writer and the threads that append frames (`try_read` /
//! `try_write` first, readiness only when the socket has nothing or is
//! full); TLS is the two halves of a rustls stream, the writer alone
//! writing (appending threads leave the bytes to it). The loops are generic
//! over these, so the TCP path compiles to what it was.

use std::io::{self, Write};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The reader's side of the socket.
pub(super) trait Source {
    /// Reads what is there into `buf` (0: end of stream); sets `waited`
    /// when it had to wait for bytes (the link went quiet).
    async fn read_some(&mut self, buf: &mut [u8], waited: &mut bool) -> io::Result<usize>;
}

/// The writer's side of the socket.
pub(super) trait Sink {
    /// Writes all of `chunk` (and flushes it).
    async fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()>;
}

impl Source for Arc<TcpStream> {
    #[inline]
    async fn read_some(&mut self, buf: &mut [u8], waited: &mut bool) -> io::Result<usize> {
        // Read what is there before waiting for readiness: a busy link is
        // read again at once, without a trip through epoll.
        loop {
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *waited = true;
                    self.readable().await?;
                }
                other => return other,
            }
        }
    }
}

impl Sink for Arc<TcpStream> {
    #[inline]
    async fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < chunk.len() {
            match self.try_write(&chunk[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A write from the thread that appends frames, without waiting: what the
/// socket takes now (`WouldBlock`: nothing; the writer loop goes on).
pub(super) trait TryWrite: Send + Sync {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl TryWrite for TcpStream {
    #[inline]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

/// A link whose reading a host's threads do (`link_reader`): the runtime
/// watches it for writability alone, so bytes arriving do not wake it.
pub(super) type HostedTcp = AsyncFd<std::net::TcpStream>;

impl TryWrite for HostedTcp {
    #[inline]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.get_ref().write(buf)
    }
}

impl Sink for Arc<HostedTcp> {
    async fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < chunk.len() {
            match self.get_ref().write(&chunk[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut ready = self.writable().await?;
                    // Writable again only once the kernel says so.
                    match ready.try_io(|fd| fd.get_ref().write(&chunk[at..])) {
                        Ok(Ok(n)) => at += n,
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The TLS stream's halves.
pub(super) type TlsRead = ReadHalf<TlsStream<TcpStream>>;
pub(super) type TlsWrite = WriteHalf<TlsStream<TcpStream>>;

impl Source for TlsRead {
    async fn read_some(&mut self, buf: &mut [u8], _waited: &mut bool) -> io::Result<usize> {
        // Whether it waited is unknown here: the reader then yields after
        // every few hundred KiB read, as on a link that is never quiet.
        self.read(buf).await
    }
}

impl Sink for TlsWrite {
    async fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write_all(chunk).await?;
        self.flush().await
    }
}
