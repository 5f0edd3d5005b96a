//! redb tables of the embedded backend and the encodings of their values.
//!
//! Rarely read records (domains, accounts, aliases, mailboxes, queue entries) are JSON so they
//! can grow fields; per-message records are a fixed binary layout because IMAP reads
//! them by the thousand.

use redb::TableDefinition;

use crate::{BlobId, Flags, MessageEntry, StoreError, Uid};

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
pub const ACCOUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("accounts");
pub const ACCOUNT_BY_ADDRESS: TableDefinition<&str, u64> =
    TableDefinition::new("account_by_address");
pub const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
pub const MAILBOXES: TableDefinition<u64, &[u8]> = TableDefinition::new("mailboxes");
/// (account, name) → mailbox id.
pub const MAILBOX_BY_NAME: TableDefinition<(u64, &str), u64> =
    TableDefinition::new("mailbox_by_name");
/// (mailbox, uid) → message record.
pub const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
/// (mailbox, modseq, uid): which messages changed when (CONDSTORE/QRESYNC).
pub const MODSEQ: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("modseq");
/// (mailbox, modseq, uid) of expunged messages (QRESYNC VANISHED).
pub const EXPUNGED: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("expunged");
/// (mailbox, uid) → expunge time (seconds, i64) | message record: expunged messages kept,
/// with their blob reference, for sessions not yet told of the expunge.
pub const KEPT: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("kept");
/// (expunge time, mailbox, uid): the kept messages, oldest first.
pub const KEPT_BY_TIME: TableDefinition<(i64, u64, u32), ()> = TableDefinition::new("kept_by_time");
/// (account, name): subscribed names, mailbox or not.
pub const SUBSCRIPTIONS: TableDefinition<(u64, &str), ()> = TableDefinition::new("subscriptions");
pub const BLOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("blobs");
/// segment id → (end offset, live bytes).
pub const SEGMENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("segments");
pub const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// (trace id, seq) → event.
pub const TRACE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("trace");
/// (key, time ms, trace id): messages by sender, recipient, Message-ID.
pub const TRACE_KEYS: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("trace_keys");
/// (time ms, trace id, seq): for --since and for forgetting old events.
pub const TRACE_TIME: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("trace_time");

/// (account, name) → Sieve script source.
pub const SIEVE: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("sieve");
/// account → the name of its active script.
pub const SIEVE_ACTIVE: TableDefinition<u64, &str> = TableDefinition::new("sieve_active");
/// (account, key) → expiry (seconds): vacation replies already sent, duplicates seen.
pub const SEEN: TableDefinition<(u64, &str), i64> = TableDefinition::new("seen");

/// (account, sender address) → 1 junk, 0 trusted: taught by moving mail into or out of Junk.
pub const SENDERS: TableDefinition<(u64, &str), u8> = TableDefinition::new("senders");

/// name → API token record (JSON).
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// (kind, domain, day, row) → count: what the DMARC and TLS reports we send will say.
pub const REPORT_TALLY: TableDefinition<(&str, &str, i64, &str), u64> =
    TableDefinition::new("report_tally");
/// (received, key) → a report another organization sent (JSON).
pub const REPORTS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("reports");
/// key → received: reports kept, so one sent again is kept once.
pub const REPORT_KEYS: TableDefinition<&str, i64> = TableDefinition::new("report_keys");

/// (step, series, start) → value: the dashboard's buckets (step 0 hours, 1 days).
pub const STATS: TableDefinition<(u8, &str, i64), i64> = TableDefinition::new("stats");

/// (mailbox, identifier) → rights (RFC 4314 letters): access lists.
pub const ACL: TableDefinition<(u64, &str), &str> = TableDefinition::new("acl");
/// (identifier, mailbox): the mailboxes with a line for an identifier.
pub const ACL_BY_IDENTIFIER: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("acl_by_identifier");
/// (mailbox, reader, uid): messages a reader other than the owner has seen.
pub const SEEN_PRIVATE: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("seen_private");
/// (reader, mailbox): where a reader may have rows in `SEEN_PRIVATE` (rows may have gone since).
pub const SEEN_PRIVATE_READERS: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("seen_private_readers");
/// (address, delegate) → mode ("as", "on-behalf"): who may send for an address.
pub const SEND_AS: TableDefinition<(&str, &str), &str> = TableDefinition::new("send_as");
/// (delegate, address): the grants of a delegate.
pub const SEND_AS_BY_DELEGATE: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("send_as_by_delegate");

/// (account, mailbox or 0 for the server, entry name) → value: IMAP METADATA entries.
pub const METADATA: TableDefinition<(u64, u64, &str), &[u8]> = TableDefinition::new("metadata");
/// (mailbox or 0, account): who keeps entries where, so a mailbox's go with it.
pub const METADATA_BY_MAILBOX: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("metadata_by_mailbox");

/// id → collection record: calendars and address books.
pub const DAV_COLLECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("dav_collections");
/// (account, kind code, name) → collection id.
pub const DAV_COLLECTION_BY_NAME: TableDefinition<(u64, u8, &str), u64> =
    TableDefinition::new("dav_collection_by_name");
/// (collection, name) → resource record without its content.
pub const DAV_RESOURCES: TableDefinition<(u64, &str), &[u8]> =
    TableDefinition::new("dav_resources");
/// (collection, name) → the resource's bytes.
pub const DAV_CONTENT: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("dav_content");
/// (collection, UID) → the name of the resource with it.
pub const DAV_UIDS: TableDefinition<(u64, &str), &str> = TableDefinition::new("dav_uids");
/// (collection, name) → the sync at which it was removed: what sync-collection reports gone.
pub const DAV_REMOVED: TableDefinition<(u64, &str), u64> = TableDefinition::new("dav_removed");

pub const NEXT_ACCOUNT: &str = "next_account";
pub const NEXT_DAV_COLLECTION: &str = "next_dav_collection";
pub const NEXT_MAILBOX: &str = "next_mailbox";
pub const NEXT_BLOB: &str = "next_blob";
pub const NEXT_QUEUE: &str = "next_queue";
pub const NEXT_TRACE: &str = "next_trace";
pub const LAST_UIDVALIDITY: &str = "last_uidvalidity";
pub const SCHEMA_VERSION: &str = "schema_version";
/// A random number naming the store, so incremental backups build only on its own.
pub const STORE_ID: &str = "store_id";
/// 2: subscriptions in their own table (carried over from the mailbox records).
/// 3: sharing (`ACL`, `SEEN_PRIVATE`, `SEND_AS` and their indexes; `Account::shared`).
/// 4: save dates in message records (RFC 8514), IMAP METADATA (`METADATA` and its index).
/// 5: calendars and address books (`DAV_*` tables, which start empty).
pub const SCHEMA: u64 = 5;

pub fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub fn from_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

/// In a message record's flag byte: a save date follows it (format 4 on).
const HAS_SAVE_DATE: u8 = 0x80;

/// blob u64 | size u64 | internal date i64 | modseq u64 | flag bits u8 | save date i64 when the
/// flag byte has `HAS_SAVE_DATE` | (len u8, keyword)*
pub fn encode_message(m: &MessageEntry) -> Vec<u8> {
    let mut v =
        Vec::with_capacity(41 + m.flags.keywords.iter().map(|k| k.len() + 1).sum::<usize>());
    v.extend_from_slice(&m.blob.to_le_bytes());
    v.extend_from_slice(&m.size.to_le_bytes());
    v.extend_from_slice(&m.internal_date.to_le_bytes());
    v.extend_from_slice(&m.modseq.to_le_bytes());
    match m.saved {
        Some(t) => {
            v.push(m.flags.bits | HAS_SAVE_DATE);
            v.extend_from_slice(&t.to_le_bytes());
        }
        None => v.push(m.flags.bits & !HAS_SAVE_DATE),
    }
    for k in &m.flags.keywords {
        let k = &k.as_bytes()[..k.len().min(255)];
        v.push(k.len() as u8);
        v.extend_from_slice(k);
    }
    v
}

pub fn decode_message(uid: Uid, b: &[u8]) -> Result<MessageEntry, StoreError> {
    if b.len() < 33 {
        return Err(StoreError::Backend("corrupt message record".into()));
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let (saved, mut i) = if b[32] & HAS_SAVE_DATE != 0 {
        if b.len() < 41 {
            return Err(StoreError::Backend("corrupt message record".into()));
        }
        (Some(u(33) as i64), 41)
    } else {
        (None, 33)
    };
    let mut keywords = Vec::new();
    while i < b.len() {
        let n = b[i] as usize;
        let end = (i + 1 + n).min(b.len());
        keywords.push(String::from_utf8_lossy(&b[i + 1..end]).into_owned());
        i = end;
    }
    Ok(MessageEntry {
        uid,
        blob: u(0),
        size: u(8),
        internal_date: u(16) as i64,
        modseq: u(24),
        flags: Flags {
            bits: b[32] & !HAS_SAVE_DATE,
            keywords,
        },
        saved,
    })
}

/// A kept message: when it was expunged, then its record.
pub fn encode_kept(expunged_at: i64, m: &MessageEntry) -> Vec<u8> {
    let mut v = expunged_at.to_le_bytes().to_vec();
    v.extend_from_slice(&encode_message(m));
    v
}

pub fn decode_kept(uid: Uid, b: &[u8]) -> Result<(i64, MessageEntry), StoreError> {
    if b.len() < 8 {
        return Err(StoreError::Backend("corrupt kept message record".into()));
    }
    let at = i64::from_le_bytes(b[..8].try_into().unwrap());
    Ok((at, decode_message(uid, &b[8..])?))
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobLoc {
    /// Inside an append-only segment file.
    Segment { seg: u64, offset: u64 },
    /// A file of its own (large messages).
    File,
}

#[derive(Debug, Clone)]
pub struct BlobRecord {
    pub refs: u32,
    pub size: u64,
    pub loc: BlobLoc,
    pub meta: Vec<u8>,
}

/// refs u32 | size u64 | kind u8 | seg u64 | offset u64 | meta
pub fn encode_blob(r: &BlobRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(29 + r.meta.len());
    v.extend_from_slice(&r.refs.to_le_bytes());
    v.extend_from_slice(&r.size.to_le_bytes());
    let (kind, seg, off) = match r.loc {
        BlobLoc::Segment { seg, offset } => (0u8, seg, offset),
        BlobLoc::File => (1u8, 0, 0),
    };
    v.push(kind);
    v.extend_from_slice(&seg.to_le_bytes());
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&r.meta);
    v
}

/// (size, location) and the metadata bytes, without copying them.
pub fn decode_blob_loc(b: &[u8]) -> Result<(u64, BlobLoc, &[u8]), StoreError> {
    if b.len() < 29 {
        return Err(StoreError::Backend("corrupt blob record".into()));
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let loc = match b[12] {
        0 => BlobLoc::Segment {
            seg: u(13),
            offset: u(21),
        },
        _ => BlobLoc::File,
    };
    Ok((u(4), loc, &b[29..]))
}

pub fn decode_blob(b: &[u8]) -> Result<BlobRecord, StoreError> {
    if b.len() < 29 {
        return Err(StoreError::Backend("corrupt blob record".into()));
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let loc = match b[12] {
        0 => BlobLoc::Segment {
            seg: u(13),
            offset: u(21),
        },
        _ => BlobLoc::File,
    };
    Ok(BlobRecord {
        refs: u32::from_le_bytes(b[0..4].try_into().unwrap()),
        size: u(4),
        loc,
        meta: b[29..].to_vec(),
    })
}

pub fn blob_id_from_file_name(name: &str) -> Option<BlobId> {
    u64::from_str_radix(name, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let m = MessageEntry {
            uid: 7,
            blob: 99,
            size: 12345,
            internal_date: 1_700_000_000,
            flags: Flags {
                bits: Flags::SEEN | Flags::FLAGGED,
                keywords: vec!["$Junk".into(), "work".into()],
            },
            modseq: 42,
            saved: Some(1_700_000_100),
        };
        assert_eq!(decode_message(7, &encode_message(&m)).unwrap(), m);
        let old = MessageEntry { saved: None, ..m };
        let bytes = encode_message(&old);
        // A record written before save dates were kept: no flag, no date.
        assert_eq!(bytes.len(), 33 + 6 + 5);
        assert_eq!(decode_message(7, &bytes).unwrap(), old);
        let bare = MessageEntry {
            flags: Flags::default(),
            ..old
        };
        let mut cut = encode_message(&bare);
        cut[32] |= HAS_SAVE_DATE;
        assert!(decode_message(7, &cut).is_err());
    }

    #[test]
    fn kept_round_trip() {
        let m = MessageEntry {
            uid: 3,
            blob: 5,
            size: 10,
            internal_date: -1,
            flags: Flags {
                bits: Flags::DELETED,
                keywords: vec!["x".into()],
            },
            modseq: 9,
            saved: Some(1_600_000_000),
        };
        assert_eq!(
            decode_kept(3, &encode_kept(1_700_000_000, &m)).unwrap(),
            (1_700_000_000, m)
        );
        assert!(decode_kept(3, b"short").is_err());
    }

    #[test]
    fn blob_round_trip() {
        let r = BlobRecord {
            refs: 3,
            size: 77,
            loc: BlobLoc::Segment {
                seg: 2,
                offset: 4096,
            },
            meta: vec![1, 2, 3],
        };
        let d = decode_blob(&encode_blob(&r)).unwrap();
        assert_eq!(
            (d.refs, d.size, d.loc, d.meta),
            (3, 77, r.loc, vec![1, 2, 3])
        );
    }
}
