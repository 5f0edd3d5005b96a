//! Domains, accounts, aliases and API tokens: read from redb, changed through the writer.

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err, get_bytes};
use crate::rules;
use crate::*;

#[async_trait]
impl DirectoryStore for EmbeddedStore {
    async fn domain_add(&self, name: &str) -> Result<Domain> {
        expect_output!(self.write(Job::DomainAdd(name.to_string())).await?, Domain)
    }

    async fn domain_delete(&self, name: &str) -> Result<()> {
        self.write(Job::DomainDelete(name.to_string()))
            .await
            .map(|_| ())
    }

    async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        self.get_json(|r| get_bytes(r, DOMAINS, name))
    }

    async fn domain_list(&self) -> Result<Vec<Domain>> {
        self.list_json(DOMAINS)
    }

    async fn account_create(&self, new: NewAccount) -> Result<Account> {
        expect_output!(self.write(Job::AccountCreate(new)).await?, Account)
    }

    async fn account_get(&self, id: AccountId) -> Result<Option<Account>> {
        self.get_json(|r| get_bytes(r, ACCOUNTS, id))
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<Account>> {
        let id = self.read(|r| {
            let t = r.open_table(ACCOUNT_BY_ADDRESS).map_err(db_err)?;
            Ok(t.get(address).map_err(db_err)?.map(|v| v.value()))
        })?;
        match id {
            Some(id) => self.get_json(|r| get_bytes(r, ACCOUNTS, id)),
            None => Ok(None),
        }
    }

    async fn account_list(&self) -> Result<Vec<Account>> {
        self.list_json(ACCOUNTS)
    }

    async fn account_update(&self, id: AccountId, update: AccountUpdate) -> Result<Account> {
        expect_output!(self.write(Job::AccountUpdate(id, update)).await?, Account)
    }

    async fn account_delete(&self, id: AccountId) -> Result<()> {
        self.write(Job::AccountDelete(id)).await.map(|_| ())
    }

    async fn account_usage(&self, id: AccountId) -> Result<Usage> {
        Ok(rules::usage_of(&self.mailbox_list(id).await?))
    }

    async fn alias_set(&self, address: &str, targets: Vec<String>) -> Result<Alias> {
        expect_output!(
            self.write(Job::AliasSet(address.to_string(), targets))
                .await?,
            Alias
        )
    }

    async fn alias_set_policy(&self, address: &str, policy: Option<SendPolicy>) -> Result<Alias> {
        expect_output!(
            self.write(Job::AliasPolicy(address.to_string(), policy))
                .await?,
            Alias
        )
    }

    async fn alias_get(&self, address: &str) -> Result<Option<Alias>> {
        self.get_json(|r| get_bytes(r, ALIASES, address))
    }

    async fn alias_list(&self) -> Result<Vec<Alias>> {
        self.list_json(ALIASES)
    }

    async fn alias_delete(&self, address: &str) -> Result<()> {
        self.write(Job::AliasDelete(address.to_string()))
            .await
            .map(|_| ())
    }

    async fn token_put(&self, token: ApiToken) -> Result<()> {
        self.write(Job::TokenPut(token)).await.map(|_| ())
    }

    async fn token_list(&self) -> Result<Vec<ApiToken>> {
        self.list_json(TOKENS)
    }

    async fn token_delete(&self, name: &str) -> Result<()> {
        self.write(Job::TokenDelete(name.into())).await.map(|_| ())
    }
}
