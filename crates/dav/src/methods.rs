//! PROPFIND, PROPPATCH, MKCOL and MKCALENDAR, GET, PUT and DELETE.

use postern_store::{
    DavCollection, DavCollectionUpdate, DavCondition, DavKind, DavPut, DavRefused,
    NewDavCollection, Result, StoreError,
};

use crate::content::{analyze_calendar, analyze_vcard};
use crate::directory::{DIRECTORY, is_directory};
use crate::path::{Target, collection_href};
use crate::props::{Node, content_type};
use crate::request::{PropName, PropRequest, mkcol, propfind, proppatch};
use crate::xml::{APPLE, CALDAV, CARDDAV, DAV, Element, MultiStatus, Prop, escape};
use crate::{Dav, Request, Response, etags, too_large};

/// Properties clients may not set.
const PROTECTED: &[(&str, &str)] = &[
    (DAV, "resourcetype"),
    (DAV, "getetag"),
    (DAV, "getcontenttype"),
    (DAV, "getcontentlength"),
    (DAV, "sync-token"),
    (DAV, "supported-report-set"),
    (DAV, "current-user-principal"),
    (DAV, "current-user-privilege-set"),
    (DAV, "owner"),
    (CALDAV, "supported-calendar-component-set"),
    (CALDAV, "supported-calendar-data"),
    (CALDAV, "max-resource-size"),
    (CARDDAV, "supported-address-data"),
    (CARDDAV, "max-resource-size"),
    ("http://calendarserver.org/ns/", "getctag"),
];

/// Inner XML of an element: what a dead property keeps.
fn inner_xml(e: &Element) -> String {
    let mut s = escape(&e.text);
    for c in &e.children {
        s.push_str(&c.to_xml());
    }
    s
}

/// One PROPPATCH or MKCOL property as a change to a collection; `Err` for a protected one.
fn change(update: &mut DavCollectionUpdate, e: &Element, set: bool) -> std::result::Result<(), ()> {
    if PROTECTED.iter().any(|(ns, n)| e.is(ns, n)) {
        return Err(());
    }
    let value = set.then(|| e.text.clone());
    if e.is(DAV, "displayname") {
        update.display_name = Some(value.unwrap_or_default());
    } else if e.is(CALDAV, "calendar-description") || e.is(CARDDAV, "addressbook-description") {
        update.description = Some(value.unwrap_or_default());
    } else if e.is(APPLE, "calendar-color") {
        update.color = Some(value.unwrap_or_default());
    } else {
        update.props.push((e.key(), set.then(|| inner_xml(e))));
    }
    Ok(())
}

impl Dav<'_> {
    pub(crate) async fn propfind(&self, target: &Target, req: &Request) -> Result<Response> {
        let want = match propfind(&req.body) {
            Ok(w) => w,
            Err(why) => return Ok(Response::text(400, &why)),
        };
        let depth1 = req.depth.as_deref().map(str::trim) != Some("0");
        let needs_content = matches!(&want, PropRequest::Props(v) if v.iter().any(|p|
            p.ns == CALDAV && p.name == "calendar-data" || p.ns == CARDDAV && p.name == "address-data"));
        let cx = self.context();
        let mut ms = MultiStatus::new();
        match target {
            Target::Root | Target::Principals => {
                answer(&mut ms, &Node::Root, &want, &cx);
            }
            Target::Principal(_) => answer(&mut ms, &Node::Principal, &want, &cx),
            Target::Home(kind, _) => {
                answer(&mut ms, &Node::Home(*kind), &want, &cx);
                if depth1 {
                    for c in self.store.dav_collections(self.account.id).await? {
                        if c.kind == *kind {
                            answer(&mut ms, &Node::Collection(&c), &want, &cx);
                        }
                    }
                    if *kind == DavKind::AddressBook {
                        let (d, _) = self.directory().await?;
                        answer(&mut ms, &Node::Collection(&d), &want, &cx);
                    }
                }
            }
            Target::Collection(kind, _, name) => {
                let Some(c) = self.collection(*kind, name).await? else {
                    return Ok(Response::text(404, "no such collection"));
                };
                answer(&mut ms, &Node::Collection(&c), &want, &cx);
                if depth1 {
                    for r in self.members(&c, None, needs_content).await? {
                        answer(&mut ms, &Node::Resource(&c, &r), &want, &cx);
                    }
                }
            }
            Target::Resource(kind, _, name, res) => {
                let Some(c) = self.collection(*kind, name).await? else {
                    return Ok(Response::text(404, "no such collection"));
                };
                let Some(r) = self.member_named(&c, res).await? else {
                    return Ok(Response::text(404, "no such resource"));
                };
                answer(&mut ms, &Node::Resource(&c, &r), &want, &cx);
            }
        }
        Ok(Response::xml(207, ms.finish(None)))
    }

    pub(crate) async fn proppatch(&self, target: &Target, req: &Request) -> Result<Response> {
        let ops = match proppatch(&req.body) {
            Ok(o) => o,
            Err(why) => return Ok(Response::text(400, &why)),
        };
        let Target::Collection(kind, _, name) = target else {
            return Ok(Response::condition(
                403,
                DAV,
                "cannot-modify-protected-property",
                "only calendars and address books take property changes",
            ));
        };
        let Some(c) = self.collection(*kind, name).await? else {
            return Ok(Response::text(404, "no such collection"));
        };
        if is_directory(&c) {
            return Ok(read_only());
        }
        let mut update = DavCollectionUpdate::default();
        let mut refused = Vec::new();
        for (e, set) in &ops {
            if change(&mut update, e, *set).is_err() {
                refused.push(e);
            }
        }
        let prop = |e: &Element| Prop {
            ns: e.ns.clone(),
            name: e.name.clone(),
            value: None,
        };
        let mut ms = MultiStatus::new();
        let href = collection_href(c.kind, &self.account.address, &c.name);
        if refused.is_empty() {
            self.store.dav_collection_update(c.id, update).await?;
            ms.response(&href, &[(200, ops.iter().map(|(e, _)| prop(e)).collect())]);
        } else {
            // All or nothing (RFC 4918 9.2): the others fail by dependency.
            let others = ops
                .iter()
                .filter(|(e, _)| !refused.iter().any(|r| std::ptr::eq(*r, e)))
                .map(|(e, _)| prop(e))
                .collect();
            ms.response(
                &href,
                &[
                    (403, refused.iter().map(|e| prop(e)).collect()),
                    (424, others),
                ],
            );
        }
        Ok(Response::xml(207, ms.finish(None)))
    }

    pub(crate) async fn mkcol(
        &self,
        target: &Target,
        req: &Request,
        calendar: bool,
    ) -> Result<Response> {
        let Target::Collection(kind, _, name) = target else {
            return Ok(Response::text(
                403,
                "calendars and address books are made in their home: /dav/calendars/<user>/<name>/ or /dav/addressbooks/<user>/<name>/",
            ));
        };
        if *kind == DavKind::AddressBook && name == DIRECTORY {
            return Ok(Response::text(405, "that collection exists already")
                .header("allow", crate::ALLOW.into()));
        }
        let set = match mkcol(&req.body, calendar) {
            Ok(s) => s,
            Err(why) => return Ok(Response::text(400, &why)),
        };
        let mut made = if calendar { DavKind::Calendar } else { *kind };
        let mut components = vec![
            "VEVENT".to_string(),
            "VTODO".to_string(),
            "VJOURNAL".to_string(),
        ];
        let mut update = DavCollectionUpdate::default();
        for e in &set {
            if e.is(DAV, "resourcetype") {
                if e.child(CALDAV, "calendar").is_some() {
                    made = DavKind::Calendar;
                } else if e.child(CARDDAV, "addressbook").is_some() {
                    made = DavKind::AddressBook;
                }
            } else if e.is(CALDAV, "supported-calendar-component-set") {
                components = e
                    .children_named(CALDAV, "comp")
                    .filter_map(|c| c.attr("name"))
                    .map(|n| n.to_ascii_uppercase())
                    .collect();
            } else if change(&mut update, e, true).is_err() {
                return Ok(Response::condition(
                    403,
                    DAV,
                    "cannot-modify-protected-property",
                    &format!("{} cannot be set", e.key()),
                ));
            }
        }
        if made != *kind {
            return Ok(Response::condition(
                403,
                DAV,
                "valid-resourcetype",
                "calendars go under /dav/calendars/, address books under /dav/addressbooks/",
            ));
        }
        let new = NewDavCollection {
            account: self.account.id,
            kind: made,
            name: name.clone(),
            display_name: String::new(),
            description: String::new(),
            color: String::new(),
            components: if made == DavKind::Calendar {
                components
            } else {
                Vec::new()
            },
        };
        let c = match self
            .store
            .dav_collection_create(new, self.settings.limits)
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(DavRefused::TooManyCollections { max })) => {
                return Ok(Response::text(
                    403,
                    &format!(
                        "an account keeps at most {max} calendars and address books (dav.max_collections)"
                    ),
                ));
            }
            Ok(Err(r)) => return Ok(Response::text(403, &format!("{r:?}"))),
            Err(StoreError::AlreadyExists(_)) => {
                return Ok(Response::text(405, "that collection exists already")
                    .header("allow", crate::ALLOW.into()));
            }
            Err(e) => return Err(e),
        };
        if update != DavCollectionUpdate::default() {
            self.store.dav_collection_update(c.id, update).await?;
        }
        Ok(Response::new(201))
    }

    pub(crate) async fn get(&self, target: &Target, head: bool) -> Result<Response> {
        let Target::Resource(kind, _, name, res) = target else {
            return Ok(Response::text(
                200,
                "Postern serves calendars and contacts here: add this address to a CalDAV or CardDAV client",
            ));
        };
        let Some(c) = self.collection(*kind, name).await? else {
            return Ok(Response::text(404, "no such collection"));
        };
        let Some(r) = self.member_named(&c, res).await? else {
            return Ok(Response::text(404, "no such resource"));
        };
        let mut resp = Response::new(200)
            .header("content-type", content_type(c.kind, &r.component).into())
            .header("etag", format!("\"{}\"", r.etag));
        if !head {
            resp.body = r.content;
        }
        Ok(resp)
    }

    fn condition_of(req: &Request) -> DavCondition {
        if let Some(m) = &req.if_match {
            let tags = etags(m);
            if tags.iter().any(|t| t == "*") {
                return DavCondition::Exists;
            }
            return DavCondition::Etag(tags);
        }
        if req.if_none_match.as_deref().map(str::trim) == Some("*") {
            return DavCondition::Absent;
        }
        DavCondition::Always
    }

    pub(crate) async fn put(&self, target: &Target, req: Request) -> Result<Response> {
        let Target::Resource(kind, _, name, res) = target else {
            return Ok(Response::text(
                405,
                "PUT stores a resource in a calendar or an address book",
            ));
        };
        let Some(c) = self.collection(*kind, name).await? else {
            return Ok(Response::text(409, "no such collection: make it first"));
        };
        if is_directory(&c) {
            return Ok(read_only());
        }
        let limits = self.settings.limits;
        if req.body.len() as u64 > limits.max_size {
            return Ok(too_large(c.kind, limits.max_size));
        }
        let analysis = match c.kind {
            DavKind::Calendar => analyze_calendar(&req.body, self.settings.max_instances)
                .map_err(|why| Response::condition(403, CALDAV, "valid-calendar-data", &why)),
            DavKind::AddressBook => analyze_vcard(&req.body)
                .map_err(|why| Response::condition(403, CARDDAV, "valid-address-data", &why)),
        };
        let a = match analysis {
            Ok(a) => a,
            Err(r) => return Ok(r),
        };
        if c.kind == DavKind::Calendar && !c.components.contains(&a.component) {
            return Ok(Response::condition(
                403,
                CALDAV,
                "supported-calendar-component",
                &format!("this calendar takes {}", c.components.join(", ")),
            ));
        }
        let existed = self.store.dav_resource(c.id, res).await?.is_some();
        let condition = Self::condition_of(&req);
        let put = DavPut {
            name: res.clone(),
            content: req.body,
            component: a.component,
            uid: a.uid,
            start: a.start,
            end: a.end,
            condition,
        };
        let stored = match self.store.dav_resource_put(c.id, put, limits).await? {
            Ok(r) => r,
            Err(refused) => return Ok(refusal(&c, &self.account.address, refused)),
        };
        Ok(Response::new(if existed { 204 } else { 201 })
            .header("etag", format!("\"{}\"", stored.etag)))
    }

    pub(crate) async fn delete(&self, target: &Target, req: &Request) -> Result<Response> {
        match target {
            Target::Collection(kind, _, name) => {
                let Some(c) = self.collection(*kind, name).await? else {
                    return Ok(Response::text(404, "no such collection"));
                };
                if is_directory(&c) {
                    return Ok(read_only());
                }
                self.store.dav_collection_delete(c.id).await?;
                Ok(Response::new(204))
            }
            Target::Resource(kind, _, name, res) => {
                let Some(c) = self.collection(*kind, name).await? else {
                    return Ok(Response::text(404, "no such collection"));
                };
                if is_directory(&c) {
                    return Ok(read_only());
                }
                match self
                    .store
                    .dav_resource_delete(c.id, res, Self::condition_of(req))
                    .await
                {
                    Ok(Ok(())) => Ok(Response::new(204)),
                    Ok(Err(r)) => Ok(refusal(&c, &self.account.address, r)),
                    Err(StoreError::NotFound(_)) => Ok(Response::text(404, "no such resource")),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(Response::text(
                403,
                "only calendars, address books and what is in them can be deleted",
            )),
        }
    }
}

impl Dav<'_> {
    /// COPY and MOVE of a resource (RFC 4918 9.8, 9.9) into a collection of the same kind.
    pub(crate) async fn copy(
        &self,
        target: &Target,
        req: &Request,
        remove: bool,
    ) -> Result<Response> {
        let Target::Resource(kind, _, name, res) = target else {
            return Ok(Response::text(
                403,
                "only events, to-dos and contacts are copied or moved, not collections",
            ));
        };
        let dest = req.destination.as_deref().map(crate::path::href_path);
        let Some(Target::Resource(dkind, duser, dname, dres)) = dest.and_then(Target::parse) else {
            return Ok(Response::text(
                400,
                "Destination names no event or contact under /dav/",
            ));
        };
        if !duser.eq_ignore_ascii_case(&self.account.address) || dkind != *kind {
            return Ok(Response::text(
                403,
                "the destination is another account's, or another kind of collection",
            ));
        }
        let (Some(from), Some(to)) = (
            self.collection(*kind, name).await?,
            self.collection(dkind, &dname).await?,
        ) else {
            return Ok(Response::text(409, "no such collection"));
        };
        if is_directory(&to) || (remove && is_directory(&from)) {
            return Ok(read_only());
        }
        if from.id == to.id && *res == dres {
            return Ok(Response::text(
                403,
                "the source and the destination are the same",
            ));
        }
        let Some(r) = self.member_named(&from, res).await? else {
            return Ok(Response::text(404, "no such resource"));
        };
        if to.kind == DavKind::Calendar && !to.components.contains(&r.component) {
            return Ok(Response::condition(
                403,
                CALDAV,
                "supported-calendar-component",
                &format!("that calendar takes {}", to.components.join(", ")),
            ));
        }
        let existed = self.store.dav_resource(to.id, &dres).await?.is_some();
        let overwrite = !req
            .overwrite
            .as_deref()
            .is_some_and(|o| o.trim().eq_ignore_ascii_case("F"));
        if existed && !overwrite {
            return Ok(Response::text(412, "the destination exists (Overwrite: F)"));
        }
        // Within one collection the UID moves with it: the source goes first, and comes back
        // if the destination refuses.
        let same = from.id == to.id;
        if remove && same {
            self.store
                .dav_resource_delete(from.id, res, DavCondition::Always)
                .await?
                .ok();
        }
        let put = |name: &str, r: &postern_store::DavResource| DavPut {
            name: name.to_string(),
            content: r.content.clone(),
            component: r.component.clone(),
            uid: r.uid.clone(),
            start: r.start,
            end: r.end,
            condition: DavCondition::Always,
        };
        let stored = self
            .store
            .dav_resource_put(to.id, put(&dres, &r), self.settings.limits)
            .await?;
        if let Err(refused) = stored {
            if remove && same {
                self.store
                    .dav_resource_put(from.id, put(res, &r), postern_store::DavLimits::NONE)
                    .await?
                    .ok();
            }
            return Ok(refusal(&to, &self.account.address, refused));
        }
        if remove && !same {
            self.store
                .dav_resource_delete(from.id, res, DavCondition::Always)
                .await?
                .ok();
        }
        Ok(Response::new(if existed { 204 } else { 201 }))
    }
}

fn read_only() -> Response {
    Response::condition(
        403,
        DAV,
        "need-privileges",
        "the domain's address book is kept by the server: it is read-only",
    )
}

/// What a refused write answers.
fn refusal(c: &DavCollection, user: &str, r: DavRefused) -> Response {
    let what = if c.kind == DavKind::Calendar {
        "calendar"
    } else {
        "address book"
    };
    match r {
        DavRefused::Precondition => Response::text(
            412,
            "the resource changed (or exists, or is gone) since you read it: read it again",
        ),
        DavRefused::TooLarge { max } => too_large(c.kind, max),
        DavRefused::TooMany { max } => Response::condition(
            403,
            DAV,
            "quota-not-exceeded",
            &format!("this {what} holds at most {max} resources (dav.max_resources)"),
        ),
        DavRefused::TooManyCollections { max } => Response::text(
            403,
            &format!("an account keeps at most {max} collections (dav.max_collections)"),
        ),
        DavRefused::UidConflict(other) => {
            let p = if c.kind == DavKind::Calendar {
                "c"
            } else {
                "card"
            };
            let href = crate::path::resource_href(c.kind, user, &c.name, &other);
            Response::xml(
                403,
                format!(
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error {}><{p}:no-uid-conflict>\
                     <d:href>{}</d:href></{p}:no-uid-conflict><!-- {other} in this {what} has the \
                     same UID --></d:error>\n",
                    crate::xml::ROOT_ATTRS,
                    escape(&href)
                ),
            )
        }
    }
}

/// One node's answer to a property request.
pub(crate) fn answer(
    ms: &mut MultiStatus,
    node: &Node,
    want: &PropRequest,
    cx: &crate::props::Context,
) {
    let href = node.href(cx);
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    let names: Vec<PropName> = match want {
        PropRequest::Names => {
            let list = node
                .names()
                .into_iter()
                .map(|n| Prop {
                    ns: n.ns,
                    name: n.name,
                    value: None,
                })
                .collect();
            ms.response(&href, &[(200, list)]);
            return;
        }
        PropRequest::All(include) => {
            let mut v = node.names();
            v.extend(include.iter().cloned());
            v
        }
        PropRequest::Props(v) => v.clone(),
    };
    for n in names {
        match node.value(&n, cx) {
            Some(value) => found.push(Prop {
                ns: n.ns,
                name: n.name,
                value: Some(value),
            }),
            None => missing.push(Prop {
                ns: n.ns,
                name: n.name,
                value: None,
            }),
        }
    }
    ms.response(&href, &[(200, found), (404, missing)]);
}
