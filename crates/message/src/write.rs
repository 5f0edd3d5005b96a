//! A message written in the webmail, made into MIME (RFC 5322, RFC 2045–2049): header fields
//! with encoded words where they need them (RFC 2047), the text as UTF-8, an HTML alternative
//! when the writer formatted it, and attachments in base64 with their names (RFC 2231).

/// A file to attach.
pub struct File {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What the writer wrote.
#[derive(Default)]
pub struct Letter {
    /// (display name, address)
    pub from: (String, String),
    pub to: Vec<String>,
    pub cc: Vec<String>,
    /// Kept only in a draft: a sent message never shows its Bcc.
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub files: Vec<File>,
    /// Whole messages attached (a forward as attachment): their bytes as stored.
    pub messages: Vec<(String, Vec<u8>)>,
}

/// A header field's text as an encoded word when it is not plain ASCII.
fn encoded(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    if clean.is_ascii() {
        return clean;
    }
    // Encoded words of at most 75 characters: 45 bytes of text each, cut at characters.
    let mut out = Vec::new();
    let mut chunk = String::new();
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            out.push(word(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        out.push(word(&chunk));
    }
    out.join("\r\n ")
}

fn word(s: &str) -> String {
    let b = crate::base64_lines(s.as_bytes());
    format!("=?UTF-8?B?{}?=", String::from_utf8_lossy(&b))
}

/// An address with its display name, the name quoted or encoded.
fn mailbox(name: &str, address: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        return address.to_string();
    }
    let shown = if name.is_ascii() {
        format!(
            "\"{}\"",
            name.replace(['"', '\\'], "")
                .replace(|c: char| c.is_control(), "")
        )
    } else {
        encoded(name)
    };
    format!("{shown} <{address}>")
}

/// A parameter value (a file name): quoted when ASCII, RFC 2231 encoded otherwise.
fn param(key: &str, value: &str) -> String {
    let value: String = value.chars().filter(|c| !c.is_control()).collect();
    if value.is_ascii() {
        return format!("{key}=\"{}\"", value.replace(['"', '\\'], "_"));
    }
    let mut enc = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{key}*=UTF-8''{enc}")
}

fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n")
}

fn boundary() -> String {
    let r: u64 = rand::random();
    format!("=_postern_{r:016x}")
}

fn text_part(kind: &str, body: &str) -> Vec<u8> {
    let mut p =
        format!("Content-Type: {kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n")
            .into_bytes();
    p.extend(crate::base64_lines(crlf(body).as_bytes()));
    p.extend_from_slice(b"\r\n");
    p
}

fn multipart(kind: &str, parts: Vec<Vec<u8>>) -> Vec<u8> {
    let b = boundary();
    let mut out = format!("Content-Type: multipart/{kind}; boundary=\"{b}\"\r\n\r\n").into_bytes();
    for p in parts {
        out.extend(format!("--{b}\r\n").into_bytes());
        out.extend(p);
    }
    out.extend(format!("--{b}--\r\n").into_bytes());
    out
}

/// The message: header fields, then the body. `date` and `message_id` as they go out.
pub fn build(l: &Letter, date: &str, message_id: &str) -> Vec<u8> {
    let mut h = String::new();
    h.push_str(&format!("From: {}\r\n", mailbox(&l.from.0, &l.from.1)));
    let list = |v: &[String]| v.join(",\r\n ");
    if !l.to.is_empty() {
        h.push_str(&format!("To: {}\r\n", list(&l.to)));
    }
    if !l.cc.is_empty() {
        h.push_str(&format!("Cc: {}\r\n", list(&l.cc)));
    }
    if !l.bcc.is_empty() {
        h.push_str(&format!("Bcc: {}\r\n", list(&l.bcc)));
    }
    h.push_str(&format!("Subject: {}\r\n", encoded(&l.subject)));
    h.push_str(&format!("Date: {date}\r\nMessage-ID: <{message_id}>\r\n"));
    let id = |s: &str| format!("<{}>", s.trim_matches(['<', '>']));
    if let Some(r) = &l.in_reply_to {
        h.push_str(&format!("In-Reply-To: {}\r\n", id(r)));
    }
    if !l.references.is_empty() {
        let refs: Vec<String> = l.references.iter().map(|r| id(r)).collect();
        h.push_str(&format!("References: {}\r\n", refs.join("\r\n ")));
    }
    h.push_str("MIME-Version: 1.0\r\n");
    let body = match &l.html {
        Some(html) => multipart(
            "alternative",
            vec![
                text_part("text/plain", &l.text),
                text_part("text/html", html),
            ],
        ),
        None => text_part("text/plain", &l.text),
    };
    let mut parts = vec![body];
    for f in &l.files {
        let kind = if f.content_type.contains('/')
            && f.content_type.bytes().all(|b| b.is_ascii_graphic())
        {
            f.content_type.as_str()
        } else {
            "application/octet-stream"
        };
        let mut p = format!(
            "Content-Type: {kind}; {}\r\nContent-Disposition: attachment; {}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            param("name", &f.name),
            param("filename", &f.name)
        )
        .into_bytes();
        p.extend(crate::base64_lines(&f.bytes));
        p.extend_from_slice(b"\r\n");
        parts.push(p);
    }
    for (name, raw) in &l.messages {
        let mut p = format!(
            "Content-Type: message/rfc822\r\nContent-Disposition: attachment; {}\r\n\r\n",
            param("filename", name)
        )
        .into_bytes();
        p.extend_from_slice(raw);
        if !raw.ends_with(b"\r\n") {
            p.extend_from_slice(b"\r\n");
        }
        parts.push(p);
    }
    let mut out = h.into_bytes();
    if parts.len() == 1 {
        out.extend(parts.remove(0));
    } else {
        out.extend(multipart("mixed", parts));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_reads_back() {
        let l = Letter {
            from: ("Jürgen Ä".into(), "j@example.test".into()),
            to: vec!["bob@example.test".into()],
            bcc: vec!["hidden@example.test".into()],
            subject: "Grüße aus der Ferne, mit einer langen Betreffzeile die umbricht".into(),
            text: "Hallo\nBob".into(),
            html: Some("<p>Hallo <b>Bob</b></p>".into()),
            in_reply_to: Some("<m1@x>".into()),
            references: vec!["<m0@x>".into(), "m1@x".into()],
            files: vec![File {
                name: "Bericht ä.pdf".into(),
                content_type: "application/pdf".into(),
                bytes: b"%PDF-1.4".to_vec(),
            }],
            messages: vec![("orig.eml".into(), b"Subject: orig\r\n\r\nhi\r\n".to_vec())],
            ..Default::default()
        };
        let raw = build(&l, "Thu, 1 Jan 2026 10:00:00 +0000", "id1@example.test");
        let v = crate::view::view(&raw);
        assert_eq!(v.subject, l.subject);
        assert_eq!(v.from[0].name, "Jürgen Ä");
        assert_eq!(v.text.trim(), "Hallo\r\nBob");
        assert!(v.html.unwrap().contains("<b>Bob</b>"));
        assert_eq!(v.references, ["m0@x", "m1@x"]);
        let names: Vec<&str> = v.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Bericht ä.pdf", "orig.eml"]);
        let pdf = crate::view::part_content(&raw, v.attachments[0].part).unwrap();
        assert_eq!(pdf.bytes, b"%PDF-1.4");
        assert!(String::from_utf8_lossy(&raw).contains("Bcc: hidden@example.test"));
    }
}
