//! The DNS records a domain needs (what `postern dns` prints), each with why, and how to
//! judge what DNS actually answers for it.

use std::io::Write;
use std::path::Path;

use hickory_resolver::TokioResolver;
use postern_config::Config;
use postern_config::settings::{self, Security, Service};

use crate::net::{bare_name, txt_records};

/// One record to publish, and how to judge what DNS says.
pub struct Record {
    pub name: String,
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
    pub check: Check,
}

pub enum Check {
    /// An MX record naming our hostname.
    Mx,
    /// The host name has an address.
    Address,
    /// A TXT record at the name that starts with this tag ("v=spf1"); `must` is a part it
    /// must contain to be right.
    Txt {
        tag: &'static str,
        must: Option<String>,
    },
    /// SRV naming our host and port.
    Srv { port: u16 },
    /// The name leads to our host (CNAME, or an address of its own).
    Alias,
    /// Nothing DNS can tell us (PTR of an unknown public IP).
    Manual,
}

fn dkim_records(data_dir: &Path, domain: &str) -> Vec<(String, String)> {
    let dir = data_dir.join("dkim");
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return v;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(sel) = n
            .strip_prefix(&format!("{domain}."))
            .and_then(|s| s.strip_suffix(".pem"))
        else {
            continue;
        };
        if let Ok(pem) = std::fs::read_to_string(e.path())
            && let Some(record) = dkim_record_of(&pem)
        {
            v.push((sel.to_string(), record));
        }
    }
    v.sort();
    v
}

/// The DNS record value for a PKCS#8 PEM DKIM key (RSA or Ed25519).
pub fn dkim_record_of(pem: &str) -> Option<String> {
    use base64::Engine;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        let spki = k.to_public_key().to_public_key_der().ok()?;
        return Some(format!("v=DKIM1; k=rsa; p={}", b64.encode(spki.as_bytes())));
    }
    let der = b64
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .ok()?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).ok()?;
    use ring::signature::KeyPair;
    Some(format!(
        "v=DKIM1; k=ed25519; p={}",
        b64.encode(pair.public_key().as_ref())
    ))
}

pub fn records(cfg: &Config, domain: &str) -> Vec<Record> {
    let host = &cfg.hostname;
    let mut v = vec![
        Record {
            name: format!("{domain}."),
            kind: "MX",
            value: format!("10 {host}."),
            why: "other servers deliver mail for the domain here",
            check: Check::Mx,
        },
        Record {
            name: format!("{host}."),
            kind: "A",
            value: "<this server's public IPv4 address>   (and AAAA for IPv6)".into(),
            why: "the mail server's name leads to this machine",
            check: Check::Address,
        },
        Record {
            name: format!("{domain}."),
            kind: "TXT",
            value: "\"v=spf1 mx -all\"".into(),
            why: "SPF: only the domain's MX may send its mail",
            check: Check::Txt {
                tag: "v=spf1",
                must: Some("mx".into()),
            },
        },
    ];
    for (sel, record) in dkim_records(&cfg.data_dir, domain) {
        let p = record.split("p=").nth(1).unwrap_or("").to_string();
        v.push(Record {
            name: format!("{sel}._domainkey.{domain}."),
            kind: "TXT",
            value: format!("\"{record}\""),
            why: "DKIM: the key receivers check Postern's signatures with",
            check: Check::Txt {
                tag: "v=DKIM1",
                must: Some(p),
            },
        });
    }
    v.push(Record {
        name: format!("_dmarc.{domain}."),
        kind: "TXT",
        value: format!("\"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}\""),
        why: "DMARC: what receivers do with mail that fails SPF and DKIM, and where to report",
        check: Check::Txt {
            tag: "v=DMARC1",
            must: None,
        },
    });
    v.push(Record {
        name: format!("_mta-sts.{domain}."),
        kind: "TXT",
        value: "\"v=STSv1; id=1\"".into(),
        why: "MTA-STS: senders should use TLS (policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt)",
        check: Check::Txt { tag: "v=STSv1", must: None },
    });
    v.push(Record {
        name: format!("mta-sts.{domain}."),
        kind: "CNAME",
        value: format!("{host}."),
        why: "the host that serves the MTA-STS policy (needs the https listener)",
        check: Check::Alias,
    });
    v.push(Record {
        name: format!("_smtp._tls.{domain}."),
        kind: "TXT",
        value: format!("\"v=TLSRPTv1; rua=mailto:postmaster@{domain}\""),
        why: "TLS-RPT: where senders report TLS problems reaching you",
        check: Check::Txt {
            tag: "v=TLSRPTv1",
            must: None,
        },
    });
    for e in settings::endpoints(cfg) {
        let svc = match (e.service, e.security) {
            (Service::Smtp, Security::Tls) => "_submissions._tcp",
            (Service::Smtp, Security::StartTls) => "_submission._tcp",
            (Service::Imap, Security::Tls) => "_imaps._tcp",
            (Service::Imap, Security::StartTls) => "_imap._tcp",
            (Service::Pop3, Security::Tls) => "_pop3s._tcp",
            (Service::Pop3, Security::StartTls) => "_pop3._tcp",
        };
        v.push(Record {
            name: format!("{svc}.{domain}."),
            kind: "SRV",
            value: format!("0 1 {} {host}.", e.port),
            why: "mail programs find the server and port themselves (RFC 6186, 8314)",
            check: Check::Srv { port: e.port },
        });
    }
    v.extend(dav_records(cfg, domain, host));
    for sub in ["autoconfig", "autodiscover"] {
        v.push(Record {
            name: format!("{sub}.{domain}."),
            kind: "CNAME",
            value: format!("{host}."),
            why: "Thunderbird and Outlook fetch their settings here (needs the http/https listeners)",
            check: Check::Alias,
        });
    }
    // DANE (RFC 7672): the key ACME keeps across renewals, and a new one during a rollover.
    for (data, which) in postern_acme::keys::tlsa_records(&cfg.data_dir) {
        v.push(Record {
            name: format!("_25._tcp.{host}."),
            kind: "TLSA",
            value: format!("3 1 1 {data}"),
            why: if which == "next" {
                "DANE: the next key (postern acme rollover); publish beside the current one"
            } else {
                "DANE: senders that check DNSSEC accept only this key (publish only with DNSSEC)"
            },
            check: Check::Manual,
        });
    }
    v.push(Record {
        name: "<this server's IP>".into(),
        kind: "PTR",
        value: format!("{host}."),
        why: "reverse DNS: many servers refuse mail from an IP whose name does not match (set it at your hosting provider)",
        check: Check::Manual,
    });
    v
}

/// Where calendar and contact programs find the server (RFC 6764 3, 4): SRV for the HTTPS
/// listener, TXT for the path under it.
fn dav_records(cfg: &Config, domain: &str, host: &str) -> Vec<Record> {
    let port = cfg
        .listen
        .addresses(postern_config::ListenerKind::Https)
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port());
    let Some(port) = port.filter(|_| cfg.dav.enabled) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for svc in ["_caldavs._tcp", "_carddavs._tcp"] {
        v.push(Record {
            name: format!("{svc}.{domain}."),
            kind: "SRV",
            value: format!("0 1 {port} {host}."),
            why: "calendar and contact programs find the server and port themselves (RFC 6764)",
            check: Check::Srv { port },
        });
        v.push(Record {
            name: format!("{svc}.{domain}."),
            kind: "TXT",
            value: "\"path=/dav/\"".into(),
            why: "... and the path of their service on it (RFC 6764 4)",
            check: Check::Txt {
                tag: "path=",
                must: Some("path=/dav/".into()),
            },
        });
    }
    v
}

pub enum Verdict {
    Ok(String),
    Missing,
    Wrong(String),
    Skipped,
}

pub async fn judge(r: &Record, resolver: &TokioResolver, host: &str) -> Verdict {
    use hickory_resolver::proto::rr::{RData, RecordType};
    let name = r.name.as_str();
    let lookup = |t: RecordType| async move { resolver.lookup(name, t).await };
    match &r.check {
        Check::Manual => Verdict::Skipped,
        Check::Mx => match lookup(RecordType::MX).await {
            Ok(l) => {
                let hosts: Vec<String> = l
                    .answers()
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::MX(mx) => Some(bare_name(&mx.exchange.to_utf8())),
                        _ => None,
                    })
                    .collect();
                if hosts.is_empty() {
                    Verdict::Missing
                } else if hosts.iter().any(|h| h == &bare_name(host)) {
                    Verdict::Ok(format!("MX {}", hosts.join(", ")))
                } else {
                    Verdict::Wrong(format!(
                        "MX points to {} instead of {host}",
                        hosts.join(", ")
                    ))
                }
            }
            Err(_) => Verdict::Missing,
        },
        Check::Address => match resolver.lookup_ip(name).await {
            Ok(l) if l.iter().next().is_some() => Verdict::Ok(
                l.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => Verdict::Missing,
        },
        Check::Txt { tag, must } => match txt_records(resolver, name).await {
            Some(all) => {
                let texts: Vec<String> = all
                    .into_iter()
                    .filter(|t| {
                        t.to_ascii_lowercase()
                            .starts_with(&tag.to_ascii_lowercase())
                    })
                    .collect();
                match texts.as_slice() {
                    [] => Verdict::Missing,
                    [one] => match must {
                        Some(m) if !one.replace(' ', "").contains(&m.replace(' ', "")) => {
                            Verdict::Wrong(format!("found \"{one}\""))
                        }
                        _ => {
                            Verdict::Ok(format!("\"{}\"", one.chars().take(60).collect::<String>()))
                        }
                    },
                    many => {
                        Verdict::Wrong(format!("{} records where there must be one", many.len()))
                    }
                }
            }
            None => Verdict::Missing,
        },
        Check::Srv { port } => match lookup(RecordType::SRV).await {
            Ok(l) => {
                let found: Vec<(u16, String)> = l
                    .answers()
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::SRV(s) => Some((s.port, bare_name(&s.target.to_utf8()))),
                        _ => None,
                    })
                    .collect();
                if found.is_empty() {
                    Verdict::Missing
                } else if found
                    .iter()
                    .any(|(p, t)| p == port && *t == bare_name(host))
                {
                    Verdict::Ok(format!("port {port} on {host}"))
                } else {
                    let (p, t) = &found[0];
                    Verdict::Wrong(format!("says port {p} on {t}"))
                }
            }
            Err(_) => Verdict::Missing,
        },
        Check::Alias => {
            if let Ok(l) = lookup(RecordType::CNAME).await {
                for a in l.answers() {
                    if let RData::CNAME(c) = &a.data {
                        let t = bare_name(&c.0.to_utf8());
                        return if t == bare_name(host) {
                            Verdict::Ok(format!("CNAME {host}"))
                        } else {
                            Verdict::Wrong(format!("CNAME to {t} instead of {host}"))
                        };
                    }
                }
            }
            match resolver.lookup_ip(name).await {
                Ok(l) if l.iter().next().is_some() => Verdict::Ok("has an address".into()),
                _ => Verdict::Missing,
            }
        }
    }
}

/// Writes the records of each domain as `postern dns` shows them; with `check`, each is
/// looked up and marked OK, MISSING or WRONG. False when one is missing or wrong.
pub async fn write(
    cfg: &Config,
    domains: &[String],
    check: bool,
    out: &mut impl Write,
) -> Result<bool, String> {
    let resolver = match check {
        true => Some(postern_queue::route::resolver(&cfg.dns.nameservers)?),
        false => None,
    };
    write_with(cfg, domains, resolver.as_ref(), out)
        .await
        .map_err(|e| e.to_string())
}

async fn write_with(
    cfg: &Config,
    domains: &[String],
    resolver: Option<&TokioResolver>,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut all_ok = true;
    for d in domains {
        writeln!(out, "; DNS records for {d}")?;
        for r in records(cfg, d) {
            let line = format!("{}  {}  {}", r.name, r.kind, r.value);
            match resolver {
                None => writeln!(out, "{line}\n    ; {}", r.why)?,
                Some(res) => match judge(&r, res, &cfg.hostname).await {
                    Verdict::Ok(found) => writeln!(out, "OK       {} {}: {found}", r.kind, r.name)?,
                    Verdict::Skipped => writeln!(
                        out,
                        "CHECK    {} {}: cannot be checked from here; {}",
                        r.kind, r.name, r.why
                    )?,
                    Verdict::Missing => {
                        all_ok = false;
                        writeln!(
                            out,
                            "MISSING  {} {}: {}\n         publish: {line}",
                            r.kind, r.name, r.why
                        )?;
                    }
                    Verdict::Wrong(found) => {
                        all_ok = false;
                        writeln!(
                            out,
                            "WRONG    {} {}: {found}\n         publish instead: {line}",
                            r.kind, r.name
                        )?;
                    }
                },
            }
        }
        writeln!(out)?;
    }
    Ok(all_ok)
}

/// The records of one domain as JSON (the API's `/dns/{domain}`), each judged against DNS
/// when `check` is set.
pub async fn records_json(cfg: &Config, domain: &str, check: bool) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let resolver = if check {
        postern_queue::route::resolver(&cfg.dns.nameservers).ok()
    } else {
        None
    };
    let mut out = Vec::new();
    for r in records(cfg, &domain) {
        let (status, detail) = match &resolver {
            None => ("unchecked", String::new()),
            Some(res) => match judge(&r, res, &cfg.hostname).await {
                Verdict::Ok(d) => ("ok", d),
                Verdict::Missing => ("missing", String::new()),
                Verdict::Wrong(d) => ("wrong", d),
                Verdict::Skipped => ("unchecked", String::new()),
            },
        };
        out.push(serde_json::json!({
            "name": r.name,
            "type": r.kind,
            "value": r.value,
            "why": r.why,
            "status": status,
            "detail": detail,
        }));
    }
    serde_json::json!({ "domain": domain, "records": out }).to_string()
}
