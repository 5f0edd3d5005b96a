//! Backups of the embedded store while it runs, and data directories made from them.
//!
//! A snapshot is one redb read transaction: the records are copied table by table from it, and
//! the message bytes they point at are copied from the files as they were committed. Segments
//! are append-only, so bytes up to a segment's committed length never change; files the writer
//! frees while a backup runs are removed only after it (`Pins`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableHandle,
    WriteTransaction,
};

use super::tables::*;
use super::{Shared, db_err};
use crate::backup::{self, BackupKind, Counts, FileEntry, Manifest, SegmentPiece};
use crate::{Progress, Result, StoreError};

/// Files the writer freed while backups ran: removed when the last backup ends.
#[derive(Default)]
pub(crate) struct Pins {
    count: usize,
    files: Vec<PathBuf>,
    segments: Vec<u64>,
}

impl Pins {
    /// Whether a freed file must wait; if so it is kept in the list.
    pub(crate) fn defer_file(&mut self, p: &Path) -> bool {
        if self.count > 0 {
            self.files.push(p.to_path_buf());
        }
        self.count > 0
    }

    pub(crate) fn defer_segment(&mut self, seg: u64) -> bool {
        if self.count > 0 {
            self.segments.push(seg);
        }
        self.count > 0
    }
}

struct Pin<'a>(&'a Shared);

impl<'a> Pin<'a> {
    fn new(shared: &'a Shared) -> Pin<'a> {
        shared.pins.lock().unwrap().count += 1;
        Pin(shared)
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut p = self.0.pins.lock().unwrap();
        p.count -= 1;
        if p.count == 0 {
            for f in p.files.drain(..) {
                let _ = fs::remove_file(f);
            }
            for s in p.segments.drain(..) {
                self.0.blobs.forget_segment(s);
                let _ = fs::remove_file(self.0.blobs.segment_path(s));
            }
        }
    }
}

/// Names of the data directory's entries that are the store itself or only of this run.
const NOT_FILES: &[&str] = &[
    "store.redb",
    "blobs",
    "tmp",
    "postern.lock",
    "control.sock",
    "pre-upgrade",
];

/// Copies every table of the store; a table added to the store must be added here (a test
/// compares this list with the store's tables).
fn copy_records(r: &ReadTransaction, w: &WriteTransaction) -> Result<()> {
    macro_rules! copy {
        ($($t:ident),* $(,)?) => {$(
            {
                let src = r.open_table($t).map_err(db_err)?;
                let mut dst = w.open_table($t).map_err(db_err)?;
                for x in src.iter().map_err(db_err)? {
                    let (k, v) = x.map_err(db_err)?;
                    dst.insert(k.value(), v.value()).map_err(db_err)?;
                }
            }
        )*};
    }
    use redb::ReadableTable;
    copy!(
        META,
        DOMAINS,
        ACCOUNTS,
        ACCOUNT_BY_ADDRESS,
        ALIASES,
        MAILBOXES,
        MAILBOX_BY_NAME,
        MESSAGES,
        MODSEQ,
        EXPUNGED,
        KEPT,
        KEPT_BY_TIME,
        SUBSCRIPTIONS,
        BLOBS,
        SEGMENTS,
        QUEUE,
        TRACE,
        TRACE_KEYS,
        TRACE_TIME,
        SIEVE,
        SIEVE_ACTIVE,
        SEEN,
        SENDERS,
        TOKENS,
        REPORT_TALLY,
        REPORTS,
        REPORT_KEYS,
        STATS,
        ACL,
        ACL_BY_IDENTIFIER,
        SEEN_PRIVATE,
        SEEN_PRIVATE_READERS,
        SEND_AS,
        SEND_AS_BY_DELEGATE,
        METADATA,
        METADATA_BY_MAILBOX,
        DAV_COLLECTIONS,
        DAV_COLLECTION_BY_NAME,
        DAV_RESOURCES,
        DAV_CONTENT,
        DAV_UIDS,
        DAV_REMOVED,
    );
    Ok(())
}

/// What a snapshot holds, counted in it.
pub(crate) fn counts(r: &ReadTransaction) -> Result<Counts> {
    use redb::ReadableTable;
    let len = |n: std::result::Result<u64, redb::StorageError>| n.map_err(db_err);
    let mut c = Counts {
        domains: len(r.open_table(DOMAINS).map_err(db_err)?.len())?,
        accounts: len(r.open_table(ACCOUNTS).map_err(db_err)?.len())?,
        mailboxes: len(r.open_table(MAILBOXES).map_err(db_err)?.len())?,
        blobs: len(r.open_table(BLOBS).map_err(db_err)?.len())?,
        queued: len(r.open_table(QUEUE).map_err(db_err)?.len())?,
        ..Default::default()
    };
    let msgs = r.open_table(MESSAGES).map_err(db_err)?;
    for x in msgs.iter().map_err(db_err)? {
        let (k, v) = x.map_err(db_err)?;
        c.messages += 1;
        c.message_bytes += decode_message(k.value().1, v.value())?.size;
    }
    Ok(c)
}

/// The store's identity, made when it is first needed.
pub(crate) fn store_id(db: &Database) -> Result<String> {
    let r = db.begin_read().map_err(db_err)?;
    if let Some(v) = r
        .open_table(META)
        .map_err(db_err)?
        .get(STORE_ID)
        .map_err(db_err)?
    {
        return Ok(format!("{:016x}", v.value()));
    }
    drop(r);
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| StoreError::Backend("no random numbers".into()))?;
    let id = u64::from_le_bytes(b);
    let w = db.begin_write().map_err(db_err)?;
    w.open_table(META)
        .map_err(db_err)?
        .insert(STORE_ID, id)
        .map_err(db_err)?;
    w.commit().map_err(db_err)?;
    Ok(format!("{id:016x}"))
}

fn big_name(id: u64) -> String {
    format!("{id:016x}")
}

fn seg_name(seg: u64) -> String {
    format!("seg-{seg:010}.dat")
}

/// The large-message files a snapshot points at.
fn big_ids(r: &ReadTransaction) -> Result<Vec<(u64, u64)>> {
    use redb::ReadableTable;
    let t = r.open_table(BLOBS).map_err(db_err)?;
    let mut out = Vec::new();
    for x in t.iter().map_err(db_err)? {
        let (k, v) = x.map_err(db_err)?;
        let (size, loc, _) = decode_blob_loc(v.value())?;
        if loc == BlobLoc::File {
            out.push((k.value(), size));
        }
    }
    Ok(out)
}

/// Takes a backup of the running store into a new directory under `dir`.
pub(crate) fn snapshot(
    db: &Database,
    shared: &Shared,
    dir: &Path,
    incremental: bool,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let started = Instant::now();
    fs::create_dir_all(dir)?;
    let store_id = store_id(db)?;
    let earlier = backup::list(dir)?;
    let base = if incremental {
        earlier
            .iter()
            .rev()
            .find(|m| m.kind != BackupKind::Account && m.store_id == store_id)
            .cloned()
    } else {
        None
    };
    let chain = match &base {
        Some(b) => backup::chain(&earlier, b)?,
        None => Vec::new(),
    };
    // What the backups this one builds on already hold.
    let mut held_to: HashMap<u64, u64> = HashMap::new();
    let mut held_big: HashSet<u64> = HashSet::new();
    for m in &chain {
        for p in &m.segments {
            let e = held_to.entry(p.seg).or_insert(0);
            *e = (*e).max(p.to);
        }
        held_big.extend(m.big.iter().copied());
    }

    let _pin = Pin::new(shared);
    let r = db.begin_read().map_err(db_err)?;
    let created = crate::now();
    let kind = if base.is_some() {
        BackupKind::Incremental
    } else {
        BackupKind::Full
    };
    let name = backup::new_name(dir, created, "");
    let partial = dir.join(format!("{name}.partial"));
    let _ = fs::remove_dir_all(&partial);
    backup::private_dir(&partial)?;
    let result = (|| {
        let mut m = Manifest::new(kind, name.clone(), created);
        m.store_id = store_id.clone();
        m.base = base.as_ref().map(|b| b.name.clone());
        m.store_format = SCHEMA;
        m.counts = counts(&r)?;

        // What is to copy, so progress knows the whole.
        let segs: Vec<(u64, u64)> = {
            use redb::ReadableTable;
            let t = r.open_table(SEGMENTS).map_err(db_err)?;
            let mut v = Vec::new();
            for x in t.iter().map_err(db_err)? {
                let (k, val) = x.map_err(db_err)?;
                v.push((k.value(), val.value().0));
            }
            v
        };
        let mut pieces = Vec::new();
        for &(seg, end) in &segs {
            m.segment_ends.insert(seg, end);
            let from = match held_to.get(&seg) {
                Some(&to) if to <= end => to,
                _ => 0,
            };
            if end > from {
                pieces.push(SegmentPiece { seg, from, to: end });
            }
        }
        let bigs: Vec<(u64, u64)> = big_ids(&r)?
            .into_iter()
            .filter(|(id, _)| !held_big.contains(id))
            .collect();
        let total: u64 = pieces.iter().map(|p| p.to - p.from).sum::<u64>()
            + bigs.iter().map(|b| b.1).sum::<u64>();

        progress.phase("copying");
        progress.total(m.counts.blobs, total);
        let records = partial.join("store.redb");
        {
            let out = Database::create(&records).map_err(db_err)?;
            let w = out.begin_write().map_err(db_err)?;
            copy_records(&r, &w)?;
            w.commit().map_err(db_err)?;
        }
        // Counted in the copy, which opening may touch: its checksum comes after.
        {
            let db = Database::open(&records).map_err(db_err)?;
            let c = counts(&db.begin_read().map_err(db_err)?)?;
            if c != m.counts {
                return Err(StoreError::Invalid(format!(
                    "the copied records count {c:?} where the store had {:?}",
                    m.counts
                )));
            }
        }
        let e = backup::hash_file(&records, |_| {})?;
        fs::File::open(&records)?.sync_all()?;
        progress.total(m.counts.blobs, total + e.0);
        progress.add(0, e.0);
        m.files.push(FileEntry {
            path: "store.redb".into(),
            size: e.0,
            sha256: e.1,
        });
        for p in &pieces {
            let rel = seg_name(p.seg);
            let e = backup::copy_file(
                &shared.blobs.segment_path(p.seg),
                p.from,
                Some(p.to),
                &partial.join(&rel),
                &rel,
                |n| progress.add(0, n),
            )?;
            m.bytes += e.size;
            m.files.push(e);
            m.segments.push(*p);
        }
        // Messages in segments are counted as a whole: their bytes went by above.
        let in_files = big_ids(&r)?.len() as u64;
        progress.add(m.counts.blobs.saturating_sub(in_files), 0);
        for &(id, size) in &bigs {
            let rel = format!("big/{}", big_name(id));
            let e = backup::copy_file(
                &shared.blobs.big_path(id),
                0,
                Some(size),
                &partial.join(&rel),
                &rel,
                |n| progress.add(1, n),
            )?;
            m.bytes += e.size;
            m.files.push(e);
            m.big.push(id);
        }
        // Large messages an earlier backup holds.
        progress.add(in_files.saturating_sub(bigs.len() as u64), 0);
        copy_other_files(&shared.dir, dir, &partial, &mut m)?;
        Ok::<_, StoreError>(m)
    })();
    drop(r);
    drop(_pin);
    let mut m = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    for d in [partial.clone(), partial.join("big"), partial.join("files")] {
        if d.is_dir() {
            backup::sync_dir(&d)?;
        }
    }

    // Verified as it is on disk: every file's checksum, and the records' counts.
    progress.phase("verifying");
    progress.total(0, m.files.iter().map(|f| f.size).sum());
    if let Err(e) = backup::verify_files(&partial, &m, |n| progress.add(0, n)) {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    m.bytes += m.files[0].size;
    m.seconds = started.elapsed().as_secs_f64();
    backup::finish(&partial, dir, &m)?;
    Ok(m)
}

/// The data directory's other files (DKIM keys, certificates, ACME state), as they are.
fn copy_other_files(data: &Path, backups: &Path, partial: &Path, m: &mut Manifest) -> Result<()> {
    let skip = fs::canonicalize(backups).ok();
    let mut stack = vec![(data.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && NOT_FILES.contains(&name.as_str()) {
                continue;
            }
            let p = e.path();
            if skip.is_some() && fs::canonicalize(&p).ok() == skip {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push((p, r));
            } else if ft.is_file() {
                let dst_rel = format!("files/{r}");
                let e = backup::copy_file(&p, 0, None, &partial.join(&dst_rel), &dst_rel, |_| {})?;
                m.bytes += e.size;
                m.files.push(e);
            }
        }
    }
    Ok(())
}

/// Which backup to restore: by name, else the newest taken at or before `at`, else the newest.
pub fn pick(all: &[Manifest], name: Option<&str>, at: Option<i64>) -> Result<Manifest> {
    let mut whole = all.iter().filter(|m| m.kind != BackupKind::Account);
    let found = match (name, at) {
        (Some(n), _) => whole.rfind(|m| m.name == n),
        (None, Some(t)) => whole.rfind(|m| m.created <= t),
        (None, None) => whole.next_back(),
    };
    found.cloned().ok_or_else(|| {
        StoreError::NotFound(match (name, at) {
            (Some(n), _) => format!("a whole-store backup named {n}"),
            (None, Some(t)) => format!(
                "a whole-store backup taken at or before {}",
                backup::show_time(t)
            ),
            (None, None) => "a whole-store backup in that directory".to_string(),
        })
    })
}

/// Makes the data directory `target` (new or empty) from the backup `last` and those it builds
/// on; every byte read is checked against its manifest.
pub fn restore(
    dir: &Path,
    all: &[Manifest],
    last: &Manifest,
    target: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    if target.exists()
        && fs::read_dir(target)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(StoreError::Invalid(format!(
            "{} is not empty: restore into a new directory",
            target.display()
        )));
    }
    let made = restore_into(dir, all, last, target, progress);
    if made.is_err() {
        // Half a data directory must not be mistaken for one.
        let _ = fs::remove_dir_all(target);
    }
    made
}

fn restore_into(
    dir: &Path,
    all: &[Manifest],
    last: &Manifest,
    target: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    if last.store_format > SCHEMA {
        return Err(StoreError::Invalid(format!(
            "backup {} holds store format {} and this version of Postern reads up to {SCHEMA}",
            last.name, last.store_format
        )));
    }
    let chain = backup::chain(all, last)?;
    let blobs = target.join("blobs");
    fs::create_dir_all(blobs.join("big"))?;
    let entry = |m: &Manifest, rel: &str| -> Result<FileEntry> {
        m.files
            .iter()
            .find(|f| f.path == rel)
            .cloned()
            .ok_or_else(|| {
                StoreError::Invalid(format!("backup {}: {rel} is not in its manifest", m.name))
            })
    };
    let checked_copy = |m: &Manifest, rel: &str, dst: &Path, on: &mut dyn FnMut(u64)| {
        let want = entry(m, rel)?;
        let got = backup::copy_file(&dir.join(&m.name).join(rel), 0, None, dst, rel, on)?;
        if got != want {
            return Err(StoreError::Invalid(format!(
                "backup {}: {rel} is damaged (SHA-256 {}, the manifest says {})",
                m.name, got.sha256, want.sha256
            )));
        }
        Ok(())
    };

    progress.phase("restoring");
    let total: u64 = last.segment_ends.values().sum();
    progress.total(last.counts.blobs, total);
    checked_copy(last, "store.redb", &target.join("store.redb"), &mut |_| {})?;

    // Each segment from its pieces, oldest first; every piece's file is checked whole.
    let mut files: BTreeMap<u64, fs::File> = BTreeMap::new();
    let mut covered: HashMap<u64, u64> = HashMap::new();
    for m in &chain {
        for p in m.segments.iter() {
            let Some(&end) = last.segment_ends.get(&p.seg) else {
                continue;
            };
            let rel = seg_name(p.seg);
            let want = entry(m, &rel)?;
            let src = dir.join(&m.name).join(&rel);
            let at = covered.entry(p.seg).or_insert(0);
            if p.from > *at {
                return Err(StoreError::Invalid(format!(
                    "backup {}: segment {} misses bytes {}..{}",
                    m.name, p.seg, *at, p.from
                )));
            }
            if p.from == 0 {
                // A segment started afresh (never the case for live ones): older pieces go.
                files.remove(&p.seg);
            }
            let f = match files.entry(p.seg) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(fs::File::create(blobs.join(&rel))?)
                }
            };
            let upto = p.to.min(end);
            let (size, sha) = place_piece(&src, f, p.from, upto, &mut |n| progress.add(0, n))?;
            if sha != want.sha256 || size != p.to - p.from || size != want.size {
                return Err(StoreError::Invalid(format!(
                    "backup {}: {rel} is damaged",
                    m.name
                )));
            }
            *at = (*at).max(upto);
        }
    }
    for (&seg, &end) in &last.segment_ends {
        if covered.get(&seg).copied().unwrap_or(0) < end {
            return Err(StoreError::Invalid(format!(
                "backup {}: segment {seg} is not whole in it and the backups it builds on",
                last.name
            )));
        }
        let f = match files.remove(&seg) {
            Some(f) => f,
            None => fs::File::create(blobs.join(seg_name(seg)))?,
        };
        f.set_len(end)?;
        f.sync_all()?;
    }

    // Large messages: the newest copy of each one the records point at.
    let wanted = {
        let db = Database::open(target.join("store.redb")).map_err(db_err)?;
        let r = db.begin_read().map_err(db_err)?;
        big_ids(&r)?
    };
    progress.add(last.counts.blobs.saturating_sub(wanted.len() as u64), 0);
    for (id, _) in wanted {
        let m = chain
            .iter()
            .rev()
            .find(|m| m.big.contains(&id))
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "backup {}: message file {} is in none of its backups",
                    last.name,
                    big_name(id)
                ))
            })?;
        let rel = format!("big/{}", big_name(id));
        checked_copy(m, &rel, &blobs.join("big").join(big_name(id)), &mut |n| {
            progress.add(1, n)
        })?;
    }
    backup::sync_dir(&blobs.join("big"))?;
    backup::sync_dir(&blobs)?;

    for f in last.files.iter().filter(|f| f.path.starts_with("files/")) {
        let dst = target.join(&f.path["files/".len()..]);
        checked_copy(last, &f.path, &dst, &mut |_| {})?;
        // Keys among them: readable by the server's user only, as they were.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o600))?;
    }
    backup::sync_dir(target)?;
    Ok(())
}

/// Writes a piece file's bytes into the segment at `from` (those below `upto`), hashing the
/// whole piece file as it goes.
fn place_piece(
    src: &Path,
    f: &fs::File,
    from: u64,
    upto: u64,
    on: &mut dyn FnMut(u64),
) -> Result<(u64, String)> {
    let mut r = fs::File::open(src)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        let keep = upto.saturating_sub(at).min(n as u64) as usize;
        if keep > 0 {
            f.write_all_at(&buf[..keep], at)?;
            on(keep as u64);
        }
        at += n as u64;
    }
    Ok((at - from, backup::to_hex(hash.finish().as_ref())))
}

/// Counts what a data directory holds (after a restore: to compare with the backup's).
pub fn count_dir(data: &Path) -> Result<Counts> {
    let db = Database::open(data.join("store.redb")).map_err(db_err)?;
    counts(&db.begin_read().map_err(db_err)?)
}

fn table_names(db: &Database) -> Vec<String> {
    let r = db.begin_read().unwrap();
    let mut v: Vec<String> = r
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    v.sort();
    v
}

/// The tables a new store has, and those a backup of it copies (for the test that a backup
/// misses none).
#[doc(hidden)]
pub fn tables_for_test(dir: &Path) -> (Vec<String>, Vec<String>) {
    let store = super::EmbeddedStore::open(&dir.join("data"), Default::default()).unwrap();
    let out = Database::create(dir.join("copy.redb")).unwrap();
    let w = out.begin_write().unwrap();
    copy_records(&store.db.begin_read().unwrap(), &w).unwrap();
    w.commit().unwrap();
    (table_names(&store.db), table_names(&out))
}

/// Where the writer removes a freed file: now, or after the backups that run.
pub(crate) fn free_file(shared: &Shared, p: &Path) {
    if !shared.pins.lock().unwrap().defer_file(p) {
        let _ = fs::remove_file(p);
    }
}

pub(crate) fn free_segment(shared: &Shared, seg: u64) {
    if !shared.pins.lock().unwrap().defer_segment(seg) {
        shared.blobs.forget_segment(seg);
        let _ = fs::remove_file(shared.blobs.segment_path(seg));
    }
}

pub(crate) type PinsLock = Mutex<Pins>;
