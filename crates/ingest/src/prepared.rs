//! A message ready to store, and the one place a [`Delivery`] is made: every way a message
//! enters (SMTP, IMAP APPEND, notices and replies, imports, copies between stores) ends here.

use postern_store::{
    AccountId, BlobData, Delivery, DeliveryTarget, Flags, MailboxId, MailboxTarget, NewBlob,
    NewQueueEntry, TraceEvent,
};

use crate::raw::Raw;

/// Bytes and the structure parsed from them.
pub struct Prepared {
    data: BlobData,
    size: u64,
    meta: Vec<u8>,
}

/// The structure of `bytes`, or none when the parser gives up on hostile input: readers then
/// compute it again; the message itself is never lost to a parser bug.
pub fn safe_meta(bytes: &[u8]) -> Vec<u8> {
    std::panic::catch_unwind(|| postern_message::meta::compute(bytes).encode()).unwrap_or_default()
}

impl Prepared {
    /// A message made or received whole in memory (a notice, a reply, an import): parsed
    /// once, here.
    pub fn new(bytes: Vec<u8>) -> Prepared {
        let meta = crate::heavy(bytes.len(), || safe_meta(&bytes));
        Prepared {
            size: bytes.len() as u64,
            data: BlobData::Memory(bytes),
            meta,
        }
    }

    /// A message in memory or in a spool file (IMAP APPEND): a spool file is mapped to be
    /// parsed, never read into memory.
    pub fn from_raw(mut raw: Raw) -> std::io::Result<Prepared> {
        raw.map()?;
        let meta = crate::heavy(raw.bytes().len(), || safe_meta(raw.bytes()));
        Ok(Prepared {
            size: raw.len(),
            data: raw.into_blob(),
            meta,
        })
    }

    /// Bytes whose structure was parsed before (copied from another store, or parsed by the
    /// SMTP path before its last edit).
    pub fn parsed(data: BlobData, size: u64, meta: Vec<u8>) -> Prepared {
        Prepared { data, size, meta }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The delivery of this message to mailboxes and/or the outbound queue.
    pub fn deliver(
        self,
        internal_date: i64,
        targets: Vec<DeliveryTarget>,
        queue: Option<NewQueueEntry>,
        trace: Vec<TraceEvent>,
    ) -> Delivery {
        Delivery {
            blob: NewBlob {
                data: self.data,
                size: self.size,
                meta: self.meta,
            },
            internal_date,
            targets,
            queue,
            trace,
        }
    }
}

/// Into a mailbox named so (INBOX when it does not exist, unless `create`).
pub fn into_folder(account: AccountId, name: &str, flags: Flags, create: bool) -> DeliveryTarget {
    DeliveryTarget {
        account,
        mailbox: MailboxTarget::Name {
            name: name.to_string(),
            create,
        },
        flags,
        enforce_quota: false,
    }
}

/// Into this mailbox, as its owner's own action (APPEND, imports): `enforce_quota` refuses it
/// over quota.
pub fn into_mailbox(
    account: AccountId,
    mailbox: MailboxId,
    flags: Flags,
    enforce_quota: bool,
) -> DeliveryTarget {
    DeliveryTarget {
        account,
        mailbox: MailboxTarget::Id(mailbox),
        flags,
        enforce_quota,
    }
}
