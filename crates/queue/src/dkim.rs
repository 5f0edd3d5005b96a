//! DKIM signing (RFC 6376) of mail from our domains, with the keys `postern init` and
//! `postern dkim rotate` write to `DATA_DIR/dkim/DOMAIN.SELECTOR.pem`. The newest selector of a
//! domain signs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// A ready signer per domain (mail-auth's signers own their key).
enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

struct DomainKey {
    selector: String,
    signer: Signer,
}

/// The headers we sign (RFC 6376 5.4.1), each once.
const SIGNED: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

#[derive(Default)]
pub struct DkimKeys {
    keys: RwLock<HashMap<String, Arc<DomainKey>>>,
}

impl DkimKeys {
    /// Reads every key in `dir`; for each domain the selector that sorts last wins (selectors
    /// are dated, so that is the newest).
    pub fn load(dir: &Path) -> DkimKeys {
        let k = DkimKeys::default();
        k.reload(dir);
        k
    }

    pub fn reload(&self, dir: &Path) {
        let mut found: HashMap<String, (String, Key)> = HashMap::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            *self.keys.write().unwrap() = HashMap::new();
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".pem") else {
                continue;
            };
            let Some((domain, selector)) = stem.rsplit_once('.') else {
                continue;
            };
            let Ok(pem) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Some(der) = pem_der(&pem) else { continue };
            let rsa = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(
                PrivatePkcs8KeyDer::from(der.as_slice()),
            ));
            let key = match rsa {
                Ok(k) => Key::Rsa(k),
                Err(_) => match Ed25519Key::from_pkcs8_der(&der) {
                    Ok(k) => Key::Ed25519(k),
                    Err(_) => {
                        tracing::warn!(file = %e.path().display(), "unreadable DKIM key; skipped");
                        continue;
                    }
                },
            };
            let newer = found.get(domain).is_none_or(|(s, _)| selector > s.as_str());
            if newer {
                found.insert(domain.to_string(), (selector.to_string(), key));
            }
        }
        let map = found
            .into_iter()
            .map(|(d, (selector, key))| {
                let signer = match key {
                    Key::Rsa(k) => Signer::Rsa(
                        DkimSigner::from_key(k)
                            .domain(d.as_str())
                            .selector(selector.as_str())
                            .headers(SIGNED),
                    ),
                    Key::Ed25519(k) => Signer::Ed25519(
                        DkimSigner::from_key(k)
                            .domain(d.as_str())
                            .selector(selector.as_str())
                            .headers(SIGNED),
                    ),
                };
                (d, Arc::new(DomainKey { selector, signer }))
            })
            .collect();
        *self.keys.write().unwrap() = map;
    }

    pub fn selector(&self, domain: &str) -> Option<String> {
        self.keys
            .read()
            .unwrap()
            .get(domain)
            .map(|k| k.selector.clone())
    }

    /// A `DKIM-Signature:` header (with CRLF) for `message`, signed for `domain`, if we hold
    /// its key.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Option<String> {
        let k = self.keys.read().unwrap().get(domain).cloned()?;
        let sig = match &k.signer {
            Signer::Rsa(s) => s.sign(message),
            Signer::Ed25519(s) => s.sign(message),
        };
        match sig {
            Ok(s) => Some(s.to_header()),
            Err(e) => {
                tracing::warn!(error = %e, %domain, "DKIM signing failed; sending unsigned");
                None
            }
        }
    }
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The domain of the From header (the one DMARC aligns with), from a message's header.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..end]);
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if line
                    .get(..5)
                    .is_some_and(|n| n.eq_ignore_ascii_case("from:"))
                {
                    value = Some(line[5..].to_string());
                }
            }
        }
    }
    let addrs = postern_message::address::parse_list(&value?);
    let a = addrs.into_iter().find(|a| a.host.is_some())?;
    Some(a.host?.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_header_domain() {
        assert_eq!(
            from_domain(
                b"To: x@y.test\r\nFrom: \"A\"\r\n <a@Example.TEST>\r\n\r\nFrom: b@c.test\r\n"
            )
            .as_deref(),
            Some("example.test")
        );
        assert_eq!(from_domain(b"Subject: x\r\n\r\n"), None);
    }
}
