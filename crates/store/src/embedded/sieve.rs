//! Sieve scripts, seen marks and sender verdicts; which accounts have an active script is also
//! kept in memory, as delivery asks for every recipient.

use async_trait::async_trait;

use super::tables::*;
use super::writer::{Job, Output};
use super::{EmbeddedStore, db_err};
use crate::rules;
use crate::*;

#[async_trait]
impl SieveStore for EmbeddedStore {
    async fn sieve_put(&self, account: AccountId, name: &str, source: &str) -> Result<()> {
        self.write(Job::SievePut(account, name.into(), source.into()))
            .await
            .map(|_| ())
    }

    async fn sieve_get(&self, account: AccountId, name: &str) -> Result<Option<String>> {
        self.read(|r| {
            let t = r.open_table(SIEVE).map_err(db_err)?;
            Ok(t.get((account, name))
                .map_err(db_err)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
        })
    }

    async fn sieve_list(&self, account: AccountId) -> Result<Vec<SieveScript>> {
        self.read(|r| {
            let t = r.open_table(SIEVE).map_err(db_err)?;
            let active = r.open_table(SIEVE_ACTIVE).map_err(db_err)?;
            let active = active
                .get(account)
                .map_err(db_err)?
                .map(|v| v.value().to_string());
            let mut out = Vec::new();
            for x in t.range((account, "")..(account + 1, "")).map_err(db_err)? {
                let (k, v) = x.map_err(db_err)?;
                let name = k.value().1.to_string();
                out.push(SieveScript {
                    active: active.as_deref() == Some(name.as_str()),
                    name,
                    size: v.value().len() as u64,
                });
            }
            Ok(out)
        })
    }

    async fn sieve_activate(&self, account: AccountId, name: Option<&str>) -> Result<()> {
        self.write(Job::SieveActivate(account, name.map(str::to_string)))
            .await
            .map(|_| ())
    }

    async fn sieve_active(&self, account: AccountId) -> Result<Option<(String, String)>> {
        if !self
            .shared
            .sieve_accounts
            .lock()
            .unwrap()
            .contains(&account)
        {
            return Ok(None);
        }
        self.read(|r| {
            let active = r.open_table(SIEVE_ACTIVE).map_err(db_err)?;
            let Some(name) = active
                .get(account)
                .map_err(db_err)?
                .map(|v| v.value().to_string())
            else {
                return Ok(None);
            };
            let t = r.open_table(SIEVE).map_err(db_err)?;
            Ok(t.get((account, name.as_str())).map_err(db_err)?.map(|v| {
                (
                    name.clone(),
                    String::from_utf8_lossy(v.value()).into_owned(),
                )
            }))
        })
    }

    async fn sieve_delete(&self, account: AccountId, name: &str) -> Result<()> {
        self.write(Job::SieveDelete(account, name.into()))
            .await
            .map(|_| ())
    }

    async fn sieve_rename(&self, account: AccountId, from: &str, to: &str) -> Result<()> {
        self.write(Job::SieveRename(account, from.into(), to.into()))
            .await
            .map(|_| ())
    }

    async fn sender_verdict_set(
        &self,
        account: AccountId,
        sender: &str,
        junk: Option<bool>,
    ) -> Result<()> {
        self.write(Job::SenderVerdict(account, rules::sender_key(sender), junk))
            .await
            .map(|_| ())
    }

    async fn sender_verdict(&self, account: AccountId, sender: &str) -> Result<Option<bool>> {
        let sender = rules::sender_key(sender);
        self.read(|r| {
            let t = r.open_table(SENDERS).map_err(db_err)?;
            Ok(t.get((account, sender.as_str()))
                .map_err(db_err)?
                .map(|v| v.value() == 1))
        })
    }

    async fn sender_verdict_list(&self, account: AccountId) -> Result<Vec<(String, bool)>> {
        self.read(|r| {
            let t = r.open_table(SENDERS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t.range((account, "")..(account + 1, "")).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push((k.value().1.to_string(), v.value() == 1));
            }
            Ok(out)
        })
    }

    async fn seen_mark(
        &self,
        account: AccountId,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        expect_output!(
            self.write(Job::SeenMark {
                account,
                key: key.into(),
                now,
                expires,
            })
            .await?,
            Bool
        )
    }
}
