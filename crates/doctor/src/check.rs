//! `postern check ADDRESS`: do what a mail program does with an account's settings, against
//! any server, and name the detail that is wrong with the fix.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::der::format_date;
use crate::discover::{self, Proto, Published, Sec, Sources, Target};
use crate::net::{LookupError, Net};
use crate::probe::{Conn, ConnError};
use crate::report::{Report, Section};
use crate::session::{self, Caps, Login};

pub struct Options {
    pub address: String,
    pub password: String,
    /// The user name the mail program is set to; the address when None.
    pub username: Option<String>,
    /// Settings given by hand; when any is given only those are checked.
    pub given: Vec<Target>,
    pub discover: bool,
    pub autoconfig: Option<String>,
    pub autodiscover: Option<String>,
    /// Whether the mail program logs in to the outgoing server.
    pub smtp_auth: bool,
    pub roundtrip: bool,
    pub wait: Duration,
}

/// An address a test transaction names as recipient in another domain; never sent to.
const FOREIGN_RCPT: &str = "postern-check@example.org";
/// How long a plain-text server has to greet before we conclude it waits for TLS.
const GREETING_WAIT: Duration = Duration::from_secs(4);
/// Certificates that end sooner than this get a warning.
const EXPIRY_WARNING: i64 = 14 * 86400;

/// What is known about logging in, shared by the checks so that a wrong password is tried as
/// few times as possible (servers lock accounts after a few failures).
#[derive(Default)]
struct Logins {
    works: Option<String>,
    refused: bool,
}

/// A server that passed, for the round trip.
struct Usable {
    target: Target,
    user: Option<String>,
}

pub async fn run(net: &Net, o: &Options) -> Report {
    let mut report = Report::default();
    let domain = o
        .address
        .rsplit_once('@')
        .map(|x| x.1.to_ascii_lowercase())
        .unwrap_or_default();
    let mut disc = Section::new(format!("Settings for {domain}"));
    let published = if o.discover {
        let src = Sources {
            autoconfig: o.autoconfig.clone(),
            autodiscover: o.autodiscover.clone(),
            guess: o.given.is_empty(),
        };
        discover::discover(net, &o.address, &src, &mut disc).await
    } else {
        Published::default()
    };
    let targets: Vec<Target> = if o.given.is_empty() {
        let mut v = Vec::new();
        for p in [Proto::Imap, Proto::Pop3, Proto::Smtp] {
            if let Some(t) = published.first(p) {
                v.push(t.clone());
            }
        }
        if !v.iter().any(|t| t.proto != Proto::Smtp) {
            disc.fail(
                format!("no incoming (IMAP or POP3) server found for {domain}"),
                "Enter the incoming server your provider gives (--imap or --pop3); the domain publishes no settings (autoconfig, SRV) and the usual names do not answer.",
            );
        }
        if !v.iter().any(|t| t.proto == Proto::Smtp) {
            disc.fail(
                format!("no outgoing (SMTP) server found for {domain}"),
                "Enter the outgoing server your provider gives (--smtp).",
            );
        }
        v
    } else {
        o.given.clone()
    };
    if o.discover {
        report.sections.push(disc);
    }

    let mut logins = Logins::default();
    let mut usable = Vec::new();
    for t in &targets {
        let (section, ok) = check_target(net, o, t, &published, &mut logins).await;
        report.sections.push(section);
        if let Some(user) = ok {
            usable.push(Usable {
                target: t.clone(),
                user,
            });
        }
    }

    if o.roundtrip {
        report.sections.push(roundtrip(net, o, &usable).await);
    }
    report
}

fn title(t: &Target) -> String {
    let kind = if t.proto == Proto::Smtp {
        "Outgoing"
    } else {
        "Incoming"
    };
    let from = if t.source == "given" {
        String::new()
    } else {
        format!(" (from {})", t.source)
    };
    format!("{kind} mail, {}: {}{from}", t.proto.name(), t.describe())
}

/// The published setting for this protocol, when it differs from the one checked.
fn published_hint(t: &Target, p: &Published) -> Option<String> {
    let best = p.first(t.proto)?;
    if best.host.eq_ignore_ascii_case(&t.host) && best.port == t.port && best.sec == t.sec {
        return None;
    }
    Some(format!(
        "The settings published for this domain ({}) are: server {}, port {}, {}.",
        best.source,
        best.host,
        best.port,
        best.sec.label()
    ))
}

fn with_hint(fix: String, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{h} {fix}"),
        None => fix,
    }
}

/// Checks one server. Returns the findings and, when usable, Some(the user name that worked,
/// or None when no login was needed).
async fn check_target(
    net: &Net,
    o: &Options,
    t: &Target,
    p: &Published,
    logins: &mut Logins,
) -> (Section, Option<Option<String>>) {
    let mut s = Section::new(title(t));
    let host = t.host.as_str();
    let hint = published_hint(t, p);

    let addrs = match net.resolve(host).await {
        Ok(a) => {
            s.ok(format!("{host} is {}", join_ips(&a)));
            a
        }
        Err(LookupError::NoSuchName) => {
            s.fail(
                format!("the server name \"{host}\" does not exist"),
                with_hint(
                    "Check the spelling of the server name; your provider's help pages give the exact one (often mail.DOMAIN, imap.DOMAIN or smtp.DOMAIN).".into(),
                    hint,
                ),
            );
            return (s, None);
        }
        Err(LookupError::Failed(e)) => {
            s.fail(
                format!("cannot look up {host}: {e}"),
                "Check this computer's Internet connection and DNS settings, then try again.",
            );
            return (s, None);
        }
    };

    let mut conn = match net.connect(&addrs, t.port).await {
        Ok(c) => c,
        Err(e) => {
            let (what, fix) = connect_failure(net, t, &addrs, e, hint).await;
            s.fail(what, fix);
            return (s, None);
        }
    };

    // The security layer, and with it the greeting.
    let caps = match t.sec {
        Sec::Ssl => {
            if let Err(e) = conn.start_tls(host, net.roots.clone()).await {
                let plain = plain_greeting(net, &addrs, t.port).await;
                match plain {
                    Some(g) => s.fail(
                        format!(
                            "port {} of {host} starts in plain text ({}), but the setting is SSL/TLS",
                            t.port,
                            short(&g)
                        ),
                        format!(
                            "Set the connection security to STARTTLS for port {}, or keep SSL/TLS and use port {}.",
                            t.port,
                            t.proto.port(Sec::Ssl)
                        ),
                    ),
                    None => s.fail(
                        format!("the TLS handshake on port {} failed: {e}", t.port),
                        format!(
                            "Check the port and security: {} uses port {} with SSL/TLS or {} with STARTTLS.",
                            t.proto.name(),
                            t.proto.port(Sec::Ssl),
                            t.proto.port(Sec::StartTls)
                        ),
                    ),
                }
                return (s, None);
            }
            cert_findings(&mut s, &conn, host);
            match greet_and_caps(&mut s, &mut conn, t).await {
                Some(c) => c,
                None => return (s, None),
            }
        }
        Sec::StartTls | Sec::None => {
            if !conn.talks_first(GREETING_WAIT.min(net.timeout)).await {
                let tls_port = match net.connect(&addrs, t.port).await {
                    Ok(mut c2) => c2.start_tls(host, net.roots.clone()).await.is_ok(),
                    Err(_) => false,
                };
                if tls_port {
                    s.fail(
                        format!(
                            "port {} of {host} expects SSL/TLS from the first byte (it waits silently for a TLS handshake), but the setting is {}",
                            t.port,
                            t.sec.label()
                        ),
                        format!(
                            "Set the connection security to SSL/TLS for port {}, or keep STARTTLS and use port {}.",
                            t.port,
                            t.proto.port(Sec::StartTls)
                        ),
                    );
                } else {
                    s.fail(
                        format!(
                            "port {} of {host} accepts connections but says nothing",
                            t.port
                        ),
                        wrong_port_fix(t),
                    );
                }
                return (s, None);
            }
            let caps = match greet_and_caps(&mut s, &mut conn, t).await {
                Some(c) => c,
                None => return (s, None),
            };
            if t.sec == Sec::StartTls {
                if !caps.starttls {
                    s.fail(
                        format!("the server does not offer STARTTLS on port {}", t.port),
                        format!(
                            "Use SSL/TLS on port {} if the server has it; do not send your password unencrypted.",
                            t.proto.port(Sec::Ssl)
                        ),
                    );
                    return (s, None);
                }
                if let Err(e) = session::starttls(&mut conn, t.proto).await {
                    s.fail(
                        format!("the server refused STARTTLS: {e}"),
                        "Ask the server's administrator: STARTTLS is advertised but does not work.",
                    );
                    return (s, None);
                }
                if let Err(e) = conn.start_tls(host, net.roots.clone()).await {
                    s.fail(
                        format!("the TLS handshake after STARTTLS failed: {e}"),
                        "Ask the server's administrator to check its certificate and TLS settings.",
                    );
                    return (s, None);
                }
                cert_findings(&mut s, &conn, host);
                match session::caps(&mut conn, t.proto).await {
                    Ok(c) => c,
                    Err(e) => {
                        s.fail(
                            format!("the server stopped answering after STARTTLS: {e}"),
                            "Ask the server's administrator.",
                        );
                        return (s, None);
                    }
                }
            } else {
                let fix = if caps.starttls {
                    format!(
                        "Set the connection security to STARTTLS (the server offers it on port {}), or SSL/TLS on port {}.",
                        t.port,
                        t.proto.port(Sec::Ssl)
                    )
                } else {
                    format!(
                        "Use SSL/TLS on port {}, or STARTTLS on port {}, if the server offers them.",
                        t.proto.port(Sec::Ssl),
                        t.proto.port(Sec::StartTls)
                    )
                };
                s.warn(
                    "the connection is not encrypted: your password and your mail travel readable by anyone on the way",
                    fix,
                );
                caps
            }
        }
    };

    let usable = if t.proto == Proto::Smtp && !o.smtp_auth {
        smtp_send_test(&mut s, &mut conn, o, false)
            .await
            .then_some(None)
    } else {
        match login_step(&mut s, &mut conn, o, t, &caps, p, logins).await {
            Some(user) => {
                let ok = if t.proto == Proto::Smtp {
                    smtp_send_test(&mut s, &mut conn, o, true).await
                } else {
                    mailbox_info(&mut s, &mut conn, t.proto).await;
                    true
                };
                ok.then_some(Some(user))
            }
            None => None,
        }
    };
    session::quit(&mut conn, t.proto).await;
    (s, usable)
}

fn join_ips(a: &[IpAddr]) -> String {
    a.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(60).collect();
    format!("\"{s}\"")
}

fn wrong_port_fix(t: &Target) -> String {
    format!(
        "Check the port: {} uses port {} with SSL/TLS or port {} with STARTTLS.",
        t.proto.name(),
        t.proto.port(Sec::Ssl),
        t.proto.port(Sec::StartTls)
    )
}

async fn plain_greeting(net: &Net, addrs: &[IpAddr], port: u16) -> Option<String> {
    let mut c = net.connect(addrs, port).await.ok()?;
    if c.talks_first(GREETING_WAIT.min(net.timeout)).await {
        c.line().await.ok()
    } else {
        None
    }
}

async fn connect_failure(
    net: &Net,
    t: &Target,
    addrs: &[IpAddr],
    e: ConnError,
    hint: Option<String>,
) -> (String, String) {
    match e {
        ConnError::Refused => {
            let mut fix = hint.clone();
            if fix.is_none() {
                // Which of the usual ports does this host answer on?
                let quick = net.quick(Duration::from_secs(2));
                for sec in [Sec::Ssl, Sec::StartTls] {
                    let port = t.proto.port(sec);
                    if port != t.port && quick.connect(addrs, port).await.is_ok() {
                        fix = Some(format!(
                            "{} answers on port {port}: use port {port} with {}.",
                            t.host,
                            sec.label()
                        ));
                        break;
                    }
                }
            }
            (
                format!(
                    "nothing answers on port {} of {} (connection refused)",
                    t.port, t.host
                ),
                fix.unwrap_or_else(|| {
                    format!(
                        "{} The server may also be down, or this may be the wrong server name.",
                        wrong_port_fix(t)
                    )
                }),
            )
        }
        ConnError::TimedOut if t.proto == Proto::Smtp && t.port == 25 => (
            format!(
                "port 25 of {} does not answer within {} s",
                t.host,
                net.timeout.as_secs()
            ),
            "Many Internet providers block port 25 for their customers (it is for mail between servers). Send through port 587 with STARTTLS or port 465 with SSL/TLS, with your user name and password.".into(),
        ),
        ConnError::TimedOut => (
            format!(
                "port {} of {} does not answer within {} s",
                t.port,
                t.host,
                net.timeout.as_secs()
            ),
            with_hint(
                format!(
                    "A firewall (on this network, this computer, or the server's) may block port {}; {}",
                    t.port,
                    wrong_port_fix(t).to_lowercase()
                ),
                hint,
            ),
        ),
        ConnError::Other(e) => (
            format!("cannot connect to port {} of {}: {e}", t.port, t.host),
            "Check this computer's network connection.".into(),
        ),
    }
}

fn cert_findings(s: &mut Section, conn: &Conn, host: &str) {
    let Some((version, cert)) = &conn.tls else {
        return;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let names = if cert.names.is_empty() {
        "no name".to_string()
    } else {
        cert.names.join(", ")
    };
    let until = cert
        .facts
        .as_ref()
        .map(|f| format!(", valid until {}", format_date(f.not_after)))
        .unwrap_or_default();
    let expired = cert.facts.as_ref().is_some_and(|f| f.not_after < now) || cert.expired.is_some();
    let mut problem = false;
    if expired {
        problem = true;
        s.fail(
            format!(
                "the server's certificate has expired{}",
                cert.facts
                    .as_ref()
                    .map(|f| format!(" (on {})", format_date(f.not_after)))
                    .unwrap_or_default()
            ),
            "The server's administrator must renew the certificate; mail programs refuse or warn until then.",
        );
    } else if let Some(e) = &cert.trust_error {
        problem = true;
        let self_signed = cert.facts.as_ref().is_some_and(|f| f.self_signed);
        let fix = if self_signed {
            format!(
                "The administrator should install a certificate from a public authority (Let's Encrypt is free). For a private server, accept this certificate once on each device and compare its fingerprint: SHA-256 {}.",
                cert.fingerprint
            )
        } else {
            "The administrator should configure the full chain: the certificate followed by the intermediate certificates of the authority.".into()
        };
        s.fail(format!("the server's certificate is not trusted: {e}"), fix);
    }
    if !cert.name_ok {
        problem = true;
        let fix = match cert.names.first() {
            Some(n) if !n.starts_with("*.") => format!(
                "Use the name the certificate is for, {n}, as the server name; or the administrator adds {host} to the certificate."
            ),
            _ => format!("The administrator needs a certificate that covers {host}."),
        };
        s.fail(
            format!("the server's certificate is for {names}, not for {host}: mail programs warn about it or refuse"),
            fix,
        );
    }
    if !problem {
        match cert.facts.as_ref() {
            Some(f) if f.not_after - now < EXPIRY_WARNING => s.warn(
                format!(
                    "{version}; the certificate for {names} expires on {}",
                    format_date(f.not_after)
                ),
                "The server's administrator must renew the certificate within days.",
            ),
            _ => s.ok(format!(
                "{version}; certificate for {names}{until}, trusted"
            )),
        }
    }
}

async fn greet_and_caps(s: &mut Section, conn: &mut Conn, t: &Target) -> Option<Caps> {
    let g = match session::greeting(conn, t.proto).await {
        Ok(g) => g,
        Err(e) => {
            match session::proto_of_greeting(&e) {
                Some(other) if other != t.proto => s.fail(
                    format!(
                        "port {} of {} speaks {}, not {} (it said {})",
                        t.port,
                        t.host,
                        other.name(),
                        t.proto.name(),
                        short(&e)
                    ),
                    wrong_port_fix(t),
                ),
                _ => s.fail(
                    format!("the server turned the connection away: {}", short(&e)),
                    "The server may be overloaded or refuse your network; try again later or ask its administrator.",
                ),
            }
            return None;
        }
    };
    s.ok(format!("greeting: {}", short(&g)));
    match session::caps(conn, t.proto).await {
        Ok(c) => Some(c),
        Err(e) => {
            s.fail(
                format!("the server did not answer the capability question: {e}"),
                "Ask the server's administrator.",
            );
            None
        }
    }
}

async fn login_step(
    s: &mut Section,
    conn: &mut Conn,
    o: &Options,
    t: &Target,
    caps: &Caps,
    p: &Published,
    logins: &mut Logins,
) -> Option<String> {
    let typed = o.username.clone().unwrap_or_else(|| o.address.clone());
    let user = logins.works.clone().unwrap_or_else(|| typed.clone());
    let r = session::login(conn, t.proto, caps, &user, &o.password).await;
    match r {
        Login::Ok => {
            s.ok(format!("logged in as {user}"));
            logins.works = Some(user.clone());
            Some(user)
        }
        Login::Refused(text) if text.contains("is a shared mailbox") => {
            logins.refused = true;
            s.fail(
                format!("{user} is a shared mailbox: no one logs in as it"),
                format!(
                    "Set up the mail program with your own address and password: the shared mailbox then appears in it under Shared/{user}."
                ),
            );
            None
        }
        Login::Refused(text) => {
            if !logins.refused && logins.works.is_none() {
                let alt = match user.rsplit_once('@') {
                    Some((local, _)) => local.to_string(),
                    None => o.address.clone(),
                };
                if alt != user
                    && matches!(
                        session::login(conn, t.proto, caps, &alt, &o.password).await,
                        Login::Ok
                    )
                {
                    let fix = if alt.contains('@') {
                        format!("Use your full email address, {alt}, as the user name.")
                    } else {
                        format!("Use only the part before the @, \"{alt}\", as the user name.")
                    };
                    s.fail(
                        format!(
                            "the server refused the user name \"{user}\" but accepts \"{alt}\" with the same password"
                        ),
                        fix,
                    );
                    logins.works = Some(alt.clone());
                    return Some(alt);
                }
            }
            logins.refused = true;
            let lower = text.to_ascii_lowercase();
            let what = if lower.contains("unknown user")
                || lower.contains("no such user")
                || lower.contains("user not found")
            {
                format!(
                    "the server says there is no account \"{user}\" ({})",
                    short(&text)
                )
            } else {
                format!(
                    "the server refused the user name \"{user}\" with this password ({})",
                    short(&text)
                )
            };
            let mut fix = format!(
                "Check the password: capital letters count (look at Caps Lock), and typing it is safer than pasting. If it is right, ask the administrator whether the account {user} exists; the server does not say which of the two is wrong."
            );
            if let Some(pu) = &p.username
                && !pu.eq_ignore_ascii_case(&user)
            {
                fix = format!("The published settings give the user name as \"{pu}\". {fix}");
            } else if !user.contains('@') {
                fix = format!("Most servers want the full email address as the user name. {fix}");
            }
            s.fail(what, fix);
            None
        }
        Login::NeedsTls(text) => {
            s.fail(
                format!(
                    "the server does not take passwords over an unencrypted connection ({})",
                    short(&text)
                ),
                format!(
                    "Set the connection security to SSL/TLS (port {}) or STARTTLS (port {}).",
                    t.proto.port(Sec::Ssl),
                    t.proto.port(Sec::StartTls)
                ),
            );
            None
        }
        Login::Temporary(text) => {
            s.fail(
                format!("the server refuses logins for now ({})", short(&text)),
                "Too many failed logins lock an account, or your address, for a while: wait a few minutes, then try once with the right password.",
            );
            None
        }
        Login::NotOffered => {
            if t.port == 25 {
                s.fail(
                    "port 25 offers no login: it is for mail arriving from other servers, not for sending from a mail program",
                    "Send through port 587 with STARTTLS or port 465 with SSL/TLS, with your user name and password.",
                );
            } else if t.sec == Sec::None && caps.starttls {
                s.fail(
                    "the server offers no login before the connection is encrypted",
                    format!(
                        "Set the connection security to STARTTLS for port {}.",
                        t.port
                    ),
                );
            } else if t.proto == Proto::Smtp {
                s.fail(
                    format!(
                        "the server offers no login on port {}: it takes mail there from other servers, not from mail programs",
                        t.port
                    ),
                    with_hint(
                        "Send through the submission port: 587 with STARTTLS or 465 with SSL/TLS.".into(),
                        published_hint(t, p),
                    ),
                );
            } else {
                s.fail(
                    format!("the server offers no login on port {}", t.port),
                    with_hint(wrong_port_fix(t), published_hint(t, p)),
                );
            }
            None
        }
        Login::Broken(e) => {
            s.fail(
                format!("logging in failed: {e}"),
                "Ask the server's administrator; the server answered in an unexpected way.",
            );
            None
        }
    }
}

/// Whether the outgoing server would take a message from the address to another domain; the
/// transaction is reset before any message is sent.
async fn smtp_send_test(s: &mut Section, conn: &mut Conn, o: &Options, authed: bool) -> bool {
    let needs_auth = |s: &mut Section, text: &str| {
        s.fail(
            format!("the outgoing server accepts mail only after you log in ({})", short(text)),
            "In your mail program, turn on \"My outgoing server (SMTP) requires authentication\", with the same user name and password as for incoming mail.",
        );
    };
    let step = async |conn: &mut Conn, cmd: String| -> Result<(u16, String), String> {
        conn.send(&cmd).await?;
        let (code, lines) = conn.smtp_reply().await?;
        Ok((code, format!("{code} {}", lines.join(" "))))
    };
    let (code, text) = match step(conn, format!("MAIL FROM:<{}>", o.address)).await {
        Ok(r) => r,
        Err(e) => {
            s.fail(
                format!("the outgoing server stopped answering: {e}"),
                "Try again; if it persists, ask the server's administrator.",
            );
            return false;
        }
    };
    if code == 530 || (!authed && text.contains("5.7.0")) {
        needs_auth(s, &text);
        return false;
    }
    if code != 250 {
        s.fail(
            format!("the outgoing server refuses {} as sender ({})", o.address, short(&text)),
            "Send from the address that belongs to this account, or ask the administrator to allow this one.",
        );
        return false;
    }
    let (code, text) = match step(conn, format!("RCPT TO:<{FOREIGN_RCPT}>")).await {
        Ok(r) => r,
        Err(e) => {
            s.fail(
                format!("the outgoing server stopped answering: {e}"),
                "Try again; if it persists, ask the server's administrator.",
            );
            return false;
        }
    };
    let _ = step(conn, "RSET".into()).await;
    let lower = text.to_ascii_lowercase();
    if code == 250 || code == 251 {
        s.ok(format!(
            "the server takes mail from {} to other domains (tested without sending)",
            o.address
        ));
        true
    } else if !authed
        && (code == 530
            || lower.contains("relay")
            || text.contains("5.7.1")
            || text.contains("5.7.0"))
    {
        needs_auth(s, &text);
        false
    } else {
        s.fail(
            format!("the outgoing server refuses mail to other domains ({})", short(&text)),
            if authed {
                "Ask the server's administrator: this account may not send to other domains."
            } else {
                "Log in to the outgoing server: turn on \"My outgoing server (SMTP) requires authentication\"."
            },
        );
        false
    }
}

async fn mailbox_info(s: &mut Section, conn: &mut Conn, proto: Proto) {
    match proto {
        Proto::Imap => {
            if let Ok((untagged, status)) = conn.imap("c4", "STATUS INBOX (MESSAGES)").await
                && status.starts_with("c4 OK")
                && let Some(n) = untagged.iter().find_map(|l| {
                    l.rsplit_once("MESSAGES ")
                        .and_then(|(_, n)| n.trim_end_matches(')').trim().parse::<u64>().ok())
                })
            {
                s.ok(format!("the inbox holds {n} message(s)"));
            }
        }
        Proto::Pop3 => {
            if conn.send("STAT").await.is_ok()
                && let Ok(l) = conn.line().await
                && let Some(n) = l
                    .strip_prefix("+OK ")
                    .and_then(|r| r.split_whitespace().next())
            {
                s.ok(format!("the mailbox holds {n} message(s)"));
            }
        }
        Proto::Smtp => {}
    }
}

/// A connection through the security layer, greeted and with capabilities; for the round
/// trip, after the checks found the settings work.
async fn open(net: &Net, t: &Target) -> Result<(Conn, Caps), String> {
    let addrs = net.resolve(&t.host).await.map_err(|e| format!("{e:?}"))?;
    let mut c = net
        .connect(&addrs, t.port)
        .await
        .map_err(|e| format!("{e:?}"))?;
    if t.sec == Sec::Ssl {
        c.start_tls(&t.host, net.roots.clone()).await?;
    }
    session::greeting(&mut c, t.proto).await?;
    let mut caps = session::caps(&mut c, t.proto).await?;
    if t.sec == Sec::StartTls {
        session::starttls(&mut c, t.proto).await?;
        c.start_tls(&t.host, net.roots.clone()).await?;
        caps = session::caps(&mut c, t.proto).await?;
    }
    Ok((c, caps))
}

async fn roundtrip(net: &Net, o: &Options, usable: &[Usable]) -> Section {
    let mut s = Section::new("Test message: sent to yourself, then looked for in the inbox");
    let smtp = usable.iter().find(|u| u.target.proto == Proto::Smtp);
    let inbox = usable
        .iter()
        .find(|u| u.target.proto == Proto::Imap)
        .or_else(|| usable.iter().find(|u| u.target.proto == Proto::Pop3));
    let (Some(smtp), Some(inbox)) = (smtp, inbox) else {
        let missing = if smtp.is_none() {
            "outgoing"
        } else {
            "incoming"
        };
        s.fail(
            format!("not tried: the {missing} server settings do not work yet"),
            "Fix the problems above first.",
        );
        return s;
    };
    let token: String = {
        use rand::Rng;
        let mut r = rand::rng();
        (0..16)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[r.random_range(0..36)]))
            .collect()
    };
    let subject = format!("Postern check {token}");
    let sent = Instant::now();
    let reply = match send_test(net, o, smtp, &subject).await {
        Ok(r) => r,
        Err(e) => {
            s.fail(
                format!("sending the test message failed: {e}"),
                "The outgoing settings passed the checks but sending did not; ask the server's administrator, with the reply above.",
            );
            return s;
        }
    };
    s.ok(format!(
        "sent through {} ({})",
        smtp.target.host,
        short(&reply)
    ));
    let deadline = sent + o.wait;
    loop {
        match find_test(net, o, inbox, &token).await {
            Ok(true) => {
                s.ok(format!(
                    "found in the inbox by {} after {:.1} s, then deleted",
                    inbox.target.proto.name(),
                    sent.elapsed().as_secs_f64()
                ));
                return s;
            }
            Ok(false) => {}
            Err(e) => {
                s.fail(
                    format!("looking for the test message failed: {e}"),
                    "Try again.",
                );
                return s;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = reply
        .split_whitespace()
        .find(|w| w.len() >= 8 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or("");
    s.fail(
        format!(
            "the server accepted the test message but it was not in the inbox after {} s",
            o.wait.as_secs()
        ),
        format!(
            "Look in the Junk/Spam folder and at any filters or forwarding rules. The administrator can follow the message by its id{}{}.",
            if id.is_empty() { "" } else { " " },
            if id.is_empty() { String::new() } else { format!("{id} (on Postern: postern trace --id {id})") }
        ),
    );
    s
}

async fn send_test(net: &Net, o: &Options, u: &Usable, subject: &str) -> Result<String, String> {
    let (mut c, caps) = open(net, &u.target).await?;
    if let Some(user) = &u.user
        && !matches!(
            session::login(&mut c, Proto::Smtp, &caps, user, &o.password).await,
            Login::Ok
        )
    {
        return Err("the login that worked before was refused".into());
    }
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let msg = format!(
        "From: <{a}>\r\nTo: <{a}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{}@postern-check.invalid>\r\n\r\nThis message tests your mail settings; it is deleted once found.\r\n.\r\n",
        subject.replace(' ', "-"),
        a = o.address
    );
    for cmd in [
        format!("MAIL FROM:<{}>", o.address),
        format!("RCPT TO:<{}>", o.address),
        "DATA".into(),
    ] {
        c.send(&cmd).await?;
        let (code, lines) = c.smtp_reply().await?;
        if !(200..400).contains(&code) {
            return Err(format!("{cmd}: {code} {}", lines.join(" ")));
        }
    }
    c.send_raw(msg.as_bytes()).await?;
    let (code, lines) = c.smtp_reply().await?;
    session::quit(&mut c, Proto::Smtp).await;
    if code != 250 {
        return Err(format!("{code} {}", lines.join(" ")));
    }
    Ok(format!("{code} {}", lines.join(" ")))
}

/// Looks for the test message once; deletes it when found.
async fn find_test(net: &Net, o: &Options, u: &Usable, token: &str) -> Result<bool, String> {
    let (mut c, caps) = open(net, &u.target).await?;
    let user = u.user.clone().unwrap_or_else(|| o.address.clone());
    if !matches!(
        session::login(&mut c, u.target.proto, &caps, &user, &o.password).await,
        Login::Ok
    ) {
        return Err("the login that worked before was refused".into());
    }
    let found = match u.target.proto {
        Proto::Imap => {
            let (_, st) = c.imap("f1", "SELECT INBOX").await?;
            if !st.starts_with("f1 OK") {
                return Err(st);
            }
            let (untagged, st) = c
                .imap("f2", &format!("UID SEARCH SUBJECT \"{token}\""))
                .await?;
            if !st.starts_with("f2 OK") {
                return Err(st);
            }
            let uids: Vec<String> = untagged
                .iter()
                .filter_map(|l| l.strip_prefix("* SEARCH"))
                .flat_map(|r| r.split_whitespace().map(str::to_string))
                .collect();
            if !uids.is_empty() {
                let set = uids.join(",");
                c.imap("f3", &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
                    .await?;
                if caps.uidplus {
                    c.imap("f4", &format!("UID EXPUNGE {set}")).await?;
                }
                true
            } else {
                false
            }
        }
        Proto::Pop3 => {
            c.send("LIST").await?;
            let mut ids = Vec::new();
            if c.line().await?.starts_with("+OK") {
                loop {
                    let l = c.line().await?;
                    if l == "." {
                        break;
                    }
                    if let Some(n) = l.split_whitespace().next() {
                        ids.push(n.to_string());
                    }
                }
            }
            let mut hit = None;
            // The newest few are enough: the message was just sent.
            for id in ids.iter().rev().take(20) {
                c.send(&format!("TOP {id} 0")).await?;
                if !c.line().await?.starts_with("+OK") {
                    continue;
                }
                let mut has = false;
                loop {
                    let l = c.line().await?;
                    if l == "." {
                        break;
                    }
                    if l.contains(token) {
                        has = true;
                    }
                }
                if has {
                    hit = Some(id.clone());
                    break;
                }
            }
            if let Some(id) = &hit {
                c.send(&format!("DELE {id}")).await?;
                c.line().await?;
            }
            hit.is_some()
        }
        Proto::Smtp => false,
    };
    session::quit(&mut c, u.target.proto).await;
    // POP3 deletes at QUIT: wait for its answer.
    if u.target.proto == Proto::Pop3 {
        let _ = c.line().await;
    }
    Ok(found)
}
