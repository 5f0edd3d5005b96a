//! How the writer changes domains, accounts, aliases and API tokens.

use redb::ReadableTable;

use super::super::blobs::BlobFiles;
use super::super::db_err;
use super::super::tables::*;
use super::{Effects, Output, Tables};
use crate::rules;
use crate::*;

impl Tables<'_> {
    pub(super) fn domain_add(&mut self, name: String, fx: &mut Effects) -> Result<Output> {
        if self.domains.get(name.as_str()).map_err(db_err)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("domain {name}")));
        }
        let d = Domain {
            name,
            created: now(),
        };
        self.domains
            .insert(d.name.as_str(), json(&d).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Domain(d))
    }

    pub(super) fn domain_delete(&mut self, name: &str, fx: &mut Effects) -> Result<Output> {
        if self.domains.get(name).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        let suffix = format!("@{name}");
        let users = self
            .account_by_address
            .iter()
            .map_err(db_err)?
            .filter_map(|r| r.ok())
            .filter(|(k, _)| k.value().ends_with(&suffix))
            .count();
        let aliases = self
            .aliases
            .iter()
            .map_err(db_err)?
            .filter_map(|r| r.ok())
            .filter(|(k, _)| k.value().ends_with(&suffix))
            .count();
        rules::check_domain_unused(name, users as u64, aliases as u64)?;
        self.domains.remove(name).map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Unit)
    }

    /// The domain of `address` must be ours.
    fn require_domain(&self, address: &str) -> Result<()> {
        let domain = rules::domain_of(address);
        if self.domains.get(domain).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("domain {domain}")));
        }
        Ok(())
    }

    pub(super) fn account(&self, id: AccountId) -> Result<Account> {
        match self.accounts.get(id).map_err(db_err)? {
            Some(v) => from_json(v.value()),
            None => Err(StoreError::NotFound(format!("account {id}"))),
        }
    }

    pub(super) fn account_create(&mut self, new: NewAccount, fx: &mut Effects) -> Result<Output> {
        let address = new.address;
        self.require_domain(&address)?;
        if self
            .account_by_address
            .get(address.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("account {address}")));
        }
        if self
            .aliases
            .get(address.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("alias {address}")));
        }
        let id = self.next_id(NEXT_ACCOUNT)?;
        let a = Account {
            id,
            address,
            password_hash: new.password_hash,
            quota_bytes: new.quota_bytes,
            quota_messages: new.quota_messages,
            disabled: false,
            created: now(),
            forward: None,
            shared: new.shared,
        };
        self.accounts
            .insert(id, json(&a).as_slice())
            .map_err(db_err)?;
        self.account_by_address
            .insert(a.address.as_str(), id)
            .map_err(db_err)?;
        for (name, su) in rules::new_account_mailboxes() {
            self.new_mailbox(id, name, su)?;
            self.subscribe(id, name)?;
        }
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Account(a))
    }

    pub(super) fn account_update(
        &mut self,
        id: AccountId,
        up: AccountUpdate,
        fx: &mut Effects,
    ) -> Result<Output> {
        let mut a = self.account(id)?;
        rules::apply_account_update(&mut a, up);
        self.accounts
            .insert(id, json(&a).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Account(a))
    }

    pub(super) fn account_delete(
        &mut self,
        id: AccountId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let a = self.account(id)?;
        for mb in self.account_mailboxes(id)? {
            self.mailbox_remove(&mb, fx, files)?;
        }
        self.forget_account_shares(&a, fx)?;
        self.forget_account_metadata(id)?;
        self.forget_account_dav(id)?;
        self.accounts.remove(id).map_err(db_err)?;
        self.forget_subscriptions(id)?;
        self.sieve_active.remove(id).map_err(db_err)?;
        fx.sieve_changes.push((id, false));
        self.sieve
            .retain_in((id, "")..(id + 1, ""), |_, _| false)
            .map_err(db_err)?;
        self.seen
            .retain_in((id, "")..(id + 1, ""), |_, _| false)
            .map_err(db_err)?;
        self.senders
            .retain_in((id, "")..(id + 1, ""), |_, _| false)
            .map_err(db_err)?;
        self.account_by_address
            .remove(a.address.as_str())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        fx.events.push(StoreEvent::MailboxList { account: id });
        Ok(Output::Unit)
    }

    pub(super) fn alias_set(
        &mut self,
        address: String,
        targets: Vec<String>,
        fx: &mut Effects,
    ) -> Result<Output> {
        self.require_domain(&address)?;
        if self
            .account_by_address
            .get(address.as_str())
            .map_err(db_err)?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!("account {address}")));
        }
        let (created, policy) = match self.aliases.get(address.as_str()).map_err(db_err)? {
            Some(v) => {
                let old = from_json::<Alias>(v.value())?;
                (old.created, old.policy)
            }
            None => (now(), None),
        };
        let a = Alias {
            address,
            targets,
            created,
            policy,
        };
        self.aliases
            .insert(a.address.as_str(), json(&a).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Alias(a))
    }

    pub(super) fn alias_set_policy(
        &mut self,
        address: &str,
        policy: Option<SendPolicy>,
        fx: &mut Effects,
    ) -> Result<Output> {
        let Some(v) = self.aliases.get(address).map_err(db_err)? else {
            return Err(StoreError::NotFound(format!("alias {address}")));
        };
        let mut a = from_json::<Alias>(v.value())?;
        drop(v);
        a.policy = policy;
        self.aliases
            .insert(a.address.as_str(), json(&a).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Alias(a))
    }

    pub(super) fn alias_delete(&mut self, address: &str, fx: &mut Effects) -> Result<Output> {
        if self.aliases.remove(address).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("alias {address}")));
        }
        fx.events.push(StoreEvent::Directory);
        Ok(Output::Unit)
    }

    pub(super) fn token_put(&mut self, t: ApiToken) -> Result<Output> {
        if self.tokens.get(t.name.as_str()).map_err(db_err)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("token {}", t.name)));
        }
        self.tokens
            .insert(t.name.as_str(), json(&t).as_slice())
            .map_err(db_err)?;
        Ok(Output::Unit)
    }

    pub(super) fn token_delete(&mut self, name: &str) -> Result<Output> {
        if self.tokens.remove(name).map_err(db_err)?.is_none() {
            return Err(StoreError::NotFound(format!("token {name}")));
        }
        Ok(Output::Unit)
    }
}
