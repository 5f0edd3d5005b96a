//! How the writer keeps IMAP METADATA entries, checks their limits within the batch's
//! transaction, and lets them go with the mailboxes and accounts they belong to.

use redb::ReadableTable;

use super::super::db_err;
use super::{Effects, Tables};
use crate::metadata::{check_metadata, metadata_by_keeper, metadata_events};
use crate::*;

impl Tables<'_> {
    /// (name, value size) of the account's entries on the mailbox (0: the server).
    fn metadata_scope(&self, account: AccountId, mailbox: u64) -> Result<Vec<(String, u64)>> {
        self.metadata
            .range((account, mailbox, "")..(account, mailbox + 1, ""))
            .map_err(db_err)?
            .map(|x| {
                let (k, v) = x.map_err(db_err)?;
                Ok((k.value().2.to_string(), v.value().len() as u64))
            })
            .collect()
    }

    /// What all the account's entries take: names and values.
    fn metadata_total(&self, account: AccountId) -> Result<u64> {
        let mut total = 0;
        for x in self
            .metadata
            .range((account, 0u64, "")..(account + 1, 0u64, ""))
            .map_err(db_err)?
        {
            let (k, v) = x.map_err(db_err)?;
            total += (k.value().2.len() + v.value().len()) as u64;
        }
        Ok(total)
    }

    /// Changes come with their names as kept, each once. Each keeper's share is checked
    /// against its limits before any is applied.
    pub(super) fn metadata_set(
        &mut self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        changes: &[(String, Option<Vec<u8>>)],
        limits: &MetadataLimits,
        fx: &mut Effects,
    ) -> Result<Result<(), MetadataRefused>> {
        self.account(account)?;
        let owner = match mailbox {
            Some(id) => Some(self.mailbox(id)?.account),
            None => None,
        };
        let mb = mailbox.unwrap_or(0);
        let groups = metadata_by_keeper(account, owner, changes);
        for (&keeper, changes) in &groups {
            let scope = self.metadata_scope(keeper, mb)?;
            let total = self.metadata_total(keeper)?;
            if let Err(refused) = check_metadata(&scope, total, changes, limits) {
                return Ok(Err(refused));
            }
        }
        for (&keeper, changes) in &groups {
            for (name, value) in changes {
                match value {
                    Some(v) => self
                        .metadata
                        .insert((keeper, mb, name.as_str()), v.as_slice())
                        .map(|_| ()),
                    None => self
                        .metadata
                        .remove((keeper, mb, name.as_str()))
                        .map(|_| ()),
                }
                .map_err(db_err)?;
            }
            let any = self
                .metadata
                .range((keeper, mb, "")..(keeper, mb + 1, ""))
                .map_err(db_err)?
                .next()
                .is_some();
            if any {
                self.metadata_by_mailbox
                    .insert((mb, keeper), ())
                    .map_err(db_err)?;
            } else {
                self.metadata_by_mailbox
                    .remove((mb, keeper))
                    .map_err(db_err)?;
            }
        }
        fx.events.extend(metadata_events(mailbox, &groups));
        Ok(Ok(()))
    }

    /// Every account's entries on a mailbox that goes.
    pub(super) fn forget_mailbox_metadata(&mut self, mailbox: MailboxId) -> Result<()> {
        let accounts: Vec<AccountId> = self
            .metadata_by_mailbox
            .range((mailbox, 0u64)..=(mailbox, u64::MAX))
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value().1).map_err(db_err))
            .collect::<Result<_>>()?;
        for account in accounts {
            self.metadata
                .retain_in(
                    (account, mailbox, "")..(account, mailbox + 1, ""),
                    |_, _| false,
                )
                .map_err(db_err)?;
            self.metadata_by_mailbox
                .remove((mailbox, account))
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Every entry an account that goes kept, on any mailbox or the server.
    pub(super) fn forget_account_metadata(&mut self, account: AccountId) -> Result<()> {
        let mut boxes: Vec<u64> = Vec::new();
        for x in self
            .metadata
            .range((account, 0u64, "")..(account + 1, 0u64, ""))
            .map_err(db_err)?
        {
            let mb = x.map_err(db_err)?.0.value().1;
            if boxes.last() != Some(&mb) {
                boxes.push(mb);
            }
        }
        for mb in boxes {
            self.metadata_by_mailbox
                .remove((mb, account))
                .map_err(db_err)?;
        }
        self.metadata
            .retain_in((account, 0u64, "")..(account + 1, 0u64, ""), |_, _| false)
            .map_err(db_err)?;
        Ok(())
    }
}
