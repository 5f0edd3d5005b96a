//! How the writer changes the outbound queue.

use redb::ReadableTable;

use super::super::blobs::BlobFiles;
use super::super::db_err;
use super::super::tables::*;
use super::{Effects, Output, Tables};
use crate::rules;
use crate::*;

impl Tables<'_> {
    pub(super) fn queue_update(&mut self, entry: QueueEntry, fx: &mut Effects) -> Result<Output> {
        let stored = match self.queue.get(entry.id).map_err(db_err)? {
            Some(v) => Some(from_json(v.value())?),
            None => None,
        };
        let entry = rules::queue_update(stored, entry)?;
        self.queue
            .insert(entry.id, json(&entry).as_slice())
            .map_err(db_err)?;
        fx.events.push(StoreEvent::Queue);
        Ok(Output::Unit)
    }

    pub(super) fn queue_delete(
        &mut self,
        id: QueueId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let entry: QueueEntry = match self.queue.remove(id).map_err(db_err)? {
            Some(v) => from_json(v.value())?,
            None => return Err(StoreError::NotFound(format!("queue entry {id}"))),
        };
        self.release_blob(entry.blob, fx, files)?;
        Ok(Output::Unit)
    }
}
