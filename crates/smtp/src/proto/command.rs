//! SMTP command lines (RFC 5321 4.1) with the ESMTP parameters we support.

use super::reply::Reply;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MailFrom {
    /// Empty for the null reverse-path `<>`.
    pub address: String,
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// RFC 3461 ENVID, still xtext-encoded.
    pub envid: Option<String>,
    pub requiretls: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RcptTo {
    pub address: String,
    /// RFC 3461 NOTIFY as given (upper-cased), e.g. "SUCCESS,FAILURE".
    pub notify: Option<String>,
    /// RFC 3461 ORCPT as given: "addr-type;xtext".
    pub orcpt: Option<String>,
}

fn syntax(msg: impl Into<String>) -> Reply {
    Reply::new(501, "5.5.4", msg)
}

fn unknown_param(p: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let line = std::str::from_utf8(line)
        .map_err(|_| Reply::new(500, "5.5.2", "Command is not valid UTF-8"))?;
    if line.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(Reply::new(500, "5.5.2", "Command contains a NUL, CR or LF"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let no_args = |c: Command, name: &str| {
        if rest.trim().is_empty() {
            Ok(c)
        } else {
            Err(syntax(format!("{name} takes no arguments")))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" | "EHLO" => {
            let host = rest.trim();
            if host.is_empty() || host.contains(' ') {
                return Err(syntax(format!(
                    "Syntax: {} your.host.name",
                    verb.to_ascii_uppercase()
                )));
            }
            Ok(if verb.eq_ignore_ascii_case("HELO") {
                Command::Helo(host.to_string())
            } else {
                Command::Ehlo(host.to_string())
            })
        }
        "MAIL" => parse_mail(rest).map(Command::Mail),
        "RCPT" => parse_rcpt(rest).map(Command::Rcpt),
        "DATA" => no_args(Command::Data, "DATA"),
        "BDAT" => {
            let mut it = rest.split_ascii_whitespace();
            let size = it
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| syntax("Syntax: BDAT size [LAST]"))?;
            let last = match it.next() {
                None => false,
                Some(l) if l.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(syntax("Syntax: BDAT size [LAST]")),
            };
            if it.next().is_some() {
                return Err(syntax("Syntax: BDAT size [LAST]"));
            }
            Ok(Command::Bdat { size, last })
        }
        "RSET" => no_args(Command::Rset, "RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "AUTH" => {
            let mut it = rest.split_ascii_whitespace();
            let mechanism = it
                .next()
                .ok_or_else(|| syntax("Syntax: AUTH mechanism [initial-response]"))?
                .to_ascii_uppercase();
            let initial = it.next().map(str::to_string);
            if it.next().is_some() {
                return Err(syntax("Syntax: AUTH mechanism [initial-response]"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "" => Err(Reply::new(500, "5.5.2", "Empty command")),
        _ => Err(Reply::new(
            500,
            "5.5.2",
            format!("Command {} not recognized", printable(verb)),
        )),
    }
}

fn printable(s: &str) -> String {
    s.chars().take(32).filter(|c| !c.is_control()).collect()
}

/// `FROM:` / `TO:` with optional spaces around the colon (seen from real clients).
fn strip_keyword<'a>(rest: &'a str, kw: &str) -> Option<&'a str> {
    let r = rest.trim_start();
    // `get` rather than indexing: the cut may fall inside a multi-byte character.
    if !r.get(..kw.len())?.eq_ignore_ascii_case(kw) {
        return None;
    }
    let r = r[kw.len()..].trim_start();
    r.strip_prefix(':').map(str::trim_start)
}

/// Splits `<path> params...` into the path (without brackets) and the parameter text.
fn split_path(s: &str) -> Result<(String, &str), Reply> {
    if let Some(inner) = s.strip_prefix('<') {
        let mut in_quote = false;
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' if in_quote => escaped = true,
                '"' => in_quote = !in_quote,
                '>' if !in_quote => return Ok((inner[..i].to_string(), &inner[i + 1..])),
                _ => {}
            }
        }
        Err(syntax("Missing '>' after the address"))
    } else {
        // No brackets: tolerated from old clients when the address has no spaces.
        let end = s.find(' ').unwrap_or(s.len());
        if s[..end].is_empty() {
            return Err(syntax("Missing address"));
        }
        Ok((s[..end].to_string(), &s[end..]))
    }
}

/// Checks the mailbox syntax and drops a source route (RFC 5321 4.1.2 A-d-l, ignored per C.1).
fn mailbox(path: &str, what: &str) -> Result<String, Reply> {
    let mut p = path;
    if p.starts_with('@') {
        match p.find(':') {
            Some(i) => p = &p[i + 1..],
            None => return Err(syntax(format!("Bad source route in {what} address"))),
        }
    }
    let (local, domain) = split_mailbox(p).ok_or_else(|| {
        Reply::new(
            553,
            "5.1.3",
            format!("{what} address {} is not name@domain", printable(p)),
        )
    })?;
    if local.is_empty() || local.len() > 64 {
        return Err(Reply::new(
            553,
            "5.1.3",
            format!("Bad local part in {what} address"),
        ));
    }
    if !valid_local(local) {
        return Err(Reply::new(
            553,
            "5.1.3",
            format!("Bad characters in {what} address {}", printable(p)),
        ));
    }
    if !valid_domain(domain) {
        return Err(Reply::new(
            553,
            "5.1.2",
            format!("Bad domain in {what} address {}", printable(p)),
        ));
    }
    Ok(p.to_string())
}

/// The last `@` outside a quoted local part separates local and domain.
fn split_mailbox(p: &str) -> Option<(&str, &str)> {
    if p.starts_with('"') {
        let mut escaped = false;
        for (i, c) in p.char_indices().skip(1) {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                let rest = &p[i + 1..];
                return rest.strip_prefix('@').map(|d| (&p[..i + 1], d));
            }
        }
        None
    } else {
        p.rsplit_once('@')
    }
}

fn valid_local(l: &str) -> bool {
    if l.starts_with('"') {
        return l.len() >= 2 && l.ends_with('"') && !l.chars().any(|c| c.is_control());
    }
    !l.starts_with('.')
        && !l.ends_with('.')
        && !l.contains("..")
        && l.chars()
            .all(|c| c.is_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
}

fn valid_domain(d: &str) -> bool {
    if let Some(lit) = d.strip_prefix('[') {
        return lit.ends_with(']') && lit.len() > 1;
    }
    !d.is_empty()
        && d.len() <= 255
        && d.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

/// RFC 3461 xtext: printable ASCII except '+' and '=', with +XX escapes.
fn valid_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                if i + 2 >= b.len()
                    || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
                {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

fn params(s: &str) -> Vec<(String, Option<&str>)> {
    s.split_ascii_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (p.to_ascii_uppercase(), None),
        })
        .collect()
}

pub fn parse_mail(rest: &str) -> Result<MailFrom, Reply> {
    let r = strip_keyword(rest, "FROM").ok_or_else(|| syntax("Syntax: MAIL FROM:<address>"))?;
    let (path, ps) = split_path(r)?;
    let mut m = MailFrom::default();
    if !path.is_empty() {
        m.address = mailbox(&path, "sender")?;
    }
    for (k, v) in params(ps) {
        match (k.as_str(), v) {
            ("SIZE", Some(v)) => {
                m.size = Some(v.parse().map_err(|_| syntax("SIZE needs a number"))?);
            }
            ("BODY", Some(v)) => {
                m.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(syntax("BODY must be 7BIT or 8BITMIME")),
                }
            }
            ("SMTPUTF8", None) => m.smtputf8 = true,
            ("RET", Some(v)) => {
                m.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(syntax("RET must be FULL or HDRS")),
                })
            }
            ("ENVID", Some(v)) => {
                if !valid_xtext(v) || v.len() > 100 {
                    return Err(syntax("ENVID must be xtext of at most 100 characters"));
                }
                m.envid = Some(v.to_string());
            }
            // RFC 4954 5: accepted and ignored unless the client is trusted.
            ("AUTH", Some(_)) => {}
            ("REQUIRETLS", None) => m.requiretls = true,
            (k, _) => return Err(unknown_param(k)),
        }
    }
    Ok(m)
}

pub fn parse_rcpt(rest: &str) -> Result<RcptTo, Reply> {
    let r = strip_keyword(rest, "TO").ok_or_else(|| syntax("Syntax: RCPT TO:<address>"))?;
    let (path, ps) = split_path(r)?;
    let address = if path.eq_ignore_ascii_case("postmaster") {
        // RFC 5321 4.5.1: <Postmaster> without a domain must be accepted.
        "postmaster".to_string()
    } else if path.is_empty() {
        return Err(syntax("Recipient address is empty"));
    } else {
        mailbox(&path, "recipient")?
    };
    let mut t = RcptTo {
        address,
        ..Default::default()
    };
    for (k, v) in params(ps) {
        match (k.as_str(), v) {
            ("NOTIFY", Some(v)) => {
                let v = v.to_ascii_uppercase();
                let parts: Vec<&str> = v.split(',').collect();
                let ok = if parts == ["NEVER"] {
                    true
                } else {
                    parts
                        .iter()
                        .all(|p| matches!(*p, "SUCCESS" | "FAILURE" | "DELAY"))
                };
                if !ok {
                    return Err(syntax(
                        "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
                    ));
                }
                t.notify = Some(v);
            }
            ("ORCPT", Some(v)) => {
                let Some((ty, addr)) = v.split_once(';') else {
                    return Err(syntax("ORCPT must be addr-type;address"));
                };
                if ty.is_empty()
                    || addr.is_empty()
                    || !valid_xtext(addr) && !ty.eq_ignore_ascii_case("utf-8")
                {
                    return Err(syntax("ORCPT must be addr-type;xtext-address"));
                }
                t.orcpt = Some(v.to_string());
            }
            (k, _) => return Err(unknown_param(k)),
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, Reply> {
        parse(s.as_bytes())
    }

    fn rcpt(s: &str) -> String {
        match p(s).unwrap() {
            Command::Rcpt(r) => r.address,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn keyword_cut_inside_a_character() {
        // Found by fuzzing: "TO:" compared against a slice that split a UTF-8 character.
        assert!(p("RCPT O\u{1bd}Tpostmaster<>").is_err());
        assert!(p("MAIL \u{e9}:<a@b.test>").is_err());
    }

    #[test]
    fn mail_from_with_parameters() {
        match p("MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By")
            .unwrap()
        {
            Command::Mail(m) => {
                assert_eq!(m.address, "a@b.test");
                assert_eq!(m.size, Some(100));
                assert_eq!(m.body, Body::EightBitMime);
                assert!(m.smtputf8);
                assert_eq!(m.ret, Some(Ret::Hdrs));
                assert_eq!(m.envid.as_deref(), Some("x+2By"));
            }
            c => panic!("{c:?}"),
        }
        match p("mail from: <>").unwrap() {
            Command::Mail(m) => assert_eq!(m.address, ""),
            c => panic!("{c:?}"),
        }
        assert_eq!(p("MAIL FROM:<a@b.test> FOO=1").unwrap_err().code, 555);
        assert_eq!(p("MAIL FROM:<a@b.test> SIZE=x").unwrap_err().code, 501);
        assert_eq!(p("MAIL TO:<a@b.test>").unwrap_err().code, 501);
        assert_eq!(p("MAIL FROM:<a@b.test").unwrap_err().code, 501);
    }

    #[test]
    fn rcpt_addresses_keep_their_shape() {
        assert_eq!(rcpt("RCPT TO:<postmaster>"), "postmaster");
        assert_eq!(rcpt("RCPT TO:<Postmaster>"), "postmaster");
        // Relay tricks stay what they are: local parts of our domain.
        assert_eq!(
            rcpt("RCPT TO:<\"user@other.test\"@ours.test>"),
            "\"user@other.test\"@ours.test"
        );
        assert_eq!(
            rcpt("RCPT TO:<user%other.test@ours.test>"),
            "user%other.test@ours.test"
        );
        assert_eq!(
            rcpt("RCPT TO:<other.test!user@ours.test>"),
            "other.test!user@ours.test"
        );
        // A source route is ignored (RFC 5321 C.1): the mailbox is what counts.
        assert_eq!(
            rcpt("RCPT TO:<@ours.test:user@other.test>"),
            "user@other.test"
        );
        assert_eq!(rcpt("RCPT TO:<user@[127.0.0.1]>"), "user@[127.0.0.1]");
        // user@other@ours: the last @ separates, and "user@other" is not a valid local part.
        assert_eq!(
            p("RCPT TO:<user@other.test@ours.test>").unwrap_err().code,
            553
        );
        assert_eq!(rcpt("RCPT TO:<üser@b.test>"), "üser@b.test");
        assert_eq!(p("RCPT TO:<>").unwrap_err().code, 501);
        assert_eq!(p("RCPT TO:<a b@c.test>").unwrap_err().code, 553);
    }

    #[test]
    fn dsn_parameters() {
        match p("RCPT TO:<a@b.test> NOTIFY=success,failure ORCPT=rfc822;a+2Bb@b.test").unwrap() {
            Command::Rcpt(r) => {
                assert_eq!(r.notify.as_deref(), Some("SUCCESS,FAILURE"));
                assert_eq!(r.orcpt.as_deref(), Some("rfc822;a+2Bb@b.test"));
            }
            c => panic!("{c:?}"),
        }
        assert!(p("RCPT TO:<a@b.test> NOTIFY=NEVER,SUCCESS").is_err());
        assert!(p("RCPT TO:<a@b.test> ORCPT=nosemicolon").is_err());
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            p("EHLO client.test").unwrap(),
            Command::Ehlo("client.test".into())
        );
        assert_eq!(
            p("ehlo [127.0.0.1]").unwrap(),
            Command::Ehlo("[127.0.0.1]".into())
        );
        assert!(p("EHLO").is_err());
        assert_eq!(
            p("BDAT 100 LAST").unwrap(),
            Command::Bdat {
                size: 100,
                last: true
            }
        );
        assert_eq!(
            p("BDAT 0").unwrap(),
            Command::Bdat {
                size: 0,
                last: false
            }
        );
        assert!(p("BDAT x").is_err());
        assert!(p("DATA now").is_err());
        assert_eq!(
            p("AUTH plain AGEAYg==").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(p("XYZZY").unwrap_err().code, 500);
        assert_eq!(p("NOOP anything").unwrap(), Command::Noop);
        assert!(parse(b"MAIL FROM:<a@b.test>\0").is_err());
        assert!(parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn xtext() {
        assert!(valid_xtext("abc+2B"));
        assert!(!valid_xtext("abc+2"));
        assert!(!valid_xtext("abc+"));
        assert!(!valid_xtext("a=b"));
        assert!(!valid_xtext("a b"));
    }
}
