//! Finding a domain's mail settings the ways mail programs do: autoconfig, Autodiscover, SRV
//! records (RFC 6186, RFC 8314), then the usual names and ports.

use std::time::Duration;

use serde::Serialize;

use crate::net::Net;
use crate::report::Section;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Proto {
    Imap,
    Pop3,
    Smtp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Imap => "IMAP",
            Proto::Pop3 => "POP3",
            Proto::Smtp => "SMTP",
        }
    }

    /// The standard port for each kind of security.
    pub fn port(self, sec: Sec) -> u16 {
        match (self, sec) {
            (Proto::Imap, Sec::Ssl) => 993,
            (Proto::Imap, _) => 143,
            (Proto::Pop3, Sec::Ssl) => 995,
            (Proto::Pop3, _) => 110,
            (Proto::Smtp, Sec::Ssl) => 465,
            (Proto::Smtp, _) => 587,
        }
    }

    /// What the port usually means, when a setting names a well-known one.
    pub fn usual_sec(self, port: u16) -> Option<Sec> {
        match (self, port) {
            (Proto::Imap, 993) | (Proto::Pop3, 995) | (Proto::Smtp, 465) => Some(Sec::Ssl),
            (Proto::Imap, 143) | (Proto::Pop3, 110) | (Proto::Smtp, 587 | 25) => {
                Some(Sec::StartTls)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sec {
    /// TLS from the first byte ("SSL/TLS").
    Ssl,
    StartTls,
    None,
}

impl Sec {
    pub fn label(self) -> &'static str {
        match self {
            Sec::Ssl => "SSL/TLS",
            Sec::StartTls => "STARTTLS",
            Sec::None => "no encryption",
        }
    }

    pub fn parse(s: &str) -> Option<Sec> {
        match s.to_ascii_lowercase().as_str() {
            "ssl" | "tls" | "ssl/tls" | "implicit" => Some(Sec::Ssl),
            "starttls" => Some(Sec::StartTls),
            "none" | "plain" | "plaintext" => Some(Sec::None),
            _ => None,
        }
    }
}

/// One server setting: a host, a port and a security type, and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub proto: Proto,
    pub host: String,
    pub port: u16,
    pub sec: Sec,
    pub source: String,
}

impl Target {
    pub fn describe(&self) -> String {
        format!("{}, port {}, {}", self.host, self.port, self.sec.label())
    }

    /// `HOST[:PORT][:ssl|starttls|none]`, the missing parts filled in the usual way.
    pub fn parse(proto: Proto, s: &str) -> Result<Target, String> {
        let mut parts: Vec<&str> = s.split(':').collect();
        let mut sec = None;
        if parts.len() > 1
            && let Some(x) = Sec::parse(parts[parts.len() - 1])
        {
            sec = Some(x);
            parts.pop();
        }
        let mut port = None;
        if parts.len() > 1 {
            port = Some(
                parts
                    .pop()
                    .unwrap()
                    .parse::<u16>()
                    .map_err(|_| format!("{s:?}: the port must be a number"))?,
            );
        }
        let host = parts.join(":");
        if host.is_empty() {
            return Err(format!("{s:?}: no server name"));
        }
        let sec = sec
            .or_else(|| port.and_then(|p| proto.usual_sec(p)))
            .unwrap_or(Sec::Ssl);
        let port = port.unwrap_or_else(|| proto.port(sec));
        Ok(Target {
            proto,
            host,
            port,
            sec,
            source: "given".into(),
        })
    }
}

/// What the domain publishes (or what guessing found), best first per protocol.
#[derive(Debug, Default)]
pub struct Published {
    pub targets: Vec<Target>,
    /// The user name the published settings ask for, with %EMAILADDRESS% filled in.
    pub username: Option<String>,
}

impl Published {
    pub fn first(&self, proto: Proto) -> Option<&Target> {
        self.targets.iter().find(|t| t.proto == proto)
    }

    fn has(&self, proto: Proto) -> bool {
        self.first(proto).is_some()
    }
}

pub struct Sources {
    pub autoconfig: Option<String>,
    pub autodiscover: Option<String>,
    /// Try names and ports when nothing is published.
    pub guess: bool,
}

pub async fn discover(net: &Net, address: &str, src: &Sources, sec: &mut Section) -> Published {
    let domain = address.rsplit_once('@').map(|x| x.1).unwrap_or(address);
    let local = address.rsplit_once('@').map(|x| x.0).unwrap_or(address);
    let mut p = Published::default();

    // Autoconfig (Thunderbird and others).
    let autoconfig_urls = match &src.autoconfig {
        Some(u) => vec![u.clone()],
        None => vec![
            format!("https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}"),
            format!(
                "https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={address}"
            ),
            format!("http://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}"),
        ],
    };
    let mut found = false;
    for url in &autoconfig_urls {
        match crate::http::fetch(net, url, None).await {
            Ok((200, body)) => {
                let (targets, user) = parse_autoconfig(&body, address, local, domain, url);
                if targets.is_empty() {
                    sec.warn(
                        format!("autoconfig at {url} lists no mail server"),
                        "Publish a config-v1.1.xml with incomingServer and outgoingServer entries.",
                    );
                    continue;
                }
                sec.ok(format!("settings published by autoconfig at {url}"));
                p.targets.extend(targets);
                p.username = p.username.or(user);
                found = true;
                break;
            }
            Ok((code, _)) => sec.info(format!("no autoconfig at {url} (HTTP {code})")),
            Err(e) => sec.info(format!("no autoconfig at {url}: {e}")),
        }
    }

    // Autodiscover (Outlook), POX flavour.
    if !found {
        let urls = match &src.autodiscover {
            Some(u) => vec![u.clone()],
            None if src.autoconfig.is_some() => vec![],
            None => vec![
                format!("https://autodiscover.{domain}/autodiscover/autodiscover.xml"),
                format!("https://{domain}/autodiscover/autodiscover.xml"),
            ],
        };
        let req = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"
        );
        for url in &urls {
            match crate::http::fetch(net, url, Some(&req)).await {
                Ok((200, body)) => {
                    let targets = parse_autodiscover(&body, url);
                    if targets.is_empty() {
                        continue;
                    }
                    sec.ok(format!("settings published by Autodiscover at {url}"));
                    p.targets.extend(targets);
                    break;
                }
                Ok((code, _)) => sec.info(format!("no Autodiscover at {url} (HTTP {code})")),
                Err(e) => sec.info(format!("no Autodiscover at {url}: {e}")),
            }
        }
    }

    // SRV records, implicit TLS first (RFC 8314).
    let srv = [
        ("_imaps", Proto::Imap, Sec::Ssl),
        ("_imap", Proto::Imap, Sec::StartTls),
        ("_pop3s", Proto::Pop3, Sec::Ssl),
        ("_pop3", Proto::Pop3, Sec::StartTls),
        ("_submissions", Proto::Smtp, Sec::Ssl),
        ("_submission", Proto::Smtp, Sec::StartTls),
    ];
    let mut srv_found = Vec::new();
    for (label, proto, s) in srv {
        if p.has(proto) || srv_found.iter().any(|t: &Target| t.proto == proto) {
            continue;
        }
        let name = format!("{label}._tcp.{domain}");
        if let Some((host, port)) = net.srv(&name).await.into_iter().next() {
            srv_found.push(Target {
                proto,
                host,
                port,
                sec: s,
                source: format!("SRV {name}"),
            });
        }
    }
    if !srv_found.is_empty() {
        sec.ok(format!(
            "SRV records for {}",
            srv_found
                .iter()
                .map(|t| t.proto.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        p.targets.extend(srv_found);
    }

    // The usual names, when nothing says otherwise.
    if src.guess {
        for (proto, names) in [
            (Proto::Imap, ["imap", "mail", ""]),
            (Proto::Pop3, ["pop3", "pop", "mail"]),
            (Proto::Smtp, ["smtp", "mail", ""]),
        ] {
            if p.has(proto) {
                continue;
            }
            if let Some(t) = guess(net, proto, domain, &names).await {
                sec.info(format!("guessed {} server: {}", proto.name(), t.describe()));
                p.targets.push(t);
            }
        }
    }
    for proto in [Proto::Imap, Proto::Pop3, Proto::Smtp] {
        if !p.has(proto) {
            sec.info(format!("no {} server found for {domain}", proto.name()));
        }
    }
    p
}

async fn guess(net: &Net, proto: Proto, domain: &str, names: &[&str]) -> Option<Target> {
    let quick = net.quick(Duration::from_secs(3));
    for n in names {
        let host = if n.is_empty() {
            domain.to_string()
        } else {
            format!("{n}.{domain}")
        };
        let Ok(addrs) = quick.resolve(&host).await else {
            continue;
        };
        for s in [Sec::Ssl, Sec::StartTls] {
            let port = proto.port(s);
            if quick.connect(&addrs, port).await.is_ok() {
                return Some(Target {
                    proto,
                    host,
                    port,
                    sec: s,
                    source: "guess".into(),
                });
            }
        }
    }
    None
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

/// Blocks `<name ...>...</name>`, each with its opening tag's attributes.
fn blocks<'a>(xml: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    let mut rest = xml;
    let open = format!("<{name}");
    let close = format!("</{name}>");
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with([' ', '>', '\t', '\n']) {
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        let attrs = &after[..gt];
        // The close tag is looked for after the open tag's end: `<x </x>` has none.
        let Some(end) = after[gt + 1..].find(&close).map(|e| e + gt + 1) else {
            break;
        };
        out.push((attrs, &after[gt + 1..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn fill(s: &str, address: &str, local: &str, domain: &str) -> String {
    s.replace("%EMAILADDRESS%", address)
        .replace("%EMAILLOCALPART%", local)
        .replace("%EMAILDOMAIN%", domain)
}

pub fn parse_autoconfig(
    xml: &str,
    address: &str,
    local: &str,
    domain: &str,
    url: &str,
) -> (Vec<Target>, Option<String>) {
    let mut out = Vec::new();
    let mut user = None;
    for kind in ["incomingServer", "outgoingServer"] {
        for (attrs, body) in blocks(xml, kind) {
            let proto = if attrs.contains("\"imap\"") {
                Proto::Imap
            } else if attrs.contains("\"pop3\"") {
                Proto::Pop3
            } else if attrs.contains("\"smtp\"") {
                Proto::Smtp
            } else {
                continue;
            };
            let (Some(host), Some(port)) = (
                tag(body, "hostname"),
                tag(body, "port").and_then(|p| p.parse().ok()),
            ) else {
                continue;
            };
            let sec = match tag(body, "socketType").unwrap_or("") {
                "SSL" => Sec::Ssl,
                "STARTTLS" => Sec::StartTls,
                _ => Sec::None,
            };
            if user.is_none() {
                user = tag(body, "username").map(|u| fill(u, address, local, domain));
            }
            out.push(Target {
                proto,
                host: fill(host, address, local, domain),
                port,
                sec,
                source: format!("autoconfig {url}"),
            });
        }
    }
    (out, user)
}

pub fn parse_autodiscover(xml: &str, url: &str) -> Vec<Target> {
    let mut out = Vec::new();
    for (_, body) in blocks(xml, "Protocol") {
        let proto = match tag(body, "Type").unwrap_or("") {
            "IMAP" => Proto::Imap,
            "POP3" => Proto::Pop3,
            "SMTP" => Proto::Smtp,
            _ => continue,
        };
        let (Some(host), Some(port)) = (
            tag(body, "Server"),
            tag(body, "Port").and_then(|p| p.parse().ok()),
        ) else {
            continue;
        };
        let sec = match (tag(body, "Encryption"), tag(body, "SSL")) {
            (Some(e), _) if e.eq_ignore_ascii_case("ssl") => Sec::Ssl,
            (Some(e), _) if e.eq_ignore_ascii_case("tls") => Sec::StartTls,
            (Some(e), _) if e.eq_ignore_ascii_case("none") => Sec::None,
            (_, Some(s)) if s.eq_ignore_ascii_case("off") => Sec::None,
            _ => proto.usual_sec(port).unwrap_or(Sec::Ssl),
        };
        out.push(Target {
            proto,
            host: host.to_string(),
            port,
            sec,
            source: format!("Autodiscover {url}"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_with_a_close_tag_before_the_open_tag_ends() {
        assert!(blocks("<Protocol </Protocol>", "Protocol").is_empty());
        assert!(blocks("<Protocol </Protocol>>", "Protocol").is_empty());
        assert_eq!(blocks("<a x='1'>b</a>", "a"), vec![(" x='1'", "b")]);
    }

    #[test]
    fn settings_from_text() {
        let t = Target::parse(Proto::Imap, "imap.example.test").unwrap();
        assert_eq!((t.port, t.sec), (993, Sec::Ssl));
        let t = Target::parse(Proto::Imap, "imap.example.test:143").unwrap();
        assert_eq!((t.port, t.sec), (143, Sec::StartTls));
        let t = Target::parse(Proto::Smtp, "mail.example.test:2525:starttls").unwrap();
        assert_eq!((t.port, t.sec), (2525, Sec::StartTls));
        let t = Target::parse(Proto::Smtp, "mail.example.test:ssl").unwrap();
        assert_eq!((t.port, t.sec), (465, Sec::Ssl));
        assert!(Target::parse(Proto::Pop3, "x:notaport").is_err());
    }

    #[test]
    fn autoconfig_and_autodiscover() {
        let xml = r#"<clientConfig><emailProvider id="x">
<incomingServer type="imap"><hostname>imap.%EMAILDOMAIN%</hostname><port>993</port><socketType>SSL</socketType><username>%EMAILLOCALPART%</username></incomingServer>
<outgoingServer type="smtp"><hostname>smtp.x.test</hostname><port>587</port><socketType>STARTTLS</socketType></outgoingServer>
</emailProvider></clientConfig>"#;
        let (t, user) = parse_autoconfig(xml, "a@x.test", "a", "x.test", "u");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].host, "imap.x.test");
        assert_eq!((t[1].proto, t[1].sec), (Proto::Smtp, Sec::StartTls));
        assert_eq!(user.as_deref(), Some("a"));
        let ad = "<Protocol><Type>IMAP</Type><Server>m.x.test</Server><Port>993</Port><SSL>on</SSL></Protocol><Protocol><Type>SMTP</Type><Server>m.x.test</Server><Port>587</Port><Encryption>TLS</Encryption></Protocol>";
        let t = parse_autodiscover(ad, "u");
        assert_eq!((t[0].sec, t[1].sec), (Sec::Ssl, Sec::StartTls));
    }
}
