//! How the writer changes mailboxes and the messages in them: delivery, flags, expunge, copy.

use redb::ReadableTable;

use super::super::blobs::BlobFiles;
use super::super::db_err;
use super::super::tables::*;
use super::{Effects, Output, Tables};
use crate::rules::normalize_mailbox_name;
use crate::*;

impl Tables<'_> {
    pub(super) fn mailbox(&self, id: MailboxId) -> Result<Mailbox> {
        match self.mailboxes.get(id).map_err(db_err)? {
            Some(v) => from_json(v.value()),
            None => Err(StoreError::NotFound(format!("mailbox {id}"))),
        }
    }

    pub(super) fn put_mailbox(&mut self, mb: &Mailbox) -> Result<()> {
        self.mailboxes
            .insert(mb.id, json(mb).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    pub(super) fn account_mailboxes(&self, account: AccountId) -> Result<Vec<Mailbox>> {
        let ids: Vec<u64> = self
            .mailbox_by_name
            .range((account, "")..(account + 1, ""))
            .map_err(db_err)?
            .map(|r| r.map(|(_, v)| v.value()).map_err(db_err))
            .collect::<Result<_>>()?;
        ids.into_iter().map(|id| self.mailbox(id)).collect()
    }

    pub(super) fn mailbox_create(
        &mut self,
        account: AccountId,
        name: &str,
        su: Option<SpecialUse>,
        fx: &mut Effects,
    ) -> Result<Output> {
        self.account(account)?;
        let mb = self.new_mailbox(account, name, su)?;
        fx.events.push(StoreEvent::MailboxList { account });
        Ok(Output::Mailbox(mb))
    }

    pub(super) fn new_mailbox(
        &mut self,
        account: AccountId,
        name: &str,
        su: Option<SpecialUse>,
    ) -> Result<Mailbox> {
        let name = normalize_mailbox_name(name);
        if self
            .mailbox_by_name
            .get((account, name.as_str()))
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("mailbox {name}")));
        }
        let id = self.next_id(NEXT_MAILBOX)?;
        let last = self
            .meta
            .get(LAST_UIDVALIDITY)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let uidvalidity = (now() as u64).max(last + 1) & 0xffff_ffff;
        self.meta
            .insert(LAST_UIDVALIDITY, uidvalidity)
            .map_err(db_err)?;
        let mb = Mailbox {
            id,
            account,
            name,
            uidvalidity: uidvalidity.max(1) as u32,
            uidnext: 1,
            highest_modseq: 1,
            special_use: su,
            subscribed: true,
            messages: 0,
            unseen: 0,
            size: 0,
        };
        self.put_mailbox(&mb)?;
        self.mailbox_by_name
            .insert((account, mb.name.as_str()), id)
            .map_err(db_err)?;
        Ok(mb)
    }

    pub(super) fn mailbox_delete(
        &mut self,
        id: MailboxId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let mb = self.mailbox(id)?;
        if mb.name == INBOX {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        self.mailbox_remove(&mb, fx, files)?;
        fx.events.push(StoreEvent::MailboxList {
            account: mb.account,
        });
        fx.events.push(StoreEvent::Mailbox {
            account: mb.account,
            mailbox: mb.id,
            highest_modseq: mb.highest_modseq + 1,
        });
        Ok(Output::Unit)
    }

    pub(super) fn mailbox_remove(
        &mut self,
        mb: &Mailbox,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<()> {
        let entries = self.entries(mb.id)?;
        for e in &entries {
            self.messages.remove((mb.id, e.uid)).map_err(db_err)?;
            self.release_blob(e.blob, fx, files)?;
        }
        for table in [&mut self.modseq, &mut self.expunged] {
            let keys: Vec<(u64, u64, u32)> = table
                .range((mb.id, 0u64, 0u32)..(mb.id + 1, 0u64, 0u32))
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                .collect::<Result<_>>()?;
            for k in keys {
                table.remove(k).map_err(db_err)?;
            }
        }
        self.mailbox_by_name
            .remove((mb.account, mb.name.as_str()))
            .map_err(db_err)?;
        self.mailboxes.remove(mb.id).map_err(db_err)?;
        Ok(())
    }

    pub(super) fn mailbox_rename(
        &mut self,
        id: MailboxId,
        new_name: &str,
        fx: &mut Effects,
    ) -> Result<Output> {
        let mb = self.mailbox(id)?;
        let new_name = normalize_mailbox_name(new_name);
        if mb.name == INBOX {
            return Err(StoreError::Invalid("INBOX cannot be renamed here".into()));
        }
        if new_name == INBOX || new_name.starts_with(&format!("{}/", mb.name)) {
            return Err(StoreError::Invalid(format!(
                "cannot rename {} to {new_name}",
                mb.name
            )));
        }
        if self
            .mailbox_by_name
            .get((mb.account, new_name.as_str()))
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("mailbox {new_name}")));
        }
        let prefix = format!("{}/", mb.name);
        let mut moves = vec![(mb.clone(), new_name.clone())];
        for child in self.account_mailboxes(mb.account)? {
            if let Some(rest) = child.name.strip_prefix(&prefix) {
                let n = format!("{new_name}/{rest}");
                if self
                    .mailbox_by_name
                    .get((mb.account, n.as_str()))
                    .map_err(db_err)?
                    .is_some()
                {
                    return Err(StoreError::AlreadyExists(format!("mailbox {n}")));
                }
                moves.push((child, n));
            }
        }
        for (mut m, n) in moves {
            self.mailbox_by_name
                .remove((m.account, m.name.as_str()))
                .map_err(db_err)?;
            m.name = n;
            self.mailbox_by_name
                .insert((m.account, m.name.as_str()), m.id)
                .map_err(db_err)?;
            self.put_mailbox(&m)?;
        }
        fx.events.push(StoreEvent::MailboxList {
            account: mb.account,
        });
        Ok(Output::Unit)
    }

    pub(super) fn mailbox_subscribe(
        &mut self,
        id: MailboxId,
        on: bool,
        fx: &mut Effects,
    ) -> Result<Output> {
        let mut mb = self.mailbox(id)?;
        mb.subscribed = on;
        self.put_mailbox(&mb)?;
        fx.events.push(StoreEvent::MailboxList {
            account: mb.account,
        });
        Ok(Output::Unit)
    }

    pub(super) fn entries(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        self.messages
            .range((mailbox, 0u32)..=(mailbox, u32::MAX))
            .map_err(db_err)?
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                decode_message(k.value().1, v.value())
            })
            .collect()
    }

    pub(super) fn usage(&self, account: AccountId) -> Result<Usage> {
        let mut u = Usage::default();
        for mb in self.account_mailboxes(account)? {
            u.bytes += mb.size;
            u.messages += mb.messages as u64;
        }
        Ok(u)
    }

    pub(super) fn deliver(
        &mut self,
        d: Delivery,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<DeliveryReport> {
        let size = d.blob.size;
        let mut targets: Vec<Result<Mailbox>> = Vec::with_capacity(d.targets.len());
        // Usage added by earlier targets of this delivery, per account.
        let mut pending: Vec<(AccountId, u64)> = Vec::new();
        for t in &d.targets {
            let r = (|| {
                let account = self.account(t.account)?;
                let mb = match &t.mailbox {
                    MailboxTarget::Id(id) => {
                        let mb = self.mailbox(*id)?;
                        if mb.account != t.account {
                            return Err(StoreError::NotFound(format!("mailbox {id}")));
                        }
                        mb
                    }
                    MailboxTarget::Name { name, create } => {
                        let n = normalize_mailbox_name(name);
                        let found = self
                            .mailbox_by_name
                            .get((t.account, n.as_str()))
                            .map_err(db_err)?
                            .map(|v| v.value());
                        match found {
                            Some(id) => self.mailbox(id)?,
                            None if *create => {
                                let mb = self.new_mailbox(t.account, &n, None)?;
                                fx.events
                                    .push(StoreEvent::MailboxList { account: t.account });
                                mb
                            }
                            None => {
                                let id = self
                                    .mailbox_by_name
                                    .get((t.account, INBOX))
                                    .map_err(db_err)?
                                    .ok_or_else(|| StoreError::NotFound("INBOX".into()))?
                                    .value();
                                self.mailbox(id)?
                            }
                        }
                    }
                };
                if t.enforce_quota && (account.quota_bytes > 0 || account.quota_messages > 0) {
                    let u = self.usage(account.id)?;
                    let extra: u64 = pending
                        .iter()
                        .filter(|p| p.0 == account.id)
                        .map(|p| p.1)
                        .sum();
                    let count = pending.iter().filter(|p| p.0 == account.id).count() as u64;
                    if (account.quota_bytes > 0 && u.bytes + extra + size > account.quota_bytes)
                        || (account.quota_messages > 0
                            && u.messages + count + 1 > account.quota_messages)
                    {
                        return Err(StoreError::QuotaExceeded);
                    }
                }
                pending.push((account.id, size));
                Ok(mb)
            })();
            targets.push(r);
        }
        let ok = targets.iter().filter(|t| t.is_ok()).count() as u32;
        let queued = d.queue.is_some();
        self.trace_append(&d.trace)?;
        if ok == 0 && !queued {
            return Ok(DeliveryReport {
                blob: 0,
                targets: targets.into_iter().map(|t| t.map(|_| (0, 0))).collect(),
                queue_id: None,
            });
        }
        let blob = self.add_blob(d.blob, ok + queued as u32, fx, files)?;
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            match t {
                Ok(mb) => {
                    let mut mb = self.mailbox(mb.id)?;
                    let flags = d
                        .targets
                        .get(out.len())
                        .map(|t| t.flags.clone())
                        .unwrap_or_default();
                    let uid = self.append_entry(&mut mb, blob, size, d.internal_date, flags)?;
                    fx.events.push(StoreEvent::Mailbox {
                        account: mb.account,
                        mailbox: mb.id,
                        highest_modseq: mb.highest_modseq,
                    });
                    out.push(Ok((mb.id, uid)));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let queue_id = match d.queue {
            Some(q) => {
                let id = self.next_id(NEXT_QUEUE)?;
                let created = now();
                let entry = QueueEntry {
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
                };
                self.queue
                    .insert(id, json(&entry).as_slice())
                    .map_err(db_err)?;
                fx.events.push(StoreEvent::Queue);
                Some(id)
            }
            None => None,
        };
        Ok(DeliveryReport {
            blob,
            targets: out,
            queue_id,
        })
    }

    /// Adds a message to a mailbox (already loaded in `mb`) and saves the mailbox.
    pub(super) fn append_entry(
        &mut self,
        mb: &mut Mailbox,
        blob: BlobId,
        size: u64,
        internal_date: i64,
        flags: Flags,
    ) -> Result<Uid> {
        let uid = mb.uidnext;
        mb.uidnext += 1;
        mb.highest_modseq += 1;
        let e = MessageEntry {
            uid,
            blob,
            size,
            internal_date,
            modseq: mb.highest_modseq,
            flags,
        };
        mb.messages += 1;
        mb.size += size;
        if !e.flags.seen() {
            mb.unseen += 1;
        }
        self.messages
            .insert((mb.id, uid), encode_message(&e).as_slice())
            .map_err(db_err)?;
        self.modseq
            .insert((mb.id, e.modseq, uid), ())
            .map_err(db_err)?;
        self.put_mailbox(mb)?;
        Ok(uid)
    }

    pub(super) fn entry(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>> {
        match self.messages.get((mailbox, uid)).map_err(db_err)? {
            Some(v) => Ok(Some(decode_message(uid, v.value())?)),
            None => Ok(None),
        }
    }

    pub(super) fn flags_update(&mut self, u: FlagsUpdate, fx: &mut Effects) -> Result<Output> {
        let mut mb = self.mailbox(u.mailbox)?;
        let mut res = FlagsResult::default();
        let mut modseq = None;
        for uid in u.uids {
            let Some(mut e) = self.entry(mb.id, uid)? else {
                continue;
            };
            if let Some(since) = u.unchanged_since
                && e.modseq > since
            {
                res.modified.push(uid);
                continue;
            }
            let flags = e.flags.apply(u.op, &u.flags);
            if flags == e.flags {
                continue;
            }
            let m = *modseq.get_or_insert_with(|| {
                mb.highest_modseq += 1;
                mb.highest_modseq
            });
            match (e.flags.seen(), flags.seen()) {
                (false, true) => mb.unseen = mb.unseen.saturating_sub(1),
                (true, false) => mb.unseen += 1,
                _ => {}
            }
            self.modseq.remove((mb.id, e.modseq, uid)).map_err(db_err)?;
            e.flags = flags;
            e.modseq = m;
            self.modseq.insert((mb.id, m, uid), ()).map_err(db_err)?;
            self.messages
                .insert((mb.id, uid), encode_message(&e).as_slice())
                .map_err(db_err)?;
            res.updated.push((uid, e.flags, m));
        }
        if modseq.is_some() {
            self.put_mailbox(&mb)?;
            fx.events.push(StoreEvent::Mailbox {
                account: mb.account,
                mailbox: mb.id,
                highest_modseq: mb.highest_modseq,
            });
        }
        Ok(Output::Flags(res))
    }

    pub(super) fn expunge(
        &mut self,
        mb: &mut Mailbox,
        uids: &[Uid],
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Vec<Uid>> {
        let mut gone = Vec::new();
        let mut modseq = None;
        for &uid in uids {
            let Some(e) = self.entry(mb.id, uid)? else {
                continue;
            };
            let m = *modseq.get_or_insert_with(|| {
                mb.highest_modseq += 1;
                mb.highest_modseq
            });
            self.messages.remove((mb.id, uid)).map_err(db_err)?;
            self.modseq.remove((mb.id, e.modseq, uid)).map_err(db_err)?;
            self.expunged.insert((mb.id, m, uid), ()).map_err(db_err)?;
            mb.messages = mb.messages.saturating_sub(1);
            mb.size = mb.size.saturating_sub(e.size);
            if !e.flags.seen() {
                mb.unseen = mb.unseen.saturating_sub(1);
            }
            self.release_blob(e.blob, fx, files)?;
            gone.push(uid);
        }
        if !gone.is_empty() {
            self.put_mailbox(mb)?;
            fx.events.push(StoreEvent::Mailbox {
                account: mb.account,
                mailbox: mb.id,
                highest_modseq: mb.highest_modseq,
            });
        }
        Ok(gone)
    }

    pub(super) fn copy(
        &mut self,
        from: MailboxId,
        uids: &[Uid],
        to: MailboxId,
        remove_source: bool,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let mut src = self.mailbox(from)?;
        let mut dst = self.mailbox(to)?;
        let entries: Vec<MessageEntry> = uids
            .iter()
            .filter_map(|&u| self.entry(from, u).transpose())
            .collect::<Result<_>>()?;
        let account = self.account(dst.account)?;
        if account.quota_bytes > 0 || account.quota_messages > 0 {
            let u = self.usage(account.id)?;
            let (add_bytes, add_msgs) = if remove_source && src.account == dst.account {
                (0, 0)
            } else {
                (
                    entries.iter().map(|e| e.size).sum::<u64>(),
                    entries.len() as u64,
                )
            };
            if (account.quota_bytes > 0
                && add_bytes > 0
                && u.bytes + add_bytes > account.quota_bytes)
                || (account.quota_messages > 0
                    && add_msgs > 0
                    && u.messages + add_msgs > account.quota_messages)
            {
                return Err(StoreError::QuotaExceeded);
            }
        }
        let mut pairs = Vec::with_capacity(entries.len());
        for e in &entries {
            self.retain_blob(e.blob)?;
            let uid =
                self.append_entry(&mut dst, e.blob, e.size, e.internal_date, e.flags.clone())?;
            pairs.push((e.uid, uid));
        }
        if !pairs.is_empty() {
            fx.events.push(StoreEvent::Mailbox {
                account: dst.account,
                mailbox: dst.id,
                highest_modseq: dst.highest_modseq,
            });
        }
        if remove_source {
            let moved: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
            if from == to {
                src = self.mailbox(from)?;
            }
            self.expunge(&mut src, &moved, fx, files)?;
        }
        Ok(Output::Pairs(pairs))
    }
}
