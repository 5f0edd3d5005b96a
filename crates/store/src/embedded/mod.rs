//! The embedded backend: redb for records, segment files for message bytes, one writer
//! thread for group commit. Needs no other process.
//!
//! Each concern's module answers reads from redb and hands changes to the writer, whose own
//! modules (`writer/`) apply them.

macro_rules! expect_output {
    ($e:expr, $variant:ident) => {
        match $e {
            Output::$variant(v) => Ok(v),
            _ => Err(StoreError::Backend("unexpected writer output".into())),
        }
    };
}

pub mod backup;
mod blobs;
mod dav;
mod directory;
mod mail;
mod metadata;
mod queue;
mod reports;
mod sessions;
mod share;
mod sieve;
mod stats;
mod tables;
mod trace;
mod upgrade;
mod writer;

pub use tables::SCHEMA as STORE_FORMAT;
pub use upgrade::{PRE_UPGRADE_DIR, format_version, set_format_version};

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use crate::rules::normalize_mailbox_name;
use crate::*;
use blobs::BlobFiles;
use sessions::CounterFamily;
use tables::*;
use writer::{Job, Output, Request};

pub struct Options {
    pub max_batch: usize,
    /// Memory for the database's page cache (the OS page cache comes on top).
    pub cache_size: usize,
    /// Records in memory only, gone when the store closes (message bytes still go to the
    /// directory): for fuzzing and tests that want no disk.
    pub in_memory: bool,
    /// Free disk space kept: writes that add data are refused (`DiskFull`) below it, so the
    /// database never meets a full disk mid-commit (after which it must be reopened).
    pub min_free: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 512,
            cache_size: 64 << 20,
            in_memory: false,
            min_free: 0,
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
    /// The data directory, and the free space kept on its disk.
    pub dir: PathBuf,
    pub min_free: u64,
    /// Backups running, and the files freed meanwhile.
    pub pins: backup::PinsLock,
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
    inner: Box<dyn redb::StorageBackend>,
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
    /// Opens (creating if needed) the store in `dir`. Only one process may have it open. A
    /// store of an older format is copied into `pre-upgrade/`, then upgraded; a newer one is
    /// refused.
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
        let open_db = || -> Result<Database> {
            let inner: Box<dyn redb::StorageBackend> = if opts.in_memory {
                Box::new(redb::backends::InMemoryBackend::new())
            } else {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join("store.redb"))?;
                Box::new(redb::backends::FileBackend::new(file).map_err(db_err)?)
            };
            let backend = CountingBackend {
                inner,
                fsyncs: fsyncs.clone(),
            };
            Database::builder()
                .set_cache_size(opts.cache_size)
                .create_with_backend(backend)
                .map_err(db_err)
        };
        let mut db = open_db()?;
        let mut upgrade_from = None;
        match upgrade::stored_version(&db)? {
            Some(v) if v > SCHEMA => return Err(upgrade::newer_format(v)),
            Some(v) if v < SCHEMA => {
                // Closed first: only a closed database's file is a consistent copy.
                db.close().map_err(db_err)?;
                let copy = upgrade::safety_copy(dir, v)?;
                tracing::info!(
                    copy = %copy.display(),
                    from = v,
                    to = SCHEMA,
                    "upgrading the store's format; the copy taken before is the way back"
                );
                upgrade_from = Some(v);
                db = open_db()?;
            }
            _ => {}
        }
        let db = Arc::new(db);
        init_tables(&db)?;
        if let Some(v) = upgrade_from {
            tracing::info!(from = v, to = SCHEMA, "the store's format is upgraded");
        }
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
            dir: dir.to_path_buf(),
            min_free: opts.min_free,
            pins: Default::default(),
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
            Some(v) if v > SCHEMA => return Err(upgrade::newer_format(v)),
            Some(v) if v < SCHEMA => {
                upgrade::migrate(&w, v)?;
                meta.insert(SCHEMA_VERSION, SCHEMA).map_err(db_err)?;
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
        w.open_table(KEPT).map_err(db_err)?;
        w.open_table(KEPT_BY_TIME).map_err(db_err)?;
        w.open_table(SUBSCRIPTIONS).map_err(db_err)?;
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
        w.open_table(REPORT_TALLY).map_err(db_err)?;
        w.open_table(REPORTS).map_err(db_err)?;
        w.open_table(REPORT_KEYS).map_err(db_err)?;
        w.open_table(STATS).map_err(db_err)?;
        w.open_table(ACL).map_err(db_err)?;
        w.open_table(ACL_BY_IDENTIFIER).map_err(db_err)?;
        w.open_table(SEEN_PRIVATE).map_err(db_err)?;
        w.open_table(SEEN_PRIVATE_READERS).map_err(db_err)?;
        w.open_table(SEND_AS).map_err(db_err)?;
        w.open_table(SEND_AS_BY_DELEGATE).map_err(db_err)?;
        w.open_table(METADATA).map_err(db_err)?;
        w.open_table(METADATA_BY_MAILBOX).map_err(db_err)?;
        w.open_table(DAV_COLLECTIONS).map_err(db_err)?;
        w.open_table(DAV_COLLECTION_BY_NAME).map_err(db_err)?;
        w.open_table(DAV_RESOURCES).map_err(db_err)?;
        w.open_table(DAV_CONTENT).map_err(db_err)?;
        w.open_table(DAV_UIDS).map_err(db_err)?;
        w.open_table(DAV_REMOVED).map_err(db_err)?;
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

#[async_trait]
impl BackupStore for EmbeddedStore {
    async fn backup_support(&self) -> Result<BackupSupport> {
        Ok(BackupSupport::Snapshot)
    }

    async fn backup(
        &self,
        dir: &Path,
        incremental: bool,
        progress: SharedProgress,
    ) -> Result<crate::backup::Manifest> {
        let (db, shared, dir) = (self.db.clone(), self.shared.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            backup::snapshot(&db, &shared, &dir, incremental, &*progress)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
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
