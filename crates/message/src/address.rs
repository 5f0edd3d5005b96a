//! A forgiving RFC 5322 address-list parser over raw header text (encoded words kept as they
//! are, as IMAP's ENVELOPE wants). Groups come out as a start marker (mailbox = group name,
//! no host) and an end marker (all None).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub name: Option<String>,
    /// An obsolete source route (`<@a,@b:user@host>`), as ENVELOPE's adl shows it.
    pub route: Option<String>,
    pub mailbox: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Special(char),
    /// A comment's text: only an address without a display name uses it (as its name).
    Comment(String),
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            // A stray ')' outside a comment is dropped too: the word branch below would stop
            // on it without consuming anything.
            ' ' | '\t' | '\r' | '\n' | ')' => {
                it.next();
            }
            '(' => {
                let mut depth = 0;
                let mut text = String::new();
                while let Some(c) = it.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = it.next() {
                                text.push(n);
                            }
                            continue;
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    if depth > 1 || (depth == 1 && c != '(') {
                        text.push(c);
                    }
                }
                out.push(Tok::Comment(text.trim().to_string()));
            }
            '"' => {
                it.next();
                let mut q = String::new();
                while let Some(c) = it.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = it.next() {
                                q.push(n);
                            }
                        }
                        '"' => break,
                        '\r' | '\n' => {}
                        _ => q.push(c),
                    }
                }
                out.push(Tok::Quoted(q));
            }
            '<' | '>' | '@' | ',' | ';' | ':' | '.' | '[' | ']' => {
                it.next();
                out.push(Tok::Special(c));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = it.peek() {
                    if " \t\r\n()\"<>@,;:.[]".contains(c) {
                        break;
                    }
                    w.push(c);
                    it.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    out
}

fn text(t: &Tok) -> String {
    match t {
        Tok::Word(w) | Tok::Quoted(w) => w.clone(),
        Tok::Special(c) => c.to_string(),
        Tok::Comment(_) => String::new(),
    }
}

/// Joins tokens as a phrase: words separated by one space, a dot stuck to the word before it.
fn phrase(toks: &[Tok]) -> Option<String> {
    let mut s = String::new();
    for t in toks.iter().filter(|t| !matches!(t, Tok::Comment(_))) {
        if !s.is_empty() && !matches!(t, Tok::Special('.')) {
            s.push(' ');
        }
        s.push_str(&text(t));
    }
    (!s.is_empty()).then_some(s)
}

/// `local@domain` from tokens (addr-spec).
fn addr_spec(toks: &[Tok]) -> (Option<String>, Option<String>) {
    match toks.iter().rposition(|t| *t == Tok::Special('@')) {
        Some(i) => {
            let local: String = toks[..i].iter().map(text).collect();
            let host: String = toks[i + 1..].iter().map(text).collect();
            (
                (!local.is_empty()).then_some(local),
                (!host.is_empty()).then_some(host),
            )
        }
        None => {
            let local: String = toks.iter().map(text).collect();
            ((!local.is_empty()).then_some(local), None)
        }
    }
}

fn mailbox(all: &[Tok]) -> Option<Addr> {
    // A comment names an address that has no display name, as in `user@host (Real Name)`.
    let comment = all.iter().rev().find_map(|t| match t {
        Tok::Comment(c) if !c.is_empty() => Some(c.clone()),
        _ => None,
    });
    let toks: Vec<Tok> = all
        .iter()
        .filter(|t| !matches!(t, Tok::Comment(_)))
        .cloned()
        .collect();
    let mut a = mailbox_of(&toks)?;
    if a.name.is_none() {
        a.name = comment;
    }
    Some(a)
}

fn mailbox_of(toks: &[Tok]) -> Option<Addr> {
    if toks.is_empty() {
        return None;
    }
    if let Some(lt) = toks.iter().position(|t| *t == Tok::Special('<')) {
        let gt = toks[lt..]
            .iter()
            .position(|t| *t == Tok::Special('>'))
            .map(|i| i + lt)
            .unwrap_or(toks.len());
        let mut inner = &toks[lt + 1..gt];
        // An obsolete source route: <@a,@b:user@host>.
        let mut route = None;
        if let Some(c) = inner.iter().position(|t| *t == Tok::Special(':'))
            && inner.first() == Some(&Tok::Special('@'))
        {
            route = Some(inner[..c].iter().map(text).collect::<String>());
            inner = &inner[c + 1..];
        }
        let (m, h) = addr_spec(inner);
        return Some(Addr {
            name: phrase(&toks[..lt]),
            route,
            mailbox: m,
            host: h,
        });
    }
    let (m, h) = addr_spec(toks);
    Some(Addr {
        name: None,
        route: None,
        mailbox: m,
        host: h,
    })
}

pub fn parse_list(s: &str) -> Vec<Addr> {
    let toks = tokenize(s);
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_group = false;
    let mut start = 0;
    while i <= toks.len() {
        let t = toks.get(i);
        match t {
            Some(Tok::Special(':'))
                if !in_group && !toks[start..i].contains(&Tok::Special('<')) =>
            {
                in_group = true;
                out.push(Addr {
                    name: None,
                    route: None,
                    mailbox: phrase(&toks[start..i]),
                    host: None,
                });
                start = i + 1;
            }
            Some(Tok::Special(',')) | Some(Tok::Special(';')) | None => {
                // A comma inside <...> belongs to a source route; skip it.
                let open = toks[start..i]
                    .iter()
                    .filter(|t| **t == Tok::Special('<'))
                    .count();
                let close = toks[start..i]
                    .iter()
                    .filter(|t| **t == Tok::Special('>'))
                    .count();
                if t == Some(&Tok::Special(',')) && open > close {
                    i += 1;
                    continue;
                }
                if let Some(a) = mailbox(&toks[start..i]) {
                    out.push(a);
                }
                if (t == Some(&Tok::Special(';')) || t.is_none()) && in_group {
                    in_group = false;
                    out.push(Addr {
                        name: None,
                        route: None,
                        mailbox: None,
                        host: None,
                    });
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: Option<&str>, m: Option<&str>, h: Option<&str>) -> Addr {
        Addr {
            name: name.map(Into::into),
            route: None,
            mailbox: m.map(Into::into),
            host: h.map(Into::into),
        }
    }

    #[test]
    fn lists() {
        assert_eq!(
            parse_list("\"Doe, John\" <john@x.test>, jane@y.test (Jane)"),
            vec![
                a(Some("Doe, John"), Some("john"), Some("x.test")),
                a(Some("Jane"), Some("jane"), Some("y.test"))
            ]
        );
        // As Dovecot: a comment names an address only when it has no display name.
        assert_eq!(
            parse_list("A <a@x.test> (note), (empty) b@y.test (), c@z.test (x (y) z)"),
            vec![
                a(Some("A"), Some("a"), Some("x.test")),
                a(Some("empty"), Some("b"), Some("y.test")),
                a(Some("x (y) z"), Some("c"), Some("z.test"))
            ]
        );
        assert_eq!(
            parse_list("=?utf-8?q?J=C3=B6rg?= <j@x.test>"),
            vec![a(Some("=?utf-8?q?J=C3=B6rg?="), Some("j"), Some("x.test"))]
        );
        assert_eq!(
            parse_list("undisclosed-recipients:;"),
            vec![
                a(None, Some("undisclosed-recipients"), None),
                a(None, None, None)
            ]
        );
        assert_eq!(
            parse_list("Mr. A. Smith <a@x.test>")[0].name.as_deref(),
            Some("Mr. A. Smith")
        );
        assert_eq!(
            parse_list("<@r1,@r2:u@h.test>"),
            vec![Addr {
                route: Some("@r1,@r2".into()),
                ..a(None, Some("u"), Some("h.test"))
            }]
        );
        assert!(parse_list("").is_empty());
    }

    #[test]
    fn stray_close_paren_ends() {
        // Found by fuzzing: a ')' outside a comment used to loop forever, growing memory.
        assert_eq!(
            parse_list("b@e)xample.test"),
            vec![a(None, Some("b"), Some("example.test"))]
        );
        assert_eq!(parse_list(")))").len(), 0);
    }
}
