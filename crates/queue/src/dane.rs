//! DANE for SMTP (RFC 7672): a host whose TLSA records are DNSSEC-authentic must present a
//! certificate that matches one of them, over TLS that cannot be skipped. DANE-EE(3) matches
//! the server's own certificate or key, names and dates aside; DANE-TA(2) names a trust anchor
//! that must issue a chain valid for the host's name. PKIX usages (0, 1) do not apply to SMTP.

use std::sync::Arc;

use ring::digest;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// One TLSA record (RFC 6698 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether RFC 7672 3.1 lets SMTP use it: DANE-TA or DANE-EE, a known selector and match.
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// Whether `cert` (DER) is the certificate or key this record names.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let part = match self.selector {
            0 => cert,
            1 => match spki(cert) {
                Some(s) => s,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => part == self.data.as_slice(),
            1 => digest::digest(&digest::SHA256, part).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, part).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

pub use postern_net::der::spki;

/// Accepts the certificate chain that matches one of the records (RFC 7672 3.1).
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    /// Names a DANE-TA chain may be issued to: the MX host, then the destination domain.
    names: Vec<String>,
}

impl DaneVerifier {
    pub fn new(records: Vec<Tlsa>, names: Vec<String>) -> DaneVerifier {
        DaneVerifier { records, names }
    }

    fn chain_to_anchor(
        &self,
        anchor: CertificateDer<'static>,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let mut roots = RootCertStore::empty();
        if roots.add(anchor).is_err() {
            return false;
        }
        let Ok(v) = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            postern_net::tls::provider(),
        )
        .build() else {
            return false;
        };
        self.names.iter().any(|n| {
            ServerName::try_from(n.clone()).is_ok_and(|name| {
                v.verify_server_cert(end, intermediates, &name, &[], now)
                    .is_ok()
            })
        })
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let usable: Vec<&Tlsa> = self.records.iter().filter(|r| r.usable()).collect();
        // TLSA records, none of them usable: encrypt, authenticate nothing (RFC 7672 2.2).
        if usable.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        if usable.iter().any(|r| r.usage == 3 && r.matches(end)) {
            return Ok(ServerCertVerified::assertion());
        }
        for r in usable.iter().filter(|r| r.usage == 2) {
            // The anchor is in the chain the server sent, or whole in the record (2 0 0).
            let mut anchors: Vec<CertificateDer<'static>> = intermediates
                .iter()
                .filter(|c| r.matches(c))
                .map(|c| c.clone().into_owned())
                .collect();
            if r.selector == 0 && r.matching == 0 {
                anchors.push(CertificateDer::from(r.data.clone()));
            }
            for a in anchors {
                if self.chain_to_anchor(a, end, intermediates, now) {
                    return Ok(ServerCertVerified::assertion());
                }
            }
        }
        Err(rustls::Error::General(
            "its certificate matches none of its DANE TLSA records".into(),
        ))
    }

    // The handshake's signatures are checked as for any certificate.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::client::AnyCertificate.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::client::AnyCertificate.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::client::AnyCertificate.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    fn cert() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["mx.example".to_string()]).unwrap();
        let c = params.self_signed(&key).unwrap();
        (c.der().to_vec(), key.subject_public_key_info())
    }

    #[test]
    fn spki_is_found_in_a_certificate() {
        let (der, public) = cert();
        assert_eq!(spki(&der), Some(public.as_slice()));
        assert_eq!(spki(&der[..der.len() / 2]), None);
        assert_eq!(spki(b"\x30\x80"), None);
    }

    #[test]
    fn records_match_by_selector_and_matching_type() {
        let (der, public) = cert();
        let (other, _) = cert();
        let sha256 = |b: &[u8]| digest::digest(&digest::SHA256, b).as_ref().to_vec();
        let sha512 = |b: &[u8]| digest::digest(&digest::SHA512, b).as_ref().to_vec();
        let r = |selector, matching, data| Tlsa {
            usage: 3,
            selector,
            matching,
            data,
        };
        assert!(r(1, 1, sha256(&public)).matches(&der));
        assert!(r(0, 1, sha256(&der)).matches(&der));
        assert!(r(1, 2, sha512(&public)).matches(&der));
        assert!(r(0, 0, der.clone()).matches(&der));
        assert!(!r(1, 1, sha256(&public)).matches(&other));
        assert!(!r(0, 1, sha256(&public)).matches(&der));
        assert!(
            !Tlsa {
                usage: 1,
                ..r(1, 1, sha256(&public))
            }
            .usable()
        );
    }
}
