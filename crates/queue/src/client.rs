//! The SMTP client that delivers to other servers: EHLO, opportunistic STARTTLS, AUTH for a
//! smarthost, pipelined MAIL/RCPT, then BDAT (when offered) or dot-stuffed DATA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A reply from the remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl RemoteReply {
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    format!("{} {l}", self.code)
                } else {
                    l.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code at the start of the text, if any ("5.1.1").
    pub fn enhanced(&self) -> Option<String> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let parts: Vec<&str> = first.split('.').collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        .then(|| first.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("connection to {0} lost: {1}")]
    Io(String, String),
    #[error("{0} timed out")]
    Timeout(String),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, String),
    /// The server refused a command for the whole transaction.
    #[error("{host} said: {}", .reply.text())]
    Rejected { host: String, reply: RemoteReply },
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// Worth trying again (later, or at another MX).
    pub fn is_temporary(&self) -> bool {
        match self {
            ClientError::Rejected { reply, .. } => !reply.is_permanent(),
            ClientError::Protocol(_) => true,
            _ => true,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Capabilities {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub chunking: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub requiretls: bool,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(b).await,
            Stream::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered, any certificate; plain text otherwise.
    Opportunistic,
    /// STARTTLS must work (a smarthost that requires it).
    Required,
    /// TLS from the first byte (port 465).
    Implicit,
    /// Never.
    Off,
}

pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data: Duration,
}

pub struct SmtpClient {
    stream: Stream,
    buf: Vec<u8>,
    pub host: String,
    pub caps: Capabilities,
    pub tls: Option<String>,
    timeouts: Timeouts,
}

/// One message for one destination.
pub struct Transaction<'a> {
    pub sender: &'a str,
    /// (address, NOTIFY, ORCPT)
    pub recipients: Vec<(&'a str, Option<&'a str>, Option<&'a str>)>,
    pub envid: Option<&'a str>,
    pub ret: Option<&'a str>,
    pub body: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// RFC 8689: passed on as the MAIL FROM parameter.
    pub requiretls: bool,
}

impl SmtpClient {
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        helo: &str,
        mode: TlsMode,
        verifier: Option<Arc<dyn ServerCertVerifier>>,
        timeouts: Timeouts,
    ) -> Result<SmtpClient, ClientError> {
        // A certificate to check means TLS cannot be skipped.
        let mode = match (&verifier, mode) {
            (Some(_), TlsMode::Opportunistic | TlsMode::Off) => TlsMode::Required,
            (_, m) => m,
        };
        let label = format!("{host}[{}]", addr.ip());
        let tcp = tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(format!("connecting to {label}")))?
            .map_err(|e| ClientError::Connect(label.clone(), e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut c = SmtpClient {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            host: label,
            caps: Capabilities::default(),
            tls: None,
            timeouts,
        };
        if mode == TlsMode::Implicit {
            c.start_tls(host, verifier.clone()).await?;
        }
        let greeting = c.reply().await?;
        if !greeting.is_ok() {
            return Err(ClientError::Rejected {
                host: c.host.clone(),
                reply: greeting,
            });
        }
        c.ehlo(helo).await?;
        let want_tls =
            matches!(mode, TlsMode::Opportunistic | TlsMode::Required) && c.tls.is_none();
        if want_tls && c.caps.starttls {
            let r = c.command("STARTTLS").await?;
            if r.is_ok() {
                c.start_tls(host, verifier).await?;
                c.ehlo(helo).await?;
            } else if mode == TlsMode::Required {
                return Err(ClientError::Rejected {
                    host: c.host.clone(),
                    reply: r,
                });
            }
        } else if mode == TlsMode::Required && c.tls.is_none() {
            return Err(ClientError::Tls(
                c.host.clone(),
                "STARTTLS is not offered".into(),
            ));
        }
        Ok(c)
    }

    async fn start_tls(
        &mut self,
        host: &str,
        verifier: Option<Arc<dyn ServerCertVerifier>>,
    ) -> Result<(), ClientError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(ClientError::Protocol("TLS is already active".into()));
        };
        let config = rustls::ClientConfig::builder_with_provider(postern_net::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(self.host.clone(), e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(
                verifier
                    .clone()
                    .unwrap_or_else(|| Arc::new(AnyCertificate) as Arc<dyn ServerCertVerifier>),
            )
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("localhost".to_string()).expect("valid name"));
        let tls = tokio::time::timeout(
            self.timeouts.command,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| ClientError::Timeout(format!("TLS handshake with {}", self.host)))?
        .map_err(|e| ClientError::Tls(self.host.clone(), e.to_string()))?;
        let (_, conn) = tls.get_ref();
        self.tls = Some(format!(
            "{} {}",
            conn.protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS"),
            conn.negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("")
        ));
        self.stream = Stream::Tls(Box::new(tls));
        self.buf.clear();
        Ok(())
    }

    async fn ehlo(&mut self, helo: &str) -> Result<(), ClientError> {
        let r = self.command(&format!("EHLO {helo}")).await?;
        if !r.is_ok() {
            let h = self.command(&format!("HELO {helo}")).await?;
            if !h.is_ok() {
                return Err(ClientError::Rejected {
                    host: self.host.clone(),
                    reply: h,
                });
            }
            self.caps = Capabilities::default();
            return Ok(());
        }
        let mut caps = Capabilities::default();
        for l in r.lines.iter().skip(1) {
            let up = l.to_ascii_uppercase();
            let mut words = up.split_whitespace();
            match words.next() {
                Some("PIPELINING") => caps.pipelining = true,
                Some("SIZE") => {
                    caps.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0)
                }
                Some("8BITMIME") => caps.eight_bit = true,
                Some("SMTPUTF8") => caps.smtputf8 = true,
                Some("CHUNKING") => caps.chunking = true,
                Some("DSN") => caps.dsn = true,
                Some("STARTTLS") => caps.starttls = true,
                Some("REQUIRETLS") => caps.requiretls = true,
                Some("AUTH") => caps.auth_plain = words.any(|w| w == "PLAIN"),
                _ => {}
            }
        }
        self.caps = caps;
        Ok(())
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        if !self.caps.auth_plain {
            return Err(ClientError::Protocol(format!(
                "{} does not offer AUTH PLAIN",
                self.host
            )));
        }
        let token = postern_directory::sasl::encode(format!("\0{user}\0{password}").as_bytes());
        let r = self.command(&format!("AUTH PLAIN {token}")).await?;
        if r.is_ok() {
            Ok(())
        } else {
            Err(ClientError::Rejected {
                host: self.host.clone(),
                reply: r,
            })
        }
    }

    async fn fill(&mut self, what: &str) -> Result<(), ClientError> {
        let mut tmp = [0u8; 8192];
        let n = tokio::time::timeout(self.timeouts.command, self.stream.read(&mut tmp))
            .await
            .map_err(|_| ClientError::Timeout(format!("waiting for {} ({what})", self.host)))?
            .map_err(|e| ClientError::Io(self.host.clone(), e.to_string()))?;
        if n == 0 {
            return Err(ClientError::Io(
                self.host.clone(),
                "connection closed".into(),
            ));
        }
        if self.buf.len() + n > 1 << 20 {
            return Err(ClientError::Protocol(format!(
                "{} sent a reply over 1 MB",
                self.host
            )));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// One (multi-line) reply.
    pub async fn reply(&mut self) -> Result<RemoteReply, ClientError> {
        let mut lines = Vec::new();
        loop {
            let pos = loop {
                if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                    break p;
                }
                self.fill("a reply").await?;
            };
            let raw: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            if line.len() < 3 || !line.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                return Err(ClientError::Protocol(format!(
                    "{} sent a malformed reply: {line:?}",
                    self.host
                )));
            }
            let code: u16 = line[..3].parse().unwrap_or(0);
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(RemoteReply { code, lines });
            }
        }
    }

    pub async fn command(&mut self, c: &str) -> Result<RemoteReply, ClientError> {
        self.send(format!("{c}\r\n").as_bytes()).await?;
        self.reply().await
    }

    async fn send(&mut self, b: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeouts.data, self.stream.write_all(b))
            .await
            .map_err(|_| ClientError::Timeout(format!("sending to {}", self.host)))?
            .map_err(|e| ClientError::Io(self.host.clone(), e.to_string()))
    }

    /// Sends one message. Per recipient: the remote reply to RCPT, or (when it was accepted)
    /// the reply to the end of data.
    pub async fn deliver(&mut self, t: &Transaction<'_>) -> Result<Vec<RemoteReply>, ClientError> {
        if t.smtputf8 && !self.caps.smtputf8 {
            // RFC 6531 3.4: refuse rather than mangle addresses.
            return Err(ClientError::Rejected {
                host: self.host.clone(),
                reply: RemoteReply {
                    code: 553,
                    lines: vec!["5.6.7 The receiving server does not support SMTPUTF8, which this message needs".into()],
                },
            });
        }
        if let Some(max) = self.caps.size
            && t.body.len() as u64 > max
        {
            return Err(ClientError::Rejected {
                host: self.host.clone(),
                reply: RemoteReply {
                    code: 552,
                    lines: vec![format!(
                        "5.3.4 The message is larger than the receiving server accepts ({max} bytes)"
                    )],
                },
            });
        }
        let mut mail = format!("MAIL FROM:<{}>", t.sender);
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", t.body.len()));
        }
        if t.eight_bit && self.caps.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if t.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if t.requiretls {
            mail.push_str(" REQUIRETLS");
        }
        if self.caps.dsn {
            if let Some(r) = t.ret {
                mail.push_str(&format!(" RET={r}"));
            }
            if let Some(e) = t.envid {
                mail.push_str(&format!(" ENVID={e}"));
            }
        }
        let mut cmds = vec![mail];
        for (addr, notify, orcpt) in &t.recipients {
            let mut r = format!("RCPT TO:<{addr}>");
            if self.caps.dsn {
                if let Some(n) = notify {
                    r.push_str(&format!(" NOTIFY={n}"));
                }
                if let Some(o) = orcpt {
                    r.push_str(&format!(" ORCPT={o}"));
                }
            }
            cmds.push(r);
        }
        // Pipelined when offered (RFC 2920): MAIL and every RCPT in one write.
        let mut replies = Vec::new();
        if self.caps.pipelining {
            let all: String = cmds.iter().map(|c| format!("{c}\r\n")).collect();
            self.send(all.as_bytes()).await?;
            for _ in &cmds {
                replies.push(self.reply().await?);
            }
        } else {
            for c in &cmds {
                let r = self.command(c).await?;
                let stop = c.starts_with("MAIL") && !r.is_ok();
                replies.push(r);
                if stop {
                    break;
                }
            }
        }
        let mail_reply = replies.remove(0);
        if !mail_reply.is_ok() {
            let _ = self.command("RSET").await;
            return Err(ClientError::Rejected {
                host: self.host.clone(),
                reply: mail_reply,
            });
        }
        let accepted = replies.iter().filter(|r| r.is_ok()).count();
        if accepted == 0 {
            let _ = self.command("RSET").await;
            return Ok(replies);
        }
        let end = if self.caps.chunking {
            self.send(format!("BDAT {} LAST\r\n", t.body.len()).as_bytes())
                .await?;
            self.send(t.body).await?;
            self.reply().await?
        } else {
            let r = self.command("DATA").await?;
            if r.code != 354 {
                return Err(ClientError::Rejected {
                    host: self.host.clone(),
                    reply: r,
                });
            }
            self.send(&dot_stuff(t.body)).await?;
            self.reply().await?
        };
        Ok(replies
            .into_iter()
            .map(|r| if r.is_ok() { end.clone() } else { r })
            .collect())
    }

    pub async fn reset(&mut self) -> bool {
        matches!(self.command("RSET").await, Ok(r) if r.is_ok())
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.command("QUIT")).await;
    }
}

/// DATA encoding: CRLF line endings everywhere (a bare CR or LF becomes CRLF, so nothing we send
/// can be read as an end of data by the receiver), leading dots doubled, then `.CRLF`.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut at_start = true;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                if b == b'\r' && body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_start = true;
            }
            _ => {
                if at_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_start = false;
            }
        }
        i += 1;
    }
    if !at_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Opportunistic TLS (RFC 7435): encrypt with whoever answers. Policies that need an
/// authenticated peer (MTA-STS, DANE) use a verifying configuration instead.
#[derive(Debug)]
pub(crate) struct AnyCertificate;

/// Refuses every certificate: checking was asked for, and there is nothing to check against.
#[derive(Debug)]
pub struct NoAuthorities;

impl rustls::client::danger::ServerCertVerifier for NoAuthorities {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(
            "no certificate authority to check it against (system store empty, \
             delivery.ca_file unset)"
                .into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        AnyCertificate.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        AnyCertificate.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        AnyCertificate.supported_verify_schemes()
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &postern_net::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &postern_net::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        postern_net::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[allow(dead_code)]
fn _assert_send<T: AsyncRead + AsyncWrite + Send>() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a receiver following RFC 5321 recovers from our DATA stream.
    fn unstuff(wire: &[u8]) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut ends = 0;
        for line in wire.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line == b"." {
                ends += 1;
                break;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
        (out, ends)
    }

    #[test]
    fn dot_stuffing_round_trips_and_never_ends_early() {
        let cases: [&[u8]; 6] = [
            b"a\r\n.b\r\n..c\r\n",
            b".\r\nfirst line was a dot\r\n",
            b"x\n.\nMAIL FROM:<evil@x>\r\n",
            b"x\r.\rRCPT TO:<v@y>\r\n",
            b"no final newline",
            b"\r\n.\r\n\r\n.\r\n",
        ];
        for c in cases {
            let wire = dot_stuff(c);
            assert!(wire.ends_with(b"\r\n.\r\n"));
            // Exactly one terminator: the last line.
            let terminators = wire
                .split(|&b| b == b'\n')
                .filter(|l| *l == b".\r" || *l == b".")
                .count();
            assert_eq!(terminators, 1, "{c:?} -> {wire:?}");
            let (back, ends) = unstuff(&wire);
            assert_eq!(ends, 1);
            // Content comes back with CRLF line ends.
            let mut normal = Vec::new();
            let mut i = 0;
            while i < c.len() {
                match c[i] {
                    b'\r' | b'\n' => {
                        normal.extend_from_slice(b"\r\n");
                        if c[i] == b'\r' && c.get(i + 1) == Some(&b'\n') {
                            i += 1;
                        }
                    }
                    b => normal.push(b),
                }
                i += 1;
            }
            if !normal.ends_with(b"\r\n") {
                normal.extend_from_slice(b"\r\n");
            }
            assert_eq!(back, normal, "{c:?}");
        }
    }

    #[test]
    fn reply_fields() {
        let r = RemoteReply {
            code: 550,
            lines: vec!["5.1.1 User unknown".into()],
        };
        assert_eq!(r.enhanced().as_deref(), Some("5.1.1"));
        assert!(r.is_permanent() && !r.is_ok());
        assert_eq!(r.text(), "550 5.1.1 User unknown");
    }
}
