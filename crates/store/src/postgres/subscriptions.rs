//! Subscribed names of an account, mailbox or not.

use deadpool_postgres::Transaction;

use super::{Prepared, pg};
use crate::rules;
use crate::*;

pub(super) async fn subscribe_tx(
    tx: &Transaction<'_>,
    account: AccountId,
    name: &str,
) -> Result<()> {
    tx.run(
        "INSERT INTO subscriptions (account, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&(account as i64), &name],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn unsubscribe_tx(
    tx: &Transaction<'_>,
    account: AccountId,
    name: &str,
) -> Result<()> {
    tx.run(
        "DELETE FROM subscriptions WHERE account = $1 AND name = $2",
        &[&(account as i64), &name],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// The subscriptions of `old` and of the names below it move to `new`.
pub(super) async fn rename_subscriptions_tx(
    tx: &Transaction<'_>,
    account: AccountId,
    old: &str,
    new: &str,
) -> Result<()> {
    let prefix = format!("{old}/");
    let subs: Vec<String> = tx
        .rows(
            "SELECT name FROM subscriptions WHERE account = $1 \
             AND (name = $2 OR left(name, length($3)) = $3)",
            &[&(account as i64), &old, &prefix],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let moves = rules::renamed_subscriptions(old, new, &subs);
    for (from, _) in &moves {
        unsubscribe_tx(tx, account, from).await?;
    }
    for (_, to) in &moves {
        subscribe_tx(tx, account, to).await?;
    }
    Ok(())
}
