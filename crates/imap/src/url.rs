//! IMAP URLs naming a message or a part of one (RFC 5092 `imessagepart`), as CATENATE takes
//! them (RFC 4469 5): absolute (`imap://user@host/INBOX;UIDVALIDITY=3/;UID=7/;SECTION=1.MIME`),
//! without the scheme (`//host/...`), from the server's root (`/INBOX/;UID=7`), or relative to
//! the selected mailbox (`;UID=7/;SECTION=2`, `Sub/;UID=7`). Only the syntax is read here;
//! whether the server, user, mailbox and message are the session's own is the caller's to
//! check.

use std::fmt;

/// The server part of an absolute URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The user (decoded), without `;AUTH=`.
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Which mailbox the URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxRef {
    /// `;UID=...` alone: the selected mailbox.
    Selected,
    /// From the server's root (UTF-8, decoded).
    Absolute(String),
    /// A path relative to the base, which ends at the selected mailbox (if any) and a `/`.
    Relative(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUrl {
    pub server: Option<Server>,
    pub mailbox: MailboxRef,
    pub uidvalidity: Option<u32>,
    pub uid: u32,
    /// The section as IMAP writes it (`1.2.HEADER`), decoded.
    pub section: Option<String>,
    /// `;PARTIAL=offset[.length]`.
    pub partial: Option<(u64, Option<u64>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(m: impl Into<String>) -> Result<T, UrlError> {
    Err(UrlError(m.into()))
}

/// `%XX` escapes undone; the result must be UTF-8.
pub fn decode(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(c) => out.push(c),
                None => return bad("a % not followed by two hex digits"),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError("not UTF-8 once decoded".into()))
}

/// `prefix` at the start of `s`, any case: the rest.
fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn nz(s: &str, what: &str) -> Result<u32, UrlError> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 && s.bytes().all(|c| c.is_ascii_digit()) => Ok(n),
        _ => bad(format!("{what} must be a number from 1 to 4294967295")),
    }
}

pub fn parse(url: &str) -> Result<MessageUrl, UrlError> {
    if url.contains('?') || url.contains('#') {
        return bad("a search or fragment names no single message");
    }
    if let Some(rest) = strip_ci(url, "imap://") {
        return network(rest);
    }
    if url.contains("://") {
        return bad("only imap: URLs name messages here");
    }
    if let Some(rest) = url.strip_prefix("//") {
        return network(rest);
    }
    if let Some(path) = url.strip_prefix('/') {
        let (mailbox, params) = split_path(path)?;
        if mailbox.is_empty() {
            return bad("no mailbox before ;UID=");
        }
        return message(None, MailboxRef::Absolute(mailbox), params);
    }
    if url.starts_with(';') {
        if strip_ci(url, ";UID=").is_none() {
            return bad("a relative URL must start with ;UID= (or a mailbox)");
        }
        return message(None, MailboxRef::Selected, url);
    }
    let (mailbox, params) = split_path(url)?;
    if mailbox.is_empty() {
        return bad("empty URL");
    }
    message(None, MailboxRef::Relative(mailbox), params)
}

/// `[user[;AUTH=x]@]host[:port]/path`.
fn network(rest: &str) -> Result<MessageUrl, UrlError> {
    let Some(slash) = rest.find('/') else {
        return bad("no message after the server");
    };
    let (authority, path) = (&rest[..slash], &rest[slash + 1..]);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let user = match userinfo {
        Some(u) => {
            // ;AUTH=<type> or ;AUTH=* says how to log in: the session is logged in already.
            let name = match u.find(';') {
                Some(i) if strip_ci(&u[i..], ";AUTH=").is_some() => &u[..i],
                Some(_) => return bad("unknown parameter in the user part"),
                None => u,
            };
            if name.is_empty() {
                None
            } else {
                Some(decode(name)?)
            }
        }
        None => None,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some(end) = v6.find(']') else {
            return bad("unclosed [ in the host");
        };
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return bad("bad host"),
        };
        (v6[..end].to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if p.bytes().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return bad("bad port"),
        },
        None => None,
    };
    if host.is_empty() {
        return bad("no host");
    }
    let server = Server {
        user,
        host: decode(&host)?,
        port,
    };
    let (mailbox, params) = split_path(path)?;
    if mailbox.is_empty() {
        return bad("no mailbox before ;UID=");
    }
    message(Some(server), MailboxRef::Absolute(mailbox), params)
}

/// The mailbox (decoded, up to the first `;`, a `/` before it dropped) and the parameters.
fn split_path(path: &str) -> Result<(String, &str), UrlError> {
    let Some(semi) = path.find(';') else {
        return bad("no ;UID= names a message");
    };
    let (raw, params) = path.split_at(semi);
    // "INBOX/;UID=1": the slash separates; "INBOX;UIDVALIDITY=2/;UID=1" has none.
    let raw = raw.strip_suffix('/').unwrap_or(raw);
    let name = decode(raw)?;
    Ok((
        postern_store::embedded::normalize_mailbox_name(&name),
        params,
    ))
}

/// `[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]` (or, relative, from `;UID=`).
fn message(
    server: Option<Server>,
    mailbox: MailboxRef,
    params: &str,
) -> Result<MessageUrl, UrlError> {
    let mut url = MessageUrl {
        server,
        mailbox,
        uidvalidity: None,
        uid: 0,
        section: None,
        partial: None,
    };
    let mut rest = params;
    if let Some(v) = strip_ci(rest, ";UIDVALIDITY=") {
        let end = v.find('/').unwrap_or(v.len());
        url.uidvalidity = Some(nz(&v[..end], "UIDVALIDITY")?);
        rest = &v[end..];
        rest = rest.strip_prefix('/').unwrap_or(rest);
    }
    // The parameters in order, each `;NAME=value` and separated by `/`.
    let mut step = 0;
    for p in rest.split("/;").map(|p| p.strip_prefix(';').unwrap_or(p)) {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        let name = name.to_ascii_uppercase();
        match (name.as_str(), step) {
            ("UID", 0) => {
                url.uid = nz(value, "UID")?;
                step = 1;
            }
            ("SECTION", 1) => {
                let s = decode(value)?;
                if s.is_empty() {
                    return bad("empty SECTION");
                }
                url.section = Some(s);
                step = 2;
            }
            ("PARTIAL", 1 | 2) => {
                let (o, l) = match value.split_once('.') {
                    Some((o, l)) => (o, Some(l)),
                    None => (value, None),
                };
                let offset = match o.parse::<u64>() {
                    Ok(n) if o.bytes().all(|c| c.is_ascii_digit()) => n,
                    _ => return bad("PARTIAL takes offset[.length]"),
                };
                let length = match l {
                    Some(l) => Some(nz(l, "PARTIAL's length")? as u64),
                    None => None,
                };
                url.partial = Some((offset, length));
                step = 3;
            }
            ("URLAUTH" | "EXPIRE", _) => return bad("URLAUTH is not offered"),
            ("UID", _) | ("SECTION", _) | ("PARTIAL", _) => {
                return bad(format!("{name} out of place"));
            }
            _ => return bad(format!("unknown URL parameter {name:?}")),
        }
    }
    if url.uid == 0 {
        return bad("no ;UID= names a message");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> MailboxRef {
        MailboxRef::Absolute(s.into())
    }

    #[test]
    fn absolute_and_relative_forms() {
        let u = parse("imap://it%40example.test;AUTH=*@mail.example.test:993/Work%2FA;UIDVALIDITY=7/;UID=20/;SECTION=1.2.MIME/;PARTIAL=10.5").unwrap();
        assert_eq!(
            u.server,
            Some(Server {
                user: Some("it@example.test".into()),
                host: "mail.example.test".into(),
                port: Some(993)
            })
        );
        assert_eq!(u.mailbox, mb("Work/A"));
        assert_eq!(u.uidvalidity, Some(7));
        assert_eq!(u.uid, 20);
        assert_eq!(u.section.as_deref(), Some("1.2.MIME"));
        assert_eq!(u.partial, Some((10, Some(5))));

        let u = parse("/inbox/;uid=3/;section=header").unwrap();
        assert_eq!(
            (u.server, u.mailbox, u.uid, u.section.as_deref()),
            (None, mb("INBOX"), 3, Some("header"))
        );
        let u = parse("/Work/Projects;UIDVALIDITY=9/;UID=4").unwrap();
        assert_eq!((u.mailbox, u.uidvalidity), (mb("Work/Projects"), Some(9)));
        let u = parse("//[::1]:143/INBOX/;UID=1/;PARTIAL=100000").unwrap();
        assert_eq!(u.server.unwrap().host, "::1");
        assert_eq!(u.partial, Some((100000, None)));
        let u = parse(";UID=5/;SECTION=HEADER.FIELDS%20(Subject%20From)").unwrap();
        assert_eq!(u.mailbox, MailboxRef::Selected);
        assert_eq!(u.section.as_deref(), Some("HEADER.FIELDS (Subject From)"));
        let u = parse("Sub%20box/;UID=2").unwrap();
        assert_eq!(u.mailbox, MailboxRef::Relative("Sub box".into()));
        let u = parse("/%C3%9Cbung/;UID=1").unwrap();
        assert_eq!(u.mailbox, mb("Übung"));
    }

    #[test]
    fn what_names_no_message_is_refused() {
        for bad in [
            "",
            "/INBOX",
            "/INBOX/;UID=0",
            "/INBOX/;UID=x",
            "/;UID=1",
            "/INBOX/;SECTION=1",
            "/INBOX/;UID=1/;SECTION=1/;UID=2",
            "/INBOX/;UID=1/;PARTIAL=1.0",
            "/INBOX/;UID=1/;URLAUTH=anonymous:internal:91354a",
            "/INBOX/;UID=1/;EXPIRE=2030-01-01T00:00:00Z",
            "/INBOX?SUBJECT%20x",
            "http://host/INBOX/;UID=1",
            "imap://host",
            "imap://host:99999/INBOX/;UID=1",
            "/INB%2/;UID=1",
            "/%FF/;UID=1",
            ";SECTION=1",
            "/INBOX;UIDVALIDITY=0/;UID=1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
