//! XML in and out: a request body read into a small tree with resolved namespaces, and the
//! multistatus answers written with fixed prefixes.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
pub const CALSERVER: &str = "http://calendarserver.org/ns/";
pub const APPLE: &str = "http://apple.com/ns/ical/";

/// Deeper nesting than any DAV request needs is refused.
const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// "{namespace}name", how properties are kept.
    pub fn key(&self) -> String {
        format!("{{{}}}{}", self.ns, self.name)
    }

    /// The element as XML that stands alone (its namespace declared on it).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let p = format!("x{depth}");
        out.push_str(&format!(
            "<{p}:{} xmlns:{p}=\"{}\"",
            self.name,
            escape(&self.ns)
        ));
        for (n, v) in &self.attrs {
            out.push_str(&format!(" {n}=\"{}\"", escape(v)));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&escape(&self.text));
        for c in &self.children {
            c.write(out, depth + 1);
        }
        out.push_str(&format!("</{p}:{}>", self.name));
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            // Kept through the reader's line-end normalization: iCalendar lines end in CRLF.
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// The body's root element. Whitespace-only text is dropped.
pub fn parse(body: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the XML body is not UTF-8".to_string())?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    let bad = |e: quick_xml::Error| format!("bad XML: {e}");
    loop {
        let (ns, ev) = reader.read_resolved_event().map_err(bad)?;
        let ns = match ns {
            ResolveResult::Bound(n) => n.as_ref().to_string(),
            _ => String::new(),
        };
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err("the XML body nests too deep or is too long".into());
                }
                let mut el = Element {
                    ns,
                    name: s.local_name().as_ref().to_string(),
                    ..Default::default()
                };
                for a in s.attributes().flatten() {
                    let key = a.key.local_name().as_ref().to_string();
                    if a.key.as_ref().starts_with("xmlns") {
                        continue;
                    }
                    let v = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| format!("bad XML: {e}"))?;
                    el.attrs.push((key, v.into_owned()));
                }
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let mut el = stack.pop().ok_or("bad XML: an end without a start")?;
                if el.text.trim().is_empty() {
                    el.text.clear();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(el) = stack.last_mut() {
                    let c = if r.is_char_ref() {
                        r.resolve_char_ref().ok().flatten()
                    } else {
                        match r.xml10_content().as_ref() {
                            "amp" => Some('&'),
                            "lt" => Some('<'),
                            "gt" => Some('>'),
                            "quot" => Some('"'),
                            "apos" => Some('\''),
                            _ => None,
                        }
                    };
                    el.text
                        .push(c.ok_or("bad XML: an unknown entity reference")?);
                }
            }
            Event::Eof => return Err("the XML body ends early".into()),
            _ => {}
        }
    }
}

/// A multistatus answer being written.
pub struct MultiStatus {
    out: String,
}

/// One property in an answer: its name and what it holds (XML, already escaped).
#[derive(Debug, Clone)]
pub struct Prop {
    pub ns: String,
    pub name: String,
    pub value: Option<String>,
}

fn prefix(ns: &str) -> Option<&'static str> {
    Some(match ns {
        DAV => "d",
        CALDAV => "c",
        CARDDAV => "card",
        CALSERVER => "cs",
        APPLE => "ical",
        _ => return None,
    })
}

pub const ROOT_ATTRS: &str = "xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" \
     xmlns:card=\"urn:ietf:params:xml:ns:carddav\" xmlns:cs=\"http://calendarserver.org/ns/\" \
     xmlns:ical=\"http://apple.com/ns/ical/\"";

/// `<name/>` or `<name>value</name>` for a property in any namespace.
pub fn element(ns: &str, name: &str, value: Option<&str>) -> String {
    let (open, close) = match prefix(ns) {
        Some(p) => (format!("{p}:{name}"), format!("{p}:{name}")),
        None => (
            format!("x:{name} xmlns:x=\"{}\"", escape(ns)),
            format!("x:{name}"),
        ),
    };
    match value {
        Some(v) if !v.is_empty() => format!("<{open}>{v}</{close}>"),
        _ => format!("<{open}/>"),
    }
}

impl Default for MultiStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl MultiStatus {
    pub fn new() -> Self {
        MultiStatus {
            out: format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus {ROOT_ATTRS}>"
            ),
        }
    }

    /// A response with properties found (200) and not (404), or with the statuses given.
    pub fn response(&mut self, href: &str, props: &[(u16, Vec<Prop>)]) {
        self.out.push_str("<d:response><d:href>");
        self.out.push_str(&escape(href));
        self.out.push_str("</d:href>");
        for (status, list) in props {
            if list.is_empty() {
                continue;
            }
            self.out.push_str("<d:propstat><d:prop>");
            for p in list {
                self.out
                    .push_str(&element(&p.ns, &p.name, p.value.as_deref()));
            }
            self.out.push_str(&format!(
                "</d:prop><d:status>HTTP/1.1 {status} {}</d:status></d:propstat>",
                reason(*status)
            ));
        }
        self.out.push_str("</d:response>");
    }

    /// A response that is only a status (a member gone, a href not found).
    pub fn status(&mut self, href: &str, status: u16) {
        self.out.push_str(&format!(
            "<d:response><d:href>{}</d:href><d:status>HTTP/1.1 {status} {}</d:status></d:response>",
            escape(href),
            reason(status)
        ));
    }

    pub fn finish(mut self, sync_token: Option<&str>) -> String {
        if let Some(t) = sync_token {
            self.out
                .push_str(&format!("<d:sync-token>{}</d:sync-token>", escape(t)));
        }
        self.out.push_str("</d:multistatus>\n");
        self.out
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        207 => "Multi-Status",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        424 => "Failed Dependency",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// A `DAV:error` body naming the precondition that failed, with a sentence for people.
pub fn error_body(ns: &str, condition: &str, why: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error {ROOT_ATTRS}>{}<!-- {} --></d:error>\n",
        element(ns, condition, None),
        why.replace("--", "- -")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_and_text() {
        let x = br#"<?xml version="1.0"?>
            <D:propfind xmlns:D="DAV:" xmlns="urn:ietf:params:xml:ns:caldav">
              <D:prop><D:displayname/><calendar-description/></D:prop>
              <D:href>/a%20b?x=1&amp;y=&#50;</D:href>
            </D:propfind>"#;
        let e = parse(x).unwrap();
        assert!(e.is(DAV, "propfind"));
        let prop = e.child(DAV, "prop").unwrap();
        assert!(prop.children[0].is(DAV, "displayname"));
        assert!(prop.children[1].is(CALDAV, "calendar-description"));
        assert_eq!(e.child(DAV, "href").unwrap().text, "/a%20b?x=1&y=2");
    }

    #[test]
    fn refuses_what_is_not_xml() {
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a>").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn writes_what_it_read() {
        let e = parse(br#"<o:order xmlns:o="urn:x" n="1">2 &lt; 3</o:order>"#).unwrap();
        let back = parse(e.to_xml().as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.key(), "{urn:x}order");
    }

    #[test]
    fn multistatus() {
        let mut m = MultiStatus::new();
        m.response(
            "/dav/a&b/",
            &[
                (
                    200,
                    vec![Prop {
                        ns: DAV.into(),
                        name: "displayname".into(),
                        value: Some("x &amp; y".into()),
                    }],
                ),
                (
                    404,
                    vec![Prop {
                        ns: "urn:x".into(),
                        name: "other".into(),
                        value: None,
                    }],
                ),
            ],
        );
        m.status("/dav/gone", 404);
        let out = m.finish(Some("urn:t:1"));
        let e = parse(out.as_bytes()).unwrap();
        let r = e.child(DAV, "response").unwrap();
        assert_eq!(r.child(DAV, "href").unwrap().text, "/dav/a&b/");
        let stats: Vec<_> = r.children_named(DAV, "propstat").collect();
        assert_eq!(stats.len(), 2);
        let found = stats[0].child(DAV, "prop").unwrap();
        assert_eq!(found.child(DAV, "displayname").unwrap().text, "x & y");
        assert!(
            stats[1]
                .child(DAV, "prop")
                .unwrap()
                .child("urn:x", "other")
                .is_some()
        );
        assert_eq!(e.child(DAV, "sync-token").unwrap().text, "urn:t:1");
    }
}
