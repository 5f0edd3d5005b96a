//! Calendars and address books (CalDAV, RFC 4791; CardDAV, RFC 6352): an account's
//! collections and the resources in them, with the change numbers sync-collection (RFC 6578)
//! reads. The rules both backends follow (names, ETags, preconditions, limits) are here.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{AccountId, Result, StoreError};

pub type CollectionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DavKind {
    Calendar,
    AddressBook,
}

impl DavKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DavKind::Calendar => "calendar",
            DavKind::AddressBook => "addressbook",
        }
    }

    pub fn parse(s: &str) -> Option<DavKind> {
        match s {
            "calendar" => Some(DavKind::Calendar),
            "addressbook" => Some(DavKind::AddressBook),
            _ => None,
        }
    }

    /// The key byte the embedded store sorts collections by.
    pub fn code(self) -> u8 {
        match self {
            DavKind::Calendar => 1,
            DavKind::AddressBook => 2,
        }
    }
}

/// A calendar or an address book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DavCollection {
    pub id: CollectionId,
    pub account: AccountId,
    pub kind: DavKind,
    /// The last segment of its URL.
    pub name: String,
    pub display_name: String,
    pub description: String,
    /// As clients set it ("#RRGGBB" or "#RRGGBBAA"); empty for none.
    pub color: String,
    /// The calendar components it takes (VEVENT, VTODO...); empty for an address book.
    pub components: Vec<String>,
    /// Other properties clients set (PROPPATCH), by "{namespace}name", with their XML.
    #[serde(default)]
    pub props: Vec<(String, String)>,
    /// Raised by every change to its members: the sync token and the CTag.
    pub sync: u64,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDavCollection {
    pub account: AccountId,
    pub kind: DavKind,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub color: String,
    pub components: Vec<String>,
}

/// What a PROPPATCH changes: each `Some` replaces; a prop with `None` goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DavCollectionUpdate {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub color: Option<String>,
    pub props: Vec<(String, Option<String>)>,
}

/// An iCalendar object or a vCard in a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DavResource {
    pub collection: CollectionId,
    /// The last segment of its URL.
    pub name: String,
    /// Strong ETag, without quotes.
    pub etag: String,
    /// VEVENT, VTODO, VJOURNAL, VFREEBUSY or VCARD.
    pub component: String,
    /// Its UID: one resource per UID in a collection (RFC 4791 5.3.2.1, RFC 6352 6.3.2.1).
    pub uid: String,
    /// The time it spans (Unix seconds): from its first start (`None`: unknown) to its last
    /// end (`None`: open-ended, an unbounded recurrence). What a time range pre-filters on.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// The collection's `sync` when it was last written.
    pub modseq: u64,
    pub size: u64,
    /// Empty when listed without content.
    #[serde(skip)]
    pub content: Vec<u8>,
}

impl DavResource {
    /// Whether its span meets `[from, to)`.
    pub fn overlaps(&self, from: i64, to: i64) -> bool {
        self.start.is_none_or(|s| s < to) && self.end.is_none_or(|e| e > from)
    }
}

/// The condition of a write (If-Match / If-None-Match, RFC 9110 13.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DavCondition {
    Always,
    /// If-Match: *
    Exists,
    /// If-None-Match: *
    Absent,
    /// If-Match with these ETags (without quotes).
    Etag(Vec<String>),
}

impl DavCondition {
    pub fn holds(&self, current: Option<&str>) -> bool {
        match self {
            DavCondition::Always => true,
            DavCondition::Exists => current.is_some(),
            DavCondition::Absent => current.is_none(),
            DavCondition::Etag(tags) => current.is_some_and(|c| tags.iter().any(|t| t == c)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavPut {
    pub name: String,
    pub content: Vec<u8>,
    pub component: String,
    pub uid: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub condition: DavCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DavLimits {
    /// Bytes of one resource.
    pub max_size: u64,
    /// Resources in one collection.
    pub max_resources: u64,
    /// Collections of one account.
    pub max_collections: u64,
}

impl DavLimits {
    pub const NONE: DavLimits = DavLimits {
        max_size: u64::MAX,
        max_resources: u64::MAX,
        max_collections: u64::MAX,
    };
}

/// Why a write was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DavRefused {
    /// The condition did not hold (412).
    Precondition,
    TooLarge {
        max: u64,
    },
    TooMany {
        max: u64,
    },
    TooManyCollections {
        max: u64,
    },
    /// Another resource of the collection has the UID: its name.
    UidConflict(String),
}

/// What changed in a collection since a sync token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavChanges {
    /// The collection's token now.
    pub sync: u64,
    /// Resources written since, without content, by name.
    pub changed: Vec<DavResource>,
    /// Names removed since (and not written again), sorted.
    pub removed: Vec<String>,
}

/// Calendars and address books.
#[async_trait]
pub trait DavStore: Send + Sync + 'static {
    /// The account's collections, by kind then name.
    async fn dav_collections(&self, account: AccountId) -> Result<Vec<DavCollection>>;
    async fn dav_collection(
        &self,
        account: AccountId,
        kind: DavKind,
        name: &str,
    ) -> Result<Option<DavCollection>>;
    /// `AlreadyExists` for a name the account has for that kind; `NotFound` for no account.
    async fn dav_collection_create(
        &self,
        new: NewDavCollection,
        limits: DavLimits,
    ) -> Result<Result<DavCollection, DavRefused>>;
    async fn dav_collection_update(
        &self,
        id: CollectionId,
        update: DavCollectionUpdate,
    ) -> Result<DavCollection>;
    /// With every resource in it.
    async fn dav_collection_delete(&self, id: CollectionId) -> Result<()>;
    /// The collection's resources whose span meets `span` (all with `None`), by name; their
    /// content only with `content`.
    async fn dav_resources(
        &self,
        collection: CollectionId,
        span: Option<(i64, i64)>,
        content: bool,
    ) -> Result<Vec<DavResource>>;
    async fn dav_resource(
        &self,
        collection: CollectionId,
        name: &str,
    ) -> Result<Option<DavResource>>;
    /// Creates or replaces the resource and raises the collection's sync; `NotFound` for no
    /// collection.
    async fn dav_resource_put(
        &self,
        collection: CollectionId,
        put: DavPut,
        limits: DavLimits,
    ) -> Result<Result<DavResource, DavRefused>>;
    /// `NotFound` when there is no such resource.
    async fn dav_resource_delete(
        &self,
        collection: CollectionId,
        name: &str,
        condition: DavCondition,
    ) -> Result<Result<(), DavRefused>>;
    /// What changed after `since` (0: everything there). `Invalid` for a token the collection
    /// never gave.
    async fn dav_changes(&self, collection: CollectionId, since: u64) -> Result<DavChanges>;
}

/// A collection's or resource's name: one URL segment, as clients choose it.
pub fn dav_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control());
    if ok {
        Ok(name.to_string())
    } else {
        Err(StoreError::Invalid(format!("bad name {name:?}")))
    }
}

/// A resource's strong ETag: its content's digest, the same in both backends.
pub fn dav_etag(content: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, content);
    d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a put is checked against before anything changes: the resource there now, the number
/// in the collection, and the resource holding the UID (if another).
pub(crate) fn dav_check_put(
    put: &DavPut,
    current: Option<&str>,
    count: u64,
    uid_holder: Option<&str>,
    limits: &DavLimits,
) -> Result<(), DavRefused> {
    if !put.condition.holds(current) {
        return Err(DavRefused::Precondition);
    }
    if put.content.len() as u64 > limits.max_size {
        return Err(DavRefused::TooLarge {
            max: limits.max_size,
        });
    }
    if current.is_none() && count >= limits.max_resources {
        return Err(DavRefused::TooMany {
            max: limits.max_resources,
        });
    }
    if let Some(other) = uid_holder.filter(|n| *n != put.name) {
        return Err(DavRefused::UidConflict(other.to_string()));
    }
    Ok(())
}

/// The resource a put makes.
pub(crate) fn dav_resource_of(collection: CollectionId, put: DavPut, modseq: u64) -> DavResource {
    DavResource {
        collection,
        etag: dav_etag(&put.content),
        name: put.name,
        component: put.component,
        uid: put.uid,
        start: put.start,
        end: put.end,
        modseq,
        size: put.content.len() as u64,
        content: put.content,
    }
}

/// A collection after an update.
pub(crate) fn dav_apply_update(c: &mut DavCollection, u: DavCollectionUpdate) {
    if let Some(v) = u.display_name {
        c.display_name = v;
    }
    if let Some(v) = u.description {
        c.description = v;
    }
    if let Some(v) = u.color {
        c.color = v;
    }
    for (name, value) in u.props {
        c.props.retain(|(n, _)| *n != name);
        if let Some(v) = value {
            c.props.push((name, v));
        }
    }
    c.props.sort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert!(DavCondition::Always.holds(None));
        assert!(DavCondition::Absent.holds(None));
        assert!(!DavCondition::Absent.holds(Some("a")));
        assert!(!DavCondition::Exists.holds(None));
        assert!(DavCondition::Etag(vec!["a".into(), "b".into()]).holds(Some("b")));
        assert!(!DavCondition::Etag(vec!["a".into()]).holds(Some("b")));
        assert!(!DavCondition::Etag(vec!["a".into()]).holds(None));
    }

    #[test]
    fn names() {
        assert!(dav_name("work.ics").is_ok());
        for bad in ["", ".", "..", "a/b", "a\nb"] {
            assert!(dav_name(bad).is_err(), "{bad:?}");
        }
    }
}
