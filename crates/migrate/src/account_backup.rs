//! Per-account backups, from any backend: one account's folders (names, roles, flags, dates),
//! subscriptions, Sieve scripts, calendars and address books in `account.json`, and the message
//! bytes in `messages.dat`
//! (a message in several folders once). Restored into a running server: a deleted folder comes
//! back under its old name or one given; in a folder that still exists only the messages it
//! lacks are added.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use postern_store::backup::{self, BackupKind, FileEntry, Manifest};
use postern_store::{
    AccountId, DavCollectionUpdate, DavCondition, DavKind, DavLimits, DavPut, Delivery, Flags,
    MailboxId, NewDavCollection, Progress, SharedStore, SpecialUse, StoreError,
};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::maildir::store_batch;

/// Messages (or bytes) per commit while restoring.
const BATCH: usize = 64;
const BATCH_BYTES: u64 = 16 << 20;

#[derive(Serialize, Deserialize)]
struct AccountFile {
    address: String,
    mailboxes: Vec<Folder>,
    subscriptions: Vec<String>,
    scripts: Vec<Script>,
    /// Calendars and address books (none in backups made before they were kept).
    #[serde(default)]
    collections: Vec<Collection>,
}

#[derive(Serialize, Deserialize)]
struct Collection {
    kind: DavKind,
    name: String,
    display_name: String,
    description: String,
    color: String,
    components: Vec<String>,
    props: Vec<(String, String)>,
    resources: Vec<Resource>,
}

#[derive(Serialize, Deserialize)]
struct Resource {
    name: String,
    component: String,
    uid: String,
    start: Option<i64>,
    end: Option<i64>,
    /// iCalendar or vCard text.
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Folder {
    name: String,
    special_use: Option<SpecialUse>,
    uidvalidity: u32,
    messages: Vec<Message>,
}

#[derive(Serialize, Deserialize)]
struct Message {
    uid: u32,
    flags: Flags,
    internal_date: i64,
    size: u64,
    /// Where its bytes start in messages.dat.
    offset: u64,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Script {
    name: String,
    source: String,
    active: bool,
}

async fn account(store: &SharedStore, address: &str) -> Result<AccountId, Error> {
    match store.account_by_address(address).await? {
        Some(a) => Ok(a.id),
        None => Err(Error::Refused(format!(
            "{address} is not an account here (postern user list shows them; create it first with postern user add)"
        ))),
    }
}

/// Writes a backup of the account `address` into a new directory under `dir`.
pub async fn backup(
    store: &SharedStore,
    dir: &Path,
    address: &str,
    progress: &dyn Progress,
) -> Result<Manifest, Error> {
    let started = Instant::now();
    let id = account(store, address).await?;
    let created = postern_store::now();
    fs::create_dir_all(dir).map_err(StoreError::from_io)?;
    let name = backup::new_name(dir, created, &format!("-{}", address.replace('/', "_")));
    let partial = dir.join(format!("{name}.partial"));
    let r = write(store, id, address, &partial, progress).await;
    let (mut m, file) = match r {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    m.name = name;
    m.created = created;
    m.account = Some(address.to_string());
    m.counts.accounts = 1;
    m.counts.mailboxes = file.mailboxes.len() as u64;
    m.counts.messages = file.mailboxes.iter().map(|f| f.messages.len() as u64).sum();
    m.counts.message_bytes = file
        .mailboxes
        .iter()
        .flat_map(|f| &f.messages)
        .map(|x| x.size)
        .sum();
    progress.phase("verifying");
    progress.total(0, m.bytes);
    if let Err(e) = backup::verify_files(&partial, &m, |n| progress.add(0, n)) {
        let _ = fs::remove_dir_all(&partial);
        return Err(e.into());
    }
    m.seconds = started.elapsed().as_secs_f64();
    backup::finish(&partial, dir, &m)?;
    Ok(m)
}

async fn write(
    store: &SharedStore,
    id: AccountId,
    address: &str,
    partial: &Path,
    progress: &dyn Progress,
) -> Result<(Manifest, AccountFile), Error> {
    let _ = fs::remove_dir_all(partial);
    backup::private_dir(partial).map_err(StoreError::from_io)?;
    let mut boxes = store.mailbox_list(id).await?;
    boxes.sort_by(|a, b| a.name.cmp(&b.name));
    progress.phase("copying messages");
    progress.total(
        boxes.iter().map(|b| b.messages as u64).sum(),
        boxes.iter().map(|b| b.size).sum(),
    );
    let mut data = File::create(partial.join("messages.dat")).map_err(StoreError::from_io)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut at = 0u64;
    let mut written: HashMap<postern_store::BlobId, (u64, String)> = HashMap::new();
    let mut file = AccountFile {
        address: address.to_string(),
        mailboxes: Vec::new(),
        subscriptions: store.subscriptions(id).await?,
        scripts: Vec::new(),
        collections: Vec::new(),
    };
    for b in boxes {
        let mut folder = Folder {
            name: b.name.clone(),
            special_use: b.special_use,
            uidvalidity: b.uidvalidity,
            messages: Vec::new(),
        };
        for e in store.message_list(b.id).await? {
            let (offset, sha) = match written.get(&e.blob) {
                Some(x) => x.clone(),
                None => {
                    let bytes = store.blob_read(e.blob, 0, e.size).await?;
                    data.write_all(&bytes).map_err(StoreError::from_io)?;
                    hash.update(&bytes);
                    let x = (at, backup::sha256(&bytes));
                    at += bytes.len() as u64;
                    written.insert(e.blob, x.clone());
                    x
                }
            };
            progress.add(1, e.size);
            folder.messages.push(Message {
                uid: e.uid,
                flags: e.flags,
                internal_date: e.internal_date,
                size: e.size,
                offset,
                sha256: sha,
            });
        }
        file.mailboxes.push(folder);
    }
    data.sync_all().map_err(StoreError::from_io)?;
    let active = store.sieve_active(id).await?.map(|(n, _)| n);
    for s in store.sieve_list(id).await? {
        if let Some(source) = store.sieve_get(id, &s.name).await? {
            file.scripts.push(Script {
                active: active.as_deref() == Some(s.name.as_str()),
                name: s.name,
                source,
            });
        }
    }
    for c in store.dav_collections(id).await? {
        let resources = store
            .dav_resources(c.id, None, true)
            .await?
            .into_iter()
            .map(|r| Resource {
                text: String::from_utf8_lossy(&r.content).into_owned(),
                name: r.name,
                component: r.component,
                uid: r.uid,
                start: r.start,
                end: r.end,
            })
            .collect();
        file.collections.push(Collection {
            kind: c.kind,
            name: c.name,
            display_name: c.display_name,
            description: c.description,
            color: c.color,
            components: c.components,
            props: c.props,
            resources,
        });
    }
    let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::Refused(e.to_string()))?;
    let mut m = Manifest::new(BackupKind::Account, String::new(), 0);
    m.files.push(FileEntry {
        path: "messages.dat".into(),
        size: at,
        sha256: backup::to_hex(hash.finish().as_ref()),
    });
    m.files.push(
        backup::write_file(&partial.join("account.json"), "account.json", &json)
            .map_err(StoreError::from_io)?,
    );
    backup::sync_dir(partial).map_err(StoreError::from_io)?;
    m.bytes = at + json.len() as u64;
    Ok((m, file))
}

/// What to bring back, and where.
pub struct RestoreRequest<'a> {
    pub address: &'a str,
    /// A backup's name; else the newest backup of the account.
    pub name: Option<&'a str>,
    /// One folder (with its subfolders); else all of them.
    pub folder: Option<&'a str>,
    /// The name it comes back under.
    pub as_name: Option<&'a str>,
}

fn same_name(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// Restores an account backup from `dir` into the account in `store`; says what it did.
pub async fn restore(
    store: &SharedStore,
    dir: &Path,
    req: RestoreRequest<'_>,
    progress: &dyn Progress,
) -> Result<String, Error> {
    let id = account(store, req.address).await?;
    let all = backup::list(dir)?;
    let m = all
        .iter()
        .rfind(|m| {
            m.kind == BackupKind::Account
                && m.account.as_deref() == Some(req.address)
                && req.name.is_none_or(|n| m.name == n)
        })
        .ok_or_else(|| {
            Error::Refused(format!(
                "{} holds no backup of {}{} (postern backup list {0} shows what it holds; postern backup {0} --user {1} makes one)",
                dir.display(),
                req.address,
                req.name.map(|n| format!(" named {n}")).unwrap_or_default()
            ))
        })?;
    let src = dir.join(&m.name);
    progress.phase("verifying");
    progress.total(0, m.bytes);
    backup::verify_files(&src, m, |n| progress.add(0, n))?;
    let file: AccountFile =
        serde_json::from_slice(&fs::read(src.join("account.json")).map_err(StoreError::from_io)?)
            .map_err(|e| Error::Refused(format!("backup {}: account.json: {e}", m.name)))?;

    let chosen: Vec<&Folder> = file
        .mailboxes
        .iter()
        .filter(|f| match req.folder {
            Some(want) => same_name(&f.name, want) || f.name.starts_with(&format!("{want}/")),
            None => true,
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = file.mailboxes.iter().map(|f| f.name.as_str()).collect();
        return Err(Error::Refused(format!(
            "backup {} of {} has no folder {}; it has: {}",
            m.name,
            req.address,
            req.folder.unwrap_or(""),
            names.join(", ")
        )));
    }
    progress.phase("restoring messages");
    progress.total(
        chosen.iter().map(|f| f.messages.len() as u64).sum(),
        chosen
            .iter()
            .flat_map(|f| &f.messages)
            .map(|x| x.size)
            .sum(),
    );
    let mut data = File::open(src.join("messages.dat")).map_err(StoreError::from_io)?;
    let (mut added, mut present, mut lines) = (0usize, 0usize, Vec::new());
    for f in chosen {
        let target = match (req.folder, req.as_name) {
            (Some(from), Some(to)) => format!("{to}{}", &f.name[from.len().min(f.name.len())..]),
            (None, Some(to)) => format!("{to}/{}", f.name),
            _ => f.name.clone(),
        };
        let (mailbox, created) = ensure(store, id, &target, f.special_use).await?;
        let have = if created {
            HashSet::new()
        } else {
            let wanted = f
                .messages
                .iter()
                .map(|x| (x.size, x.internal_date))
                .collect();
            existing(store, mailbox, &wanted).await?
        };
        let (mut batch, mut bytes, mut n_added) = (Vec::<Delivery>::new(), 0u64, 0usize);
        for msg in &f.messages {
            progress.add(1, msg.size);
            if have.contains(&(msg.size, msg.internal_date, msg.sha256.clone())) {
                present += 1;
                continue;
            }
            let bytes_of = read_at(&mut data, msg.offset, msg.size)?;
            if backup::sha256(&bytes_of) != msg.sha256 {
                return Err(Error::Refused(format!(
                    "backup {}: a message of {} is damaged",
                    m.name, f.name
                )));
            }
            bytes += msg.size;
            batch.push(postern_ingest::Prepared::new(bytes_of).deliver(
                msg.internal_date,
                vec![postern_ingest::into_mailbox(
                    id,
                    mailbox,
                    msg.flags.clone(),
                    false,
                )],
                None,
                Vec::new(),
            ));
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                n_added += store_batch(store, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        n_added += store_batch(store, batch).await?;
        added += n_added;
        if file.subscriptions.iter().any(|s| same_name(s, &f.name)) {
            store.subscription_set(id, &target, true).await?;
        }
        lines.push(format!(
            "{target}: {n_added} message(s) restored{}",
            if created { " (folder created)" } else { "" }
        ));
    }
    // A whole account brings its filters back too, where a script of that name is gone.
    if req.folder.is_none() {
        let have: Vec<String> = store
            .sieve_list(id)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        for s in &file.scripts {
            if !have.contains(&s.name) {
                store.sieve_put(id, &s.name, &s.source).await?;
                lines.push(format!("Sieve script {} restored", s.name));
                if s.active && store.sieve_active(id).await?.is_none() {
                    store.sieve_activate(id, Some(&s.name)).await?;
                }
            }
        }
        for c in &file.collections {
            lines.push(restore_collection(store, id, c).await?);
        }
    }
    Ok(format!(
        "restored from backup {} ({}) into {}: {added} message(s) added, {present} already there\n{}",
        m.name,
        backup::show_time(m.created),
        req.address,
        lines.join("\n")
    ))
}

/// A calendar or address book comes back with the resources it lacks (by name); one that is
/// gone comes back whole.
async fn restore_collection(
    store: &SharedStore,
    id: AccountId,
    c: &Collection,
) -> Result<String, Error> {
    let (col, created) = match store.dav_collection(id, c.kind, &c.name).await? {
        Some(col) => (col, false),
        None => {
            let new = NewDavCollection {
                account: id,
                kind: c.kind,
                name: c.name.clone(),
                display_name: c.display_name.clone(),
                description: c.description.clone(),
                color: c.color.clone(),
                components: c.components.clone(),
            };
            let col = store
                .dav_collection_create(new, DavLimits::NONE)
                .await?
                .map_err(|r| Error::Refused(format!("{} {}: {r:?}", c.kind.as_str(), c.name)))?;
            let props = c
                .props
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            let update = DavCollectionUpdate {
                props,
                ..Default::default()
            };
            (store.dav_collection_update(col.id, update).await?, true)
        }
    };
    let mut added = 0;
    for r in &c.resources {
        let put = DavPut {
            name: r.name.clone(),
            content: r.text.clone().into_bytes(),
            component: r.component.clone(),
            uid: r.uid.clone(),
            start: r.start,
            end: r.end,
            condition: DavCondition::Absent,
        };
        if store
            .dav_resource_put(col.id, put, DavLimits::NONE)
            .await?
            .is_ok()
        {
            added += 1;
        }
    }
    Ok(format!(
        "{} {}: {added} resource(s) restored{}",
        c.kind.as_str(),
        c.name,
        if created { " (created)" } else { "" }
    ))
}

async fn ensure(
    store: &SharedStore,
    account: AccountId,
    name: &str,
    special: Option<SpecialUse>,
) -> Result<(MailboxId, bool), Error> {
    if let Some(m) = store.mailbox_by_name(account, name).await? {
        return Ok((m.id, false));
    }
    // Its role may belong to another folder by now: it comes back without it.
    let m = match store.mailbox_create(account, name, special).await {
        Ok(m) => m,
        Err(StoreError::Invalid(_) | StoreError::AlreadyExists(_)) if special.is_some() => {
            store.mailbox_create(account, name, None).await?
        }
        Err(e) => return Err(e.into()),
    };
    Ok((m.id, true))
}

/// The messages a folder holds that may be ones of the backup (same size and date), by size,
/// date and checksum.
async fn existing(
    store: &SharedStore,
    mailbox: MailboxId,
    wanted: &HashSet<(u64, i64)>,
) -> Result<HashSet<(u64, i64, String)>, Error> {
    let mut out = HashSet::new();
    for e in store.message_list(mailbox).await? {
        if !wanted.contains(&(e.size, e.internal_date)) {
            continue;
        }
        let bytes = store.blob_read(e.blob, 0, e.size).await?;
        out.insert((e.size, e.internal_date, backup::sha256(&bytes)));
    }
    Ok(out)
}

fn read_at(f: &mut File, offset: u64, size: u64) -> Result<Vec<u8>, Error> {
    f.seek(SeekFrom::Start(offset))
        .map_err(StoreError::from_io)?;
    let mut buf = Vec::with_capacity(size as usize);
    f.take(size)
        .read_to_end(&mut buf)
        .map_err(StoreError::from_io)?;
    if buf.len() as u64 != size {
        return Err(Error::Refused(
            "messages.dat is shorter than its index".into(),
        ));
    }
    Ok(buf)
}
