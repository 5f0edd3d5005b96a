//! How the writer keeps subscriptions: names of an account, whether or not a mailbox has them.

use redb::ReadableTable;

use super::super::db_err;
use super::{Effects, Output, Tables};
use crate::rules;
use crate::*;

impl Tables<'_> {
    pub(super) fn subscription_set(
        &mut self,
        account: AccountId,
        name: &str,
        on: bool,
        fx: &mut Effects,
    ) -> Result<Output> {
        self.account(account)?;
        let name = rules::subscription_name(name)?;
        if on {
            self.subscribe(account, &name)?;
        } else {
            self.subscriptions
                .remove((account, name.as_str()))
                .map_err(db_err)?;
        }
        fx.events.push(StoreEvent::MailboxList { account });
        Ok(Output::Unit)
    }

    pub(super) fn subscribe(&mut self, account: AccountId, name: &str) -> Result<()> {
        self.subscriptions
            .insert((account, name), ())
            .map_err(db_err)?;
        Ok(())
    }

    fn account_subscriptions(&self, account: AccountId) -> Result<Vec<String>> {
        self.subscriptions
            .range((account, "")..(account + 1, ""))
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value().1.to_string()).map_err(db_err))
            .collect()
    }

    /// The subscriptions of `old` and of the names below it move to `new`.
    pub(super) fn rename_subscriptions(
        &mut self,
        account: AccountId,
        old: &str,
        new: &str,
    ) -> Result<()> {
        let subs = self.account_subscriptions(account)?;
        let moves = rules::renamed_subscriptions(old, new, &subs);
        for (from, _) in &moves {
            self.subscriptions
                .remove((account, from.as_str()))
                .map_err(db_err)?;
        }
        for (_, to) in &moves {
            self.subscribe(account, to)?;
        }
        Ok(())
    }

    pub(super) fn forget_subscriptions(&mut self, account: AccountId) -> Result<()> {
        self.subscriptions
            .retain_in((account, "")..(account + 1, ""), |_, _| false)
            .map_err(db_err)?;
        Ok(())
    }
}
