//! The IMAP listener: reads whole commands (lines and literals, within limits), STARTTLS, and
//! hands each command to the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_config::Config;
use postern_directory::Directory;
use postern_net::{Admission, ConnLimits, Io, LineError, Pace, Shutdown, TlsStore, Tracker};
use postern_store::SharedStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use crate::parse::{self, Command};
use crate::session::{Flow, Session, Shared, State};

pub struct ImapServer {
    pub config: Arc<Config>,
    pub implicit_tls: bool,
    pub store: SharedStore,
    pub directory: Arc<Directory>,
    pub tls: Option<Arc<TlsStore>>,
    pub shutdown: Shutdown,
}

enum ReadError {
    Line(LineError),
    /// A literal over the limit: (tag, non-synchronizing).
    LiteralTooBig(Option<String>, bool),
    TooLong,
}

/// `{n}`, `{n+}`, `{n-}` or `~{n}` at the end of a line: (n, non-synchronizing).
pub fn trailing_literal(line: &[u8]) -> Option<(u64, bool)> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let mut inner = &line[open + 1..line.len() - 1];
    let plus = matches!(inner.last(), Some(b'+') | Some(b'-'));
    if plus {
        inner = &inner[..inner.len() - 1];
    }
    if inner.is_empty() || !inner.iter().all(u8::is_ascii_digit) || inner.len() > 19 {
        return None;
    }
    std::str::from_utf8(inner)
        .ok()?
        .parse()
        .ok()
        .map(|n| (n, plus))
}

fn tag_of(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&buf[..end]).ok().map(str::to_string)
}

async fn read_command(
    io: &mut Io,
    max_line: usize,
    max_literal: u64,
    timeout: Duration,
    min_rate: u64,
) -> Result<Vec<u8>, ReadError> {
    let max_total = max_literal as usize + max_line * 4;
    let mut buf = Vec::new();
    // One deadline for the whole command, literals and continuation lines included.
    let deadline = Instant::now().checked_add(timeout);
    let left = || postern_net::time_left(deadline, timeout);
    loop {
        let line = io.read_line(max_line, left()).await.map_err(|e| match e {
            LineError::TooLong => ReadError::TooLong,
            e => ReadError::Line(e),
        })?;
        if buf.len() + line.len() > max_total {
            return Err(ReadError::TooLong);
        }
        buf.extend_from_slice(&line);
        match trailing_literal(&line) {
            Some((n, plus)) => {
                if n > max_literal || buf.len() as u64 + n > max_total as u64 {
                    return Err(ReadError::LiteralTooBig(tag_of(&buf), plus));
                }
                if !plus {
                    io.write(b"+ Ready for literal data\r\n");
                    io.flush()
                        .await
                        .map_err(|e| ReadError::Line(LineError::Io(e)))?;
                }
                buf.extend_from_slice(b"\r\n");
                // Bytes are kept as they arrive, never allocated ahead of them.
                let mut pace = Pace::new(left(), min_rate);
                let data = io
                    .read_exact(n as usize, left(), &mut pace)
                    .await
                    .map_err(ReadError::Line)?;
                buf.extend_from_slice(&data);
            }
            None => {
                buf.extend_from_slice(b"\r\n");
                return Ok(buf);
            }
        }
    }
}

impl ImapServer {
    pub async fn run(self: Arc<Self>, listener: TcpListener, tracker: Tracker) {
        let c = &self.config.imap;
        let limits = ConnLimits {
            max_connections: c.max_connections,
            max_per_ip: c.max_connections_per_ip,
            max_rate_per_ip: 0,
            protocol: "imap",
        };
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            store: self.store.clone(),
            directory: self.directory.clone(),
            tls: self.tls.clone(),
        });
        let me = self.clone();
        postern_net::serve(
            listener,
            limits,
            tracker,
            self.shutdown.clone(),
            move |stream, peer, adm| {
                let me = me.clone();
                let shared = shared.clone();
                let span =
                    tracing::info_span!("imap", sid = %postern_net::session_id(), peer = %peer);
                async move { me.session(stream, peer, adm, shared).await }.instrument(span)
            },
        )
        .await;
    }

    async fn session(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        adm: Admission,
        shared: Arc<Shared>,
    ) {
        let ip = postern_net::listener::canonical_ip(peer.ip());
        let mut io = Io::new(stream);
        if let Admission::TooMany(why) = adm {
            let _ = io
                .send(
                    format!("* BYE [UNAVAILABLE] {why}; try again later\r\n").as_bytes(),
                    Duration::from_secs(5),
                )
                .await;
            return;
        }
        if self.implicit_tls {
            let Some(tls) = &self.tls else { return };
            if let Err(e) = io
                .start_tls(
                    &tls.acceptor(),
                    self.config.tls.handshake_timeout.duration(),
                )
                .await
            {
                info!(error = %e, "TLS handshake failed");
                return;
            }
        }
        let mut s = Session::new(shared, ip);
        io.write(
            format!(
                "* OK [CAPABILITY {}] Postern IMAP4rev2 ready\r\n",
                s.capabilities(io.is_tls())
            )
            .as_bytes(),
        );
        info!(tls = io.is_tls(), "connected");
        let c = &self.config.imap;
        let idle = c.idle_timeout.duration();
        io.set_write_timeout(c.write_timeout.duration());
        let login_by = Instant::now().checked_add(c.login_timeout.duration());
        let mut shutdown = self.shutdown.clone();
        loop {
            if io.should_flush()
                && let Err(e) = io.flush().await
            {
                info!(error = %e, "output not delivered; disconnecting");
                break;
            }
            let logged_in = s.state != State::NotAuthenticated;
            let timeout = if logged_in {
                idle
            } else {
                postern_net::time_left(login_by, idle)
            };
            if shutdown.is_triggered() {
                let _ = io
                    .send(
                        b"* BYE [UNAVAILABLE] Server shutting down; reconnect in a moment\r\n",
                        Duration::from_secs(5),
                    )
                    .await;
                break;
            }
            let read = tokio::select! {
                biased;
                r = read_command(&mut io, c.max_line, s.max_literal(), timeout, c.min_literal_rate) => r,
                _ = shutdown.wait() => {
                    let _ = io.send(b"* BYE [UNAVAILABLE] Server shutting down; reconnect in a moment\r\n", Duration::from_secs(5)).await;
                    break;
                }
            };
            let buf = match read {
                Ok(b) => b,
                Err(ReadError::TooLong) => {
                    if let Flow::Close = s.bad(&mut io, "*", "Command line too long") {
                        break;
                    }
                    continue;
                }
                Err(ReadError::LiteralTooBig(tag, plus)) => {
                    let tag = tag.unwrap_or_else(|| "*".into());
                    if plus {
                        // The client is already sending it: there is no way to skip it safely.
                        io.write(
                            format!(
                                "* BYE [TOOBIG] Literal larger than {} bytes\r\n",
                                s.max_literal()
                            )
                            .as_bytes(),
                        );
                        break;
                    }
                    io.write(
                        format!(
                            "{tag} NO [TOOBIG] Literal larger than {} bytes\r\n",
                            s.max_literal()
                        )
                        .as_bytes(),
                    );
                    continue;
                }
                Err(ReadError::Line(LineError::Timeout)) if !logged_in => {
                    io.write(
                        format!(
                            "* BYE Autologout: no login within {} seconds of connecting\r\n",
                            c.login_timeout.0
                        )
                        .as_bytes(),
                    );
                    break;
                }
                Err(ReadError::Line(LineError::Timeout)) => {
                    io.write(b"* BYE Autologout: idle for too long\r\n");
                    break;
                }
                Err(ReadError::Line(_)) => break,
            };
            let (tag, cmd) = parse::parse(&buf, s.utf8);
            let Some(tag) = tag else {
                if let Flow::Close = s.bad(&mut io, "*", "Missing tag") {
                    break;
                }
                continue;
            };
            let cmd = match cmd {
                Ok(c) => c,
                Err(e) => {
                    if let Flow::Close = s.bad(&mut io, &tag, &e.0) {
                        break;
                    }
                    continue;
                }
            };
            if cmd == Command::StartTls {
                if io.is_tls() {
                    s.bad(&mut io, &tag, "TLS is already active");
                    continue;
                }
                let Some(tls) = self.tls.clone() else {
                    io.write(
                        format!(
                            "{tag} NO TLS is not available: this server has no certificate\r\n"
                        )
                        .as_bytes(),
                    );
                    continue;
                };
                io.write(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes());
                if io.flush().await.is_err() {
                    break;
                }
                if io.has_buffered() {
                    warn!("input pipelined after STARTTLS discarded");
                }
                if let Err(e) = io
                    .start_tls(
                        &tls.acceptor(),
                        self.config.tls.handshake_timeout.duration(),
                    )
                    .await
                {
                    info!(error = %e, "STARTTLS handshake failed");
                    break;
                }
                continue;
            }
            if let Flow::Close = s.execute(&mut io, &tag, cmd).await {
                break;
            }
        }
        io.shutdown().await;
        info!("disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_markers() {
        assert_eq!(trailing_literal(b"a LOGIN {5}"), Some((5, false)));
        assert_eq!(trailing_literal(b"a APPEND x {12+}"), Some((12, true)));
        assert_eq!(trailing_literal(b"a APPEND x ~{3}"), Some((3, false)));
        assert_eq!(trailing_literal(b"a LOGIN {x}"), None);
        assert_eq!(trailing_literal(b"a LOGIN {99999999999999999999}"), None);
        assert_eq!(trailing_literal(b"a NOOP"), None);
    }
}
