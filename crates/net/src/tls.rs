//! Server certificates: loaded from PEM, swapped in place on reload, generated when missing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

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

pub struct TlsStore {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            msg: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            msg: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.into(),
            msg: "no certificate in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        msg: e.to_string(),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    // Mail protocols have no ALPN; small session cache keeps memory flat.
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    Ok(Arc::new(cfg))
}

impl TlsStore {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<TlsStore>, TlsError> {
        let config = load(cert, key)?;
        Ok(Arc::new(TlsStore {
            cert: cert.into(),
            key: key.into(),
            config: RwLock::new(config),
        }))
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let c = load(&self.cert, &self.key)?;
        *self.config.write().unwrap() = c;
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap().clone())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
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
