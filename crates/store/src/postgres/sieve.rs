//! Sieve scripts, seen marks and sender verdicts in PostgreSQL.

use async_trait::async_trait;

use super::directory::account;
use super::{PgStore, Prepared, exists, one_row, pg};
use crate::rules;
use crate::*;

#[async_trait]
impl SieveStore for PgStore {
    async fn sieve_put(&self, account_id: AccountId, name: &str, source: &str) -> Result<()> {
        let (name, source) = (name.to_string(), source.to_string());
        self.write(tx!(|tx, _fx| {
            account(tx, account_id, false).await?;
            tx.run(
                "INSERT INTO sieve (account, name, source) VALUES ($1, $2, $3) \
                 ON CONFLICT (account, name) DO UPDATE SET source = EXCLUDED.source",
                &[&(account_id as i64), &name, &source],
            )
            .await
            .map_err(pg)?;
            Ok(())
        }))
        .await
    }

    async fn sieve_get(&self, account: AccountId, name: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT source FROM sieve WHERE account = $1 AND name = $2",
            &[&(account as i64), &name],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0)))
    }

    async fn sieve_list(&self, account: AccountId) -> Result<Vec<SieveScript>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT s.name, octet_length(s.source)::bigint, a.name IS NOT NULL FROM sieve s \
             LEFT JOIN sieve_active a ON a.account = s.account AND a.name = s.name \
             WHERE s.account = $1 ORDER BY s.name COLLATE \"C\"",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| SieveScript {
            name: r.get(0),
            size: r.get::<_, i64>(1) as u64,
            active: r.get(2),
        })
        .collect())
    }

    async fn sieve_activate(&self, account_id: AccountId, name: Option<&str>) -> Result<()> {
        let name = name.map(str::to_string);
        self.write(tx!(|tx, _fx| {
            account(tx, account_id, true).await?;
            match name {
                Some(n) => {
                    if !exists(
                        tx,
                        "SELECT 1 FROM sieve WHERE account = $1 AND name = $2",
                        &[&(account_id as i64), &n],
                    )
                    .await?
                    {
                        return Err(StoreError::NotFound(format!("script {n}")));
                    }
                    tx.run(
                        "INSERT INTO sieve_active (account, name) VALUES ($1, $2) \
                         ON CONFLICT (account) DO UPDATE SET name = EXCLUDED.name",
                        &[&(account_id as i64), &n],
                    )
                    .await
                    .map_err(pg)?;
                }
                None => {
                    tx.run(
                        "DELETE FROM sieve_active WHERE account = $1",
                        &[&(account_id as i64)],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            Ok(())
        }))
        .await
    }

    async fn sieve_active(&self, account: AccountId) -> Result<Option<(String, String)>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT s.name, s.source FROM sieve_active a JOIN sieve s \
             ON s.account = a.account AND s.name = a.name WHERE a.account = $1",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .map(|r| (r.get(0), r.get(1))))
    }

    async fn sieve_delete(&self, account_id: AccountId, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(tx!(|tx, _fx| {
            let active = exists(
                tx,
                "SELECT 1 FROM sieve_active WHERE account = $1 AND name = $2",
                &[&(account_id as i64), &name],
            )
            .await?;
            rules::check_sieve_delete(active, &name)?;
            one_row(
                tx,
                "DELETE FROM sieve WHERE account = $1 AND name = $2",
                &[&(account_id as i64), &name],
                || format!("script {name}"),
            )
            .await?;
            Ok(())
        }))
        .await
    }

    async fn sieve_rename(&self, account_id: AccountId, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(tx!(|tx, _fx| {
            let a = account_id as i64;
            if exists(
                tx,
                "SELECT 1 FROM sieve WHERE account = $1 AND name = $2",
                &[&a, &to],
            )
            .await?
            {
                return Err(StoreError::AlreadyExists(format!("script {to}")));
            }
            // The active pointer follows the script (no foreign key holds it back).
            let active = tx
                .maybe_row(
                    "DELETE FROM sieve_active WHERE account = $1 AND name = $2 RETURNING 1",
                    &[&a, &from],
                )
                .await
                .map_err(pg)?
                .is_some();
            one_row(
                tx,
                "UPDATE sieve SET name = $3 WHERE account = $1 AND name = $2",
                &[&a, &from, &to],
                || format!("script {from}"),
            )
            .await?;
            if active {
                tx.run(
                    "INSERT INTO sieve_active (account, name) VALUES ($1, $2)",
                    &[&a, &to],
                )
                .await
                .map_err(pg)?;
            }
            Ok(())
        }))
        .await
    }

    async fn seen_mark(
        &self,
        account: AccountId,
        key: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        let key = key.to_string();
        self.write(tx!(|tx, _fx| {
            // Inserted or taken over when expired; a live mark is left as it is.
            let took = tx
                .maybe_row(
                    "INSERT INTO seen (account, key, expires) VALUES ($1, $2, $4) \
                     ON CONFLICT (account, key) DO UPDATE SET expires = EXCLUDED.expires \
                     WHERE seen.expires <= $3 RETURNING 1",
                    &[&(account as i64), &key, &now, &expires],
                )
                .await
                .map_err(pg)?;
            Ok(took.is_none())
        }))
        .await
    }

    async fn sender_verdict_set(
        &self,
        account_id: AccountId,
        sender: &str,
        junk: Option<bool>,
    ) -> Result<()> {
        let sender = rules::sender_key(sender);
        self.write(tx!(|tx, _fx| {
            match junk {
                Some(j) => {
                    account(tx, account_id, false).await?;
                    tx.run(
                        "INSERT INTO senders (account, sender, junk) VALUES ($1, $2, $3) \
                         ON CONFLICT (account, sender) DO UPDATE SET junk = EXCLUDED.junk",
                        &[&(account_id as i64), &sender, &j],
                    )
                    .await
                    .map_err(pg)?;
                }
                None => {
                    tx.run(
                        "DELETE FROM senders WHERE account = $1 AND sender = $2",
                        &[&(account_id as i64), &sender],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            Ok(())
        }))
        .await
    }

    async fn sender_verdict(&self, account: AccountId, sender: &str) -> Result<Option<bool>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT junk FROM senders WHERE account = $1 AND sender = $2",
            &[&(account as i64), &rules::sender_key(sender)],
        )
        .await
        .map_err(pg)?
        .map(|r| r.get(0)))
    }

    async fn sender_verdict_list(&self, account: AccountId) -> Result<Vec<(String, bool)>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT sender, junk FROM senders WHERE account = $1 ORDER BY sender",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }
}
