//! How the writer keeps blob records: new bytes appended to the active segment (or a spool
//! file moved in), references counted, and bytes freed when the last one goes.

use redb::ReadableTable;

use super::super::blobs::BlobFiles;
use super::super::db_err;
use super::super::tables::*;
use super::{Effects, Tables};
use crate::*;

impl Tables<'_> {
    pub(super) fn add_blob(
        &mut self,
        blob: NewBlob,
        refs: u32,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<BlobId> {
        let id = self.next_id(NEXT_BLOB)?;
        let loc = match blob.data {
            BlobData::Memory(bytes) => {
                fx.seg_live += bytes.len() as u64;
                let offset = fx.seg.end + fx.buf.push(bytes);
                BlobLoc::Segment {
                    seg: fx.seg.id,
                    offset,
                }
            }
            BlobData::File(path) => {
                // The path's owner wrote and fsynced it; placing it is a rename.
                fx.new_files.push((path, files.big_path(id)));
                BlobLoc::File
            }
        };
        let rec = BlobRecord {
            refs,
            size: blob.size,
            loc,
            meta: blob.meta,
        };
        self.blobs
            .insert(id, encode_blob(&rec).as_slice())
            .map_err(db_err)?;
        Ok(id)
    }

    pub(super) fn retain_blob(&mut self, id: BlobId) -> Result<()> {
        let mut rec = match self.blobs.get(id).map_err(db_err)? {
            Some(v) => decode_blob(v.value())?,
            None => return Err(StoreError::NotFound(format!("blob {id}"))),
        };
        rec.refs += 1;
        self.blobs
            .insert(id, encode_blob(&rec).as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    pub(super) fn release_blob(
        &mut self,
        id: BlobId,
        fx: &mut Effects,
        files: &BlobFiles,
    ) -> Result<()> {
        let mut rec = match self.blobs.get(id).map_err(db_err)? {
            Some(v) => decode_blob(v.value())?,
            None => return Ok(()),
        };
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs > 0 {
            self.blobs
                .insert(id, encode_blob(&rec).as_slice())
                .map_err(db_err)?;
            return Ok(());
        }
        self.blobs.remove(id).map_err(db_err)?;
        match rec.loc {
            BlobLoc::File => fx.freed_files.push(files.big_path(id)),
            BlobLoc::Segment { seg, offset } => {
                if seg == fx.seg.id && offset >= fx.seg.end {
                    // Written by this batch: not in the segment record yet.
                    fx.seg_live = fx.seg_live.saturating_sub(rec.size);
                    return Ok(());
                }
                let (end, live) = self
                    .segments
                    .get(seg)
                    .map_err(db_err)?
                    .map(|v| v.value())
                    .unwrap_or((0, 0));
                let live = live.saturating_sub(rec.size);
                if live == 0 && seg != fx.seg.id {
                    self.segments.remove(seg).map_err(db_err)?;
                    fx.freed_segments.push(seg);
                } else {
                    self.segments.insert(seg, (end, live)).map_err(db_err)?;
                }
            }
        }
        Ok(())
    }
}
