//! Whole calendars and address books in and out as .ics and .vcf files
//! (`postern dav export|import`).

use postern_dav::content::{analyze_calendar, analyze_vcard};
use postern_dav::files::{merge_calendar, resource_name, split_calendar, split_vcards};
use postern_directory::{Directory, normalize_address};
use postern_store::{
    DavCollection, DavCondition, DavKind, DavPut, DavRefused, NewDavCollection, StoreError,
};

use crate::{AdminError, AdminReply, done, require_user};

fn words(kind: DavKind) -> &'static str {
    match kind {
        DavKind::Calendar => "calendar",
        DavKind::AddressBook => "address book",
    }
}

fn kind_of(addressbook: bool) -> DavKind {
    if addressbook {
        DavKind::AddressBook
    } else {
        DavKind::Calendar
    }
}

async fn collection(
    d: &Directory,
    account: u64,
    kind: DavKind,
    name: &str,
) -> Result<Option<DavCollection>, AdminError> {
    Ok(d.store().dav_collection(account, kind, name).await?)
}

pub(crate) async fn export(
    d: &Directory,
    address: String,
    name: String,
    addressbook: bool,
) -> Result<AdminReply, AdminError> {
    let a = require_user(d, &normalize_address(&address)?).await?;
    let kind = kind_of(addressbook);
    let Some(c) = collection(d, a.id, kind, &name).await? else {
        return Err(AdminError::new(format!(
            "{} has no {} named {name}",
            a.address,
            words(kind)
        )));
    };
    let all = d.store().dav_resources(c.id, None, true).await?;
    let text = match kind {
        DavKind::Calendar => merge_calendar(all.iter().map(|r| r.content.as_slice())),
        DavKind::AddressBook => all
            .iter()
            .map(|r| String::from_utf8_lossy(&r.content).into_owned())
            .collect(),
    };
    done(text.trim_end().to_string())
}

/// Stores each object of the file; one already there under the same UID is replaced.
pub(crate) async fn import(
    d: &Directory,
    cfg: &postern_config::Dav,
    address: String,
    name: String,
    addressbook: bool,
    data: String,
) -> Result<AdminReply, AdminError> {
    let a = require_user(d, &normalize_address(&address)?).await?;
    let kind = kind_of(addressbook);
    if kind == DavKind::AddressBook && name == postern_dav::directory::DIRECTORY {
        return Err(AdminError::new(
            "the address book \"directory\" is the domain's, kept by the server: import into another",
        ));
    }
    let (objects, ext) = match kind {
        DavKind::Calendar => (split_calendar(&data), "ics"),
        DavKind::AddressBook => (split_vcards(&data), "vcf"),
    };
    let objects = objects.map_err(AdminError::new)?;
    let limits = postern_store::DavLimits {
        max_size: cfg.max_resource_size.0,
        max_resources: cfg.max_resources,
        max_collections: cfg.max_collections,
    };
    let store = d.store();
    let (c, created) = match collection(d, a.id, kind, &name).await? {
        Some(c) => (c, false),
        None => {
            let new = NewDavCollection {
                account: a.id,
                kind,
                name: name.clone(),
                display_name: name.clone(),
                description: String::new(),
                color: String::new(),
                components: match kind {
                    DavKind::Calendar => vec!["VEVENT".into(), "VTODO".into(), "VJOURNAL".into()],
                    DavKind::AddressBook => Vec::new(),
                },
            };
            match store.dav_collection_create(new, limits).await {
                Ok(Ok(c)) => (c, true),
                Ok(Err(r)) => return Err(AdminError::new(format!("{name}: {r:?}"))),
                Err(StoreError::Invalid(why)) => return Err(AdminError::new(why)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let existing = store.dav_resources(c.id, None, false).await?;
    let (mut stored, mut refused) = (0, Vec::new());
    for (n, (uid, text)) in objects.into_iter().enumerate() {
        let analysis = match kind {
            DavKind::Calendar => analyze_calendar(text.as_bytes(), cfg.max_instances),
            DavKind::AddressBook => analyze_vcard(text.as_bytes()),
        };
        let an = match analysis {
            Ok(an) => an,
            Err(why) => {
                refused.push(format!(
                    "{}: {why}",
                    if uid.is_empty() { "?" } else { &uid }
                ));
                continue;
            }
        };
        // The same UID replaces what is there, under the name it has.
        let name = existing
            .iter()
            .find(|r| !an.uid.is_empty() && r.uid == an.uid)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| resource_name(&an.uid, ext, n + 1));
        let put = DavPut {
            name,
            content: text.into_bytes(),
            component: an.component,
            uid: an.uid,
            start: an.start,
            end: an.end,
            condition: DavCondition::Always,
        };
        match store.dav_resource_put(c.id, put, limits).await? {
            Ok(_) => stored += 1,
            Err(DavRefused::TooLarge { max }) => refused.push(format!(
                "{uid}: larger than {max} bytes (dav.max_resource_size)"
            )),
            Err(DavRefused::TooMany { max }) => refused.push(format!(
                "{uid}: the collection holds {max} already (dav.max_resources)"
            )),
            Err(r) => refused.push(format!("{uid}: {r:?}")),
        }
    }
    let mut out = format!(
        "{} {name} of {}: {stored} stored{}",
        words(kind),
        a.address,
        if created { " (created)" } else { "" }
    );
    if !refused.is_empty() {
        out.push_str(&format!(
            ", {} refused:\n  {}",
            refused.len(),
            refused.join("\n  ")
        ));
    }
    done(out)
}
