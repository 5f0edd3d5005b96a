//! A message as the webmail shows it: the list line (sender, subject, date, preview,
//! attachment mark), the reading view (addresses, text, HTML still to be cleaned, attachments,
//! authentication results) and one part's decoded bytes for a download.

use mail_parser::{Address, Message, MessagePart, MimeHeaders, PartType};
use serde::Serialize;

/// A name and address as a reader sees them (encoded words decoded).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Person {
    pub name: String,
    pub address: String,
}

/// What the message list shows of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub from: Person,
    pub to: Vec<Person>,
    pub subject: String,
    /// The Date header, seconds since the epoch.
    pub date: Option<i64>,
    pub preview: String,
    pub attachments: bool,
    pub message_id: Option<String>,
    /// References, else In-Reply-To: the thread the message belongs to.
    pub references: Vec<String>,
}

/// An attachment or inline part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    /// Index of the part in the message (what [`part_content`] takes).
    pub part: u32,
    pub name: String,
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// Content-ID without its angle brackets, for cid: references.
    pub content_id: Option<String>,
    /// Shown in the text rather than listed (an image the HTML refers to).
    pub inline: bool,
}

/// The reading view of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    pub from: Vec<Person>,
    pub to: Vec<Person>,
    pub cc: Vec<Person>,
    pub reply_to: Vec<Person>,
    pub subject: String,
    pub date: Option<i64>,
    pub message_id: Option<String>,
    pub references: Vec<String>,
    /// The text/plain body (every text part in order).
    pub text: String,
    /// The HTML body as sent: the caller must clean it before showing it.
    #[serde(skip)]
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// The values of the Authentication-Results fields, top first.
    pub authentication_results: Vec<String>,
}

/// A part's bytes with its transfer encoding removed.
#[derive(Debug, Clone, PartialEq)]
pub struct PartContent {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

fn people(a: Option<&Address>) -> Vec<Person> {
    a.map(|a| {
        a.iter()
            .map(|x| Person {
                name: x.name().unwrap_or("").to_string(),
                address: x.address().unwrap_or("").to_string(),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn ids(h: &mail_parser::HeaderValue) -> Vec<String> {
    match h {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn references(m: &Message) -> Vec<String> {
    let r = ids(m.references());
    if r.is_empty() {
        ids(m.in_reply_to()).into_iter().take(1).collect()
    } else {
        r
    }
}

fn content_type(p: &MessagePart) -> String {
    match p.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => match p.body {
            PartType::Html(_) => "text/html".into(),
            PartType::Text(_) => "text/plain".into(),
            PartType::Message(_) => "message/rfc822".into(),
            _ => "application/octet-stream".into(),
        },
    }
}

fn part_name(p: &MessagePart, index: u32) -> String {
    let name = p.attachment_name().map(str::to_string).unwrap_or_else(|| {
        match &p.body {
            PartType::Message(m) => m.subject().map(|s| format!("{s}.eml")),
            _ => None,
        }
        .unwrap_or_else(|| format!("part-{index}"))
    });
    // A name is a file name, never a path.
    name.rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
}

fn attachments_of(m: &Message, html: Option<&str>) -> Vec<Attachment> {
    m.attachments
        .iter()
        .filter_map(|&i| m.parts.get(i as usize).map(|p| (i, p)))
        .map(|(i, p)| {
            let content_id = p
                .content_id()
                .map(|c| c.trim_matches(['<', '>']).to_string());
            let inline = match (&content_id, html) {
                (Some(c), Some(h)) => h.contains(&format!("cid:{c}")),
                _ => false,
            };
            Attachment {
                part: i,
                name: part_name(p, i),
                content_type: content_type(p),
                size: p.contents().len(),
                content_id,
                inline,
            }
        })
        .collect()
}

/// The list line of a message, from its bytes (the first part of them does: the preview and
/// attachment mark look no further).
pub fn summary(raw: &[u8]) -> Summary {
    let Some(m) = crate::parse(raw) else {
        return Summary::default();
    };
    Summary {
        from: people(m.from()).into_iter().next().unwrap_or_default(),
        to: people(m.to()),
        subject: m.subject().unwrap_or("").to_string(),
        date: m.date().map(|d| d.to_timestamp()),
        preview: crate::preview::preview(raw),
        attachments: m.attachments.iter().any(|&i| {
            m.parts
                .get(i as usize)
                .is_some_and(|p| p.content_id().is_none() || p.attachment_name().is_some())
        }),
        message_id: m.message_id().map(str::to_string),
        references: references(&m),
    }
}

/// The reading view of a message.
pub fn view(raw: &[u8]) -> View {
    let Some(m) = crate::parse(raw) else {
        return View {
            text: String::from_utf8_lossy(raw).into_owned(),
            ..View::default()
        };
    };
    let mut text = String::new();
    for (n, _) in m.text_body.iter().enumerate() {
        if let Some(t) = m.body_text(n) {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&t);
        }
    }
    // An HTML body of its own only: mail-parser makes one from plain text when there is none.
    let has_html = m.html_body.iter().any(|&i| {
        m.parts
            .get(i as usize)
            .is_some_and(|p| matches!(p.body, PartType::Html(_)))
    });
    let html = has_html
        .then(|| {
            let mut h = String::new();
            for (n, _) in m.html_body.iter().enumerate() {
                if let Some(t) = m.body_html(n) {
                    h.push_str(&t);
                }
            }
            h
        })
        .filter(|h| !h.is_empty());
    let authentication_results = m
        .headers_raw()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    View {
        from: people(m.from()),
        to: people(m.to()),
        cc: people(m.cc()),
        reply_to: people(m.reply_to()),
        subject: m.subject().unwrap_or("").to_string(),
        date: m.date().map(|d| d.to_timestamp()),
        message_id: m.message_id().map(str::to_string),
        references: references(&m),
        attachments: attachments_of(&m, html.as_deref()),
        text,
        html,
        authentication_results,
    }
}

/// One part of the message (by its index), decoded: `None` when there is no such part or it
/// is a multipart container.
pub fn part_content(raw: &[u8], index: u32) -> Option<PartContent> {
    let m = crate::parse(raw)?;
    let p = m.parts.get(index as usize)?;
    if matches!(p.body, PartType::Multipart(_)) {
        return None;
    }
    let bytes = match &p.body {
        // An attached message as it was sent.
        PartType::Message(_) => raw
            .get(p.offset_body as usize..p.offset_end as usize)
            .unwrap_or_default()
            .to_vec(),
        _ => p.contents().to_vec(),
    };
    Some(PartContent {
        name: part_name(p, index),
        content_type: content_type(p),
        bytes,
    })
}

/// One SPF, DKIM or DMARC result from an Authentication-Results value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthCheck {
    pub method: String,
    pub result: String,
}

/// The spf, dkim and dmarc results of an Authentication-Results value (RFC 8601) whose
/// authserv-id is `ours`: `None` for a field another server wrote.
pub fn auth_checks(value: &str, ours: &str) -> Option<Vec<AuthCheck>> {
    let mut parts = value.split(';');
    let id = parts.next()?.split_whitespace().next()?;
    if !id.eq_ignore_ascii_case(ours) {
        return None;
    }
    let mut out = Vec::new();
    for p in parts {
        let Some((method, rest)) = p.trim().split_once('=') else {
            continue;
        };
        let method = method.trim().to_ascii_lowercase();
        if !matches!(method.as_str(), "spf" | "dkim" | "dmarc") {
            continue;
        }
        let result: String = rest
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        out.push(AuthCheck { method, result });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n\
To: a@b.test, \"Bee\" <bee@b.test>\r\nSubject: Files\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\n\
Message-ID: <m1@x>\r\nAuthentication-Results: mx.ours.test;\r\n spf=pass smtp.mailfrom=x; dkim=fail header.d=x; dmarc=fail\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello there\r\n\
--b\r\nContent-Type: application/pdf; name=\"../../etc/report.pdf\"\r\nContent-Disposition: attachment\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";

    #[test]
    fn summary_and_view() {
        let s = summary(MIXED);
        assert_eq!(s.from.name, "Jürgen");
        assert_eq!(s.subject, "Files");
        assert_eq!(s.preview, "Hello there");
        assert!(s.attachments);
        assert_eq!(s.to.len(), 2);
        let v = view(MIXED);
        assert_eq!(v.text.trim(), "Hello there");
        assert!(v.html.is_none(), "no HTML made up from text");
        assert_eq!(v.attachments.len(), 1);
        let a = &v.attachments[0];
        assert_eq!(
            (a.name.as_str(), a.content_type.as_str()),
            ("report.pdf", "application/pdf")
        );
        let p = part_content(MIXED, a.part).unwrap();
        assert_eq!(p.bytes, b"%PDF-");
        let checks = auth_checks(&v.authentication_results[0], "mx.ours.test").unwrap();
        assert_eq!(
            checks
                .iter()
                .map(|c| format!("{}={}", c.method, c.result))
                .collect::<Vec<_>>(),
            ["spf=pass", "dkim=fail", "dmarc=fail"]
        );
        assert!(auth_checks(&v.authentication_results[0], "other.test").is_none());
    }

    #[test]
    fn html_and_inline_image() {
        let raw = b"Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\n\
Content-Type: text/html\r\n\r\n<p>Hi <img src=\"cid:logo@x\"></p>\r\n--r\r\n\
Content-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n--r--\r\n";
        let v = view(raw);
        assert!(v.html.as_deref().unwrap().contains("cid:logo@x"));
        let a = &v.attachments[0];
        assert!(a.inline && a.content_id.as_deref() == Some("logo@x"));
        assert!(
            !summary(raw).attachments,
            "an inline image is no attachment"
        );
    }
}
