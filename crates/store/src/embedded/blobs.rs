//! Message bytes on disk: small messages are appended to shared segment files so a whole
//! batch costs one fdatasync; large ones (spooled while they arrived) get a file each.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::BlobId;

use super::tables::BlobLoc;

/// A segment is closed for appends past this size.
pub const SEGMENT_TARGET: u64 = 64 << 20;

pub struct BlobFiles {
    root: PathBuf,
    open: Mutex<HashMap<u64, Arc<File>>>,
    pub fsyncs: Arc<AtomicU64>,
}

impl BlobFiles {
    pub fn new(root: PathBuf, fsyncs: Arc<AtomicU64>) -> io::Result<Self> {
        fs::create_dir_all(root.join("big"))?;
        Ok(BlobFiles {
            root,
            open: Mutex::new(HashMap::new()),
            fsyncs,
        })
    }

    pub fn segment_path(&self, seg: u64) -> PathBuf {
        self.root.join(format!("seg-{seg:010}.dat"))
    }

    pub fn big_path(&self, id: BlobId) -> PathBuf {
        self.root.join("big").join(format!("{id:016x}"))
    }

    pub fn big_dir(&self) -> PathBuf {
        self.root.join("big")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn segment(&self, seg: u64) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap();
        if let Some(f) = open.get(&seg) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.segment_path(seg))?,
        );
        open.insert(seg, f.clone());
        Ok(f)
    }

    pub fn forget_segment(&self, seg: u64) {
        self.open.lock().unwrap().remove(&seg);
    }

    pub fn read(
        &self,
        id: BlobId,
        loc: BlobLoc,
        size: u64,
        offset: u64,
        len: u64,
    ) -> io::Result<Vec<u8>> {
        let start = offset.min(size);
        let n = len.min(size - start) as usize;
        let mut buf = vec![0u8; n];
        match loc {
            BlobLoc::Segment { seg, offset: base } => {
                self.segment(seg)?.read_exact_at(&mut buf, base + start)?;
            }
            BlobLoc::File => {
                File::open(self.big_path(id))?.read_exact_at(&mut buf, start)?;
            }
        }
        Ok(buf)
    }

    pub fn sync_file(&self, f: &File) -> io::Result<()> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        f.sync_data()
    }

    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        File::open(dir)?.sync_all()
    }
}
