//! The certificates' private key, kept across renewals so a `TLSA 3 1 1` record stays true,
//! and the next one during a rollover.

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::PublicKeyData;

use crate::files::write_atomic;
use crate::state::acme_dir;

fn key_path(data_dir: &Path) -> PathBuf {
    acme_dir(data_dir).join("key.pem")
}

fn next_key_path(data_dir: &Path) -> PathBuf {
    acme_dir(data_dir).join("next-key.pem")
}

fn generate() -> Result<rcgen::KeyPair, String> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())
}

fn read(path: &Path) -> Option<rcgen::KeyPair> {
    let pem = std::fs::read_to_string(path).ok()?;
    rcgen::KeyPair::from_pem(&pem).ok()
}

/// The key certificates are issued for; made on first use.
pub fn current(data_dir: &Path) -> Result<rcgen::KeyPair, String> {
    let path = key_path(data_dir);
    if let Some(k) = read(&path) {
        return Ok(k);
    }
    if path.exists() {
        return Err(format!("{} is not a PEM private key", path.display()));
    }
    let k = generate()?;
    write_atomic(&path, k.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(k)
}

/// The key waiting in a rollover, if any.
pub fn next(data_dir: &Path) -> Option<rcgen::KeyPair> {
    read(&next_key_path(data_dir))
}

/// Step one of a rollover: a new key, whose TLSA record is published beside the current one.
pub fn make_next(data_dir: &Path) -> Result<rcgen::KeyPair, String> {
    if let Some(k) = next(data_dir) {
        return Ok(k);
    }
    let k = generate()?;
    let path = next_key_path(data_dir);
    write_atomic(&path, k.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(k)
}

/// Step two, once certificates for the next key are on file: it becomes the key.
pub fn promote_next(data_dir: &Path) -> Result<(), String> {
    std::fs::rename(next_key_path(data_dir), key_path(data_dir)).map_err(|e| e.to_string())
}

/// `TLSA 3 1 1` data: SHA-256 of the key's SubjectPublicKeyInfo, in hex.
pub fn tlsa_311(key: &rcgen::KeyPair) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The TLSA data of the current and the next key, as `postern dns` prints them; none when
/// ACME has made no key yet.
pub fn tlsa_records(data_dir: &Path) -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    if let Some(k) = read(&key_path(data_dir)) {
        v.push((tlsa_311(&k), "current"));
    }
    if let Some(k) = next(data_dir) {
        v.push((tlsa_311(&k), "next"));
    }
    v
}

/// For logs: a short fingerprint of a key.
pub fn short_id(key: &rcgen::KeyPair) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..6])
}
