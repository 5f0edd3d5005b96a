//! The rules every backend follows, written once: what a change does to a mailbox's counters,
//! flags and modseqs, what a quota lets in, how names and keys are spelled, what an update of
//! a queue entry keeps. Backends only read and write what these decide, so the two cannot
//! drift apart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use crate::*;

// Names and addresses.

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

/// The domain part of an address ("" without one).
pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// Sender verdicts are kept per address whatever its case.
pub(crate) fn sender_key(sender: &str) -> String {
    sender.to_ascii_lowercase()
}

// The directory.

/// A domain goes only once nothing of it is left.
pub(crate) fn check_domain_unused(name: &str, accounts: u64, aliases: u64) -> Result<()> {
    if accounts + aliases > 0 {
        return Err(StoreError::Invalid(format!(
            "domain {name} still has {accounts} account(s) and {aliases} alias(es); delete them first"
        )));
    }
    Ok(())
}

/// The mailboxes a new account starts with, INBOX first.
pub(crate) fn new_account_mailboxes() -> impl Iterator<Item = (&'static str, Option<SpecialUse>)> {
    std::iter::once((INBOX, None)).chain(SpecialUse::DEFAULTS.map(|(n, su)| (n, Some(su))))
}

pub(crate) fn apply_account_update(a: &mut Account, up: AccountUpdate) {
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
}

/// An account's usage: what its mailboxes hold.
pub(crate) fn usage_of<'a>(mailboxes: impl IntoIterator<Item = &'a Mailbox>) -> Usage {
    let mut u = Usage::default();
    for mb in mailboxes {
        u.bytes += mb.size;
        u.messages += mb.messages as u64;
    }
    u
}

// Mailboxes.

/// What sessions are told after messages of a mailbox were added, changed or removed.
pub(crate) fn mailbox_changed(mb: &Mailbox) -> StoreEvent {
    StoreEvent::Mailbox {
        account: mb.account,
        mailbox: mb.id,
        highest_modseq: mb.highest_modseq,
    }
}

pub(crate) fn check_mailbox_delete(mb: &Mailbox) -> Result<()> {
    if mb.name == INBOX {
        return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
    }
    Ok(())
}

/// What sessions are told of a deleted mailbox: the list changed, and a session that has it
/// selected sees it change past its last modseq.
pub(crate) fn mailbox_deleted(mb: &Mailbox) -> [StoreEvent; 2] {
    [
        StoreEvent::MailboxList {
            account: mb.account,
        },
        StoreEvent::Mailbox {
            account: mb.account,
            mailbox: mb.id,
            highest_modseq: mb.highest_modseq + 1,
        },
    ]
}

/// Checks a rename of `mb` to `new_name` (normalized) before any name is looked up: INBOX
/// stays, and a mailbox cannot become INBOX or move below itself.
pub(crate) fn check_mailbox_rename(mb: &Mailbox, new_name: &str) -> Result<()> {
    if mb.name == INBOX {
        return Err(StoreError::Invalid("INBOX cannot be renamed here".into()));
    }
    if new_name == mb.name {
        return Err(StoreError::AlreadyExists(format!("mailbox {new_name}")));
    }
    if new_name == INBOX || new_name.starts_with(&format!("{}/", mb.name)) {
        return Err(StoreError::Invalid(format!(
            "cannot rename {} to {new_name}",
            mb.name
        )));
    }
    Ok(())
}

/// The new name of `child` when `old` is renamed to `new`: `old/x` becomes `new/x`; `None` for
/// a mailbox not below `old`.
pub(crate) fn renamed_child(old: &str, new: &str, child: &str) -> Option<String> {
    child
        .strip_prefix(old)
        .and_then(|r| r.strip_prefix('/'))
        .map(|rest| format!("{new}/{rest}"))
}

/// Where subscriptions go when `old` is renamed to `new`: the name itself and every name
/// below it, mailbox or not (as Dovecot does). (from, to) pairs.
pub(crate) fn renamed_subscriptions(
    old: &str,
    new: &str,
    subscribed: &[String],
) -> Vec<(String, String)> {
    subscribed
        .iter()
        .filter_map(|s| {
            let to = if s == old {
                Some(new.to_string())
            } else {
                renamed_child(old, new, s)
            };
            to.map(|t| (s.clone(), t))
        })
        .collect()
}

/// A name as subscribed (INBOX spelled so); no name is refused.
pub(crate) fn subscription_name(name: &str) -> Result<String> {
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(StoreError::Invalid(format!("cannot subscribe to {name:?}")));
    }
    Ok(normalize_mailbox_name(name))
}

// Messages: UIDs, modseqs and the mailbox's counters.

/// Adds a message to `mb`: the next UID, a new modseq, and the counters; it is saved now
/// (RFC 8514). Returns the entry to store; the caller saves it and the mailbox.
pub(crate) fn append(
    mb: &mut Mailbox,
    blob: BlobId,
    size: u64,
    internal_date: i64,
    flags: Flags,
) -> MessageEntry {
    let uid = mb.uidnext;
    mb.uidnext += 1;
    mb.highest_modseq += 1;
    mb.messages += 1;
    mb.size += size;
    if !flags.seen() {
        mb.unseen += 1;
    }
    MessageEntry {
        uid,
        blob,
        size,
        internal_date,
        modseq: mb.highest_modseq,
        flags,
        saved: Some(now()),
    }
}

/// A message whose flags a STORE changed: as it is now, and the modseq it had (its index entry).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlagChange {
    pub entry: MessageEntry,
    pub old_modseq: ModSeq,
}

/// What a STORE does: the answer, the messages to save, and the UIDs the reader's own \Seen
/// gains and loses ([`FlagsUpdate::reader`]; both empty for the owner).
#[derive(Debug, Default)]
pub(crate) struct FlagsPlan {
    pub result: FlagsResult,
    pub changes: Vec<FlagChange>,
    pub seen_add: Vec<Uid>,
    pub seen_remove: Vec<Uid>,
}

/// The reader whose own \Seen a STORE on `mb` reads and writes: someone other than the owner.
pub(crate) fn private_reader(mb: &Mailbox, u: &FlagsUpdate) -> Option<AccountId> {
    u.reader.filter(|&r| r != mb.account)
}

/// A STORE on `mb`. `found` holds the messages of `u.uids` that exist (any order); `seen`, for
/// a [`private_reader`], the UIDs among them that reader has seen. Each asked UID counts once,
/// in the order asked; every message changed gets the same new modseq (one for the whole
/// command), and the unseen counter follows the stored \Seen, which is the owner's. A reader
/// sees the stored flags with \Seen taken from `seen`: what it changes of \Seen goes to its
/// own set, the rest to the stored flags, and the answer gives its view. With no change, `mb`
/// is unchanged.
pub(crate) fn update_flags(
    mb: &mut Mailbox,
    u: &FlagsUpdate,
    found: &[MessageEntry],
    seen: &HashSet<Uid>,
) -> FlagsPlan {
    let reader = private_reader(mb, u).is_some();
    let by_uid: HashMap<Uid, &MessageEntry> = found.iter().map(|e| (e.uid, e)).collect();
    let mut plan = FlagsPlan::default();
    let mut modseq = None;
    let mut done = HashSet::new();
    for &uid in &u.uids {
        let Some(e) = by_uid.get(&uid) else { continue };
        if !done.insert(uid) {
            continue;
        }
        if let Some(since) = u.unchanged_since
            && e.modseq > since
        {
            plan.result.modified.push(uid);
            continue;
        }
        let view = if reader {
            with_seen(&e.flags, seen.contains(&uid))
        } else {
            e.flags.clone()
        };
        let flags = view.apply(u.op, &u.flags);
        if flags == view {
            continue;
        }
        let m = *modseq.get_or_insert_with(|| {
            mb.highest_modseq += 1;
            mb.highest_modseq
        });
        let stored = if reader {
            match (view.seen(), flags.seen()) {
                (false, true) => plan.seen_add.push(uid),
                (true, false) => plan.seen_remove.push(uid),
                _ => {}
            }
            with_seen(&flags, e.flags.seen())
        } else {
            match (e.flags.seen(), flags.seen()) {
                (false, true) => mb.unseen = mb.unseen.saturating_sub(1),
                (true, false) => mb.unseen += 1,
                _ => {}
            }
            flags.clone()
        };
        plan.result.updated.push((uid, flags, m));
        plan.changes.push(FlagChange {
            entry: MessageEntry {
                flags: stored,
                modseq: m,
                ..(*e).clone()
            },
            old_modseq: e.modseq,
        });
    }
    plan
}

/// `f` with its \Seen bit set as `seen` says.
fn with_seen(f: &Flags, seen: bool) -> Flags {
    let mut f = f.clone();
    if seen {
        f.bits |= Flags::SEEN;
    } else {
        f.bits &= !Flags::SEEN;
    }
    f
}

/// An expunge from `mb`. `found` holds the messages of `uids` that exist (any order). Returns
/// those that go, each once, in the order asked; when any do, they go at one new modseq
/// (`mb.highest_modseq` after this) and leave the counters.
pub(crate) fn expunge(mb: &mut Mailbox, uids: &[Uid], found: &[MessageEntry]) -> Vec<MessageEntry> {
    let by_uid: HashMap<Uid, &MessageEntry> = found.iter().map(|e| (e.uid, e)).collect();
    let mut done = HashSet::new();
    let gone: Vec<MessageEntry> = uids
        .iter()
        .filter_map(|uid| by_uid.get(uid).filter(|_| done.insert(*uid)))
        .map(|e| (*e).clone())
        .collect();
    if gone.is_empty() {
        return gone;
    }
    mb.highest_modseq += 1;
    for e in &gone {
        mb.messages = mb.messages.saturating_sub(1);
        mb.size = mb.size.saturating_sub(e.size);
        if !e.flags.seen() {
            mb.unseen = mb.unseen.saturating_sub(1);
        }
    }
    gone
}

// Sharing.

/// An access-list identifier, or an address of a send-as grant, as kept: lower case, so the
/// lines of `Bob@Example.com` and `bob@example.com` are one.
pub(crate) fn share_key(s: &str) -> Result<String> {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(StoreError::Invalid(format!(
            "bad identifier or address {s:?}"
        )));
    }
    Ok(s.to_lowercase())
}

/// Identifiers asked about, as kept, each once.
pub(crate) fn share_keys(list: &[String]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().filter_map(|s| share_key(s).ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// The rights an access-list line keeps: `None` when the line goes.
pub(crate) fn acl_rights(rights: Option<Rights>) -> Option<String> {
    rights.filter(|r| !r.is_empty()).map(|r| r.to_string())
}

/// How both backends spell a send-as mode.
pub(crate) fn send_as_name(m: SendAs) -> &'static str {
    match m {
        SendAs::As => "as",
        SendAs::OnBehalf => "on-behalf",
    }
}

pub(crate) fn send_as_of_name(s: &str) -> Result<SendAs> {
    match s {
        "as" => Ok(SendAs::As),
        "on-behalf" => Ok(SendAs::OnBehalf),
        _ => Err(StoreError::Backend(format!("corrupt send-as mode {s:?}"))),
    }
}

// Quotas (0: no limit).

/// Whether the account has a quota at all: only then is its usage looked up.
pub(crate) fn has_quota(a: &Account) -> bool {
    a.quota_bytes > 0 || a.quota_messages > 0
}

/// The quota check of one delivery: targets of one account count against each other, so a
/// message for two mailboxes of a nearly full account is refused for the second.
#[derive(Default)]
pub(crate) struct DeliveryQuota {
    taken: Vec<(AccountId, u64)>,
}

impl DeliveryQuota {
    /// One more message of `size` for `a`, whose mailboxes hold `usage` before this delivery.
    pub fn check(&self, a: &Account, usage: Usage, size: u64) -> Result<()> {
        let earlier = self.taken.iter().filter(|t| t.0 == a.id);
        let (bytes, count) = earlier.fold((0, 0), |(b, n), t| (b + t.1, n + 1));
        if (a.quota_bytes > 0 && usage.bytes + bytes + size > a.quota_bytes)
            || (a.quota_messages > 0 && usage.messages + count + 1 > a.quota_messages)
        {
            return Err(StoreError::QuotaExceeded);
        }
        Ok(())
    }

    /// Counts a target as taken, checked or not.
    pub fn take(&mut self, account: AccountId, size: u64) {
        self.taken.push((account, size));
    }
}

/// The quota check of a copy into `a`'s mailboxes: a move within one account adds nothing,
/// and only a limit something is added to can refuse it.
pub(crate) fn check_copy_quota(
    a: &Account,
    usage: Usage,
    entries: &[MessageEntry],
    moved_within: bool,
) -> Result<()> {
    let (bytes, messages) = if moved_within {
        (0, 0)
    } else {
        (
            entries.iter().map(|e| e.size).sum::<u64>(),
            entries.len() as u64,
        )
    };
    if (a.quota_bytes > 0 && bytes > 0 && usage.bytes + bytes > a.quota_bytes)
        || (a.quota_messages > 0 && messages > 0 && usage.messages + messages > a.quota_messages)
    {
        return Err(StoreError::QuotaExceeded);
    }
    Ok(())
}

// Deliveries.

/// The report of a delivery every target refused and nothing queued: no blob is kept.
pub(crate) fn delivered_nowhere<T>(targets: Vec<Result<T>>) -> DeliveryReport {
    DeliveryReport {
        blob: 0,
        targets: targets.into_iter().map(|t| t.map(|_| (0, 0))).collect(),
        queue_id: None,
    }
}

/// The queue entry of a delivery's remote recipients: due at once.
pub(crate) fn new_queue_entry(
    id: QueueId,
    blob: BlobId,
    size: u64,
    q: NewQueueEntry,
    created: i64,
) -> QueueEntry {
    QueueEntry {
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
    }
}

/// The spool file a delivery's bytes come from, if any.
pub(crate) fn spool_of(d: &Delivery) -> Option<PathBuf> {
    match &d.blob.data {
        BlobData::File(p) => Some(p.clone()),
        BlobData::Memory(_) => None,
    }
}

/// Spool files of deliveries that stored nothing: garbage once the deliveries are done.
pub(crate) fn unused_spools<'a>(
    spools: &'a [Option<PathBuf>],
    reports: &'a [DeliveryReport],
) -> impl Iterator<Item = &'a PathBuf> {
    spools
        .iter()
        .zip(reports)
        .filter(|(_, r)| r.blob == 0)
        .filter_map(|(p, _)| p.as_ref())
}

/// How much of a blob a header fetch reads: what `head_len` finds in its metadata, all of it
/// when that says nothing, never past its end.
pub(crate) fn head_bytes(
    size: u64,
    meta: &[u8],
    head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
) -> u64 {
    head_len(meta).unwrap_or(size).min(size)
}

// The queue.

/// An update of a stored queue entry: outcomes already recorded are kept
/// ([`QueueEntry::keeping_outcomes_of`]).
pub(crate) fn queue_update(stored: Option<QueueEntry>, entry: QueueEntry) -> Result<QueueEntry> {
    match stored {
        Some(s) => Ok(entry.keeping_outcomes_of(&s)),
        None => Err(StoreError::NotFound(format!("queue entry {}", entry.id))),
    }
}

/// Whether a claim held by `held_by` until `until` keeps `holder` from claiming: until it runs
/// out, unless it is the holder's own.
pub(crate) fn claim_refused(held_by: Option<&str>, until: i64, holder: &str, now: i64) -> bool {
    until > now && held_by != Some(holder)
}

// Sieve.

/// The active script cannot be deleted: deactivate it first.
pub(crate) fn check_sieve_delete(active: bool, name: &str) -> Result<()> {
    if active {
        return Err(StoreError::Invalid(format!("script {name} is active")));
    }
    Ok(())
}

/// Seen marks (seconds) that expired by `before_ms` go when the trace is pruned up to it:
/// those whose expiry is at most this.
pub(crate) fn seen_marks_expired_by(before_ms: i64) -> i64 {
    before_ms / 1000
}

// Web sessions.

/// The most sessions kept when a login adds one: never fewer than that one.
pub(crate) fn session_limit(limit: usize) -> usize {
    limit.max(1)
}

// Rate-limit counters.

/// Counter keys longer than this are kept as a digest: they may carry addresses of any length,
/// and an index entry's size is limited.
const MAX_COUNTER_KEY: usize = 200;

pub(crate) fn counter_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_COUNTER_KEY {
        return std::borrow::Cow::Borrowed(key);
    }
    let kind = key.split(':').next().unwrap_or_default();
    std::borrow::Cow::Owned(format!(
        "{}:sha256:{}",
        &kind[..kind.len().min(40)],
        sha256_hex(key)
    ))
}

/// One step of a counter: an expired counter counts as absent, and what the step returns is
/// kept only while it has not expired (`None`: the counter goes).
pub(crate) fn counter_next(
    stored: Option<Counter>,
    step: CounterStep<'_>,
    now: i64,
) -> Option<Counter> {
    step(stored.filter(|c| c.expires > now)).filter(|c| c.expires > now)
}

// Dashboard series.

/// A bucket as both backends key it: step code, series, start.
pub(crate) type StatKey = (u8, String, i64);

/// How a step is stored (redb key, PostgreSQL smallint).
pub(crate) fn stat_step_code(step: StatStep) -> u8 {
    match step {
        StatStep::Hour => 0,
        StatStep::Day => 1,
    }
}

/// What a `stats_add` does to each bucket, its points folded first (sums added, the largest
/// of the maxima): so each bucket is written once per kind (PostgreSQL's upsert may not touch
/// a row twice), in key order (concurrent nodes lock rows in the same order). (sums, maxima);
/// a series is meant to have one kind, and with both the sums apply first.
pub(crate) fn stat_changes(
    points: &[StatPoint],
) -> (BTreeMap<StatKey, i64>, BTreeMap<StatKey, i64>) {
    let (mut sums, mut maxima) = (BTreeMap::new(), BTreeMap::new());
    for p in points {
        for step in [StatStep::Hour, StatStep::Day] {
            let key = (stat_step_code(step), p.series.clone(), step.start(p.at));
            match p.kind {
                StatKind::Sum => {
                    let v: &mut i64 = sums.entry(key).or_default();
                    *v = v.saturating_add(p.value);
                }
                StatKind::Max => {
                    maxima
                        .entry(key)
                        .and_modify(|v: &mut i64| *v = (*v).max(p.value))
                        .or_insert(p.value);
                }
            }
        }
    }
    (sums, maxima)
}

/// A bucket after a change: a sum adds, a maximum keeps the larger; no bucket yet is absent
/// (not 0), so a negative maximum is kept.
pub(crate) fn stat_merge(kind: StatKind, stored: Option<i64>, value: i64) -> i64 {
    match (kind, stored) {
        (_, None) => value,
        (StatKind::Sum, Some(s)) => s.saturating_add(value),
        (StatKind::Max, Some(s)) => s.max(value),
    }
}

/// Buckets starting before these are pruned: (hour buckets, day buckets).
pub(crate) fn stat_horizons(now: i64) -> (i64, i64) {
    (
        StatStep::Hour.start(now) - STATS_HOURS_KEPT * StatStep::Hour.secs(),
        StatStep::Day.start(now) - STATS_DAYS_KEPT * StatStep::Day.secs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox() -> Mailbox {
        Mailbox {
            id: 7,
            account: 3,
            name: "Work".into(),
            uidvalidity: 1,
            uidnext: 1,
            highest_modseq: 1,
            special_use: None,
            messages: 0,
            unseen: 0,
            size: 0,
        }
    }

    fn account(quota_bytes: u64, quota_messages: u64) -> Account {
        Account {
            id: 3,
            address: "a@example.test".into(),
            password_hash: String::new(),
            quota_bytes,
            quota_messages,
            disabled: false,
            created: 0,
            forward: None,
            shared: false,
        }
    }

    fn seen() -> Flags {
        Flags {
            bits: Flags::SEEN,
            keywords: Vec::new(),
        }
    }

    /// A mailbox with messages of 10, 20 and 30 bytes, the second one seen.
    fn filled() -> (Mailbox, Vec<MessageEntry>) {
        let mut mb = mailbox();
        let entries = vec![
            append(&mut mb, 1, 10, 0, Flags::default()),
            append(&mut mb, 2, 20, 0, seen()),
            append(&mut mb, 3, 30, 0, Flags::default()),
        ];
        (mb, entries)
    }

    fn store(uids: &[Uid], op: FlagOp, flags: Flags, since: Option<ModSeq>) -> FlagsUpdate {
        FlagsUpdate {
            mailbox: 7,
            uids: uids.to_vec(),
            op,
            flags,
            unchanged_since: since,
            reader: None,
        }
    }

    #[test]
    fn inbox_is_spelled_one_way() {
        assert_eq!(normalize_mailbox_name("inbox"), "INBOX");
        assert_eq!(
            normalize_mailbox_name("Inbox/Lists/rust"),
            "INBOX/Lists/rust"
        );
        assert_eq!(normalize_mailbox_name("Inboxes"), "Inboxes");
        assert_eq!(normalize_mailbox_name("Archive/inbox"), "Archive/inbox");
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(domain_of("a@b.example"), "b.example");
        assert_eq!(domain_of("a@b@c.example"), "c.example");
        assert_eq!(domain_of("postmaster"), "");
        assert_eq!(sender_key("Bob@Example.TEST"), "bob@example.test");
    }

    #[test]
    fn a_domain_in_use_stays() {
        assert!(check_domain_unused("x.test", 0, 0).is_ok());
        assert!(matches!(
            check_domain_unused("x.test", 1, 2),
            Err(StoreError::Invalid(m)) if m.contains("1 account(s) and 2 alias(es)")
        ));
    }

    #[test]
    fn new_accounts_get_inbox_and_the_special_mailboxes() {
        let boxes: Vec<_> = new_account_mailboxes().collect();
        assert_eq!(boxes[0], (INBOX, None));
        assert_eq!(boxes.len(), 1 + SpecialUse::DEFAULTS.len());
        assert!(boxes.contains(&("Junk", Some(SpecialUse::Junk))));
    }

    #[test]
    fn an_account_update_changes_only_what_it_names() {
        let mut a = account(100, 0);
        apply_account_update(
            &mut a,
            AccountUpdate {
                quota_messages: Some(5),
                forward: Some(Some(Forward {
                    to: "b@example.test".into(),
                    keep_copy: true,
                })),
                ..Default::default()
            },
        );
        assert_eq!((a.quota_bytes, a.quota_messages), (100, 5));
        assert!(a.forward.is_some() && !a.disabled);
        apply_account_update(
            &mut a,
            AccountUpdate {
                forward: Some(None),
                disabled: Some(true),
                ..Default::default()
            },
        );
        assert!(a.forward.is_none() && a.disabled);
    }

    #[test]
    fn usage_adds_up_the_mailboxes() {
        let (a, _) = filled();
        let mut b = mailbox();
        append(&mut b, 4, 5, 0, seen());
        assert_eq!(
            usage_of([&a, &b]),
            Usage {
                bytes: 65,
                messages: 4
            }
        );
        assert_eq!(usage_of([]), Usage::default());
    }

    #[test]
    fn inbox_is_neither_deleted_nor_renamed() {
        let mut inbox = mailbox();
        inbox.name = INBOX.into();
        assert!(matches!(
            check_mailbox_delete(&inbox),
            Err(StoreError::Invalid(_))
        ));
        assert!(check_mailbox_delete(&mailbox()).is_ok());
        assert!(matches!(
            check_mailbox_rename(&inbox, "Old"),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn a_rename_stays_out_of_inbox_and_below_itself() {
        let mb = mailbox();
        assert!(check_mailbox_rename(&mb, "Jobs").is_ok());
        assert!(check_mailbox_rename(&mb, "Workshop").is_ok());
        assert!(matches!(
            check_mailbox_rename(&mb, "Work"),
            Err(StoreError::AlreadyExists(_))
        ));
        for bad in [INBOX, "Work/2024"] {
            assert!(matches!(
                check_mailbox_rename(&mb, bad),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn children_follow_a_rename() {
        assert_eq!(
            renamed_child("Work", "Jobs", "Work/2024/q1").as_deref(),
            Some("Jobs/2024/q1")
        );
        assert_eq!(renamed_child("Work", "Jobs", "Workshop"), None);
        assert_eq!(renamed_child("Work", "Jobs", "Work"), None);
    }

    #[test]
    fn subscriptions_follow_a_rename() {
        let subs: Vec<String> = ["Work", "Work/2024", "Work/gone/x", "Workshop", "Other"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            renamed_subscriptions("Work", "Jobs", &subs),
            [
                ("Work".into(), "Jobs".into()),
                ("Work/2024".into(), "Jobs/2024".into()),
                ("Work/gone/x".into(), "Jobs/gone/x".into()),
            ]
        );
        assert!(renamed_subscriptions("Nothing", "New", &subs).is_empty());
    }

    #[test]
    fn subscribed_names_are_spelled_as_mailboxes_are() {
        assert_eq!(subscription_name("inbox/Lists").unwrap(), "INBOX/Lists");
        assert_eq!(subscription_name("Gone").unwrap(), "Gone");
        for bad in ["", "a\0b", "line\r\n"] {
            assert!(matches!(
                subscription_name(bad),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_deleted_mailbox_is_seen_to_change() {
        let mb = mailbox();
        let [list, changed] = mailbox_deleted(&mb);
        assert_eq!(list, StoreEvent::MailboxList { account: 3 });
        assert_eq!(
            changed,
            StoreEvent::Mailbox {
                account: 3,
                mailbox: 7,
                highest_modseq: 2
            }
        );
    }

    #[test]
    fn append_counts_and_numbers() {
        let (mb, entries) = filled();
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.uid, e.modseq))
                .collect::<Vec<_>>(),
            [(1, 2), (2, 3), (3, 4)]
        );
        assert_eq!(
            (
                mb.uidnext,
                mb.highest_modseq,
                mb.messages,
                mb.unseen,
                mb.size
            ),
            (4, 4, 3, 2, 60)
        );
        assert_eq!(
            mailbox_changed(&mb),
            StoreEvent::Mailbox {
                account: 3,
                mailbox: 7,
                highest_modseq: 4
            }
        );
    }

    #[test]
    fn a_store_takes_one_modseq_and_follows_seen() {
        let (mut mb, entries) = filled();
        let (res, changes) = update_flags(
            &mut mb,
            &store(&[3, 1, 2], FlagOp::Add, seen(), None),
            &entries,
            &HashSet::new(),
        )
        .parts();
        // The second message was seen already: unchanged, no new modseq.
        assert_eq!(
            res.updated.iter().map(|u| (u.0, u.2)).collect::<Vec<_>>(),
            [(3, 5), (1, 5)]
        );
        assert!(res.modified.is_empty());
        assert_eq!((mb.highest_modseq, mb.unseen), (5, 0));
        assert_eq!(changes[0].old_modseq, 4);
        assert_eq!(changes[0].entry.uid, 3);
        assert!(
            changes
                .iter()
                .all(|c| c.entry.flags.seen() && c.entry.modseq == 5)
        );

        let (res, _) = update_flags(
            &mut mb,
            &store(&[2], FlagOp::Remove, seen(), None),
            &entries,
            &HashSet::new(),
        )
        .parts();
        assert_eq!(res.updated.len(), 1);
        assert_eq!((mb.highest_modseq, mb.unseen), (6, 1));
    }

    #[test]
    fn a_store_that_changes_nothing_leaves_the_mailbox() {
        let (mut mb, entries) = filled();
        let before = mb.clone();
        let (res, changes) = update_flags(
            &mut mb,
            &store(&[2, 9], FlagOp::Add, seen(), None),
            &entries,
            &HashSet::new(),
        )
        .parts();
        assert!(res.updated.is_empty() && res.modified.is_empty() && changes.is_empty());
        assert_eq!(mb, before);
    }

    #[test]
    fn unchangedsince_refuses_newer_messages_and_each_uid_counts_once() {
        let (mut mb, entries) = filled();
        // Message 1 has modseq 2, message 3 modseq 4.
        let (res, changes) = update_flags(
            &mut mb,
            &store(&[1, 3, 1, 3], FlagOp::Replace, seen(), Some(3)),
            &entries,
            &HashSet::new(),
        )
        .parts();
        assert_eq!(res.updated.len(), 1);
        assert_eq!(res.updated[0].0, 1);
        assert_eq!(res.modified, [3]);
        assert_eq!(changes.len(), 1);
    }

    impl FlagsPlan {
        fn parts(self) -> (FlagsResult, Vec<FlagChange>) {
            assert!(self.seen_add.is_empty() && self.seen_remove.is_empty());
            (self.result, self.changes)
        }
    }

    fn by_reader(u: FlagsUpdate, reader: AccountId) -> FlagsUpdate {
        FlagsUpdate {
            reader: Some(reader),
            ..u
        }
    }

    fn flags(bits: u8) -> Flags {
        Flags {
            bits,
            keywords: Vec::new(),
        }
    }

    #[test]
    fn a_reader_sets_its_own_seen_and_leaves_the_owners() {
        let (mut mb, entries) = filled();
        // Reader 9 has seen message 3 only; the owner has seen message 2 only.
        let mine = HashSet::from([3]);
        let plan = update_flags(
            &mut mb,
            &by_reader(store(&[1, 2, 3], FlagOp::Add, seen(), None), 9),
            &entries,
            &mine,
        );
        assert_eq!(
            plan.result.updated,
            [(1, seen(), 5), (2, seen(), 5)],
            "the reader's view; message 3 was seen already"
        );
        assert_eq!((plan.seen_add, plan.seen_remove), (vec![1, 2], vec![]));
        let stored: Vec<_> = plan
            .changes
            .iter()
            .map(|c| {
                (
                    c.entry.uid,
                    c.entry.flags.bits,
                    c.entry.modseq,
                    c.old_modseq,
                )
            })
            .collect();
        assert_eq!(
            stored,
            [(1, 0, 5, 2), (2, Flags::SEEN, 5, 3)],
            "the stored \\Seen stays the owner's; each message gets the new modseq"
        );
        assert_eq!(
            (mb.highest_modseq, mb.unseen),
            (5, 2),
            "the owner's counter"
        );
    }

    #[test]
    fn a_reader_changes_the_other_flags_for_everyone() {
        let (mut mb, entries) = filled();
        let mine = HashSet::from([3]);
        let plan = update_flags(
            &mut mb,
            &by_reader(store(&[3, 2], FlagOp::Remove, flags(Flags::SEEN), None), 9),
            &entries,
            &mine,
        );
        // Message 2 is unseen for the reader: removing \Seen changes nothing there.
        assert_eq!(plan.result.updated, [(3, flags(0), 5)]);
        assert_eq!((plan.seen_add, plan.seen_remove), (vec![], vec![3]));
        assert_eq!(plan.changes[0].entry.flags, flags(0));

        let plan = update_flags(
            &mut mb,
            &by_reader(store(&[2], FlagOp::Replace, flags(Flags::FLAGGED), None), 9),
            &entries,
            &HashSet::new(),
        );
        assert_eq!(plan.result.updated, [(2, flags(Flags::FLAGGED), 6)]);
        assert!(plan.seen_add.is_empty() && plan.seen_remove.is_empty());
        assert_eq!(
            plan.changes[0].entry.flags,
            flags(Flags::FLAGGED | Flags::SEEN),
            "flagged for everyone, still seen by the owner"
        );
        assert_eq!(mb.unseen, 2);
    }

    #[test]
    fn a_reader_store_that_changes_nothing_for_it_is_skipped() {
        let (mut mb, entries) = filled();
        let before = mb.clone();
        // Message 1 is seen by the reader, though not by the owner.
        let plan = update_flags(
            &mut mb,
            &by_reader(store(&[1], FlagOp::Add, seen(), None), 9),
            &entries,
            &HashSet::from([1]),
        );
        assert!(plan.result.updated.is_empty() && plan.changes.is_empty());
        assert!(plan.seen_add.is_empty() && plan.seen_remove.is_empty());
        assert_eq!(mb, before);
    }

    #[test]
    fn unchangedsince_holds_for_readers_too() {
        let (mut mb, entries) = filled();
        let plan = update_flags(
            &mut mb,
            &by_reader(store(&[1, 3], FlagOp::Add, seen(), Some(3)), 9),
            &entries,
            &HashSet::new(),
        );
        assert_eq!(plan.result.modified, [3]);
        assert_eq!(plan.seen_add, [1]);
    }

    #[test]
    fn the_owner_as_reader_is_the_owner() {
        let (mut a, entries) = filled();
        let mut b = a.clone();
        let u = store(&[1, 2], FlagOp::Add, seen(), None);
        let plain = update_flags(&mut a, &u, &entries, &HashSet::new());
        assert_eq!(private_reader(&b, &by_reader(u.clone(), 3)), None);
        assert_eq!(private_reader(&b, &by_reader(u.clone(), 9)), Some(9));
        let owner = update_flags(&mut b, &by_reader(u, 3), &entries, &HashSet::from([2]));
        assert_eq!(owner.result.updated, plain.result.updated);
        assert_eq!(owner.changes, plain.changes);
        assert!(owner.seen_add.is_empty());
        assert_eq!((a.unseen, b.unseen), (1, 1));
    }

    #[test]
    fn share_keys_are_lower_case() {
        assert_eq!(share_key("Bob@Example.COM").unwrap(), "bob@example.com");
        assert_eq!(share_key("$Team@Example.com").unwrap(), "$team@example.com");
        assert!(share_key("").is_err() && share_key("a b").is_err());
        assert_eq!(
            share_keys(&["B@x".into(), "anyone".into(), "b@X".into(), "".into()]),
            ["anyone", "b@x"]
        );
        assert_eq!(
            acl_rights(Some(Rights::parse("rl").unwrap())).unwrap(),
            "lr"
        );
        assert_eq!(acl_rights(Some(Rights::NONE)), None);
        assert_eq!(acl_rights(None), None);
        for m in [SendAs::As, SendAs::OnBehalf] {
            assert_eq!(send_as_of_name(send_as_name(m)).unwrap(), m);
        }
        assert!(send_as_of_name("x").is_err());
    }

    #[test]
    fn an_expunge_takes_one_modseq_and_leaves_the_counters() {
        let (mut mb, entries) = filled();
        let gone = expunge(&mut mb, &[3, 2, 3, 9], &entries);
        assert_eq!(gone.iter().map(|e| e.uid).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(
            (mb.highest_modseq, mb.messages, mb.unseen, mb.size),
            (5, 1, 1, 10)
        );
        let before = mb.clone();
        assert!(expunge(&mut mb, &[9], &entries[..0]).is_empty());
        assert_eq!(mb, before, "nothing gone: no new modseq");
    }

    #[test]
    fn a_delivery_counts_its_earlier_targets() {
        let a = account(100, 0);
        let used = Usage {
            bytes: 50,
            messages: 1,
        };
        let mut q = DeliveryQuota::default();
        assert!(q.check(&a, used, 30).is_ok());
        q.take(a.id, 30);
        // Another account's targets do not count.
        q.take(a.id + 1, 1000);
        assert!(q.check(&a, used, 20).is_ok());
        assert!(matches!(
            q.check(&a, used, 21),
            Err(StoreError::QuotaExceeded)
        ));

        let a = account(0, 3);
        let mut q = DeliveryQuota::default();
        q.take(a.id, 1);
        assert!(q.check(&a, used, 1).is_ok());
        q.take(a.id, 1);
        assert!(q.check(&a, used, 1).is_err());
        assert!(
            DeliveryQuota::default()
                .check(&account(0, 0), used, u64::MAX / 2)
                .is_ok()
        );
        assert!(!has_quota(&account(0, 0)) && has_quota(&account(0, 1)));
    }

    #[test]
    fn a_copy_is_refused_only_for_what_it_adds() {
        let (_, entries) = filled();
        let full = Usage {
            bytes: 100,
            messages: 10,
        };
        let a = account(100, 0);
        assert!(matches!(
            check_copy_quota(&a, full, &entries, false),
            Err(StoreError::QuotaExceeded)
        ));
        assert!(check_copy_quota(&a, full, &entries, true).is_ok());
        assert!(check_copy_quota(&a, full, &[], false).is_ok());
        let room = Usage {
            bytes: 40,
            messages: 0,
        };
        assert!(check_copy_quota(&a, room, &entries, false).is_ok());
        assert!(check_copy_quota(&account(0, 12), full, &entries[..2], false).is_ok());
        assert!(check_copy_quota(&account(0, 12), full, &entries, false).is_err());
    }

    #[test]
    fn deliveries_and_their_spools() {
        let r = delivered_nowhere::<MailboxId>(vec![Err(StoreError::QuotaExceeded), Ok(9)]);
        assert_eq!((r.blob, r.queue_id), (0, None));
        assert!(matches!(r.targets[0], Err(StoreError::QuotaExceeded)));
        assert!(matches!(r.targets[1], Ok((0, 0))));

        let q = NewQueueEntry {
            sender: "a@example.test".into(),
            recipients: Vec::new(),
            envid: None,
            ret: None,
            trace_id: "t1".into(),
            authenticated: None,
            requiretls: true,
            body_offset: 12,
        };
        let e = new_queue_entry(5, 6, 70, q, 1000);
        assert_eq!((e.id, e.blob, e.size, e.body_offset), (5, 6, 70, 12));
        assert_eq!((e.created, e.next_attempt, e.attempts), (1000, 1000, 0));
        assert!(e.requiretls && !e.warned && !e.bounce && e.last_error.is_none());

        let report = |blob| DeliveryReport {
            blob,
            targets: Vec::new(),
            queue_id: None,
        };
        let spools = [
            Some(PathBuf::from("/s/1")),
            None,
            Some(PathBuf::from("/s/3")),
        ];
        let reports = [report(0), report(0), report(4)];
        let unused: Vec<_> = unused_spools(&spools, &reports).collect();
        assert_eq!(unused, [&PathBuf::from("/s/1")]);
    }

    #[test]
    fn a_head_never_reads_past_the_end() {
        fn ten(_: &[u8]) -> Option<u64> {
            Some(10)
        }
        fn unknown(_: &[u8]) -> Option<u64> {
            None
        }
        assert_eq!(head_bytes(100, b"", ten), 10);
        assert_eq!(head_bytes(4, b"", ten), 4);
        assert_eq!(head_bytes(100, b"", unknown), 100);
    }

    #[test]
    fn a_queue_update_keeps_what_was_done() {
        let r = |state| QueueRecipient {
            address: "r@remote.test".into(),
            orcpt: None,
            notify: None,
            state,
            last_error: None,
        };
        let stored = QueueEntry {
            recipients: vec![r(RecipientState::Delivered)],
            attempts: 3,
            warned: true,
            ..new_queue_entry(1, 2, 3, queued(), 0)
        };
        let stale = QueueEntry {
            recipients: vec![r(RecipientState::Pending)],
            attempts: 1,
            ..new_queue_entry(1, 2, 3, queued(), 0)
        };
        let e = queue_update(Some(stored), stale.clone()).unwrap();
        assert_eq!(e.recipients[0].state, RecipientState::Delivered);
        assert!(e.warned && e.attempts == 3);
        assert!(matches!(
            queue_update(None, stale),
            Err(StoreError::NotFound(m)) if m == "queue entry 1"
        ));
    }

    fn queued() -> NewQueueEntry {
        NewQueueEntry {
            sender: String::new(),
            recipients: Vec::new(),
            envid: None,
            ret: None,
            trace_id: String::new(),
            authenticated: None,
            requiretls: false,
            body_offset: 0,
        }
    }

    #[test]
    fn a_claim_holds_until_it_runs_out() {
        assert!(claim_refused(Some("node-a"), 100, "node-b", 50));
        assert!(!claim_refused(Some("node-a"), 100, "node-a", 50));
        assert!(!claim_refused(Some("node-a"), 100, "node-b", 100));
        assert!(!claim_refused(None, 0, "node-b", 50));
    }

    #[test]
    fn sieve_rules() {
        assert!(check_sieve_delete(false, "vacation").is_ok());
        assert!(matches!(
            check_sieve_delete(true, "vacation"),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(seen_marks_expired_by(86_400_999), 86_400);
    }

    #[test]
    fn a_login_keeps_at_least_its_own_session() {
        assert_eq!(session_limit(0), 1);
        assert_eq!(session_limit(5), 5);
    }

    #[test]
    fn long_counter_keys_become_digests() {
        assert_eq!(counter_key("login-ip:192.0.2.1"), "login-ip:192.0.2.1");
        let long = format!("greylist:{}", "x".repeat(300));
        let k = counter_key(&long);
        assert!(k.starts_with("greylist:sha256:") && k.len() == 16 + 64);
        assert_ne!(k, counter_key(&format!("{long}y")));
    }

    #[test]
    fn expired_counters_are_absent_and_not_kept() {
        let c = |expires| Counter {
            count: 1,
            expires,
            ..Default::default()
        };
        let bump = |c: Option<Counter>| {
            let mut c = c.unwrap_or(Counter {
                expires: 200,
                ..Default::default()
            });
            c.count += 1;
            Some(c)
        };
        assert_eq!(counter_next(Some(c(150)), &bump, 100).unwrap().count, 2);
        // Expired: starts again.
        assert_eq!(counter_next(Some(c(100)), &bump, 100).unwrap().count, 1);
        assert_eq!(counter_next(None, &|_| Some(c(100)), 100), None);
        assert_eq!(counter_next(Some(c(150)), &|_| None, 100), None);
    }

    #[test]
    fn stat_points_fold_per_bucket() {
        let p = |series: &str, at, value, kind| StatPoint {
            series: series.into(),
            at,
            value,
            kind,
        };
        let (sums, maxima) = stat_changes(&[
            p("in", 7200 + 1, 2, StatKind::Sum),
            p("in", 7200 + 3599, 3, StatKind::Sum),
            p("q", 5, -4, StatKind::Max),
            p("q", 86_399, -9, StatKind::Max),
        ]);
        let k = |step, series: &str, start| (step, series.to_string(), start);
        assert_eq!(
            sums.into_iter().collect::<Vec<_>>(),
            [(k(0, "in", 7200), 5), (k(1, "in", 0), 5)]
        );
        assert_eq!(
            maxima.into_iter().collect::<Vec<_>>(),
            [
                (k(0, "q", 0), -4),
                (k(0, "q", 82_800), -9),
                (k(1, "q", 0), -4)
            ]
        );
        assert_eq!(stat_merge(StatKind::Max, None, -9), -9);
        assert_eq!(stat_merge(StatKind::Max, Some(-4), -9), -4);
        assert_eq!(stat_merge(StatKind::Sum, Some(i64::MAX), 1), i64::MAX);
        let now = 10 * 86_400 + 3 * 3600 + 7;
        assert_eq!(
            stat_horizons(now),
            (
                10 * 86_400 + 3 * 3600 - STATS_HOURS_KEPT * 3600,
                10 * 86_400 - STATS_DAYS_KEPT * 86_400
            )
        );
    }
}
