//! IMAP METADATA entries in PostgreSQL: one table, the server's entries with mailbox NULL.
//! Entries go with their mailbox and their account by cascade.

use async_trait::async_trait;

use super::{PgStore, Prepared, pg};
use crate::metadata::{check_metadata, metadata_by_keeper, metadata_changes, metadata_events};
use crate::*;

#[async_trait]
impl MetadataStore for PgStore {
    async fn metadata_get(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        entry: &str,
        depth: Option<u32>,
    ) -> Result<Vec<MetadataEntry>> {
        let entry = metadata_prefix(entry)?;
        let c = self.client().await?;
        let owner = match mailbox {
            Some(id) => match c
                .maybe_row(
                    "SELECT account FROM mailboxes WHERE id = $1",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
            {
                Some(r) => Some(r.get::<_, i64>(0) as u64),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let keeper = metadata_keeper(account, owner, &entry);
        let rows = c
            .rows(
                "SELECT name, value FROM metadata \
                 WHERE account = $1 AND coalesce(mailbox, 0) = $2 \
                 AND (name = $3 OR starts_with(name, $3 || '/')) ORDER BY name",
                &[&(keeper as i64), &(mailbox.unwrap_or(0) as i64), &entry],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| MetadataEntry {
                name: r.get(0),
                value: r.get(1),
            })
            .filter(|e| metadata_within(&e.name, &entry, depth))
            .collect())
    }

    async fn metadata_set(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        changes: MetadataChanges,
        limits: MetadataLimits,
    ) -> Result<Result<(), MetadataRefused>> {
        let changes = metadata_changes(changes)?;
        self.write(tx!(|tx, fx| {
            let mb = mailbox.map(|m| m as i64);
            let owner = match mb {
                Some(m) => Some(
                    tx.maybe_row("SELECT account FROM mailboxes WHERE id = $1", &[&m])
                        .await
                        .map_err(pg)?
                        .ok_or_else(|| StoreError::NotFound(format!("mailbox {m}")))?
                        .get::<_, i64>(0) as u64,
                ),
                None => None,
            };
            let groups = metadata_by_keeper(account, owner, &changes);
            let mut keepers: Vec<i64> = groups.keys().map(|&k| k as i64).collect();
            keepers.push(account as i64);
            keepers.sort_unstable();
            keepers.dedup();
            // The keepers' rows order their changes (in id order): the limits hold across
            // nodes.
            let locked = tx
                .rows(
                    "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                    &[&keepers],
                )
                .await
                .map_err(pg)?;
            if locked.len() != keepers.len() {
                return Err(StoreError::NotFound(format!("account {account}")));
            }
            // Accounts first, then the mailbox, as every writer locks them: it stays while
            // its entries are written.
            if let Some(m) = mb
                && tx
                    .maybe_row("SELECT 1 FROM mailboxes WHERE id = $1 FOR KEY SHARE", &[&m])
                    .await
                    .map_err(pg)?
                    .is_none()
            {
                return Err(StoreError::NotFound(format!("mailbox {m}")));
            }
            for (&keeper, changes) in &groups {
                let acc = keeper as i64;
                let scope: Vec<(String, u64)> = tx
                    .rows(
                        "SELECT name, octet_length(value) FROM metadata \
                         WHERE account = $1 AND coalesce(mailbox, 0) = $2",
                        &[&acc, &mb.unwrap_or(0)],
                    )
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, i32>(1) as u64))
                    .collect();
                let total: i64 = tx
                    .row(
                        "SELECT coalesce(sum(octet_length(name) + octet_length(value)), 0)::bigint \
                         FROM metadata WHERE account = $1",
                        &[&acc],
                    )
                    .await
                    .map_err(pg)?
                    .get(0);
                if let Err(refused) = check_metadata(&scope, total as u64, changes, &limits) {
                    return Ok(Err(refused));
                }
            }
            for (keeper, changes) in &groups {
                let acc = *keeper as i64;
                for (name, value) in changes {
                    tx.run(
                        "DELETE FROM metadata \
                         WHERE account = $1 AND coalesce(mailbox, 0) = $2 AND name = $3",
                        &[&acc, &mb.unwrap_or(0), name],
                    )
                    .await
                    .map_err(pg)?;
                    if let Some(v) = value {
                        tx.run(
                            "INSERT INTO metadata (account, mailbox, name, value) \
                             VALUES ($1, $2, $3, $4)",
                            &[&acc, &mb, name, v],
                        )
                        .await
                        .map_err(pg)?;
                    }
                }
            }
            fx.events.extend(metadata_events(mailbox, &groups));
            Ok(Ok(()))
        }))
        .await
    }
}
