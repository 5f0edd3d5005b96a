//! Which hosts of a destination may get its mail, and how their TLS must be: DANE when the
//! domain's MX and the host's TLSA records are DNSSEC-authentic (RFC 7672), else the domain's
//! MTA-STS policy (RFC 8461), else opportunistic TLS (RFC 7435).

use std::sync::Arc;

use hickory_resolver::proto::rr::{RData, RecordType};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use tracing::warn;

use crate::dane::{DaneVerifier, Tlsa};
use crate::mta_sts::{Mode, MtaSts};
use crate::route::Host;
use crate::secure_dns::SecureDns;

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
            })
            .collect()
    }

    /// The hosts to try for `domain`, each with its rule; Err says why none may be tried.
    pub async fn plan(&self, domain: &str, hosts: Vec<Host>) -> Result<Vec<Target>, String> {
        let mut targets = Vec::new();
        let mut skipped = Vec::new();
        if let Some(dns) = &self.dns
            && let Some(dane) = self.dane(dns, domain, &hosts).await
        {
            for (host, d) in hosts.into_iter().zip(dane) {
                match d {
                    HostDane::None => targets.push(Target {
                        host,
                        security: Security::Opportunistic,
                    }),
                    HostDane::Required(records) => {
                        let why = format!("the DANE TLSA records of {}", host.name);
                        let names = vec![host.name.clone(), domain.to_string()];
                        targets.push(Target {
                            host,
                            security: Security::Verified {
                                verifier: Arc::new(DaneVerifier::new(records, names)),
                                why,
                            },
                        });
                    }
                    HostDane::Failed(why) => skipped.push(why),
                }
            }
            return if targets.is_empty() {
                Err(skipped.join("; "))
            } else {
                Ok(targets)
            };
        }
        let policy = match &self.sts {
            Some(sts) => sts.policy(domain).await,
            None => None,
        };
        let Some(policy) = policy.filter(|p| p.mode != Mode::None) else {
            return Ok(Self::none(hosts));
        };
        let sts = self.sts.as_ref().expect("a policy comes from MTA-STS");
        for host in hosts {
            if policy.mode == Mode::Testing {
                if !policy.allows(&host.name) {
                    warn!(%domain, host = %host.name, "MX not in the domain's MTA-STS policy (testing mode: delivered anyway)");
                }
                targets.push(Target {
                    host,
                    security: Security::Opportunistic,
                });
            } else if policy.allows(&host.name) {
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
                });
            } else {
                skipped.push(format!(
                    "{} is not one of the MX hosts the MTA-STS policy of {domain} allows ({})",
                    host.name,
                    policy.mx.join(", ")
                ));
            }
        }
        if targets.is_empty() {
            return Err(skipped.join("; "));
        }
        Ok(targets)
    }

    /// DANE for each host, or None when the domain's MX records are not DNSSEC-authentic (or
    /// no host has TLSA records): then DANE does not apply to the domain.
    async fn dane(&self, dns: &SecureDns, domain: &str, hosts: &[Host]) -> Option<Vec<HostDane>> {
        let literal = domain.starts_with('[');
        if literal {
            return None;
        }
        let mx = match dns.lookup(domain, RecordType::MX).await {
            Ok(a) => a,
            Err(e) => {
                warn!(%domain, error = %e, "DNSSEC status of the MX unknown: no DANE");
                return None;
            }
        };
        if !mx.secure {
            return None;
        }
        let mut out = Vec::new();
        for h in hosts {
            out.push(self.host_dane(dns, &h.name).await);
        }
        out.iter()
            .any(|d| !matches!(d, HostDane::None))
            .then_some(out)
    }

    /// RFC 7672 2.2: an authentic address, then the TLSA records at _port._tcp.host.
    async fn host_dane(&self, dns: &SecureDns, host: &str) -> HostDane {
        let mut secure_address = false;
        for t in [RecordType::A, RecordType::AAAA] {
            match dns.lookup(host, t).await {
                Ok(a) if !a.records.is_empty() => {
                    secure_address = a.secure;
                    break;
                }
                Ok(_) => {}
                Err(_) => return HostDane::None,
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
            Err(e) => HostDane::Failed(format!(
                "the TLSA records of {host} could not be looked up ({e}), so it gets no mail \
                 (RFC 7672 2.2)"
            )),
        }
    }
}

enum HostDane {
    None,
    Required(Vec<Tlsa>),
    Failed(String),
}
