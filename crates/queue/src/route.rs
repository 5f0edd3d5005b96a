//! Where mail for a domain goes: its MX hosts in preference order (equal preferences shuffled),
//! the domain itself when it has no MX (RFC 5321 5.1), nowhere for a null MX (RFC 7505), or a
//! smarthost for everything.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The domain says it takes no mail, or does not exist: bounce now.
    Permanent(String),
    /// DNS trouble: try later.
    Temporary(String),
}

pub struct Router {
    resolver: TokioResolver,
    port: u16,
}

/// A resolver that asks `nameservers` ("ip" or "ip:port"), or the system's when there are none.
pub fn resolver(nameservers: &[String]) -> Result<TokioResolver, String> {
    build_resolver(nameservers, true, std::time::Duration::from_secs(5))
}

/// [`resolver`] whose queries give up after `timeout` (twice).
pub fn resolver_with_timeout(
    nameservers: &[String],
    timeout: std::time::Duration,
) -> Result<TokioResolver, String> {
    build_resolver(nameservers, true, timeout)
}

/// The same, never answering from /etc/hosts: what the rest of the internet sees.
pub fn public_resolver(nameservers: &[String]) -> Result<TokioResolver, String> {
    build_resolver(nameservers, false, std::time::Duration::from_secs(5))
}

fn build_resolver(
    nameservers: &[String],
    hosts_file: bool,
    timeout: std::time::Duration,
) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let builder = if nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| format!("system resolver: {e}"))?
    } else {
        let mut servers = Vec::new();
        for ns in nameservers {
            let addr: SocketAddr = ns
                .parse()
                .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("bad nameserver {ns:?}"))?;
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            servers.push(NameServerConfig::new(addr.ip(), true, vec![udp, tcp]));
        }
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 2;
    if !hosts_file {
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    }
    builder
        .with_options(opts)
        .build()
        .map_err(|e| e.to_string())
}

fn is_nxdomain(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("nxdomain") || s.contains("no such domain") || s.contains("domain does not exist")
}

fn is_no_records(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("no record")
        || s.contains("no records found")
        || s.contains("noerror")
        || is_nxdomain(e)
}

impl Router {
    pub fn new(resolver: TokioResolver, port: u16) -> Arc<Router> {
        Arc::new(Router { resolver, port })
    }

    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }

    async fn addrs(&self, host: &str) -> Result<Vec<SocketAddr>, RouteError> {
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(l) => {
                let mut v: Vec<SocketAddr> =
                    l.iter().map(|ip| SocketAddr::new(ip, self.port)).collect();
                // IPv6 first when the host has both (RFC 6724 order is the resolver's), then IPv4.
                v.sort_by_key(|a| !a.is_ipv6());
                Ok(v)
            }
            Err(e) if is_no_records(&e) => Ok(Vec::new()),
            Err(e) => Err(RouteError::Temporary(format!("looking up {host}: {e}"))),
        }
    }

    /// The hosts to try for `domain`, best first.
    pub async fn route(&self, domain: &str) -> Result<Vec<Host>, RouteError> {
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip: IpAddr = lit
                .trim_start_matches("IPv6:")
                .parse()
                .map_err(|_| RouteError::Permanent(format!("bad address literal {domain}")))?;
            return Ok(vec![Host {
                name: domain.to_string(),
                addrs: vec![SocketAddr::new(ip, self.port)],
            }]);
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mx = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::MX(mx) => {
                        Some((mx.preference, mx.exchange.to_utf8()))
                    }
                    _ => None,
                })
                .collect::<Vec<(u16, String)>>(),
            Err(e) if is_nxdomain(&e) => {
                return Err(RouteError::Permanent(format!(
                    "the domain {domain} does not exist"
                )));
            }
            Err(e) if is_no_records(&e) => Vec::new(),
            Err(e) => {
                return Err(RouteError::Temporary(format!(
                    "looking up the MX of {domain}: {e}"
                )));
            }
        };
        if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
            return Err(RouteError::Permanent(format!(
                "{domain} publishes a null MX: it accepts no mail (RFC 7505)"
            )));
        }
        let mut names: Vec<(u16, String)> = mx
            .into_iter()
            .filter(|(_, h)| h != "." && !h.is_empty())
            .map(|(p, h)| (p, h.trim_end_matches('.').to_string()))
            .collect();
        if names.is_empty() {
            // No MX: the domain itself is the host (RFC 5321 5.1).
            names.push((0, domain.to_string()));
        }
        shuffle_equal(&mut names);
        let mut hosts = Vec::new();
        let mut last_err = None;
        for (_, name) in names {
            match self.addrs(&name).await {
                Ok(addrs) if !addrs.is_empty() => hosts.push(Host { name, addrs }),
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            }
        }
        if hosts.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                RouteError::Permanent(format!(
                    "no mail server for {domain}: its MX hosts have no address"
                ))
            }));
        }
        Ok(hosts)
    }

    /// A smarthost given as "host:port" (or "host").
    pub async fn smarthost(&self, spec: &str) -> Result<Vec<Host>, RouteError> {
        let (host, port) = match spec.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => {
                (h.trim_matches(['[', ']']), p.parse().unwrap())
            }
            _ => (spec, 587),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![Host {
                name: host.to_string(),
                addrs: vec![SocketAddr::new(ip, port)],
            }]);
        }
        let addrs: Vec<SocketAddr> = self
            .addrs(host)
            .await?
            .into_iter()
            .map(|a| SocketAddr::new(a.ip(), port))
            .collect();
        if addrs.is_empty() {
            return Err(RouteError::Temporary(format!(
                "the smarthost {host} has no address"
            )));
        }
        Ok(vec![Host {
            name: host.to_string(),
            addrs,
        }])
    }
}

/// Sorts by preference and shuffles hosts of equal preference (RFC 5321 5.1).
fn shuffle_equal(v: &mut [(u16, String)]) {
    use rand::seq::SliceRandom;
    v.sort_by_key(|x| x.0);
    let mut i = 0;
    while i < v.len() {
        let j = v[i..]
            .iter()
            .position(|x| x.0 != v[i].0)
            .map_or(v.len(), |k| i + k);
        v[i..j].shuffle(&mut rand::rng());
        i = j;
    }
}

/// The TXT records at `name`, each one's strings joined into one text (a record longer than
/// 255 bytes is published as several strings: RFC 7208 3.3). `None` when the lookup fails.
pub async fn txt_records(r: &TokioResolver, name: &str) -> Option<Vec<String>> {
    let l = r.txt_lookup(name).await.ok()?;
    Some(
        l.answers()
            .iter()
            .filter_map(|a| match &a.data {
                hickory_resolver::proto::rr::RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|p| String::from_utf8_lossy(p))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_preferences_shuffle_but_order_holds() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut v = vec![
                (20, "c".to_string()),
                (10, "a".to_string()),
                (10, "b".to_string()),
            ];
            shuffle_equal(&mut v);
            assert_eq!(v[2].1, "c");
            seen_first.insert(v[0].1.clone());
        }
        assert_eq!(
            seen_first.len(),
            2,
            "both equal-preference hosts come first sometimes"
        );
    }
}
