//! What DNS says about us: the host name and its reverse, each local domain's records, and
//! our addresses on blocklists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use postern_config::Config;

use crate::net::{bare_name, txt_records};
use crate::records::{self, Verdict};
use crate::report::{Level, Section};

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

pub(super) async fn hostname(cfg: &Config, r: &TokioResolver) -> Section {
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
                    RData::PTR(p) => Some(bare_name(&p.0.to_utf8())),
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
        } else if !names.iter().any(|n| n == &bare_name(host)) {
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

pub(super) async fn records(cfg: &Config, r: &TokioResolver, domain: &str) -> Section {
    let mut s = Section::new(format!("DNS records for {domain}"));
    for rec in records::records(cfg, domain) {
        if matches!(rec.check, records::Check::Manual) || rec.kind == "A" {
            continue;
        }
        // Without these, mail does not arrive or is taken for spam.
        let essential =
            rec.kind == "MX" || rec.value.contains("v=spf1") || rec.value.contains("v=DKIM1");
        let line = format!("{}  {}  {}", rec.name, rec.kind, rec.value);
        match records::judge(&rec, r, &cfg.hostname).await {
            Verdict::Ok(found) => s.ok(format!("{} {}: {found}", rec.kind, rec.name)),
            Verdict::Skipped => {}
            Verdict::Missing => s.push(
                if essential { Level::Fail } else { Level::Warn },
                format!("{} {} is missing: {}", rec.kind, rec.name, rec.why),
                Some(format!("Publish: {line}")),
            ),
            Verdict::Wrong(found) => s.push(
                if essential { Level::Fail } else { Level::Warn },
                format!("{} {} is wrong: {found}", rec.kind, rec.name),
                Some(format!("Publish instead: {line}")),
            ),
        }
    }
    s
}

pub(super) async fn blocklists(cfg: &Config, r: &TokioResolver) -> Section {
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
            let reason = txt_records(r, &name)
                .await
                .and_then(|t| t.into_iter().next());
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
