//! The single writer: drains queued write requests, applies a batch of them in one redb
//! transaction, appends their message bytes to the active segment with one fdatasync, commits,
//! and only then answers each request (group commit).
//!
//! Each request checks everything it needs before it changes anything, so a request that fails
//! on bad input leaves the batch's other requests intact; an I/O error fails the whole batch and
//! nothing of it is committed.

mod blobs;
mod dav;
mod directory;
mod kept;
mod mail;
mod metadata;
mod queue;
mod reports;
mod share;
mod sieve;
mod stats;
mod subscriptions;
mod trace;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{Database, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::blobs::{BlobFiles, SEGMENT_TARGET};
use super::tables::*;
use super::{Shared, db_err};
use crate::*;

pub enum Job {
    DomainAdd(String),
    DomainDelete(String),
    AccountCreate(NewAccount),
    AccountUpdate(AccountId, AccountUpdate),
    AccountDelete(AccountId),
    AliasSet(String, Vec<String>),
    AliasPolicy(String, Option<SendPolicy>),
    AliasDelete(String),
    MailboxCreate(AccountId, String, Option<SpecialUse>),
    MailboxDelete(MailboxId),
    MailboxRename(MailboxId, String),
    SubscriptionSet(AccountId, String, bool),
    ExpungedPurge(i64),
    Deliver(Delivery),
    DeliverMany(Vec<Delivery>),
    SievePut(AccountId, String, String),
    SieveActivate(AccountId, Option<String>),
    SieveDelete(AccountId, String),
    SieveRename(AccountId, String, String),
    SenderVerdict(AccountId, String, Option<bool>),
    TokenPut(ApiToken),
    TokenDelete(String),
    SeenMark {
        account: AccountId,
        key: String,
        now: i64,
        expires: i64,
    },
    FlagsUpdate(FlagsUpdate),
    Expunge(MailboxId, Vec<Uid>),
    Copy {
        from: MailboxId,
        uids: Vec<Uid>,
        to: MailboxId,
        remove_source: bool,
    },
    QueueUpdate(QueueEntry),
    QueueDelete(QueueId),
    Trace(Vec<TraceEvent>),
    TracePrune(i64),
    ReportTally(Vec<ReportTally>),
    ReportTake(ReportKind, String, i64),
    ReportPut(ReceivedReport),
    ReportPrune(i64),
    StatsAdd(Vec<StatPoint>),
    StatsPrune(i64),
    AclSet(MailboxId, String, Option<Rights>),
    SendAsSet(String, String, Option<SendAs>),
    MetadataSet {
        account: AccountId,
        mailbox: Option<MailboxId>,
        changes: MetadataChanges,
        limits: MetadataLimits,
    },
    DavCollectionCreate(NewDavCollection, DavLimits),
    DavCollectionUpdate(CollectionId, DavCollectionUpdate),
    DavCollectionDelete(CollectionId),
    DavResourcePut(CollectionId, DavPut, DavLimits),
    DavResourceDelete(CollectionId, String, DavCondition),
}

pub enum Output {
    Unit,
    Domain(Domain),
    Account(Account),
    Alias(Alias),
    Mailbox(Mailbox),
    Delivery(DeliveryReport),
    Deliveries(Vec<DeliveryReport>),
    Bool(bool),
    Flags(FlagsResult),
    Uids(Vec<Uid>),
    Pairs(Vec<(Uid, Uid)>),
    Count(u64),
    Tallies(Vec<ReportTally>),
    Metadata(Result<(), MetadataRefused>),
    DavCollection(Result<DavCollection, DavRefused>),
    DavResource(Result<DavResource, DavRefused>),
    DavDeleted(Result<(), DavRefused>),
}

pub struct Request {
    pub job: Job,
    pub reply: oneshot::Sender<Result<Output>>,
}

/// Runs until every sender is gone.
pub fn run(
    db: Arc<Database>,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
) {
    let mut active = match active_segment(&db) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "storage writer cannot start");
            return;
        }
    };
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Below the free space kept, what adds data is refused before the database sees it.
        if shared.min_free > 0 && free_space(&shared.dir).is_some_and(|f| f < shared.min_free) {
            let (grow, keep): (Vec<_>, Vec<_>) = batch.drain(..).partition(|r| r.job.adds_data());
            for r in grow {
                let _ = r.reply.send(Err(StoreError::DiskFull));
            }
            batch = keep;
            if batch.is_empty() {
                continue;
            }
        }
        let n = batch.len() as u64;
        let (replies, jobs): (Vec<_>, Vec<_>) = batch.drain(..).map(|r| (r.reply, r.job)).unzip();
        match commit_batch(&db, &shared, &mut active, jobs) {
            Ok((outputs, events)) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.writes.fetch_add(n, Ordering::Relaxed);
                for (reply, out) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(out);
                }
                for e in events {
                    let _ = shared.events.send(e);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = n, "storage commit failed");
                let disk_full = matches!(e, StoreError::DiskFull);
                for reply in replies {
                    let err = if disk_full {
                        StoreError::DiskFull
                    } else {
                        StoreError::Backend(e.to_string())
                    };
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

/// Bytes free for us on the disk holding `dir`.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into `st`; `path` is a valid C string for the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

impl Job {
    /// Whether the job stores something new (mail, scripts, records) rather than changing or
    /// removing what is there.
    fn adds_data(&self) -> bool {
        matches!(
            self,
            Job::Deliver(_)
                | Job::DeliverMany(_)
                | Job::Copy { .. }
                | Job::SievePut(..)
                | Job::Trace(_)
                | Job::ReportTally(_)
                | Job::ReportPut(_)
                | Job::StatsAdd(_)
                | Job::AccountCreate(_)
                | Job::MailboxCreate(..)
                | Job::AliasSet(..)
                | Job::TokenPut(_)
                | Job::AclSet(_, _, Some(_))
                | Job::SendAsSet(_, _, Some(_))
                | Job::MetadataSet { .. }
                | Job::DavCollectionCreate(..)
                | Job::DavResourcePut(..)
        )
    }
}

#[derive(Clone, Copy)]
struct ActiveSegment {
    id: u64,
    end: u64,
}

fn active_segment(db: &Database) -> Result<ActiveSegment> {
    let rtx = db.begin_read().map_err(db_err)?;
    let t = rtx.open_table(SEGMENTS).map_err(db_err)?;
    let last = t.last().map_err(db_err)?;
    Ok(match last {
        Some((k, v)) => ActiveSegment {
            id: k.value(),
            end: v.value().0,
        },
        None => ActiveSegment { id: 0, end: 0 },
    })
}

/// Message bytes a batch appends to the active segment: each message as it came (never
/// copied into one buffer), all written before one fdatasync.
#[derive(Default)]
pub(super) struct Appended {
    chunks: Vec<Vec<u8>>,
    len: u64,
}

impl Appended {
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the bytes; returns where in the batch they start.
    pub(super) fn push(&mut self, bytes: Vec<u8>) -> u64 {
        let at = self.len;
        self.len += bytes.len() as u64;
        self.chunks.push(bytes);
        at
    }

    fn write_at(&self, f: &fs::File, mut offset: u64) -> std::io::Result<()> {
        for c in &self.chunks {
            f.write_all_at(c, offset)?;
            offset += c.len() as u64;
        }
        Ok(())
    }
}

/// What a batch does besides its redb writes.
struct Effects {
    /// Bytes to append to the active segment.
    buf: Appended,
    seg: ActiveSegment,
    /// Live bytes added to the active segment.
    seg_live: u64,
    /// Spool files to move into the blob store: (from, to).
    new_files: Vec<(PathBuf, PathBuf)>,
    /// Files to remove once the commit is durable.
    freed_files: Vec<PathBuf>,
    freed_segments: Vec<u64>,
    /// Accounts whose active script came or went: (account, has one now).
    sieve_changes: Vec<(AccountId, bool)>,
    events: Vec<StoreEvent>,
}

type Outputs = (Vec<Result<Output>>, Vec<StoreEvent>);

fn commit_batch(
    db: &Database,
    shared: &Shared,
    active: &mut ActiveSegment,
    jobs: Vec<Job>,
) -> Result<Outputs> {
    let blobs = &shared.blobs;
    let wtx = db.begin_write().map_err(db_err)?;
    let mut fx = Effects {
        buf: Appended::default(),
        seg: *active,
        seg_live: 0,
        new_files: Vec::new(),
        freed_files: Vec::new(),
        freed_segments: Vec::new(),
        sieve_changes: Vec::new(),
        events: Vec::new(),
    };
    let result = (|| {
        let mut t = Tables::open(&wtx)?;
        if fx.seg.id == 0 || fx.seg.end >= SEGMENT_TARGET {
            // Start a new segment; its file appears when the first bytes are written.
            let id = fx.seg.id + 1;
            t.segments.insert(id, (0u64, 0u64)).map_err(db_err)?;
            fx.seg = ActiveSegment { id, end: 0 };
        }
        let mut outputs = Vec::with_capacity(jobs.len());
        for job in jobs {
            match t.apply(job, &mut fx, blobs) {
                Ok(o) => outputs.push(Ok(o)),
                Err(e @ (StoreError::Io(_) | StoreError::Backend(_) | StoreError::DiskFull)) => {
                    return Err(e);
                }
                Err(e) => outputs.push(Err(e)),
            }
        }
        if !fx.buf.is_empty() || fx.seg_live > 0 {
            let (end, live) = t
                .segments
                .get(fx.seg.id)
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or((fx.seg.end, 0));
            t.segments
                .insert(fx.seg.id, (end + fx.buf.len(), live + fx.seg_live))
                .map_err(db_err)?;
        }
        Ok(outputs)
    })();
    let outputs = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = wtx.abort();
            return Err(e);
        }
    };
    // Message bytes first, durable, then the records that point at them.
    if let Err(e) = write_blob_bytes(blobs, &fx) {
        let _ = wtx.abort();
        undo_blob_bytes(blobs, &fx);
        return Err(e);
    }
    if let Err(e) = wtx.commit() {
        undo_blob_bytes(blobs, &fx);
        return Err(db_err(e));
    }
    *active = ActiveSegment {
        id: fx.seg.id,
        end: fx.seg.end + fx.buf.len(),
    };
    for f in &fx.freed_files {
        super::backup::free_file(shared, f);
    }
    for s in &fx.freed_segments {
        super::backup::free_segment(shared, *s);
    }
    if !fx.sieve_changes.is_empty() {
        let mut set = shared.sieve_accounts.lock().unwrap();
        for (account, active) in &fx.sieve_changes {
            if *active {
                set.insert(*account);
            } else {
                set.remove(account);
            }
        }
    }
    Ok((outputs, fx.events))
}

fn write_blob_bytes(blobs: &BlobFiles, fx: &Effects) -> Result<()> {
    if !fx.buf.is_empty() {
        let new_file = fx.seg.end == 0;
        let f = blobs.segment(fx.seg.id).map_err(StoreError::from_io)?;
        fx.buf
            .write_at(&f, fx.seg.end)
            .map_err(StoreError::from_io)?;
        blobs.sync_file(&f).map_err(StoreError::from_io)?;
        if new_file {
            blobs.sync_dir(blobs.root()).map_err(StoreError::from_io)?;
        }
    }
    if !fx.new_files.is_empty() {
        for (from, to) in &fx.new_files {
            fs::rename(from, to).map_err(StoreError::from_io)?;
        }
        blobs
            .sync_dir(&blobs.big_dir())
            .map_err(StoreError::from_io)?;
    }
    Ok(())
}

fn undo_blob_bytes(blobs: &BlobFiles, fx: &Effects) {
    if !fx.buf.is_empty()
        && let Ok(f) = blobs.segment(fx.seg.id)
    {
        let _ = f.set_len(fx.seg.end);
    }
    for (from, to) in &fx.new_files {
        if to.exists() {
            let _ = fs::rename(to, from);
        }
    }
}

struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    domains: Table<'t, &'static str, &'static [u8]>,
    accounts: Table<'t, u64, &'static [u8]>,
    account_by_address: Table<'t, &'static str, u64>,
    aliases: Table<'t, &'static str, &'static [u8]>,
    mailboxes: Table<'t, u64, &'static [u8]>,
    mailbox_by_name: Table<'t, (u64, &'static str), u64>,
    messages: Table<'t, (u64, u32), &'static [u8]>,
    modseq: Table<'t, (u64, u64, u32), ()>,
    expunged: Table<'t, (u64, u64, u32), ()>,
    kept: Table<'t, (u64, u32), &'static [u8]>,
    kept_by_time: Table<'t, (i64, u64, u32), ()>,
    subscriptions: Table<'t, (u64, &'static str), ()>,
    blobs: Table<'t, u64, &'static [u8]>,
    segments: Table<'t, u64, (u64, u64)>,
    queue: Table<'t, u64, &'static [u8]>,
    trace: Table<'t, (&'static str, u64), &'static [u8]>,
    trace_keys: Table<'t, (&'static str, i64, &'static str), ()>,
    trace_time: Table<'t, (i64, &'static str, u64), ()>,
    sieve: Table<'t, (u64, &'static str), &'static [u8]>,
    sieve_active: Table<'t, u64, &'static str>,
    seen: Table<'t, (u64, &'static str), i64>,
    senders: Table<'t, (u64, &'static str), u8>,
    tokens: Table<'t, &'static str, &'static [u8]>,
    report_tally: Table<'t, (&'static str, &'static str, i64, &'static str), u64>,
    reports: Table<'t, (i64, &'static str), &'static [u8]>,
    report_keys: Table<'t, &'static str, i64>,
    stats: Table<'t, (u8, &'static str, i64), i64>,
    acl: Table<'t, (u64, &'static str), &'static str>,
    acl_by_identifier: Table<'t, (&'static str, u64), ()>,
    seen_private: Table<'t, (u64, u64, u32), ()>,
    seen_private_readers: Table<'t, (u64, u64), ()>,
    send_as: Table<'t, (&'static str, &'static str), &'static str>,
    send_as_by_delegate: Table<'t, (&'static str, &'static str), ()>,
    metadata: Table<'t, (u64, u64, &'static str), &'static [u8]>,
    metadata_by_mailbox: Table<'t, (u64, u64), ()>,
    dav_collections: Table<'t, u64, &'static [u8]>,
    dav_collection_by_name: Table<'t, (u64, u8, &'static str), u64>,
    dav_resources: Table<'t, (u64, &'static str), &'static [u8]>,
    dav_content: Table<'t, (u64, &'static str), &'static [u8]>,
    dav_uids: Table<'t, (u64, &'static str), &'static str>,
    dav_removed: Table<'t, (u64, &'static str), u64>,
}

impl<'t> Tables<'t> {
    fn open(w: &'t WriteTransaction) -> Result<Self> {
        Ok(Tables {
            meta: w.open_table(META).map_err(db_err)?,
            domains: w.open_table(DOMAINS).map_err(db_err)?,
            accounts: w.open_table(ACCOUNTS).map_err(db_err)?,
            account_by_address: w.open_table(ACCOUNT_BY_ADDRESS).map_err(db_err)?,
            aliases: w.open_table(ALIASES).map_err(db_err)?,
            mailboxes: w.open_table(MAILBOXES).map_err(db_err)?,
            mailbox_by_name: w.open_table(MAILBOX_BY_NAME).map_err(db_err)?,
            messages: w.open_table(MESSAGES).map_err(db_err)?,
            modseq: w.open_table(MODSEQ).map_err(db_err)?,
            expunged: w.open_table(EXPUNGED).map_err(db_err)?,
            kept: w.open_table(KEPT).map_err(db_err)?,
            kept_by_time: w.open_table(KEPT_BY_TIME).map_err(db_err)?,
            subscriptions: w.open_table(SUBSCRIPTIONS).map_err(db_err)?,
            blobs: w.open_table(BLOBS).map_err(db_err)?,
            segments: w.open_table(SEGMENTS).map_err(db_err)?,
            queue: w.open_table(QUEUE).map_err(db_err)?,
            trace: w.open_table(TRACE).map_err(db_err)?,
            trace_keys: w.open_table(TRACE_KEYS).map_err(db_err)?,
            trace_time: w.open_table(TRACE_TIME).map_err(db_err)?,
            sieve: w.open_table(SIEVE).map_err(db_err)?,
            sieve_active: w.open_table(SIEVE_ACTIVE).map_err(db_err)?,
            seen: w.open_table(SEEN).map_err(db_err)?,
            senders: w.open_table(SENDERS).map_err(db_err)?,
            tokens: w.open_table(TOKENS).map_err(db_err)?,
            report_tally: w.open_table(REPORT_TALLY).map_err(db_err)?,
            reports: w.open_table(REPORTS).map_err(db_err)?,
            report_keys: w.open_table(REPORT_KEYS).map_err(db_err)?,
            stats: w.open_table(STATS).map_err(db_err)?,
            acl: w.open_table(ACL).map_err(db_err)?,
            acl_by_identifier: w.open_table(ACL_BY_IDENTIFIER).map_err(db_err)?,
            seen_private: w.open_table(SEEN_PRIVATE).map_err(db_err)?,
            seen_private_readers: w.open_table(SEEN_PRIVATE_READERS).map_err(db_err)?,
            send_as: w.open_table(SEND_AS).map_err(db_err)?,
            send_as_by_delegate: w.open_table(SEND_AS_BY_DELEGATE).map_err(db_err)?,
            metadata: w.open_table(METADATA).map_err(db_err)?,
            metadata_by_mailbox: w.open_table(METADATA_BY_MAILBOX).map_err(db_err)?,
            dav_collections: w.open_table(DAV_COLLECTIONS).map_err(db_err)?,
            dav_collection_by_name: w.open_table(DAV_COLLECTION_BY_NAME).map_err(db_err)?,
            dav_resources: w.open_table(DAV_RESOURCES).map_err(db_err)?,
            dav_content: w.open_table(DAV_CONTENT).map_err(db_err)?,
            dav_uids: w.open_table(DAV_UIDS).map_err(db_err)?,
            dav_removed: w.open_table(DAV_REMOVED).map_err(db_err)?,
        })
    }

    fn apply(&mut self, job: Job, fx: &mut Effects, files: &BlobFiles) -> Result<Output> {
        match job {
            Job::DomainAdd(name) => self.domain_add(name, fx),
            Job::DomainDelete(name) => self.domain_delete(&name, fx),
            Job::AccountCreate(new) => self.account_create(new, fx),
            Job::AccountUpdate(id, up) => self.account_update(id, up, fx),
            Job::AccountDelete(id) => self.account_delete(id, fx, files),
            Job::AliasSet(address, targets) => self.alias_set(address, targets, fx),
            Job::AliasPolicy(address, policy) => self.alias_set_policy(&address, policy, fx),
            Job::AliasDelete(address) => self.alias_delete(&address, fx),
            Job::TokenPut(t) => self.token_put(t),
            Job::TokenDelete(name) => self.token_delete(&name),
            Job::MailboxCreate(account, name, su) => self.mailbox_create(account, &name, su, fx),
            Job::MailboxDelete(id) => self.mailbox_delete(id, fx, files),
            Job::MailboxRename(id, name) => self.mailbox_rename(id, &name, fx),
            Job::SubscriptionSet(account, name, on) => {
                self.subscription_set(account, &name, on, fx)
            }
            Job::ExpungedPurge(before) => self.expunged_purge(before, fx, files),
            Job::Deliver(d) => self.deliver(d, fx, files).map(Output::Delivery),
            Job::DeliverMany(ds) => {
                let mut out = Vec::with_capacity(ds.len());
                for d in ds {
                    out.push(self.deliver(d, fx, files)?);
                }
                Ok(Output::Deliveries(out))
            }
            Job::FlagsUpdate(u) => self.flags_update(u, fx),
            Job::Expunge(mailbox, uids) => {
                let mut mb = self.mailbox(mailbox)?;
                let gone = self.expunge(&mut mb, &uids, fx)?;
                Ok(Output::Uids(gone))
            }
            Job::Copy {
                from,
                uids,
                to,
                remove_source,
            } => self.copy(from, &uids, to, remove_source, fx),
            Job::QueueUpdate(entry) => self.queue_update(entry, fx),
            Job::QueueDelete(id) => self.queue_delete(id, fx, files),
            Job::Trace(events) => {
                self.trace_append(&events)?;
                Ok(Output::Unit)
            }
            Job::TracePrune(before) => self.trace_prune(before).map(Output::Count),
            Job::ReportTally(tallies) => self.report_tally(&tallies).map(|_| Output::Unit),
            Job::ReportTake(kind, domain, day) => {
                self.report_take(kind, &domain, day).map(Output::Tallies)
            }
            Job::ReportPut(report) => self.report_put(&report).map(Output::Bool),
            Job::ReportPrune(before) => self.report_prune(before).map(Output::Count),
            Job::StatsAdd(points) => self.stats_add(&points).map(|_| Output::Unit),
            Job::StatsPrune(now) => self.stats_prune(now).map(Output::Count),
            Job::AclSet(mailbox, identifier, rights) => {
                self.acl_set(mailbox, &identifier, rights, fx)
            }
            Job::SendAsSet(address, delegate, mode) => self.send_as_set(&address, &delegate, mode),
            Job::MetadataSet {
                account,
                mailbox,
                changes,
                limits,
            } => self
                .metadata_set(account, mailbox, &changes, &limits, fx)
                .map(Output::Metadata),
            Job::DavCollectionCreate(new, limits) => self
                .dav_collection_create(new, &limits)
                .map(Output::DavCollection),
            Job::DavCollectionUpdate(id, update) => self
                .dav_collection_update(id, update)
                .map(|c| Output::DavCollection(Ok(c))),
            Job::DavCollectionDelete(id) => self.dav_collection_delete(id).map(|_| Output::Unit),
            Job::DavResourcePut(collection, put, limits) => self
                .dav_resource_put(collection, put, &limits)
                .map(Output::DavResource),
            Job::DavResourceDelete(collection, name, condition) => self
                .dav_resource_delete(collection, &name, &condition)
                .map(Output::DavDeleted),
            Job::SievePut(account, name, source) => self.sieve_put(account, &name, &source),
            Job::SieveActivate(account, name) => self.sieve_activate(account, name, fx),
            Job::SieveDelete(account, name) => self.sieve_delete(account, &name),
            Job::SieveRename(account, from, to) => self.sieve_rename(account, &from, &to),
            Job::SenderVerdict(account, sender, junk) => {
                self.sender_verdict_set(account, &sender, junk)
            }
            Job::SeenMark {
                account,
                key,
                now,
                expires,
            } => self.seen_mark(account, &key, now, expires),
        }
    }

    fn next_id(&mut self, key: &'static str) -> Result<u64> {
        let id = self
            .meta
            .get(key)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(1);
        self.meta.insert(key, id + 1).map_err(db_err)?;
        Ok(id)
    }
}
