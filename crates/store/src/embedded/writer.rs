//! The single writer: drains queued write requests, applies a batch of them in one redb
//! transaction, appends their message bytes to the active segment with one fdatasync, commits,
//! and only then answers each request (group commit).
//!
//! Each request checks everything it needs before it changes anything, so a request that fails
//! on bad input leaves the batch's other requests intact; an I/O error fails the whole batch and
//! nothing of it is committed.

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
    MailboxSubscribe(MailboxId, bool),
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

/// What a batch does besides its redb writes.
struct Effects {
    /// Bytes to append to the active segment.
    buf: Vec<u8>,
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
        buf: Vec::new(),
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
                .insert(fx.seg.id, (end + fx.buf.len() as u64, live + fx.seg_live))
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
        end: fx.seg.end + fx.buf.len() as u64,
    };
    for f in &fx.freed_files {
        let _ = fs::remove_file(f);
    }
    for s in &fx.freed_segments {
        blobs.forget_segment(*s);
        let _ = fs::remove_file(blobs.segment_path(*s));
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
        f.write_all_at(&fx.buf, fx.seg.end)
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
            Job::AliasPolicy(address, policy) => {
                let Some(v) = self.aliases.get(address.as_str()).map_err(db_err)? else {
                    return Err(StoreError::NotFound(format!("alias {address}")));
                };
                let mut a = from_json::<Alias>(v.value())?;
                drop(v);
                a.policy = policy;
                self.aliases
                    .insert(a.address.as_str(), json(&a).as_slice())
                    .map_err(db_err)?;
                fx.events.push(StoreEvent::Directory);
                Ok(Output::Alias(a))
            }
            Job::AliasDelete(address) => self.alias_delete(&address, fx),
            Job::MailboxCreate(account, name, su) => {
                self.account(account)?;
                let mb = self.mailbox_create(account, &name, su)?;
                fx.events.push(StoreEvent::MailboxList { account });
                Ok(Output::Mailbox(mb))
            }
            Job::MailboxDelete(id) => self.mailbox_delete(id, fx, files),
            Job::MailboxRename(id, name) => self.mailbox_rename(id, &name, fx),
            Job::MailboxSubscribe(id, on) => {
                let mut mb = self.mailbox(id)?;
                mb.subscribed = on;
                self.put_mailbox(&mb)?;
                fx.events.push(StoreEvent::MailboxList {
                    account: mb.account,
                });
                Ok(Output::Unit)
            }
            Job::Deliver(d) => self.deliver(d, fx, files),
            Job::DeliverMany(ds) => {
                let mut out = Vec::with_capacity(ds.len());
                for d in ds {
                    out.push(expect_delivery(self.deliver(d, fx, files)?)?);
                }
                Ok(Output::Deliveries(out))
            }
            Job::SievePut(account, name, source) => {
                self.account(account)?;
                self.sieve
                    .insert((account, name.as_str()), source.as_bytes())
                    .map_err(db_err)?;
                Ok(Output::Unit)
            }
            Job::SieveActivate(account, name) => {
                self.account(account)?;
                match name {
                    Some(n) => {
                        if self
                            .sieve
                            .get((account, n.as_str()))
                            .map_err(db_err)?
                            .is_none()
                        {
                            return Err(StoreError::NotFound(format!("script {n}")));
                        }
                        self.sieve_active
                            .insert(account, n.as_str())
                            .map_err(db_err)?;
                        fx.sieve_changes.push((account, true));
                    }
                    None => {
                        self.sieve_active.remove(account).map_err(db_err)?;
                        fx.sieve_changes.push((account, false));
                    }
                }
                Ok(Output::Unit)
            }
            Job::SieveDelete(account, name) => {
                if self.sieve_active_name(account)?.as_deref() == Some(name.as_str()) {
                    return Err(StoreError::Invalid(format!("script {name} is active")));
                }
                if self
                    .sieve
                    .remove((account, name.as_str()))
                    .map_err(db_err)?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!("script {name}")));
                }
                Ok(Output::Unit)
            }
            Job::SieveRename(account, from, to) => {
                if self
                    .sieve
                    .get((account, to.as_str()))
                    .map_err(db_err)?
                    .is_some()
                {
                    return Err(StoreError::AlreadyExists(format!("script {to}")));
                }
                let Some(v) = self
                    .sieve
                    .remove((account, from.as_str()))
                    .map_err(db_err)?
                else {
                    return Err(StoreError::NotFound(format!("script {from}")));
                };
                let source = v.value().to_vec();
                drop(v);
                self.sieve
                    .insert((account, to.as_str()), source.as_slice())
                    .map_err(db_err)?;
                if self.sieve_active_name(account)?.as_deref() == Some(from.as_str()) {
                    self.sieve_active
                        .insert(account, to.as_str())
                        .map_err(db_err)?;
                }
                Ok(Output::Unit)
            }
            Job::TokenPut(t) => {
                if self.tokens.get(t.name.as_str()).map_err(db_err)?.is_some() {
                    return Err(StoreError::AlreadyExists(format!("token {}", t.name)));
                }
                self.tokens
                    .insert(t.name.as_str(), json(&t).as_slice())
                    .map_err(db_err)?;
                Ok(Output::Unit)
            }
            Job::TokenDelete(name) => {
                if self.tokens.remove(name.as_str()).map_err(db_err)?.is_none() {
                    return Err(StoreError::NotFound(format!("token {name}")));
                }
                Ok(Output::Unit)
            }
            Job::SenderVerdict(account, sender, junk) => {
                match junk {
                    Some(j) => {
                        self.account(account)?;
                        self.senders
                            .insert((account, sender.as_str()), j as u8)
                            .map_err(db_err)?;
                    }
                    None => {
                        self.senders
                            .remove((account, sender.as_str()))
                            .map_err(db_err)?;
                    }
                }
                Ok(Output::Unit)
            }
            Job::SeenMark {
                account,
                key,
                now,
                expires,
            } => {
                let until = self
                    .seen
                    .get((account, key.as_str()))
                    .map_err(db_err)?
                    .map(|v| v.value());
                if until.is_some_and(|u| u > now) {
                    return Ok(Output::Bool(true));
                }
                self.seen
                    .insert((account, key.as_str()), expires)
                    .map_err(db_err)?;
                Ok(Output::Bool(false))
            }
            Job::FlagsUpdate(u) => self.flags_update(u, fx),
            Job::Expunge(mailbox, uids) => {
                let mut mb = self.mailbox(mailbox)?;
                let gone = self.expunge(&mut mb, &uids, fx, files)?;
                Ok(Output::Uids(gone))
            }
            Job::Copy {
                from,
                uids,
                to,
                remove_source,
            } => self.copy(from, &uids, to, remove_source, fx, files),
            Job::QueueUpdate(entry) => {
                let stored: QueueEntry = match self.queue.get(entry.id).map_err(db_err)? {
                    Some(v) => from_json(v.value())?,
                    None => return Err(StoreError::NotFound(format!("queue entry {}", entry.id))),
                };
                let entry = entry.keeping_outcomes_of(&stored);
                self.queue
                    .insert(entry.id, json(&entry).as_slice())
                    .map_err(db_err)?;
                fx.events.push(StoreEvent::Queue);
                Ok(Output::Unit)
            }
            Job::Trace(events) => {
                self.trace_append(&events)?;
                Ok(Output::Unit)
            }
            Job::TracePrune(before) => self.trace_prune(before).map(Output::Count),
            Job::QueueDelete(id) => {
                let entry: QueueEntry = match self.queue.remove(id).map_err(db_err)? {
                    Some(v) => from_json(v.value())?,
                    None => return Err(StoreError::NotFound(format!("queue entry {id}"))),
                };
                self.release_blob(entry.blob, fx, files)?;
                Ok(Output::Unit)
            }
        }
    }

    fn sieve_active_name(&self, account: AccountId) -> Result<Option<String>> {
        Ok(self
            .sieve_active
            .get(account)
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }

    fn trace_append(&mut self, events: &[TraceEvent]) -> Result<()> {
        for e in events {
            let seq = self.next_id(NEXT_TRACE)?;
            self.trace
                .insert((e.trace_id.as_str(), seq), json(e).as_slice())
                .map_err(db_err)?;
            self.trace_time
                .insert((e.time, e.trace_id.as_str(), seq), ())
                .map_err(db_err)?;
            for k in &e.keys {
                self.trace_keys
                    .insert((k.as_str(), e.time, e.trace_id.as_str()), ())
                    .map_err(db_err)?;
            }
        }
        Ok(())
    }

    fn trace_prune(&mut self, before: i64) -> Result<u64> {
        let old: Vec<(i64, String, u64)> = self
            .trace_time
            .range((i64::MIN, "", 0u64)..(before, "", 0u64))
            .map_err(db_err)?
            .map(|r| {
                r.map(|(k, _)| {
                    let (t, id, seq) = k.value();
                    (t, id.to_string(), seq)
                })
                .map_err(db_err)
            })
            .collect::<Result<_>>()?;
        for (t, id, seq) in &old {
            if let Some(v) = self.trace.remove((id.as_str(), *seq)).map_err(db_err)? {
                let e: TraceEvent = from_json(v.value())?;
                for k in &e.keys {
                    self.trace_keys
                        .remove((k.as_str(), e.time, id.as_str()))
                        .map_err(db_err)?;
                }
            }
            self.trace_time
                .remove((*t, id.as_str(), *seq))
                .map_err(db_err)?;
        }
        let now = before / 1000;
        self.seen
            .retain(|_, expires| expires > now)
            .map_err(db_err)?;
        Ok(old.len() as u64)
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

    fn domain_add(&mut self, name: String, fx: &mut Effects) -> Result<Output> {
        if self.domains.get(name.as_str()).map_err(db_err)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("domain {name}")));
        }
        let d = Domain {
            name,
            created: now(),
        };
        self.domains
            .insert(d.name.as_str(), json(&d).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Domain(d))
    }

    fn domain_delete(&mut self, name: &str, fx: &mut Effects) -> Result<Output> {
        if self.domains.get(name).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        let suffix = format!("@{name}");
        let users = self
            .account_by_address
            .iter()
            .map_err(db_err)?
            .filter_map(|r| r.ok())
            .filter(|(k, _)| k.value().ends_with(&suffix))
            .count();
        let aliases = self
            .aliases
            .iter()
            .map_err(db_err)?
            .filter_map(|r| r.ok())
            .filter(|(k, _)| k.value().ends_with(&suffix))
            .count();
        if users + aliases > 0 {
            return Err(StoreError::Invalid(format!(
                "domain {name} still has {users} account(s) and {aliases} alias(es); delete them first"
            )));
        }
        self.domains.remove(name).map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Unit)
    }

    fn account(&self, id: AccountId) -> Result<Account> {
        match self.accounts.get(id).map_err(db_err)? {
            Some(v) => from_json(v.value()),
            None => Err(StoreError::NotFound(format!("account {id}"))),
        }
    }

    fn account_create(&mut self, new: NewAccount, fx: &mut Effects) -> Result<Output> {
        let address = new.address;
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if self.domains.get(domain).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        if self
            .account_by_address
            .get(address.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("account {address}")));
        }
        if self
            .aliases
            .get(address.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("alias {address}")));
        }
        let id = self.next_id(NEXT_ACCOUNT)?;
        let a = Account {
            id,
            address,
            password_hash: new.password_hash,
            quota_bytes: new.quota_bytes,
            quota_messages: new.quota_messages,
            disabled: false,
            created: now(),
            forward: None,
        };
        self.accounts
            .insert(id, json(&a).as_slice())
            .map_err(db_err)?;
        self.account_by_address
            .insert(a.address.as_str(), id)
            .map_err(db_err)?;
        self.mailbox_create(id, INBOX, None)?;
        for (name, su) in SpecialUse::DEFAULTS {
            self.mailbox_create(id, name, Some(su))?;
        }
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Account(a))
    }

    fn account_update(
        &mut self,
        id: AccountId,
        up: AccountUpdate,
        fx: &mut Effects,
    ) -> Result<Output> {
        let mut a = self.account(id)?;
        if let Some(h) = up.password_hash {
            a.password_hash = h;
        }
        if let Some(q) = up.quota_bytes {
            a.quota_bytes = q;
        }
        if let Some(q) = up.quota_messages {
            a.quota_messages = q;
        }
        if let Some(d) = up.disabled {
            a.disabled = d;
        }
        if let Some(f) = up.forward {
            a.forward = f;
        }
        self.accounts
            .insert(id, json(&a).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Account(a))
    }

    fn account_delete(
        &mut self,
        id: AccountId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let a = self.account(id)?;
        for mb in self.account_mailboxes(id)? {
            self.mailbox_remove(&mb, fx, files)?;
        }
        self.accounts.remove(id).map_err(db_err)?;
        self.sieve_active.remove(id).map_err(db_err)?;
        fx.sieve_changes.push((id, false));
        self.sieve
            .retain_in((id, "")..(id + 1, ""), |_, _| false)
            .map_err(db_err)?;
        self.seen
            .retain_in((id, "")..(id + 1, ""), |_, _| false)
            .map_err(db_err)?;
        self.senders
            .retain_in((id, "")..(id + 1, ""), |_, _| false)
            .map_err(db_err)?;
        self.account_by_address
            .remove(a.address.as_str())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        fx.events.push(StoreEvent::MailboxList { account: id });
        Ok(Output::Unit)
    }

    fn alias_set(
        &mut self,
        address: String,
        targets: Vec<String>,
        fx: &mut Effects,
    ) -> Result<Output> {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if self.domains.get(domain).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        if self
            .account_by_address
            .get(address.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("account {address}")));
        }
        let (created, policy) = match self.aliases.get(address.as_str()).map_err(db_err)? {
            Some(v) => {
                let old = from_json::<Alias>(v.value())?;
                (old.created, old.policy)
            }
            None => (now(), None),
        };
        let a = Alias {
            address,
            targets,
            created,
            policy,
        };
        self.aliases
            .insert(a.address.as_str(), json(&a).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Alias(a))
    }

    fn alias_delete(&mut self, address: &str, fx: &mut Effects) -> Result<Output> {
        if self.aliases.remove(address).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("alias {address}")));
        }
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Unit)
    }

    fn mailbox(&self, id: MailboxId) -> Result<Mailbox> {
        match self.mailboxes.get(id).map_err(db_err)? {
            Some(v) => from_json(v.value()),
            None => Err(StoreError::NotFound(format!("mailbox {id}"))),
        }
    }

    fn put_mailbox(&mut self, mb: &Mailbox) -> Result<()> {
        self.mailboxes
            .insert(mb.id, json(mb).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn account_mailboxes(&self, account: AccountId) -> Result<Vec<Mailbox>> {
        let ids: Vec<u64> = self
            .mailbox_by_name
            .range((account, "")..(account + 1, ""))
            .map_err(db_err)?
            .map(|r| r.map(|(_, v)| v.value()).map_err(db_err))
            .collect::<Result<_>>()?;
        ids.into_iter().map(|id| self.mailbox(id)).collect()
    }

    fn mailbox_create(
        &mut self,
        account: AccountId,
        name: &str,
        su: Option<SpecialUse>,
    ) -> Result<Mailbox> {
        let name = normalize_mailbox_name(name);
        if self
            .mailbox_by_name
            .get((account, name.as_str()))
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("mailbox {name}")));
        }
        let id = self.next_id(NEXT_MAILBOX)?;
        let last = self
            .meta
            .get(LAST_UIDVALIDITY)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let uidvalidity = (now() as u64).max(last + 1) & 0xffff_ffff;
        self.meta
            .insert(LAST_UIDVALIDITY, uidvalidity)
            .map_err(db_err)?;
        let mb = Mailbox {
            id,
            account,
            name,
            uidvalidity: uidvalidity.max(1) as u32,
            uidnext: 1,
            highest_modseq: 1,
            special_use: su,
            subscribed: true,
            messages: 0,
            unseen: 0,
            size: 0,
        };
        self.put_mailbox(&mb)?;
        self.mailbox_by_name
            .insert((account, mb.name.as_str()), id)
            .map_err(db_err)?;
        Ok(mb)
    }

    fn mailbox_delete(
        &mut self,
        id: MailboxId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let mb = self.mailbox(id)?;
        if mb.name == INBOX {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        self.mailbox_remove(&mb, fx, files)?;
        fx.events.push(StoreEvent::MailboxList {
            account: mb.account,
        });
        fx.events.push(StoreEvent::Mailbox {
            account: mb.account,
            mailbox: mb.id,
            highest_modseq: mb.highest_modseq + 1,
        });
        Ok(Output::Unit)
    }

    fn mailbox_remove(&mut self, mb: &Mailbox, fx: &mut Effects, files: &BlobFiles) -> Result<()> {
        let entries = self.entries(mb.id)?;
        for e in &entries {
            self.messages.remove((mb.id, e.uid)).map_err(db_err)?;
            self.release_blob(e.blob, fx, files)?;
        }
        for table in [&mut self.modseq, &mut self.expunged] {
            let keys: Vec<(u64, u64, u32)> = table
                .range((mb.id, 0u64, 0u32)..(mb.id + 1, 0u64, 0u32))
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                .collect::<Result<_>>()?;
            for k in keys {
                table.remove(k).map_err(db_err)?;
            }
        }
        self.mailbox_by_name
            .remove((mb.account, mb.name.as_str()))
            .map_err(db_err)?;
        self.mailboxes.remove(mb.id).map_err(db_err)?;
        Ok(())
    }

    fn mailbox_rename(
        &mut self,
        id: MailboxId,
        new_name: &str,
        fx: &mut Effects,
    ) -> Result<Output> {
        let mb = self.mailbox(id)?;
        let new_name = normalize_mailbox_name(new_name);
        if mb.name == INBOX {
            return Err(StoreError::Invalid("INBOX cannot be renamed here".into()));
        }
        if new_name == INBOX || new_name.starts_with(&format!("{}/", mb.name)) {
            return Err(StoreError::Invalid(format!(
                "cannot rename {} to {new_name}",
                mb.name
            )));
        }
        if self
            .mailbox_by_name
            .get((mb.account, new_name.as_str()))
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("mailbox {new_name}")));
        }
        let prefix = format!("{}/", mb.name);
        let mut moves = vec![(mb.clone(), new_name.clone())];
        for child in self.account_mailboxes(mb.account)? {
            if let Some(rest) = child.name.strip_prefix(&prefix) {
                let n = format!("{new_name}/{rest}");
                if self
                    .mailbox_by_name
                    .get((mb.account, n.as_str()))
                    .map_err(db_err)?
                    .is_some()
                {
                    return Err(StoreError::AlreadyExists(format!("mailbox {n}")));
                }
                moves.push((child, n));
            }
        }
        for (mut m, n) in moves {
            self.mailbox_by_name
                .remove((m.account, m.name.as_str()))
                .map_err(db_err)?;
            m.name = n;
            self.mailbox_by_name
                .insert((m.account, m.name.as_str()), m.id)
                .map_err(db_err)?;
            self.put_mailbox(&m)?;
        }
        fx.events.push(StoreEvent::MailboxList {
            account: mb.account,
        });
        Ok(Output::Unit)
    }

    fn entries(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        self.messages
            .range((mailbox, 0u32)..=(mailbox, u32::MAX))
            .map_err(db_err)?
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                decode_message(k.value().1, v.value())
            })
            .collect()
    }

    fn usage(&self, account: AccountId) -> Result<Usage> {
        let mut u = Usage::default();
        for mb in self.account_mailboxes(account)? {
            u.bytes += mb.size;
            u.messages += mb.messages as u64;
        }
        Ok(u)
    }

    fn add_blob(
        &mut self,
        blob: NewBlob,
        refs: u32,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<BlobId> {
        let id = self.next_id(NEXT_BLOB)?;
        let loc = match blob.data {
            BlobData::Memory(bytes) => {
                let offset = fx.seg.end + fx.buf.len() as u64;
                fx.buf.extend_from_slice(&bytes);
                fx.seg_live += bytes.len() as u64;
                BlobLoc::Segment {
                    seg: fx.seg.id,
                    offset,
                }
            }
            BlobData::File(path) => {
                // The path's owner wrote and fsynced it; placing it is a rename.
                fx.new_files.push((path, files.big_path(id)));
                BlobLoc::File
            }
        };
        let rec = BlobRecord {
            refs,
            size: blob.size,
            loc,
            meta: blob.meta,
        };
        self.blobs
            .insert(id, encode_blob(&rec).as_slice())
            .map_err(db_err)?;
        Ok(id)
    }

    fn retain_blob(&mut self, id: BlobId) -> Result<()> {
        let mut rec = match self.blobs.get(id).map_err(db_err)? {
            Some(v) => decode_blob(v.value())?,
            None => return Err(StoreError::NotFound(format!("blob {id}"))),
        };
        rec.refs += 1;
        self.blobs
            .insert(id, encode_blob(&rec).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn release_blob(&mut self, id: BlobId, fx: &mut Effects, files: &BlobFiles) -> Result<()> {
        let mut rec = match self.blobs.get(id).map_err(db_err)? {
            Some(v) => decode_blob(v.value())?,
            None => return Ok(()),
        };
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs > 0 {
            self.blobs
                .insert(id, encode_blob(&rec).as_slice())
                .map_err(db_err)?;
            return Ok(());
        }
        self.blobs.remove(id).map_err(db_err)?;
        match rec.loc {
            BlobLoc::File => fx.freed_files.push(files.big_path(id)),
            BlobLoc::Segment { seg, offset } => {
                if seg == fx.seg.id && offset >= fx.seg.end {
                    // Written by this batch: not in the segment record yet.
                    fx.seg_live = fx.seg_live.saturating_sub(rec.size);
                    return Ok(());
                }
                let (end, live) = self
                    .segments
                    .get(seg)
                    .map_err(db_err)?
                    .map(|v| v.value())
                    .unwrap_or((0, 0));
                let live = live.saturating_sub(rec.size);
                if live == 0 && seg != fx.seg.id {
                    self.segments.remove(seg).map_err(db_err)?;
                    fx.freed_segments.push(seg);
                } else {
                    self.segments.insert(seg, (end, live)).map_err(db_err)?;
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, d: Delivery, fx: &mut Effects, files: &BlobFiles) -> Result<Output> {
        let size = d.blob.size;
        let mut targets: Vec<Result<Mailbox>> = Vec::with_capacity(d.targets.len());
        // Usage added by earlier targets of this delivery, per account.
        let mut pending: Vec<(AccountId, u64)> = Vec::new();
        for t in &d.targets {
            let r = (|| {
                let account = self.account(t.account)?;
                let mb = match &t.mailbox {
                    MailboxTarget::Id(id) => {
                        let mb = self.mailbox(*id)?;
                        if mb.account != t.account {
                            return Err(StoreError::NotFound(format!("mailbox {id}")));
                        }
                        mb
                    }
                    MailboxTarget::Name { name, create } => {
                        let n = normalize_mailbox_name(name);
                        let found = self
                            .mailbox_by_name
                            .get((t.account, n.as_str()))
                            .map_err(db_err)?
                            .map(|v| v.value());
                        match found {
                            Some(id) => self.mailbox(id)?,
                            None if *create => {
                                let mb = self.mailbox_create(t.account, &n, None)?;
                                fx.events
                                    .push(StoreEvent::MailboxList { account: t.account });
                                mb
                            }
                            None => {
                                let id = self
                                    .mailbox_by_name
                                    .get((t.account, INBOX))
                                    .map_err(db_err)?
                                    .ok_or_else(|| StoreError::NotFound("INBOX".into()))?
                                    .value();
                                self.mailbox(id)?
                            }
                        }
                    }
                };
                if t.enforce_quota && (account.quota_bytes > 0 || account.quota_messages > 0) {
                    let u = self.usage(account.id)?;
                    let extra: u64 = pending
                        .iter()
                        .filter(|p| p.0 == account.id)
                        .map(|p| p.1)
                        .sum();
                    let count = pending.iter().filter(|p| p.0 == account.id).count() as u64;
                    if (account.quota_bytes > 0 && u.bytes + extra + size > account.quota_bytes)
                        || (account.quota_messages > 0
                            && u.messages + count + 1 > account.quota_messages)
                    {
                        return Err(StoreError::QuotaExceeded);
                    }
                }
                pending.push((account.id, size));
                Ok(mb)
            })();
            targets.push(r);
        }
        let ok = targets.iter().filter(|t| t.is_ok()).count() as u32;
        let queued = d.queue.is_some();
        self.trace_append(&d.trace)?;
        if ok == 0 && !queued {
            return Ok(Output::Delivery(DeliveryReport {
                blob: 0,
                targets: targets.into_iter().map(|t| t.map(|_| (0, 0))).collect(),
                queue_id: None,
            }));
        }
        let blob = self.add_blob(d.blob, ok + queued as u32, fx, files)?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            match t {
                Ok(mb) => {
                    let mut mb = self.mailbox(mb.id)?;
                    let flags = d
                        .targets
                        .get(out.len())
                        .map(|t| t.flags.clone())
                        .unwrap_or_default();
                    let uid = self.append_entry(&mut mb, blob, size, d.internal_date, flags)?;
                    fx.events.push(StoreEvent::Mailbox {
                        account: mb.account,
                        mailbox: mb.id,
                        highest_modseq: mb.highest_modseq,
                    });
                    out.push(Ok((mb.id, uid)));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let queue_id = match d.queue {
            Some(q) => {
                let id = self.next_id(NEXT_QUEUE)?;
                let created = now();
                let entry = QueueEntry {
                    id,
                    blob,
                    size,
                    sender: q.sender,
                    recipients: q.recipients,
                    envid: q.envid,
                    ret: q.ret,
                    trace_id: q.trace_id,
                    authenticated: q.authenticated,
                    requiretls: q.requiretls,
                    body_offset: q.body_offset,
                    created,
                    next_attempt: created,
                    attempts: 0,
                    last_error: None,
                    warned: false,
                    bounce: false,
                };
                self.queue
                    .insert(id, json(&entry).as_slice())
                    .map_err(db_err)?;
                fx.events.push(StoreEvent::Queue);
                Some(id)
            }
            None => None,
        };
        Ok(Output::Delivery(DeliveryReport {
            blob,
            targets: out,
            queue_id,
        }))
    }

    /// Adds a message to a mailbox (already loaded in `mb`) and saves the mailbox.
    fn append_entry(
        &mut self,
        mb: &mut Mailbox,
        blob: BlobId,
        size: u64,
        internal_date: i64,
        flags: Flags,
    ) -> Result<Uid> {
        let uid = mb.uidnext;
        mb.uidnext += 1;
        mb.highest_modseq += 1;
        let e = MessageEntry {
            uid,
            blob,
            size,
            internal_date,
            modseq: mb.highest_modseq,
            flags,
        };
        mb.messages += 1;
        mb.size += size;
        if !e.flags.seen() {
            mb.unseen += 1;
        }
        self.messages
            .insert((mb.id, uid), encode_message(&e).as_slice())
            .map_err(db_err)?;
        self.modseq
            .insert((mb.id, e.modseq, uid), ())
            .map_err(db_err)?;
        self.put_mailbox(mb)?;
        Ok(uid)
    }

    fn entry(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>> {
        match self.messages.get((mailbox, uid)).map_err(db_err)? {
            Some(v) => Ok(Some(decode_message(uid, v.value())?)),
            None => Ok(None),
        }
    }

    fn flags_update(&mut self, u: FlagsUpdate, fx: &mut Effects) -> Result<Output> {
        let mut mb = self.mailbox(u.mailbox)?;
        let mut res = FlagsResult::default();
        let mut modseq = None;
        for uid in u.uids {
            let Some(mut e) = self.entry(mb.id, uid)? else {
                continue;
            };
            if let Some(since) = u.unchanged_since
                && e.modseq > since
            {
                res.modified.push(uid);
                continue;
            }
            let flags = e.flags.apply(u.op, &u.flags);
            if flags == e.flags {
                continue;
            }
            let m = *modseq.get_or_insert_with(|| {
                mb.highest_modseq += 1;
                mb.highest_modseq
            });
            match (e.flags.seen(), flags.seen()) {
                (false, true) => mb.unseen = mb.unseen.saturating_sub(1),
                (true, false) => mb.unseen += 1,
                _ => {}
            }
            self.modseq.remove((mb.id, e.modseq, uid)).map_err(db_err)?;
            e.flags = flags;
            e.modseq = m;
            self.modseq.insert((mb.id, m, uid), ()).map_err(db_err)?;
            self.messages
                .insert((mb.id, uid), encode_message(&e).as_slice())
                .map_err(db_err)?;
            res.updated.push((uid, e.flags, m));
        }
        if modseq.is_some() {
            self.put_mailbox(&mb)?;
            fx.events.push(StoreEvent::Mailbox {
                account: mb.account,
                mailbox: mb.id,
                highest_modseq: mb.highest_modseq,
            });
        }
        Ok(Output::Flags(res))
    }

    fn expunge(
        &mut self,
        mb: &mut Mailbox,
        uids: &[Uid],
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Vec<Uid>> {
        let mut gone = Vec::new();
        let mut modseq = None;
        for &uid in uids {
            let Some(e) = self.entry(mb.id, uid)? else {
                continue;
            };
            let m = *modseq.get_or_insert_with(|| {
                mb.highest_modseq += 1;
                mb.highest_modseq
            });
            self.messages.remove((mb.id, uid)).map_err(db_err)?;
            self.modseq.remove((mb.id, e.modseq, uid)).map_err(db_err)?;
            self.expunged.insert((mb.id, m, uid), ()).map_err(db_err)?;
            mb.messages = mb.messages.saturating_sub(1);
            mb.size = mb.size.saturating_sub(e.size);
            if !e.flags.seen() {
                mb.unseen = mb.unseen.saturating_sub(1);
            }
            self.release_blob(e.blob, fx, files)?;
            gone.push(uid);
        }
        if !gone.is_empty() {
            self.put_mailbox(mb)?;
            fx.events.push(StoreEvent::Mailbox {
                account: mb.account,
                mailbox: mb.id,
                highest_modseq: mb.highest_modseq,
            });
        }
        Ok(gone)
    }

    fn copy(
        &mut self,
        from: MailboxId,
        uids: &[Uid],
        to: MailboxId,
        remove_source: bool,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let mut src = self.mailbox(from)?;
        let mut dst = self.mailbox(to)?;
        let entries: Vec<MessageEntry> = uids
            .iter()
            .filter_map(|&u| self.entry(from, u).transpose())
            .collect::<Result<_>>()?;
        let account = self.account(dst.account)?;
        if account.quota_bytes > 0 || account.quota_messages > 0 {
            let u = self.usage(account.id)?;
            let (add_bytes, add_msgs) = if remove_source && src.account == dst.account {
                (0, 0)
            } else {
                (
                    entries.iter().map(|e| e.size).sum::<u64>(),
                    entries.len() as u64,
                )
            };
            if (account.quota_bytes > 0
                && add_bytes > 0
                && u.bytes + add_bytes > account.quota_bytes)
                || (account.quota_messages > 0
                    && add_msgs > 0
                    && u.messages + add_msgs > account.quota_messages)
            {
                return Err(StoreError::QuotaExceeded);
            }
        }
        let mut pairs = Vec::with_capacity(entries.len());
        for e in &entries {
            self.retain_blob(e.blob)?;
            let uid =
                self.append_entry(&mut dst, e.blob, e.size, e.internal_date, e.flags.clone())?;
            pairs.push((e.uid, uid));
        }
        if !pairs.is_empty() {
            fx.events.push(StoreEvent::Mailbox {
                account: dst.account,
                mailbox: dst.id,
                highest_modseq: dst.highest_modseq,
            });
        }
        if remove_source {
            let moved: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
            if from == to {
                src = self.mailbox(from)?;
            }
            self.expunge(&mut src, &moved, fx, files)?;
        }
        Ok(Output::Pairs(pairs))
    }
}

/// "inbox" and "Inbox/x" name the INBOX (RFC 3501 5.1).
pub fn normalize_mailbox_name(name: &str) -> String {
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if first.eq_ignore_ascii_case(INBOX) {
        match rest {
            Some(r) => format!("{INBOX}/{r}"),
            None => INBOX.to_string(),
        }
    } else {
        name.to_string()
    }
}

fn expect_delivery(o: Output) -> Result<DeliveryReport> {
    match o {
        Output::Delivery(r) => Ok(r),
        _ => Err(StoreError::Backend("unexpected writer output".into())),
    }
}
