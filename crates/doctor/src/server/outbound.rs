//! Outgoing mail: can this machine reach the smarthost, or another domain's MX, on its port.

use std::time::Duration;

use postern_config::Config;

use super::{TIMEOUT, conn_err};
use crate::probe::{self, Conn};
use crate::report::Section;

pub(super) async fn outbound(cfg: &Config) -> Section {
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
