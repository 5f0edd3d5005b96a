//! A delivery in one transaction: the bytes and the trace first, then the accounts and
//! mailboxes locked in id order, the quota checked, the messages added and the queue entry made.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::directory::account;
use super::mail::append_entry;
use super::mailboxes::{mailbox, mailbox_create_tx, mailbox_id_by_name, usage};
use super::subscriptions::subscribe_tx;
use super::trace::trace_append_tx;
use super::{Effects, Prepared, json, pg};
use crate::rules;
use crate::*;

/// The mailbox a delivery target names (resolved, checked against the account), or why not.
async fn target_mailbox(
    tx: &Transaction<'_>,
    t: &DeliveryTarget,
    fx: &mut Effects,
) -> Result<MailboxId> {
    match &t.mailbox {
        MailboxTarget::Id(id) => {
            let mb = mailbox(tx, *id, false).await?;
            if mb.account != t.account {
                return Err(StoreError::NotFound(format!("mailbox {id}")));
            }
            Ok(mb.id)
        }
        MailboxTarget::Name { name, create } => {
            let n = rules::normalize_mailbox_name(name);
            match mailbox_id_by_name(tx, t.account, &n).await? {
                Some(id) => Ok(id),
                None if *create => {
                    // Made by a filter: subscribed, so mail programs show it.
                    let mb = mailbox_create_tx(tx, t.account, &n, None).await?;
                    subscribe_tx(tx, t.account, &mb.name).await?;
                    fx.events
                        .push(StoreEvent::MailboxList { account: t.account });
                    Ok(mb.id)
                }
                None => mailbox_id_by_name(tx, t.account, INBOX)
                    .await?
                    .ok_or_else(|| StoreError::NotFound("INBOX".into())),
            }
        }
    }
}

pub(super) async fn deliver_tx(
    tx: &Transaction<'_>,
    d: Delivery,
    fx: &mut Effects,
) -> Result<DeliveryReport> {
    let size = d.blob.size;
    let queued = d.queue.is_some();
    // What needs no lock goes first, the bytes and the trace in one round trip (statements
    // sent together run in order), so the locks below are held for as short a time as can be.
    let refs = d.targets.len() as i32 + queued as i32;
    let stored_size = size as i64;
    let (blob, spool) = match d.blob.data {
        BlobData::Memory(bytes) => {
            let params: [&(dyn ToSql + Sync); 4] = [&stored_size, &d.blob.meta, &bytes, &refs];
            let (blob, traced) = tokio::join!(
                tx.row(
                    "INSERT INTO blobs (size, meta, data, refs) VALUES ($1, $2, $3, $4) RETURNING id",
                    &params,
                ),
                trace_append_tx(tx, &d.trace),
            );
            traced?;
            (blob.map_err(pg)?.get::<_, i64>(0) as u64, None)
        }
        BlobData::File(p) => {
            let blob = copy_spooled(tx, &p, &d.blob.meta, refs).await?;
            trace_append_tx(tx, &d.trace).await?;
            (blob, Some(p))
        }
    };
    // Accounts first, in id order: a quota is checked against a stable usage. For one account
    // and no mailbox to create (most deliveries), its mailboxes are looked up in the same round
    // trip; else after the locks, for the accounts that are there.
    let mut ids: Vec<AccountId> = d.targets.iter().map(|t| t.account).collect();
    ids.sort_unstable();
    ids.dedup();
    let creates = d
        .targets
        .iter()
        .any(|t| matches!(t.mailbox, MailboxTarget::Name { create: true, .. }));
    let pipelined = ids.len() == 1 && !creates;
    let lock_accounts = async {
        let mut accounts: HashMap<AccountId, Account> = HashMap::new();
        for id in ids {
            match account(tx, id, true).await {
                Ok(a) => {
                    accounts.insert(id, a);
                }
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(accounts)
    };
    let (accounts, found) = if pipelined {
        let resolve = async {
            let mut found = Vec::with_capacity(d.targets.len());
            for t in &d.targets {
                found.push(target_mailbox(tx, t, fx).await);
            }
            found
        };
        let (accounts, found) = tokio::join!(lock_accounts, resolve);
        (accounts?, found)
    } else {
        let accounts = lock_accounts.await?;
        let mut found = Vec::with_capacity(d.targets.len());
        for t in &d.targets {
            found.push(if accounts.contains_key(&t.account) {
                target_mailbox(tx, t, fx).await
            } else {
                Err(StoreError::NotFound(format!("account {}", t.account)))
            });
        }
        (accounts, found)
    };
    let mut targets: Vec<Result<MailboxId>> = Vec::with_capacity(d.targets.len());
    let mut quota = rules::DeliveryQuota::default();
    let mut usages: HashMap<AccountId, Usage> = HashMap::new();
    for (t, mb) in d.targets.iter().zip(found) {
        let r = async {
            let Some(a) = accounts.get(&t.account) else {
                return Err(StoreError::NotFound(format!("account {}", t.account)));
            };
            let mb = mb?;
            if t.enforce_quota && rules::has_quota(a) {
                let u = match usages.get(&a.id) {
                    Some(u) => *u,
                    None => {
                        let u = usage(tx, a.id).await?;
                        usages.insert(a.id, u);
                        u
                    }
                };
                quota.check(a, u, size)?;
            }
            quota.take(a.id, size);
            Ok(mb)
        }
        .await;
        targets.push(r);
    }
    let ok = targets.iter().filter(|t| t.is_ok()).count() as i32;
    if ok == 0 && !queued {
        // Stored for nobody: the bytes go again (rare: every target refused).
        tx.run("DELETE FROM blobs WHERE id = $1", &[&(blob as i64)])
            .await
            .map_err(pg)?;
        return Ok(rules::delivered_nowhere(targets));
    }
    if ok + queued as i32 != refs {
        tx.run(
            "UPDATE blobs SET refs = $2 WHERE id = $1",
            &[&(blob as i64), &(ok + queued as i32)],
        )
        .await
        .map_err(pg)?;
    }
    // Mailboxes in id order too.
    let mut order: Vec<MailboxId> = targets
        .iter()
        .filter_map(|t| t.as_ref().ok())
        .copied()
        .collect();
    order.sort_unstable();
    order.dedup();
    let mut boxes: HashMap<MailboxId, Mailbox> = HashMap::new();
    for id in order {
        boxes.insert(id, mailbox(tx, id, true).await?);
    }
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.into_iter().enumerate() {
        match t {
            Ok(id) => {
                let mb = boxes.get_mut(&id).expect("locked above");
                let flags = d.targets[i].flags.clone();
                let uid = append_entry(tx, mb, blob, size, d.internal_date, flags).await?;
                fx.events.push(rules::mailbox_changed(mb));
                out.push(Ok((mb.id, uid)));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let queue_id = match d.queue {
        Some(q) => {
            let created = now();
            let id: i64 = tx
                .row("SELECT nextval('queue_id_seq')", &[])
                .await
                .map_err(pg)?
                .get(0);
            let entry = rules::new_queue_entry(id as u64, blob, size, q, created);
            tx.run(
                "INSERT INTO queue (id, entry) VALUES ($1, $2)",
                &[&id, &json(&entry)],
            )
            .await
            .map_err(pg)?;
            fx.events.push(StoreEvent::Queue);
            Some(id as u64)
        }
        None => None,
    };
    fx.spools.extend(spool);
    Ok(DeliveryReport {
        blob,
        targets: out,
        queue_id,
    })
}

/// A spooled message's bytes into a new blob row, streamed from the file in pieces (binary
/// COPY): never read whole into memory. Returns the blob's id.
async fn copy_spooled(
    tx: &Transaction<'_>,
    path: &std::path::Path,
    meta: &[u8],
    refs: i32,
) -> Result<BlobId> {
    use futures_util::SinkExt;
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(StoreError::from_io)?;
    let len = file.metadata().await.map_err(StoreError::from_io)?.len();
    let data_len = i32::try_from(len)
        .map_err(|_| StoreError::Invalid("a message over 2 GB cannot be stored".into()))?;
    let id: i64 = tx
        .row("SELECT nextval(pg_get_serial_sequence('blobs', 'id'))", &[])
        .await
        .map_err(pg)?
        .get(0);
    let sink = tx
        .copy_in("COPY blobs (id, size, meta, data, refs) FROM STDIN (FORMAT binary)")
        .await
        .map_err(pg)?;
    futures_util::pin_mut!(sink);
    // The binary COPY format: a signature, flags and an empty header extension; one tuple of
    // five fields, each its length then its bytes; the -1 that ends the data.
    let mut head = Vec::with_capacity(64 + meta.len());
    head.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    head.extend_from_slice(&0i32.to_be_bytes());
    head.extend_from_slice(&0i32.to_be_bytes());
    head.extend_from_slice(&5i16.to_be_bytes());
    head.extend_from_slice(&8i32.to_be_bytes());
    head.extend_from_slice(&id.to_be_bytes());
    head.extend_from_slice(&8i32.to_be_bytes());
    head.extend_from_slice(&(len as i64).to_be_bytes());
    head.extend_from_slice(&(meta.len() as i32).to_be_bytes());
    head.extend_from_slice(meta);
    head.extend_from_slice(&data_len.to_be_bytes());
    sink.send(bytes::Bytes::from(head)).await.map_err(pg)?;
    let mut left = len;
    while left > 0 {
        let mut chunk = vec![0u8; left.min(1 << 20) as usize];
        file.read_exact(&mut chunk)
            .await
            .map_err(StoreError::from_io)?;
        left -= chunk.len() as u64;
        sink.send(bytes::Bytes::from(chunk)).await.map_err(pg)?;
    }
    let mut tail = Vec::with_capacity(10);
    tail.extend_from_slice(&4i32.to_be_bytes());
    tail.extend_from_slice(&refs.to_be_bytes());
    tail.extend_from_slice(&(-1i16).to_be_bytes());
    sink.send(bytes::Bytes::from(tail)).await.map_err(pg)?;
    sink.finish().await.map_err(pg)?;
    Ok(id as u64)
}
