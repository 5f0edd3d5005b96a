//! `postern doctor`: the server looks at itself the way the rest of the internet will, and
//! says what is wrong and how to fix it. One module per concern; each returns its section.

mod acme;
mod backup;
mod certificate;
mod clock;
mod dns;
mod listeners;
mod outbound;
mod storage;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use postern_config::Config;

use crate::probe::ConnError;
use crate::report::{Report, Section};

/// A message waiting on the outbound queue, as far as the doctor judges it.
pub struct Queued {
    /// Unix time it was queued.
    pub created: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// What the doctor asks of the server: answered inside the running server (the admin API),
/// or from the command line (through the control socket, else the store).
pub trait Access: Sync {
    /// The process id of the server that answers; `None` when none runs.
    fn server_pid(&self) -> impl Future<Output = Option<u32>> + Send;
    /// The local domains.
    fn domains(&self) -> impl Future<Output = Result<Vec<String>, String>> + Send;
    /// The outbound queue, oldest id first.
    fn queue(&self) -> impl Future<Output = Result<Vec<Queued>, String>> + Send;
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(cfg: &Config, access: &impl Access) -> Report {
    let mut report = Report::default();
    let resolver = postern_queue::route::public_resolver(&cfg.dns.nameservers).ok();
    let pid = access.server_pid().await;
    let running = pid.is_some();
    report
        .sections
        .push(listeners::listeners(cfg, running).await);
    report.sections.push(certificate::certificate(cfg));
    report.sections.extend(acme::acme(cfg));
    let domains = access.domains().await.unwrap_or_default();
    if let Some(r) = &resolver {
        report.sections.push(dns::hostname(cfg, r).await);
        for d in &domains {
            report.sections.push(dns::records(cfg, r, d).await);
        }
    } else {
        let mut s = Section::new("DNS");
        s.fail(
            "cannot set up a DNS resolver",
            "Check [dns] nameservers in the config, or /etc/resolv.conf.",
        );
        report.sections.push(s);
    }
    report
        .sections
        .push(listeners::relaying(cfg, running, domains.first().map(String::as_str)).await);
    report.sections.push(outbound::outbound(cfg).await);
    report.sections.push(clock::clock(cfg).await);
    report
        .sections
        .push(storage::storage(cfg, pid, access).await);
    report.sections.push(backup::backups(cfg).await);
    if !cfg.doctor.dnsbl.is_empty()
        && let Some(r) = &resolver
    {
        report.sections.push(dns::blocklists(cfg, r).await);
    }
    report
}

/// Where to reach a listener from this machine: its own address, or loopback for "any".
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

fn conn_err(e: &ConnError) -> String {
    match e {
        ConnError::Refused => "connection refused".into(),
        ConnError::TimedOut => "no answer".into(),
        ConnError::Other(e) => e.clone(),
    }
}

/// The report of `postern doctor` with the configuration at `path` valid: that first, then
/// every check.
pub async fn run_with_config(path: &Path, cfg: &Config, access: &impl Access) -> Report {
    let mut r = run(cfg, access).await;
    let mut s = Section::new("Configuration");
    s.ok(format!("{} is valid", path.display()));
    r.sections.insert(0, s);
    r
}

/// The report of `postern doctor` when the configuration does not load: the other checks
/// need it.
pub fn invalid_config(error: &str) -> Report {
    let mut r = Report::default();
    let mut s = Section::new("Configuration");
    s.fail(
        error,
        "Correct the file at the line given (postern config check tells the same); the other checks need a valid config.",
    );
    r.sections.push(s);
    r
}
