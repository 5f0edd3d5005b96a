//! Mailbox rows: looked up, created (with a fresh UIDVALIDITY), removed with their messages,
//! and their counters saved.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::mail::release_blobs;
use super::{Prepared, pg};
use crate::rules;
use crate::*;

fn special_use_name(s: SpecialUse) -> &'static str {
    match s {
        SpecialUse::Drafts => "Drafts",
        SpecialUse::Sent => "Sent",
        SpecialUse::Trash => "Trash",
        SpecialUse::Junk => "Junk",
        SpecialUse::Archive => "Archive",
    }
}

fn special_use_of(s: Option<&str>) -> Option<SpecialUse> {
    Some(match s? {
        "Drafts" => SpecialUse::Drafts,
        "Sent" => SpecialUse::Sent,
        "Trash" => SpecialUse::Trash,
        "Junk" => SpecialUse::Junk,
        "Archive" => SpecialUse::Archive,
        _ => return None,
    })
}

pub(super) const MAILBOX_COLS: &str = "id, account, name, uidvalidity, uidnext, highest_modseq, \
                            special_use, messages, unseen, size";

pub(super) fn mailbox_of(r: &Row) -> Mailbox {
    Mailbox {
        id: r.get::<_, i64>(0) as u64,
        account: r.get::<_, i64>(1) as u64,
        name: r.get(2),
        uidvalidity: r.get::<_, i64>(3) as u32,
        uidnext: r.get::<_, i64>(4) as u32,
        highest_modseq: r.get::<_, i64>(5) as u64,
        special_use: special_use_of(r.get::<_, Option<&str>>(6)),
        messages: r.get::<_, i64>(7) as u32,
        unseen: r.get::<_, i64>(8) as u32,
        size: r.get::<_, i64>(9) as u64,
    }
}

pub(super) async fn mailbox<C: GenericClient + Sync>(
    c: &C,
    id: MailboxId,
    lock: bool,
) -> Result<Mailbox> {
    let q = format!(
        "SELECT {MAILBOX_COLS} FROM mailboxes WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match c.maybe_row(&q, &[&(id as i64)]).await.map_err(pg)? {
        Some(r) => Ok(mailbox_of(&r)),
        None => Err(StoreError::NotFound(format!("mailbox {id}"))),
    }
}

pub(super) async fn mailbox_id_by_name<C: GenericClient + Sync>(
    c: &C,
    account: AccountId,
    name: &str,
) -> Result<Option<MailboxId>> {
    Ok(c.maybe_row(
        "SELECT id FROM mailboxes WHERE account = $1 AND name = $2",
        &[&(account as i64), &name],
    )
    .await
    .map_err(pg)?
    .map(|r| r.get::<_, i64>(0) as u64))
}

pub(super) async fn put_mailbox_counts(tx: &Transaction<'_>, mb: &Mailbox) -> Result<()> {
    tx.run(
        "UPDATE mailboxes SET uidnext = $2, highest_modseq = $3, messages = $4, unseen = $5, \
         size = $6 WHERE id = $1",
        &[
            &(mb.id as i64),
            &(mb.uidnext as i64),
            &(mb.highest_modseq as i64),
            &(mb.messages as i64),
            &(mb.unseen as i64),
            &(mb.size as i64),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn usage<C: GenericClient + Sync>(c: &C, account: AccountId) -> Result<Usage> {
    let r = c
        .row(
            "SELECT coalesce(sum(size), 0)::bigint, coalesce(sum(messages), 0)::bigint \
             FROM mailboxes WHERE account = $1",
            &[&(account as i64)],
        )
        .await
        .map_err(pg)?;
    Ok(Usage {
        bytes: r.get::<_, i64>(0) as u64,
        messages: r.get::<_, i64>(1) as u64,
    })
}

pub(super) async fn mailbox_create_tx(
    tx: &Transaction<'_>,
    account: AccountId,
    name: &str,
    su: Option<SpecialUse>,
) -> Result<Mailbox> {
    let name = rules::normalize_mailbox_name(name);
    if mailbox_id_by_name(tx, account, &name).await?.is_some() {
        return Err(StoreError::AlreadyExists(format!("mailbox {name}")));
    }
    let uidvalidity: i64 = tx
        .row(
            "UPDATE meta SET value = greatest($1, value + 1) & 4294967295 \
             WHERE key = 'last_uidvalidity' RETURNING value",
            &[&now()],
        )
        .await
        .map_err(pg)?
        .get(0);
    let r = tx
        .row(
            &format!(
                "INSERT INTO mailboxes (account, name, uidvalidity, special_use) \
                 VALUES ($1, $2, $3, $4) RETURNING {MAILBOX_COLS}"
            ),
            &[
                &(account as i64),
                &name,
                &uidvalidity.max(1),
                &su.map(special_use_name),
            ],
        )
        .await
        .map_err(pg)?;
    Ok(mailbox_of(&r))
}

/// Removes a mailbox and its messages (kept ones too), releasing their blobs.
pub(super) async fn mailbox_remove(tx: &Transaction<'_>, id: MailboxId) -> Result<()> {
    let blobs: Vec<BlobId> = tx
        .rows(
            "SELECT blob FROM messages WHERE mailbox = $1 \
             UNION ALL SELECT blob FROM kept WHERE mailbox = $1",
            &[&(id as i64)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect();
    release_blobs(tx, &blobs).await?;
    tx.run("DELETE FROM mailboxes WHERE id = $1", &[&(id as i64)])
        .await
        .map_err(pg)?;
    Ok(())
}
