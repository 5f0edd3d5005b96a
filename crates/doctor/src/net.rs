//! Name lookups and connections as the checks need them: the system's resolver or given
//! nameservers, and the trust anchors to judge certificates by.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::probe::{self, Conn, ConnError};

pub struct Net {
    /// None: the system's resolver (which also reads /etc/hosts).
    resolver: Option<TokioResolver>,
    /// For SRV and TXT, which getaddrinfo cannot ask.
    records: Option<TokioResolver>,
    pub roots: Arc<rustls::RootCertStore>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum LookupError {
    /// NXDOMAIN, or a name with no address.
    NoSuchName,
    Failed(String),
}

impl Net {
    pub fn new(
        nameservers: &[String],
        extra_roots: &[std::path::PathBuf],
        timeout: Duration,
    ) -> Result<Net, String> {
        let resolver = if nameservers.is_empty() {
            None
        } else {
            Some(postern_queue::route::resolver(nameservers)?)
        };
        let records = match &resolver {
            Some(r) => Some(r.clone()),
            None => postern_queue::route::resolver(&[]).ok(),
        };
        Ok(Net {
            resolver,
            records,
            roots: probe::roots(extra_roots),
            timeout,
        })
    }

    /// The same, with a shorter timeout for probing.
    pub fn quick(&self, timeout: Duration) -> Net {
        Net {
            resolver: self.resolver.clone(),
            records: self.records.clone(),
            roots: self.roots.clone(),
            timeout: timeout.min(self.timeout),
        }
    }

    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let host = host.trim_end_matches('.');
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        match &self.resolver {
            Some(r) => match r.lookup_ip(format!("{host}.").as_str()).await {
                Ok(l) => {
                    let v: Vec<IpAddr> = l.iter().collect();
                    if v.is_empty() {
                        Err(LookupError::NoSuchName)
                    } else {
                        Ok(v)
                    }
                }
                Err(e) if no_such(&e) => Err(LookupError::NoSuchName),
                Err(e) => Err(LookupError::Failed(e.to_string())),
            },
            None => match tokio::net::lookup_host((host, 0)).await {
                Ok(it) => {
                    let mut v: Vec<IpAddr> = Vec::new();
                    for a in it {
                        if !v.contains(&a.ip()) {
                            v.push(a.ip());
                        }
                    }
                    if v.is_empty() {
                        Err(LookupError::NoSuchName)
                    } else {
                        Ok(v)
                    }
                }
                Err(e) if no_such(&e) => Err(LookupError::NoSuchName),
                Err(e) => Err(LookupError::Failed(e.to_string())),
            },
        }
    }

    /// SRV records, best first: (target, port). An empty list when there are none; a target
    /// of "." (service not offered) is left out.
    pub async fn srv(&self, name: &str) -> Vec<(String, u16)> {
        let Some(r) = &self.records else {
            return Vec::new();
        };
        let Ok(l) = r.lookup(format!("{name}.").as_str(), RecordType::SRV).await else {
            return Vec::new();
        };
        let mut v: Vec<(u16, u16, String, u16)> = l
            .answers()
            .iter()
            .filter_map(|a| match &a.data {
                RData::SRV(s) => Some((
                    s.priority,
                    u16::MAX - s.weight,
                    s.target
                        .to_utf8()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                    s.port,
                )),
                _ => None,
            })
            .filter(|(_, _, t, _)| !t.is_empty())
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, t, p)| (t, p)).collect()
    }

    /// A connection to the first address of `host` that answers on `port`.
    pub async fn connect(&self, addrs: &[IpAddr], port: u16) -> Result<Conn, ConnError> {
        let mut first_err = None;
        for ip in addrs {
            match probe::tcp(SocketAddr::new(*ip, port), self.timeout).await {
                Ok(s) => return Ok(Conn::plain(s, self.timeout)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(ConnError::Other("no address".into())))
    }
}

fn no_such(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("nxdomain")
        || s.contains("no such domain")
        || s.contains("does not exist")
        || s.contains("no record")
        || s.contains("not known")
        || s.contains("no address")
        || s.contains("noerror")
}

pub use postern_queue::route::txt_records;

/// A DNS name as we compare names: without the root's dot, in lower case.
pub fn bare_name(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}
