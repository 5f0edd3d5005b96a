//! Trust in mail from other servers: SPF for HELO and MAIL FROM, DKIM, ARC, DMARC with the
//! published policy, and forward-confirmed reverse DNS, all with mail-auth, run concurrently;
//! one Authentication-Results header (RFC 8601) and a small, explainable spam score.

use std::net::IpAddr;

use hickory_resolver::proto::rr::RData;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::report::{PolicyPublished, Record, SPFDomainScope};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, IprevResult,
    MessageAuthenticator, SpfResult, dmarc::verify::DmarcParameters,
};
use mail_parser::Message;
use postern_config::Inbound;

/// What the checks say to do with the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Accept,
    /// Deliver into the recipients' Junk folders.
    Junk,
    /// Refuse with 550 5.7.1 and this text.
    Reject(String),
    /// Refuse for now with 451 4.4.3 and this text: DNS did not answer.
    Defer(String),
}

#[derive(Debug, Clone)]
pub struct Verdict {
    /// Authentication-Results and X-Spam-* header fields, each ending in CRLF.
    pub headers: String,
    pub decision: Decision,
    /// One line for the trace: "spf=pass dkim=pass dmarc=pass arc=none iprev=pass score=0.0".
    pub summary: String,
    pub score: f32,
    /// The author's address (the From header), lower case; empty when there is none.
    pub header_from: String,
    /// The author's domain passed DMARC: the From header is not forged.
    pub author_verified: bool,
    /// What the author's domain asked to hear about in its aggregate reports (`rua`).
    pub dmarc_report: Option<DmarcObservation>,
}

/// One checked message as a DMARC aggregate report row, for a domain that asks for reports.
#[derive(Debug, Clone)]
pub struct DmarcObservation {
    /// The author's domain (the From header's).
    pub domain: String,
    pub policy: PolicyPublished,
    pub record: Record,
    /// Where the reports go: addresses with their size limits (0: none).
    pub rua: Vec<(String, usize)>,
}

pub struct Checker {
    auth: MessageAuthenticator,
    hostname: String,
    cfg: Inbound,
}

fn spf_word(r: &SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn iprev_word(r: &IprevResult) -> &'static str {
    match r {
        IprevResult::Pass => "pass",
        IprevResult::Fail(_) => "fail",
        IprevResult::TempError(_) => "temperror",
        IprevResult::PermError(_) => "permerror",
        IprevResult::None => "none",
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Checker {
    pub fn new(resolver: hickory_resolver::TokioResolver, hostname: &str, cfg: Inbound) -> Checker {
        Checker {
            auth: MessageAuthenticator(resolver),
            hostname: hostname.to_string(),
            cfg,
        }
    }

    pub fn config(&self) -> &Inbound {
        &self.cfg
    }

    /// The first `inbound.dnsbl` zone listing `ip`, with its answer (127.0.0.x). A zone that
    /// does not answer lists nobody.
    pub async fn dnsbl(&self, ip: IpAddr) -> Option<(String, String)> {
        let rev = match ip {
            IpAddr::V4(v) => {
                let o = v.octets();
                format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
            }
            IpAddr::V6(v) => v
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [b & 0xf, b >> 4])
                .map(|n| format!("{n:x}"))
                .collect::<Vec<_>>()
                .join("."),
        };
        for zone in &self.cfg.dnsbl {
            let name = format!("{rev}.{}.", zone.trim_end_matches('.'));
            let Ok(l) = self.auth.resolver().ipv4_lookup(name).await else {
                continue;
            };
            let listed = l.answers().iter().find_map(|r| match &r.data {
                // 127.255.255.x: the list refuses to answer us, which lists nobody.
                RData::A(a) if a.0.octets()[0] == 127 && a.0.octets()[1] != 255 => Some(a.0),
                _ => None,
            });
            if let Some(a) = listed {
                return Some((zone.clone(), a.to_string()));
            }
        }
        None
    }

    /// Checks a message as it arrived from `ip`, parsed by ingest: `sent` is the sender's
    /// header (our own trace fields left out; `None` when it has no fields), with offsets
    /// into `raw`. `complete` is false for a message larger than `inbound.max_verify_size`:
    /// no DKIM or ARC check then.
    pub async fn check(
        &self,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        sent: Option<&Message<'_>>,
        raw: &[u8],
        complete: bool,
    ) -> Verdict {
        let host = self.hostname.as_str();
        let helo = if helo.is_empty() { "unknown" } else { helo };
        let parsed = sent.map(|m| AuthenticatedMessage::from_parsed(m, raw, true));
        let verify_dkim = complete;
        let spf_helo = self
            .auth
            .verify_spf(SpfParameters::verify_ehlo(ip, helo, host));
        let spf_from = async {
            if mail_from.is_empty() {
                None
            } else {
                Some(
                    self.auth
                        .verify_spf(SpfParameters::verify_mail_from(ip, helo, host, mail_from))
                        .await,
                )
            }
        };
        let iprev = self.auth.verify_iprev(ip);
        let dkim = async {
            match &parsed {
                Some(m) if verify_dkim => self.auth.verify_dkim(m).await,
                _ => Vec::new(),
            }
        };
        let arc = async {
            match &parsed {
                Some(m) if verify_dkim => Some(self.auth.verify_arc(m).await),
                _ => None,
            }
        };
        let (spf_helo, spf_from, iprev, dkim, arc) =
            tokio::join!(spf_helo, spf_from, iprev, dkim, arc);
        // With the null sender, SPF judges the HELO name (RFC 7208 section 2.4).
        let spf_mail = spf_from.as_ref().unwrap_or(&spf_helo);
        let spf_domain = if mail_from.is_empty() {
            helo
        } else {
            domain_of(mail_from)
        };
        let dmarc = match &parsed {
            Some(m) => Some(
                self.auth
                    .verify_dmarc(DmarcParameters::new(m, &dkim, spf_domain, spf_mail))
                    .await,
            ),
            None => None,
        };
        let header_from = parsed
            .as_ref()
            .map(|m| m.from().to_string())
            .unwrap_or_default();

        let mut ar = AuthenticationResults::new(host)
            .with_dkim_results(&dkim, &header_from)
            .with_spf_ehlo_result(&spf_helo, ip, helo);
        if spf_from.is_some() {
            ar = ar.with_spf_mailfrom_result(spf_mail, ip, mail_from, helo);
        }
        if let Some(a) = &arc {
            ar = ar.with_arc_result(a, ip);
        }
        if let Some(d) = &dmarc {
            ar = ar.with_dmarc_result(d);
        }
        ar = ar.with_iprev_result(&iprev, ip);

        let dkim_best = if dkim.iter().any(|d| d.result() == &DkimResult::Pass) {
            "pass"
        } else {
            dkim.first().map_or("none", |d| dkim_word(d.result()))
        };
        let dmarc_result = dmarc.as_ref().map(|d| d.result());
        let dmarc_w = dmarc_result.as_ref().map_or("none", dmarc_word);
        let arc_w = arc.as_ref().map_or("none", |a| dkim_word(a.result()));

        // The score: each signal adds what it is worth; a pass earns a little trust.
        let mut score: f32 = 0.0;
        let mut signs: Vec<&str> = Vec::new();
        let mut add = |points: f32, why: &'static str| {
            score += points;
            signs.push(why);
        };
        match spf_mail.result() {
            SpfResult::Fail => add(3.0, "SPF_FAIL"),
            SpfResult::SoftFail => add(1.5, "SPF_SOFTFAIL"),
            SpfResult::Pass => add(-0.5, "SPF_PASS"),
            _ => {}
        }
        match dkim_best {
            "pass" => add(-1.0, "DKIM_PASS"),
            "fail" => add(2.0, "DKIM_FAIL"),
            _ => {}
        }
        match dmarc_w {
            "fail" => add(3.0, "DMARC_FAIL"),
            "pass" => add(-1.0, "DMARC_PASS"),
            _ => {}
        }
        match iprev.result() {
            IprevResult::Fail(_) | IprevResult::PermError(_) => add(1.0, "RDNS_MISMATCH"),
            IprevResult::Pass => {}
            _ => {}
        }
        if !parsed.as_ref().is_some_and(|m| m.message_id_header_present) {
            add(1.0, "MISSING_MESSAGE_ID");
        }
        if !parsed.as_ref().is_some_and(|m| m.date_header_present) {
            add(1.0, "MISSING_DATE");
        }
        if header_from.is_empty() {
            add(2.0, "MISSING_FROM");
        }
        // RFC 7489 6.6.1: several authors make DMARC inapplicable, a way around p=reject.
        let many_authors = parsed.as_ref().is_some_and(|m| m.froms().len() > 1);
        if many_authors {
            add(5.0, "MULTIPLE_FROM");
        }
        let score = (score * 10.0).round() / 10.0;
        let junk_by_score = score >= self.cfg.spam_threshold;

        // Names anyone can claim count only when proven; networks are the client's own.
        let allowed = self.cfg.allowed_ip(ip)
            || (self.cfg.allowed(mail_from) && spf_mail.result() == SpfResult::Pass)
            || (self.cfg.allowed(&header_from) && dmarc_w == "pass");

        let policy = dmarc.as_ref().map(|d| d.policy());
        let from_domain = domain_of(&header_from).to_string();
        let dmarc_report = dmarc.as_ref().and_then(|d| {
            let rec = d.dmarc_record().filter(|r| !r.rua().is_empty())?;
            if matches!(d.result(), DmarcResult::TempError(_)) {
                return None;
            }
            let domain = d.domain().to_ascii_lowercase();
            let scope = if mail_from.is_empty() {
                SPFDomainScope::Helo
            } else {
                SPFDomainScope::MailFrom
            };
            Some(DmarcObservation {
                policy: PolicyPublished::from_record(domain.clone(), rec),
                record: Record::new()
                    .with_source_ip(ip)
                    .with_header_from(domain.clone())
                    .with_envelope_from(spf_domain)
                    .with_dkim_output(&dkim)
                    .with_spf_output(spf_mail, scope)
                    .with_dmarc_output(d),
                rua: rec
                    .rua()
                    .iter()
                    .map(|u| (u.uri().to_string(), u.max_size()))
                    .collect(),
                domain,
            })
        });
        let dmarc_failed = matches!(dmarc_result, Some(DmarcResult::Fail(_)));
        let spf_fail = spf_mail.result() == SpfResult::Fail;
        let decision = if matches!(dmarc_result, Some(DmarcResult::TempError(_))) {
            Decision::Defer(format!(
                "DNS did not answer for the DMARC policy of {from_domain}; try again later"
            ))
        } else if spf_mail.result() == SpfResult::TempError
            && self.cfg.spf_fail == "reject"
            && dmarc_w != "pass"
        {
            Decision::Defer(format!(
                "DNS did not answer for the SPF record of {spf_domain}; try again later"
            ))
        } else if allowed {
            Decision::Accept
        } else if dmarc_failed && policy == Some(Policy::Reject) && self.cfg.dmarc_reject {
            Decision::Reject(format!(
                "The message claims to be from {from_domain}, but it fails that domain's DMARC \
                 check (neither a valid DKIM signature nor SPF for {from_domain}), and the domain \
                 asks for such mail to be refused (p=reject)"
            ))
        } else if dmarc_failed && policy == Some(Policy::Quarantine) && self.cfg.dmarc_quarantine {
            Decision::Junk
        } else if spf_fail && dmarc_w != "pass" && self.cfg.spf_fail == "reject" {
            Decision::Reject(format!(
                "{ip} is not allowed to send mail for {spf_domain} (SPF fail); the sender's \
                 administrator must add it to the domain's SPF record"
            ))
        } else if (spf_fail && dmarc_w != "pass" && self.cfg.spf_fail == "junk")
            || junk_by_score
            || many_authors
        {
            Decision::Junk
        } else {
            Decision::Accept
        };

        let junk = decision == Decision::Junk;
        let mut headers = ar.to_header();
        if dkim.is_empty() {
            // mail-auth says nothing without signatures; RFC 8601 has a word for it.
            let lead = format!("Authentication-Results: {host}");
            if let Some(rest) = headers.strip_prefix(&lead) {
                headers = format!("{lead};\r\n\tdkim=none{rest}");
            }
        }
        headers.push_str(&format!("X-Spam-Score: {score:.1}\r\n"));
        headers.push_str(&format!(
            "X-Spam-Status: {}, score={score:.1} required={:.1} tests=[{}]\r\n",
            if junk { "Yes" } else { "No" },
            self.cfg.spam_threshold,
            signs.join(", ")
        ));
        let summary = format!(
            "spf={} dkim={dkim_best} dmarc={dmarc_w}{} arc={arc_w} iprev={} score={score:.1}",
            spf_word(&spf_mail.result()),
            match policy {
                Some(Policy::Reject) => " (p=reject)",
                Some(Policy::Quarantine) => " (p=quarantine)",
                _ => "",
            },
            iprev_word(iprev.result()),
        );
        Verdict {
            headers,
            decision,
            summary,
            score,
            header_from: header_from.to_ascii_lowercase(),
            author_verified: dmarc_w == "pass",
            dmarc_report,
        }
    }
}

/// Whether a header field (name, value and line ends) is an Authentication-Results field that
/// claims `authserv_id`.
pub fn is_our_results(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    if !field[..colon]
        .trim_ascii()
        .eq_ignore_ascii_case(b"Authentication-Results")
    {
        return false;
    }
    // The authserv-id is the first token of the value, before any ';' (comments aside).
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    let mut v = value.trim_start();
    while let Some(rest) = v.strip_prefix('(') {
        v = rest.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    let id = v
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_our_authentication_results() {
        let ours = [
            &b"Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=a@b\r\n"[..],
            b"authentication-results: (c) MX.Example.Test; dmarc=pass\r\n",
        ];
        for f in ours {
            assert!(is_our_results(f, "mx.example.test"), "{f:?}");
        }
        let theirs = [
            &b"Authentication-Results: other.test; dkim=pass\r\n"[..],
            b"Received: from mx.example.test\r\n",
            b"Authentication-Results-Extra: mx.example.test\r\n",
        ];
        for f in theirs {
            assert!(!is_our_results(f, "mx.example.test"), "{f:?}");
        }
    }

    #[test]
    fn allow_and_block_lists() {
        let c = Inbound {
            allow: vec!["partner.test".into(), "boss@far.test".into()],
            block: vec!["@spam.test".into()],
            ..Default::default()
        };
        assert!(c.allowed("a@partner.test") && c.allowed("a@mail.partner.test"));
        assert!(c.allowed("Boss@Far.test") && !c.allowed("other@far.test"));
        assert!(c.blocked("x@spam.test") && !c.blocked("x@notspam.test"));
    }
}
