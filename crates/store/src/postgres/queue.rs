//! The outbound queue in PostgreSQL; an entry's claim is two columns of its row.

use async_trait::async_trait;

use super::mail::release_blobs;
use super::{PgStore, Prepared, from_json, json, one_row, pg};
use crate::rules;
use crate::*;

#[async_trait]
impl QueueStore for PgStore {
    async fn queue_list(&self) -> Result<Vec<QueueEntry>> {
        let c = self.client().await?;
        c.rows("SELECT entry FROM queue ORDER BY id", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>> {
        let c = self.client().await?;
        c.maybe_row("SELECT entry FROM queue WHERE id = $1", &[&(id as i64)])
            .await
            .map_err(pg)?
            .map(|r| from_json(r.get::<_, &str>(0)))
            .transpose()
    }

    async fn queue_update(&self, entry: QueueEntry) -> Result<()> {
        self.write(tx!(|tx, fx| {
            let stored = tx
                .maybe_row(
                    "SELECT entry FROM queue WHERE id = $1 FOR UPDATE",
                    &[&(entry.id as i64)],
                )
                .await
                .map_err(pg)?
                .map(|r| from_json(r.get::<_, &str>(0)))
                .transpose()?;
            let entry = rules::queue_update(stored, entry)?;
            one_row(
                tx,
                "UPDATE queue SET entry = $2 WHERE id = $1",
                &[&(entry.id as i64), &json(&entry)],
                || format!("queue entry {}", entry.id),
            )
            .await?;
            fx.events.push(StoreEvent::Queue);
            Ok(())
        }))
        .await
    }

    async fn queue_delete(&self, id: QueueId) -> Result<()> {
        self.write(tx!(|tx, _fx| {
            let Some(r) = tx
                .maybe_row(
                    "DELETE FROM queue WHERE id = $1 RETURNING entry",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
            else {
                return Err(StoreError::NotFound(format!("queue entry {id}")));
            };
            let entry: QueueEntry = from_json(r.get::<_, &str>(0))?;
            release_blobs(tx, &[entry.blob]).await
        }))
        .await
    }

    async fn queue_claim(&self, id: QueueId, holder: &str, until: i64) -> Result<bool> {
        let holder = holder.to_string();
        self.write(tx!(|tx, _fx| {
            let now = now();
            let Some(r) = tx
                .maybe_row(
                    "SELECT claim_holder, claim_until FROM queue WHERE id = $1 FOR UPDATE",
                    &[&(id as i64)],
                )
                .await
                .map_err(pg)?
            else {
                return Err(StoreError::NotFound(format!("queue entry {id}")));
            };
            let (h, u): (Option<String>, i64) = (r.get(0), r.get(1));
            if rules::claim_refused(h.as_deref(), u, &holder, now) {
                return Ok(false);
            }
            tx.run(
                "UPDATE queue SET claim_holder = $2, claim_until = $3 WHERE id = $1",
                &[&(id as i64), &holder, &until.max(0)],
            )
            .await
            .map_err(pg)?;
            Ok(true)
        }))
        .await
    }
}
