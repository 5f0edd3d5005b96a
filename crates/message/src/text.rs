//! Messages as text for searching (IMAP SEARCH HEADER, BODY, TEXT): header fields decoded, text
//! parts decoded, all lower case.

use mail_parser::{Address, HeaderValue, PartType};

/// What a text key is matched against, decoded, lower case.
#[derive(Default)]
pub struct SearchText {
    /// The Date header's wall-clock time in its own zone (see `MessageMeta::sent_local`).
    pub sent: Option<i64>,
    /// (lower-case header name, decoded lower-case value)
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw_header: String,
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

fn header_text(v: &HeaderValue) -> String {
    match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        HeaderValue::Address(a) => {
            let list: Vec<String> = match a {
                Address::List(l) => l
                    .iter()
                    .map(|x| {
                        format!(
                            "{} <{}>",
                            x.name.as_deref().unwrap_or(""),
                            x.address.as_deref().unwrap_or("")
                        )
                    })
                    .collect(),
                Address::Group(g) => g
                    .iter()
                    .flat_map(|gr| gr.addresses.iter())
                    .map(|x| {
                        format!(
                            "{} <{}>",
                            x.name.as_deref().unwrap_or(""),
                            x.address.as_deref().unwrap_or("")
                        )
                    })
                    .collect(),
            };
            list.join(", ")
        }
        HeaderValue::DateTime(d) => d.to_rfc822(),
        HeaderValue::ContentType(c) => {
            format!("{}/{}", c.c_type, c.c_subtype.as_deref().unwrap_or(""))
        }
        HeaderValue::Received(_) | HeaderValue::Empty => String::new(),
    }
}

impl SearchText {
    /// SEARCH HEADER: a field called `name` holds `needle`, case ignored (IMAP and the
    /// webmail's search both match so).
    pub fn header_has(&self, name: &str, needle: &str) -> bool {
        let (name, needle) = (lower(name), lower(needle));
        self.headers
            .iter()
            .any(|(n, v)| *n == name && v.contains(&needle))
    }

    /// SEARCH BODY: the text parts hold `needle`, case ignored.
    pub fn body_has(&self, needle: &str) -> bool {
        self.body.contains(&lower(needle))
    }

    /// SEARCH TEXT: the header or the text parts hold `needle`, case ignored.
    pub fn text_has(&self, needle: &str) -> bool {
        let v = lower(needle);
        self.raw_header.contains(&v)
            || self.headers.iter().any(|(_, val)| val.contains(&v))
            || self.body.contains(&v)
    }

    /// The text of a message (its header; with `full`, its text parts too).
    pub fn load(raw: &[u8], full: bool) -> SearchText {
        let mut c = SearchText::default();
        let Some(msg) = crate::parse(raw) else {
            c.body = lower(&String::from_utf8_lossy(raw));
            return c;
        };
        c.sent = msg.date().map(crate::meta::local_time);
        let root = &msg.parts[0];
        c.raw_header = lower(&String::from_utf8_lossy(
            &raw[..(root.offset_body as usize).min(raw.len())],
        ));
        for h in &root.headers {
            let raw_v = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let decoded = header_text(&h.value);
            c.headers
                .push((lower(h.name.as_str()), lower(&format!("{decoded} {raw_v}"))));
        }
        if full {
            let mut body = String::new();
            for p in &msg.parts {
                match &p.body {
                    PartType::Text(t) | PartType::Html(t) => {
                        body.push_str(t);
                        body.push('\n');
                    }
                    _ => {}
                }
            }
            if body.is_empty() {
                body = String::from_utf8_lossy(&raw[(root.offset_body as usize).min(raw.len())..])
                    .into_owned();
            }
            c.body = lower(&body);
        }
        c
    }
}
