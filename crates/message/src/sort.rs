//! What IMAP SORT and THREAD (RFC 5256, RFC 5957) compare, read from a message's header:
//! the base subject (2.1), the first addresses' mailboxes and display names, the sent date,
//! and the message ids THREAD=REFERENCES links by.

/// A message's sort and thread keys.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SortFields {
    /// The Date header, seconds since the epoch.
    pub sent: Option<i64>,
    /// The base subject, lower-cased for comparison.
    pub subject: String,
    /// The subject had a reply or forward marker ("Re:", "Fwd:", "[fwd: ...]").
    pub is_reply: bool,
    /// The first From, To and Cc addresses' mailbox (local part), lower-cased.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// RFC 5957: the first From and To display names, else their addresses, lower-cased.
    pub display_from: String,
    pub display_to: String,
    pub message_id: Option<String>,
    /// References, else the first id of In-Reply-To.
    pub references: Vec<String>,
}

/// The sort and thread keys of a message, from its header section.
pub fn sort_fields(head: &[u8]) -> SortFields {
    let Some(m) = crate::parse(head) else {
        return SortFields::default();
    };
    let first = |a: Option<&mail_parser::Address>| -> (String, String) {
        let Some(addr) = a.and_then(|a| a.first()) else {
            return (String::new(), String::new());
        };
        let spec = addr.address().unwrap_or("").to_lowercase();
        let mailbox = spec
            .rsplit_once('@')
            .map_or(spec.as_str(), |(l, _)| l)
            .to_string();
        let display = addr
            .name()
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().to_lowercase())
            .unwrap_or(spec);
        (mailbox, display)
    };
    let (from, display_from) = first(m.from());
    let (to, display_to) = first(m.to());
    let (cc, _) = first(m.cc());
    let ids = |h: &mail_parser::HeaderValue| -> Vec<String> {
        match h {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
            _ => Vec::new(),
        }
    };
    let mut references = ids(m.references());
    if references.is_empty() {
        references = ids(m.in_reply_to()).into_iter().take(1).collect();
    }
    let (subject, is_reply) = base_subject(m.subject().unwrap_or(""));
    SortFields {
        sent: m.date().map(|d| d.to_timestamp()),
        subject,
        is_reply,
        from,
        to,
        cc,
        display_from,
        display_to,
        message_id: m.message_id().map(str::to_string),
        references,
    }
}

/// RFC 5256 2.1: the subject without reply and forward markers, list tags or "(fwd)"
/// trailers, whitespace collapsed, lower-cased; and whether any marker was removed.
pub fn base_subject(subject: &str) -> (String, bool) {
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        let before = s.clone();
        // (2) trailers: "(fwd)" and whitespace at the end.
        loop {
            let t = s.trim_end();
            let lower = t.to_ascii_lowercase();
            if lower.ends_with("(fwd)") {
                s = t[..t.len() - 5].to_string();
                reply = true;
            } else {
                s = t.to_string();
                break;
            }
        }
        // (3) leaders: blobs, then "re", "fw" or "fwd" with an optional blob and a colon.
        loop {
            let (rest, marker) = strip_leader(&s);
            if let Some(r) = rest {
                s = r;
                reply |= marker;
                continue;
            }
            // A leading blob goes when something is left after it.
            if let Some(after) = strip_blob(&s)
                && !after.trim().is_empty()
            {
                s = after.to_string();
                continue;
            }
            break;
        }
        // (5) "[fwd: ... ]" around the whole subject.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            reply = true;
            continue;
        }
        if s == before {
            break;
        }
    }
    (s.trim().to_lowercase(), reply)
}

/// "[...]" and the whitespace after it, at the start; what follows.
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(['[', ']'])?;
    if rest.as_bytes()[end] != b']' {
        return None;
    }
    Some(rest[end + 1..].trim_start())
}

/// One subj-leader removed: `*blob ("re" / "fw" / "fwd") [WSP] [blob] ":"`; the rest, and
/// whether it was a reply or forward marker (always, when something was removed).
fn strip_leader(s: &str) -> (Option<String>, bool) {
    let mut t = s.trim_start();
    while let Some(after) = strip_blob(t) {
        t = after;
    }
    let lower = t.to_ascii_lowercase();
    let word = ["fwd", "fw", "re"]
        .into_iter()
        .find(|w| lower.starts_with(w));
    let Some(word) = word else {
        return (None, false);
    };
    let mut u = t[word.len()..].trim_start();
    if let Some(after) = strip_blob(u) {
        u = after;
    }
    match u.strip_prefix(':') {
        Some(rest) => (Some(rest.trim_start().to_string()), true),
        None => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        for (s, want, reply) in [
            ("Hello", "hello", false),
            ("Re: Hello", "hello", true),
            ("RE: re: Fwd: Hello", "hello", true),
            ("[list] Re: Hello", "hello", true),
            ("Re[2]: Hello", "hello", true),
            ("Hello (fwd)", "hello", true),
            ("[Fwd: Re: Hello]", "hello", true),
            ("  Hello   world ", "hello world", false),
            ("[only a tag]", "[only a tag]", false),
            ("Reply needed", "reply needed", false),
            ("", "", false),
        ] {
            assert_eq!(base_subject(s), (want.to_string(), reply), "{s}");
        }
    }

    #[test]
    fn fields_of_a_header() {
        let f = sort_fields(
            b"From: \"Zed Able\" <Zed@Example.test>\r\nTo: bob@example.test\r\n\
              Subject: Re: [team] plans\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\
              Message-ID: <b@x>\r\nReferences: <a@x> <c@x>\r\n\r\n",
        );
        assert_eq!(f.from, "zed");
        assert_eq!(f.display_from, "zed able");
        assert_eq!(f.to, "bob");
        assert_eq!(f.display_to, "bob@example.test");
        assert_eq!((f.subject.as_str(), f.is_reply), ("plans", true));
        assert_eq!(f.sent, Some(1_796_292_000));
        assert_eq!(f.message_id.as_deref(), Some("b@x"));
        assert_eq!(f.references, ["a@x", "c@x"]);
        let g = sort_fields(b"In-Reply-To: <a@x> <z@x>\r\n\r\n");
        assert_eq!(g.references, ["a@x"]);
    }
}
