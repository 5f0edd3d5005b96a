//! CalDAV (RFC 4791) and CardDAV (RFC 6352) over WebDAV (RFC 4918): a request (method, path,
//! headers, body) is parsed into a typed request, planned against the store, and answered
//! with a status, headers and a body. No sockets here: the HTTP listener hands requests in
//! (`crates/http/src/dav.rs`), and the tests call [`Dav::handle`] directly.

pub mod content;
pub mod directory;
pub mod expand;
pub mod files;
mod methods;
pub mod path;
pub mod props;
mod report;
pub mod request;
pub mod xml;

use postern_store::{Account, DavCollection, DavKind, DavLimits, NewDavCollection, Store};

use crate::path::Target;
use crate::xml::{CALDAV, error_body};

/// What the configuration decides.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: DavLimits,
    /// Recurrence instances one resource is expanded to while a query checks it.
    pub max_instances: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: DavLimits {
                max_size: 1 << 20,
                max_resources: 10_000,
                max_collections: 50,
            },
            max_instances: 20_000,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path as sent, percent-encoded.
    pub path: String,
    pub depth: Option<String>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    /// COPY and MOVE: where to (RFC 4918 10.3), and whether what is there may be replaced.
    pub destination: Option<String>,
    pub overwrite: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: format!("{body}\n").into_bytes(),
        }
    }

    pub fn xml(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("content-type", "application/xml; charset=utf-8".into())],
            body: body.into_bytes(),
        }
    }

    /// A refusal naming the precondition (RFC 4918 16) with a sentence for people.
    pub fn condition(status: u16, ns: &str, condition: &str, why: &str) -> Response {
        Response::xml(status, error_body(ns, condition, why))
    }

    pub fn header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// The methods every DAV resource answers.
pub const ALLOW: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, MKCALENDAR, REPORT, COPY, MOVE";
/// The compliance classes (RFC 4918 10.1, RFC 4791 5.1, RFC 6352 6.1, RFC 5689 3).
pub const DAV_CLASSES: &str = "1, 3, calendar-access, addressbook, extended-mkcol";

/// One logged-in account's view of the DAV space.
pub struct Dav<'a> {
    pub store: &'a dyn Store,
    pub account: &'a Account,
    pub settings: &'a Settings,
}

impl Dav<'_> {
    pub async fn handle(&self, req: Request) -> Response {
        let Some(target) = Target::parse(&req.path) else {
            return Response::text(404, "no such DAV resource");
        };
        if let Some(user) = target.user()
            && !user.eq_ignore_ascii_case(&self.account.address)
        {
            return Response::text(
                403,
                "only the owner reaches these calendars and address books",
            );
        }
        if let Err(e) = self.ensure_defaults().await {
            return Response::text(503, &format!("storage: {e}"));
        }
        let method = req.method.to_ascii_uppercase();
        let r = match method.as_str() {
            "OPTIONS" => Ok(Response::new(200)
                .header("dav", DAV_CLASSES.into())
                .header("allow", ALLOW.into())),
            "PROPFIND" => self.propfind(&target, &req).await,
            "PROPPATCH" => self.proppatch(&target, &req).await,
            "MKCALENDAR" => self.mkcol(&target, &req, true).await,
            "MKCOL" => self.mkcol(&target, &req, false).await,
            "GET" | "HEAD" => self.get(&target, method == "HEAD").await,
            "PUT" => self.put(&target, req).await,
            "DELETE" => self.delete(&target, &req).await,
            "REPORT" => self.report(&target, &req).await,
            "COPY" | "MOVE" => self.copy(&target, &req, method == "MOVE").await,
            _ => Ok(Response::text(405, "method not supported here").header("allow", ALLOW.into())),
        };
        r.unwrap_or_else(|e| match e {
            postern_store::StoreError::Invalid(why) => Response::text(400, &why),
            postern_store::StoreError::NotFound(what) => {
                Response::text(404, &format!("{what} not found"))
            }
            e if e.is_temporary() => Response::text(503, &format!("storage: {e}")),
            e => Response::text(500, &format!("storage: {e}")),
        })
    }

    /// Every account has a calendar and an address book: made when it has none of a kind.
    async fn ensure_defaults(&self) -> postern_store::Result<()> {
        let have = self.store.dav_collections(self.account.id).await?;
        for (kind, display, components) in [
            (
                DavKind::Calendar,
                "Calendar",
                vec!["VEVENT".to_string(), "VTODO".to_string()],
            ),
            (DavKind::AddressBook, "Contacts", Vec::new()),
        ] {
            if have.iter().any(|c| c.kind == kind) {
                continue;
            }
            let new = NewDavCollection {
                account: self.account.id,
                kind,
                name: "default".into(),
                display_name: display.into(),
                description: String::new(),
                color: String::new(),
                components,
            };
            match self.store.dav_collection_create(new, DavLimits::NONE).await {
                Ok(_) | Err(postern_store::StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn collection(
        &self,
        kind: DavKind,
        name: &str,
    ) -> postern_store::Result<Option<DavCollection>> {
        if kind == DavKind::AddressBook && name == directory::DIRECTORY {
            return Ok(Some(self.directory().await?.0));
        }
        self.store.dav_collection(self.account.id, kind, name).await
    }

    fn context(&self) -> props::Context<'_> {
        props::Context {
            user: &self.account.address,
            max_resource_size: self.settings.limits.max_size,
        }
    }
}

/// The ETags a conditional header lists, without quotes or weakness; `*` as itself.
pub fn etags(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_start_matches("W/").trim_matches('"').to_string())
        .collect()
}

/// A refusal of what the limits do not allow, with the setting that decides it.
pub(crate) fn too_large(kind: DavKind, max: u64) -> Response {
    let ns = if kind == DavKind::Calendar {
        CALDAV
    } else {
        xml::CARDDAV
    };
    Response::condition(
        403,
        ns,
        "max-resource-size",
        &format!("the resource is larger than {max} bytes (dav.max_resource_size)"),
    )
}

#[cfg(test)]
mod tests;
