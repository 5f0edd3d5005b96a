//! The records the store keeps and hands out: the same for every backend and every caller.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

pub type AccountId = u64;
pub type MailboxId = u64;
pub type BlobId = u64;
pub type QueueId = u64;
pub type Uid = u32;
pub type ModSeq = u64;

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Domain {
    pub name: String,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub id: AccountId,
    /// Lower-case `local@domain`.
    pub address: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    /// 0 = unlimited.
    pub quota_bytes: u64,
    /// 0 = unlimited.
    #[serde(default)]
    pub quota_messages: u64,
    #[serde(default)]
    pub disabled: bool,
    pub created: i64,
    /// Mail to the account goes on to this address.
    #[serde(default)]
    pub forward: Option<Forward>,
    /// A shared mailbox (info@, support@): no one logs in as it; its members reach its
    /// folders through their access lists.
    #[serde(default)]
    pub shared: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Forward {
    pub to: String,
    /// Also deliver to the account's own INBOX.
    pub keep_copy: bool,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub address: String,
    pub password_hash: String,
    pub quota_bytes: u64,
    pub quota_messages: u64,
    /// [`Account::shared`]; its password hash is then empty.
    pub shared: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    pub password_hash: Option<String>,
    pub quota_bytes: Option<u64>,
    pub quota_messages: Option<u64>,
    pub disabled: Option<bool>,
    /// `Some(None)` clears forwarding.
    pub forward: Option<Option<Forward>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alias {
    /// Lower-case `local@domain`.
    pub address: String,
    pub targets: Vec<String>,
    pub created: i64,
    /// Set for groups (distribution lists): who may send to it.
    #[serde(default)]
    pub policy: Option<SendPolicy>,
}

/// Who may send to a group (distribution list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum SendPolicy {
    Anyone,
    /// Its members (the addresses it lists, and the accounts behind them).
    Members,
    /// Only these addresses.
    Senders(Vec<String>),
    /// Users of the group's domain, logged in.
    Domain,
}

/// RFC 6154 roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialUse {
    Drafts,
    Sent,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }

    /// The mailboxes every new account gets.
    pub const DEFAULTS: [(&'static str, SpecialUse); 5] = [
        ("Drafts", SpecialUse::Drafts),
        ("Sent", SpecialUse::Sent),
        ("Trash", SpecialUse::Trash),
        ("Junk", SpecialUse::Junk),
        ("Archive", SpecialUse::Archive),
    ];
}

pub const INBOX: &str = "INBOX";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mailbox {
    pub id: MailboxId,
    pub account: AccountId,
    /// Hierarchy separator is '/'; "INBOX" is always spelled so.
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: ModSeq,
    pub special_use: Option<SpecialUse>,
    pub messages: u32,
    pub unseen: u32,
    pub size: u64,
}

/// IMAP system flags as bits, plus keywords.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub bits: u8,
    pub keywords: Vec<String>,
}

impl Flags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    pub const SYSTEM: [(u8, &'static str); 5] = [
        (Flags::SEEN, "\\Seen"),
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::DRAFT, "\\Draft"),
    ];

    pub fn seen(&self) -> bool {
        self.bits & Flags::SEEN != 0
    }

    pub fn deleted(&self) -> bool {
        self.bits & Flags::DELETED != 0
    }

    pub fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    pub fn has_keyword(&self, k: &str) -> bool {
        self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k))
    }

    pub fn apply(&self, op: FlagOp, other: &Flags) -> Flags {
        match op {
            FlagOp::Replace => other.clone(),
            FlagOp::Add => {
                let mut f = self.clone();
                f.bits |= other.bits;
                for k in &other.keywords {
                    if !f.has_keyword(k) {
                        f.keywords.push(k.clone());
                    }
                }
                f
            }
            FlagOp::Remove => {
                let mut f = self.clone();
                f.bits &= !other.bits;
                f.keywords.retain(|k| !other.has_keyword(k));
                f
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageEntry {
    pub uid: Uid,
    pub blob: BlobId,
    pub size: u64,
    /// Seconds since the epoch.
    pub internal_date: i64,
    pub flags: Flags,
    pub modseq: ModSeq,
    /// When it was saved into this mailbox (delivery, APPEND, COPY or MOVE), in seconds since
    /// the epoch (RFC 8514); `None` for an entry stored before save dates were kept.
    pub saved: Option<i64>,
}

impl MessageEntry {
    /// The save date, or the internal date where none was kept (RFC 8514 4.3 searches by the
    /// internal date where the save date is unknown).
    pub fn save_date(&self) -> i64 {
        self.saved.unwrap_or(self.internal_date)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub changed: Vec<MessageEntry>,
    pub expunged: Vec<Uid>,
    pub highest_modseq: ModSeq,
}

#[derive(Debug, Clone)]
pub struct FlagsUpdate {
    pub mailbox: MailboxId,
    pub uids: Vec<Uid>,
    pub op: FlagOp,
    pub flags: Flags,
    /// CONDSTORE UNCHANGEDSINCE: messages modified after this are left alone.
    pub unchanged_since: Option<ModSeq>,
    /// Set when someone other than the mailbox's owner changes flags: \Seen is then that
    /// reader's own ([`ShareStore::seen_private`](crate::ShareStore::seen_private)), the other
    /// flags everyone's. The answer gives the flags as the reader sees them; a message whose
    /// flags change for the reader gets a new modseq.
    pub reader: Option<AccountId>,
}

#[derive(Debug, Clone, Default)]
pub struct FlagsResult {
    /// (uid, new flags, new modseq) of every message whose flags changed.
    pub updated: Vec<(Uid, Flags, ModSeq)>,
    /// UIDs refused because of UNCHANGEDSINCE.
    pub modified: Vec<Uid>,
}

/// Bytes read from a stored message: owned, or a view of a mapped segment file (a FETCH of a
/// large mailbox reads thousands of headers without copying them).
#[derive(Clone)]
pub struct BlobBytes {
    data: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    end: usize,
}

impl BlobBytes {
    pub fn owned(v: Vec<u8>) -> BlobBytes {
        let end = v.len();
        BlobBytes {
            data: Arc::new(v),
            start: 0,
            end,
        }
    }

    /// `range` of `data`, which must hold it.
    pub fn view(
        data: Arc<dyn AsRef<[u8]> + Send + Sync>,
        range: std::ops::Range<usize>,
    ) -> BlobBytes {
        let len = (*data).as_ref().len();
        BlobBytes {
            data,
            start: range.start.min(len),
            end: range.end.min(len),
        }
    }
}

impl std::ops::Deref for BlobBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.data).as_ref()[self.start..self.end]
    }
}

impl std::fmt::Debug for BlobBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobBytes({} bytes)", self.end - self.start)
    }
}

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub id: BlobId,
    pub size: u64,
    /// Parsed structure cached at ingest (owned by the message crate).
    pub meta: Arc<Vec<u8>>,
}

/// Message bytes for a new blob.
#[derive(Debug)]
pub enum BlobData {
    Memory(Vec<u8>),
    /// A spool file the caller wrote and fsynced; the store takes it over (renames it).
    /// It must be on the same file system as the data directory.
    File(PathBuf),
}

#[derive(Debug)]
pub struct NewBlob {
    pub data: BlobData,
    pub size: u64,
    pub meta: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum MailboxTarget {
    Id(MailboxId),
    /// By name; INBOX when it does not exist (unless `create`).
    Name {
        name: String,
        create: bool,
    },
}

#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub account: AccountId,
    pub mailbox: MailboxTarget,
    pub flags: Flags,
    /// Refuse (per target) when the account is over quota.
    pub enforce_quota: bool,
}

#[derive(Debug)]
pub struct Delivery {
    pub blob: NewBlob,
    pub internal_date: i64,
    pub targets: Vec<DeliveryTarget>,
    /// Remote recipients: queued with the same blob.
    pub queue: Option<NewQueueEntry>,
    /// Trace events committed with the message (received, delivered, queued).
    pub trace: Vec<TraceEvent>,
}

/// One step in a message's story, kept for `postern trace` (Exchange's message tracking).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceEvent {
    /// The id given to the message when it arrived (shown in the 250 reply).
    pub trace_id: String,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// received, refused, routed, delivered, queued, attempt, deferred, bounced, expired...
    pub kind: String,
    /// What happened, for a person.
    pub text: String,
    /// Search keys: "from:ADDR", "to:ADDR", "mid:MESSAGE-ID".
    #[serde(default)]
    pub keys: Vec<String>,
}

impl TraceEvent {
    pub fn new(trace_id: &str, kind: &str, text: impl Into<String>) -> TraceEvent {
        TraceEvent {
            trace_id: trace_id.to_string(),
            time: now_ms(),
            kind: kind.to_string(),
            text: text.into(),
            keys: Vec::new(),
        }
    }

    pub fn key(mut self, k: impl Into<String>) -> TraceEvent {
        self.keys.push(k.into());
        self
    }
}

#[derive(Debug)]
pub struct DeliveryReport {
    pub blob: BlobId,
    /// One per target, in order: where it went, or why not.
    pub targets: Vec<Result<(MailboxId, Uid), crate::StoreError>>,
    pub queue_id: Option<QueueId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DsnRet {
    Full,
    Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientState {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueRecipient {
    pub address: String,
    /// RFC 3461 ORCPT, as given.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY, as given (e.g. "FAILURE,DELAY"); None = default.
    #[serde(default)]
    pub notify: Option<String>,
    pub state: RecipientState,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewQueueEntry {
    pub sender: String,
    pub recipients: Vec<QueueRecipient>,
    pub envid: Option<String>,
    pub ret: Option<DsnRet>,
    pub trace_id: String,
    /// Sent by an authenticated user (submission) rather than received as MX.
    pub authenticated: Option<String>,
    pub requiretls: bool,
    /// Leading bytes of the blob that are not sent on (the Return-Path header local copies get).
    pub body_offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueEntry {
    pub id: QueueId,
    pub blob: BlobId,
    pub size: u64,
    pub sender: String,
    pub recipients: Vec<QueueRecipient>,
    #[serde(default)]
    pub envid: Option<String>,
    #[serde(default)]
    pub ret: Option<DsnRet>,
    pub trace_id: String,
    #[serde(default)]
    pub authenticated: Option<String>,
    #[serde(default)]
    pub requiretls: bool,
    #[serde(default)]
    pub body_offset: u64,
    pub created: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// A delay warning was sent already.
    #[serde(default)]
    pub warned: bool,
    /// Return to the sender at the next run instead of delivering (`postern queue bounce`).
    #[serde(default)]
    pub bounce: bool,
}

impl QueueEntry {
    /// This entry as an update of `stored`: an outcome already recorded for a recipient is
    /// kept, and a bounce or a delay warning stays done, so a writer holding an older copy (a
    /// node whose claim ran out, an administrator's retry) never has a recipient sent to twice.
    pub fn keeping_outcomes_of(mut self, stored: &QueueEntry) -> QueueEntry {
        for (r, s) in self.recipients.iter_mut().zip(&stored.recipients) {
            if r.address == s.address
                && r.state == RecipientState::Pending
                && s.state != RecipientState::Pending
            {
                r.state = s.state;
                r.last_error = s.last_error.clone();
            }
        }
        self.bounce |= stored.bounce;
        self.warned |= stored.warned;
        self.attempts = self.attempts.max(stored.attempts);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreEvent {
    /// Messages were added, changed or removed in a mailbox.
    Mailbox {
        account: AccountId,
        mailbox: MailboxId,
        highest_modseq: ModSeq,
    },
    /// Mailboxes of an account were created, renamed or deleted.
    MailboxList { account: AccountId },
    /// Who may use a mailbox of `account` changed.
    Acl {
        account: AccountId,
        mailbox: MailboxId,
    },
    /// METADATA entries (RFC 5464) changed: those `keeper` keeps on a mailbox, or (`None`)
    /// on the server; names as kept.
    Metadata {
        keeper: AccountId,
        mailbox: Option<MailboxId>,
        names: Vec<String>,
    },
    /// Accounts, domains or aliases changed.
    Directory,
    /// The outbound queue got new work.
    Queue,
    /// Events may have been missed (another node's could not be heard for a while): anything
    /// may have changed.
    Missed,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Write requests carried by those commits.
    pub writes: u64,
    /// fsync/fdatasync calls issued.
    pub fsyncs: u64,
}

/// Held while a POP3 session owns a maildrop; dropping it releases the maildrop.
pub struct MaildropLock {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
    held: Box<dyn Fn() -> bool + Send + Sync>,
}

impl MaildropLock {
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self::with_check(release, || true)
    }

    /// A lock that may be lost while held (a lease that was not renewed in time): `held`
    /// says whether it still is.
    pub fn with_check(
        release: impl FnOnce() + Send + Sync + 'static,
        held: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        MaildropLock {
            release: Some(Box::new(release)),
            held: Box::new(held),
        }
    }

    /// Whether the maildrop is still this session's: changes are made only while it is.
    pub fn held(&self) -> bool {
        (self.held)()
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f()
        }
    }
}

impl std::fmt::Debug for MaildropLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaildropLock")
    }
}

/// A Sieve script of an account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SieveScript {
    pub name: String,
    pub active: bool,
    pub size: u64,
}

/// An API token: its name, the SHA-256 of its secret (hex), when it was made (seconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub hash: String,
    pub created: i64,
}

/// Short-lived state of a rate limit or a ban (login failures and lockouts, hourly sending
/// counts, greylisted triples), kept under a key such as `login-ip:192.0.2.1` and shared by
/// every node on one database. Times are Unix milliseconds; what each field means is the
/// rule's business.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// When the current window began.
    pub since: i64,
    pub count: u32,
    /// Blocked until then (0: not blocked).
    pub until: i64,
    /// Lockouts so far, and when the last one began (or another moment the rule keeps).
    pub strikes: u32,
    pub at: i64,
    /// Forgotten after this.
    pub expires: i64,
}

/// A rule's step: the counter as it is (`None` when absent or expired) to what to keep.
pub type CounterStep<'a> = &'a (dyn Fn(Option<Counter>) -> Option<Counter> + Send + Sync);

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A login to the web pages (admin or account), shared by every node. `id` is a digest of the
/// cookie's token: the store never holds a token that could be replayed. Times in Unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub id: String,
    pub address: String,
    pub admin: bool,
    /// What every state change made with the session must carry.
    pub csrf: String,
    /// A digest of the account's password hash at login: the session ends when it changes.
    pub password: u64,
    pub created: i64,
    pub used: i64,
    pub expires: i64,
}

/// A report another organization gets from us, or sends us: DMARC aggregate (RFC 7489
/// section 7.2) or SMTP TLS (RFC 8460).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    Dmarc,
    Tls,
}

impl ReportKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReportKind::Dmarc => "dmarc",
            ReportKind::Tls => "tls",
        }
    }

    pub fn parse(s: &str) -> Option<ReportKind> {
        match s {
            "dmarc" => Some(ReportKind::Dmarc),
            "tls" => Some(ReportKind::Tls),
            _ => None,
        }
    }
}

/// Like outcomes counted toward a report we send: `row` is the outcome (JSON the report
/// builder reads; equal rows add up), per domain and UTC day (days since 1970).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportTally {
    pub kind: ReportKind,
    pub domain: String,
    pub day: i64,
    pub row: String,
    pub count: u64,
}

/// A report another organization sent about one of our domains, as parsed (`body`, JSON).
/// One report naming several of our domains is kept once for each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedReport {
    pub kind: ReportKind,
    pub domain: String,
    /// The reporting organization.
    pub org: String,
    pub report_id: String,
    /// The period the report covers (Unix seconds).
    pub begin: i64,
    pub end: i64,
    /// When it arrived (Unix seconds).
    pub received: i64,
    pub body: String,
}

impl ReceivedReport {
    /// What makes a report the same one sent again.
    pub fn key(&self) -> String {
        crate::sha256_hex(&format!(
            "{}\n{}\n{}\n{}",
            self.kind.as_str(),
            self.org,
            self.report_id,
            self.domain
        ))
    }
}

/// Hour buckets are kept this many hours (14 days), day buckets this many days.
pub const STATS_HOURS_KEPT: i64 = 14 * 24;
pub const STATS_DAYS_KEPT: i64 = 400;

/// How a point joins its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatKind {
    /// Counts: added up (every node's, every flush's).
    Sum,
    /// Samples (queue size, disk use): the largest is kept.
    Max,
}

/// One number for one series at one moment (Unix seconds); the store puts it in the hour and
/// the day that hold `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatPoint {
    pub series: String,
    pub at: i64,
    pub value: i64,
    pub kind: StatKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatStep {
    Hour,
    Day,
}

impl StatStep {
    pub fn secs(self) -> i64 {
        match self {
            StatStep::Hour => 3600,
            StatStep::Day => 86_400,
        }
    }

    /// The start of the bucket holding `t`.
    pub fn start(self, t: i64) -> i64 {
        t - t.rem_euclid(self.secs())
    }
}

/// A bucket's value: `start` is the first second of its hour or day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatBucket {
    pub series: String,
    pub start: i64,
    pub value: i64,
}
