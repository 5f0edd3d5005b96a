//! Where a request points: the URL space under `/dav/`.
//!
//! ```text
//! /dav/                                  the root (current-user-principal)
//! /dav/principals/<user>/                a principal (RFC 5397, RFC 4791 6.2.1, RFC 6352 7.1.1)
//! /dav/calendars/<user>/                 calendar home; /dav/addressbooks/<user>/ likewise
//! /dav/calendars/<user>/<name>/          a calendar
//! /dav/calendars/<user>/<name>/<res>     a calendar object resource
//! ```

use postern_store::DavKind;

pub const ROOT: &str = "/dav/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Root,
    Principals,
    Principal(String),
    Home(DavKind, String),
    Collection(DavKind, String, String),
    Resource(DavKind, String, String, String),
}

impl Target {
    /// The path's target, its segments decoded; `None` for a path outside the DAV space.
    pub fn parse(path: &str) -> Option<Target> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let rest = path.strip_prefix("/dav")?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let trailing = rest.ends_with('/');
        let segs: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect::<Option<_>>()?;
        if segs.iter().any(|s| s == "." || s == "..") {
            return None;
        }
        let kind = |s: &str| match s {
            "calendars" => Some(DavKind::Calendar),
            "addressbooks" => Some(DavKind::AddressBook),
            _ => None,
        };
        Some(match segs.as_slice() {
            [] => Target::Root,
            [p] if p == "principals" => Target::Principals,
            [p, u] if p == "principals" => Target::Principal(u.clone()),
            [k, u] => Target::Home(kind(k)?, u.clone()),
            [k, u, c] if trailing => Target::Collection(kind(k)?, u.clone(), c.clone()),
            // A collection named without its slash is still the collection; a resource's
            // name never ends in one.
            [k, u, c] => Target::Collection(kind(k)?, u.clone(), c.clone()),
            [k, u, c, r] if !trailing => {
                Target::Resource(kind(k)?, u.clone(), c.clone(), r.clone())
            }
            _ => return None,
        })
    }

    /// The user a target belongs to.
    pub fn user(&self) -> Option<&str> {
        match self {
            Target::Root | Target::Principals => None,
            Target::Principal(u)
            | Target::Home(_, u)
            | Target::Collection(_, u, _)
            | Target::Resource(_, u, _, _) => Some(u),
        }
    }
}

fn kind_segment(kind: DavKind) -> &'static str {
    match kind {
        DavKind::Calendar => "calendars",
        DavKind::AddressBook => "addressbooks",
    }
}

pub fn principal_href(user: &str) -> String {
    format!("/dav/principals/{}/", encode(user))
}

pub fn home_href(kind: DavKind, user: &str) -> String {
    format!("/dav/{}/{}/", kind_segment(kind), encode(user))
}

pub fn collection_href(kind: DavKind, user: &str, name: &str) -> String {
    format!("{}{}/", home_href(kind, user), encode(name))
}

pub fn resource_href(kind: DavKind, user: &str, collection: &str, name: &str) -> String {
    format!(
        "{}{}",
        collection_href(kind, user, collection),
        encode(name)
    )
}

/// Percent-decodes one segment; `None` when that is not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encodes one segment: what is not unreserved (RFC 3986 2.3), '@' kept.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of an href a client sent: absolute URLs lose their scheme and host.
pub fn href_path(href: &str) -> &str {
    let h = href.trim();
    match h.find("://") {
        Some(i) => h[i + 3..].find('/').map_or("/", |j| &h[i + 3 + j..]),
        None => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("/dav/"), Some(Target::Root));
        assert_eq!(Target::parse("/dav"), Some(Target::Root));
        assert_eq!(Target::parse("/davx"), None);
        assert_eq!(
            Target::parse("/dav/principals/a%40b.test/"),
            Some(Target::Principal("a@b.test".into()))
        );
        assert_eq!(
            Target::parse("/dav/calendars/a@b.test/"),
            Some(Target::Home(DavKind::Calendar, "a@b.test".into()))
        );
        assert_eq!(
            Target::parse("/dav/addressbooks/a@b.test/default/"),
            Some(Target::Collection(
                DavKind::AddressBook,
                "a@b.test".into(),
                "default".into()
            ))
        );
        assert_eq!(
            Target::parse("/dav/calendars/a@b.test/work/x%20y.ics?z"),
            Some(Target::Resource(
                DavKind::Calendar,
                "a@b.test".into(),
                "work".into(),
                "x y.ics".into()
            ))
        );
        assert_eq!(Target::parse("/dav/calendars/a/b/c/d"), None);
        assert_eq!(Target::parse("/dav/other/a/"), None);
        assert_eq!(Target::parse("/dav/calendars/a/../b/"), None);
        assert_eq!(Target::parse("/dav/calendars/a/%FF/"), None);
    }

    #[test]
    fn hrefs_round_trip() {
        let h = resource_href(DavKind::Calendar, "a@b.test", "my cal", "ü.ics");
        assert_eq!(h, "/dav/calendars/a@b.test/my%20cal/%C3%BC.ics");
        assert_eq!(
            Target::parse(&h),
            Some(Target::Resource(
                DavKind::Calendar,
                "a@b.test".into(),
                "my cal".into(),
                "ü.ics".into()
            ))
        );
        assert_eq!(href_path("https://h.test:8443/dav/x"), "/dav/x");
        assert_eq!(href_path("/dav/x"), "/dav/x");
    }
}
