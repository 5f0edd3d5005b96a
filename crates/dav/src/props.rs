//! The properties of each kind of node, by name: what PROPFIND and the REPORTs answer.

use postern_store::{DavCollection, DavKind, DavResource};

use crate::path::{collection_href, home_href, principal_href, resource_href};
use crate::request::PropName;
use crate::xml::{APPLE, CALDAV, CALSERVER, CARDDAV, DAV, element, escape};

/// What a request can point at, as found in the store.
pub enum Node<'a> {
    Root,
    Principal,
    Home(DavKind),
    Collection(&'a DavCollection),
    Resource(&'a DavCollection, &'a DavResource),
}

/// What the answers need beyond the node.
pub struct Context<'a> {
    pub user: &'a str,
    pub max_resource_size: u64,
}

impl Node<'_> {
    pub fn href(&self, cx: &Context) -> String {
        match self {
            Node::Root => crate::path::ROOT.to_string(),
            Node::Principal => principal_href(cx.user),
            Node::Home(k) => home_href(*k, cx.user),
            Node::Collection(c) => collection_href(c.kind, cx.user, &c.name),
            Node::Resource(c, r) => resource_href(c.kind, cx.user, &c.name, &r.name),
        }
    }

    /// The names allprop and propname list (RFC 4918 9.1): not calendar-data or address-data
    /// (RFC 4791 9.6, RFC 6352 10.4).
    pub fn names(&self) -> Vec<PropName> {
        let mut v: Vec<(&str, &str)> = vec![
            (DAV, "resourcetype"),
            (DAV, "current-user-principal"),
            (DAV, "current-user-privilege-set"),
        ];
        match self {
            Node::Root => v.push((DAV, "displayname")),
            Node::Principal => v.extend([
                (DAV, "displayname"),
                (DAV, "principal-URL"),
                (CALDAV, "calendar-home-set"),
                (CALDAV, "calendar-user-address-set"),
                (CARDDAV, "addressbook-home-set"),
            ]),
            Node::Home(_) => v.extend([(DAV, "displayname"), (DAV, "owner")]),
            Node::Collection(c) => {
                v.extend([
                    (DAV, "displayname"),
                    (DAV, "owner"),
                    (DAV, "sync-token"),
                    (DAV, "supported-report-set"),
                    (CALSERVER, "getctag"),
                ]);
                match c.kind {
                    DavKind::Calendar => v.extend([
                        (CALDAV, "calendar-description"),
                        (CALDAV, "supported-calendar-component-set"),
                        (CALDAV, "supported-calendar-data"),
                        (CALDAV, "max-resource-size"),
                        (APPLE, "calendar-color"),
                    ]),
                    DavKind::AddressBook => v.extend([
                        (CARDDAV, "addressbook-description"),
                        (CARDDAV, "supported-address-data"),
                        (CARDDAV, "max-resource-size"),
                    ]),
                }
            }
            Node::Resource(..) => v.extend([
                (DAV, "getetag"),
                (DAV, "getcontenttype"),
                (DAV, "getcontentlength"),
            ]),
        }
        let mut out: Vec<PropName> = v.into_iter().map(|(n, l)| PropName::new(n, l)).collect();
        if let Node::Collection(c) = self {
            for (key, _) in &c.props {
                if let Some((ns, name)) = split_key(key) {
                    out.push(PropName::new(ns, name));
                }
            }
        }
        out
    }

    /// The property's value (XML inside its element), `None` when the node has no such
    /// property.
    pub fn value(&self, name: &PropName, cx: &Context) -> Option<String> {
        let href = |h: String| format!("<d:href>{}</d:href>", escape(&h));
        let n = (name.ns.as_str(), name.name.as_str());
        // What every node answers.
        match n {
            (DAV, "current-user-principal") => return Some(href(principal_href(cx.user))),
            (DAV, "current-user-privilege-set") => {
                let read_only = match self {
                    Node::Collection(c) | Node::Resource(c, _) => crate::directory::is_directory(c),
                    _ => false,
                };
                if read_only {
                    return Some(
                        "<d:privilege><d:read/></d:privilege>\
                         <d:privilege><d:read-current-user-privilege-set/></d:privilege>"
                            .into(),
                    );
                }
                return Some(
                    [
                        "read",
                        "write",
                        "write-properties",
                        "write-content",
                        "bind",
                        "unbind",
                        "read-current-user-privilege-set",
                    ]
                    .iter()
                    .map(|p| format!("<d:privilege><d:{p}/></d:privilege>"))
                    .collect(),
                );
            }
            _ => {}
        }
        match self {
            Node::Root => match n {
                (DAV, "resourcetype") => Some("<d:collection/>".into()),
                (DAV, "displayname") => Some("Postern".into()),
                _ => None,
            },
            Node::Principal => match n {
                (DAV, "resourcetype") => Some("<d:principal/>".into()),
                (DAV, "displayname") => Some(escape(cx.user)),
                (DAV, "principal-URL") => Some(href(principal_href(cx.user))),
                (CALDAV, "calendar-home-set") => Some(href(home_href(DavKind::Calendar, cx.user))),
                (CARDDAV, "addressbook-home-set") => {
                    Some(href(home_href(DavKind::AddressBook, cx.user)))
                }
                (CALDAV, "calendar-user-address-set") => Some(href(format!("mailto:{}", cx.user))),
                _ => None,
            },
            Node::Home(_) => match n {
                (DAV, "resourcetype") => Some("<d:collection/>".into()),
                (DAV, "displayname") => Some(escape(cx.user)),
                (DAV, "owner") => Some(href(principal_href(cx.user))),
                _ => None,
            },
            Node::Collection(c) => collection_value(c, n, cx),
            Node::Resource(c, r) => match n {
                (DAV, "resourcetype") => Some(String::new()),
                (DAV, "getetag") => Some(escape(&format!("\"{}\"", r.etag))),
                (DAV, "getcontenttype") => Some(content_type(c.kind, &r.component).into()),
                (DAV, "getcontentlength") => Some(r.size.to_string()),
                (CALDAV, "calendar-data") if c.kind == DavKind::Calendar => {
                    Some(escape(&String::from_utf8_lossy(&r.content)))
                }
                (CARDDAV, "address-data") if c.kind == DavKind::AddressBook => {
                    Some(escape(&String::from_utf8_lossy(&r.content)))
                }
                _ => None,
            },
        }
    }
}

fn collection_value(c: &DavCollection, n: (&str, &str), cx: &Context) -> Option<String> {
    let calendar = c.kind == DavKind::Calendar;
    Some(match n {
        (DAV, "resourcetype") => {
            if calendar {
                "<d:collection/><c:calendar/>".into()
            } else {
                "<d:collection/><card:addressbook/>".into()
            }
        }
        (DAV, "displayname") => escape(&c.display_name),
        (DAV, "owner") => format!("<d:href>{}</d:href>", escape(&principal_href(cx.user))),
        (DAV, "sync-token") => sync_token(c, c.sync),
        (CALSERVER, "getctag") => format!("{}-{}", c.created, c.sync),
        (DAV, "supported-report-set") => {
            let reports: &[(&str, &str)] = if calendar {
                &[
                    (CALDAV, "calendar-query"),
                    (CALDAV, "calendar-multiget"),
                    (CALDAV, "free-busy-query"),
                    (DAV, "sync-collection"),
                ]
            } else {
                &[
                    (CARDDAV, "addressbook-query"),
                    (CARDDAV, "addressbook-multiget"),
                    (DAV, "sync-collection"),
                ]
            };
            reports
                .iter()
                .map(|(ns, r)| {
                    format!(
                        "<d:supported-report><d:report>{}</d:report></d:supported-report>",
                        element(ns, r, None)
                    )
                })
                .collect()
        }
        (CALDAV, "calendar-description") if calendar => escape(&c.description),
        (CARDDAV, "addressbook-description") if !calendar => escape(&c.description),
        (APPLE, "calendar-color") if calendar && !c.color.is_empty() => escape(&c.color),
        (CALDAV, "supported-calendar-component-set") if calendar => c
            .components
            .iter()
            .map(|k| format!("<c:comp name=\"{}\"/>", escape(k)))
            .collect(),
        (CALDAV, "supported-calendar-data") if calendar => {
            "<c:calendar-data content-type=\"text/calendar\" version=\"2.0\"/>".into()
        }
        (CARDDAV, "supported-address-data") if !calendar => {
            "<card:address-data-type content-type=\"text/vcard\" version=\"3.0\"/>\
             <card:address-data-type content-type=\"text/vcard\" version=\"4.0\"/>"
                .into()
        }
        (CALDAV, "max-resource-size") if calendar => cx.max_resource_size.to_string(),
        (CARDDAV, "max-resource-size") if !calendar => cx.max_resource_size.to_string(),
        (ns, name) => {
            let key = format!("{{{ns}}}{name}");
            return c
                .props
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
        }
    })
}

/// "{namespace}name" split.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix('{')?;
    rest.split_once('}')
}

pub fn content_type(kind: DavKind, component: &str) -> &'static str {
    match (kind, component) {
        (DavKind::AddressBook, _) => "text/vcard; charset=utf-8",
        (_, "VTODO") => "text/calendar; charset=utf-8; component=vtodo",
        (_, "VJOURNAL") => "text/calendar; charset=utf-8; component=vjournal",
        _ => "text/calendar; charset=utf-8; component=vevent",
    }
}

/// A collection's sync token (RFC 6578 3.2): a URI naming the collection, when it was made
/// (a copy of it in another store has other tokens) and its change number.
pub fn sync_token(c: &DavCollection, sync: u64) -> String {
    format!("urn:x-postern:sync:{}-{}-{sync}", c.id, c.created)
}

/// The change number of a token this collection gave; `None` for any other.
pub fn token_number(c: &DavCollection, token: &str) -> Option<u64> {
    let prefix = format!("urn:x-postern:sync:{}-{}-", c.id, c.created);
    token.strip_prefix(&prefix)?.parse().ok()
}
