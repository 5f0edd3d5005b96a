//! `[acme]`: certificates obtained from an ACME certificate authority (RFC 8555), such as
//! Let's Encrypt, and renewed by the server itself.

use serde::Deserialize;

use crate::Seconds;

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    pub enabled: bool,
    /// The CA's directory URL.
    pub directory: String,
    /// Where the CA writes about expiring certificates ("mailto:" optional).
    pub contact: String,
    /// Names to get certificates for; empty: the hostname, and autoconfig., autodiscover. and
    /// mta-sts. of every local domain.
    pub domains: Vec<String>,
    /// "tls-alpn-01" (the https listener) or "http-01" (the http listener).
    pub challenge: String,
    /// An extra root certificate (PEM) trusted for the CA's directory, for test CAs.
    pub ca_file: String,
    /// Names are requested only when their A/AAAA records lead to this server.
    pub check_dns: bool,
    /// Least pause between two failed orders; doubled each time, up to a day.
    pub retry_min: Seconds,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            enabled: false,
            directory: LETS_ENCRYPT.into(),
            contact: String::new(),
            domains: Vec::new(),
            challenge: "tls-alpn-01".into(),
            ca_file: String::new(),
            check_dns: true,
            retry_min: Seconds(60),
        }
    }
}

impl Acme {
    pub(crate) fn validate(&self, https: bool, http: bool) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if !self.directory.starts_with("https://") {
            return Err(format!(
                "acme.directory {:?} must be an https:// URL (Let's Encrypt: {LETS_ENCRYPT})",
                self.directory
            ));
        }
        match self.challenge.as_str() {
            "tls-alpn-01" if !https => {
                return Err("acme.challenge \"tls-alpn-01\" needs the https listener (listen.https, port 443 as the CA sees it); turn it on or use \"http-01\"".into());
            }
            "http-01" if !http => {
                return Err("acme.challenge \"http-01\" needs the http listener (listen.http, port 80 as the CA sees it); turn it on or use \"tls-alpn-01\"".into());
            }
            "tls-alpn-01" | "http-01" => {}
            other => {
                return Err(format!(
                    "acme.challenge {other:?} is unknown; use \"tls-alpn-01\" or \"http-01\""
                ));
            }
        }
        for d in &self.domains {
            if !crate::is_hostname(d) || !d.contains('.') {
                return Err(format!("acme.domains: {d:?} is not a host name"));
            }
        }
        let contact = self
            .contact
            .strip_prefix("mailto:")
            .unwrap_or(&self.contact);
        if !contact.is_empty() && !contact.contains('@') {
            return Err(format!(
                "acme.contact {:?} is not an email address",
                self.contact
            ));
        }
        if self.retry_min.0 == 0 {
            return Err("acme.retry_min must be at least 1s".into());
        }
        Ok(())
    }

    /// The contact as the CA takes it.
    pub fn contact_url(&self) -> Option<String> {
        let c = self
            .contact
            .strip_prefix("mailto:")
            .unwrap_or(&self.contact);
        (!c.is_empty()).then(|| format!("mailto:{c}"))
    }
}

/// The `[acme]` section `init` writes.
pub(crate) fn render(enabled: bool) -> String {
    format!(
        r#"[acme]
# Certificates from an ACME CA (Let's Encrypt), obtained and renewed by the server itself;
# [tls] cert/key stay the fallback until the first one is issued.
enabled = {enabled}
directory = "{LETS_ENCRYPT}"
# staging (untrusted certificates, generous limits): "{LETS_ENCRYPT_STAGING}"
contact = ""             # an email address for the CA's expiry notices
domains = []             # empty: hostname + autoconfig., autodiscover., mta-sts. of each local domain
challenge = "tls-alpn-01"  # on the https listener; or "http-01" on the http listener
ca_file = ""             # an extra root for reaching the directory (test CAs)
check_dns = true         # request only names whose A/AAAA records lead to this server
retry_min = "1m"         # pause after a failed order, doubled each time up to a day
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_the_listener_its_challenge_uses() {
        let a = Acme {
            enabled: true,
            ..Acme::default()
        };
        assert!(a.validate(true, false).is_ok());
        assert!(
            a.validate(false, true)
                .unwrap_err()
                .contains("https listener")
        );
        let h = Acme {
            challenge: "http-01".into(),
            ..a.clone()
        };
        assert!(h.validate(false, true).is_ok());
        assert!(h.validate(true, false).is_err());
        let bad = Acme {
            directory: "http://ca.example/dir".into(),
            ..a.clone()
        };
        assert!(bad.validate(true, true).is_err());
        let c = Acme {
            contact: "mailto:ops@example.com".into(),
            ..a
        };
        assert_eq!(c.contact_url().as_deref(), Some("mailto:ops@example.com"));
        // Off: nothing is checked.
        assert!(Acme::default().validate(false, false).is_ok());
    }
}
