//! Mailboxes, messages and their bytes in PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::delivery::deliver_tx;
use super::directory::account;
use super::kept::{keep_tx, kept_entries, purge_tx};
use super::mailboxes::{
    MAILBOX_COLS, mailbox, mailbox_create_tx, mailbox_id_by_name, mailbox_of, mailbox_remove,
    put_mailbox_counts, usage,
};
use super::share::{forget_seen, lock_reader, seen_by, seen_private_change};
use super::subscriptions::{rename_subscriptions_tx, subscribe_tx, unsubscribe_tx};
use super::{Effects, PgStore, Prepared, pg};
use crate::rules;
use crate::*;

const MESSAGE_COLS: &str = "uid, blob, size, internal_date, modseq, flags, keywords, saved";

fn message_of(r: &Row) -> MessageEntry {
    MessageEntry {
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
    }
}

/// One reference fewer to each blob (once per occurrence); blobs nobody holds go.
pub(super) async fn release_blobs(tx: &Transaction<'_>, blobs: &[BlobId]) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = blobs.iter().map(|&b| b as i64).collect();
    lock_blobs(tx, &ids).await?;
    tx.run(
        "UPDATE blobs SET refs = refs - c.n FROM \
         (SELECT id, count(*)::int AS n FROM unnest($1::bigint[]) AS id GROUP BY id) c \
         WHERE blobs.id = c.id",
        &[&ids],
    )
    .await
    .map_err(pg)?;
    tx.run(
        "DELETE FROM blobs WHERE id = ANY($1) AND refs <= 0",
        &[&ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Blob rows are locked in id order before their counts change, so that writers touching
/// several (a copy, a purge) never wait on each other in a circle.
pub(super) async fn lock_blobs(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    tx.run(
        "SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn append_entry(
    tx: &Transaction<'_>,
    mb: &mut Mailbox,
    blob: BlobId,
    size: u64,
    internal_date: i64,
    flags: Flags,
) -> Result<Uid> {
    let e = rules::append(mb, blob, size, internal_date, flags);
    // The row and the counters in one round trip.
    let row = (
        mb.id as i64,
        e.uid as i64,
        e.blob as i64,
        e.size as i64,
        e.modseq as i64,
        e.flags.bits as i16,
    );
    let params: [&(dyn ToSql + Sync); 9] = [
        &row.0,
        &row.1,
        &row.2,
        &row.3,
        &e.internal_date,
        &row.4,
        &row.5,
        &e.flags.keywords,
        &e.saved,
    ];
    let (inserted, counted) = tokio::join!(
        tx.run(
            "INSERT INTO messages \
             (mailbox, uid, blob, size, internal_date, modseq, flags, keywords, saved) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &params,
        ),
        put_mailbox_counts(tx, mb),
    );
    inserted.map_err(pg)?;
    counted?;
    Ok(e.uid)
}

async fn entries_of<C: GenericClient + Sync>(
    c: &C,
    mailbox: MailboxId,
    uids: &[Uid],
) -> Result<Vec<MessageEntry>> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    Ok(c.rows(
        &format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 AND uid = ANY($2) ORDER BY uid"
        ),
        &[&(mailbox as i64), &uids],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(message_of)
    .collect())
}

async fn expunge_tx(
    tx: &Transaction<'_>,
    mb: &mut Mailbox,
    uids: &[Uid],
    fx: &mut Effects,
) -> Result<Vec<Uid>> {
    let found = entries_of(tx, mb.id, uids).await?;
    let gone = rules::expunge(mb, uids, &found);
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let m = mb.highest_modseq as i64;
    let list: Vec<i64> = gone.iter().map(|e| e.uid as i64).collect();
    // Kept, with their blob references, for sessions not yet told.
    keep_tx(tx, mb.id, &list).await?;
    tx.run(
        "INSERT INTO expunged (mailbox, modseq, uid) SELECT $1, $2, unnest($3::bigint[])",
        &[&(mb.id as i64), &m, &list],
    )
    .await
    .map_err(pg)?;
    forget_seen(tx, mb.id, &list).await?;
    put_mailbox_counts(tx, mb).await?;
    fx.events.push(rules::mailbox_changed(mb));
    Ok(gone.into_iter().map(|e| e.uid).collect())
}

#[async_trait]
impl MailStore for PgStore {
    async fn mailbox_list(&self, account: AccountId) -> Result<Vec<Mailbox>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!(
                "SELECT {MAILBOX_COLS} FROM mailboxes WHERE account = $1 ORDER BY name COLLATE \"C\""
            ),
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(mailbox_of)
        .collect())
    }

    async fn mailbox_get(&self, id: MailboxId) -> Result<Option<Mailbox>> {
        let c = self.client().await?;
        match mailbox(&c, id, false).await {
            Ok(m) => Ok(Some(m)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn mailbox_by_name(&self, account: AccountId, name: &str) -> Result<Option<Mailbox>> {
        let name = rules::normalize_mailbox_name(name);
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE account = $1 AND name = $2"),
            &[&(account as i64), &name],
        )
        .await
        .map_err(pg)?
        .map(|r| mailbox_of(&r)))
    }

    async fn mailbox_create(
        &self,
        account_id: AccountId,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox> {
        let name = name.to_string();
        self.write(tx!(|tx, fx| {
            account(tx, account_id, true).await?;
            let mb = mailbox_create_tx(tx, account_id, &name, special_use).await?;
            fx.events.push(StoreEvent::MailboxList {
                account: account_id,
            });
            Ok(mb)
        }))
        .await
    }

    async fn mailbox_delete(&self, id: MailboxId) -> Result<()> {
        self.write(tx!(|tx, fx| {
            let mb = mailbox(tx, id, true).await?;
            rules::check_mailbox_delete(&mb)?;
            mailbox_remove(tx, id).await?;
            fx.events.extend(rules::mailbox_deleted(&mb));
            Ok(())
        }))
        .await
    }

    async fn mailbox_rename(&self, id: MailboxId, new_name: &str) -> Result<()> {
        let new_name = rules::normalize_mailbox_name(new_name);
        self.write(tx!(|tx, fx| {
            // The account first, then the mailbox and its children in id order: the order
            // every writer locks in.
            let owner = mailbox(tx, id, false).await?.account;
            account(tx, owner, true).await?;
            let mb = mailbox(tx, id, false).await?;
            rules::check_mailbox_rename(&mb, &new_name)?;
            let prefix = format!("{}/", mb.name);
            let mut moves = vec![(mb.id, new_name.clone())];
            let locked = tx
                .rows(
                    "SELECT id, name FROM mailboxes WHERE account = $1 \
                     AND (id = $3 OR left(name, length($2)) = $2) ORDER BY id FOR UPDATE",
                    &[&(mb.account as i64), &prefix, &(mb.id as i64)],
                )
                .await
                .map_err(pg)?;
            for r in locked.iter().filter(|r| r.get::<_, i64>(0) as u64 != mb.id) {
                if let Some(n) = rules::renamed_child(&mb.name, &new_name, r.get(1)) {
                    moves.push((r.get::<_, i64>(0) as u64, n));
                }
            }
            let moving: HashSet<MailboxId> = moves.iter().map(|m| m.0).collect();
            for (_, n) in &moves {
                if let Some(other) = mailbox_id_by_name(tx, mb.account, n).await?
                    && !moving.contains(&other)
                {
                    return Err(StoreError::AlreadyExists(format!("mailbox {n}")));
                }
            }
            // Through temporary names, so a child and its new name never collide midway.
            for (id, _) in &moves {
                tx.run(
                    "UPDATE mailboxes SET name = '\u{1}' || id::text WHERE id = $1",
                    &[&(*id as i64)],
                )
                .await
                .map_err(pg)?;
            }
            for (id, n) in &moves {
                tx.run(
                    "UPDATE mailboxes SET name = $2 WHERE id = $1",
                    &[&(*id as i64), n],
                )
                .await
                .map_err(pg)?;
            }
            rename_subscriptions_tx(tx, mb.account, &mb.name, &new_name).await?;
            fx.events.push(StoreEvent::MailboxList {
                account: mb.account,
            });
            Ok(())
        }))
        .await
    }

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT name FROM subscriptions WHERE account = $1 ORDER BY name COLLATE \"C\"",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    async fn subscription_set(
        &self,
        account_id: AccountId,
        name: &str,
        subscribed: bool,
    ) -> Result<()> {
        let name = rules::subscription_name(name)?;
        self.write(tx!(|tx, fx| {
            account(tx, account_id, false).await?;
            if subscribed {
                subscribe_tx(tx, account_id, &name).await?;
            } else {
                unsubscribe_tx(tx, account_id, &name).await?;
            }
            fx.events.push(StoreEvent::MailboxList {
                account: account_id,
            });
            Ok(())
        }))
        .await
    }

    async fn deliver(&self, delivery: Delivery) -> Result<DeliveryReport> {
        let spool = [rules::spool_of(&delivery)];
        let r = self
            .write(tx!(|tx, fx| deliver_tx(tx, delivery, fx).await))
            .await;
        if let Ok(rep) = &r {
            for p in rules::unused_spools(&spool, std::slice::from_ref(rep)) {
                let _ = tokio::fs::remove_file(p).await;
            }
        }
        r
    }

    async fn deliver_many(&self, deliveries: Vec<Delivery>) -> Result<Vec<DeliveryReport>> {
        let spools: Vec<_> = deliveries.iter().map(rules::spool_of).collect();
        let r = self
            .write(tx!(|tx, fx| {
                // Every account of every delivery first, in id order, as single deliveries do.
                let mut ids: Vec<i64> = deliveries
                    .iter()
                    .flat_map(|d| d.targets.iter().map(|t| t.account as i64))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                tx.rows(
                    "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                    &[&ids],
                )
                .await
                .map_err(pg)?;
                let mut out = Vec::with_capacity(deliveries.len());
                for d in deliveries {
                    out.push(deliver_tx(tx, d, fx).await?);
                }
                Ok(out)
            }))
            .await;
        if let Ok(reps) = &r {
            for p in rules::unused_spools(&spools, reps) {
                let _ = tokio::fs::remove_file(p).await;
            }
        }
        r
    }

    async fn message_list(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!("SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 ORDER BY uid"),
            &[&(mailbox as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(message_of)
        .collect())
    }

    async fn message_get(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 AND uid = $2"),
            &[&(mailbox as i64), &(uid as i64)],
        )
        .await
        .map_err(pg)?
        .map(|r| message_of(&r)))
    }

    async fn message_changes(&self, mailbox_id: MailboxId, since: ModSeq) -> Result<Changes> {
        let mut c = self.client().await?;
        // One snapshot for the three reads.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let mb = mailbox(&tx, mailbox_id, false).await?;
        let changed = tx
            .rows(
                &format!(
                    "SELECT {MESSAGE_COLS} FROM messages WHERE mailbox = $1 AND modseq > $2 \
                     ORDER BY uid"
                ),
                &[&(mailbox_id as i64), &(since as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(message_of)
            .collect();
        let expunged = tx
            .rows(
                "SELECT uid FROM expunged WHERE mailbox = $1 AND modseq > $2 ORDER BY uid",
                &[&(mailbox_id as i64), &(since as i64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(Changes {
            changed,
            expunged,
            highest_modseq: mb.highest_modseq,
        })
    }

    async fn expunged_get(&self, mailbox: MailboxId, uids: &[Uid]) -> Result<Vec<MessageEntry>> {
        let c = self.client().await?;
        kept_entries(&c, mailbox, uids).await
    }

    async fn expunged_purge(&self, before: i64) -> Result<u64> {
        // In batches: each a short transaction.
        const BATCH: i64 = 1000;
        let mut total = 0;
        loop {
            let n = self
                .write(tx!(|tx, _fx| purge_tx(tx, before, BATCH).await))
                .await?;
            total += n;
            if (n as i64) < BATCH {
                return Ok(total);
            }
        }
    }

    async fn flags_update(&self, u: FlagsUpdate) -> Result<FlagsResult> {
        self.write(tx!(|tx, fx| {
            // The reader's row before the mailbox's, in the order every writer locks; shared,
            // so its own STOREs elsewhere go on, but it is not deleted meanwhile.
            if let Some(r) = u.reader {
                lock_reader(tx, r).await?;
            }
            let mut mb = mailbox(tx, u.mailbox, true).await?;
            let found = entries_of(tx, mb.id, &u.uids).await?;
            let reader = rules::private_reader(&mb, &u);
            let seen = match reader {
                Some(r) => seen_by(tx, mb.id, r, &u.uids).await?,
                None => HashSet::new(),
            };
            let plan = rules::update_flags(&mut mb, &u, &found, &seen);
            let changes = &plan.changes;
            for c in changes {
                let e = &c.entry;
                tx.run(
                    "UPDATE messages SET flags = $3, keywords = $4, modseq = $5 \
                     WHERE mailbox = $1 AND uid = $2",
                    &[
                        &(mb.id as i64),
                        &(e.uid as i64),
                        &(e.flags.bits as i16),
                        &e.flags.keywords,
                        &(e.modseq as i64),
                    ],
                )
                .await
                .map_err(pg)?;
            }
            if let Some(r) = reader {
                seen_private_change(tx, mb.id, r, &plan.seen_add, &plan.seen_remove).await?;
            }
            if !changes.is_empty() {
                put_mailbox_counts(tx, &mb).await?;
                fx.events.push(rules::mailbox_changed(&mb));
            }
            Ok(plan.result)
        }))
        .await
    }

    async fn expunge(&self, mailbox_id: MailboxId, uids: Vec<Uid>) -> Result<Vec<Uid>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(tx!(|tx, fx| {
            let mut mb = mailbox(tx, mailbox_id, true).await?;
            expunge_tx(tx, &mut mb, &uids, fx).await
        }))
        .await
    }

    async fn copy(
        &self,
        from: MailboxId,
        uids: Vec<Uid>,
        to: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(Uid, Uid)>> {
        self.write(tx!(|tx, fx| {
            // The accounts first (in id order), then both mailboxes, as deliveries lock them.
            let src_account = mailbox(tx, from, false).await?.account;
            let dst_account = mailbox(tx, to, false).await?.account;
            tx.rows(
                "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&vec![src_account as i64, dst_account as i64]],
            )
            .await
            .map_err(pg)?;
            let (first, second) = (from.min(to), from.max(to));
            let mut locked = vec![mailbox(tx, first, true).await?];
            if second != first {
                locked.push(mailbox(tx, second, true).await?);
            }
            let take = |id: MailboxId| locked.iter().find(|m| m.id == id).cloned().expect("locked");
            let mut src = take(from);
            let mut dst = take(to);
            let found = entries_of(tx, from, &uids).await?;
            let by_uid: HashMap<Uid, MessageEntry> =
                found.into_iter().map(|e| (e.uid, e)).collect();
            let entries: Vec<MessageEntry> =
                uids.iter().filter_map(|u| by_uid.get(u).cloned()).collect();
            let a = account(tx, dst.account, true).await?;
            if rules::has_quota(&a) {
                let moved_within = remove_source && src.account == dst.account;
                rules::check_copy_quota(&a, usage(tx, a.id).await?, &entries, moved_within)?;
            }
            let mut pairs = Vec::with_capacity(entries.len());
            if !entries.is_empty() {
                let blobs: Vec<i64> = entries.iter().map(|e| e.blob as i64).collect();
                lock_blobs(tx, &blobs).await?;
                tx.run(
                    "UPDATE blobs SET refs = refs + c.n FROM \
                     (SELECT id, count(*)::int AS n FROM unnest($1::bigint[]) AS id GROUP BY id) c \
                     WHERE blobs.id = c.id",
                    &[&blobs],
                )
                .await
                .map_err(pg)?;
            }
            for e in &entries {
                let uid = append_entry(
                    tx,
                    &mut dst,
                    e.blob,
                    e.size,
                    e.internal_date,
                    e.flags.clone(),
                )
                .await?;
                pairs.push((e.uid, uid));
            }
            if !pairs.is_empty() {
                fx.events.push(rules::mailbox_changed(&dst));
            }
            if remove_source {
                let moved: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
                if from == to {
                    src = dst.clone();
                }
                expunge_tx(tx, &mut src, &moved, fx).await?;
            }
            Ok(pairs)
        }))
        .await
    }

    async fn blob_info(&self, id: BlobId) -> Result<BlobInfo> {
        let c = self.client().await?;
        match c
            .maybe_row(
                "SELECT size, meta FROM blobs WHERE id = $1",
                &[&(id as i64)],
            )
            .await
            .map_err(pg)?
        {
            Some(r) => Ok(BlobInfo {
                id,
                size: r.get::<_, i64>(0) as u64,
                meta: Arc::new(r.get(1)),
            }),
            None => Err(StoreError::NotFound(format!("blob {id}"))),
        }
    }

    async fn blob_read(&self, id: BlobId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let c = self.client().await?;
        // substring counts from 1; a length beyond the end stops at the end.
        match c
            .maybe_row(
                "SELECT substring(data FROM $2 FOR $3) FROM blobs WHERE id = $1",
                &[
                    &(id as i64),
                    &(offset.min(i32::MAX as u64 - 1) as i32 + 1),
                    &(len.min(i32::MAX as u64) as i32),
                ],
            )
            .await
            .map_err(pg)?
        {
            Some(r) => Ok(r.get(0)),
            None => Err(StoreError::NotFound(format!("blob {id}"))),
        }
    }

    async fn blob_head(
        &self,
        id: BlobId,
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<u8>> {
        self.blob_heads(&[id], head_len)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::NotFound(format!("blob {id}"))))
            .map(|b| b.to_vec())
    }

    async fn blob_heads(
        &self,
        ids: &[BlobId],
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<Result<BlobBytes>>> {
        let c = self.client().await?;
        let list: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        // Two queries for any number of blobs: their metadata, then the heads it measures.
        let metas: HashMap<u64, (u64, Vec<u8>)> = c
            .rows(
                "SELECT id, size, meta FROM blobs WHERE id = ANY($1)",
                &[&list],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    (r.get::<_, i64>(1) as u64, r.get::<_, Vec<u8>>(2)),
                )
            })
            .collect();
        let mut want_ids = Vec::new();
        let mut want_lens = Vec::new();
        for (id, (size, meta)) in &metas {
            want_ids.push(*id as i64);
            want_lens.push(rules::head_bytes(*size, meta, head_len).min(i32::MAX as u64) as i32);
        }
        let heads: HashMap<u64, Vec<u8>> = c
            .rows(
                "SELECT b.id, substring(b.data FROM 1 FOR w.n) FROM blobs b \
                 JOIN unnest($1::bigint[], $2::int[]) AS w(id, n) ON b.id = w.id",
                &[&want_ids, &want_lens],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                heads
                    .get(id)
                    .cloned()
                    .map(BlobBytes::owned)
                    .ok_or_else(|| StoreError::NotFound(format!("blob {id}")))
            })
            .collect())
    }

    async fn blob_infos(&self, ids: &[BlobId]) -> Result<Vec<Result<BlobInfo>>> {
        let c = self.client().await?;
        let list: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let found: HashMap<u64, (u64, Arc<Vec<u8>>)> = c
            .rows(
                "SELECT id, size, meta FROM blobs WHERE id = ANY($1)",
                &[&list],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    (r.get::<_, i64>(1) as u64, Arc::new(r.get::<_, Vec<u8>>(2))),
                )
            })
            .collect();
        Ok(ids
            .iter()
            .map(|&id| match found.get(&id) {
                Some((size, meta)) => Ok(BlobInfo {
                    id,
                    size: *size,
                    meta: meta.clone(),
                }),
                None => Err(StoreError::NotFound(format!("blob {id}"))),
            })
            .collect())
    }

    async fn lock_maildrop(&self, account: AccountId) -> Result<Option<MaildropLock>> {
        self.lease_maildrop(account).await
    }
}
