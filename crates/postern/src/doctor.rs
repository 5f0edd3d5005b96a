//! `postern doctor`: the server looks at itself the way the rest of the internet will, and
//! says what is wrong and how to fix it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use postern_config::{Cidr, Config, ListenerKind};
use postern_directory::Directory;
use postern_directory::admin::{AdminReply, AdminRequest, QueueInfo};
use postern_doctor::probe::{self, Conn, ConnError};
use postern_doctor::report::{Level, Report, Section};

use crate::{admin_cmd, control, dns};

/// Where the doctor runs: in the command line tool, or inside the server (admin API).
pub enum Access {
    Cli,
    Server(Arc<Directory>),
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(cfg: &Config, access: &Access) -> Report {
    let mut report = Report::default();
    let resolver = postern_queue::route::public_resolver(&cfg.dns.nameservers).ok();
    let running = match access {
        Access::Server(_) => true,
        Access::Cli => matches!(
            control::request(&cfg.data_dir, &AdminRequest::Ping).await,
            Ok(Some(Ok(_)))
        ),
    };
    report.sections.push(listeners(cfg, running).await);
    report.sections.push(certificate(cfg));
    let domains = match admin(cfg, access, AdminRequest::DomainList).await {
        Ok(AdminReply::Domains { names }) => names,
        _ => Vec::new(),
    };
    if let Some(r) = &resolver {
        report.sections.push(hostname(cfg, r).await);
        for d in &domains {
            report.sections.push(dns_records(cfg, r, d).await);
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
        .push(relaying(cfg, running, domains.first().map(String::as_str)).await);
    report.sections.push(outbound(cfg).await);
    report.sections.push(clock(cfg).await);
    report.sections.push(storage(cfg, access).await);
    if !cfg.doctor.dnsbl.is_empty()
        && let Some(r) = &resolver
    {
        report.sections.push(blocklists(cfg, r).await);
    }
    report
}

async fn admin(cfg: &Config, access: &Access, req: AdminRequest) -> anyhow::Result<AdminReply> {
    match access {
        Access::Cli => admin_cmd::run(cfg, req).await,
        Access::Server(d) => d.admin(req).await.map_err(|e| anyhow::anyhow!(e.message)),
    }
}

/// What a listener should answer, and whether TLS comes first.
fn expected(kind: ListenerKind) -> (&'static str, &'static str) {
    match kind {
        ListenerKind::Smtp | ListenerKind::Submission | ListenerKind::Submissions => {
            ("220", "SMTP")
        }
        ListenerKind::Pop3 | ListenerKind::Pop3s => ("+OK", "POP3"),
        ListenerKind::Imap | ListenerKind::Imaps => ("* OK", "IMAP"),
        ListenerKind::Http | ListenerKind::Https => ("HTTP/1.", "HTTP"),
        ListenerKind::ManageSieve => ("\"IMPLEMENTATION\"", "ManageSieve"),
    }
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

async fn listeners(cfg: &Config, running: bool) -> Section {
    let mut s = Section::new("Listeners");
    let sockets = cfg.listen.sockets();
    if sockets.is_empty() {
        s.fail(
            "no listener is configured",
            "Add addresses under [listen], e.g. smtp = [\"0.0.0.0:25\"].",
        );
        return s;
    }
    if !running {
        s.fail(
            "Postern is not running",
            "Start it: postern serve (or through your service manager, e.g. systemctl start postern).",
        );
    }
    let roots = probe::roots(&[]);
    for (kind, addr) in sockets {
        let target = reachable(addr);
        let label = format!("{} on {addr}", kind.name());
        let (want, proto) = expected(kind);
        let mut c = match probe::tcp(target, Duration::from_secs(5)).await {
            Ok(t) => Conn::plain(t, Duration::from_secs(5)),
            Err(e) => {
                if running {
                    s.fail(
                        format!("{label}: nothing answers ({})", conn_err(&e)),
                        "Look at the server's log for a bind error on this address; a firewall on this machine may also block it.",
                    );
                }
                continue;
            }
        };
        if kind.implicit_tls()
            && let Err(e) = c.start_tls(&cfg.hostname, roots.clone()).await
        {
            s.fail(
                format!("{label}: the TLS handshake failed: {e}"),
                "Check [tls] cert and key; postern doctor's certificate section says more.",
            );
            continue;
        }
        let greeting = if proto == "HTTP" {
            let _ = c
                .send_raw(
                    format!(
                        "HEAD / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                        cfg.hostname
                    )
                    .as_bytes(),
                )
                .await;
            c.line().await
        } else {
            c.line().await
        };
        match greeting {
            Ok(g) if !running => s.fail(
                format!(
                    "{label}: another program answers on this port: \"{}\"",
                    g.chars().take(70).collect::<String>()
                ),
                "Stop that program (often a Postfix, Exim or Dovecot installed with the system) or give Postern another address in [listen]; then start Postern.",
            ),
            Ok(g) if g.starts_with(want) && (proto == "HTTP" || g.contains("Postern")) => {
                s.ok(format!("{label}: answers as {proto}"))
            }
            Ok(g) => s.fail(
                format!(
                    "{label}: the answer is not Postern's {proto}: \"{}\"",
                    g.chars().take(70).collect::<String>()
                ),
                "Another program may share this port (SO_REUSEPORT) or a proxy sits in front; check with: ss -ltnp",
            ),
            Err(e) if running => s.fail(
                format!("{label}: no greeting: {e}"),
                "Look at the server's log around now.",
            ),
            Err(_) => {}
        }
    }
    s
}

fn conn_err(e: &ConnError) -> String {
    match e {
        ConnError::Refused => "connection refused".into(),
        ConnError::TimedOut => "no answer".into(),
        ConnError::Other(e) => e.clone(),
    }
}

fn certificate(cfg: &Config) -> Section {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut s = Section::new(format!("TLS certificate ({})", cfg.tls.cert));
    if cfg.tls.cert.is_empty() {
        s.fail(
            "no certificate is configured: mail programs cannot connect securely",
            "Set [tls] cert and key (postern init makes a self-signed pair; Let's Encrypt gives a trusted one).",
        );
        return s;
    }
    let (cert, key) = (
        std::path::Path::new(&cfg.tls.cert),
        std::path::Path::new(&cfg.tls.key),
    );
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(cert) {
        Ok(it) => it.flatten().collect(),
        Err(e) => {
            s.fail(
                format!("cannot read the certificate: {e}"),
                "Set [tls] cert to the PEM file of the certificate (with its intermediates), or create a self-signed one with postern init.",
            );
            return s;
        }
    };
    if let Err(e) = postern_net::tls::TlsStore::load(cert, key) {
        s.fail(
            format!("the certificate and key cannot be used: {e}"),
            "Check that [tls] key is the private key of this certificate (PEM, not encrypted).",
        );
        return s;
    }
    let report = match probe::assess_chain(&chain, &cfg.hostname, probe::roots(&[])) {
        Ok(r) => r,
        Err(e) => {
            s.fail(
                format!("cannot read the certificate: {e}"),
                "Set [tls] cert to a PEM file.",
            );
            return s;
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let names = report.names.join(", ");
    let until = report.facts.as_ref().map(|f| f.not_after);
    let date = |t: i64| postern_doctor::der::format_date(t);
    match until {
        Some(t) if t < now => s.fail(
            format!("the certificate expired on {}", date(t)),
            "Renew it (certbot renew, or your provider's tool), then: postern reload or send SIGHUP.",
        ),
        Some(t) if t - now < cfg.doctor.cert_warn.0 as i64 => s.warn(
            format!("the certificate expires on {}", date(t)),
            "Renew it now; Postern picks up the new file on SIGHUP without a restart.",
        ),
        Some(t) => s.ok(format!("valid until {}", date(t))),
        None => s.warn(
            "cannot read the certificate's dates",
            "Check the file is a PEM certificate.",
        ),
    }
    if report.name_ok {
        s.ok(format!("covers {}", cfg.hostname));
    } else {
        s.fail(
            format!("the certificate is for {names}, not for {}", cfg.hostname),
            format!(
                "Get a certificate that covers {} (e.g. certbot certonly -d {}), or set hostname to a name the certificate covers.",
                cfg.hostname, cfg.hostname
            ),
        );
    }
    match &report.trust_error {
        None => s.ok("issued by a trusted authority, chain complete"),
        Some(e) if report.facts.as_ref().is_some_and(|f| f.self_signed) => s.warn(
            format!("the certificate is not trusted: {e}"),
            "Mail programs will warn until you install a certificate from a public authority (Let's Encrypt is free); servers sending you mail accept it.",
        ),
        Some(e) => s.fail(
            format!("the certificate is not trusted: {e}"),
            if chain.len() == 1 {
                "The file holds only the server's certificate: append the intermediate certificates (certbot's fullchain.pem, not cert.pem)."
            } else {
                "Check the chain in the file: the server's certificate first, then each intermediate, from a trusted authority."
            },
        ),
    }
    s
}

fn local_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we read and then free; nothing is kept.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut p = list;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match (*a).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

fn fqdn(n: &str) -> String {
    format!("{}.", n.trim_end_matches('.'))
}

fn strip(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

/// The addresses other servers see: `public_ip` when set, else the hostname's.
async fn public_ips(cfg: &Config, r: &TokioResolver) -> Vec<IpAddr> {
    if let Ok(ip) = cfg.doctor.public_ip.parse::<IpAddr>() {
        return vec![ip];
    }
    match r.lookup_ip(fqdn(&cfg.hostname).as_str()).await {
        Ok(l) => l.iter().collect(),
        Err(_) => Vec::new(),
    }
}

async fn hostname(cfg: &Config, r: &TokioResolver) -> Section {
    let host = &cfg.hostname;
    let mut s = Section::new(format!("Host name {host}"));
    let addrs: Vec<IpAddr> = match r.lookup_ip(fqdn(host).as_str()).await {
        Ok(l) => l.iter().collect(),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        s.fail(
            format!("{host} has no address in DNS"),
            format!(
                "Publish an A record (and AAAA for IPv6): {host}.  A  <this server's public IP>"
            ),
        );
    } else {
        let local = local_ips();
        let list = addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let public: Option<IpAddr> = cfg.doctor.public_ip.parse().ok();
        let unreachable = |a: &IpAddr| match a {
            IpAddr::V4(v) => v.is_loopback() || v.is_private() || v.is_link_local(),
            IpAddr::V6(v) => v.is_loopback() || (v.segments()[0] & 0xfe00) == 0xfc00,
        };
        if addrs.iter().all(unreachable) {
            s.warn(
                format!("{host} is {list}: a private address that servers on the internet cannot reach"),
                "Fine for a test or internal server; for mail from the internet, publish this server's public IP in the A record.",
            );
        } else if addrs
            .iter()
            .any(|a| local.contains(a) || Some(*a) == public)
        {
            s.ok(format!("{host} is {list}, this server"));
        } else {
            s.warn(
                format!("{host} is {list}, which is not an address of this machine"),
                "Fine behind NAT or port forwarding (then set [doctor] public_ip); otherwise point the A record to this server.",
            );
        }
    }
    // Reverse DNS, forward-confirmed.
    for ip in public_ips(cfg, r).await {
        let names: Vec<String> = match r.reverse_lookup(ip).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|a| match &a.data {
                    RData::PTR(p) => Some(strip(&p.0.to_utf8())),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let fix = format!(
            "Ask whoever gives you the IP address (hosting provider, ISP) to set the reverse DNS (PTR) of {ip} to {host}; many receivers refuse mail from an IP whose name does not match."
        );
        if names.is_empty() {
            s.fail(format!("{ip} has no reverse DNS (PTR) name"), fix);
        } else if !names.iter().any(|n| n == &strip(host)) {
            s.fail(
                format!(
                    "the reverse DNS of {ip} is {}, not {host}",
                    names.join(", ")
                ),
                fix,
            );
        } else {
            let back = r
                .lookup_ip(fqdn(host).as_str())
                .await
                .map(|l| l.iter().any(|a| a == ip))
                .unwrap_or(false);
            if back {
                s.ok(format!(
                    "reverse DNS of {ip} is {host}, and {host} leads back to it"
                ));
            } else {
                s.fail(
                    format!(
                        "the reverse DNS of {ip} is {host}, but {host} does not lead back to {ip}"
                    ),
                    format!("Add {ip} to the A/AAAA records of {host}."),
                );
            }
        }
    }
    s
}

async fn dns_records(cfg: &Config, r: &TokioResolver, domain: &str) -> Section {
    let mut s = Section::new(format!("DNS records for {domain}"));
    for rec in dns::records(cfg, domain) {
        if matches!(rec.check, dns::Check::Manual) || rec.kind == "A" {
            continue;
        }
        // Without these, mail does not arrive or is taken for spam.
        let essential =
            rec.kind == "MX" || rec.value.contains("v=spf1") || rec.value.contains("v=DKIM1");
        let line = format!("{}  {}  {}", rec.name, rec.kind, rec.value);
        match dns::judge(&rec, r, &cfg.hostname).await {
            dns::Verdict::Ok(found) => s.ok(format!("{} {}: {found}", rec.kind, rec.name)),
            dns::Verdict::Skipped => {}
            dns::Verdict::Missing => s.push(
                if essential { Level::Fail } else { Level::Warn },
                format!("{} {} is missing: {}", rec.kind, rec.name, rec.why),
                Some(format!("Publish: {line}")),
            ),
            dns::Verdict::Wrong(found) => s.push(
                if essential { Level::Fail } else { Level::Warn },
                format!("{} {} is wrong: {found}", rec.kind, rec.name),
                Some(format!("Publish instead: {line}")),
            ),
        }
    }
    s
}

/// A network in relay_networks that reaches beyond private addresses.
fn public_range(c: &Cidr) -> bool {
    match c.addr {
        IpAddr::V4(ip) => {
            !(ip.is_loopback() || ip.is_private() || ip.is_link_local()) || c.prefix < 8
        }
        IpAddr::V6(ip) => {
            let seg = ip.segments()[0];
            !(ip.is_loopback() || (seg & 0xfe00) == 0xfc00 || (seg & 0xffc0) == 0xfe80)
                || c.prefix < 7
        }
    }
}

async fn relaying(cfg: &Config, running: bool, local_domain: Option<&str>) -> Section {
    let mut s = Section::new("Relaying (mail to other domains without logging in)");
    let mut static_ok = true;
    for n in &cfg.smtp.relay_networks {
        let Ok(c) = n.parse::<Cidr>() else { continue };
        let wide = match c.addr {
            IpAddr::V4(_) => c.prefix < 24,
            IpAddr::V6(_) => c.prefix < 48,
        };
        if public_range(&c) {
            static_ok = false;
            let level = if wide { Level::Fail } else { Level::Warn };
            s.push(
                level,
                format!("smtp.relay_networks has {n}: every machine there may send mail anywhere through this server"),
                Some("Keep relay_networks to your own machines (private ranges such as 10.0.0.0/8 or single addresses); everyone else should log in on port 587.".into()),
            );
        }
    }
    if static_ok {
        s.ok(if cfg.smtp.relay_networks.is_empty() {
            "only logged-in users may send to other domains (relay_networks is empty)".to_string()
        } else {
            format!(
                "relay_networks trusts private networks only: {}",
                cfg.smtp.relay_networks.join(", ")
            )
        });
    }
    let Some(&(_, addr)) = cfg
        .listen
        .sockets()
        .iter()
        .find(|(k, _)| *k == ListenerKind::Smtp)
    else {
        return s;
    };
    if !running {
        s.info("relay probes skipped: the server is not running");
        return s;
    }
    let target = reachable(addr);
    let ours = local_domain.unwrap_or("example.com");
    let probes = [
        (
            "probe@example.org".to_string(),
            "probe@example.net".to_string(),
        ),
        (
            format!("postmaster@{ours}"),
            "probe@example.net".to_string(),
        ),
        ("".to_string(), "probe@example.net".to_string()),
        (
            "probe@example.org".to_string(),
            format!("probe%example.net@{ours}"),
        ),
        (
            "probe@example.org".to_string(),
            format!("probe@example.net@{ours}"),
        ),
        (
            "probe@example.org".to_string(),
            format!("@{ours}:probe@example.net"),
        ),
        (
            "probe@example.org".to_string(),
            format!("\"probe@example.net\"@{ours}"),
        ),
    ];
    match relay_probes(target, &probes).await {
        Ok(accepted) if accepted.is_empty() => s.ok(format!(
            "{} relay probes from {} to port {} were all refused",
            probes.len(),
            target.ip(),
            target.port()
        )),
        Ok(accepted) => {
            let (from, to, reply) = &accepted[0];
            let more = match accepted.len() - 1 {
                0 => String::new(),
                n => format!(", and {n} more of the {} probes", probes.len()),
            };
            s.fail(
                format!(
                    "OPEN RELAY: from {}, MAIL FROM:<{from}> RCPT TO:<{to}> was accepted ({reply}){more}",
                    target.ip()
                ),
                "Spammers find open relays within hours and your IP gets blocklisted: remove public networks from smtp.relay_networks and restart.",
            );
        }
        Err(e) => s.warn(
            format!("relay probes could not run: {e}"),
            "Check that the smtp listener answers.",
        ),
    }
    s
}

/// Each probe in its own transaction; returns those whose RCPT was accepted.
async fn relay_probes(
    target: SocketAddr,
    probes: &[(String, String)],
) -> Result<Vec<(String, String, String)>, String> {
    let tcp = probe::tcp(target, TIMEOUT)
        .await
        .map_err(|e| conn_err(&e))?;
    let mut c = Conn::plain(tcp, TIMEOUT);
    let (code, _) = c.smtp_reply().await?;
    if code != 220 {
        return Err(format!("greeting {code}"));
    }
    c.send("EHLO doctor.postern.invalid").await?;
    c.smtp_reply().await?;
    let mut accepted = Vec::new();
    for (from, to) in probes {
        c.send(&format!("MAIL FROM:<{from}>")).await?;
        let (code, _) = c.smtp_reply().await?;
        if code == 250 {
            c.send(&format!("RCPT TO:<{to}>")).await?;
            let (code, lines) = c.smtp_reply().await?;
            if (200..300).contains(&code) {
                accepted.push((
                    from.clone(),
                    to.clone(),
                    format!("{code} {}", lines.join(" ")),
                ));
            }
        }
        c.send("RSET").await?;
        c.smtp_reply().await?;
    }
    let _ = c.send("QUIT").await;
    Ok(accepted)
}

async fn outbound(cfg: &Config) -> Section {
    let mut s = Section::new("Outgoing mail");
    let resolver = match postern_queue::route::resolver(&cfg.dns.nameservers) {
        Ok(r) => r,
        Err(e) => {
            s.fail(format!("no DNS resolver: {e}"), "Check [dns] nameservers.");
            return s;
        }
    };
    let router = postern_queue::route::Router::new(resolver, cfg.delivery.remote_port);
    let (what, hosts) = if !cfg.relay.host.is_empty() {
        (
            format!("the smarthost {}", cfg.relay.host),
            router.smarthost(&cfg.relay.host).await,
        )
    } else if !cfg.doctor.probe_domain.is_empty() {
        (
            format!("the mail server of {}", cfg.doctor.probe_domain),
            router.route(&cfg.doctor.probe_domain).await,
        )
    } else {
        s.info("outbound check skipped ([doctor] probe_domain is empty)");
        return s;
    };
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => {
            s.warn(
                format!("cannot find {what}: {e:?}"),
                "Check that this machine's DNS works (postern uses [dns] nameservers, else /etc/resolv.conf).",
            );
            return s;
        }
    };
    let Some(host) = hosts.first() else {
        s.warn(format!("{what} has no address"), "Check DNS.");
        return s;
    };
    let mut last = None;
    let wait = Duration::from_secs(cfg.delivery.connect_timeout.0.max(1));
    for a in &host.addrs {
        match probe::tcp(*a, wait).await {
            Ok(t) => {
                let mut c = Conn::plain(t, TIMEOUT);
                match c.smtp_reply().await {
                    Ok((220, _)) => {
                        let _ = c.send("QUIT").await;
                        s.ok(format!(
                            "{what} ({}, {a}) answers on port {}",
                            host.name,
                            a.port()
                        ));
                        return s;
                    }
                    Ok((code, lines)) => {
                        last = Some(format!("it answered {code} {}", lines.join(" ")));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(e) => last = Some(conn_err(&e)),
        }
    }
    let port = host.addrs.first().map(|a| a.port()).unwrap_or(25);
    let why = last.unwrap_or_default();
    if cfg.relay.host.is_empty() {
        s.fail(
            format!("cannot reach {what} ({}) on port {port}: {why}", host.name),
            "Many providers block outgoing port 25. Ask yours to open it, or send through a smarthost: in [relay] set host = \"smtp.provider.example:587\", username and password.",
        );
    } else {
        s.fail(
            format!("cannot reach {what} ({}) on port {port}: {why}", host.name),
            "Check [relay] host and port; try it with: swaks --server HOST:PORT --tls --quit-after EHLO.",
        );
    }
    s
}

/// The clock against an NTP server (SNTP, RFC 4330): DKIM signatures, TLS certificates and
/// message dates all depend on it.
async fn clock(cfg: &Config) -> Section {
    let mut s = Section::new("Clock");
    let server = &cfg.doctor.ntp_server;
    if server.is_empty() {
        s.info("clock check skipped ([doctor] ntp_server is empty)");
        return s;
    }
    match ntp_offset(server).await {
        Ok(off) => {
            let abs = off.abs();
            let dir = if off > 0.0 { "behind" } else { "ahead of" };
            if abs >= 120.0 {
                s.fail(
                    format!("this server's clock is {abs:.0} s {dir} {server}"),
                    "Turn on time synchronisation (timedatectl set-ntp true, or install chrony); a wrong clock breaks DKIM and certificate checks and misdates mail.",
                );
            } else if abs >= 10.0 {
                s.warn(
                    format!("this server's clock is {abs:.0} s {dir} {server}"),
                    "Turn on time synchronisation (timedatectl set-ntp true, or install chrony).",
                );
            } else {
                s.ok(format!("within {abs:.1} s of {server}"));
            }
        }
        Err(e) => s.warn(
            format!("cannot ask {server} for the time: {e}"),
            "Allow outgoing UDP port 123, or set [doctor] ntp_server to a reachable NTP server.",
        ),
    }
    s
}

/// Seconds to add to our clock to match the server's.
async fn ntp_offset(server: &str) -> Result<f64, String> {
    let addr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(addr).await.map_err(|e| e.to_string())?;
    let mut req = [0u8; 48];
    req[0] = 0x23; // version 4, client
    let t0 = now_f64();
    sock.send(&req).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let t3 = now_f64();
    if n < 48 || buf[0] & 0x07 != 4 {
        return Err("not an NTP answer".into());
    }
    let secs = u32::from_be_bytes(buf[40..44].try_into().unwrap()) as f64;
    let frac = u32::from_be_bytes(buf[44..48].try_into().unwrap()) as f64 / 4294967296.0;
    let server_time = secs + frac - 2_208_988_800.0;
    Ok(server_time - (t0 + t3) / 2.0)
}

fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn storage(cfg: &Config, access: &Access) -> Section {
    let mut s = Section::new(format!("Storage and queue ({})", cfg.data_dir.display()));
    match free_space(&cfg.data_dir) {
        Some(free) => {
            let gib = free as f64 / (1u64 << 30) as f64;
            if free < cfg.smtp.max_message_size.0 {
                s.fail(
                    format!("{gib:.2} GiB free: less than one message of the largest size"),
                    "Free space now: Postern answers 452 (try later) to every message until then.",
                );
            } else if free < cfg.doctor.disk_warn_free.0 {
                s.warn(
                    format!("only {gib:.2} GiB free"),
                    "Free space or grow the disk before it fills up ([doctor] disk_warn_free sets this threshold).",
                );
            } else {
                s.ok(format!("{gib:.1} GiB free"));
            }
        }
        None => s.warn(
            "cannot read the free space of the data directory",
            "Check that the data directory exists and is readable.",
        ),
    }
    let wanted = [
        cfg.smtp.max_connections,
        cfg.pop3.max_connections,
        cfg.imap.max_connections,
        cfg.http.max_connections,
    ]
    .into_iter()
    .max()
    .unwrap_or(0) as u64;
    match open_file_limit(cfg, access).await {
        Some(n) if n < wanted => s.warn(
            format!(
                "the server may have {n} files open at once, but a listener allows {wanted} connections (each is a file)"
            ),
            "Raise the limit (LimitNOFILE= in the systemd unit, or ulimit -n before postern serve) or lower max_connections; past it, new connections fail.",
        ),
        Some(n) => s.ok(format!(
            "open-file limit {n}: room for {wanted} connections on a listener"
        )),
        None => {}
    }
    if cfg.storage.backend == "postgres" {
        database(cfg, &mut s).await;
    }
    let entries: Vec<QueueInfo> = match admin(cfg, access, AdminRequest::QueueList).await {
        Ok(AdminReply::Queue { entries }) => entries,
        Ok(_) => Vec::new(),
        Err(e) => {
            s.warn(
                format!("cannot read the queue: {e}"),
                "Check the server's log.",
            );
            return s;
        }
    };
    if entries.is_empty() {
        s.ok("the outgoing queue is empty");
        return s;
    }
    let now = postern_store::now();
    let oldest = entries.iter().map(|e| e.created).min().unwrap_or(now);
    let age = now.saturating_sub(oldest).max(0) as u64;
    let deferred = entries.iter().filter(|e| e.attempts > 0).count();
    let mut errors: Vec<(String, usize)> = Vec::new();
    for e in &entries {
        if let Some(err) = &e.last_error {
            match errors.iter_mut().find(|(x, _)| x == err) {
                Some((_, n)) => *n += 1,
                None => errors.push((err.clone(), 1)),
            }
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    let summary = format!(
        "{} message(s) waiting, {deferred} after failed attempts, the oldest for {}",
        entries.len(),
        human_age(age)
    );
    if age > cfg.doctor.queue_warn_age.0 {
        let common = errors
            .iter()
            .take(3)
            .map(|(e, n)| format!("{n}x {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        s.warn(
            if common.is_empty() {
                summary
            } else {
                format!("{summary}; most common errors: {common}")
            },
            "See each message with postern queue list / postern queue show ID and postern trace --id; the remote reply says why (blocklisted IP, wrong DNS, full mailbox...).",
        );
    } else {
        s.ok(summary);
    }
    s
}

/// The PostgreSQL database of `storage.url`: reachable, its schema this build's, room for
/// every node's connections.
async fn database(cfg: &Config, s: &mut Section) {
    let h = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        postern_store::postgres::inspect(&cfg.storage.url),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            s.fail(
                format!("cannot use the PostgreSQL database of storage.url: {e}"),
                "Check storage.url (host, port, user, database name), that PostgreSQL runs and accepts this host in pg_hba.conf, and the password.",
            );
            return;
        }
        Err(_) => {
            s.fail(
                "the PostgreSQL server of storage.url does not answer within 10 s",
                "Check that PostgreSQL runs and that a firewall lets this host reach its port.",
            );
            return;
        }
    };
    let version = format!("PostgreSQL {}", h.server_version);
    if h.schema > h.schema_wanted {
        s.warn(
            format!("{version}: the database's schema (version {}) is newer than this node's (version {})", h.schema, h.schema_wanted),
            "Another node runs a newer Postern: upgrade this one too, so all nodes read the data the same way.",
        );
    } else if h.schema < h.schema_wanted {
        s.ok(format!(
            "{version}: schema version {} (this node updates it to {} when it starts; postern storage migrate does it now)",
            h.schema, h.schema_wanted
        ));
    } else {
        s.ok(format!(
            "{version}: schema version {}; nodes running on this database: {}",
            h.schema, h.nodes
        ));
    }
    let per_node = cfg.storage.max_connections as i64 + 1;
    let room = h.max_connections - h.connections;
    if h.max_connections > 0 && room < per_node {
        s.warn(
            format!(
                "{} of PostgreSQL's {} connections in use: not enough left for another node's {per_node}",
                h.connections, h.max_connections
            ),
            "Raise max_connections in postgresql.conf, or lower storage.max_connections on each node (each node keeps that many plus one for events).",
        );
    } else if h.max_connections > 0 {
        s.ok(format!(
            "{} of PostgreSQL's {} connections in use",
            h.connections, h.max_connections
        ));
    }
}

/// The running server's open-file limit (from /proc), or, with no server running, the
/// limit it would get (it raises its soft limit to the hard one at start).
async fn open_file_limit(cfg: &Config, access: &Access) -> Option<u64> {
    let own = || {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
    };
    if let Access::Server(_) = access {
        return own().map(|l| l.rlim_cur);
    }
    match admin(cfg, access, AdminRequest::Ping).await {
        Ok(AdminReply::Pong { pid }) if pid != std::process::id() => {
            let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        }
        _ => own().map(|l| l.rlim_max),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn free_space(path: &std::path::Path) -> Option<u64> {
    postern_net::disk_space(path).map(|(free, _)| free)
}

async fn blocklists(cfg: &Config, r: &TokioResolver) -> Section {
    let mut s = Section::new("Blocklists");
    let ips = public_ips(cfg, r).await;
    if ips.is_empty() {
        s.warn(
            "no public IP to look up",
            "Set [doctor] public_ip, or publish the A record of the hostname.",
        );
        return s;
    }
    for ip in ips {
        let reversed = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
            }
            IpAddr::V6(v6) => v6
                .octets()
                .iter()
                .rev()
                .map(|b| format!("{:x}.{:x}", b & 0xf, b >> 4))
                .collect::<Vec<_>>()
                .join("."),
        };
        for zone in &cfg.doctor.dnsbl {
            let name = format!("{reversed}.{}.", zone.trim_end_matches('.'));
            let listed: Vec<Ipv4Addr> = match r.lookup(name.as_str(), RecordType::A).await {
                Ok(l) => l
                    .answers()
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .filter(|a| a.octets()[0] == 127)
                    .collect(),
                Err(_) => Vec::new(),
            };
            if listed.is_empty() {
                s.ok(format!("{ip} is not listed on {zone}"));
                continue;
            }
            let reason = match r.lookup(name.as_str(), RecordType::TXT).await {
                Ok(l) => l
                    .answers()
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .next(),
                Err(_) => None,
            };
            s.fail(
                format!(
                    "{ip} is listed on {zone} ({}){}",
                    listed
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
                format!(
                    "Receivers using {zone} refuse your mail. Find out why on the list's website, fix the cause (an open relay, an infected machine, a compromised account), then request removal; meanwhile send through a smarthost ([relay] host)."
                ),
            );
        }
    }
    s
}
