//! A client connection, plain or TLS, with a bounded read buffer for line protocols.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a STARTTLS handshake runs.
    Upgrading,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// What was negotiated, for Received headers and logs.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line was longer than allowed; it has been read and thrown away.
    #[error("line too long")]
    TooLong,
    #[error("connection closed")]
    Eof,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(#[from] io::Error),
}

const INITIAL_BUF: usize = 1024;
/// Read buffers above this are given back when the connection goes idle.
const KEEP_BUF: usize = 8192;

/// Buffered reads by line or by chunk, buffered writes flushed on demand.
pub struct Io {
    conn: Conn,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    tls: Option<TlsInfo>,
}

impl Io {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Io {
            conn: Conn::Plain(stream),
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            tls: None,
        }
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    /// Bytes the client sent that have not been consumed yet (pipelined input).
    pub fn has_buffered(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// Drops unread input: after STARTTLS nothing sent in the clear may be executed.
    pub fn discard_buffered(&mut self) {
        self.rbuf.clear();
        self.rpos = 0;
    }

    fn compact(&mut self) {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_BUF {
            self.rbuf = Vec::new();
        }
    }

    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    async fn fill(&mut self, limit: Duration) -> Result<usize, LineError> {
        self.compact();
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(self.rbuf.capacity().max(INITIAL_BUF));
        }
        let conn = &mut self.conn;
        let rbuf = &mut self.rbuf;
        match tokio::time::timeout(limit, conn.read_buf(rbuf)).await {
            Err(_) => Err(LineError::Timeout),
            Ok(Err(e)) => Err(LineError::Io(e)),
            Ok(Ok(n)) => Ok(n),
        }
    }

    /// Waits until input is available (or the timeout passes) without consuming it.
    pub async fn wait_readable(&mut self, limit: Duration) -> Result<(), LineError> {
        if self.has_buffered() {
            return Ok(());
        }
        match self.fill(limit).await? {
            0 => Err(LineError::Eof),
            _ => Ok(()),
        }
    }

    /// One line, with its ending (LF or CRLF) removed. Lines longer than `max` (ending
    /// included) are consumed to their end and reported as `TooLong`, without being kept in
    /// memory.
    pub async fn read_line(&mut self, max: usize, limit: Duration) -> Result<Vec<u8>, LineError> {
        let mut scanned = 0;
        let mut too_long = false;
        loop {
            let buf = self.buffered();
            if let Some(i) = buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if too_long || end + 1 > max {
                    self.rpos += end + 1;
                    return Err(LineError::TooLong);
                }
                let mut line = buf[..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.rpos += end + 1;
                return Ok(line);
            }
            scanned = buf.len();
            if scanned > max {
                // Throw away what we have and keep looking for the end of the line.
                too_long = true;
                self.rpos += scanned;
                scanned = 0;
            }
            if self.fill(limit).await? == 0 {
                return Err(LineError::Eof);
            }
        }
    }

    /// Some buffered input (reading more if there is none), at most `max` bytes. The caller
    /// consumes what it used with [`Io::consume`].
    pub async fn peek_chunk(&mut self, max: usize, limit: Duration) -> Result<&[u8], LineError> {
        if !self.has_buffered() && self.fill(limit).await? == 0 {
            return Err(LineError::Eof);
        }
        let b = self.buffered();
        Ok(&b[..b.len().min(max)])
    }

    pub fn consume(&mut self, n: usize) {
        self.rpos = (self.rpos + n).min(self.rbuf.len());
    }

    /// Exactly `n` bytes (a literal, a BDAT chunk).
    pub async fn read_exact(&mut self, n: usize, limit: Duration) -> Result<Vec<u8>, LineError> {
        let mut out = Vec::with_capacity(n.min(1 << 20));
        while out.len() < n {
            let chunk = self.peek_chunk(n - out.len(), limit).await?;
            let k = chunk.len();
            out.extend_from_slice(chunk);
            self.consume(k);
        }
        Ok(out)
    }

    pub fn write(&mut self, b: &[u8]) {
        self.wbuf.extend_from_slice(b);
    }

    pub fn pending_output(&self) -> usize {
        self.wbuf.len()
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.conn.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > KEEP_BUF {
                self.wbuf = Vec::new();
            }
        }
        self.conn.flush().await
    }

    /// Writes and flushes, giving up after `limit` (a client that never reads).
    pub async fn send(&mut self, b: &[u8], limit: Duration) -> io::Result<()> {
        self.write(b);
        match tokio::time::timeout(limit, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client does not read",
            )),
        }
    }

    /// TLS handshake on the connection (implicit TLS or after STARTTLS). Unread plaintext
    /// input is discarded first.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> io::Result<()> {
        self.discard_buffered();
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Upgrading) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio::time::timeout(limit, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (_, conn) = tls.get_ref();
        self.tls = Some(TlsInfo {
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS")
                .replace("TLSv1_", "TLS1.")
                .replace("TLSv1", "TLS1"),
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("unknown")
                .to_string(),
        });
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.flush().await;
            let _ = self.conn.shutdown().await;
        })
        .await;
    }
}
