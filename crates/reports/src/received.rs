//! Reports other organizations send about our domains: read from a message (mail-auth
//! parses the XML, gzip and zip of DMARC reports and the JSON of TLS reports, within a size
//! limit), kept one per domain, and summed up for `postern reports list` and the web admin:
//! per domain, who sends mail as it, how much passes, and which sources to look at.

use std::collections::BTreeMap;

use mail_auth::report::tlsrpt::TlsReport;
use mail_auth::report::{DkimResult, DmarcResult, Report, SpfResult};
use postern_store::{ReceivedReport, ReportKind};
use serde::{Deserialize, Serialize};

/// The reports in a message; empty when it holds none (or none we can read).
pub fn parse(message: &[u8], max_size: usize, received: i64) -> Vec<ReceivedReport> {
    if let Ok(r) = Report::parse_rfc5322(message, max_size) {
        let domain = r.domain().trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() {
            return Vec::new();
        }
        return vec![ReceivedReport {
            kind: ReportKind::Dmarc,
            domain,
            org: r.org_name().to_string(),
            report_id: r.report_id().to_string(),
            begin: r.date_range_begin() as i64,
            end: r.date_range_end() as i64,
            received,
            body: serde_json::to_string(&r).unwrap_or_default(),
        }];
    }
    if let Ok(r) = TlsReport::parse_rfc5322(message, max_size) {
        let body = serde_json::to_string(&r).unwrap_or_default();
        let mut domains: Vec<String> = r
            .policies
            .iter()
            .map(|p| {
                p.policy
                    .policy_domain
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            })
            .filter(|d| !d.is_empty())
            .collect();
        domains.sort();
        domains.dedup();
        return domains
            .into_iter()
            .map(|domain| ReceivedReport {
                kind: ReportKind::Tls,
                domain,
                org: r.organization_name.clone().unwrap_or_default(),
                report_id: r.report_id.clone(),
                begin: r.date_range.start_datetime.to_timestamp(),
                end: r.date_range.end_datetime.to_timestamp(),
                received,
                body: body.clone(),
            })
            .collect();
    }
    Vec::new()
}

/// What the reports say about one of our domains.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainSummary {
    pub domain: String,
    pub dmarc_reports: usize,
    pub tls_reports: usize,
    /// Who reported, by name.
    pub reporters: Vec<String>,
    /// The period covered (Unix seconds).
    pub begin: i64,
    pub end: i64,
    /// Messages reported as sent with the domain in From, and how they fared.
    pub messages: u64,
    pub dmarc_pass: u64,
    pub dmarc_fail: u64,
    pub spf_aligned_pass: u64,
    pub dkim_aligned_pass: u64,
    /// Each sending address, the ones failing DMARC first.
    pub sources: Vec<Source>,
    pub tls_sessions_ok: u64,
    pub tls_sessions_failed: u64,
    /// (result type, receiving host, sessions) of failed TLS sessions.
    pub tls_failures: Vec<(String, String, u64)>,
}

/// One address that sent mail as the domain, in the reports.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub ip: String,
    pub messages: u64,
    pub dmarc_fail: u64,
    /// The SPF and DKIM results the reporters saw most for it ("pass", "fail"...).
    pub spf: String,
    pub dkim: String,
    /// Failing DMARC: either a sender to authorize (SPF, DKIM) or someone forging the domain.
    pub look_at: bool,
}

#[derive(Default)]
struct SourceCounts {
    messages: u64,
    dmarc_fail: u64,
    spf: BTreeMap<String, u64>,
    dkim: BTreeMap<String, u64>,
}

fn most(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| "none".into())
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        _ => "none",
    }
}

fn dkim_word(r: DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Fail => "fail",
        DkimResult::Neutral => "neutral",
        DkimResult::TempError => "temperror",
        DkimResult::PermError => "permerror",
        DkimResult::Policy => "policy",
        _ => "none",
    }
}

/// Sums kept reports up per domain, in domain order.
pub fn summarize(reports: &[ReceivedReport]) -> Vec<DomainSummary> {
    let mut out: BTreeMap<String, (DomainSummary, BTreeMap<String, SourceCounts>)> =
        BTreeMap::new();
    for kept in reports {
        let (s, sources) = out.entry(kept.domain.clone()).or_insert_with(|| {
            (
                DomainSummary {
                    domain: kept.domain.clone(),
                    begin: kept.begin,
                    end: kept.end,
                    ..Default::default()
                },
                BTreeMap::new(),
            )
        });
        s.begin = s.begin.min(kept.begin);
        s.end = s.end.max(kept.end);
        if !kept.org.is_empty() && !s.reporters.contains(&kept.org) {
            s.reporters.push(kept.org.clone());
        }
        match kept.kind {
            ReportKind::Dmarc => {
                let Ok(r) = serde_json::from_str::<Report>(&kept.body) else {
                    continue;
                };
                s.dmarc_reports += 1;
                for rec in r.records() {
                    let n = rec.count() as u64;
                    let dkim_ok = rec.dmarc_dkim_result() == DmarcResult::Pass;
                    let spf_ok = rec.dmarc_spf_result() == DmarcResult::Pass;
                    s.messages += n;
                    if dkim_ok || spf_ok {
                        s.dmarc_pass += n;
                    } else {
                        s.dmarc_fail += n;
                    }
                    s.dkim_aligned_pass += if dkim_ok { n } else { 0 };
                    s.spf_aligned_pass += if spf_ok { n } else { 0 };
                    let ip = rec
                        .source_ip()
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    let c = sources.entry(ip).or_default();
                    c.messages += n;
                    if !(dkim_ok || spf_ok) {
                        c.dmarc_fail += n;
                    }
                    let spf = rec
                        .spf_auth_result()
                        .first()
                        .map_or("none", |a| spf_word(a.result()));
                    *c.spf.entry(spf.into()).or_default() += n;
                    let dkim = if rec
                        .dkim_auth_result()
                        .iter()
                        .any(|a| a.result() == DkimResult::Pass)
                    {
                        "pass"
                    } else {
                        rec.dkim_auth_result()
                            .first()
                            .map_or("none", |a| dkim_word(a.result()))
                    };
                    *c.dkim.entry(dkim.into()).or_default() += n;
                }
            }
            ReportKind::Tls => {
                let Ok(r) = serde_json::from_str::<TlsReport>(&kept.body) else {
                    continue;
                };
                s.tls_reports += 1;
                for p in r.policies.iter().filter(|p| {
                    p.policy
                        .policy_domain
                        .trim_end_matches('.')
                        .eq_ignore_ascii_case(&kept.domain)
                }) {
                    s.tls_sessions_ok += p.summary.total_success as u64;
                    s.tls_sessions_failed += p.summary.total_failure as u64;
                    for f in &p.failure_details {
                        let kind = serde_json::to_value(f.result_type)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_else(|| "other".into());
                        let host = f.receiving_mx_hostname.clone().unwrap_or_default();
                        let n = f.failed_session_count as u64;
                        match s
                            .tls_failures
                            .iter_mut()
                            .find(|(k, h, _)| *k == kind && *h == host)
                        {
                            Some(e) => e.2 += n,
                            None => s.tls_failures.push((kind, host, n)),
                        }
                    }
                }
            }
        }
    }
    out.into_values()
        .map(|(mut s, sources)| {
            s.sources = sources
                .into_iter()
                .map(|(ip, c)| Source {
                    ip,
                    messages: c.messages,
                    dmarc_fail: c.dmarc_fail,
                    spf: most(&c.spf),
                    dkim: most(&c.dkim),
                    look_at: c.dmarc_fail > 0,
                })
                .collect();
            s.sources
                .sort_by_key(|b| std::cmp::Reverse((b.dmarc_fail, b.messages)));
            s.tls_failures.sort_by_key(|b| std::cmp::Reverse(b.2));
            s
        })
        .collect()
}
