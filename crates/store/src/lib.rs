//! The storage interface every part of Postern uses, and its two backends: embedded (redb and
//! segment files, one process) and PostgreSQL (any number of nodes).
//!
//! Protocol code sees only [`Store`] (held as a [`SharedStore`]), one trait per concern:
//! [`DirectoryStore`], [`MailStore`], [`QueueStore`], [`TraceStore`], [`SieveStore`],
//! [`SessionStore`], [`ReportStore`], [`StatsStore`], [`ShareStore`], [`MetadataStore`],
//! [`DavStore`] and [`BackupStore`]. Messages are immutable blobs shared by every mailbox holding them, plus
//! per-mailbox metadata. A write is durable when its future resolves. What a change does
//! (counters, modseqs, quotas) is decided in one place for both backends: `rules`.

pub mod backup;
mod dav;
pub mod embedded;
mod metadata;
pub mod postgres;
mod progress;
mod rules;
mod share;
mod types;

use async_trait::async_trait;
use std::sync::Arc;

pub use dav::*;
pub use metadata::*;
pub use progress::{NoProgress, Progress, SharedProgress};
pub use share::*;
pub use types::*;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("quota exceeded")]
    QuotaExceeded,
    #[error("storage is full")]
    DiskFull,
    #[error("data directory {dir} is in use by another postern process{pid}")]
    Locked { dir: String, pid: String },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage error: {0}")]
    Backend(String),
    #[error("storage is shutting down")]
    Closed,
    #[error(
        "this data directory was written by a newer Postern (store format {found}; this version reads up to {known}): run that newer version, or restore a backup taken with this one"
    )]
    NewerStore { found: u64, known: u64 },
    #[error(
        "this database was written by a newer Postern (schema version {found}; this version reads up to {known}): run that newer version, or restore the dump taken before the upgrade"
    )]
    NewerDatabase { found: u64, known: u64 },
    #[error(
        "cannot make the safety copy {path} before upgrading the store from format {from} to {to}: {why}; the store was left unchanged (format {from}): start again once that is fixed"
    )]
    UpgradeCopy {
        from: u64,
        to: u64,
        path: String,
        why: String,
    },
}

impl StoreError {
    /// A temporary condition: the same request may succeed later.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull
                | StoreError::Io(_)
                | StoreError::Backend(_)
                | StoreError::Closed
                | StoreError::QuotaExceeded
        )
    }
}

/// SHA-256 in hex: what is kept instead of a secret (an API or session token) or of a key too
/// long to index.
pub fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) // ENOSPC, EDQUOT
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
}

impl StoreError {
    pub fn from_io(e: std::io::Error) -> StoreError {
        if is_disk_full(&e) {
            StoreError::DiskFull
        } else {
            StoreError::Io(e)
        }
    }
}

/// Everything Postern keeps: one trait per concern, and [`Store`] over all of them. A backend
/// implements each; protocol code holds a [`SharedStore`].
#[async_trait]
pub trait Store:
    DirectoryStore
    + MailStore
    + QueueStore
    + TraceStore
    + SieveStore
    + SessionStore
    + ReportStore
    + StatsStore
    + ShareStore
    + MetadataStore
    + DavStore
    + BackupStore
{
    /// Changes committed from now on, from any session.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreEvent>;
    fn stats(&self) -> StoreStats;
    /// Finishes pending writes and stops accepting new ones.
    async fn close(&self) -> Result<()>;
}

/// Who may use the server: domains, accounts, aliases and API tokens.
#[async_trait]
pub trait DirectoryStore: Send + Sync + 'static {
    // Domains.
    async fn domain_add(&self, name: &str) -> Result<Domain>;
    /// Fails while accounts or aliases of the domain exist.
    async fn domain_delete(&self, name: &str) -> Result<()>;
    async fn domain_get(&self, name: &str) -> Result<Option<Domain>>;
    async fn domain_list(&self) -> Result<Vec<Domain>>;

    // Accounts. Creating one also creates its standard mailboxes.
    async fn account_create(&self, new: NewAccount) -> Result<Account>;
    async fn account_get(&self, id: AccountId) -> Result<Option<Account>>;
    async fn account_by_address(&self, address: &str) -> Result<Option<Account>>;
    async fn account_list(&self) -> Result<Vec<Account>>;
    async fn account_update(&self, id: AccountId, update: AccountUpdate) -> Result<Account>;
    /// Deletes the account with all its mailboxes and messages.
    async fn account_delete(&self, id: AccountId) -> Result<()>;
    async fn account_usage(&self, id: AccountId) -> Result<Usage>;

    // Aliases: one address, many targets.
    async fn alias_set(&self, address: &str, targets: Vec<String>) -> Result<Alias>;
    /// Makes the alias a group with this sending policy (`None`: a plain alias again).
    async fn alias_set_policy(&self, address: &str, policy: Option<SendPolicy>) -> Result<Alias>;
    async fn alias_get(&self, address: &str) -> Result<Option<Alias>>;
    async fn alias_list(&self) -> Result<Vec<Alias>>;
    async fn alias_delete(&self, address: &str) -> Result<()>;

    // API tokens (`postern token create`): only a hash of each is kept.
    async fn token_put(&self, token: ApiToken) -> Result<()>;
    async fn token_list(&self) -> Result<Vec<ApiToken>>;
    async fn token_delete(&self, name: &str) -> Result<()>;
}

/// Mailboxes and the messages in them: delivery, flags, expunge, copy, the message bytes, and
/// the POP3 maildrop lock.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    // Mailboxes (folders).
    async fn mailbox_list(&self, account: AccountId) -> Result<Vec<Mailbox>>;
    async fn mailbox_get(&self, id: MailboxId) -> Result<Option<Mailbox>>;
    async fn mailbox_by_name(&self, account: AccountId, name: &str) -> Result<Option<Mailbox>>;
    async fn mailbox_create(
        &self,
        account: AccountId,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox>;
    async fn mailbox_delete(&self, id: MailboxId) -> Result<()>;
    /// Renames the mailbox and every mailbox below it (`old/child` → `new/child`); their
    /// subscriptions follow.
    async fn mailbox_rename(&self, id: MailboxId, new_name: &str) -> Result<()>;

    // Subscriptions (RFC 9051 6.3.9): names, kept whether or not a mailbox has them. A new
    // account's mailboxes and those delivery creates are subscribed; others only when asked.
    /// The account's subscribed names, sorted.
    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>>;
    /// Subscribes the name (`false`: unsubscribes it); "inbox" names INBOX.
    async fn subscription_set(
        &self,
        account: AccountId,
        name: &str,
        subscribed: bool,
    ) -> Result<()>;

    // Messages.
    /// Stores one message once, for every target mailbox and/or the outbound queue, atomically.
    async fn deliver(&self, delivery: Delivery) -> Result<DeliveryReport>;
    /// Several deliveries in one atomic commit (a message, its filtered copies, a vacation
    /// reply): all are durable, or none.
    async fn deliver_many(&self, deliveries: Vec<Delivery>) -> Result<Vec<DeliveryReport>>;
    /// Every message of a mailbox in UID order.
    async fn message_list(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>>;
    async fn message_get(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>>;
    /// Messages whose modseq is above `since`, and UIDs expunged after it.
    async fn message_changes(&self, mailbox: MailboxId, since: ModSeq) -> Result<Changes>;
    /// Messages of `uids` expunged from the mailbox and still kept, with their bytes: a session
    /// not yet told of the expunge may still fetch them (RFC 2180 4.1.2). Ascending UIDs.
    async fn expunged_get(&self, mailbox: MailboxId, uids: &[Uid]) -> Result<Vec<MessageEntry>>;
    /// Lets go of messages expunged before `before` (seconds); their bytes go with their last
    /// reference. Returns how many.
    async fn expunged_purge(&self, before: i64) -> Result<u64>;
    async fn flags_update(&self, update: FlagsUpdate) -> Result<FlagsResult>;
    /// Removes messages; returns the UIDs that were there. They are kept (`expunged_get`)
    /// until `expunged_purge`.
    async fn expunge(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<Vec<Uid>>;
    /// Copies (or moves) messages; returns (source uid, new uid) pairs.
    async fn copy(
        &self,
        from: MailboxId,
        uids: Vec<Uid>,
        to: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(Uid, Uid)>>;

    // Blobs: the immutable message bytes.
    async fn blob_info(&self, id: BlobId) -> Result<BlobInfo>;
    async fn blob_read(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// The start of a blob, as long as `head_len` reads from its metadata (all of it when that
    /// says None): a header fetch in one lookup.
    async fn blob_head(
        &self,
        id: BlobId,
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<u8>>;
    /// `blob_head` for many blobs in one lookup (IMAP FETCH of a whole mailbox).
    async fn blob_heads(
        &self,
        ids: &[BlobId],
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<Result<BlobBytes>>>;
    /// `blob_info` for many blobs in one lookup.
    async fn blob_infos(&self, ids: &[BlobId]) -> Result<Vec<Result<BlobInfo>>>;

    /// One POP3 session per maildrop: `None` while another holds it (on any node).
    async fn lock_maildrop(&self, account: AccountId) -> Result<Option<MaildropLock>>;
}

/// The outbound queue, and the claims that let several nodes share it.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    async fn queue_list(&self) -> Result<Vec<QueueEntry>>;
    async fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>>;
    /// Saves the entry, keeping outcomes already recorded
    /// ([`QueueEntry::keeping_outcomes_of`]).
    async fn queue_update(&self, entry: QueueEntry) -> Result<()>;
    /// Removes the entry and releases its blob.
    async fn queue_delete(&self, id: QueueId) -> Result<()>;
    /// Takes the entry for one delivery attempt until `until` (seconds), unless another
    /// holder's claim is still running; `false` then. Several nodes on one database so deliver
    /// each message once; a node that dies loses its claims when they run out. An `until` in
    /// the past releases the holder's claim.
    async fn queue_claim(&self, id: QueueId, holder: &str, until: i64) -> Result<bool>;
}

/// Message trace: what happened to each message, for `postern trace`.
#[async_trait]
pub trait TraceStore: Send + Sync + 'static {
    /// Records events durably (batched with other writes).
    async fn trace_append(&self, events: Vec<TraceEvent>) -> Result<()>;
    /// Every event of one message, oldest first.
    async fn trace_get(&self, trace_id: &str) -> Result<Vec<TraceEvent>>;
    /// Messages with a search key ("from:a@b", "to:c@d", "mid:<id>") since a time (ms), newest
    /// first, at most `limit`.
    async fn trace_find(&self, key: &str, since: i64, limit: usize) -> Result<Vec<String>>;
    /// Messages with events since a time (ms), newest first, at most `limit`.
    async fn trace_recent(&self, since: i64, limit: usize) -> Result<Vec<String>>;
    /// Forgets events older than `before` (ms); returns how many. Sieve's seen marks that
    /// expired by then go too (one sweep for both).
    async fn trace_prune(&self, before: i64) -> Result<u64>;
}

/// What filters an account's mail: Sieve scripts (RFC 5228, managed per RFC 5804; at most one
/// active per account), the marks of vacation and `duplicate`, and the senders its owner
/// taught about.
#[async_trait]
pub trait SieveStore: Send + Sync + 'static {
    /// Creates or replaces a script; its activity is unchanged.
    async fn sieve_put(&self, account: AccountId, name: &str, source: &str) -> Result<()>;
    async fn sieve_get(&self, account: AccountId, name: &str) -> Result<Option<String>>;
    /// Every script of the account, by name.
    async fn sieve_list(&self, account: AccountId) -> Result<Vec<SieveScript>>;
    /// Makes this script the active one (`None`: no script runs).
    async fn sieve_activate(&self, account: AccountId, name: Option<&str>) -> Result<()>;
    /// The active script's name and source.
    async fn sieve_active(&self, account: AccountId) -> Result<Option<(String, String)>>;
    /// Fails with `Invalid` for the active script.
    async fn sieve_delete(&self, account: AccountId, name: &str) -> Result<()>;
    async fn sieve_rename(&self, account: AccountId, from: &str, to: &str) -> Result<()>;
    /// Whether `key` was marked for the account and has not expired (times in seconds); marks
    /// it until `expires` when not. One atomic step: vacation's `:days` and `duplicate`.
    async fn seen_mark(
        &self,
        account: AccountId,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool>;

    /// What the account's owner taught about a sender by moving its mail into or out of Junk:
    /// `Some(true)` junk, `Some(false)` trusted, `None` forgets it.
    async fn sender_verdict_set(
        &self,
        account: AccountId,
        sender: &str,
        junk: Option<bool>,
    ) -> Result<()>;
    async fn sender_verdict(&self, account: AccountId, sender: &str) -> Result<Option<bool>>;
    /// Every sender the account's owner taught about, with the verdict, by sender.
    async fn sender_verdict_list(&self, account: AccountId) -> Result<Vec<(String, bool)>>;
}

/// Short-lived state every node on one database shares: the counters behind rate limits and
/// bans, and web sessions.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// One atomic read-modify-write of the counter under `key`; returns what was kept.
    async fn counter_update(&self, key: &str, step: CounterStep<'_>) -> Result<Option<Counter>>;
    /// The counter under `key`, unless absent or expired.
    async fn counter_get(&self, key: &str) -> Result<Option<Counter>>;

    /// With `limit`, stores a new session and forgets the least recently used beyond the limit.
    /// Without, changes the session with its id if it is still there (a touch never brings
    /// back a session ended meanwhile).
    async fn web_session_put(&self, session: WebSession, limit: Option<usize>) -> Result<()>;
    /// The session, unless absent or expired.
    async fn web_session_get(&self, id: &str) -> Result<Option<WebSession>>;
    async fn web_session_delete(&self, id: &str) -> Result<()>;
    /// The live sessions of one account.
    async fn web_session_list(&self, address: &str) -> Result<Vec<WebSession>>;
}

/// DMARC aggregate and TLS reports: the counts behind the ones we send, and the ones other
/// organizations send us.
#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
    /// Adds to the counts, all in one atomic write.
    async fn report_tally(&self, tallies: Vec<ReportTally>) -> Result<()>;
    /// The (domain, day) pairs with counts not yet sent, of one kind.
    async fn report_pending(&self, kind: ReportKind) -> Result<Vec<(String, i64)>>;
    /// Takes the counts of one domain and day, atomically: a second taker (another node)
    /// gets none of them.
    async fn report_take(
        &self,
        kind: ReportKind,
        domain: &str,
        day: i64,
    ) -> Result<Vec<ReportTally>>;
    /// Keeps a received report; `false` when the same one ([`ReceivedReport::key`]) is kept
    /// already.
    async fn report_put(&self, report: ReceivedReport) -> Result<bool>;
    /// Received reports of one domain (or all), received at or after `since` (Unix seconds),
    /// newest first.
    async fn report_list(&self, domain: Option<&str>, since: i64) -> Result<Vec<ReceivedReport>>;
    /// Forgets received reports received before `before` (Unix seconds); returns how many.
    async fn report_prune(&self, before: i64) -> Result<u64>;
}

/// The dashboard's series over time: numbers added up (or the largest kept) per hour for
/// [`STATS_HOURS_KEPT`] and per day for [`STATS_DAYS_KEPT`]; every node adds to the same ones.
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Adds each point to its hour's bucket and to its day's, all in one atomic write: a
    /// [`StatKind::Sum`] point adds its value, a [`StatKind::Max`] point keeps the larger.
    async fn stats_add(&self, points: Vec<StatPoint>) -> Result<()>;
    /// The buckets of one step with `from <= start < to`, by series then start.
    async fn stats_range(&self, step: StatStep, from: i64, to: i64) -> Result<Vec<StatBucket>>;
    /// Forgets hour buckets older than [`STATS_HOURS_KEPT`] hours before `now` and day buckets
    /// older than [`STATS_DAYS_KEPT`] days; returns how many.
    async fn stats_prune(&self, now: i64) -> Result<u64>;
}

/// Sharing: who else may use a mailbox (RFC 4314 access lists), each reader's own \Seen in a
/// mailbox shared with them, and who may send for another address.
#[async_trait]
pub trait ShareStore: Send + Sync + 'static {
    /// The mailbox's access list (without its owner, who has every right), by identifier.
    async fn acl_get(&self, mailbox: MailboxId) -> Result<Vec<AclEntry>>;
    /// Gives `identifier` these rights on the mailbox, replacing what it had; `None` or no
    /// rights take its line away. Sends [`StoreEvent::Acl`]. `NotFound` for no such mailbox.
    async fn acl_set(
        &self,
        mailbox: MailboxId,
        identifier: &str,
        rights: Option<Rights>,
    ) -> Result<()>;
    /// Every mailbox with a line for one of `identifiers`, with that line; a mailbox with lines
    /// for several comes once per line. By mailbox id, then identifier.
    async fn acl_granted(&self, identifiers: &[String]) -> Result<Vec<(Mailbox, AclEntry)>>;
    /// The UIDs `reader` has seen in a mailbox of another account: there \Seen is each reader's
    /// own ([`FlagsUpdate::reader`]). Ascending.
    async fn seen_private(&self, mailbox: MailboxId, reader: AccountId) -> Result<Vec<Uid>>;

    /// Lets `delegate` send for `address` (`None`: no longer).
    async fn send_as_set(&self, address: &str, delegate: &str, mode: Option<SendAs>) -> Result<()>;
    /// Every grant, by address then delegate.
    async fn send_as_list(&self) -> Result<Vec<SendAsGrant>>;
    /// The grants of one delegate, by address.
    async fn send_as_of(&self, delegate: &str) -> Result<Vec<SendAsGrant>>;
}

/// IMAP METADATA (RFC 5464): named values on a mailbox (`Some`) or on the server (`None`), as
/// an account sees them: its own `/private` entries, and a mailbox's `/shared` ones, which its
/// owner keeps whoever sets them ([`metadata_keeper`]; on the server, `/shared` entries are
/// the account's own too). Names are kept lower case ([`metadata_name`]). A mailbox's entries
/// follow it through renames (they name it by id) and go when it goes, whoever kept them; an
/// account's go with the account. Limits count against the account that keeps an entry.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// The entries named `entry` (or all `/private` or `/shared` ones: [`metadata_prefix`]) or
    /// below it, at most `depth` levels below (`None`: any), by name.
    async fn metadata_get(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        depth: Option<u32>,
    ) -> Result<Vec<MetadataEntry>>;
    /// Sets each entry (`None` removes it), all in one atomic step checked against `limits`:
    /// `Ok(Err(_))` names the limit that refused them, and nothing changed. `NotFound` for an
    /// account or mailbox not there, `Invalid` for a bad name.
    async fn metadata_set(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        changes: MetadataChanges,
        limits: MetadataLimits,
    ) -> Result<Result<(), MetadataRefused>>;
}

pub type SharedStore = Arc<dyn Store>;

/// How the store is backed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSupport {
    /// By [`BackupStore::backup`], while the store is in use.
    Snapshot,
    /// By the database's own tools; whether it archives its write-ahead log, and what it said.
    Database { wal_archiving: bool, detail: String },
}

/// Backups of the whole store.
#[async_trait]
pub trait BackupStore: Send + Sync + 'static {
    async fn backup_support(&self) -> Result<BackupSupport>;
    /// A consistent copy of everything, taken while the store is in use, into a new directory
    /// under `dir`; incremental: only the message bytes added since the newest backup of this
    /// store in `dir`. Verified before it returns. A backend backed up by other means refuses,
    /// saying how.
    async fn backup(
        &self,
        dir: &std::path::Path,
        incremental: bool,
        progress: SharedProgress,
    ) -> Result<backup::Manifest>;
}
