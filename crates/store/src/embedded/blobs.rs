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
    /// Segments mapped for reading: a read is a copy from memory, not a system call (a FETCH
    /// of a large mailbox reads thousands of headers).
    maps: Mutex<HashMap<u64, Arc<memmap2::Mmap>>>,
    pub fsyncs: Arc<AtomicU64>,
}

impl BlobFiles {
    pub fn new(root: PathBuf, fsyncs: Arc<AtomicU64>) -> io::Result<Self> {
        fs::create_dir_all(root.join("big"))?;
        Ok(BlobFiles {
            root,
            open: Mutex::new(HashMap::new()),
            maps: Mutex::new(HashMap::new()),
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
        self.maps.lock().unwrap().remove(&seg);
    }

    /// A mapping of the segment covering at least `end` bytes: mapped again when the segment
    /// grew past the old mapping (only committed bytes are ever read, so a mapping never
    /// reaches past what a failed batch may cut off again and then be read there).
    fn mapped(&self, seg: u64, end: u64) -> io::Result<Arc<memmap2::Mmap>> {
        if let Some(m) = self.maps.lock().unwrap().get(&seg)
            && m.len() as u64 >= end
        {
            return Ok(m.clone());
        }
        let f = self.segment(seg)?;
        // SAFETY: segment files are only appended to; bytes a record points at never change
        // until the segment is deleted, and a deleted file stays mapped until the map goes.
        let m = Arc::new(unsafe { memmap2::Mmap::map(&*f)? });
        if (m.len() as u64) < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("segment {seg} is shorter than its records say"),
            ));
        }
        self.maps.lock().unwrap().insert(seg, m.clone());
        Ok(m)
    }

    /// Like [`BlobFiles::read`], as a view of the mapped segment where the bytes are in one
    /// (no copy).
    pub fn view(
        &self,
        id: BlobId,
        loc: BlobLoc,
        size: u64,
        offset: u64,
        len: u64,
    ) -> io::Result<crate::BlobBytes> {
        if let BlobLoc::Segment { seg, offset: base } = loc {
            let start = offset.min(size);
            let n = len.min(size - start);
            let from = base + start;
            let m = self.mapped(seg, from + n)?;
            return Ok(crate::BlobBytes::view(
                m,
                from as usize..(from + n) as usize,
            ));
        }
        self.read(id, loc, size, offset, len)
            .map(crate::BlobBytes::owned)
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
        if let BlobLoc::Segment { seg, offset: base } = loc {
            let from = base + start;
            let m = self.mapped(seg, from + n as u64)?;
            return Ok(m[from as usize..from as usize + n].to_vec());
        }
        let mut buf = vec![0u8; n];
        match loc {
            BlobLoc::Segment { .. } => unreachable!(),
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
