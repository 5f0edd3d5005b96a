//! A message's bytes on their way to the store: in memory, or in a spool file that is mapped
//! (never read whole into memory) and that the store takes over by a rename. A spool file not
//! handed to the store is removed when its `Raw` goes.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use postern_store::BlobData;

pub enum Raw {
    Memory(Vec<u8>),
    Spooled(Spool),
}

pub struct Spool {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
    len: u64,
    /// Handed to the store: the file is no longer ours to remove.
    taken: bool,
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.map = None;
        if !self.taken {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Raw {
    /// A spool file the caller wrote and fsynced, from now on owned by this `Raw`.
    pub fn spooled(path: PathBuf) -> Raw {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Raw::Spooled(Spool {
            path,
            map: None,
            len,
            taken: false,
        })
    }

    pub fn len(&self) -> u64 {
        match self {
            Raw::Memory(b) => b.len() as u64,
            Raw::Spooled(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the bytes readable with [`Raw::bytes`]: a spool file is mapped.
    pub fn map(&mut self) -> io::Result<()> {
        if let Raw::Spooled(s) = self
            && s.map.is_none()
            && s.len > 0
        {
            let f = std::fs::File::open(&s.path)?;
            // SAFETY: the spool file is this process's own, written and fsynced before, and
            // nothing writes to it while it is mapped (edits write a new file).
            let map = unsafe { memmap2::Mmap::map(&f)? };
            s.len = map.len() as u64;
            s.map = Some(map);
        }
        Ok(())
    }

    /// The whole message (after [`Raw::map`] for a spool file; empty before).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Raw::Memory(b) => b,
            Raw::Spooled(s) => s.map.as_deref().unwrap_or_default(),
        }
    }

    /// The message with `insert` placed at `at` and the byte ranges `remove` taken out (all
    /// of them after `at`, in order). In memory this is done in place; a spool file is copied
    /// into a new one as it streams, never held whole in memory.
    pub async fn edit(
        self,
        at: usize,
        insert: Vec<u8>,
        remove: Vec<Range<usize>>,
    ) -> io::Result<Raw> {
        if insert.is_empty() && remove.is_empty() {
            return Ok(self);
        }
        match self {
            Raw::Memory(mut b) => {
                for r in remove.iter().rev() {
                    let r = r.start.min(b.len())..r.end.min(b.len());
                    b.drain(r);
                }
                let at = at.min(b.len());
                b.splice(at..at, insert);
                Ok(Raw::Memory(b))
            }
            Raw::Spooled(mut old) => {
                old.map = None;
                let from = old.path.clone();
                let to = old.path.with_extension("edited");
                let to2 = to.clone();
                let r = tokio::task::spawn_blocking(move || {
                    copy_edited(&from, &to2, at, &insert, &remove)
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
                match r {
                    Ok(()) => Ok(Raw::spooled(to)),
                    Err(e) => {
                        let _ = std::fs::remove_file(&to);
                        Err(e)
                    }
                }
            }
        }
    }

    /// The bytes for the store, which takes a spool file over.
    pub fn into_blob(self) -> BlobData {
        match self {
            Raw::Memory(b) => BlobData::Memory(b),
            Raw::Spooled(mut s) => {
                s.taken = true;
                s.map = None;
                BlobData::File(std::mem::take(&mut s.path))
            }
        }
    }

    /// A second, independent copy for another delivery (a redirect): a spool file is linked,
    /// not copied, since stored bytes never change.
    pub fn duplicate(&self) -> io::Result<Raw> {
        match self {
            Raw::Memory(b) => Ok(Raw::Memory(b.clone())),
            Raw::Spooled(s) => {
                let to = s
                    .path
                    .with_file_name(format!("in-{}", postern_message::new_trace_id()));
                std::fs::hard_link(&s.path, &to)?;
                Ok(Raw::spooled(to))
            }
        }
    }
}

fn copy_edited(
    from: &Path,
    to: &Path,
    at: usize,
    insert: &[u8],
    remove: &[Range<usize>],
) -> io::Result<()> {
    use io::{Read, Seek, SeekFrom, Write};
    let mut src = std::fs::File::open(from)?;
    let mut dst = io::BufWriter::new(std::fs::File::create(to)?);
    // Copies the source from where it stands to `end`.
    fn copy_to(src: &mut std::fs::File, dst: &mut impl Write, end: u64) -> io::Result<()> {
        let pos = src.stream_position()?;
        if end > pos {
            io::copy(&mut Read::by_ref(src).take(end - pos), dst)?;
        }
        Ok(())
    }
    copy_to(&mut src, &mut dst, at as u64)?;
    dst.write_all(insert)?;
    for r in remove {
        copy_to(&mut src, &mut dst, r.start as u64)?;
        src.seek(SeekFrom::Start(r.end as u64))?;
    }
    io::copy(&mut src, &mut dst)?;
    let f = dst.into_inner().map_err(|e| e.into_error())?;
    f.sync_data()?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn edits_in_memory_and_on_disk_agree() {
        let msg = b"Return-Path: <a@b>\r\nReceived: x\r\nAuthentication-Results: us; spf=pass\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
        let cut = 33..71;
        let want = b"Return-Path: <a@b>\r\nX-Ours: 1\r\nReceived: x\r\nSubject: s\r\n\r\nbody\r\n";
        let m = Raw::Memory(msg.clone())
            .edit(20, b"X-Ours: 1\r\n".to_vec(), vec![cut.clone()])
            .await
            .unwrap();
        assert_eq!(m.bytes(), want);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in-1");
        std::fs::write(&p, &msg).unwrap();
        let mut f = Raw::spooled(p.clone())
            .edit(20, b"X-Ours: 1\r\n".to_vec(), vec![cut])
            .await
            .unwrap();
        assert!(!p.exists(), "the old spool file is gone");
        f.map().unwrap();
        assert_eq!(f.bytes(), want);
        let BlobData::File(kept) = f.into_blob() else {
            panic!("a file")
        };
        assert!(kept.exists(), "handed to the store, not removed");
    }

    #[test]
    fn a_spool_file_nobody_took_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in-2");
        std::fs::write(&p, b"x").unwrap();
        drop(Raw::spooled(p.clone()));
        assert!(!p.exists());
    }
}
