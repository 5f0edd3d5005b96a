//! REPORT: calendar-query (RFC 4791 7.8), calendar-multiget (7.9), free-busy-query (7.10),
//! addressbook-query (RFC 6352 8.6), addressbook-multiget (8.7), sync-collection (RFC 6578).

use postern_store::{DavCollection, DavKind, DavResource, Result, StoreError};

use crate::content::{CompFilter, busy_periods, calendar_matches, format_utc, vcard_matches};
use crate::methods::answer;
use crate::path::{Target, href_path};
use crate::props::{Node, sync_token, token_number};
use crate::request::{PropRequest, Report, report};
use crate::xml::{CALDAV, DAV, MultiStatus};
use crate::{Dav, Request, Response};

/// The time range a query's filter narrows the calendar to, for the store's pre-filter.
fn outer_range(f: &CompFilter) -> Option<(i64, i64)> {
    f.time_range.or_else(|| {
        if f.comps.len() == 1 {
            outer_range(&f.comps[0])
        } else {
            None
        }
    })
}

/// Whether the request asks for the resources' content.
fn wants_content(p: &PropRequest) -> bool {
    match p {
        PropRequest::Props(v) => v
            .iter()
            .any(|n| n.name == "calendar-data" || n.name == "address-data"),
        _ => false,
    }
}

impl Dav<'_> {
    pub(crate) async fn report(&self, target: &Target, req: &Request) -> Result<Response> {
        let rep = match report(&req.body) {
            Ok(r) => r,
            Err(why) => return Ok(Response::text(400, &why)),
        };
        let (kind, name) = match target {
            Target::Collection(k, _, n) | Target::Resource(k, _, n, _) => (*k, n),
            _ => {
                return Ok(Response::condition(
                    403,
                    DAV,
                    "supported-report",
                    "reports are answered on a calendar or an address book",
                ));
            }
        };
        let Some(c) = self.collection(kind, name).await? else {
            return Ok(Response::text(404, "no such collection"));
        };
        let cx = self.context();
        let mut ms = MultiStatus::new();
        match rep {
            Report::CalendarQuery {
                props,
                filter,
                expand,
            } => {
                if kind != DavKind::Calendar {
                    return Ok(unsupported());
                }
                let span = outer_range(&filter);
                for r in self.members(&c, span, true).await? {
                    match calendar_matches(&r.content, &filter, self.settings.max_instances) {
                        Ok(true) => {
                            let r = self.expanded(r, expand);
                            answer(&mut ms, &Node::Resource(&c, &r), &props, &cx)
                        }
                        Ok(false) => {}
                        Err(why) => {
                            return Ok(Response::condition(
                                403,
                                CALDAV,
                                "max-instances",
                                &format!(
                                    "{why} ({}, dav.max_instances): narrow the query",
                                    self.settings.max_instances
                                ),
                            ));
                        }
                    }
                }
            }
            Report::AddressbookQuery {
                props,
                filters,
                all_of,
                limit,
            } => {
                if kind != DavKind::AddressBook {
                    return Ok(unsupported());
                }
                let mut n = 0;
                for r in self.members(&c, None, true).await? {
                    if limit.is_some_and(|l| n >= l) {
                        break;
                    }
                    if vcard_matches(&r.content, &filters, all_of) {
                        n += 1;
                        answer(&mut ms, &Node::Resource(&c, &r), &props, &cx);
                    }
                }
            }
            Report::Multiget {
                props,
                hrefs,
                expand,
            } => {
                for h in hrefs {
                    let path = href_path(&h);
                    match self.member(&c, path).await? {
                        Some(r) => {
                            let r = self.expanded(r, expand);
                            answer(&mut ms, &Node::Resource(&c, &r), &props, &cx)
                        }
                        None => ms.status(path, 404),
                    }
                }
            }
            Report::SyncCollection { token, props, .. } => {
                let since = if token.is_empty() {
                    Some(0)
                } else {
                    token_number(&c, &token)
                };
                let changes = match since {
                    // The domain's address book is made anew: all of it, or nothing new.
                    Some(s) if crate::directory::is_directory(&c) => {
                        let cards = self.members(&c, None, false).await?;
                        match s {
                            0 => Some(postern_store::DavChanges {
                                sync: c.sync,
                                changed: cards,
                                removed: Vec::new(),
                            }),
                            s if s == c.sync => Some(postern_store::DavChanges {
                                sync: c.sync,
                                changed: Vec::new(),
                                removed: Vec::new(),
                            }),
                            _ => None,
                        }
                    }
                    Some(s) => match self.store.dav_changes(c.id, s).await {
                        Ok(ch) => Some(ch),
                        Err(StoreError::Invalid(_)) => None,
                        Err(e) => return Err(e),
                    },
                    None => None,
                };
                let Some(changes) = changes else {
                    return Ok(Response::condition(
                        403,
                        DAV,
                        "valid-sync-token",
                        "this sync token is not one of this collection's: sync again from the start",
                    ));
                };
                let content = wants_content(&props);
                let mut changed = changes.changed;
                if content {
                    let mut loaded = Vec::with_capacity(changed.len());
                    for r in &changed {
                        if let Some(full) = self.member_named(&c, &r.name).await? {
                            loaded.push(full);
                        }
                    }
                    changed = loaded;
                }
                for r in &changed {
                    answer(&mut ms, &Node::Resource(&c, r), &props, &cx);
                }
                for gone in &changes.removed {
                    let href = crate::path::resource_href(c.kind, cx.user, &c.name, gone);
                    ms.status(&href, 404);
                }
                return Ok(Response::xml(
                    207,
                    ms.finish(Some(&sync_token(&c, changes.sync))),
                ));
            }
            Report::FreeBusy { range } => {
                if kind != DavKind::Calendar {
                    return Ok(unsupported());
                }
                let mut busy = Vec::new();
                for r in self.members(&c, Some(range), true).await? {
                    busy.extend(busy_periods(&r.content, range, self.settings.max_instances));
                }
                return Ok(free_busy(range, busy));
            }
        }
        Ok(Response::xml(207, ms.finish(None)))
    }

    /// The resource with its recurrences expanded, when the request asks for that.
    fn expanded(&self, mut r: DavResource, range: Option<(i64, i64)>) -> DavResource {
        if let Some(range) = range
            && !r.content.is_empty()
        {
            r.content = crate::expand::expand(&r.content, range, self.settings.max_instances);
        }
        r
    }

    /// The resource of this collection a path names.
    async fn member(&self, c: &DavCollection, path: &str) -> Result<Option<DavResource>> {
        match Target::parse(path) {
            Some(Target::Resource(k, u, n, r))
                if k == c.kind && n == c.name && u.eq_ignore_ascii_case(&self.account.address) =>
            {
                self.member_named(c, &r).await
            }
            _ => Ok(None),
        }
    }
}

fn unsupported() -> Response {
    Response::condition(
        403,
        DAV,
        "supported-report",
        "this report is not answered on this kind of collection",
    )
}

/// A VFREEBUSY of the busy periods, merged (RFC 4791 7.10).
fn free_busy(range: (i64, i64), mut busy: Vec<(i64, i64)>) -> Response {
    busy.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (s, e) in busy {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Postern//CalDAV//EN\r\nBEGIN:VFREEBUSY\r\n",
    );
    out.push_str(&format!("DTSTAMP:{}\r\n", format_utc(postern_store::now())));
    out.push_str(&format!("DTSTART:{}\r\n", format_utc(range.0)));
    out.push_str(&format!("DTEND:{}\r\n", format_utc(range.1)));
    for (s, e) in merged {
        out.push_str(&format!(
            "FREEBUSY;FBTYPE=BUSY:{}/{}\r\n",
            format_utc(s),
            format_utc(e)
        ));
    }
    out.push_str("END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
    let mut r = Response::new(200).header("content-type", "text/calendar; charset=utf-8".into());
    r.body = out.into_bytes();
    r
}
