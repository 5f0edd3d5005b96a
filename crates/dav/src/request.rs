//! Request bodies as typed requests: PROPFIND, PROPPATCH, MKCOL/MKCALENDAR and the REPORTs.

use crate::content::{CompFilter, MatchType, PropFilter, TextMatch, parse_utc};
use crate::xml::{CALDAV, CARDDAV, DAV, Element, parse};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PropName {
    pub ns: String,
    pub name: String,
}

impl PropName {
    pub fn new(ns: &str, name: &str) -> PropName {
        PropName {
            ns: ns.into(),
            name: name.into(),
        }
    }

    pub fn key(&self) -> String {
        format!("{{{}}}{}", self.ns, self.name)
    }
}

/// What a PROPFIND (or a REPORT's prop) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropRequest {
    /// allprop, with the names its include element adds.
    All(Vec<PropName>),
    Names,
    Props(Vec<PropName>),
}

impl PropRequest {
    fn from_parent(e: &Element) -> PropRequest {
        if e.child(DAV, "propname").is_some() {
            return PropRequest::Names;
        }
        if e.child(DAV, "allprop").is_some() {
            let include = e.child(DAV, "include").map(names).unwrap_or_default();
            return PropRequest::All(include);
        }
        match e.child(DAV, "prop") {
            Some(p) => PropRequest::Props(names(p)),
            None => PropRequest::All(Vec::new()),
        }
    }
}

fn names(e: &Element) -> Vec<PropName> {
    e.children
        .iter()
        .map(|c| PropName::new(&c.ns, &c.name))
        .collect()
}

fn bad(what: &str) -> String {
    format!("the request body is not a {what}")
}

pub fn propfind(body: &[u8]) -> Result<PropRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PropRequest::All(Vec::new()));
    }
    let e = parse(body)?;
    if !e.is(DAV, "propfind") {
        return Err(bad("DAV:propfind"));
    }
    Ok(PropRequest::from_parent(&e))
}

/// A PROPPATCH's changes in order: `Some` sets the property (the element holds its value),
/// `None` removes it.
pub fn proppatch(body: &[u8]) -> Result<Vec<(Element, bool)>, String> {
    let e = parse(body)?;
    if !e.is(DAV, "propertyupdate") {
        return Err(bad("DAV:propertyupdate"));
    }
    let mut out = Vec::new();
    for op in &e.children {
        let set = if op.is(DAV, "set") {
            true
        } else if op.is(DAV, "remove") {
            false
        } else {
            continue;
        };
        for prop in op.children_named(DAV, "prop") {
            for p in &prop.children {
                out.push((p.clone(), set));
            }
        }
    }
    Ok(out)
}

/// The properties a MKCOL (RFC 5689) or MKCALENDAR (RFC 4791 5.3.1) sets.
pub fn mkcol(body: &[u8], calendar: bool) -> Result<Vec<Element>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let e = parse(body)?;
    let ok = if calendar {
        e.is(CALDAV, "mkcalendar")
    } else {
        e.is(DAV, "mkcol")
    };
    if !ok {
        return Err(bad(if calendar {
            "CALDAV:mkcalendar"
        } else {
            "DAV:mkcol"
        }));
    }
    Ok(e.children_named(DAV, "set")
        .flat_map(|s| s.children_named(DAV, "prop"))
        .flat_map(|p| p.children.iter().cloned())
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    CalendarQuery {
        props: PropRequest,
        filter: CompFilter,
        /// CALDAV:expand in calendar-data (RFC 4791 9.6.5).
        expand: Option<(i64, i64)>,
    },
    AddressbookQuery {
        props: PropRequest,
        filters: Vec<PropFilter>,
        all_of: bool,
        limit: Option<usize>,
    },
    Multiget {
        props: PropRequest,
        hrefs: Vec<String>,
        expand: Option<(i64, i64)>,
    },
    SyncCollection {
        token: String,
        props: PropRequest,
        limit: Option<usize>,
    },
    FreeBusy {
        range: (i64, i64),
    },
}

fn time_range(e: &Element) -> Result<Option<(i64, i64)>, String> {
    let Some(t) = e.child(CALDAV, "time-range") else {
        return Ok(None);
    };
    let read = |a: &str, default: i64| match t.attr(a) {
        Some(v) => parse_utc(v).ok_or_else(|| format!("bad time-range {a}: {v}")),
        None => Ok(default),
    };
    let from = read("start", i64::MIN / 2)?;
    let to = read("end", i64::MAX / 2)?;
    if t.attr("start").is_none() && t.attr("end").is_none() {
        return Err("a time-range needs a start or an end".into());
    }
    Ok(Some((from, to)))
}

fn text_match(e: &Element) -> TextMatch {
    TextMatch {
        text: e.text.clone(),
        negate: e.attr("negate-condition") == Some("yes"),
        match_type: match e.attr("match-type") {
            Some("equals") => MatchType::Equals,
            Some("starts-with") => MatchType::StartsWith,
            Some("ends-with") => MatchType::EndsWith,
            _ => MatchType::Contains,
        },
        octet: e.attr("collation") == Some("i;octet"),
    }
}

fn prop_filter(e: &Element, ns: &str) -> PropFilter {
    PropFilter {
        name: e.attr("name").unwrap_or("").to_ascii_uppercase(),
        is_not_defined: e.child(ns, "is-not-defined").is_some(),
        text_matches: e.children_named(ns, "text-match").map(text_match).collect(),
        all_of: e.attr("test") == Some("allof"),
    }
}

fn comp_filter(e: &Element) -> Result<CompFilter, String> {
    Ok(CompFilter {
        name: e.attr("name").unwrap_or("").to_ascii_uppercase(),
        is_not_defined: e.child(CALDAV, "is-not-defined").is_some(),
        time_range: time_range(e)?,
        props: e
            .children_named(CALDAV, "prop-filter")
            .map(|p| prop_filter(p, CALDAV))
            .collect(),
        comps: e
            .children_named(CALDAV, "comp-filter")
            .map(comp_filter)
            .collect::<Result<_, _>>()?,
    })
}

fn limit(e: &Element) -> Option<usize> {
    e.child(DAV, "limit")
        .or_else(|| e.child(CARDDAV, "limit"))
        .and_then(|l| l.child(DAV, "nresults").or(l.child(CARDDAV, "nresults")))
        .and_then(|n| n.text.trim().parse().ok())
}

/// The range of a CALDAV:expand asked for in the prop's calendar-data.
fn expand_range(e: &Element) -> Result<Option<(i64, i64)>, String> {
    let Some(x) = e
        .child(DAV, "prop")
        .and_then(|p| p.child(CALDAV, "calendar-data"))
        .and_then(|c| c.child(CALDAV, "expand"))
    else {
        return Ok(None);
    };
    let read = |a: &str| {
        x.attr(a)
            .and_then(parse_utc)
            .ok_or_else(|| format!("CALDAV:expand needs {a} as a UTC time"))
    };
    Ok(Some((read("start")?, read("end")?)))
}

pub fn report(body: &[u8]) -> Result<Report, String> {
    let e = parse(body)?;
    let props = PropRequest::from_parent(&e);
    let expand = expand_range(&e)?;
    let hrefs = || {
        e.children_named(DAV, "href")
            .map(|h| h.text.trim().to_string())
            .collect()
    };
    if e.is(CALDAV, "calendar-query") {
        let filter = e
            .child(CALDAV, "filter")
            .and_then(|f| f.child(CALDAV, "comp-filter"))
            .map(comp_filter)
            .transpose()?
            .unwrap_or(CompFilter {
                name: "VCALENDAR".into(),
                ..Default::default()
            });
        Ok(Report::CalendarQuery {
            props,
            filter,
            expand,
        })
    } else if e.is(CALDAV, "calendar-multiget") || e.is(CARDDAV, "addressbook-multiget") {
        Ok(Report::Multiget {
            props,
            hrefs: hrefs(),
            expand,
        })
    } else if e.is(CARDDAV, "addressbook-query") {
        let f = e.child(CARDDAV, "filter");
        Ok(Report::AddressbookQuery {
            props,
            filters: f
                .map(|f| {
                    f.children_named(CARDDAV, "prop-filter")
                        .map(|p| prop_filter(p, CARDDAV))
                        .collect()
                })
                .unwrap_or_default(),
            all_of: f.and_then(|f| f.attr("test")) == Some("allof"),
            limit: limit(&e),
        })
    } else if e.is(DAV, "sync-collection") {
        Ok(Report::SyncCollection {
            token: e
                .child(DAV, "sync-token")
                .map(|t| t.text.trim().to_string())
                .unwrap_or_default(),
            props,
            limit: limit(&e),
        })
    } else if e.is(CALDAV, "free-busy-query") {
        let range = time_range(&e)?.ok_or("a free-busy-query needs a time-range")?;
        Ok(Report::FreeBusy { range })
    } else {
        Err(format!(
            "the report {{{}}}{} is not supported",
            e.ns, e.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propfinds() {
        assert_eq!(propfind(b"").unwrap(), PropRequest::All(Vec::new()));
        let p = propfind(
            br#"<d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/">
                <d:prop><d:resourcetype/><cs:getctag/></d:prop></d:propfind>"#,
        )
        .unwrap();
        assert_eq!(
            p,
            PropRequest::Props(vec![
                PropName::new(DAV, "resourcetype"),
                PropName::new("http://calendarserver.org/ns/", "getctag")
            ])
        );
        let n = propfind(br#"<propfind xmlns="DAV:"><propname/></propfind>"#).unwrap();
        assert_eq!(n, PropRequest::Names);
        assert!(propfind(br#"<x xmlns="DAV:"/>"#).is_err());
    }

    #[test]
    fn calendar_query() {
        let r = report(
            br#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
              <d:prop><d:getetag/><c:calendar-data/></d:prop>
              <c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">
                <c:time-range start="20260101T000000Z" end="20260201T000000Z"/>
                <c:prop-filter name="summary"><c:text-match negate-condition="yes">x</c:text-match></c:prop-filter>
              </c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"#,
        )
        .unwrap();
        let Report::CalendarQuery {
            props,
            filter,
            expand,
        } = r
        else {
            panic!("{r:?}")
        };
        assert!(matches!(props, PropRequest::Props(ref v) if v.len() == 2));
        let ev = &filter.comps[0];
        assert_eq!(ev.name, "VEVENT");
        assert_eq!(ev.time_range, Some((1_767_225_600, 1_769_904_000)));
        assert_eq!(ev.props[0].name, "SUMMARY");
        assert!(ev.props[0].text_matches[0].negate);
        assert_eq!(expand, None);
        let r = report(
            br#"<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
              <d:prop><c:calendar-data><c:expand start="20260101T000000Z" end="20260201T000000Z"/>
              </c:calendar-data></d:prop></c:calendar-query>"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Report::CalendarQuery {
                expand: Some((1_767_225_600, 1_769_904_000)),
                ..
            }
        ));
    }

    #[test]
    fn other_reports() {
        let r = report(
            br#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>t</d:sync-token>
                <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#,
        )
        .unwrap();
        assert!(matches!(r, Report::SyncCollection { ref token, .. } if token == "t"));
        let r = report(
            br#"<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav">
                <d:prop><d:getetag/></d:prop><d:href>/a</d:href><d:href>/b</d:href></card:addressbook-multiget>"#,
        )
        .unwrap();
        assert!(matches!(r, Report::Multiget { ref hrefs, .. } if hrefs == &["/a", "/b"]));
        let r = report(
            br#"<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
              <C:filter test="allof"><C:prop-filter name="FN"><C:text-match match-type="starts-with">J</C:text-match></C:prop-filter></C:filter>
              <C:limit><C:nresults>5</C:nresults></C:limit></C:addressbook-query>"#,
        )
        .unwrap();
        let Report::AddressbookQuery {
            filters,
            all_of,
            limit,
            ..
        } = r
        else {
            panic!()
        };
        assert!(all_of);
        assert_eq!(limit, Some(5));
        assert_eq!(filters[0].text_matches[0].match_type, MatchType::StartsWith);
        assert!(report(br#"<d:other xmlns:d="DAV:"/>"#).is_err());
        assert!(
            report(br#"<c:free-busy-query xmlns:c="urn:ietf:params:xml:ns:caldav"/>"#).is_err()
        );
    }

    #[test]
    fn mkcol_and_proppatch() {
        let set = mkcol(
            br#"<d:mkcol xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop>
                <d:resourcetype><d:collection/><c:calendar/></d:resourcetype>
                <d:displayname>Work</d:displayname></d:prop></d:set></d:mkcol>"#,
            false,
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(mkcol(b"", true).unwrap().is_empty());
        let ops = proppatch(
            br#"<d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:displayname>A</d:displayname></d:prop></d:set>
                <d:remove><d:prop><d:displayname/></d:prop></d:remove></d:propertyupdate>"#,
        )
        .unwrap();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].1 && !ops[1].1);
    }
}
