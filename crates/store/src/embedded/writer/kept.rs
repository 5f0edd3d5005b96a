//! Expunged messages kept a while, holding their blob reference: a session not yet told of an
//! expunge can still fetch the message. A purge lets them go.

use redb::ReadableTable;

use super::super::blobs::BlobFiles;
use super::super::db_err;
use super::super::tables::*;
use super::{Effects, Output, Tables};
use crate::*;

impl Tables<'_> {
    /// Keeps an expunged message; its blob reference moves with it.
    pub(super) fn keep_expunged(&mut self, mailbox: MailboxId, e: &MessageEntry) -> Result<()> {
        let at = now();
        self.kept
            .insert((mailbox, e.uid), encode_kept(at, e).as_slice())
            .map_err(db_err)?;
        self.kept_by_time
            .insert((at, mailbox, e.uid), ())
            .map_err(db_err)?;
        Ok(())
    }

    pub(super) fn expunged_purge(
        &mut self,
        before: i64,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<Output> {
        let old: Vec<(i64, u64, u32)> = self
            .kept_by_time
            .range((i64::MIN, 0u64, 0u32)..(before, 0u64, 0u32))
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
            .collect::<Result<_>>()?;
        for &(at, mailbox, uid) in &old {
            self.kept_by_time
                .remove((at, mailbox, uid))
                .map_err(db_err)?;
            let blob = match self.kept.remove((mailbox, uid)).map_err(db_err)? {
                Some(v) => Some(decode_kept(uid, v.value())?.1.blob),
                None => None,
            };
            if let Some(blob) = blob {
                self.release_blob(blob, fx, files)?;
            }
        }
        Ok(Output::Count(old.len() as u64))
    }

    /// Lets go of every kept message of a mailbox that goes.
    pub(super) fn release_kept(
        &mut self,
        mailbox: MailboxId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<()> {
        let kept: Vec<(i64, MessageEntry)> = self
            .kept
            .range((mailbox, 0u32)..=(mailbox, u32::MAX))
            .map_err(db_err)?
            .map(|r| {
                let (k, v) = r.map_err(db_err)?;
                decode_kept(k.value().1, v.value())
            })
            .collect::<Result<_>>()?;
        for (at, e) in kept {
            self.kept.remove((mailbox, e.uid)).map_err(db_err)?;
            self.kept_by_time
                .remove((at, mailbox, e.uid))
                .map_err(db_err)?;
            self.release_blob(e.blob, fx, files)?;
        }
        Ok(())
    }
}
