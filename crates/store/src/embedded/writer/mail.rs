//! How the writer changes mailboxes and the messages in them: delivery, flags, expunge, copy.

use redb::ReadableTable;

use super::super::blobs::BlobFiles;
use super::super::db_err;
use super::super::tables::*;
use super::{Effects, Output, Tables};
use crate::rules::{self, normalize_mailbox_name};
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
        rules::check_mailbox_delete(&mb)?;
        self.mailbox_remove(&mb, fx, files)?;
        fx.events.extend(rules::mailbox_deleted(&mb));
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
        self.release_kept(mb.id, fx, files)?;
        self.forget_mailbox_shares(mb.id)?;
        self.forget_mailbox_metadata(mb.id)?;
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
        rules::check_mailbox_rename(&mb, &new_name)?;
        if self
            .mailbox_by_name
            .get((mb.account, new_name.as_str()))
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("mailbox {new_name}")));
        }
        let mut moves = vec![(mb.clone(), new_name.clone())];
        for child in self.account_mailboxes(mb.account)? {
            if let Some(n) = rules::renamed_child(&mb.name, &new_name, &child.name) {
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
        self.rename_subscriptions(mb.account, &mb.name, &new_name)?;
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
        Ok(rules::usage_of(&self.account_mailboxes(account)?))
    }

    pub(super) fn deliver(
        &mut self,
        d: Delivery,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<DeliveryReport> {
        let size = d.blob.size;
        let mut targets: Vec<Result<Mailbox>> = Vec::with_capacity(d.targets.len());
        let mut quota = rules::DeliveryQuota::default();
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
                                // Made by a filter: subscribed, so mail programs show it.
                                let mb = self.new_mailbox(t.account, &n, None)?;
                                self.subscribe(t.account, &mb.name)?;
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
                if t.enforce_quota && rules::has_quota(&account) {
                    quota.check(&account, self.usage(account.id)?, size)?;
                }
                quota.take(account.id, size);
                Ok(mb)
            })();
            targets.push(r);
        }
        let ok = targets.iter().filter(|t| t.is_ok()).count() as u32;
        let queued = d.queue.is_some();
        self.trace_append(&d.trace)?;
        if ok == 0 && !queued {
            return Ok(rules::delivered_nowhere(targets));
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
                    fx.events.push(rules::mailbox_changed(&mb));
                    out.push(Ok((mb.id, uid)));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let queue_id = match d.queue {
            Some(q) => {
                let id = self.next_id(NEXT_QUEUE)?;
                let entry = rules::new_queue_entry(id, blob, size, q, now());
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
        let e = rules::append(mb, blob, size, internal_date, flags);
        self.messages
            .insert((mb.id, e.uid), encode_message(&e).as_slice())
            .map_err(db_err)?;
        self.modseq
            .insert((mb.id, e.modseq, e.uid), ())
            .map_err(db_err)?;
        self.put_mailbox(mb)?;
        Ok(e.uid)
    }

    pub(super) fn entry(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<MessageEntry>> {
        match self.messages.get((mailbox, uid)).map_err(db_err)? {
            Some(v) => Ok(Some(decode_message(uid, v.value())?)),
            None => Ok(None),
        }
    }

    /// The messages of `uids` that are in the mailbox.
    fn found(&self, mailbox: MailboxId, uids: &[Uid]) -> Result<Vec<MessageEntry>> {
        uids.iter()
            .filter_map(|&u| self.entry(mailbox, u).transpose())
            .collect()
    }

    pub(super) fn flags_update(&mut self, u: FlagsUpdate, fx: &mut Effects) -> Result<Output> {
        let mut mb = self.mailbox(u.mailbox)?;
        let found = self.found(mb.id, &u.uids)?;
        let reader = rules::private_reader(&mb, &u);
        let seen = match reader {
            Some(r) => {
                self.account(r)?;
                self.seen_by(mb.id, r, &found)?
            }
            None => Default::default(),
        };
        let plan = rules::update_flags(&mut mb, &u, &found, &seen);
        let changes = &plan.changes;
        for c in changes {
            let e = &c.entry;
            self.modseq
                .remove((mb.id, c.old_modseq, e.uid))
                .map_err(db_err)?;
            self.modseq
                .insert((mb.id, e.modseq, e.uid), ())
                .map_err(db_err)?;
            self.messages
                .insert((mb.id, e.uid), encode_message(e).as_slice())
                .map_err(db_err)?;
        }
        if let Some(r) = reader {
            self.seen_private_change(mb.id, r, &plan.seen_add, &plan.seen_remove)?;
        }
        if !changes.is_empty() {
            self.put_mailbox(&mb)?;
            fx.events.push(rules::mailbox_changed(&mb));
        }
        Ok(Output::Flags(plan.result))
    }

    pub(super) fn expunge(
        &mut self,
        mb: &mut Mailbox,
        uids: &[Uid],
        fx: &mut Effects,
    ) -> Result<Vec<Uid>> {
        let found = self.found(mb.id, uids)?;
        let gone = rules::expunge(mb, uids, &found);
        for e in &gone {
            self.messages.remove((mb.id, e.uid)).map_err(db_err)?;
            self.modseq
                .remove((mb.id, e.modseq, e.uid))
                .map_err(db_err)?;
            self.expunged
                .insert((mb.id, mb.highest_modseq, e.uid), ())
                .map_err(db_err)?;
            self.keep_expunged(mb.id, e)?;
        }
        let gone: Vec<Uid> = gone.into_iter().map(|e| e.uid).collect();
        if !gone.is_empty() {
            self.forget_seen(mb.id, &gone)?;
            self.put_mailbox(mb)?;
            fx.events.push(rules::mailbox_changed(mb));
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
    ) -> Result<Output> {
        let mut src = self.mailbox(from)?;
        let mut dst = self.mailbox(to)?;
        // Each asked UID as often as asked: a message named twice is copied twice.
        let entries = self.found(from, uids)?;
        let account = self.account(dst.account)?;
        if rules::has_quota(&account) {
            let moved_within = remove_source && src.account == dst.account;
            rules::check_copy_quota(&account, self.usage(account.id)?, &entries, moved_within)?;
        }
        let mut pairs = Vec::with_capacity(entries.len());
        for e in &entries {
            self.retain_blob(e.blob)?;
            let uid =
                self.append_entry(&mut dst, e.blob, e.size, e.internal_date, e.flags.clone())?;
            pairs.push((e.uid, uid));
        }
        if !pairs.is_empty() {
            fx.events.push(rules::mailbox_changed(&dst));
        }
        if remove_source {
            let moved: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
            if from == to {
                src = self.mailbox(from)?;
            }
            self.expunge(&mut src, &moved, fx)?;
        }
        Ok(Output::Pairs(pairs))
    }
}
