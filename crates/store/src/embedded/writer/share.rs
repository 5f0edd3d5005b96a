//! How the writer keeps access lists, readers' own \Seen and send-as grants, and lets them go
//! with the mailboxes and accounts they name. Identifiers and addresses come lower-cased.

use std::collections::HashSet;

use redb::ReadableTable;

use super::super::db_err;
use super::super::share::second_keys;
use super::{Effects, Output, Tables};
use crate::rules;
use crate::*;

impl Tables<'_> {
    pub(super) fn acl_set(
        &mut self,
        mailbox: MailboxId,
        identifier: &str,
        rights: Option<Rights>,
        fx: &mut Effects,
    ) -> Result<Output> {
        let mb = self.mailbox(mailbox)?;
        match rules::acl_rights(rights) {
            Some(r) => {
                self.acl
                    .insert((mailbox, identifier), r.as_str())
                    .map_err(db_err)?;
                self.acl_by_identifier
                    .insert((identifier, mailbox), ())
                    .map_err(db_err)?;
            }
            None => {
                self.acl.remove((mailbox, identifier)).map_err(db_err)?;
                self.acl_by_identifier
                    .remove((identifier, mailbox))
                    .map_err(db_err)?;
            }
        }
        fx.events.push(StoreEvent::Acl {
            account: mb.account,
            mailbox,
        });
        Ok(Output::Unit)
    }

    /// The UIDs among `found` that `reader` has seen.
    pub(super) fn seen_by(
        &self,
        mailbox: MailboxId,
        reader: AccountId,
        found: &[MessageEntry],
    ) -> Result<HashSet<Uid>> {
        let mut seen = HashSet::new();
        for e in found {
            if self
                .seen_private
                .get((mailbox, reader, e.uid))
                .map_err(db_err)?
                .is_some()
            {
                seen.insert(e.uid);
            }
        }
        Ok(seen)
    }

    /// Saves what a STORE changed of a reader's own \Seen.
    pub(super) fn seen_private_change(
        &mut self,
        mailbox: MailboxId,
        reader: AccountId,
        add: &[Uid],
        remove: &[Uid],
    ) -> Result<()> {
        for &uid in add {
            self.seen_private
                .insert((mailbox, reader, uid), ())
                .map_err(db_err)?;
        }
        if !add.is_empty() {
            self.seen_private_readers
                .insert((reader, mailbox), ())
                .map_err(db_err)?;
        }
        for &uid in remove {
            self.seen_private
                .remove((mailbox, reader, uid))
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// The readers with rows in a mailbox: one seek per reader, not one step per row.
    fn seen_readers(&self, mailbox: MailboxId) -> Result<Vec<AccountId>> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let next = self
                .seen_private
                .range((mailbox, from, 0u32)..(mailbox + 1, 0u64, 0u32))
                .map_err(db_err)?
                .next()
                .transpose()
                .map_err(db_err)?;
            let Some((k, _)) = next else { break };
            let reader = k.value().1;
            out.push(reader);
            match reader.checked_add(1) {
                Some(r) => from = r,
                None => break,
            }
        }
        Ok(out)
    }

    /// Expunged messages leave every reader's \Seen (their UIDs never come back).
    pub(super) fn forget_seen(&mut self, mailbox: MailboxId, uids: &[Uid]) -> Result<()> {
        if uids.is_empty() {
            return Ok(());
        }
        for reader in self.seen_readers(mailbox)? {
            for &uid in uids {
                self.seen_private
                    .remove((mailbox, reader, uid))
                    .map_err(db_err)?;
            }
        }
        Ok(())
    }

    /// The access list and the readers' \Seen of a mailbox that goes.
    pub(super) fn forget_mailbox_shares(&mut self, mailbox: MailboxId) -> Result<()> {
        let identifiers: Vec<String> = self
            .acl
            .range((mailbox, "")..(mailbox + 1, ""))
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value().1.to_string()).map_err(db_err))
            .collect::<Result<_>>()?;
        for id in &identifiers {
            self.acl_by_identifier
                .remove((id.as_str(), mailbox))
                .map_err(db_err)?;
        }
        self.acl
            .retain_in((mailbox, "")..(mailbox + 1, ""), |_, _| false)
            .map_err(db_err)?;
        for reader in self.seen_readers(mailbox)? {
            self.seen_private_readers
                .remove((reader, mailbox))
                .map_err(db_err)?;
        }
        self.seen_private
            .retain_in((mailbox, 0u64, 0u32)..(mailbox + 1, 0u64, 0u32), |_, _| {
                false
            })
            .map_err(db_err)?;
        Ok(())
    }

    /// What of sharing names an account that goes (its own mailboxes took theirs with them):
    /// its \Seen in other mailboxes, the lines for its address, its send-as grants either way.
    pub(super) fn forget_account_shares(&mut self, a: &Account, fx: &mut Effects) -> Result<()> {
        let id = a.id;
        let boxes: Vec<MailboxId> = self
            .seen_private_readers
            .range((id, 0u64)..=(id, u64::MAX))
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value().1).map_err(db_err))
            .collect::<Result<_>>()?;
        for mb in boxes {
            self.seen_private
                .retain_in((mb, id, 0u32)..=(mb, id, u32::MAX), |_, _| false)
                .map_err(db_err)?;
        }
        self.seen_private_readers
            .retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)
            .map_err(db_err)?;

        let address = a.address.as_str();
        let lines: Vec<MailboxId> = self
            .acl_by_identifier
            .range((address, 0u64)..=(address, u64::MAX))
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value().1).map_err(db_err))
            .collect::<Result<_>>()?;
        for mb in lines {
            self.acl.remove((mb, address)).map_err(db_err)?;
            if let Ok(m) = self.mailbox(mb) {
                fx.events.push(StoreEvent::Acl {
                    account: m.account,
                    mailbox: mb,
                });
            }
        }
        self.acl_by_identifier
            .retain_in((address, 0u64)..=(address, u64::MAX), |_, _| false)
            .map_err(db_err)?;

        for delegate in second_keys(&self.send_as, address)? {
            self.send_as
                .remove((address, delegate.as_str()))
                .map_err(db_err)?;
            self.send_as_by_delegate
                .remove((delegate.as_str(), address))
                .map_err(db_err)?;
        }
        for addr in second_keys(&self.send_as_by_delegate, address)? {
            self.send_as
                .remove((addr.as_str(), address))
                .map_err(db_err)?;
            self.send_as_by_delegate
                .remove((address, addr.as_str()))
                .map_err(db_err)?;
        }
        Ok(())
    }

    pub(super) fn send_as_set(
        &mut self,
        address: &str,
        delegate: &str,
        mode: Option<SendAs>,
    ) -> Result<Output> {
        match mode {
            Some(m) => {
                self.send_as
                    .insert((address, delegate), rules::send_as_name(m))
                    .map_err(db_err)?;
                self.send_as_by_delegate
                    .insert((delegate, address), ())
                    .map_err(db_err)?;
            }
            None => {
                self.send_as.remove((address, delegate)).map_err(db_err)?;
                self.send_as_by_delegate
                    .remove((delegate, address))
                    .map_err(db_err)?;
            }
        }
        Ok(Output::Unit)
    }
}
