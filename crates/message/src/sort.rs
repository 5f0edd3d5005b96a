//! What IMAP SORT and THREAD (RFC 5256, RFC 5957) compare, read from a message's header:
//! the base subject (2.1), the first addresses' mailboxes and display names, the sent date,
//! and the message ids THREAD=REFERENCES links by. Strings come in the i;unicode-casemap form
//! (RFC 5051), so comparing them as octets is comparing them in that collation.

use crate::address::Addr;

/// A message's sort and thread keys.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SortFields {
    /// The Date header, seconds since the epoch.
    pub sent: Option<i64>,
    /// The base subject, casemapped.
    pub subject: String,
    /// The subject had a reply or forward marker ("Re:", "Fwd:", "[fwd: ...]").
    pub is_reply: bool,
    /// The addr-mailbox of the first From, To and Cc address as ENVELOPE has it (a group's
    /// name when the field starts with a group), casemapped; empty when there is none.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// RFC 5957: the first From and To address's display name (encoded words decoded), else
    /// mailbox@host, else the mailbox (a group's name), casemapped.
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
    // The first address of a field, as ENVELOPE lists it.
    let first = |name: &str| -> Option<Addr> {
        let v = crate::meta::raw_header(m.parts.first()?, head, name)?;
        crate::address::parse_list(&v).into_iter().next()
    };
    let mailbox =
        |a: &Option<Addr>| casemap(a.as_ref().and_then(|a| a.mailbox.as_deref()).unwrap_or(""));
    let (from, to, cc) = (first("From"), first("To"), first("Cc"));
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
        from: mailbox(&from),
        to: mailbox(&to),
        cc: mailbox(&cc),
        display_from: casemap(&display(from.as_ref())),
        display_to: casemap(&display(to.as_ref())),
        message_id: m.message_id().map(str::to_string),
        references,
    }
}

/// RFC 5957 3: an address's display sort value: its addr-name with encoded words decoded, when
/// not empty; else addr-mailbox "@" addr-host; else addr-mailbox (a group's name); else "".
fn display(a: Option<&Addr>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    if let Some(name) = a.name.as_deref() {
        let line = format!("{name}\n");
        let decoded =
            match mail_parser::parsers::MessageStream::new(line.as_bytes()).parse_unstructured() {
                mail_parser::HeaderValue::Text(t) => t.trim().to_string(),
                _ => String::new(),
            };
        if !decoded.is_empty() {
            return decoded;
        }
    }
    match (a.mailbox.as_deref(), a.host.as_deref()) {
        (Some(m), Some(h)) => format!("{m}@{h}"),
        (Some(m), None) => m.to_string(),
        _ => String::new(),
    }
}

/// A string in the form the i;unicode-casemap collation (RFC 5051) compares as octets: each
/// character titlecased, then given its full canonical decomposition (the decomposed
/// characters titlecased too). ASCII letters come out upper case, so "[" and "_" sort after
/// letters as they do in i;ascii-casemap; "é" becomes "E" and a combining accent, so sorts
/// among the words starting with "E".
pub fn casemap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let t = titlecase(c);
        // UnicodeData.txt lists no decomposition for Hangul syllables: they stay whole.
        if t.is_ascii() || ('\u{AC00}'..='\u{D7A3}').contains(&t) {
            out.push(t);
        } else {
            unicode_normalization::char::decompose_canonical(t, |d| out.push(titlecase(d)));
        }
    }
    out
}

/// A character's simple titlecase mapping (UnicodeData.txt): its simple uppercase mapping,
/// except for the digraphs with a titlecase form of their own and the Georgian letters that
/// titlecase to themselves. A character whose upper case is several characters and that has
/// no simple mapping stays as it is.
fn titlecase(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let shift = |n: u32| char::from_u32(c as u32 + n).unwrap_or(c);
    match c {
        '\u{1C4}'..='\u{1C6}' => '\u{1C5}',
        '\u{1C7}'..='\u{1C9}' => '\u{1C8}',
        '\u{1CA}'..='\u{1CC}' => '\u{1CB}',
        '\u{1F1}'..='\u{1F3}' => '\u{1F2}',
        '\u{10D0}'..='\u{10FA}' | '\u{10FD}'..='\u{10FF}' => c,
        // Greek letters with ypogegrammeni: their simple mapping is the prosgegrammeni form.
        '\u{1F80}'..='\u{1F87}' | '\u{1F90}'..='\u{1F97}' | '\u{1FA0}'..='\u{1FA7}' => shift(8),
        '\u{1FB3}' | '\u{1FC3}' | '\u{1FF3}' => shift(9),
        _ => {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        }
    }
}

/// RFC 5256 2.1: the subject without reply and forward markers, list tags or "(fwd)"
/// trailers, whitespace collapsed, casemapped; and whether any marker was removed.
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
    (casemap(s.trim()), reply)
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
            ("Hello", "HELLO", false),
            ("Re: Hello", "HELLO", true),
            ("RE: re: Fwd: Hello", "HELLO", true),
            ("[list] Re: Hello", "HELLO", true),
            ("Re[2]: Hello", "HELLO", true),
            ("Hello (fwd)", "HELLO", true),
            ("[Fwd: Re: Hello]", "HELLO", true),
            ("  Hello   world ", "HELLO WORLD", false),
            ("[only a tag]", "[ONLY A TAG]", false),
            ("Reply needed", "REPLY NEEDED", false),
            ("", "", false),
            // imaptest's sort-subject messages.
            ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "B", true),
            ("Re: [FWD: c]", "C", true),
            ("re: [fwd: [fwd: re: [fwd: babylon]]]", "BABYLON", true),
            ("Ad: Re: Ad: Re: Ad: x", "AD: RE: AD: RE: AD: X", false),
            ("b (a)", "B (A)", false),
        ] {
            assert_eq!(base_subject(s), (want.to_string(), reply), "{s}");
        }
    }

    #[test]
    fn casemapped_as_i_unicode_casemap() {
        for (s, want) in [
            ("abc XYZ", "ABC XYZ"),
            // Upper case, not lower: "[" (0x5B) and "_" (0x5F) come after the letters.
            ("[xyz] _", "[XYZ] _"),
            ("é É", "E\u{301} E\u{301}"),
            ("ǆ Ǆ ǅ", "ǅ ǅ ǅ"),
            ("straße", "STRAßE"),
            ("ı ſ", "I S"),
            // ᾼ, then Α and the ypogegrammeni, which titlecases to Ι.
            ("ᾳ", "ΑΙ"),
            ("한", "한"),
        ] {
            assert_eq!(casemap(s), want, "{s}");
        }
        // An accented letter sorts with its base letter: after "Ezra", before "fred".
        assert!(casemap("Ezra") < casemap("émile"));
        assert!(casemap("émile") < casemap("fred"));
    }

    /// The sequence numbers of `heads` ordered by `key`, ties in mailbox order.
    fn order(heads: &[&str], key: fn(&SortFields) -> &str) -> Vec<usize> {
        let fields: Vec<SortFields> = heads
            .iter()
            .map(|h| sort_fields(format!("{h}\r\n\r\nbody\r\n").as_bytes()))
            .collect();
        let mut seqs: Vec<usize> = (1..=heads.len()).collect();
        seqs.sort_by(|&a, &b| key(&fields[a - 1]).cmp(key(&fields[b - 1])).then(a.cmp(&b)));
        seqs
    }

    #[test]
    fn subjects_in_order() {
        // imaptest's sort-subject: no Subject and a blank one sort first, "[xyz]" and "_"
        // after every letter.
        let heads = [
            "Subject: a",
            "Subject: C",
            "Subject: b",
            "Subject: _",
            "Subject: [foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)",
            "Subject: b (a)",
            "Subject: Re: [FWD: c]",
            "Subject: [xyz]",
            "X-None: 1",
            "Subject: =?iso-8859-1?q?_?=",
            "Subject: Re: =?utf-8?q?b?=",
            "Subject: =?iso-8859-1?q?RE:_C?=",
            "Subject: =?us-ascii?b?UmU6IGM=?=",
            "Subject: Ad: Re: Ad: Re: Ad: x",
            "Subject: re: [fwd: [fwd: re: [fwd: babylon]]]",
        ];
        assert_eq!(
            order(&heads, |f| &f.subject),
            [9, 10, 1, 14, 3, 5, 11, 6, 15, 2, 7, 12, 13, 8, 4]
        );
    }

    #[test]
    fn address_keys_of_groups() {
        // imaptest's sort-addresses: a group's first "address" is its name, as in ENVELOPE.
        let heads = [
            "Cc: user2@domain2.org (foo bar)",
            "Cc: user2: blah@domain1.org;",
            "Cc: user1@domain1.org",
        ];
        assert_eq!(order(&heads, |f| &f.cc), [3, 1, 2]);
        // imaptest's sort-display-to: display name, else mailbox@host, else the mailbox (a
        // group's name, even an empty group's).
        let heads = [
            "To: foo bar <a@b.c>",
            "To: b@c.d",
            "To: d",
            "To: =?iso-8859-1?q?foo_aar?= <e@f.g>",
            "To: =?iso-8859-1?q?foo_car?= <f@g.h>",
            "To: a: xx@xx.org, yy@yy.org;",
            "To: z: aa@aa.org, bb@bb.org;",
            "To: empty:;",
        ];
        assert_eq!(order(&heads, |f| &f.display_to), [6, 2, 3, 8, 4, 1, 5, 7]);
        let f = sort_fields(b"To: a: xx@xx.org;\r\nFrom: (Ann Lee) ann@x.test\r\n\r\n");
        assert_eq!((f.to.as_str(), f.display_to.as_str()), ("A", "A"));
        assert_eq!(
            (f.from.as_str(), f.display_from.as_str()),
            ("ANN", "ANN LEE")
        );
        assert_eq!(
            sort_fields(b"From: \"\" <x@y.test>\r\n\r\n").display_from,
            "X@Y.TEST"
        );
        assert_eq!(sort_fields(b"Subject: none\r\n\r\n").display_to, "");
    }

    #[test]
    fn fields_of_a_header() {
        let f = sort_fields(
            b"From: \"Zed Able\" <Zed@Example.test>\r\nTo: bob@example.test\r\n\
              Subject: Re: [team] plans\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n\
              Message-ID: <b@x>\r\nReferences: <a@x> <c@x>\r\n\r\n",
        );
        assert_eq!(f.from, "ZED");
        assert_eq!(f.display_from, "ZED ABLE");
        assert_eq!(f.to, "BOB");
        assert_eq!(f.display_to, "BOB@EXAMPLE.TEST");
        assert_eq!((f.subject.as_str(), f.is_reply), ("PLANS", true));
        assert_eq!(f.sent, Some(1_796_292_000));
        assert_eq!(f.message_id.as_deref(), Some("b@x"));
        assert_eq!(f.references, ["a@x", "c@x"]);
        let g = sort_fields(b"In-Reply-To: <a@x> <z@x>\r\n\r\n");
        assert_eq!(g.references, ["a@x"]);
    }
}
