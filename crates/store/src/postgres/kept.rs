//! Expunged messages kept a while, holding their blob reference: a session not yet told of an
//! expunge can still fetch the message. A purge lets them go.

use deadpool_postgres::{GenericClient, Transaction};

use super::mail::release_blobs;
use super::{Prepared, pg};
use crate::*;

/// Moves messages of `uids` from the mailbox into the kept ones.
pub(super) async fn keep_tx(tx: &Transaction<'_>, mailbox: MailboxId, uids: &[i64]) -> Result<()> {
    tx.run(
        "WITH gone AS (DELETE FROM messages WHERE mailbox = $1 AND uid = ANY($2) \
           RETURNING mailbox, uid, blob, size, internal_date, modseq, flags, keywords, saved) \
         INSERT INTO kept (mailbox, uid, blob, size, internal_date, modseq, flags, keywords, \
           saved, expunged_at) \
         SELECT mailbox, uid, blob, size, internal_date, modseq, flags, keywords, saved, $3 \
         FROM gone",
        &[&(mailbox as i64), &uids, &now()],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn kept_entries<C: GenericClient + Sync>(
    c: &C,
    mailbox: MailboxId,
    uids: &[Uid],
) -> Result<Vec<MessageEntry>> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    Ok(c.rows(
        "SELECT uid, blob, size, internal_date, modseq, flags, keywords, saved FROM kept \
         WHERE mailbox = $1 AND uid = ANY($2) ORDER BY uid",
        &[&(mailbox as i64), &uids],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(|r| MessageEntry {
        uid: r.get::<_, i64>(0) as u32,
        blob: r.get::<_, i64>(1) as u64,
        size: r.get::<_, i64>(2) as u64,
        internal_date: r.get(3),
        modseq: r.get::<_, i64>(4) as u64,
        flags: Flags {
            bits: r.get::<_, i16>(5) as u8,
            keywords: r.get(6),
        },
        saved: r.get(7),
    })
    .collect())
}

/// Lets go of kept messages expunged before `before`, at most `limit` of them.
pub(super) async fn purge_tx(tx: &Transaction<'_>, before: i64, limit: i64) -> Result<u64> {
    let blobs: Vec<BlobId> = tx
        .rows(
            "DELETE FROM kept WHERE (mailbox, uid) IN \
             (SELECT mailbox, uid FROM kept WHERE expunged_at < $1 LIMIT $2) RETURNING blob",
            &[&before, &limit],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect();
    release_blobs(tx, &blobs).await?;
    Ok(blobs.len() as u64)
}
