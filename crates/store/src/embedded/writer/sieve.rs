//! How the writer changes Sieve scripts, seen marks and sender verdicts.

use redb::ReadableTable;

use super::super::db_err;
use super::{Effects, Output, Tables};
use crate::rules;
use crate::*;

impl Tables<'_> {
    pub(super) fn sieve_active_name(&self, account: AccountId) -> Result<Option<String>> {
        Ok(self
            .sieve_active
            .get(account)
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }

    pub(super) fn sieve_put(
        &mut self,
        account: AccountId,
        name: &str,
        source: &str,
    ) -> Result<Output> {
        self.account(account)?;
        self.sieve
            .insert((account, name), source.as_bytes())
            .map_err(db_err)?;
        Ok(Output::Unit)
    }

    pub(super) fn sieve_activate(
        &mut self,
        account: AccountId,
        name: Option<String>,
        fx: &mut Effects,
    ) -> Result<Output> {
        self.account(account)?;
        match name {
            Some(n) => {
                if self
                    .sieve
                    .get((account, n.as_str()))
                    .map_err(db_err)?
                    .is_none()
                {
                    return Err(StoreError::NotFound(format!("script {n}")));
                }
                self.sieve_active
                    .insert(account, n.as_str())
                    .map_err(db_err)?;
                fx.sieve_changes.push((account, true));
            }
            None => {
                self.sieve_active.remove(account).map_err(db_err)?;
                fx.sieve_changes.push((account, false));
            }
        }
        Ok(Output::Unit)
    }

    pub(super) fn sieve_delete(&mut self, account: AccountId, name: &str) -> Result<Output> {
        rules::check_sieve_delete(
            self.sieve_active_name(account)?.as_deref() == Some(name),
            name,
        )?;
        if self
            .sieve
            .remove((account, name))
            .map_err(db_err)?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("script {name}")));
        }
        Ok(Output::Unit)
    }

    pub(super) fn sieve_rename(
        &mut self,
        account: AccountId,
        from: &str,
        to: &str,
    ) -> Result<Output> {
        if self.sieve.get((account, to)).map_err(db_err)?.is_some() {
            return Err(StoreError::AlreadyExists(format!("script {to}")));
        }
        let Some(v) = self.sieve.remove((account, from)).map_err(db_err)? else {
            return Err(StoreError::NotFound(format!("script {from}")));
        };
        let source = v.value().to_vec();
        drop(v);
        self.sieve
            .insert((account, to), source.as_slice())
            .map_err(db_err)?;
        if self.sieve_active_name(account)?.as_deref() == Some(from) {
            self.sieve_active.insert(account, to).map_err(db_err)?;
        }
        Ok(Output::Unit)
    }

    pub(super) fn sender_verdict_set(
        &mut self,
        account: AccountId,
        sender: &str,
        junk: Option<bool>,
    ) -> Result<Output> {
        match junk {
            Some(j) => {
                self.account(account)?;
                self.senders
                    .insert((account, sender), j as u8)
                    .map_err(db_err)?;
            }
            None => {
                self.senders.remove((account, sender)).map_err(db_err)?;
            }
        }
        Ok(Output::Unit)
    }

    pub(super) fn seen_mark(
        &mut self,
        account: AccountId,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<Output> {
        let until = self
            .seen
            .get((account, key))
            .map_err(db_err)?
            .map(|v| v.value());
        if until.is_some_and(|u| u > now) {
            return Ok(Output::Bool(true));
        }
        self.seen.insert((account, key), expires).map_err(db_err)?;
        Ok(Output::Bool(false))
    }
}
