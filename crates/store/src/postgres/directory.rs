//! Domains, accounts, aliases and API tokens in PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::mailboxes::{mailbox_create_tx, mailbox_remove, usage};
use super::share::forget_account_shares;
use super::subscriptions::subscribe_tx;
use super::{PgStore, Prepared, exists, from_json, is_unique_violation, json, one_row, pg};
use crate::rules;
use crate::*;

const ACCOUNT_COLS: &str = "id, address, password_hash, quota_bytes, quota_messages, disabled, \
                            created, forward_to, forward_keep, shared";

fn account_of(r: &Row) -> Account {
    let forward_to: Option<String> = r.get(7);
    Account {
        id: r.get::<_, i64>(0) as u64,
        address: r.get(1),
        password_hash: r.get(2),
        quota_bytes: r.get::<_, i64>(3) as u64,
        quota_messages: r.get::<_, i64>(4) as u64,
        disabled: r.get(5),
        created: r.get(6),
        forward: forward_to.map(|to| Forward {
            to,
            keep_copy: r.get(8),
        }),
        shared: r.get(9),
    }
}

fn alias_of(r: &Row) -> Result<Alias> {
    let policy: Option<String> = r.get(3);
    Ok(Alias {
        address: r.get(0),
        targets: r.get(1),
        created: r.get(2),
        policy: policy.map(|p| from_json(&p)).transpose()?,
    })
}

/// The domain of `address` must be ours; its row stays locked until the transaction ends, so
/// an account and an alias of one address are never made at once.
async fn require_domain(tx: &Transaction<'_>, address: &str) -> Result<()> {
    let domain = rules::domain_of(address);
    if !exists(
        tx,
        "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE",
        &[&domain],
    )
    .await?
    {
        return Err(StoreError::NotFound(format!("domain {domain}")));
    }
    Ok(())
}

pub(super) async fn account<C: GenericClient + Sync>(
    c: &C,
    id: AccountId,
    lock: bool,
) -> Result<Account> {
    let q = format!(
        "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match c.maybe_row(&q, &[&(id as i64)]).await.map_err(pg)? {
        Some(r) => Ok(account_of(&r)),
        None => Err(StoreError::NotFound(format!("account {id}"))),
    }
}

#[async_trait]
impl DirectoryStore for PgStore {
    async fn domain_add(&self, name: &str) -> Result<Domain> {
        let name = name.to_string();
        self.write(tx!(|tx, fx| {
            let d = Domain {
                name,
                created: now(),
            };
            let n = tx
                .run(
                    "INSERT INTO domains (name, created) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&d.name, &d.created],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!("domain {}", d.name)));
            }
            fx.events.push(StoreEvent::Directory);
            Ok(d)
        }))
        .await
    }

    async fn domain_delete(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(tx!(|tx, fx| {
            if !exists(
                tx,
                "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await?
            {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            let suffix = format!("@{name}");
            let r = tx
                .row(
                    "SELECT (SELECT count(*) FROM accounts WHERE right(address, length($1)) = $1), \
                            (SELECT count(*) FROM aliases WHERE right(address, length($1)) = $1)",
                    &[&suffix],
                )
                .await
                .map_err(pg)?;
            rules::check_domain_unused(
                &name,
                r.get::<_, i64>(0) as u64,
                r.get::<_, i64>(1) as u64,
            )?;
            tx.run("DELETE FROM domains WHERE name = $1", &[&name])
                .await
                .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            Ok(())
        }))
        .await
    }

    async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            "SELECT name, created FROM domains WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(pg)?
        .map(|r| Domain {
            name: r.get(0),
            created: r.get(1),
        }))
    }

    async fn domain_list(&self) -> Result<Vec<Domain>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT name, created FROM domains ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| Domain {
            name: r.get(0),
            created: r.get(1),
        })
        .collect())
    }

    async fn account_create(&self, new: NewAccount) -> Result<Account> {
        self.write(tx!(|tx, fx| {
            let address = new.address;
            require_domain(tx, &address).await?;
            if exists(tx, "SELECT 1 FROM aliases WHERE address = $1", &[&address]).await? {
                return Err(StoreError::AlreadyExists(format!("alias {address}")));
            }
            let r = tx
                .row(
                    &format!(
                        "INSERT INTO accounts (address, password_hash, quota_bytes, \
                         quota_messages, created, shared) VALUES ($1, $2, $3, $4, $5, $6) \
                         RETURNING {ACCOUNT_COLS}"
                    ),
                    &[
                        &address,
                        &new.password_hash,
                        &(new.quota_bytes as i64),
                        &(new.quota_messages as i64),
                        &now(),
                        &new.shared,
                    ],
                )
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::AlreadyExists(format!("account {address}"))
                    } else {
                        pg(e)
                    }
                })?;
            let a = account_of(&r);
            for (name, su) in rules::new_account_mailboxes() {
                mailbox_create_tx(tx, a.id, name, su).await?;
                subscribe_tx(tx, a.id, name).await?;
            }
            fx.events.push(StoreEvent::Directory);
            Ok(a)
        }))
        .await
    }

    async fn account_get(&self, id: AccountId) -> Result<Option<Account>> {
        let c = self.client().await?;
        match account(&c, id, false).await {
            Ok(a) => Ok(Some(a)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<Account>> {
        let c = self.client().await?;
        Ok(c.maybe_row(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE address = $1"),
            &[&address],
        )
        .await
        .map_err(pg)?
        .map(|r| account_of(&r)))
    }

    async fn account_list(&self) -> Result<Vec<Account>> {
        let c = self.client().await?;
        Ok(c.rows(
            &format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY id"),
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(account_of)
        .collect())
    }

    async fn account_update(&self, id: AccountId, up: AccountUpdate) -> Result<Account> {
        self.write(tx!(|tx, fx| {
            let mut a = account(tx, id, true).await?;
            rules::apply_account_update(&mut a, up);
            tx.run(
                "UPDATE accounts SET password_hash = $2, quota_bytes = $3, quota_messages = $4, \
                 disabled = $5, forward_to = $6, forward_keep = $7 WHERE id = $1",
                &[
                    &(id as i64),
                    &a.password_hash,
                    &(a.quota_bytes as i64),
                    &(a.quota_messages as i64),
                    &a.disabled,
                    &a.forward.as_ref().map(|f| f.to.clone()),
                    &a.forward.as_ref().is_some_and(|f| f.keep_copy),
                ],
            )
            .await
            .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            Ok(a)
        }))
        .await
    }

    async fn account_delete(&self, id: AccountId) -> Result<()> {
        self.write(tx!(|tx, fx| {
            let a = account(tx, id, true).await?;
            let boxes: Vec<MailboxId> = tx
                .rows(
                    "SELECT id FROM mailboxes WHERE account = $1 ORDER BY id FOR UPDATE",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get::<_, i64>(0) as u64)
                .collect();
            for mb in boxes {
                mailbox_remove(tx, mb).await?;
            }
            tx.run("DELETE FROM seen WHERE account = $1", &[&(id as i64)])
                .await
                .map_err(pg)?;
            forget_account_shares(tx, &a.address, fx).await?;
            tx.run("DELETE FROM accounts WHERE id = $1", &[&(id as i64)])
                .await
                .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            fx.events.push(StoreEvent::MailboxList { account: id });
            Ok(())
        }))
        .await
    }

    async fn account_usage(&self, id: AccountId) -> Result<Usage> {
        let c = self.client().await?;
        usage(&c, id).await
    }

    async fn alias_set(&self, address: &str, targets: Vec<String>) -> Result<Alias> {
        let address = address.to_string();
        self.write(tx!(|tx, fx| {
            require_domain(tx, &address).await?;
            if exists(tx, "SELECT 1 FROM accounts WHERE address = $1", &[&address]).await? {
                return Err(StoreError::AlreadyExists(format!("account {address}")));
            }
            let r = tx
                .row(
                    "INSERT INTO aliases (address, targets, created) VALUES ($1, $2, $3) \
                     ON CONFLICT (address) DO UPDATE SET targets = EXCLUDED.targets \
                     RETURNING address, targets, created, policy",
                    &[&address, &targets, &now()],
                )
                .await
                .map_err(pg)?;
            fx.events.push(StoreEvent::Directory);
            alias_of(&r)
        }))
        .await
    }

    async fn alias_set_policy(&self, address: &str, policy: Option<SendPolicy>) -> Result<Alias> {
        let address = address.to_string();
        self.write(tx!(|tx, fx| {
            let r = tx
                .maybe_row(
                    "UPDATE aliases SET policy = $2 WHERE address = $1 \
                     RETURNING address, targets, created, policy",
                    &[&address, &policy.as_ref().map(json)],
                )
                .await
                .map_err(pg)?;
            let Some(r) = r else {
                return Err(StoreError::NotFound(format!("alias {address}")));
            };
            fx.events.push(StoreEvent::Directory);
            alias_of(&r)
        }))
        .await
    }

    async fn alias_get(&self, address: &str) -> Result<Option<Alias>> {
        let c = self.client().await?;
        c.maybe_row(
            "SELECT address, targets, created, policy FROM aliases WHERE address = $1",
            &[&address],
        )
        .await
        .map_err(pg)?
        .map(|r| alias_of(&r))
        .transpose()
    }

    async fn alias_list(&self) -> Result<Vec<Alias>> {
        let c = self.client().await?;
        c.rows(
            "SELECT address, targets, created, policy FROM aliases ORDER BY address COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(alias_of)
        .collect()
    }

    async fn alias_delete(&self, address: &str) -> Result<()> {
        let address = address.to_string();
        self.write(tx!(|tx, fx| {
            one_row(
                tx,
                "DELETE FROM aliases WHERE address = $1",
                &[&address],
                || format!("alias {address}"),
            )
            .await?;
            fx.events.push(StoreEvent::Directory);
            Ok(())
        }))
        .await
    }

    async fn token_put(&self, token: ApiToken) -> Result<()> {
        self.write(tx!(|tx, _fx| {
            let n = tx
                .run(
                    "INSERT INTO tokens (name, token) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&token.name, &json(&token)],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::AlreadyExists(format!("token {}", token.name)));
            }
            Ok(())
        }))
        .await
    }

    async fn token_list(&self) -> Result<Vec<ApiToken>> {
        let c = self.client().await?;
        c.rows("SELECT token FROM tokens ORDER BY name COLLATE \"C\"", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn token_delete(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(tx!(|tx, _fx| {
            one_row(tx, "DELETE FROM tokens WHERE name = $1", &[&name], || {
                format!("token {name}")
            })
            .await?;
            Ok(())
        }))
        .await
    }
}
