//! What a mail program needs to know, derived from the listeners that are actually configured,
//! so every place that tells users (CLI, autoconfig, Autodiscover, profiles, the web page, DNS
//! SRV records) says the same thing.

use crate::{Config, ListenerKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (SSL/TLS in mail programs).
    Tls,
    /// STARTTLS after connecting.
    StartTls,
}

impl Security {
    pub fn label(self) -> &'static str {
        match self {
            Security::Tls => "SSL/TLS",
            Security::StartTls => "STARTTLS",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Imap,
    Pop3,
    Smtp,
}

impl Service {
    pub fn label(self) -> &'static str {
        match self {
            Service::Imap => "IMAP",
            Service::Pop3 => "POP3",
            Service::Smtp => "SMTP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub service: Service,
    pub host: String,
    pub port: u16,
    pub security: Security,
}

fn first_port(cfg: &Config, k: ListenerKind) -> Option<u16> {
    cfg.listen
        .addresses(k)
        .iter()
        .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .next()
}

/// Every way in, best first within each service (implicit TLS before STARTTLS, RFC 8314).
pub fn endpoints(cfg: &Config) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let host = cfg.hostname.clone();
    for (service, tls, starttls) in [
        (Service::Imap, ListenerKind::Imaps, ListenerKind::Imap),
        (Service::Pop3, ListenerKind::Pop3s, ListenerKind::Pop3),
        (
            Service::Smtp,
            ListenerKind::Submissions,
            ListenerKind::Submission,
        ),
    ] {
        if let Some(port) = first_port(cfg, tls) {
            out.push(Endpoint {
                service,
                host: host.clone(),
                port,
                security: Security::Tls,
            });
        }
        if let Some(port) = first_port(cfg, starttls) {
            out.push(Endpoint {
                service,
                host: host.clone(),
                port,
                security: Security::StartTls,
            });
        }
    }
    out
}

/// The port the HTTP listeners publish under (the first of each), for links.
pub fn web_ports(cfg: &Config) -> (Option<u16>, Option<u16>) {
    (
        first_port(cfg, ListenerKind::Http),
        first_port(cfg, ListenerKind::Https),
    )
}
