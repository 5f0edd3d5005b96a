//! The embedded backend: redb for records, segment files for message bytes, one writer
//! thread for group commit. Needs no other process.

mod blobs;
mod tables;
mod writer;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::*;
use blobs::BlobFiles;
use tables::*;
pub use writer::normalize_mailbox_name;
use writer::{Job, Output, Request};

pub struct Options {
    pub max_batch: usize,
    /// Memory for the database's page cache (the OS page cache comes on top).
    pub cache_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 512,
            cache_size: 64 << 20,
        }
    }
}

/// State shared by readers and the writer thread.
pub(crate) struct Shared {
    pub blobs: BlobFiles,
    pub events: broadcast::Sender<StoreEvent>,
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub fsyncs: Arc<AtomicU64>,
    /// Accounts with an active Sieve script: most have none, and delivery asks for every
    /// recipient, so the answer "none" comes from memory.
    pub sieve_accounts: Mutex<HashSet<u64>>,
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    maildrops: Arc<Mutex<HashSet<AccountId>>>,
    /// Queue claims: one process owns the data directory, so they live in its memory.
    claims: Mutex<std::collections::HashMap<QueueId, (String, i64)>>,
    /// Rate limits and bans: one process, so in its memory, bounded (`MAX_COUNTERS`).
    counters: Mutex<std::collections::HashMap<String, CounterFamily>>,
    web_sessions: Mutex<std::collections::HashMap<String, WebSession>>,
    tmp_dir: PathBuf,
    _lock: File,
}

/// Rate-limit counters kept at most of one kind (the key's part before ':'), about 150 bytes
/// each.
const MAX_COUNTERS: usize = 100_000;

/// The counters of one kind: a flood of one kind (made-up senders to greylist) never pushes
/// out another (login failures).
#[derive(Default)]
struct CounterFamily {
    map: std::collections::HashMap<String, Counter>,
    pruned: Option<std::time::Instant>,
}

impl CounterFamily {
    /// Room for one more: the expired go (at most once a minute); then greylisting lets the
    /// newcomer through untracked, while other kinds (logins, sending limits) drop the counter
    /// that would expire soonest, so they never stop counting.
    fn make_room(&mut self, key: &str, now: i64) -> Result<()> {
        if self
            .pruned
            .is_none_or(|p| p.elapsed() > std::time::Duration::from_secs(60))
        {
            self.map.retain(|_, c| c.expires > now);
            self.pruned = Some(std::time::Instant::now());
        }
        if self.map.len() < MAX_COUNTERS {
            return Ok(());
        }
        if key.starts_with("greylist:") {
            return Err(StoreError::Backend("too many greylisted senders".into()));
        }
        if let Some(soonest) = self
            .map
            .iter()
            .min_by_key(|(_, c)| c.expires)
            .map(|(k, _)| k.clone())
        {
            self.map.remove(&soonest);
        }
        Ok(())
    }
}

pub(crate) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => StoreError::from_io(io),
        other => {
            let s = other.to_string();
            if s.contains("No space left") || s.contains("os error 28") {
                StoreError::DiskFull
            } else {
                StoreError::Backend(s)
            }
        }
    }
}

/// Counts redb's fsyncs so group commit can be measured.
#[derive(Debug)]
struct CountingBackend {
    inner: redb::backends::FileBackend,
    fsyncs: Arc<AtomicU64>,
}

impl redb::StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }
}

/// Takes the data directory's lock file; fails with the holder's pid when another process has it.
pub fn lock_data_dir(dir: &Path) -> Result<File> {
    fs::create_dir_all(dir).map_err(StoreError::from_io)?;
    let path = dir.join("postern.lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StoreError::Locked {
                dir: dir.display().to_string(),
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    f.set_len(0)?;
    f.rewind()?;
    write!(f, "{}", std::process::id())?;
    f.flush()?;
    Ok(f)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`. Only one process may have it open.
    pub fn open(dir: &Path, opts: Options) -> Result<Arc<EmbeddedStore>> {
        let lock = lock_data_dir(dir)?;
        let tmp_dir = dir.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(StoreError::from_io)?;
        // Spool files of sessions that never finished.
        if let Ok(rd) = fs::read_dir(&tmp_dir) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let fsyncs = Arc::new(AtomicU64::new(0));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("store.redb"))?;
        let backend = CountingBackend {
            inner: redb::backends::FileBackend::new(file).map_err(db_err)?,
            fsyncs: fsyncs.clone(),
        };
        let db = Database::builder()
            .set_cache_size(opts.cache_size)
            .create_with_backend(backend)
            .map_err(db_err)?;
        let db = Arc::new(db);
        init_tables(&db)?;
        let blobs =
            BlobFiles::new(dir.join("blobs"), fsyncs.clone()).map_err(StoreError::from_io)?;
        recover_blob_files(&db, &blobs)?;
        let (events, _) = broadcast::channel(4096);
        let sieve_accounts = {
            let r = db.begin_read().map_err(db_err)?;
            let t = r.open_table(SIEVE_ACTIVE).map_err(db_err)?;
            let mut set = HashSet::new();
            for x in t.iter().map_err(db_err)? {
                set.insert(x.map_err(db_err)?.0.value());
            }
            set
        };
        let shared = Arc::new(Shared {
            blobs,
            events,
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            fsyncs,
            sieve_accounts: Mutex::new(sieve_accounts),
        });
        let (tx, rx) = mpsc::channel(opts.max_batch.max(1) * 4);
        let writer = {
            let db = db.clone();
            let shared = shared.clone();
            let max = opts.max_batch.max(1);
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer::run(db, shared, rx, max))
                .map_err(StoreError::Io)?
        };
        Ok(Arc::new(EmbeddedStore {
            db,
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            maildrops: Arc::new(Mutex::new(HashSet::new())),
            claims: Mutex::new(std::collections::HashMap::new()),
            counters: Mutex::new(std::collections::HashMap::new()),
            web_sessions: Mutex::new(std::collections::HashMap::new()),
            tmp_dir,
            _lock: lock,
        }))
    }

    /// Where sessions spool large incoming messages (same file system as the blobs).
    pub fn spool_dir(&self) -> &Path {
        &self.tmp_dir
    }

    async fn write(&self, job: Job) -> Result<Output> {
        let tx = self.tx.lock().unwrap().clone().ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Request { job, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let rtx = self.db.begin_read().map_err(db_err)?;
        f(&rtx)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<Option<Vec<u8>>>,
    ) -> Result<Option<T>> {
        match self.read(f)? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }

    fn list_json<K: redb::Key + 'static, T: serde::de::DeserializeOwned>(
        &self,
        def: redb::TableDefinition<K, &[u8]>,
    ) -> Result<Vec<T>> {
        self.read(|r| {
            let t = r.open_table(def).map_err(db_err)?;
            t.iter()
                .map_err(db_err)?
                .map(|x| from_json(x.map_err(db_err)?.1.value()))
                .collect()
        })
    }

    fn blob_record(&self, id: BlobId) -> Result<BlobRecord> {
        self.read(|r| {
            let t = r.open_table(BLOBS).map_err(db_err)?;
            match t.get(id).map_err(db_err)? {
                Some(v) => decode_blob(v.value()),
                None => Err(StoreError::NotFound(format!("blob {id}"))),
            }
        })
    }

    /// Size and location of a blob, looking at its metadata in passing.
    fn blob_location(
        &self,
        id: BlobId,
        mut with_meta: impl FnMut(&[u8]),
    ) -> Result<(u64, BlobLoc)> {
        self.read(|r| {
            let t = r.open_table(BLOBS).map_err(db_err)?;
            match t.get(id).map_err(db_err)? {
                Some(v) => {
                    let (size, loc, meta) = decode_blob_loc(v.value())?;
                    with_meta(meta);
                    Ok((size, loc))
                }
                None => Err(StoreError::NotFound(format!("blob {id}"))),
            }
        })
    }

    /// Number of blob records (for tests of reference counting).
    pub fn blob_count(&self) -> Result<u64> {
        self.read(|r| r.open_table(BLOBS).map_err(db_err)?.len().map_err(db_err))
    }
}

fn get_bytes<'k, K: redb::Key + 'static>(
    r: &redb::ReadTransaction,
    def: redb::TableDefinition<K, &[u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<Vec<u8>>> {
    let t = r.open_table(def).map_err(db_err)?;
    Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
}

fn init_tables(db: &Database) -> Result<()> {
    let w = db.begin_write().map_err(db_err)?;
    {
        let mut meta = w.open_table(META).map_err(db_err)?;
        let v = meta.get(SCHEMA_VERSION).map_err(db_err)?.map(|v| v.value());
        match v {
            None => {
                meta.insert(SCHEMA_VERSION, SCHEMA).map_err(db_err)?;
            }
            Some(v) if v > SCHEMA => {
                return Err(StoreError::Backend(format!(
                    "the store was written by a newer postern (schema {v}, this one knows {SCHEMA})"
                )));
            }
            Some(_) => {}
        }
        w.open_table(DOMAINS).map_err(db_err)?;
        w.open_table(ACCOUNTS).map_err(db_err)?;
        w.open_table(ACCOUNT_BY_ADDRESS).map_err(db_err)?;
        w.open_table(ALIASES).map_err(db_err)?;
        w.open_table(MAILBOXES).map_err(db_err)?;
        w.open_table(MAILBOX_BY_NAME).map_err(db_err)?;
        w.open_table(MESSAGES).map_err(db_err)?;
        w.open_table(MODSEQ).map_err(db_err)?;
        w.open_table(EXPUNGED).map_err(db_err)?;
        w.open_table(BLOBS).map_err(db_err)?;
        w.open_table(SEGMENTS).map_err(db_err)?;
        w.open_table(QUEUE).map_err(db_err)?;
        w.open_table(TRACE).map_err(db_err)?;
        w.open_table(TRACE_KEYS).map_err(db_err)?;
        w.open_table(TRACE_TIME).map_err(db_err)?;
        w.open_table(SIEVE).map_err(db_err)?;
        w.open_table(SIEVE_ACTIVE).map_err(db_err)?;
        w.open_table(SEEN).map_err(db_err)?;
        w.open_table(SENDERS).map_err(db_err)?;
        w.open_table(TOKENS).map_err(db_err)?;
    }
    w.commit().map_err(db_err)?;
    Ok(())
}

/// After a crash: cut segments back to their committed length and remove files no record
/// points at (bytes of a batch that never committed).
fn recover_blob_files(db: &Database, blobs: &BlobFiles) -> Result<()> {
    let r = db.begin_read().map_err(db_err)?;
    let segs = r.open_table(SEGMENTS).map_err(db_err)?;
    let mut known = HashSet::new();
    for x in segs.iter().map_err(db_err)? {
        let (k, v) = x.map_err(db_err)?;
        let (seg, (end, _)) = (k.value(), v.value());
        known.insert(seg);
        let p = blobs.segment_path(seg);
        if let Ok(m) = fs::metadata(&p)
            && m.len() > end
        {
            OpenOptions::new().write(true).open(&p)?.set_len(end)?;
        }
    }
    for e in fs::read_dir(blobs.root())?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".dat"))
            && let Ok(seg) = n.parse::<u64>()
            && !known.contains(&seg)
        {
            let _ = fs::remove_file(e.path());
        }
    }
    let bt = r.open_table(BLOBS).map_err(db_err)?;
    for e in fs::read_dir(blobs.big_dir())?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match blob_id_from_file_name(&name) {
            Some(id) if bt.get(id).map_err(db_err)?.is_some() => {}
            _ => {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

macro_rules! expect_output {
    ($e:expr, $variant:ident) => {
        match $e {
            Output::$variant(v) => Ok(v),
            _ => Err(StoreError::Backend("unexpected writer output".into())),
        }
    };
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn domain_add(&self, name: &str) -> Result<Domain> {
        expect_output!(self.write(Job::DomainAdd(name.to_string())).await?, Domain)
    }

    async fn domain_delete(&self, name: &str) -> Result<()> {
        self.write(Job::DomainDelete(name.to_string()))
            .await
            .map(|_| ())
    }

    async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        self.get_json(|r| get_bytes(r, DOMAINS, name))
    }

    async fn domain_list(&self) -> Result<Vec<Domain>> {
        self.list_json(DOMAINS)
    }

    async fn account_create(&self, new: NewAccount) -> Result<Account> {
        expect_output!(self.write(Job::AccountCreate(new)).await?, Account)
    }

    async fn account_get(&self, id: AccountId) -> Result<Option<Account>> {
        self.get_json(|r| get_bytes(r, ACCOUNTS, id))
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<Account>> {
        let id = self.read(|r| {
            let t = r.open_table(ACCOUNT_BY_ADDRESS).map_err(db_err)?;
            Ok(t.get(address).map_err(db_err)?.map(|v| v.value()))
        })?;
        match id {
            Some(id) => self.get_json(|r| get_bytes(r, ACCOUNTS, id)),
            None => Ok(None),
        }
    }

    async fn account_list(&self) -> Result<Vec<Account>> {
        self.list_json(ACCOUNTS)
    }

    async fn account_update(&self, id: AccountId, update: AccountUpdate) -> Result<Account> {
        expect_output!(self.write(Job::AccountUpdate(id, update)).await?, Account)
    }

    async fn account_delete(&self, id: AccountId) -> Result<()> {
        self.write(Job::AccountDelete(id)).await.map(|_| ())
    }

    async fn account_usage(&self, id: AccountId) -> Result<Usage> {
        let mut u = Usage::default();
        for mb in self.mailbox_list(id).await? {
            u.bytes += mb.size;
            u.messages += mb.messages as u64;
        }
        Ok(u)
    }

    async fn alias_set(&self, address: &str, targets: Vec<String>) -> Result<Alias> {
        expect_output!(
            self.write(Job::AliasSet(address.to_string(), targets))
                .await?,
            Alias
        )
    }

    async fn alias_set_policy(&self, address: &str, policy: Option<SendPolicy>) -> Result<Alias> {
        expect_output!(
            self.write(Job::AliasPolicy(address.to_string(), policy))
                .await?,
            Alias
        )
    }

    async fn alias_get(&self, address: &str) -> Result<Option<Alias>> {
        self.get_json(|r| get_bytes(r, ALIASES, address))
    }

    async fn alias_list(&self) -> Result<Vec<Alias>> {
        self.list_json(ALIASES)
    }

    async fn alias_delete(&self, address: &str) -> Result<()> {
        self.write(Job::AliasDelete(address.to_string()))
            .await
            .map(|_| ())
    }

    async fn mailbox_list(&self, account: AccountId) -> Result<Vec<Mailbox>> {
        self.read(|r| {
            let names = r.open_table(MAILBOX_BY_NAME).map_err(db_err)?;
            let boxes = r.open_table(MAILBOXES).map_err(db_err)?;
            let mut out = Vec::new();
            for x in names
                .range((account, "")..(account + 1, ""))
                .map_err(db_err)?
            {
                let id = x.map_err(db_err)?.1.value();
                if let Some(v) = boxes.get(id).map_err(db_err)? {
                    out.push(from_json(v.value())?);
                }
            }
            Ok(out)
        })
    }

    async fn mailbox_get(&self, id: MailboxId) -> Result<Option<Mailbox>> {
        self.get_json(|r| get_bytes(r, MAILBOXES, id))
    }

    async fn mailbox_by_name(&self, account: AccountId, name: &str) -> Result<Option<Mailbox>> {
        let name = normalize_mailbox_name(name);
        let id = self.read(|r| {
            let t = r.open_table(MAILBOX_BY_NAME).map_err(db_err)?;
            Ok(t.get((account, name.as_str()))
                .map_err(db_err)?
                .map(|v| v.value()))
        })?;
        match id {
            Some(id) => self.get_json(|r| get_bytes(r, MAILBOXES, id)),
            None => Ok(None),
        }
    }

    async fn mailbox_create(
        &self,
        account: AccountId,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox> {
        expect_output!(
            self.write(Job::MailboxCreate(account, name.to_string(), special_use))
                .await?,
            Mailbox
        )
    }

    async fn mailbox_delete(&self, id: MailboxId) -> Result<()> {
        self.write(Job::MailboxDelete(id)).await.map(|_| ())
    }

    async fn mailbox_rename(&self, id: MailboxId, new_name: &str) -> Result<()> {
        self.write(Job::MailboxRename(id, new_name.to_string()))
            .await
            .map(|_| ())
    }

    async fn mailbox_subscribe(&self, id: MailboxId, subscribed: bool) -> Result<()> {
        self.write(Job::MailboxSubscribe(id, subscribed))
            .await
            .map(|_| ())
    }

    async fn deliver_many(&self, deliveries: Vec<Delivery>) -> Result<Vec<DeliveryReport>> {
        let spools: Vec<Option<PathBuf>> = deliveries
            .iter()
            .map(|d| match &d.blob.data {
                BlobData::File(p) => Some(p.clone()),
                BlobData::Memory(_) => None,
            })
            .collect();
        let r = expect_output!(self.write(Job::DeliverMany(deliveries)).await?, Deliveries);
        if let Ok(reps) = &r {
            for (p, rep) in spools.iter().zip(reps) {
                if let Some(p) = p
                    && rep.blob == 0
                {
                    let _ = fs::remove_file(p);
                }
            }
        }
        r
    }

    async fn sieve_put(&self, account: AccountId, name: &str, source: &str) -> Result<()> {
        self.write(Job::SievePut(account, name.into(), source.into()))
            .await
            .map(|_| ())
    }

    async fn sieve_get(&self, account: AccountId, name: &str) -> Result<Option<String>> {
        self.read(|r| {
            let t = r.open_table(SIEVE).map_err(db_err)?;
            Ok(t.get((account, name))
                .map_err(db_err)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
        })
    }

    async fn sieve_list(&self, account: AccountId) -> Result<Vec<SieveScript>> {
        self.read(|r| {
            let t = r.open_table(SIEVE).map_err(db_err)?;
            let active = r.open_table(SIEVE_ACTIVE).map_err(db_err)?;
            let active = active
                .get(account)
                .map_err(db_err)?
                .map(|v| v.value().to_string());
            let mut out = Vec::new();
            for x in t.range((account, "")..(account + 1, "")).map_err(db_err)? {
                let (k, v) = x.map_err(db_err)?;
                let name = k.value().1.to_string();
                out.push(SieveScript {
                    active: active.as_deref() == Some(name.as_str()),
                    name,
                    size: v.value().len() as u64,
                });
            }
            Ok(out)
        })
    }

    async fn sieve_activate(&self, account: AccountId, name: Option<&str>) -> Result<()> {
        self.write(Job::SieveActivate(account, name.map(str::to_string)))
            .await
            .map(|_| ())
    }

    async fn sieve_active(&self, account: AccountId) -> Result<Option<(String, String)>> {
        if !self
            .shared
            .sieve_accounts
            .lock()
            .unwrap()
            .contains(&account)
        {
            return Ok(None);
        }
        self.read(|r| {
            let active = r.open_table(SIEVE_ACTIVE).map_err(db_err)?;
            let Some(name) = active
                .get(account)
                .map_err(db_err)?
                .map(|v| v.value().to_string())
            else {
                return Ok(None);
            };
            let t = r.open_table(SIEVE).map_err(db_err)?;
            Ok(t.get((account, name.as_str())).map_err(db_err)?.map(|v| {
                (
                    name.clone(),
                    String::from_utf8_lossy(v.value()).into_owned(),
                )
            }))
        })
    }

    async fn sieve_delete(&self, account: AccountId, name: &str) -> Result<()> {
        self.write(Job::SieveDelete(account, name.into()))
            .await
            .map(|_| ())
    }

    async fn sieve_rename(&self, account: AccountId, from: &str, to: &str) -> Result<()> {
        self.write(Job::SieveRename(account, from.into(), to.into()))
            .await
            .map(|_| ())
    }

    async fn token_put(&self, token: ApiToken) -> Result<()> {
        self.write(Job::TokenPut(token)).await.map(|_| ())
    }

    async fn token_list(&self) -> Result<Vec<ApiToken>> {
        self.list_json(TOKENS)
    }

    async fn token_delete(&self, name: &str) -> Result<()> {
        self.write(Job::TokenDelete(name.into())).await.map(|_| ())
    }

    async fn sender_verdict_set(
        &self,
        account: AccountId,
        sender: &str,
        junk: Option<bool>,
    ) -> Result<()> {
        self.write(Job::SenderVerdict(
            account,
            sender.to_ascii_lowercase(),
            junk,
        ))
        .await
        .map(|_| ())
    }

    async fn sender_verdict(&self, account: AccountId, sender: &str) -> Result<Option<bool>> {
        let sender = sender.to_ascii_lowercase();
        self.read(|r| {
            let t = r.open_table(SENDERS).map_err(db_err)?;
            Ok(t.get((account, sender.as_str()))
                .map_err(db_err)?
                .map(|v| v.value() == 1))
        })
    }

    async fn sender_verdict_list(&self, account: AccountId) -> Result<Vec<(String, bool)>> {
        self.read(|r| {
            let t = r.open_table(SENDERS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.range((account, "")..(account + 1, "")).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push((k.value().1.to_string(), v.value() == 1));
            }
            Ok(out)
        })
    }

    async fn seen_mark(
        &self,
        account: AccountId,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        expect_output!(
            self.write(Job::SeenMark {
                account,
                key: key.into(),
                now,
                expires,
            })
            .await?,
            Bool
        )
    }

    async fn deliver(&self, delivery: Delivery) -> Result<DeliveryReport> {
        let spool = match &delivery.blob.data {
            BlobData::File(p) => Some(p.clone()),
            BlobData::Memory(_) => None,
        };
        let r = self.write(Job::Deliver(delivery)).await;
        let r = expect_output!(r?, Delivery);
        if let (Some(p), Ok(rep)) = (&spool, &r)
            && rep.blob == 0
        {
            // Nothing stored it: the spool file is garbage.
            let _ = fs::remove_file(p);
        }
        r
    }

    async fn message_list(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        self.read(|r| {
            let t = r.open_table(MESSAGES).map_err(db_err)?;
            t.range((mailbox, 0u32)..=(mailbox, u32::MAX))
                .map_err(db_err)?
                .map(|x| {
                    let (k, v) = x.map_err(db_err)?;
                    decode_message(k.value().1, v.value())
                })
                .collect()
        })
    }

    async fn message_get(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>> {
        self.read(|r| {
            let t = r.open_table(MESSAGES).map_err(db_err)?;
            match t.get((mailbox, uid)).map_err(db_err)? {
                Some(v) => Ok(Some(decode_message(uid, v.value())?)),
                None => Ok(None),
            }
        })
    }

    async fn message_changes(&self, mailbox: MailboxId, since: ModSeq) -> Result<Changes> {
        self.read(|r| {
            let mb: Mailbox = match r
                .open_table(MAILBOXES)
                .map_err(db_err)?
                .get(mailbox)
                .map_err(db_err)?
            {
                Some(v) => from_json(v.value())?,
                None => return Err(StoreError::NotFound(format!("mailbox {mailbox}"))),
            };
            let ms = r.open_table(MODSEQ).map_err(db_err)?;
            let msgs = r.open_table(MESSAGES).map_err(db_err)?;
            let mut changed = Vec::new();
            for x in ms
                .range((mailbox, since + 1, 0u32)..(mailbox + 1, 0u64, 0u32))
                .map_err(db_err)?
            {
                let (_, _, uid) = x.map_err(db_err)?.0.value();
                if let Some(v) = msgs.get((mailbox, uid)).map_err(db_err)? {
                    changed.push(decode_message(uid, v.value())?);
                }
            }
            changed.sort_by_key(|e| e.uid);
            let ex = r.open_table(EXPUNGED).map_err(db_err)?;
            let mut expunged = Vec::new();
            for x in ex
                .range((mailbox, since + 1, 0u32)..(mailbox + 1, 0u64, 0u32))
                .map_err(db_err)?
            {
                expunged.push(x.map_err(db_err)?.0.value().2);
            }
            expunged.sort_unstable();
            Ok(Changes {
                changed,
                expunged,
                highest_modseq: mb.highest_modseq,
            })
        })
    }

    async fn flags_update(&self, update: FlagsUpdate) -> Result<FlagsResult> {
        expect_output!(self.write(Job::FlagsUpdate(update)).await?, Flags)
    }

    async fn expunge(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<Vec<Uid>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        expect_output!(self.write(Job::Expunge(mailbox, uids)).await?, Uids)
    }

    async fn copy(
        &self,
        from: MailboxId,
        uids: Vec<Uid>,
        to: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(Uid, Uid)>> {
        expect_output!(
            self.write(Job::Copy {
                from,
                uids,
                to,
                remove_source
            })
            .await?,
            Pairs
        )
    }

    async fn blob_info(&self, id: BlobId) -> Result<BlobInfo> {
        let r = self.blob_record(id)?;
        Ok(BlobInfo {
            id,
            size: r.size,
            meta: Arc::new(r.meta),
        })
    }

    async fn blob_read(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (size, loc) = self.blob_location(id, |_| {})?;
        Ok(self.shared.blobs.read(id, loc, size, offset, len)?)
    }

    async fn blob_head(
        &self,
        id: BlobId,
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<u8>> {
        let mut len = None;
        let (size, loc) = self.blob_location(id, |meta| len = head_len(meta))?;
        let n = len.unwrap_or(size).min(size);
        Ok(self.shared.blobs.read(id, loc, size, 0, n)?)
    }

    async fn blob_heads(
        &self,
        ids: &[BlobId],
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        let locs: Vec<Result<(u64, BlobLoc, u64)>> = self.read(|r| {
            let t = r.open_table(BLOBS).map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                out.push(match t.get(id).map_err(db_err)? {
                    Some(v) => decode_blob_loc(v.value())
                        .map(|(size, loc, meta)| (size, loc, head_len(meta).unwrap_or(size))),
                    None => Err(StoreError::NotFound(format!("blob {id}"))),
                });
            }
            Ok(out)
        })?;
        Ok(ids
            .iter()
            .zip(locs)
            .map(|(&id, l)| {
                let (size, loc, n) = l?;
                Ok(self.shared.blobs.read(id, loc, size, 0, n.min(size))?)
            })
            .collect())
    }

    async fn blob_infos(&self, ids: &[BlobId]) -> Result<Vec<Result<BlobInfo>>> {
        self.read(|r| {
            let t = r.open_table(BLOBS).map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                out.push(match t.get(id).map_err(db_err)? {
                    Some(v) => decode_blob_loc(v.value()).map(|(size, _, meta)| BlobInfo {
                        id,
                        size,
                        meta: Arc::new(meta.to_vec()),
                    }),
                    None => Err(StoreError::NotFound(format!("blob {id}"))),
                });
            }
            Ok(out)
        })
    }

    async fn queue_list(&self) -> Result<Vec<QueueEntry>> {
        self.list_json(QUEUE)
    }

    async fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>> {
        self.get_json(|r| get_bytes(r, QUEUE, id))
    }

    async fn queue_update(&self, entry: QueueEntry) -> Result<()> {
        self.write(Job::QueueUpdate(entry)).await.map(|_| ())
    }

    async fn queue_delete(&self, id: QueueId) -> Result<()> {
        self.write(Job::QueueDelete(id)).await.map(|_| ())
    }

    async fn queue_claim(&self, id: QueueId, holder: &str, until: i64) -> Result<bool> {
        if self.queue_get(id).await?.is_none() {
            return Err(StoreError::NotFound(format!("queue entry {id}")));
        }
        let now = now();
        let mut claims = self.claims.lock().unwrap();
        claims.retain(|_, (_, u)| *u > now);
        match claims.get(&id) {
            Some((h, _)) if h != holder => Ok(false),
            _ => {
                if until > now {
                    claims.insert(id, (holder.to_string(), until));
                } else {
                    claims.remove(&id);
                }
                Ok(true)
            }
        }
    }

    async fn trace_append(&self, events: Vec<TraceEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(Job::Trace(events)).await.map(|_| ())
    }

    async fn trace_get(&self, trace_id: &str) -> Result<Vec<TraceEvent>> {
        let mut v: Vec<TraceEvent> = self.read(|r| {
            let t = r.open_table(TRACE).map_err(db_err)?;
            t.range((trace_id, 0u64)..=(trace_id, u64::MAX))
                .map_err(db_err)?
                .map(|x| from_json(x.map_err(db_err)?.1.value()))
                .collect()
        })?;
        v.sort_by_key(|e| e.time);
        Ok(v)
    }

    async fn trace_find(&self, key: &str, since: i64, limit: usize) -> Result<Vec<String>> {
        self.read(|r| {
            let t = r.open_table(TRACE_KEYS).map_err(db_err)?;
            let mut out: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for x in t
                .range((key, since, "")..=(key, i64::MAX, "\u{10ffff}"))
                .map_err(db_err)?
                .rev()
            {
                let id = x.map_err(db_err)?.0.value().2.to_string();
                if seen.insert(id.clone()) {
                    out.push(id);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn trace_recent(&self, since: i64, limit: usize) -> Result<Vec<String>> {
        self.read(|r| {
            let t = r.open_table(TRACE_TIME).map_err(db_err)?;
            let mut out: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for x in t.range((since, "", 0u64)..).map_err(db_err)?.rev() {
                let id = x.map_err(db_err)?.0.value().1.to_string();
                if seen.insert(id.clone()) {
                    out.push(id);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn trace_prune(&self, before: i64) -> Result<u64> {
        expect_output!(self.write(Job::TracePrune(before)).await?, Count)
    }

    async fn counter_update(&self, key: &str, step: CounterStep<'_>) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let now = now_ms();
        let mut counters = self.counters.lock().unwrap();
        let family = counters
            .entry(key.split(':').next().unwrap_or(key).to_string())
            .or_default();
        let current = family.map.get(key).filter(|c| c.expires > now).cloned();
        let next = step(current).filter(|c| c.expires > now);
        match &next {
            Some(c) => {
                if !family.map.contains_key(key) && family.map.len() >= MAX_COUNTERS {
                    family.make_room(key, now)?;
                }
                family.map.insert(key.to_string(), c.clone());
            }
            None => {
                family.map.remove(key);
            }
        }
        Ok(next)
    }

    async fn counter_get(&self, key: &str) -> Result<Option<Counter>> {
        let key = &*counter_key(key);
        let now = now_ms();
        let counters = self.counters.lock().unwrap();
        Ok(counters
            .get(key.split(':').next().unwrap_or(key))
            .and_then(|f| f.map.get(key))
            .filter(|c| c.expires > now)
            .cloned())
    }

    async fn web_session_put(&self, session: WebSession, limit: Option<usize>) -> Result<()> {
        let now = now_ms();
        let mut map = self.web_sessions.lock().unwrap();
        if limit.is_none() {
            if let Some(s) = map.get_mut(&session.id) {
                *s = session;
            }
            return Ok(());
        }
        map.insert(session.id.clone(), session);
        if let Some(limit) = limit
            && map.len() > limit.max(1)
        {
            map.retain(|_, s| s.expires > now);
            if map.len() > limit.max(1) {
                let mut by_use: Vec<(i64, String)> =
                    map.values().map(|s| (s.used, s.id.clone())).collect();
                by_use.sort();
                for (_, id) in by_use.iter().take(map.len() - limit.max(1)) {
                    map.remove(id);
                }
            }
        }
        Ok(())
    }

    async fn web_session_get(&self, id: &str) -> Result<Option<WebSession>> {
        let now = now_ms();
        Ok(self
            .web_sessions
            .lock()
            .unwrap()
            .get(id)
            .filter(|s| s.expires > now)
            .cloned())
    }

    async fn web_session_delete(&self, id: &str) -> Result<()> {
        self.web_sessions.lock().unwrap().remove(id);
        Ok(())
    }

    async fn web_session_list(&self, address: &str) -> Result<Vec<WebSession>> {
        let now = now_ms();
        Ok(self
            .web_sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.address == address && s.expires > now)
            .cloned()
            .collect())
    }

    async fn lock_maildrop(&self, account: AccountId) -> Result<Option<MaildropLock>> {
        let set = self.maildrops.clone();
        if !set.lock().unwrap().insert(account) {
            return Ok(None);
        }
        Ok(Some(MaildropLock::new(move || {
            set.lock().unwrap().remove(&account);
        })))
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.shared.events.subscribe()
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    async fn close(&self) -> Result<()> {
        drop(self.tx.lock().unwrap().take());
        let handle = self.writer.lock().unwrap().take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))?
                .map_err(|_| StoreError::Backend("storage writer panicked".into()))?;
        }
        Ok(())
    }
}
