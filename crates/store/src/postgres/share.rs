//! Sharing in PostgreSQL: access lists, readers' own \Seen and send-as grants. Lines and rows
//! of a mailbox or a reader that goes follow it by cascade; those naming an address are
//! deleted here with its account.

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};

use super::mailboxes::{MAILBOX_COLS, mailbox_of};
use super::{Effects, PgStore, Prepared, exists, pg};
use crate::rules;
use crate::*;

/// Takes a share lock on a reader's row: it stays while the STORE writes its \Seen.
pub(super) async fn lock_reader(tx: &Transaction<'_>, reader: AccountId) -> Result<()> {
    if !exists(
        tx,
        "SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE",
        &[&(reader as i64)],
    )
    .await?
    {
        return Err(StoreError::NotFound(format!("account {reader}")));
    }
    Ok(())
}

/// The UIDs among `uids` that `reader` has seen in the mailbox.
pub(super) async fn seen_by<C: GenericClient + Sync>(
    c: &C,
    mailbox: MailboxId,
    reader: AccountId,
    uids: &[Uid],
) -> Result<HashSet<Uid>> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    Ok(c.rows(
        "SELECT uid FROM seen_private WHERE mailbox = $1 AND reader = $2 AND uid = ANY($3)",
        &[&(mailbox as i64), &(reader as i64), &uids],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(|r| r.get::<_, i64>(0) as Uid)
    .collect())
}

/// Saves what a STORE changed of a reader's own \Seen.
pub(super) async fn seen_private_change(
    tx: &Transaction<'_>,
    mailbox: MailboxId,
    reader: AccountId,
    add: &[Uid],
    remove: &[Uid],
) -> Result<()> {
    let ids = |l: &[Uid]| -> Vec<i64> { l.iter().map(|&u| u as i64).collect() };
    if !add.is_empty() {
        tx.run(
            "INSERT INTO seen_private (mailbox, reader, uid) \
             SELECT $1, $2, unnest($3::bigint[]) ON CONFLICT DO NOTHING",
            &[&(mailbox as i64), &(reader as i64), &ids(add)],
        )
        .await
        .map_err(pg)?;
    }
    if !remove.is_empty() {
        tx.run(
            "DELETE FROM seen_private WHERE mailbox = $1 AND reader = $2 AND uid = ANY($3)",
            &[&(mailbox as i64), &(reader as i64), &ids(remove)],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

/// Expunged messages leave every reader's \Seen (their UIDs never come back).
pub(super) async fn forget_seen(
    tx: &Transaction<'_>,
    mailbox: MailboxId,
    uids: &[i64],
) -> Result<()> {
    tx.run(
        "DELETE FROM seen_private WHERE mailbox = $1 AND uid = ANY($2)",
        &[&(mailbox as i64), &uids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The lines for an account's address and its send-as grants either way, when it goes (its
/// mailboxes' lines and its own \Seen go by cascade).
pub(super) async fn forget_account_shares(
    tx: &Transaction<'_>,
    address: &str,
    fx: &mut Effects,
) -> Result<()> {
    let gone = tx
        .rows(
            "DELETE FROM acl USING mailboxes m WHERE acl.identifier = $1 AND m.id = acl.mailbox \
             RETURNING m.account, acl.mailbox",
            &[&address],
        )
        .await
        .map_err(pg)?;
    for r in gone {
        fx.events.push(StoreEvent::Acl {
            account: r.get::<_, i64>(0) as u64,
            mailbox: r.get::<_, i64>(1) as u64,
        });
    }
    tx.run(
        "DELETE FROM send_as WHERE address = $1 OR delegate = $1",
        &[&address],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

fn grant_of(r: &tokio_postgres::Row) -> Result<SendAsGrant> {
    Ok(SendAsGrant {
        address: r.get(0),
        delegate: r.get(1),
        mode: rules::send_as_of_name(r.get(2))?,
    })
}

#[async_trait]
impl ShareStore for PgStore {
    async fn acl_get(&self, mailbox: MailboxId) -> Result<Vec<AclEntry>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT identifier, rights FROM acl WHERE mailbox = $1 ORDER BY identifier",
            &[&(mailbox as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| AclEntry {
            identifier: r.get(0),
            rights: r.get(1),
        })
        .collect())
    }

    async fn acl_set(
        &self,
        mailbox: MailboxId,
        identifier: &str,
        rights: Option<Rights>,
    ) -> Result<()> {
        let identifier = rules::share_key(identifier)?;
        let rights = rules::acl_rights(rights);
        self.write(tx!(|tx, fx| {
            // Shared: the mailbox is not deleted meanwhile, and its STOREs go on.
            let owner = tx
                .maybe_row(
                    "SELECT account FROM mailboxes WHERE id = $1 FOR KEY SHARE",
                    &[&(mailbox as i64)],
                )
                .await
                .map_err(pg)?
                .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox}")))?
                .get::<_, i64>(0) as u64;
            match &rights {
                Some(r) => tx
                    .run(
                        "INSERT INTO acl (mailbox, identifier, rights) VALUES ($1, $2, $3) \
                         ON CONFLICT (mailbox, identifier) DO UPDATE SET rights = EXCLUDED.rights",
                        &[&(mailbox as i64), &identifier, r],
                    )
                    .await
                    .map_err(pg)?,
                None => tx
                    .run(
                        "DELETE FROM acl WHERE mailbox = $1 AND identifier = $2",
                        &[&(mailbox as i64), &identifier],
                    )
                    .await
                    .map_err(pg)?,
            };
            fx.events.push(StoreEvent::Acl {
                account: owner,
                mailbox,
            });
            Ok(())
        }))
        .await
    }

    async fn acl_granted(&self, identifiers: &[String]) -> Result<Vec<(Mailbox, AclEntry)>> {
        let identifiers = rules::share_keys(identifiers);
        let c = self.client().await?;
        Ok(c.rows(
            &format!(
                "SELECT {MAILBOX_COLS}, identifier, rights FROM acl \
                 JOIN mailboxes ON mailboxes.id = acl.mailbox \
                 WHERE identifier = ANY($1) ORDER BY mailboxes.id, identifier"
            ),
            &[&identifiers],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| {
            (
                mailbox_of(r),
                AclEntry {
                    identifier: r.get(10),
                    rights: r.get(11),
                },
            )
        })
        .collect())
    }

    async fn seen_private(&self, mailbox: MailboxId, reader: AccountId) -> Result<Vec<Uid>> {
        let c = self.client().await?;
        Ok(c.rows(
            "SELECT uid FROM seen_private WHERE mailbox = $1 AND reader = $2 ORDER BY uid",
            &[&(mailbox as i64), &(reader as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get::<_, i64>(0) as Uid)
        .collect())
    }

    async fn send_as_set(&self, address: &str, delegate: &str, mode: Option<SendAs>) -> Result<()> {
        let (address, delegate) = (rules::share_key(address)?, rules::share_key(delegate)?);
        self.write(tx!(|tx, _fx| {
            match mode {
                Some(m) => tx
                    .run(
                        "INSERT INTO send_as (address, delegate, mode) VALUES ($1, $2, $3) \
                         ON CONFLICT (address, delegate) DO UPDATE SET mode = EXCLUDED.mode",
                        &[&address, &delegate, &rules::send_as_name(m)],
                    )
                    .await
                    .map_err(pg)?,
                None => tx
                    .run(
                        "DELETE FROM send_as WHERE address = $1 AND delegate = $2",
                        &[&address, &delegate],
                    )
                    .await
                    .map_err(pg)?,
            };
            Ok(())
        }))
        .await
    }

    async fn send_as_list(&self) -> Result<Vec<SendAsGrant>> {
        let c = self.client().await?;
        c.rows(
            "SELECT address, delegate, mode FROM send_as ORDER BY address, delegate",
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(grant_of)
        .collect()
    }

    async fn send_as_of(&self, delegate: &str) -> Result<Vec<SendAsGrant>> {
        let Ok(delegate) = rules::share_key(delegate) else {
            return Ok(Vec::new());
        };
        let c = self.client().await?;
        c.rows(
            "SELECT address, delegate, mode FROM send_as WHERE delegate = $1 ORDER BY address",
            &[&delegate],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(grant_of)
        .collect()
    }
}
