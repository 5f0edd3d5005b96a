//! Mailboxes, messages and their bytes: records read from redb, bytes from the segment and
//! blob files, changes through the writer; POP3 maildrops locked in this process.

use std::fs;
use std::sync::Arc;

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err, get_bytes};
use crate::rules::{self, normalize_mailbox_name};
use crate::*;

impl EmbeddedStore {
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
        mut with_meta: impl FnMut(u64, &[u8]),
    ) -> Result<(u64, BlobLoc)> {
        self.read(|r| {
            let t = r.open_table(BLOBS).map_err(db_err)?;
            match t.get(id).map_err(db_err)? {
                Some(v) => {
                    let (size, loc, meta) = decode_blob_loc(v.value())?;
                    with_meta(size, meta);
                    Ok((size, loc))
                }
                None => Err(StoreError::NotFound(format!("blob {id}"))),
            }
        })
    }
}

#[async_trait]
impl MailStore for EmbeddedStore {
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

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>> {
        self.read(|r| {
            let t = r.open_table(SUBSCRIPTIONS).map_err(db_err)?;
            t.range((account, "")..(account + 1, ""))
                .map_err(db_err)?
                .map(|x| Ok(x.map_err(db_err)?.0.value().1.to_string()))
                .collect()
        })
    }

    async fn subscription_set(
        &self,
        account: AccountId,
        name: &str,
        subscribed: bool,
    ) -> Result<()> {
        self.write(Job::SubscriptionSet(account, name.to_string(), subscribed))
            .await
            .map(|_| ())
    }

    async fn deliver_many(&self, deliveries: Vec<Delivery>) -> Result<Vec<DeliveryReport>> {
        let spools: Vec<_> = deliveries.iter().map(rules::spool_of).collect();
        let r = expect_output!(self.write(Job::DeliverMany(deliveries)).await?, Deliveries);
        if let Ok(reps) = &r {
            for p in rules::unused_spools(&spools, reps) {
                let _ = fs::remove_file(p);
            }
        }
        r
    }

    async fn deliver(&self, delivery: Delivery) -> Result<DeliveryReport> {
        let spool = [rules::spool_of(&delivery)];
        let r = expect_output!(self.write(Job::Deliver(delivery)).await?, Delivery);
        if let Ok(rep) = &r {
            for p in rules::unused_spools(&spool, std::slice::from_ref(rep)) {
                let _ = fs::remove_file(p);
            }
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

    async fn expunged_get(&self, mailbox: MailboxId, uids: &[Uid]) -> Result<Vec<MessageEntry>> {
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        self.read(|r| {
            let t = r.open_table(KEPT).map_err(db_err)?;
            let mut out = Vec::new();
            for uid in uids {
                if let Some(v) = t.get((mailbox, uid)).map_err(db_err)? {
                    out.push(decode_kept(uid, v.value())?.1);
                }
            }
            Ok(out)
        })
    }

    async fn expunged_purge(&self, before: i64) -> Result<u64> {
        expect_output!(self.write(Job::ExpungedPurge(before)).await?, Count)
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
        let (size, loc) = self.blob_location(id, |_, _| {})?;
        Ok(self.shared.blobs.read(id, loc, size, offset, len)?)
    }

    async fn blob_head(
        &self,
        id: BlobId,
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<u8>> {
        let mut n = 0;
        let (size, loc) =
            self.blob_location(id, |size, meta| n = rules::head_bytes(size, meta, head_len))?;
        Ok(self.shared.blobs.read(id, loc, size, 0, n)?)
    }

    async fn blob_heads(
        &self,
        ids: &[BlobId],
        head_len: for<'m> fn(&'m [u8]) -> Option<u64>,
    ) -> Result<Vec<Result<BlobBytes>>> {
        let locs: Vec<Result<(u64, BlobLoc, u64)>> = self.read(|r| {
            let t = r.open_table(BLOBS).map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                out.push(match t.get(id).map_err(db_err)? {
                    Some(v) => decode_blob_loc(v.value()).map(|(size, loc, meta)| {
                        (size, loc, rules::head_bytes(size, meta, head_len))
                    }),
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
                Ok(self.shared.blobs.view(id, loc, size, 0, n)?)
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

    async fn lock_maildrop(&self, account: AccountId) -> Result<Option<MaildropLock>> {
        let set = self.maildrops.clone();
        if !set.lock().unwrap().insert(account) {
            return Ok(None);
        }
        Ok(Some(MaildropLock::new(move || {
            set.lock().unwrap().remove(&account);
        })))
    }
}
