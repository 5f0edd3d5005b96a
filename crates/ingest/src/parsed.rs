//! Parse once: the one parse of an arriving message, and the views every later stage takes
//! from it (the sender's message for the authentication checks, the message as filters see
//! it, trace fields, the stored structure), so nothing parses the message again.

use std::borrow::Cow;
use std::ops::Range;

use mail_parser::{Header, HeaderName, HeaderValue, Message, MessagePart, PartType};
use postern_message::MessageMeta;

pub struct Parsed<'a> {
    bytes: &'a [u8],
    /// Where the parsed part begins: after the Return-Path field, which only local copies
    /// carry (it is not sent on, and filters do not see it).
    start: usize,
    /// Header fields of ours at the top of the parsed part (our Received field).
    ours: usize,
    message: Option<Message<'a>>,
}

impl<'a> Parsed<'a> {
    /// Parses `bytes[start..]`, whose first `ours` header fields are our own.
    pub fn new(bytes: &'a [u8], start: usize, ours: usize) -> Parsed<'a> {
        let start = start.min(bytes.len());
        Parsed {
            bytes,
            start,
            ours,
            message: postern_message::parse(&bytes[start..]),
        }
    }

    /// The parsed part: the message without its Return-Path.
    pub fn region(&self) -> &'a [u8] {
        &self.bytes[self.start..]
    }

    pub fn message(&self) -> Option<&Message<'a>> {
        self.message.as_ref()
    }

    /// The header fields the sender wrote (ours excluded).
    pub fn headers(&self) -> &[Header<'a>] {
        match &self.message {
            Some(m) => m.parts[0].headers.get(self.ours..).unwrap_or_default(),
            None => &[],
        }
    }

    /// A field's value as written, unfolded and trimmed.
    pub fn value(&self, h: &Header) -> String {
        let raw = self
            .region()
            .get(h.offset_start as usize..h.offset_end as usize)
            .unwrap_or_default();
        String::from_utf8_lossy(raw)
            .split("\r\n")
            .map(str::trim)
            .collect::<String>()
    }

    /// The Message-ID field, as written.
    pub fn message_id(&self) -> Option<String> {
        let h = self
            .headers()
            .iter()
            .find(|h| h.name == HeaderName::MessageId)?;
        Some(self.value(h)).filter(|v| !v.is_empty() && v.len() < 1000)
    }

    /// Whether the header says it is a DMARC aggregate or TLS report (RFC 7489 7.2.1.1 and
    /// RFC 8460 5.3 give their Subject; RFC 8460 names TLS-Report-Domain).
    pub fn is_report(&self) -> bool {
        self.headers().iter().any(|h| match &h.name {
            HeaderName::Subject => h.value.as_text().is_some_and(|t| {
                t.trim_start()
                    .get(..14)
                    .is_some_and(|p| p.eq_ignore_ascii_case("report domain:"))
            }),
            HeaderName::Other(n) => n.eq_ignore_ascii_case("TLS-Report-Domain"),
            _ => false,
        })
    }

    /// The author's address (the first From), lower case.
    pub fn author(&self) -> Option<String> {
        let h = self.headers().iter().find(|h| h.name == HeaderName::From)?;
        match &h.value {
            HeaderValue::Address(a) => a.first()?.address().map(str::to_ascii_lowercase),
            _ => None,
        }
    }

    /// Every address of the From field (all of them, groups included), lower case.
    pub fn authors(&self) -> Vec<String> {
        self.addresses(|n| *n == HeaderName::From)
    }

    /// The address of the Sender field, lower case.
    pub fn sender(&self) -> Option<String> {
        self.addresses(|n| *n == HeaderName::Sender)
            .into_iter()
            .next()
    }

    fn addresses(&self, pick: impl Fn(&HeaderName) -> bool) -> Vec<String> {
        self.headers()
            .iter()
            .filter(|h| pick(&h.name))
            .filter_map(|h| match &h.value {
                HeaderValue::Address(a) => Some(a),
                _ => None,
            })
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address())
            .map(str::to_ascii_lowercase)
            .collect()
    }

    /// The stored structure of `bytes` as they are now.
    pub fn meta(&self) -> MessageMeta {
        postern_message::meta::compute_parsed(self.message.as_ref(), self.region())
            .moved(self.start as i64)
    }

    /// The message as its sender sent it (our fields left out), for the authentication
    /// checks; `None` when it has no header fields of its own. Its offsets are into
    /// [`Parsed::region`].
    pub fn as_sent(&self) -> Option<Message<'a>> {
        let root = &self.message.as_ref()?.parts[0];
        let headers = self.headers();
        if headers.is_empty() {
            return None;
        }
        Some(Message {
            parts: vec![MessagePart {
                headers: headers.to_vec(),
                is_encoding_problem: false,
                body: PartType::Text("".into()),
                encoding: root.encoding,
                offset_header: root.offset_header,
                offset_body: root.offset_body,
                offset_end: root.offset_end,
            }],
            raw_message: Cow::Borrowed(self.region()),
            ..Default::default()
        })
    }

    /// Where (in the whole message) the sender's fields for which `pick` says yes are: each
    /// whole field, continuation lines included, in order.
    pub fn field_ranges(&self, pick: impl Fn(&[u8]) -> bool) -> Vec<Range<usize>> {
        let region = self.region();
        self.headers()
            .iter()
            .map(|h| h.offset_field as usize..h.offset_end as usize)
            .filter(|r| r.end <= region.len() && pick(&region[r.clone()]))
            .map(|r| r.start + self.start..r.end + self.start)
            .collect()
    }

    /// The message as filters see it: `added` fields (name, value) first, as if written
    /// above ours, and the fields at `removed` (ranges of the whole message) gone.
    pub fn for_filter(&self, added: &[(String, String)], removed: &[Range<usize>]) -> Message<'a> {
        let Some(m) = &self.message else {
            return Message {
                parts: vec![MessagePart {
                    body: PartType::Text("".into()),
                    ..Default::default()
                }],
                raw_message: Cow::Borrowed(self.region()),
                ..Default::default()
            };
        };
        let mut m = m.clone();
        let start = self.start;
        let root = &mut m.parts[0];
        root.headers.retain(|h| {
            let r = h.offset_field as usize + start..h.offset_end as usize + start;
            !removed.contains(&r)
        });
        for (i, (name, value)) in added.iter().enumerate() {
            root.headers.insert(
                i,
                Header {
                    name: HeaderName::parse(name.clone())
                        .unwrap_or(HeaderName::Other(name.clone().into())),
                    value: HeaderValue::Text(value.clone().into()),
                    offset_field: 0,
                    offset_start: 0,
                    offset_end: 0,
                },
            );
        }
        m
    }
}

/// Header fields in text ("Name: value\r\n\tfolded\r\n..."), as (name, unfolded value).
pub fn fields_of(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Return-Path: <a@far.test>\r\nReceived: from x\r\n\tby us; date\r\nFrom: \"A\" <A@Far.test>\r\nMessage-ID:\r\n <m1@far.test>\r\nAuthentication-Results: us; spf=pass\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";

    #[test]
    fn views_of_one_parse() {
        let p = Parsed::new(MSG, 27, 1);
        assert_eq!(p.message_id().as_deref(), Some("<m1@far.test>"));
        assert_eq!(p.author().as_deref(), Some("a@far.test"));
        assert_eq!(p.authors(), ["a@far.test"]);
        assert_eq!(p.sender(), None);
        assert_eq!(p.headers().len(), 4, "our Received is not the sender's");
        // The structure is that of the whole message, as if parsed from its first byte.
        assert_eq!(p.meta(), postern_message::meta::compute(MSG));
        let forged = p.field_ranges(|f| f.starts_with(b"Authentication-Results: us"));
        assert_eq!(
            &MSG[forged[0].clone()],
            b"Authentication-Results: us; spf=pass\r\n"
        );
        let sent = p.as_sent().unwrap();
        assert_eq!(sent.parts[0].headers.len(), 4);
        let f = p.for_filter(
            &fields_of("X-Spam-Score: 1.0\r\nX-Spam-Status: No,\r\n\tscore=1.0\r\n"),
            &forged,
        );
        let names: Vec<&str> = f.parts[0].headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "X-Spam-Score",
                "X-Spam-Status",
                "Received",
                "From",
                "Message-ID",
                "Content-Type"
            ]
        );
        assert_eq!(f.parts[0].headers[1].value.as_text(), Some("No, score=1.0"));
    }

    #[test]
    fn every_author_and_the_sender() {
        let m = b"From: A <a@x.test>, b@X.test\r\nSender: <Assistant@x.test>\r\nFrom: team: c@x.test;\r\n\r\nhi\r\n";
        let p = Parsed::new(m, 0, 0);
        assert_eq!(p.authors(), ["a@x.test", "b@x.test", "c@x.test"]);
        assert_eq!(p.sender().as_deref(), Some("assistant@x.test"));
    }
}
