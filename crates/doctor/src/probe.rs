//! Talking to a mail server the way a mail program does, and remembering what went wrong:
//! connect, tell SSL/TLS from STARTTLS ports, check the certificate without giving up on it,
//! read greetings and capabilities, log in.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the certificate check found; the handshake goes on regardless so that the rest can be
/// checked too.
#[derive(Debug, Clone, Default)]
pub struct CertReport {
    /// None: trusted. Some(reason) otherwise.
    pub trust_error: Option<String>,
    pub expired: Option<String>,
    pub names: Vec<String>,
    pub name_ok: bool,
    pub facts: Option<crate::der::CertFacts>,
    /// SHA-256 of the certificate, as mail programs show it when asking to trust one.
    pub fingerprint: String,
}

#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    report: Arc<Mutex<CertReport>>,
    host: String,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.report.lock().unwrap() =
            assess(&self.inner, end_entity, intermediates, &self.host, now);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn assess(
    inner: &rustls::client::WebPkiServerVerifier,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    host: &str,
    now: UnixTime,
) -> CertReport {
    let mut r = CertReport {
        facts: crate::der::cert_facts(end_entity),
        fingerprint: ring::digest::digest(&ring::digest::SHA256, end_entity)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        ..CertReport::default()
    };
    let name = ServerName::try_from(host.to_string()).ok();
    if let Ok(ee) = webpki::EndEntityCert::try_from(end_entity) {
        r.names = ee.valid_dns_names().map(str::to_string).collect();
        r.name_ok = name
            .as_ref()
            .is_some_and(|n| ee.verify_is_valid_for_subject_name(n).is_ok());
    }
    let Some(name) = name else {
        r.trust_error = Some(format!("{host:?} is not a server name"));
        return r;
    };
    match inner.verify_server_cert(end_entity, intermediates, &name, &[], now) {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(e)) => {
            use rustls::CertificateError as E;
            match &e {
                E::Expired | E::ExpiredContext { .. } => r.expired = Some(format!("{e}")),
                E::NotValidForName | E::NotValidForNameContext { .. } => {}
                E::UnknownIssuer => {
                    r.trust_error = Some(if r.facts.as_ref().is_some_and(|f| f.self_signed) {
                        "it is self-signed: no authority vouches for it".into()
                    } else if intermediates.is_empty() {
                        "it does not lead to an authority mail programs trust; the server sends no intermediate certificate".into()
                    } else {
                        "it does not lead to an authority mail programs trust".into()
                    })
                }
                other => r.trust_error = Some(format!("{other:?}")),
            }
        }
        Err(e) => r.trust_error = Some(e.to_string()),
    }
    r
}

fn verifier(
    roots: Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, String> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, postern_net::tls::provider())
        .build()
        .map_err(|e| e.to_string())
}

/// Judges a certificate chain (as in a PEM file: the server's first) for `host`, now.
pub fn assess_chain(
    chain: &[CertificateDer<'static>],
    host: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Result<CertReport, String> {
    let (ee, rest) = chain.split_first().ok_or("the file holds no certificate")?;
    Ok(assess(&*verifier(roots)?, ee, rest, host, UnixTime::now()))
}

/// Trust anchors: the system's, plus any extra PEM files given.
pub fn roots(extra: &[std::path::PathBuf]) -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = store.add(c);
    }
    for p in extra {
        use rustls::pki_types::pem::PemObject;
        if let Ok(it) = CertificateDer::pem_file_iter(p) {
            for c in it.flatten() {
                let _ = store.add(c);
            }
        }
    }
    Arc::new(store)
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

const CLOSED: &str = "the server closed the connection";

pub struct Conn {
    /// None only while a STARTTLS upgrade is under way.
    stream: Option<Stream>,
    buf: Vec<u8>,
    pub tls: Option<(String, CertReport)>,
    timeout: Duration,
}

#[derive(Debug)]
pub enum ConnError {
    Refused,
    TimedOut,
    Other(String),
}

pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnError::TimedOut),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(ConnError::Refused),
        Ok(Err(e)) => Err(ConnError::Other(e.to_string())),
        Ok(Ok(s)) => Ok(s),
    }
}

impl Conn {
    pub fn plain(s: TcpStream, timeout: Duration) -> Conn {
        Conn {
            stream: Some(Stream::Plain(s)),
            buf: Vec::new(),
            tls: None,
            timeout,
        }
    }

    /// Whether the server sends something (a greeting) within `wait` without being asked.
    pub async fn talks_first(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut tmp = [0u8; 512];
        let r = match &mut self.stream {
            Some(Stream::Plain(s)) => tokio::time::timeout(wait, s.read(&mut tmp)).await,
            Some(Stream::Tls(s)) => tokio::time::timeout(wait, s.read(&mut tmp)).await,
            None => return false,
        };
        match r {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            _ => false,
        }
    }

    pub async fn start_tls(
        &mut self,
        host: &str,
        roots: Arc<rustls::RootCertStore>,
    ) -> Result<(), String> {
        let tcp = match self.stream.take() {
            Some(Stream::Plain(tcp)) => tcp,
            other => {
                self.stream = other;
                return Err("TLS is already on".into());
            }
        };
        let report = Arc::new(Mutex::new(CertReport::default()));
        let provider = postern_net::tls::provider();
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        let verifier = Arc::new(Recording {
            inner,
            report: report.clone(),
            host: host.to_string(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(
            self.timeout,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| "the TLS handshake got no answer".to_string())?
        .map_err(|e| e.to_string())?;
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .replace("TLSv1_", "TLS 1.");
        self.tls = Some((version, report.lock().unwrap().clone()));
        self.stream = Some(Stream::Tls(Box::new(tls)));
        self.buf.clear();
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut tmp = [0u8; 8192];
        let n = match &mut self.stream {
            Some(Stream::Plain(s)) => tokio::time::timeout(self.timeout, s.read(&mut tmp)).await,
            Some(Stream::Tls(s)) => tokio::time::timeout(self.timeout, s.read(&mut tmp)).await,
            None => return Err("the connection is gone".into()),
        }
        .map_err(|_| "the server stopped answering".to_string())?
        .map_err(|e| {
            // TLS peers that close without close_notify.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                CLOSED.to_string()
            } else {
                e.to_string()
            }
        })?;
        if n == 0 {
            return Err(CLOSED.into());
        }
        if self.buf.len() > 1 << 20 {
            return Err("the server sent too much".into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// Everything until the server closes the connection, at most `max` bytes.
    pub async fn read_all(&mut self, max: usize) -> Result<Vec<u8>, String> {
        loop {
            if self.buf.len() > max {
                return Err("the answer is too long".into());
            }
            match self.fill().await {
                Ok(()) => {}
                Err(e) if e == CLOSED => return Ok(std::mem::take(&mut self.buf)),
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=p).collect();
                return Ok(String::from_utf8_lossy(&l).trim_end().to_string());
            }
            self.fill().await?;
        }
    }

    pub async fn send(&mut self, s: &str) -> Result<(), String> {
        self.send_raw(format!("{s}\r\n").as_bytes()).await
    }

    pub async fn send_raw(&mut self, b: &[u8]) -> Result<(), String> {
        let r = match &mut self.stream {
            Some(Stream::Plain(x)) => x.write_all(b).await,
            Some(Stream::Tls(x)) => match x.write_all(b).await {
                Ok(()) => x.flush().await,
                Err(e) => Err(e),
            },
            None => return Err("the connection is gone".into()),
        };
        r.map_err(|e| e.to_string())
    }

    /// An SMTP reply: (code, lines).
    pub async fn smtp_reply(&mut self) -> Result<(u16, Vec<String>), String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await?;
            let code = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an SMTP reply: {l:?}"))?;
            let more = l.as_bytes().get(3) == Some(&b'-');
            lines.push(l.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok((code, lines));
            }
        }
    }

    /// An IMAP command's untagged lines and tagged status line.
    pub async fn imap(&mut self, tag: &str, cmd: &str) -> Result<(Vec<String>, String), String> {
        self.send(&format!("{tag} {cmd}")).await?;
        let mut untagged = Vec::new();
        loop {
            let l = self.line().await?;
            if l.starts_with(&format!("{tag} ")) {
                return Ok((untagged, l));
            }
            untagged.push(l);
        }
    }
}
