//! A client connection, plain or TLS, with a bounded read buffer for line protocols.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

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
/// Output held back while pipelined input is served; past this it is written first, so a
/// client that sends without reading cannot make us buffer without bound.
const OUTPUT_HIGH_WATER: usize = 64 << 10;

/// What is left of `cap` before `deadline` (all of it without a deadline).
pub fn time_left(deadline: Option<Instant>, cap: Duration) -> Duration {
    deadline.map_or(cap, |d| {
        cap.min(d.saturating_duration_since(Instant::now()))
    })
}

/// The time budget of one bulk transfer (message data, a literal): `grace` plus one second
/// per `min_rate` bytes received. A slow but honest link gets through; a client that
/// dribbles a byte now and then (slowloris) is cut off even though no single read times out.
pub struct Pace {
    start: Instant,
    grace: Duration,
    min_rate: u64,
    received: u64,
}

impl Pace {
    pub fn new(grace: Duration, min_rate: u64) -> Pace {
        Pace {
            start: Instant::now(),
            grace,
            min_rate: min_rate.max(1),
            received: 0,
        }
    }

    pub fn add(&mut self, n: usize) {
        self.received += n as u64;
    }

    /// How long the next read may wait: `per_read`, or less when the budget is nearly spent.
    pub fn limit(&self, per_read: Duration) -> Duration {
        let budget =
            self.grace + Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        let left = (self.start + budget).saturating_duration_since(Instant::now());
        per_read.min(left)
    }
}

/// Buffered reads by line or by chunk, buffered writes flushed on demand.
pub struct Io {
    conn: Conn,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    tls: Option<TlsInfo>,
    write_timeout: Duration,
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
            write_timeout: Duration::from_secs(300),
        }
    }

    /// How long a flush may wait for the client to take our output.
    pub fn set_write_timeout(&mut self, limit: Duration) {
        self.write_timeout = limit;
    }

    /// Whether to write out now: nothing more to serve, or too much output held back.
    pub fn should_flush(&self) -> bool {
        !self.has_buffered() || self.wbuf.len() >= OUTPUT_HIGH_WATER
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

    /// Input received and not consumed yet, for a core that frames it itself.
    pub fn buffered_input(&self) -> &[u8] {
        self.buffered()
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
    /// memory. `limit` is for the whole line, not each read, so that a line sent a byte at
    /// a time still ends in time.
    pub async fn read_line(&mut self, max: usize, limit: Duration) -> Result<Vec<u8>, LineError> {
        let deadline = Instant::now().checked_add(limit);
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
            let left = time_left(deadline, limit);
            if self.fill(left).await? == 0 {
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

    /// Exactly `n` bytes (a literal), each read within `limit` and all within `pace`.
    pub async fn read_exact(
        &mut self,
        n: usize,
        limit: Duration,
        pace: &mut Pace,
    ) -> Result<Vec<u8>, LineError> {
        let mut out = Vec::with_capacity(n.min(1 << 20));
        while out.len() < n {
            let chunk = self.peek_chunk(n - out.len(), pace.limit(limit)).await?;
            let k = chunk.len();
            out.extend_from_slice(chunk);
            self.consume(k);
            pace.add(k);
        }
        Ok(out)
    }

    pub fn write(&mut self, b: &[u8]) {
        self.wbuf.extend_from_slice(b);
    }

    pub fn pending_output(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes out what is buffered; a client that takes none of it for the write timeout is
    /// given up on (it never reads, and we will not hold the connection for it). The timeout
    /// is for progress, not the whole buffer: a slow reader of a large answer is served.
    pub async fn flush(&mut self) -> io::Result<()> {
        let limit = self.write_timeout;
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "client does not read");
        let mut off = 0;
        while off < self.wbuf.len() {
            match tokio::time::timeout(limit, self.conn.write(&self.wbuf[off..])).await {
                Err(_) => return Err(stalled()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => off += n,
            }
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_BUF {
            self.wbuf = Vec::new();
        }
        tokio::time::timeout(limit, self.conn.flush())
            .await
            .map_err(|_| stalled())?
    }

    /// Writes what is buffered, then `data` straight from the caller's buffer (a large answer
    /// is not copied into ours first); each write must make progress within the write timeout.
    pub async fn send_now(&mut self, data: &[u8]) -> io::Result<()> {
        self.flush().await?;
        let limit = self.write_timeout;
        let mut off = 0;
        while off < data.len() {
            match tokio::time::timeout(limit, self.conn.write(&data[off..])).await {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client does not read",
                    ));
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => off += n,
            }
        }
        tokio::time::timeout(limit, self.conn.flush())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))?
    }

    async fn flush_all(&mut self) -> io::Result<()> {
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
        match tokio::time::timeout(limit, self.flush_all()).await {
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
            let _ = self.flush_all().await;
            let _ = self.conn.shutdown().await;
        })
        .await;
    }
}
