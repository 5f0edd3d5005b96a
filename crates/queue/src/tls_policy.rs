//! Which hosts of a destination may get its mail, and how their TLS must be: DANE when the
//! domain's MX and the host's TLSA records are DNSSEC-authentic (RFC 7672), else the domain's
//! MTA-STS policy (RFC 8461), else opportunistic TLS (RFC 7435).

use std::sync::Arc;

use hickory_resolver::proto::rr::{RData, RecordType};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use tracing::warn;

use crate::dane::{DaneVerifier, Tlsa};
use crate::mta_sts::{Mode, MtaSts, Policy};
use crate::route::Host;
use crate::secure_dns::SecureDns;
use mail_auth::report::tlsrpt::{PolicyDetails, PolicyType};

/// How a delivery to one host must use TLS.
#[derive(Clone)]
pub enum Security {
    /// STARTTLS when offered, any certificate.
    Opportunistic,
    /// STARTTLS required, the certificate checked by `verifier`; `why` names the rule.
    Verified {
        verifier: Arc<dyn ServerCertVerifier>,
        why: String,
    },
}

impl Security {
    pub fn is_verified(&self) -> bool {
        matches!(self, Security::Verified { .. })
    }
}

pub struct Target {
    pub host: Host,
    pub security: Security,
    /// The policy as a TLS report names it (RFC 8460 4.3); `None` for a smarthost.
    pub report: Option<PolicyDetails>,
}

/// The policy details of a TLS report.
fn details(kind: PolicyType, domain: &str, strings: Vec<String>, mx: Vec<String>) -> PolicyDetails {
    PolicyDetails {
        policy_type: kind,
        policy_string: strings,
        policy_domain: domain.to_string(),
        mx_host: mx,
    }
}

/// An MTA-STS policy as its text lines (RFC 8460 4.3: the policy-string).
fn sts_lines(p: &Policy) -> Vec<String> {
    let mode = match p.mode {
        Mode::Enforce => "enforce",
        Mode::Testing => "testing",
        Mode::None => "none",
    };
    let mut v = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
    v.extend(p.mx.iter().map(|m| format!("mx: {m}")));
    v.push(format!("max_age: {}", p.max_age));
    v
}

pub struct TlsPolicy {
    dns: Option<SecureDns>,
    sts: Option<MtaSts>,
    port: u16,
}

impl TlsPolicy {
    pub fn new(dns: Option<SecureDns>, sts: Option<MtaSts>, port: u16) -> TlsPolicy {
        TlsPolicy { dns, sts, port }
    }

    /// Opportunistic TLS for every host: no DANE, no MTA-STS (a smarthost, say).
    pub fn none(hosts: Vec<Host>) -> Vec<Target> {
        hosts
            .into_iter()
            .map(|host| Target {
                host,
                security: Security::Opportunistic,
                report: None,
            })
            .collect()
    }

    /// The hosts to try for `domain`, each with its rule; Err says why none may be tried.
    /// DANE decides per host (RFC 7672); hosts without it follow the domain's MTA-STS policy
    /// (RFC 8461 2), else opportunistic TLS.
    pub async fn plan(&self, domain: &str, hosts: Vec<Host>) -> Result<Vec<Target>, String> {
        let dane = match &self.dns {
            Some(dns) => self.dane(dns, domain, &hosts).await?,
            None => hosts.iter().map(|_| HostDane::None).collect(),
        };
        let policy = if dane.iter().any(|d| matches!(d, HostDane::None)) {
            match &self.sts {
                Some(sts) => sts.policy(domain).await.filter(|p| p.mode != Mode::None),
                None => None,
            }
        } else {
            None
        };
        let mut targets = Vec::new();
        let mut skipped = Vec::new();
        for (host, d) in hosts.into_iter().zip(dane) {
            match d {
                HostDane::Required(records) => {
                    let why = format!("the DANE TLSA records of {}", host.name);
                    let names = vec![host.name.clone(), domain.to_string()];
                    let strings = records
                        .iter()
                        .map(|t| {
                            let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
                            format!("{} {} {} {hex}", t.usage, t.selector, t.matching)
                        })
                        .collect();
                    let report = details(PolicyType::Tlsa, domain, strings, vec![host.name.clone()]);
                    targets.push(Target {
                        host,
                        security: Security::Verified {
                            verifier: Arc::new(DaneVerifier::new(records, names)),
                            why,
                        },
                        report: Some(report),
                    });
                }
                HostDane::Failed(why) => skipped.push(why),
                HostDane::None => match &policy {
                    Some(p) if p.mode == Mode::Enforce && !p.allows(&host.name) => {
                        skipped.push(format!(
                            "{} is not one of the MX hosts the MTA-STS policy of {domain} allows ({})",
                            host.name,
                            p.mx.join(", ")
                        ))
                    }
                    Some(p) if p.mode == Mode::Enforce => {
                        let sts = self.sts.as_ref().expect("a policy comes from MTA-STS");
                        let verifier = WebPkiServerVerifier::builder_with_provider(
                            sts.roots(),
                            postern_net::tls::provider(),
                        )
                        .build()
                        .map_err(|e| format!("cannot check certificates: {e}"))?;
                        targets.push(Target {
                            host,
                            security: Security::Verified {
                                verifier,
                                why: format!("the MTA-STS policy of {domain}"),
                            },
                            report: Some(details(
                                PolicyType::Sts,
                                domain,
                                sts_lines(p),
                                p.mx.clone(),
                            )),
                        });
                    }
                    Some(p) => {
                        if !p.allows(&host.name) {
                            warn!(%domain, host = %host.name, "MX not in the domain's MTA-STS policy (testing mode: delivered anyway)");
                        }
                        targets.push(Target {
                            host,
                            security: Security::Opportunistic,
                            report: Some(details(
                                PolicyType::Sts,
                                domain,
                                sts_lines(p),
                                p.mx.clone(),
                            )),
                        });
                    }
                    None => targets.push(Target {
                        host,
                        security: Security::Opportunistic,
                        report: Some(details(
                            PolicyType::NoPolicyFound,
                            domain,
                            Vec::new(),
                            Vec::new(),
                        )),
                    }),
                },
            }
        }
        if targets.is_empty() {
            return Err(skipped.join("; "));
        }
        Ok(targets)
    }

    /// DANE for each host. A domain whose MX records are not DNSSEC-authentic has none; a
    /// lookup that fails (SERVFAIL for bogus data, a timeout) never counts as insecure: the
    /// domain's mail waits (RFC 7672 2.1.1), or that host gets none.
    async fn dane(
        &self,
        dns: &SecureDns,
        domain: &str,
        hosts: &[Host],
    ) -> Result<Vec<HostDane>, String> {
        let none = || hosts.iter().map(|_| HostDane::None).collect();
        if domain.starts_with('[') {
            return Ok(none());
        }
        let mx = dns.lookup(domain, RecordType::MX).await.map_err(|e| {
            format!("the DNSSEC status of {domain}'s MX records is unknown ({e}); trying later")
        })?;
        if !mx.secure {
            return Ok(none());
        }
        let mut out = Vec::new();
        for h in hosts {
            out.push(self.host_dane(dns, &h.name).await);
        }
        Ok(out)
    }

    /// RFC 7672 2.2: an authentic address, then the TLSA records at _port._tcp.host.
    async fn host_dane(&self, dns: &SecureDns, host: &str) -> HostDane {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            HostDane::Failed(format!(
                "the {what} of {host} could not be looked up ({e}), so it gets no mail \
                 (RFC 7672 2.2)"
            ))
        };
        let mut secure_address = false;
        for t in [RecordType::A, RecordType::AAAA] {
            match dns.lookup(host, t).await {
                Ok(a) if !a.records.is_empty() => {
                    secure_address = a.secure;
                    break;
                }
                Ok(_) => {}
                Err(e) => return failed("addresses", &e),
            }
        }
        if !secure_address {
            return HostDane::None;
        }
        let name = format!("_{}._tcp.{host}", self.port);
        match dns.lookup(&name, RecordType::TLSA).await {
            Ok(a) if a.secure && !a.records.is_empty() => HostDane::Required(
                a.records
                    .into_iter()
                    .filter_map(|r| match r {
                        RData::TLSA(t) => Some(Tlsa {
                            usage: t.cert_usage.into(),
                            selector: t.selector.into(),
                            matching: t.matching.into(),
                            data: t.cert_data,
                        }),
                        _ => None,
                    })
                    .collect(),
            ),
            Ok(_) => HostDane::None,
            Err(e) => failed("TLSA records", &e),
        }
    }
}

enum HostDane {
    None,
    Required(Vec<Tlsa>),
    Failed(String),
}
