//! MTA-STS (RFC 8461): a domain without DANE may publish, over HTTPS, which MX hosts are its own
//! and that mail to them must go over TLS with a certificate valid for their names. Policies are
//! cached (in memory and in `DATA_DIR/mta-sts.json`) for their max_age, so an attacker who hides
//! the DNS record or the web server later cannot switch the policy off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tracing::{info, warn};

/// RFC 8461 3.2: policies are small; max_age is at most a year.
const MAX_POLICY: usize = 64 * 1024;
const MAX_AGE: u64 = 31_557_600;
/// Domains whose policy we keep; the oldest go first beyond this.
const MAX_CACHED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    pub mx: Vec<String>,
    pub max_age: u64,
}

impl Policy {
    /// Whether the policy names `host` as an MX (exactly, or as `*.parent` for one label).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| {
            let p = p.trim_end_matches('.').to_ascii_lowercase();
            match p.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => p == host,
            }
        })
    }
}

/// Parses a policy file (RFC 8461 3.2).
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("the line {line:?} is not \"key: value\""));
        };
        let v = v.trim();
        match k.trim() {
            "version" => version = Some(v.to_string()),
            "mode" => {
                mode = Some(match v {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(format!("unknown mode {v:?}")),
                })
            }
            "max_age" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("max_age {v:?} is not a number"))?;
                max_age = Some(n.min(MAX_AGE));
            }
            "mx" => mx.push(v.to_ascii_lowercase()),
            _ => {} // Other keys are for extensions.
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("it has no \"version: STSv1\"".into());
    }
    let mode = mode.ok_or("it has no mode")?;
    let max_age = max_age.ok_or("it has no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("it lists no mx".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// The policy id of the `_mta-sts` TXT records, when exactly one is an STSv1 record.
pub fn parse_txt(records: &[String]) -> Option<String> {
    // "v=STSv1", then fields separated by ";" with optional blanks around it.
    let sts: Vec<&String> = records
        .iter()
        .filter(|r| r.split(';').next().map(str::trim) == Some("v=STSv1"))
        .collect();
    if sts.len() != 1 {
        return None;
    }
    sts[0].split(';').find_map(|f| {
        let (k, v) = f.trim().split_once('=')?;
        let v = v.trim();
        (k.trim() == "id"
            && !v.is_empty()
            && v.len() <= 32
            && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| v.to_string())
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    id: String,
    policy: Policy,
    /// Unix time after which the policy no longer applies.
    expires: i64,
    /// When it was last fetched: it is fetched again daily, so it never lapses while the
    /// domain keeps publishing it (RFC 8461 5.1).
    #[serde(default)]
    fetched: i64,
}

/// How often a cached policy is fetched again even when its id is unchanged.
const REFRESH: i64 = 86400;

pub struct MtaSts {
    resolver: TokioResolver,
    roots: Arc<RootCertStore>,
    port: u16,
    timeout: Duration,
    path: Option<PathBuf>,
    cache: Mutex<HashMap<String, Cached>>,
    write_lock: Arc<Mutex<()>>,
}

/// The system's certificate authorities, and those of `ca_file` (PEM) when set.
pub fn roots(ca_file: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if !ca_file.is_empty() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("delivery.ca_file {ca_file}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("delivery.ca_file {ca_file}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("delivery.ca_file {ca_file} holds no certificate"));
        }
        roots.add_parsable_certificates(certs);
    } else if added == 0 {
        warn!("no system certificate authorities found: MTA-STS policies cannot be fetched");
    }
    Ok(roots)
}

impl MtaSts {
    pub fn new(
        resolver: TokioResolver,
        roots: Arc<RootCertStore>,
        port: u16,
        timeout: Duration,
        path: Option<PathBuf>,
    ) -> MtaSts {
        let cache = match path.as_ref().map(std::fs::read) {
            Some(Ok(b)) => {
                serde_json::from_slice::<HashMap<String, Cached>>(&b).unwrap_or_else(|e| {
                    warn!(error = %e, "the kept MTA-STS policies are unreadable; starting afresh");
                    HashMap::new()
                })
            }
            _ => HashMap::new(),
        };
        MtaSts {
            resolver,
            roots,
            port,
            timeout,
            path,
            cache: Mutex::new(cache),
            write_lock: Arc::new(Mutex::new(())),
        }
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The policy that applies to mail for `domain` now, if any.
    pub async fn policy(&self, domain: &str) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = postern_store::now();
        let cached = self
            .cache
            .lock()
            .unwrap()
            .get(&domain)
            .filter(|c| c.expires > now)
            .cloned();
        let fqdn = format!("_mta-sts.{domain}.");
        let id = crate::route::txt_records(&self.resolver, &fqdn)
            .await
            .and_then(|texts| parse_txt(&texts));
        // No record now: a cached policy still holds until it expires (RFC 8461 5.1).
        let Some(id) = id else {
            return cached.map(|c| c.policy);
        };
        if let Some(c) = &cached
            && c.id == id
            && now - c.fetched < REFRESH
        {
            return Some(c.policy.clone());
        }
        match tokio::time::timeout(self.timeout, self.fetch(&domain)).await {
            Ok(Ok(policy)) => {
                info!(%domain, %id, mode = ?policy.mode, "MTA-STS policy fetched");
                self.remember(&domain, id, policy.clone(), now);
                Some(policy)
            }
            Ok(Err(e)) => {
                warn!(%domain, error = %e, "MTA-STS policy not fetched");
                cached.map(|c| c.policy)
            }
            Err(_) => {
                warn!(%domain, "MTA-STS policy not fetched in time");
                cached.map(|c| c.policy)
            }
        }
    }

    fn remember(&self, domain: &str, id: String, policy: Policy, now: i64) {
        let snapshot = {
            let mut cache = self.cache.lock().unwrap();
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHED
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.expires)
                    .map(|(d, _)| d.clone())
            {
                cache.remove(&oldest);
            }
            let expires = now + policy.max_age as i64;
            cache.insert(
                domain.to_string(),
                Cached {
                    id,
                    policy,
                    expires,
                    fetched: now,
                },
            );
            serde_json::to_vec(&*cache).ok()
        };
        if let (Some(path), Some(bytes)) = (self.path.clone(), snapshot) {
            // One writer at a time, off the async threads; each through its own temporary file.
            let lock = self.write_lock.clone();
            tokio::task::spawn_blocking(move || {
                let _one = lock.lock().unwrap();
                let tmp = path.with_extension(format!("json.{}", rand::random::<u32>()));
                let written =
                    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    warn!(path = %path.display(), error = %e, "cannot keep MTA-STS policies");
                }
            });
        }
    }

    /// GET https://mta-sts.<domain>/.well-known/mta-sts.txt: a certificate valid for that name,
    /// status 200 (no redirects), text/plain, at most 64 KB (RFC 8461 3.3).
    async fn fetch(&self, domain: &str) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let ips = self
            .resolver
            .lookup_ip(format!("{host}.").as_str())
            .await
            .map_err(|e| format!("looking up {host}: {e}"))?;
        let mut last = format!("{host} has no address");
        let addrs: Vec<std::net::IpAddr> = ips.iter().collect();
        // Each address gets its share of the time, so one that drops packets leaves some.
        let share = self.timeout / addrs.len().max(1) as u32;
        for ip in addrs {
            match tokio::time::timeout(share, self.fetch_from(&host, ip)).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("{host}[{ip}] did not answer in time"),
            }
        }
        Err(last)
    }

    async fn fetch_from(&self, host: &str, ip: std::net::IpAddr) -> Result<Policy, String> {
        let tcp = TcpStream::connect((ip, self.port))
            .await
            .map_err(|e| format!("connecting to {host}[{ip}]: {e}"))?;
        let config = rustls::ClientConfig::builder_with_provider(postern_net::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP with {host}: {e}"))?;
        tokio::spawn(tokio::time::timeout(self.timeout, conn));
        let req = hyper::Request::get("/.well-known/mta-sts.txt")
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "postern")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP with {host}: {e}"))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!("{host} answered {} for the policy", resp.status()));
        }
        let text_plain = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/plain"));
        if !text_plain {
            return Err(format!("{host} served the policy without text/plain"));
        }
        let body = Limited::new(resp.into_body(), MAX_POLICY)
            .collect()
            .await
            .map_err(|e| format!("reading the policy from {host}: {e}"))?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| "the policy is not UTF-8".to_string())?;
        parse_policy(text).map_err(|e| {
            format!(
                "the policy of {domain} is invalid: {e}",
                domain = host.trim_start_matches("mta-sts.")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_rfc_8461_says() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert!(p.allows("mail.example.com."));
        assert!(p.allows("MX1.example.net"));
        assert!(!p.allows("a.b.example.net"));
        assert!(!p.allows("example.net"));
        assert!(!p.allows("evil.example.com"));
        assert!(parse_policy("mode: enforce\nmx: a\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n").is_err());
        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n").unwrap();
        assert_eq!(none.max_age, MAX_AGE);
    }

    #[test]
    fn only_one_sts_record_counts() {
        let t = |v: &[&str]| parse_txt(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            t(&["v=STSv1; id=20160831085700Z;"]).as_deref(),
            Some("20160831085700Z")
        );
        assert_eq!(
            t(&["v=spf1 -all", "v=STSv1; id=abc"]).as_deref(),
            Some("abc")
        );
        assert_eq!(t(&["v=STSv1; id=a", "v=STSv1; id=b"]), None);
        assert_eq!(t(&["v=STSv1; id=bad-id"]), None);
        assert_eq!(t(&["v=STSv2; id=a"]), None);
        assert_eq!(t(&["v=STSv1 ; id=abc ;"]).as_deref(), Some("abc"));
    }
}
