//! Parse once, at delivery: the MIME part map (offsets of every section), the IMAP ENVELOPE,
//! BODY and BODYSTRUCTURE, and the Date, stored with the message so reads never re-parse.

use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

/// Bumped when the stored form changes; older metadata is recomputed when read.
pub const META_VERSION: u8 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Section path, e.g. [1, 2] for BODY[1.2]. Empty for the message itself.
    pub section: Vec<u32>,
    /// Start of the part's MIME header.
    pub header: u32,
    /// Start of the part's body (after the blank line).
    pub body: u32,
    pub end: u32,
    /// Content-Transfer-Encoding (lower case), for BINARY.
    pub encoding: String,
    /// A message/rfc822 part: where the encapsulated message's header and body start.
    pub message: Option<(u32, u32)>,
    pub multipart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub version: u8,
    /// Offset of the top-level body (length of the header including the blank line).
    pub header_len: u32,
    pub envelope: String,
    pub body: String,
    pub bodystructure: String,
    pub parts: Vec<Part>,
    /// The Date header, seconds since the epoch.
    pub sent: Option<i64>,
    /// The Date header's wall-clock time in its own zone, as seconds since the epoch (its
    /// day is the one SEARCH SENTON and friends compare, the zone ignored: RFC 9051 6.4.4).
    pub sent_local: Option<i64>,
}

impl MessageMeta {
    /// version u8 | header length u32 LE | postcard: the header length can be read without
    /// decoding the rest (header fetches read only it).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![META_VERSION];
        v.extend_from_slice(&self.header_len.to_le_bytes());
        v.extend(postcard::to_allocvec(self).expect("meta serializes"));
        v
    }

    /// `None` for metadata of another version (or none): compute it again from the message.
    pub fn decode(b: &[u8]) -> Option<MessageMeta> {
        if b.first() != Some(&META_VERSION) || b.len() < 5 {
            return None;
        }
        postcard::from_bytes(&b[5..]).ok()
    }

    /// The header length of encoded metadata, without decoding it.
    pub fn header_len_of(b: &[u8]) -> Option<u64> {
        if b.first() != Some(&META_VERSION) || b.len() < 5 {
            return None;
        }
        Some(u32::from_le_bytes(b[1..5].try_into().ok()?) as u64)
    }

    pub fn part(&self, section: &[u32]) -> Option<&Part> {
        self.parts.iter().find(|p| p.section == section)
    }

    /// The same message with `delta` bytes more (or fewer) in its top-level header: what
    /// ingest adds there (Return-Path, Authentication-Results) or takes away (forged results)
    /// after parsing. Every offset but the message's start lies past the header, so all of
    /// them move by `delta`.
    pub fn moved(mut self, delta: i64) -> MessageMeta {
        let mv = |o: &mut u32| {
            if *o != 0 {
                *o = (*o as i64 + delta).clamp(0, u32::MAX as i64) as u32;
            }
        };
        mv(&mut self.header_len);
        for p in &mut self.parts {
            mv(&mut p.header);
            mv(&mut p.body);
            mv(&mut p.end);
            if let Some((h, b)) = &mut p.message {
                mv(h);
                mv(b);
            }
        }
        self
    }
}

/// IMAP quoted string or literal for arbitrary bytes.
pub fn istring(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) || s.len() > 1024 {
        out.push_str(&format!("{{{}}}\r\n", s.len()));
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn nstring(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => istring(out, s),
        None => out.push_str("NIL"),
    }
}

/// The raw value of the first header called `name` in `raw[start..end]`, unfolded and trimmed.
pub(crate) fn raw_header(part: &MessagePart, raw: &[u8], name: &str) -> Option<String> {
    let h = part
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let v = raw.get(h.offset_start as usize..h.offset_end as usize)?;
    let s = String::from_utf8_lossy(v);
    // As Dovecot does: leading blanks of the first line go, then the line breaks of folding
    // (the blank that starts a continuation line stays).
    let unfolded: String = s.trim_start_matches([' ', '\t']).replace(['\r', '\n'], "");
    Some(unfolded.trim_end().to_string())
}

/// Lines of a body as Dovecot counts them: line feeds (an unterminated last line does not
/// count).
fn lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// A multipart with no parts found: one empty text/plain part, as Dovecot describes it.
fn empty_part(ext: bool) -> &'static str {
    if ext {
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)"
    } else {
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)"
    }
}

fn multipart_tail(out: &mut String, p: &MessagePart, raw: &[u8], ext: bool) {
    let (_, sub, params, _) = content_type(p);
    out.push(' ');
    istring(out, &sub.to_ascii_lowercase());
    if ext {
        out.push(' ');
        params_list(out, &params);
        out.push(' ');
        disposition(out, p);
        out.push(' ');
        language(out, p, raw);
        out.push(' ');
        nstring(out, raw_header(p, raw, "Content-Location").as_deref());
    }
    out.push(')');
}

/// The children of a multipart not described yet, marked now: a broken message can make the
/// parser list a part under several parents (or its own ancestors), which would otherwise
/// repeat it without end.
fn first_visits(children: &[u32], seen: &mut [bool]) -> Vec<usize> {
    children
        .iter()
        .map(|&c| c as usize)
        .filter(|&c| c < seen.len() && !std::mem::replace(&mut seen[c], true))
        .collect()
}

/// Deeper MIME nesting is described as opaque parts: broken input can make the parser nest
/// without end, and each level costs stack and memory here.
const MAX_NESTING: usize = 32;

pub fn compute(raw: &[u8]) -> MessageMeta {
    compute_parsed(crate::parse(raw).as_ref(), raw)
}

/// The structure of a message already parsed (`None`: it could not be).
pub fn compute_parsed(msg: Option<&Message>, raw: &[u8]) -> MessageMeta {
    let Some(msg) = msg else {
        return MessageMeta {
            version: META_VERSION,
            header_len: raw.len() as u32,
            envelope: "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)".into(),
            body: "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)".to_string(),
            bodystructure: "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)".to_string(),
            parts: vec![],
            sent: None,
            sent_local: None,
        };
    };
    let root = &msg.parts[0];
    let mut parts = Vec::new();
    number(msg, raw, &[], &mut parts, 0);
    MessageMeta {
        version: META_VERSION,
        header_len: root.offset_body,
        envelope: envelope(root, raw),
        body: structure(msg, 0, raw, false, 0, &mut root_seen(msg)),
        bodystructure: structure(msg, 0, raw, true, 0, &mut root_seen(msg)),
        parts,
        sent: msg.date().map(|d| d.to_timestamp()),
        sent_local: msg.date().map(local_time),
    }
}

/// A date's wall-clock time in its own zone, as if it were UTC.
pub fn local_time(d: &mail_parser::DateTime) -> i64 {
    let offset =
        (d.tz_hour as i64 * 3600 + d.tz_minute as i64 * 60) * if d.tz_before_gmt { -1 } else { 1 };
    d.to_timestamp() + offset
}

fn encoding_of(p: &MessagePart, raw: &[u8]) -> String {
    raw_header(p, raw, "Content-Transfer-Encoding")
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into())
}

/// Records the section map of `msg` under `prefix` (RFC 3501 6.4.5 numbering).
fn number(msg: &Message, raw: &[u8], prefix: &[u32], out: &mut Vec<Part>, depth: usize) {
    let root = &msg.parts[0];
    let mut seen = vec![false; msg.parts.len()];
    seen[0] = true;
    match &root.body {
        PartType::Multipart(children) => {
            for (i, id) in first_visits(children, &mut seen).into_iter().enumerate() {
                let mut section = prefix.to_vec();
                section.push(i as u32 + 1);
                number_part(msg, id, raw, section, out, depth, &mut seen);
            }
        }
        _ => {
            let mut section = prefix.to_vec();
            section.push(1);
            number_part(msg, 0, raw, section, out, depth, &mut seen);
        }
    }
}

fn number_part(
    msg: &Message,
    id: usize,
    raw: &[u8],
    section: Vec<u32>,
    out: &mut Vec<Part>,
    depth: usize,
    seen: &mut [bool],
) {
    let p = &msg.parts[id];
    let mut rec = Part {
        section: section.clone(),
        header: p.offset_header,
        body: p.offset_body,
        end: p.offset_end,
        encoding: encoding_of(p, raw),
        message: None,
        multipart: false,
    };
    match &p.body {
        _ if depth >= MAX_NESTING => out.push(rec),
        PartType::Multipart(children) => {
            rec.multipart = true;
            out.push(rec);
            for (i, cid) in first_visits(children, seen).into_iter().enumerate() {
                let mut s = section.clone();
                s.push(i as u32 + 1);
                number_part(msg, cid, raw, s, out, depth + 1, seen);
            }
        }
        PartType::Message(inner) => {
            let ir = &inner.parts[0];
            rec.message = Some((ir.offset_header, ir.offset_body));
            out.push(rec);
            number(inner, raw, &section, out, depth + 1);
        }
        _ => out.push(rec),
    }
}

fn content_type(p: &MessagePart) -> (String, String, Vec<(String, String)>, bool) {
    match p.content_type() {
        Some(ct) => {
            let ty = ct.c_type.to_string();
            let sub = ct.c_subtype.as_deref().map(str::to_string);
            let params = ct
                .attributes
                .as_ref()
                .map(|a| {
                    a.iter()
                        .map(|x| (x.name.to_string(), x.value.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            match sub {
                Some(s) => (ty, s, params, true),
                // "Content-Type: text" without a subtype is broken: treat as absent.
                None => ("text".into(), "plain".into(), params, true),
            }
        }
        None => ("text".into(), "plain".into(), vec![], false),
    }
}

fn params_list(out: &mut String, params: &[(String, String)]) {
    if params.is_empty() {
        out.push_str("NIL");
        return;
    }
    out.push('(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        istring(out, &k.to_ascii_lowercase());
        out.push(' ');
        istring(out, v);
    }
    out.push(')');
}

fn disposition(out: &mut String, p: &MessagePart) {
    match p.content_disposition() {
        Some(cd) => {
            out.push('(');
            istring(out, &cd.c_type.to_ascii_lowercase());
            out.push(' ');
            let params: Vec<(String, String)> = cd
                .attributes
                .as_ref()
                .map(|a| {
                    a.iter()
                        .map(|x| (x.name.to_string(), x.value.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            params_list(out, &params);
            out.push(')');
        }
        None => out.push_str("NIL"),
    }
}

fn language(out: &mut String, p: &MessagePart, raw: &[u8]) {
    match raw_header(p, raw, "Content-Language") {
        Some(l) => {
            let langs: Vec<&str> = l
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if langs.len() == 1 {
                istring(out, langs[0]);
            } else {
                out.push('(');
                for (i, x) in langs.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    istring(out, x);
                }
                out.push(')');
            }
        }
        None => out.push_str("NIL"),
    }
}

/// BODY (ext = false) or BODYSTRUCTURE (ext = true) of part `id` of `msg`.
fn root_seen(msg: &Message) -> Vec<bool> {
    let mut seen = vec![false; msg.parts.len()];
    seen[0] = true;
    seen
}

fn structure(
    msg: &Message,
    id: usize,
    raw: &[u8],
    ext: bool,
    depth: usize,
    seen: &mut [bool],
) -> String {
    let p = &msg.parts[id];
    let mut out = String::new();
    let deep = depth >= MAX_NESTING;
    match &p.body {
        PartType::Multipart(children) if !deep => {
            out.push('(');
            let children = first_visits(children, seen);
            if children.is_empty() {
                out.push_str(empty_part(ext));
            }
            for c in children {
                out.push_str(&structure(msg, c, raw, ext, depth + 1, seen));
            }
            multipart_tail(&mut out, p, raw, ext);
        }
        _ if deep
            || p.content_type()
                .is_some_and(|ct| ct.c_type.eq_ignore_ascii_case("multipart")) =>
        {
            // Declared multipart, but no boundary was found in the body.
            out.push('(');
            out.push_str(empty_part(ext));
            multipart_tail(&mut out, p, raw, ext);
        }
        _ => {
            let (ty, sub, mut params, _) = content_type(p);
            let ty_l = ty.to_ascii_lowercase();
            if ty_l == "text"
                && !params
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("charset"))
            {
                params.insert(0, ("charset".into(), "us-ascii".into()));
            }
            let body =
                &raw[p.offset_body as usize..(p.offset_end as usize).max(p.offset_body as usize)];
            out.push('(');
            istring(&mut out, &ty_l);
            out.push(' ');
            istring(&mut out, &sub.to_ascii_lowercase());
            out.push(' ');
            params_list(&mut out, &params);
            out.push(' ');
            nstring(&mut out, raw_header(p, raw, "Content-ID").as_deref());
            out.push(' ');
            nstring(
                &mut out,
                raw_header(p, raw, "Content-Description").as_deref(),
            );
            out.push(' ');
            istring(&mut out, &encoding_of(p, raw));
            out.push_str(&format!(" {}", body.len()));
            if let PartType::Message(inner) = &p.body {
                out.push(' ');
                out.push_str(&envelope(&inner.parts[0], raw));
                out.push(' ');
                out.push_str(&structure(
                    inner,
                    0,
                    raw,
                    ext,
                    depth + 1,
                    &mut root_seen(inner),
                ));
                out.push_str(&format!(" {}", lines(body)));
            } else if ty_l == "text" {
                out.push_str(&format!(" {}", lines(body)));
            }
            if ext {
                out.push(' ');
                nstring(&mut out, raw_header(p, raw, "Content-MD5").as_deref());
                out.push(' ');
                disposition(&mut out, p);
                out.push(' ');
                language(&mut out, p, raw);
                out.push(' ');
                nstring(&mut out, raw_header(p, raw, "Content-Location").as_deref());
            }
            out.push(')');
        }
    }
    out
}

fn envelope(p: &MessagePart, raw: &[u8]) -> String {
    let h = |n: &str| raw_header(p, raw, n);
    let mut out = String::from("(");
    nstring(&mut out, h("Date").as_deref());
    out.push(' ');
    nstring(&mut out, h("Subject").as_deref());
    let from = h("From");
    for (name, fallback) in [
        ("From", None),
        ("Sender", from.as_deref()),
        ("Reply-To", from.as_deref()),
        ("To", None),
        ("Cc", None),
        ("Bcc", None),
    ] {
        out.push(' ');
        let v = h(name).filter(|v| !v.is_empty());
        address_list(&mut out, v.as_deref().or(fallback));
    }
    out.push(' ');
    nstring(&mut out, h("In-Reply-To").as_deref());
    out.push(' ');
    nstring(&mut out, h("Message-ID").as_deref());
    out.push(')');
    let _ = HeaderName::Subject;
    out
}

/// RFC 5322 address-list as IMAP address structures; groups as (NIL NIL "name" NIL) ...
/// (NIL NIL NIL NIL).
fn address_list(out: &mut String, v: Option<&str>) {
    let Some(v) = v else {
        out.push_str("NIL");
        return;
    };
    let addrs = crate::address::parse_list(v);
    if addrs.is_empty() {
        out.push_str("NIL");
        return;
    }
    out.push('(');
    for a in addrs {
        out.push('(');
        nstring(out, a.name.as_deref());
        out.push(' ');
        nstring(out, a.route.as_deref());
        out.push(' ');
        nstring(out, a.mailbox.as_deref());
        out.push(' ');
        nstring(out, a.host.as_deref());
        out.push(')');
    }
    out.push(')');
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: \"Alice A.\" <alice@example.test>\r\nTo: bob@example.test, Team: carol@x.test, dan@y.test;\r\nSubject: =?utf-8?q?hi?=\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n--XX\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--XX--\r\n";

    #[test]
    fn sent_time_is_the_date_headers_own_wall_clock() {
        // SENTON and friends compare the day the sender's clock showed, whatever its zone.
        for (date, own) in [
            ("Sun, 25 Mar 2007 00:30:00 +0300", 1_174_782_600), // 24 Mar in UTC
            ("Sun, 25 Mar 2007 23:59:59 -1100", 1_174_867_199), // 26 Mar in UTC
            ("Mon, 26 Mar 2007 01:00:00 +1400", 1_174_870_800),
            ("Mon, 26 Mar 2007 01:00:00 +0000", 1_174_870_800),
        ] {
            let d = mail_parser::DateTime::parse_rfc822(date).unwrap();
            assert_eq!(local_time(&d), own, "{date}");
        }
    }

    #[test]
    fn parts_listed_under_many_parents_are_described_once() {
        // Found by fuzzing: before, this 520-byte message took gigabytes of memory.
        let raw =
            include_bytes!("../../../fuzz/corpus/message_meta/parts-listed-under-many-parents");
        let m = compute(raw);
        assert!(m.parts.len() < 100, "{} parts", m.parts.len());
        assert!(m.bodystructure.len() < 100_000);
    }

    #[test]
    fn structure_and_envelope() {
        let m = compute(MIXED);
        assert_eq!(
            m.bodystructure,
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 12 1 NIL NIL NIL NIL)(\"application\" \"pdf\" (\"name\" \"a.pdf\") NIL NIL \"base64\" 4 NIL (\"attachment\" (\"filename\" \"a.pdf\")) NIL NIL) \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)"
        );
        assert_eq!(
            m.envelope,
            "(\"Sat, 28 Nov 2026 10:00:00 +0000\" \"=?utf-8?q?hi?=\" ((\"Alice A.\" NIL \"alice\" \"example.test\")) ((\"Alice A.\" NIL \"alice\" \"example.test\")) ((\"Alice A.\" NIL \"alice\" \"example.test\")) ((NIL NIL \"bob\" \"example.test\")(NIL NIL \"Team\" NIL)(NIL NIL \"carol\" \"x.test\")(NIL NIL \"dan\" \"y.test\")(NIL NIL NIL NIL)) NIL NIL NIL \"<m1@example.test>\")"
        );
        let p1 = m.part(&[1]).unwrap();
        assert_eq!(&MIXED[p1.body as usize..p1.end as usize], b"hello\r\nworld");
        assert_eq!(m.part(&[2]).unwrap().encoding, "base64");
        assert_eq!(m.sent, Some(1795860000));
        assert_eq!(m.sent_local, Some(1795860000));
        let late = compute(b"Date: Thu, 15 Feb 2007 23:30:00 -0500\r\n\r\nx\r\n");
        // 04:30 on the 16th in UTC; still the 15th where it was written.
        assert_eq!(
            late.sent_local.unwrap().div_euclid(86400),
            late.sent.unwrap().div_euclid(86400) - 1
        );
        assert_eq!(
            MessageMeta::header_len_of(&m.encode()),
            Some(m.header_len as u64)
        );
        assert_eq!(MessageMeta::decode(&m.encode()), Some(m));
    }

    #[test]
    fn plain_message_defaults() {
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        let m = compute(raw);
        assert_eq!(
            m.bodystructure,
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)"
        );
        assert_eq!(m.header_len, 14);
        let p = m.part(&[1]).unwrap();
        assert_eq!(&raw[p.body as usize..p.end as usize], b"body\r\n");
    }
}
