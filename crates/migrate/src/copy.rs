//! `postern storage export|import`: everything of one store copied into another, empty one
//! (the embedded store into PostgreSQL, say), then counted on both sides.
//!
//! Messages get new UIDs (and their mailboxes a new UIDVALIDITY), so IMAP clients fetch their
//! cache again once; flags, keywords, received dates, folders, subscriptions and what users
//! taught the junk filter are kept, and so are DMARC and TLS reports (received, and counts
//! toward the ones we send). Sharing comes along: shared-mailbox accounts, access lists,
//! send-as grants, and what each reader has seen in a mailbox with an access list (a reader's
//! \Seen left in a mailbox whose list was emptied since is not found, so not copied). A
//! message shared by several mailboxes is stored once in the copy too. Not copied: web
//! sessions, rate-limit counts and vacation-reply memory, which start afresh; a queued
//! message's bytes are stored apart from its local copies.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use postern_config::Config;
use postern_ingest::Prepared;
use postern_store::{
    AccountId, AccountUpdate, BlobData, BlobId, DavCollectionUpdate, DavCondition, DavLimits,
    DavPut, Delivery, FlagOp, Flags, FlagsUpdate, MailboxId, MessageEntry, MetadataEntry,
    MetadataLimits, NewAccount, NewDavCollection, NewQueueEntry, Progress, ReportKind, Rights,
    SharedStore, StoreError, Uid,
};

/// Messages (or bytes) per commit while copying.
const BATCH: usize = 64;
const BATCH_BYTES: u64 = 16 << 20;

/// A store named on the command line: a postgres:// URL, or an embedded store's directory.
pub async fn open_other(cfg: &Config, spec: &str) -> anyhow::Result<SharedStore> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let s = postern_store::postgres::PgStore::connect(
            spec,
            postern_store::postgres::Options {
                max_connections: cfg.storage.max_connections,
                ..Default::default()
            },
        )
        .await
        .with_context(|| "cannot use that PostgreSQL database".to_string())?;
        return Ok(s);
    }
    let dir = Path::new(spec);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {spec}"))?;
    let s = postern_store::embedded::EmbeddedStore::open(dir, Default::default())
        .with_context(|| format!("cannot open the store in {spec}"))?;
    Ok(s)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    domains: usize,
    accounts: usize,
    aliases: usize,
    mailboxes: usize,
    messages: u64,
    bytes: u64,
    scripts: usize,
    tokens: usize,
    queued: usize,
    reports: usize,
    acl_lines: usize,
    send_as: usize,
    /// METADATA entries on the server and on each account's own mailboxes (readers' private
    /// entries on others' are copied, not counted).
    metadata: usize,
    /// Calendars and address books, and the resources in them.
    dav_collections: usize,
    dav_resources: usize,
}

async fn count(s: &SharedStore) -> anyhow::Result<Counts> {
    let mut c = Counts {
        domains: s.domain_list().await?.len(),
        aliases: s.alias_list().await?.len(),
        tokens: s.token_list().await?.len(),
        queued: s.queue_list().await?.len(),
        reports: s.report_list(None, 0).await?.len(),
        send_as: s.send_as_list().await?.len(),
        ..Default::default()
    };
    for a in s.account_list().await? {
        c.accounts += 1;
        c.scripts += s.sieve_list(a.id).await?.len();
        c.metadata += metadata_of(s, a.id, None).await?.len();
        for col in s.dav_collections(a.id).await? {
            c.dav_collections += 1;
            c.dav_resources += s.dav_resources(col.id, None, false).await?.len();
        }
        for m in s.mailbox_list(a.id).await? {
            c.metadata += metadata_of(s, a.id, Some(m.id)).await?.len();
            c.mailboxes += 1;
            c.acl_lines += s.acl_get(m.id).await?.len();
            c.messages += m.messages as u64;
            c.bytes += m.size;
        }
    }
    Ok(c)
}

/// Every entry an account sees on a mailbox (or the server): its private ones, and the shared.
async fn metadata_of(
    s: &SharedStore,
    account: AccountId,
    mailbox: Option<MailboxId>,
) -> anyhow::Result<Vec<MetadataEntry>> {
    let mut v = s.metadata_get(account, mailbox, "/private", None).await?;
    v.extend(s.metadata_get(account, mailbox, "/shared", None).await?);
    Ok(v)
}

/// Copies entries as they are: the limits were the source's to keep.
async fn put_metadata(
    to: &SharedStore,
    account: AccountId,
    mailbox: Option<MailboxId>,
    entries: Vec<MetadataEntry>,
) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let unlimited = MetadataLimits {
        max_value: u64::MAX,
        max_entries: u64::MAX,
        max_total: u64::MAX,
    };
    let changes = entries
        .into_iter()
        .map(|e| (e.name, Some(e.value)))
        .collect();
    if let Err(refused) = to
        .metadata_set(account, mailbox, changes, unlimited)
        .await?
    {
        bail!("METADATA entries refused by the copy: {refused:?}");
    }
    Ok(())
}

/// Copies everything of `from` into the empty `to`; returns the counts of both. Progress
/// counts the messages of every mailbox (one stored in two counts twice).
pub async fn copy(
    from: &SharedStore,
    to: &SharedStore,
    progress: &dyn Progress,
) -> anyhow::Result<(Counts, Counts)> {
    if !to.domain_list().await?.is_empty() || !to.account_list().await?.is_empty() {
        bail!("the target store is not empty; copy into a new database or directory");
    }
    progress.phase("counting messages");
    let (mut items, mut bytes) = (0, 0);
    for a in from.account_list().await? {
        for m in from.mailbox_list(a.id).await? {
            items += m.messages as u64;
            bytes += m.size;
        }
    }
    progress.phase("copying messages");
    progress.total(items, bytes);
    for d in from.domain_list().await? {
        to.domain_add(&d.name).await?;
    }
    // Where each source blob went in the copy: (mailbox, uid).
    let mut copied: HashMap<BlobId, (MailboxId, Uid)> = HashMap::new();
    // Accounts (source, copy), and mailboxes with an access list: (source, copy, owner).
    let mut accounts: Vec<(AccountId, AccountId)> = Vec::new();
    let mut listed: Vec<(MailboxId, MailboxId, AccountId)> = Vec::new();
    for a in from.account_list().await? {
        let b = to
            .account_create(NewAccount {
                address: a.address.clone(),
                password_hash: a.password_hash.clone(),
                quota_bytes: a.quota_bytes,
                quota_messages: a.quota_messages,
                shared: a.shared,
            })
            .await?;
        accounts.push((a.id, b.id));
        to.account_update(
            b.id,
            AccountUpdate {
                disabled: Some(a.disabled),
                forward: Some(a.forward.clone()),
                ..Default::default()
            },
        )
        .await?;
        let mut boxes = from.mailbox_list(a.id).await?;
        boxes.sort_by(|x, y| x.name.cmp(&y.name));
        for m in boxes {
            let target = match to.mailbox_by_name(b.id, &m.name).await? {
                Some(t) => t,
                None => to.mailbox_create(b.id, &m.name, m.special_use).await?,
            };
            let mut batch = Batch::default();
            for e in from.message_list(m.id).await? {
                // A message stored once for several mailboxes is stored once in the copy too;
                // what came before it in this mailbox is stored first, to keep the order.
                if batch.blobs.contains(&e.blob) || copied.contains_key(&e.blob) {
                    batch.flush(to, &mut copied, progress).await?;
                }
                if let Some(&(mb, uid)) = copied.get(&e.blob)
                    && share(to, (mb, uid), target.id, &e).await?
                {
                    progress.add(1, e.size);
                    continue;
                }
                let info = from.blob_info(e.blob).await?;
                let data = from.blob_read(e.blob, 0, info.size).await?;
                batch.bytes += info.size;
                batch.blobs.push(e.blob);
                // Parsed when it first arrived: its structure comes along.
                let message =
                    Prepared::parsed(BlobData::Memory(data), info.size, info.meta.to_vec());
                batch.deliveries.push(message.deliver(
                    e.internal_date,
                    vec![postern_ingest::into_mailbox(
                        b.id,
                        target.id,
                        e.flags.clone(),
                        false,
                    )],
                    None,
                    Vec::new(),
                ));
                if batch.deliveries.len() >= BATCH || batch.bytes >= BATCH_BYTES {
                    batch.flush(to, &mut copied, progress).await?;
                }
            }
            batch.flush(to, &mut copied, progress).await?;
            put_metadata(
                to,
                b.id,
                Some(target.id),
                metadata_of(from, a.id, Some(m.id)).await?,
            )
            .await?;
            let lines = from.acl_get(m.id).await?;
            for l in &lines {
                let rights = Rights::parse(&l.rights).map_err(|c| {
                    anyhow::anyhow!("mailbox {}: a right {c:?} in its access list", m.name)
                })?;
                to.acl_set(target.id, &l.identifier, Some(rights)).await?;
            }
            if !lines.is_empty() {
                listed.push((m.id, target.id, a.id));
            }
        }
        put_metadata(to, b.id, None, metadata_of(from, a.id, None).await?).await?;
        // Subscriptions are names (of mailboxes or not): the copy has the same ones.
        let subscribed = from.subscriptions(a.id).await?;
        for name in to.subscriptions(b.id).await? {
            if !subscribed.contains(&name) {
                to.subscription_set(b.id, &name, false).await?;
            }
        }
        for name in &subscribed {
            to.subscription_set(b.id, name, true).await?;
        }
        for (sender, junk) in from.sender_verdict_list(a.id).await? {
            to.sender_verdict_set(b.id, &sender, Some(junk)).await?;
        }
        let scripts = from.sieve_list(a.id).await?;
        for s in &scripts {
            if let Some(src) = from.sieve_get(a.id, &s.name).await? {
                to.sieve_put(b.id, &s.name, &src).await?;
            }
        }
        if let Some(active) = scripts.iter().find(|s| s.active) {
            to.sieve_activate(b.id, Some(&active.name)).await?;
        }
        copy_dav(from, a.id, to, b.id).await?;
    }
    progress.phase("copying what readers have seen, aliases, the queue and reports");
    // Once every reader is there.
    for &(src, dst, owner) in &listed {
        let mut uids = None;
        for &(reader, copy) in accounts.iter().filter(|r| r.0 != owner) {
            let private = from
                .metadata_get(reader, Some(src), "/private", None)
                .await?;
            put_metadata(to, copy, Some(dst), private).await?;
            let seen = from.seen_private(src, reader).await?;
            if seen.is_empty() {
                continue;
            }
            if uids.is_none() {
                uids = Some(new_uids(from, src, to, dst).await?);
            }
            let map = uids.as_ref().expect("just made");
            let new: Vec<Uid> = seen.iter().filter_map(|u| map.get(u).copied()).collect();
            if new.is_empty() {
                continue;
            }
            to.flags_update(FlagsUpdate {
                mailbox: dst,
                uids: new,
                op: FlagOp::Add,
                flags: Flags {
                    bits: Flags::SEEN,
                    keywords: Vec::new(),
                },
                unchanged_since: None,
                reader: Some(copy),
            })
            .await?;
        }
    }
    for g in from.send_as_list().await? {
        to.send_as_set(&g.address, &g.delegate, Some(g.mode))
            .await?;
    }
    for al in from.alias_list().await? {
        to.alias_set(&al.address, al.targets.clone()).await?;
        if al.policy.is_some() {
            to.alias_set_policy(&al.address, al.policy.clone()).await?;
        }
    }
    for t in from.token_list().await? {
        to.token_put(t).await?;
    }
    for q in from.queue_list().await? {
        let data = from.blob_read(q.blob, 0, q.size).await?;
        let meta = from.blob_info(q.blob).await?.meta.to_vec();
        let rep = to
            .deliver(
                Prepared::parsed(BlobData::Memory(data), q.size, meta).deliver(
                    q.created,
                    Vec::new(),
                    Some(NewQueueEntry {
                        sender: q.sender.clone(),
                        recipients: q.recipients.clone(),
                        envid: q.envid.clone(),
                        ret: q.ret,
                        trace_id: q.trace_id.clone(),
                        authenticated: q.authenticated.clone(),
                        requiretls: q.requiretls,
                        body_offset: q.body_offset,
                    }),
                    Vec::new(),
                ),
            )
            .await?;
        let id = rep.queue_id.context("the target did not queue a message")?;
        let mut copied = q.clone();
        copied.id = id;
        copied.blob = rep.blob;
        to.queue_update(copied).await?;
    }
    // The message trace, oldest stories first.
    let mut ids = from.trace_recent(0, usize::MAX).await?;
    ids.reverse();
    for chunk in ids.chunks(256) {
        let mut events = Vec::new();
        for id in chunk {
            events.extend(from.trace_get(id).await?);
        }
        to.trace_append(events).await?;
    }
    // Reports received about our domains, and the counts toward the ones we send (taken from
    // the source to read them, and put back).
    for r in from.report_list(None, 0).await? {
        to.report_put(r).await?;
    }
    for kind in [ReportKind::Dmarc, ReportKind::Tls] {
        for (domain, day) in from.report_pending(kind).await? {
            let tallies = from.report_take(kind, &domain, day).await?;
            from.report_tally(tallies.clone()).await?;
            to.report_tally(tallies).await?;
        }
    }
    progress.phase("counting both stores");
    Ok((count(from).await?, count(to).await?))
}

/// Deliveries waiting to be stored together, with the source blob of each.
#[derive(Default)]
struct Batch {
    deliveries: Vec<Delivery>,
    blobs: Vec<BlobId>,
    bytes: u64,
}

impl Batch {
    async fn flush(
        &mut self,
        to: &SharedStore,
        copied: &mut HashMap<BlobId, (MailboxId, Uid)>,
        progress: &dyn Progress,
    ) -> anyhow::Result<()> {
        let bytes = std::mem::take(&mut self.bytes);
        let blobs = std::mem::take(&mut self.blobs);
        let deliveries = std::mem::take(&mut self.deliveries);
        if deliveries.is_empty() {
            return Ok(());
        }
        let n = deliveries.len() as u64;
        for (r, blob) in to.deliver_many(deliveries).await?.into_iter().zip(blobs) {
            for t in r.targets {
                copied.entry(blob).or_insert(t?);
            }
        }
        progress.add(n, bytes);
        Ok(())
    }
}

/// Adds the message already copied at `at` to `mailbox` as well, sharing its bytes, with the
/// flags and date `e` has; `false` when the target refuses (an account over its quota), for the
/// caller to store the message on its own.
async fn share(
    to: &SharedStore,
    at: (MailboxId, Uid),
    mailbox: MailboxId,
    e: &MessageEntry,
) -> anyhow::Result<bool> {
    let pairs = match to.copy(at.0, vec![at.1], mailbox, false).await {
        Ok(p) => p,
        Err(StoreError::QuotaExceeded) => return Ok(false),
        Err(err) => return Err(err.into()),
    };
    let Some(&(_, uid)) = pairs.first() else {
        return Ok(false);
    };
    let new = to.message_get(mailbox, uid).await?;
    if new
        .as_ref()
        .is_some_and(|n| n.internal_date != e.internal_date)
    {
        // Copies keep the first one's date; this one had another: stored on its own instead.
        to.expunge(mailbox, vec![uid]).await?;
        return Ok(false);
    }
    if new.is_some_and(|n| n.flags != e.flags) {
        to.flags_update(FlagsUpdate {
            mailbox,
            uids: vec![uid],
            op: FlagOp::Replace,
            flags: e.flags.clone(),
            unchanged_since: None,
            reader: None,
        })
        .await?;
    }
    Ok(true)
}

/// An account's calendars and address books with what is in them. Their sync tokens start
/// anew in the copy (clients sync again from the start).
async fn copy_dav(
    from: &SharedStore,
    a: AccountId,
    to: &SharedStore,
    b: AccountId,
) -> anyhow::Result<()> {
    for col in from.dav_collections(a).await? {
        let copy = match to.dav_collection(b, col.kind, &col.name).await? {
            Some(c) => c,
            None => to
                .dav_collection_create(
                    NewDavCollection {
                        account: b,
                        kind: col.kind,
                        name: col.name.clone(),
                        display_name: String::new(),
                        description: String::new(),
                        color: String::new(),
                        components: col.components.clone(),
                    },
                    DavLimits::NONE,
                )
                .await?
                .map_err(|r| anyhow::anyhow!("collection {} refused: {r:?}", col.name))?,
        };
        to.dav_collection_update(
            copy.id,
            DavCollectionUpdate {
                display_name: Some(col.display_name.clone()),
                description: Some(col.description.clone()),
                color: Some(col.color.clone()),
                props: col
                    .props
                    .iter()
                    .map(|(n, v)| (n.clone(), Some(v.clone())))
                    .collect(),
            },
        )
        .await?;
        for r in from.dav_resources(col.id, None, true).await? {
            let put = DavPut {
                name: r.name.clone(),
                content: r.content,
                component: r.component,
                uid: r.uid,
                start: r.start,
                end: r.end,
                condition: DavCondition::Always,
            };
            to.dav_resource_put(copy.id, put, DavLimits::NONE)
                .await?
                .map_err(|e| anyhow::anyhow!("{}/{} refused: {e:?}", col.name, r.name))?;
        }
    }
    Ok(())
}

/// The UIDs a mailbox's messages got in the copy, by their UIDs in the source: the copy holds
/// them in the same order, each with its size and date.
async fn new_uids(
    from: &SharedStore,
    src: MailboxId,
    to: &SharedStore,
    dst: MailboxId,
) -> anyhow::Result<HashMap<Uid, Uid>> {
    let (a, b) = (from.message_list(src).await?, to.message_list(dst).await?);
    let same =
        |x: &MessageEntry, y: &MessageEntry| x.size == y.size && x.internal_date == y.internal_date;
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| !same(x, y)) {
        bail!("mailbox {src}: its copy does not hold the same messages in the same order");
    }
    Ok(a.iter().zip(&b).map(|(x, y)| (x.uid, y.uid)).collect())
}

/// The counts side by side, and whether they agree.
pub fn report(from: &Counts, to: &Counts) -> (String, bool) {
    let rows = [
        ("domains", from.domains as u64, to.domains as u64),
        ("accounts", from.accounts as u64, to.accounts as u64),
        ("aliases and groups", from.aliases as u64, to.aliases as u64),
        ("mailboxes", from.mailboxes as u64, to.mailboxes as u64),
        ("messages", from.messages, to.messages),
        ("message bytes", from.bytes, to.bytes),
        ("Sieve scripts", from.scripts as u64, to.scripts as u64),
        ("API tokens", from.tokens as u64, to.tokens as u64),
        ("queued messages", from.queued as u64, to.queued as u64),
        ("received reports", from.reports as u64, to.reports as u64),
        (
            "access-list lines",
            from.acl_lines as u64,
            to.acl_lines as u64,
        ),
        ("send-as grants", from.send_as as u64, to.send_as as u64),
        ("METADATA entries", from.metadata as u64, to.metadata as u64),
        (
            "DAV collections",
            from.dav_collections as u64,
            to.dav_collections as u64,
        ),
        (
            "DAV resources",
            from.dav_resources as u64,
            to.dav_resources as u64,
        ),
    ];
    let mut out = format!("{:<20} {:>12} {:>12}\n", "", "source", "copy");
    let mut same = true;
    for (what, a, b) in rows {
        let mark = if a == b { "" } else { "  <- differs" };
        same &= a == b;
        out.push_str(&format!("{what:<20} {a:>12} {b:>12}{mark}\n"));
    }
    (out, same)
}
