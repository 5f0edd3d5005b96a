//! Server certificates: the configured PEM pair and the ones ACME obtained, each served to the
//! names it covers (SNI); swapped in place on reload; generated when missing.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {msg}")]
    Cert { path: PathBuf, msg: String },
    #[error("cannot read private key {path}: {msg}")]
    Key { path: PathBuf, msg: String },
    #[error("certificate and key do not go together: {0}")]
    Mismatch(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// The ALPN protocol of the tls-alpn-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One certificate as served: its chain and key, and the names it covers.
#[derive(Clone)]
pub struct Served {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
    /// Where it came from (a file, or "generated").
    pub source: String,
}

#[derive(Default)]
struct CertSet {
    default: Option<Served>,
    /// Lower-case DNS names, "*.example.com" for wildcards.
    by_name: HashMap<String, Served>,
    all: Vec<Served>,
}

impl CertSet {
    fn find(&self, name: Option<&str>) -> Option<&Served> {
        if let Some(name) = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) {
            if let Some(s) = self.by_name.get(&name) {
                return Some(s);
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(s) = self.by_name.get(&format!("*.{parent}"))
            {
                return Some(s);
            }
        }
        self.default.as_ref()
    }
}

/// Challenge answers an ACME order has asked the CA to check (RFC 8555 8.3, RFC 8737).
#[derive(Default)]
pub struct Challenges {
    /// http-01: token -> key authorization.
    http: Mutex<HashMap<String, String>>,
    /// tls-alpn-01: name -> the self-signed certificate carrying the key authorization digest.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    pub fn set_http(&self, token: &str, key_authorization: &str) {
        self.http
            .lock()
            .unwrap()
            .insert(token.into(), key_authorization.into());
    }

    pub fn http(&self, token: &str) -> Option<String> {
        self.http.lock().unwrap().get(token).cloned()
    }

    /// A tls-alpn-01 answer for `name`: a certificate with the acmeIdentifier extension.
    pub fn set_alpn(&self, name: &str, digest: &[u8]) -> Result<(), TlsError> {
        let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(g)?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(g)?;
        let cert = params.self_signed(&key).map_err(g)?;
        let key_der = PrivateKeyDer::from(rustls_pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ));
        // Not `certified`: its key check parses the certificate, and refuses the critical
        // acmeIdentifier extension it does not know.
        let signer = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let ck = CertifiedKey::new(vec![cert.der().clone()], signer);
        self.alpn
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), Arc::new(ck));
        Ok(())
    }

    fn alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .lock()
            .unwrap()
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Forgets every answer (the order is over).
    pub fn clear(&self) {
        self.http.lock().unwrap().clear();
        self.alpn.lock().unwrap().clear();
    }
}

#[derive(Debug)]
struct Resolver(Arc<RwLock<Arc<CertSet>>>);

impl std::fmt::Debug for CertSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSet")
            .field("names", &self.by_name.keys())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.read().unwrap().clone();
        set.find(hello.server_name()).map(|s| s.key.clone())
    }
}

/// Where the certificates come from.
#[derive(Clone, Default)]
pub struct Sources {
    /// `[tls] cert` and `key`: the fallback.
    pub file: Option<(PathBuf, PathBuf)>,
    /// Directory of combined PEM files (key and chain) obtained by ACME.
    pub acme_certs: Option<PathBuf>,
    /// The name served to clients that send none, when no certificate is on file.
    pub hostname: String,
}

pub struct TlsStore {
    sources: Sources,
    certs: Arc<RwLock<Arc<CertSet>>>,
    config: Arc<ServerConfig>,
    challenges: Arc<Challenges>,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let ck = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(ck)
}

fn read_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: path.into(),
            msg: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: path.into(),
            msg: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn read(path: &Path, what: fn(PathBuf, String) -> TlsError) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| what(path.into(), e.to_string()))
}

fn served(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: String,
) -> Result<Served, TlsError> {
    let (names, not_after) = cert_names(&certs[0]);
    Ok(Served {
        key: Arc::new(certified(certs, key)?),
        names,
        not_after,
        source,
    })
}

/// A certificate and key in two PEM files.
fn load_pair(cert: &Path, key: &Path) -> Result<Served, TlsError> {
    let certs = read_chain(&read(cert, |path, msg| TlsError::Cert { path, msg })?, cert)?;
    let key_pem = read(key, |path, msg| TlsError::Key { path, msg })?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key.into(),
        msg: e.to_string(),
    })?;
    served(certs, key_der, cert.display().to_string())
}

/// A key and its chain in one PEM file (how ACME certificates are kept).
pub fn load_combined(path: &Path) -> Result<Served, TlsError> {
    let pem = read(path, |path, msg| TlsError::Cert { path, msg })?;
    let certs = read_chain(&pem, path)?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Key {
        path: path.into(),
        msg: e.to_string(),
    })?;
    served(certs, key_der, path.display().to_string())
}

/// The DNS names (subjectAltName) and notAfter of a certificate.
pub fn cert_names(der: &[u8]) -> (Vec<String>, i64) {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return (Vec::new(), 0);
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    (names, cert.validity().not_after.timestamp())
}

fn load_set(src: &Sources) -> Result<CertSet, TlsError> {
    let mut set = CertSet::default();
    let mut acme = Vec::new();
    if let Some(dir) = &src.acme_certs
        && let Ok(rd) = std::fs::read_dir(dir)
    {
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        paths.sort();
        for p in paths {
            // One bad file must not take the others (or the fallback) down.
            match load_combined(&p) {
                Ok(s) => acme.push(s),
                Err(e) => tracing::warn!(error = %e, "ACME certificate not loaded"),
            }
        }
    }
    let file = match &src.file {
        Some((c, k)) => Some(load_pair(c, k)?),
        None => None,
    };
    let host = src.hostname.to_ascii_lowercase();
    // Clients without SNI get the certificate for our own name.
    set.default = acme
        .iter()
        .find(|s| s.names.contains(&host))
        .cloned()
        .or_else(|| file.clone())
        .or_else(|| acme.first().cloned());
    if set.default.is_none() {
        let (c, k) = generate_self_signed(&host)?;
        let certs = read_chain(c.as_bytes(), Path::new("generated"))?;
        let key = PrivateKeyDer::from_pem_slice(k.as_bytes())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        set.default = Some(served(certs, key, "generated".into())?);
    }
    // ACME certificates win over the file for the names they cover.
    for s in file.iter().chain(acme.iter().rev()) {
        for n in &s.names {
            set.by_name.insert(n.clone(), s.clone());
        }
    }
    set.all = file.into_iter().chain(acme).collect();
    Ok(set)
}

impl TlsStore {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<TlsStore>, TlsError> {
        Self::open(Sources {
            file: Some((cert.into(), key.into())),
            ..Sources::default()
        })
    }

    pub fn open(sources: Sources) -> Result<Arc<TlsStore>, TlsError> {
        let certs = Arc::new(RwLock::new(Arc::new(load_set(&sources)?)));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(certs.clone())));
        // Mail protocols have no ALPN; small session cache keeps memory flat.
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        Ok(Arc::new(TlsStore {
            sources,
            certs,
            config: Arc::new(cfg),
            challenges: Arc::default(),
        }))
    }

    /// Re-reads the files; on error the old certificates stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let set = load_set(&self.sources)?;
        *self.certs.write().unwrap() = Arc::new(set);
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The configured certificate file, or the ACME directory.
    pub fn cert_path(&self) -> &Path {
        match (&self.sources.file, &self.sources.acme_certs) {
            (Some((c, _)), _) => c,
            (None, Some(d)) => d,
            (None, None) => Path::new("generated"),
        }
    }

    /// Every certificate served, the default first.
    pub fn served(&self) -> Vec<Served> {
        let set = self.certs.read().unwrap().clone();
        let mut v: Vec<Served> = set.default.iter().cloned().collect();
        for s in &set.all {
            if !v.iter().any(|d| Arc::ptr_eq(&d.key, &s.key)) {
                v.push(s.clone());
            }
        }
        v
    }

    /// The certificate a client asking for `name` gets.
    pub fn served_for(&self, name: &str) -> Option<Served> {
        self.certs.read().unwrap().find(Some(name)).cloned()
    }

    pub fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    /// The HTTPS handshake: like [`acceptor`](Self::acceptor), except that a CA checking a
    /// tls-alpn-01 challenge gets its answer, and then the connection ends (`None`).
    pub async fn accept_https<S>(&self, stream: S) -> io::Result<Option<TlsStream<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        let wants_acme = hello
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
        let answer = match (wants_acme, hello.server_name()) {
            (true, Some(name)) => self.challenges.alpn(name),
            _ => None,
        };
        let Some(ck) = answer else {
            return start.into_stream(self.config.clone()).await.map(Some);
        };
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(ck)));
        cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        let mut s = start.into_stream(Arc::new(cfg)).await?;
        let _ = s.shutdown().await;
        Ok(None)
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A self-signed certificate and key (PEM) for `hostname`, valid for ten years.
pub fn generate_self_signed(hostname: &str) -> Result<(String, String), TlsError> {
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}
