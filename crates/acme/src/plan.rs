//! Which certificates to ask for: the names, grouped one certificate per domain (the hostname
//! alone, so its key and TLSA record never depend on another domain's names), and only names
//! whose DNS leads to this server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_resolver::TokioResolver;

use crate::state::Skipped;

#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub id: String,
    pub names: Vec<String>,
}

/// The names: `[acme] domains`, or by default the hostname and the names mail programs ask
/// for under each local domain.
pub fn names(hostname: &str, configured: &[String], local_domains: &[String]) -> Vec<String> {
    let mut v: Vec<String> = if configured.is_empty() {
        let mut v = vec![hostname.to_string()];
        for d in local_domains {
            for sub in ["autoconfig", "autodiscover", "mta-sts"] {
                v.push(format!("{sub}.{d}"));
            }
        }
        v
    } else {
        configured.to_vec()
    };
    for n in &mut v {
        *n = n.trim_end_matches('.').to_ascii_lowercase();
    }
    let mut seen = BTreeSet::new();
    v.retain(|n| seen.insert(n.clone()));
    v
}

/// One certificate for the hostname; one per local domain for the names under it; one per
/// other name.
pub fn group(hostname: &str, names: &[String], local_domains: &[String]) -> Vec<Wanted> {
    let host = hostname.to_ascii_lowercase();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in names {
        let id = if *n == host {
            host.clone()
        } else {
            local_domains
                .iter()
                .filter(|d| n == *d || n.ends_with(&format!(".{d}")))
                .max_by_key(|d| d.len())
                .cloned()
                .unwrap_or_else(|| n.clone())
        };
        groups.entry(id).or_default().push(n.clone());
    }
    let mut v: Vec<Wanted> = groups
        .into_iter()
        .map(|(id, names)| Wanted { id, names })
        .collect();
    // The hostname's certificate first: it is the default one.
    v.sort_by_key(|w| w.id != host);
    v
}

async fn addresses(r: &TokioResolver, name: &str) -> Result<BTreeSet<IpAddr>, String> {
    match r.lookup_ip(format!("{name}.")).await {
        Ok(l) => Ok(l.iter().collect()),
        Err(e) if no_records(&e.to_string()) => Ok(BTreeSet::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a lookup error means "no such records" rather than "no answer".
fn no_records(e: &str) -> bool {
    let s = e.to_ascii_lowercase();
    s.contains("no record")
        || s.contains("noerror")
        || s.contains("nxdomain")
        || s.contains("no such domain")
        || s.contains("domain does not exist")
}

fn list(a: &BTreeSet<IpAddr>) -> String {
    a.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `names` into those that lead to this server (the hostname's addresses, or
/// `public_ip`) and those that do not, with the reason.
pub async fn check_dns(
    r: &TokioResolver,
    hostname: &str,
    public_ip: Option<IpAddr>,
    names: Vec<String>,
) -> (Vec<String>, Vec<Skipped>) {
    let mut ours = addresses(r, hostname).await.unwrap_or_default();
    ours.extend(public_ip);
    let (mut ok, mut skipped) = (Vec::new(), Vec::new());
    for n in names {
        let reason = match addresses(r, &n).await {
            Err(e) => format!("its DNS lookup failed ({e}); tried again at the next check"),
            Ok(a) if a.is_empty() => format!(
                "it has no A or AAAA record; add one (or a CNAME to {hostname}) pointing to this server"
            ),
            Ok(_) if n == hostname => {
                ok.push(n);
                continue;
            }
            Ok(a) if a.iter().any(|ip| ours.contains(ip)) => {
                ok.push(n);
                continue;
            }
            Ok(a) if ours.is_empty() => format!(
                "it leads to {} but {hostname} has no address to compare with; give {hostname} an A record",
                list(&a)
            ),
            Ok(a) => format!(
                "it leads to {}, not to this server ({}); point it here (a CNAME to {hostname}) or leave it out of [acme] domains",
                list(&a),
                list(&ours)
            ),
        };
        skipped.push(Skipped { name: n, reason });
    }
    (ok, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_and_groups() {
        let d = vec!["example.org".to_string(), "example.com".to_string()];
        let n = names("Mail.Example.com", &[], &d);
        assert_eq!(n[0], "mail.example.com");
        assert!(n.contains(&"mta-sts.example.org".to_string()));
        let g = group("mail.example.com", &n, &d);
        assert_eq!(g[0].id, "mail.example.com");
        assert_eq!(g[0].names, vec!["mail.example.com"]);
        let org = g.iter().find(|w| w.id == "example.org").unwrap();
        assert_eq!(org.names.len(), 3);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn configured_names_outside_local_domains_are_their_own() {
        let n = names(
            "a.example.com",
            &["a.example.com".into(), "B.example.net.".into()],
            &[],
        );
        let g = group("a.example.com", &n, &[]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].names, vec!["b.example.net"]);
    }
}
