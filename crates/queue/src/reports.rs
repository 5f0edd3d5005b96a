//! Sending the reports other domains ask for: once a UTC day (and on `postern reports send
//! --now`), each domain's DMARC aggregate report (RFC 7489 7.2, RFC 9990) to its `rua`
//! addresses that accept it (external destinations verified, RFC 7489 7.1; size limits
//! honoured), and its TLS report (RFC 8460) to the `rua` of its `_smtp._tls` record. Each goes
//! from our report address through the queue, DKIM-signed like any mail we write.

use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::Txt;
use mail_auth::common::cache::NoCache;
use mail_auth::mta_sts::TlsRpt;
use postern_config::Config;
use postern_reports::{DAY, Tallies, day_of, dmarc, tls};
use postern_store::{ReportKind, SharedStore, now};
use serde::Serialize;
use tracing::{info, warn};

use crate::runner::QueueRunner;

/// What one run sent.
#[derive(Debug, Default, Serialize)]
pub struct Sent {
    /// One line per report: "dmarc example.org 2026-12-03 to a@b, c@d" or why it was not sent.
    pub lines: Vec<String>,
    pub sent: usize,
    pub skipped: usize,
}

pub struct ReportSender {
    config: Arc<Config>,
    store: SharedStore,
    tallies: Arc<Tallies>,
    dns: MessageAuthenticator,
    runner: Arc<QueueRunner>,
    /// One run at a time (the daily one and `send --now` never take the same counts twice
    /// anyway; this keeps their output whole).
    running: tokio::sync::Mutex<()>,
}

type NoTxtCache = NoCache<Box<str>, Txt>;

/// Why a report did not go.
enum NotSent {
    /// The domain asks for none.
    Unwanted,
    /// A temporary failure: the counts are put back for the next run.
    Later(String),
    Never(String),
}

impl From<String> for NotSent {
    fn from(why: String) -> NotSent {
        NotSent::Never(why)
    }
}

fn date(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day * DAY)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

impl ReportSender {
    pub fn new(
        config: Arc<Config>,
        store: SharedStore,
        tallies: Arc<Tallies>,
        resolver: hickory_resolver::TokioResolver,
        runner: Arc<QueueRunner>,
    ) -> Arc<ReportSender> {
        Arc::new(ReportSender {
            config,
            store,
            tallies,
            dns: MessageAuthenticator(resolver),
            runner,
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes the counts every half minute, sends the past days' reports once a day (and at
    /// start, for days missed while stopped), forgets received reports past `reports.keep`.
    pub async fn run(self: Arc<Self>, mut shutdown: postern_net::Shutdown) {
        let mut last_sent_day = None;
        loop {
            if let Err(e) = self.tallies.flush().await {
                warn!(error = %e, "cannot write report counts; kept for the next try");
            }
            let today = day_of(now());
            if last_sent_day != Some(today) {
                last_sent_day = Some(today);
                if self.config.reports.send {
                    let sent = self.send(false).await;
                    if sent.sent > 0 || sent.skipped > 0 {
                        info!(sent = sent.sent, skipped = sent.skipped, "daily reports");
                    }
                }
                let before = now() - self.config.reports.keep.0 as i64;
                match self.store.report_prune(before).await {
                    Ok(n) if n > 0 => info!(reports = n, "old received reports forgotten"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot forget old received reports"),
                }
            }
            tokio::select! {
                _ = shutdown.wait() => {
                    let _ = self.tallies.flush().await;
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    /// Sends the reports of past days; with `all`, today's counts too (they are closed early).
    pub async fn send(&self, all: bool) -> Sent {
        let _one = self.running.lock().await;
        let mut sent = Sent::default();
        if let Err(e) = self.tallies.flush().await {
            sent.lines
                .push(format!("cannot write the latest counts: {e}"));
        }
        let today = day_of(now());
        let from = self.report_address().await;
        let org = if self.config.reports.org_name.is_empty() {
            self.config.hostname.clone()
        } else {
            self.config.reports.org_name.clone()
        };
        for kind in [ReportKind::Dmarc, ReportKind::Tls] {
            let pending = match self.store.report_pending(kind).await {
                Ok(p) => p,
                Err(e) => {
                    sent.lines
                        .push(format!("cannot read the {} counts: {e}", kind.as_str()));
                    continue;
                }
            };
            for (domain, day) in pending {
                if day >= today && !all {
                    continue;
                }
                let tallies = match self.store.report_take(kind, &domain, day).await {
                    Ok(t) if !t.is_empty() => t,
                    Ok(_) => continue,
                    Err(e) => {
                        sent.lines
                            .push(format!("cannot take the counts of {domain}: {e}"));
                        continue;
                    }
                };
                let report_id = format!("{}.{}.{:08x}", day, domain, rand::random::<u32>());
                let result = match kind {
                    ReportKind::Dmarc => {
                        self.dmarc(&org, &from, &domain, day, &tallies, &report_id)
                            .await
                    }
                    ReportKind::Tls => {
                        self.tls(&org, &from, &domain, day, &tallies, &report_id)
                            .await
                    }
                };
                let what = format!("{} report for {domain}, {}", kind.as_str(), date(day));
                match result {
                    Ok(to) => {
                        sent.sent += 1;
                        sent.lines
                            .push(format!("{what}: sent to {}", to.join(", ")));
                    }
                    // Most domains publish no TLSRPT record: nobody wants that report.
                    Err(NotSent::Unwanted) => {}
                    Err(NotSent::Never(why)) => {
                        sent.skipped += 1;
                        sent.lines.push(format!("{what}: not sent: {why}"));
                    }
                    Err(NotSent::Later(why)) => {
                        sent.skipped += 1;
                        let kept = self.store.report_tally(tallies).await.is_ok();
                        sent.lines.push(format!(
                            "{what}: not sent: {why}{}",
                            if kept { "; kept for the next try" } else { "" }
                        ));
                    }
                }
            }
        }
        for l in &sent.lines {
            info!("{l}");
        }
        sent
    }

    /// `reports.from`, else postmaster at the first local domain (or the hostname).
    async fn report_address(&self) -> String {
        if !self.config.reports.from.is_empty() {
            return self.config.reports.from.clone();
        }
        let domain = self
            .store
            .domain_list()
            .await
            .ok()
            .and_then(|d| d.into_iter().next().map(|d| d.name))
            .unwrap_or_else(|| self.config.hostname.clone());
        format!("postmaster@{domain}")
    }

    async fn dmarc(
        &self,
        org: &str,
        from: &str,
        domain: &str,
        day: i64,
        tallies: &[postern_store::ReportTally],
        report_id: &str,
    ) -> Result<Vec<String>, NotSent> {
        let who = dmarc::Reporter {
            org_name: org,
            email: from,
        };
        let (report, rua) = dmarc::build(&who, domain, day, tallies, report_id)
            .ok_or_else(|| "no counts could be read".to_string())?;
        let addresses: Vec<&str> = rua.iter().map(|(a, _)| a.as_str()).collect();
        // RFC 7489 7.1: a destination outside the domain must say it takes its reports.
        let verified = self
            .dns
            .verify_dmarc_report_address(domain, &addresses, None::<&NoTxtCache>)
            .await
            .ok_or_else(|| NotSent::Later("DNS did not answer for the report addresses".into()))?;
        let refused: Vec<&str> = addresses
            .iter()
            .filter(|a| !verified.contains(a))
            .copied()
            .collect();
        if !refused.is_empty() {
            warn!(%domain, addresses = %refused.join(", "), "report addresses outside the domain that do not accept its reports (RFC 7489 7.1)");
        }
        let submitter = postern_directory::domain_of(from).to_string();
        let mut to = Vec::new();
        for (address, limit) in &rua {
            if !verified.iter().any(|v| **v == address.as_str()) {
                continue;
            }
            let msg = report
                .to_rfc5322(&submitter, ("", from), std::iter::once(address.as_str()))
                .map_err(|e| e.to_string())?;
            if *limit > 0 && msg.len() > *limit {
                warn!(%domain, %address, size = msg.len(), limit, "report larger than the address accepts; not sent");
                continue;
            }
            self.queue(address, msg.into_bytes(), domain).await?;
            to.push(address.clone());
        }
        if to.is_empty() {
            return Err(NotSent::Never(format!(
                "no address of rua ({}) accepts it",
                addresses.join(", ")
            )));
        }
        Ok(to)
    }

    async fn tls(
        &self,
        org: &str,
        from: &str,
        domain: &str,
        day: i64,
        tallies: &[postern_store::ReportTally],
        report_id: &str,
    ) -> Result<Vec<String>, NotSent> {
        let record = match self
            .dns
            .txt_lookup::<TlsRpt>(format!("_smtp._tls.{domain}."), None::<&NoTxtCache>)
            .await
        {
            Ok(r) => r,
            Err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(e))) => {
                return Err(NotSent::Later(format!(
                    "DNS did not answer for _smtp._tls.{domain} ({e})"
                )));
            }
            // No record (or none that parses): the domain asks for no report.
            Err(_) => return Err(NotSent::Unwanted),
        };
        let addresses = tls::mail_destinations(&record.rua);
        if addresses.is_empty() {
            return Err(NotSent::Never(
                "the TLSRPT record names no mailto: address".into(),
            ));
        }
        let report = tls::build(org, from, day, tallies, report_id)
            .ok_or_else(|| "no counts could be read".to_string())?;
        let submitter = postern_directory::domain_of(from).to_string();
        let msg = report
            .to_rfc5322(
                domain,
                &submitter,
                ("", from),
                addresses.iter().map(|a| a.as_str()),
            )
            .map_err(|e| e.to_string())?;
        for a in &addresses {
            self.queue(a, msg.clone().into_bytes(), domain).await?;
        }
        Ok(addresses)
    }

    async fn queue(&self, to: &str, msg: Vec<u8>, domain: &str) -> Result<(), String> {
        self.runner
            .send_own(to, msg, &format!("a report about {domain}"))
            .await
            .map(|_| ())
    }
}
