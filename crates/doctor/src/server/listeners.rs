//! Our own ports, tried from this machine: does Postern answer on each, and does the MX
//! refuse to relay for strangers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use postern_config::{Cidr, Config, ListenerKind};

use super::{TIMEOUT, conn_err, reachable};
use crate::probe::{self, Conn};
use crate::report::{Level, Section};

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

pub(super) async fn listeners(cfg: &Config, running: bool) -> Section {
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

pub(super) async fn relaying(cfg: &Config, running: bool, local_domain: Option<&str>) -> Section {
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
