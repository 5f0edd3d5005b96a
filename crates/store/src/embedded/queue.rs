//! The outbound queue: entries in redb, claims in this process's memory (one process owns
//! the data directory).

use async_trait::async_trait;

use super::tables::*;
use super::writer::Job;
use super::{EmbeddedStore, get_bytes};
use crate::rules;
use crate::*;

#[async_trait]
impl QueueStore for EmbeddedStore {
    async fn queue_list(&self) -> Result<Vec<QueueEntry>> {
        self.list_json(QUEUE)
    }

    async fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>> {
        self.get_json(|r| get_bytes(r, QUEUE, id))
    }

    async fn queue_update(&self, entry: QueueEntry) -> Result<()> {
        self.write(Job::QueueUpdate(entry)).await.map(|_| ())
    }

    async fn queue_delete(&self, id: QueueId) -> Result<()> {
        self.write(Job::QueueDelete(id)).await.map(|_| ())
    }

    async fn queue_claim(&self, id: QueueId, holder: &str, until: i64) -> Result<bool> {
        if self.queue_get(id).await?.is_none() {
            return Err(StoreError::NotFound(format!("queue entry {id}")));
        }
        let now = now();
        let mut claims = self.claims.lock().unwrap();
        claims.retain(|_, (_, u)| *u > now);
        if let Some((h, u)) = claims.get(&id)
            && rules::claim_refused(Some(h), *u, holder, now)
        {
            return Ok(false);
        }
        if until > now {
            claims.insert(id, (holder.to_string(), until));
        } else {
            claims.remove(&id);
        }
        Ok(true)
    }
}
