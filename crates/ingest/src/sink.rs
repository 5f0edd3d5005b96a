//! A message arriving: kept in memory until it grows past a threshold, then written to a spool
//! file beside the store (so the store takes it over by a rename, and a large message is
//! never held whole in memory).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::raw::Raw;

/// How much of the message start is kept in memory after spilling, for header checks (the
/// Received count) before the message is parsed.
const HEAD_KEEP: usize = 256 << 10;

/// Room kept at the end of an in-memory message for the header fields ingest adds (the
/// authentication results), so adding them never copies the message.
const HEADROOM: usize = 4096;

pub struct MessageSink {
    mem: Vec<u8>,
    head: Vec<u8>,
    file: Option<(File, PathBuf)>,
    threshold: usize,
    spool_dir: PathBuf,
    /// Length of the trace header fields we put first (Return-Path, Received).
    pub prefix_len: usize,
    /// Length of the Return-Path field at the very start (not sent on to remote servers).
    pub return_path_len: usize,
    written: u64,
    error: Option<std::io::Error>,
}

impl MessageSink {
    pub fn new(prefix: &[u8], return_path_len: usize, threshold: usize, spool_dir: &Path) -> Self {
        let mut s = MessageSink {
            mem: Vec::with_capacity(prefix.len() + 4096),
            head: Vec::new(),
            file: None,
            threshold,
            spool_dir: spool_dir.to_path_buf(),
            prefix_len: prefix.len(),
            return_path_len,
            written: 0,
            error: None,
        };
        s.put(prefix);
        s
    }

    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// The message without our trace header fields, as far as kept in memory.
    pub fn original_head(&self) -> &[u8] {
        if self.file.is_some() {
            &self.head[self.prefix_len.min(self.head.len())..]
        } else {
            &self.mem[self.prefix_len..]
        }
    }

    pub fn put(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.written += bytes.len() as u64;
        if let Some((f, _)) = &mut self.file {
            if let Err(e) = f.write_all(bytes) {
                self.error = Some(e);
            }
            return;
        }
        self.mem.extend_from_slice(bytes);
        if self.mem.len() > self.threshold
            && let Err(e) = self.spill()
        {
            self.error = Some(e);
        }
    }

    /// Like [`MessageSink::put`], with every line end made CRLF (bare LF and bare CR alike), as
    /// stored messages have; `cr` carries a CR from the end of one chunk to the next.
    pub fn put_crlf(&mut self, chunk: &[u8], cr: &mut bool) {
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'\n' if *cr => {
                    // The CR before it was written as CRLF already.
                    self.put(&chunk[start..i]);
                    start = i + 1;
                    *cr = false;
                }
                b'\n' => {
                    self.put(&chunk[start..i]);
                    self.put(b"\r\n");
                    start = i + 1;
                }
                b'\r' => {
                    self.put(&chunk[start..i]);
                    self.put(b"\r\n");
                    start = i + 1;
                    *cr = true;
                }
                _ => *cr = false,
            }
        }
        self.put(&chunk[start..]);
    }

    fn spill(&mut self) -> std::io::Result<()> {
        let path = self
            .spool_dir
            .join(format!("in-{}", postern_message::new_trace_id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(&self.mem)?;
        self.head = std::mem::take(&mut self.mem);
        self.head.truncate(HEAD_KEEP);
        self.head.shrink_to_fit();
        self.file = Some((f, path));
        Ok(())
    }

    /// The finished message: in memory, or an fsynced spool file.
    pub async fn finish(mut self) -> Result<Raw, std::io::Error> {
        if let Some(e) = self.error.take() {
            self.discard();
            return Err(e);
        }
        match self.file.take() {
            None => {
                let mut mem = std::mem::take(&mut self.mem);
                mem.reserve_exact(HEADROOM);
                Ok(Raw::Memory(mem))
            }
            Some((f, path)) => {
                let r = tokio::task::spawn_blocking(move || f.sync_data())
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                if let Err(e) = r {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                Ok(Raw::spooled(path))
            }
        }
    }

    pub fn discard(&mut self) {
        if let Some((_, p)) = self.file.take() {
            let _ = std::fs::remove_file(p);
        }
        self.mem = Vec::new();
    }
}

impl Drop for MessageSink {
    fn drop(&mut self) {
        self.discard();
    }
}
