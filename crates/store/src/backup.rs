//! The backup format, shared by every kind of backup: one directory per backup under the
//! directory the administrator names, each with a `manifest.json` written last (a directory
//! without one is a backup that did not finish and is ignored) that lists every file with its
//! size and SHA-256.
//!
//! - full: the records (a copy of `store.redb` taken in one read transaction), every segment's
//!   committed bytes, every large message file, and the data directory's other files (keys,
//!   certificates);
//! - incremental: the records again (they change in place: flags, moves, expunges), and only
//!   the message bytes added since the backup it builds on (`base`);
//! - account: one account's folders, flags and message bytes, from any backend.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// The backup format this version writes; it reads this one and older.
pub const FORMAT: u32 = 1;

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
    Account,
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Account => "account",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the backup's directory, '/'-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Bytes `[from, to)` of a segment, held in the backup's file `seg-N.dat`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentPiece {
    pub seg: u64,
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub domains: u64,
    pub accounts: u64,
    pub mailboxes: u64,
    pub messages: u64,
    /// Sum of the messages' sizes (a message in two folders counts twice).
    pub message_bytes: u64,
    pub blobs: u64,
    pub queued: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kind: BackupKind,
    /// The backup's directory name.
    pub name: String,
    /// When the snapshot was taken (seconds since the epoch).
    pub created: i64,
    /// The Postern version that wrote it.
    pub version: String,
    /// The store format of the records.
    pub store_format: u64,
    /// Which store it was taken of: an incremental backup only builds on its own store's.
    #[serde(default)]
    pub store_id: String,
    /// The backup an incremental one builds on.
    #[serde(default)]
    pub base: Option<String>,
    /// The address of an account backup.
    #[serde(default)]
    pub account: Option<String>,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub segments: Vec<SegmentPiece>,
    /// Every segment of the snapshot and its committed length.
    #[serde(default)]
    pub segment_ends: BTreeMap<u64, u64>,
    /// Large message files held in this backup (by blob id).
    #[serde(default)]
    pub big: Vec<u64>,
    pub counts: Counts,
    /// Bytes this backup holds, and how long it took to write and verify them.
    pub bytes: u64,
    pub seconds: f64,
}

impl Manifest {
    pub fn new(kind: BackupKind, name: String, created: i64) -> Manifest {
        Manifest {
            format: FORMAT,
            kind,
            name,
            created,
            version: env!("CARGO_PKG_VERSION").to_string(),
            store_format: 0,
            store_id: String::new(),
            base: None,
            account: None,
            files: Vec::new(),
            segments: Vec::new(),
            segment_ends: BTreeMap::new(),
            big: Vec::new(),
            counts: Counts::default(),
            bytes: 0,
            seconds: 0.0,
        }
    }

    pub fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.seconds.max(1e-6)
    }
}

pub fn to_hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// A backup's name: its UTC time, made unique in `dir`.
pub fn new_name(dir: &Path, created: i64, suffix: &str) -> String {
    let base = format!("{}{suffix}", stamp(created));
    let mut name = base.clone();
    let mut n = 2;
    while dir.join(&name).exists() || dir.join(format!("{name}.partial")).exists() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// `20261204T170501Z`.
pub fn stamp(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2026-12-04 17:05:01 UTC`.
pub fn show_time(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

fn civil(t: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// A time as the command line gives it: `2026-12-04`, `2026-12-04T17:05[:01][Z]` (UTC), a
/// backup's name (`20261204T170501Z`), or seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let rest_ok = s.chars().all(|c| c.is_ascii_digit() || "-:TZ ".contains(c));
    if !rest_ok || !(digits.len() == 8 || digits.len() == 12 || digits.len() == 14) {
        return None;
    }
    let n = |a: usize, b: usize| digits[a..b].parse::<i64>().ok();
    let (y, mo, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (h, mi, sec) = match digits.len() {
        8 => (23, 59, 59),
        12 => (n(8, 10)?, n(10, 12)?, 0),
        _ => (n(8, 10)?, n(10, 12)?, n(12, 14)?),
    };
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec)
}

/// Copies a file (or the bytes `[from, to)` of one) into `dst`, fsynced, and returns its entry.
pub fn copy_file(
    src: &Path,
    from: u64,
    to: Option<u64>,
    dst: &Path,
    rel: &str,
    mut on_bytes: impl FnMut(u64),
) -> io::Result<FileEntry> {
    let mut f = File::open(src)?;
    if from > 0 {
        io::Seek::seek(&mut f, io::SeekFrom::Start(from))?;
    }
    let mut r: Box<dyn Read> = match to {
        Some(to) => Box::new(f.take(to.saturating_sub(from))),
        None => Box::new(f),
    };
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    let mut out = File::create(dst)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
        on_bytes(n as u64);
    }
    if let Some(to) = to
        && size != to - from
    {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} holds {size} bytes where {} were expected",
                src.display(),
                to - from
            ),
        ));
    }
    out.sync_all()?;
    Ok(FileEntry {
        path: rel.to_string(),
        size,
        sha256: to_hex(hash.finish().as_ref()),
    })
}

/// Writes bytes to a new file, fsynced.
pub fn write_file(dst: &Path, rel: &str, bytes: &[u8]) -> io::Result<FileEntry> {
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p)?;
    }
    let mut out = File::create(dst)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    Ok(FileEntry {
        path: rel.to_string(),
        size: bytes.len() as u64,
        sha256: to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()),
    })
}

/// SHA-256 and size of a file as it is on disk now.
pub fn hash_file(p: &Path, mut on_bytes: impl FnMut(u64)) -> io::Result<(u64, String)> {
    let mut f = File::open(p)?;
    // Read back from the disk, not from the page cache the copy just filled.
    drop_cache(&f);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
        on_bytes(n as u64);
    }
    Ok((size, to_hex(hash.finish().as_ref())))
}

fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: advice on an open descriptor; no memory is touched.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// Checks every file of a backup against its manifest; the first difference is the error.
pub fn verify_files(dir: &Path, m: &Manifest, mut on_bytes: impl FnMut(u64)) -> Result<()> {
    for e in &m.files {
        let p = dir.join(&e.path);
        let (size, sha) = hash_file(&p, &mut on_bytes).map_err(|err| {
            StoreError::Invalid(format!("backup {}: cannot read {}: {err}", m.name, e.path))
        })?;
        if size != e.size || sha != e.sha256 {
            return Err(StoreError::Invalid(format!(
                "backup {}: {} is damaged ({size} bytes, SHA-256 {sha}; the manifest says {} bytes, {})",
                m.name, e.path, e.size, e.sha256
            )));
        }
    }
    Ok(())
}

/// A new backup's directory: mail and keys, so its owner's only.
pub fn private_dir(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700))
}

pub fn sync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

/// Writes the manifest last and moves the finished backup to its name: until then it is a
/// `.partial` directory that no listing shows.
pub fn finish(partial: &Path, dir: &Path, m: &Manifest) -> Result<PathBuf> {
    let json = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Backend(e.to_string()))?;
    write_file(&partial.join(MANIFEST), MANIFEST, &json)?;
    sync_dir(partial)?;
    let done = dir.join(&m.name);
    fs::rename(partial, &done)?;
    sync_dir(dir)?;
    Ok(done)
}

pub fn read_manifest(backup: &Path) -> Result<Manifest> {
    let bytes = fs::read(backup.join(MANIFEST)).map_err(|e| {
        StoreError::Invalid(format!(
            "{} is not a finished backup: {e}",
            backup.display()
        ))
    })?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        StoreError::Invalid(format!(
            "{}: the manifest cannot be read: {e}",
            backup.display()
        ))
    })?;
    if m.format > FORMAT {
        return Err(StoreError::Invalid(format!(
            "backup {} has format {} and this version of Postern reads up to {FORMAT}: restore it with the version that wrote it ({}) or a newer one",
            m.name, m.format, m.version
        )));
    }
    Ok(m)
}

/// The finished backups in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::from_io(e)),
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.join(MANIFEST).is_file() {
            out.push(read_manifest(&p)?);
        }
    }
    out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(out)
}

/// The backups a full or incremental one needs, from its full backup to itself.
pub fn chain(all: &[Manifest], last: &Manifest) -> Result<Vec<Manifest>> {
    let mut out = vec![last.clone()];
    let mut at = last.clone();
    while let Some(base) = &at.base {
        let b = all.iter().find(|m| &m.name == base).ok_or_else(|| {
            StoreError::Invalid(format!(
                "backup {} builds on {base}, which is missing from the backup directory",
                at.name
            ))
        })?;
        if out.len() > all.len() {
            return Err(StoreError::Invalid(format!(
                "backup {} has a loop in its bases",
                last.name
            )));
        }
        out.push(b.clone());
        at = b.clone();
    }
    if at.kind != BackupKind::Full {
        return Err(StoreError::Invalid(format!(
            "backup {} does not lead back to a full backup",
            last.name
        )));
    }
    out.reverse();
    Ok(out)
}

/// The backups to delete so that only the newest `keep` whole-store backups (and what they
/// build on) stay: a chain goes only when none of its backups is among the kept ones.
pub fn prune_plan(all: &[Manifest], keep: usize) -> Vec<String> {
    let store: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.kind != BackupKind::Account)
        .collect();
    if store.len() <= keep {
        return Vec::new();
    }
    let kept: Vec<&Manifest> = store[store.len() - keep.max(1)..].to_vec();
    let mut needed = std::collections::HashSet::new();
    for m in kept {
        if let Ok(c) = chain(all, m) {
            needed.extend(c.into_iter().map(|m| m.name));
        } else {
            needed.insert(m.name.clone());
        }
    }
    store
        .iter()
        .filter(|m| !needed.contains(&m.name))
        .map(|m| m.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_written() {
        let t = parse_time("2026-12-04T17:05:01Z").unwrap();
        assert_eq!(stamp(t), "20261204T170501Z");
        assert_eq!(parse_time("20261204T170501Z"), Some(t));
        assert_eq!(parse_time("2026-12-04 17:05"), Some(t - 1));
        assert_eq!(
            show_time(parse_time("2026-12-04").unwrap()),
            "2026-12-04 23:59:59 UTC"
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01"), None);
    }

    fn m(name: &str, created: i64, kind: BackupKind, base: Option<&str>) -> Manifest {
        let mut m = Manifest::new(kind, name.into(), created);
        m.base = base.map(String::from);
        m
    }

    #[test]
    fn pruning_keeps_what_kept_backups_build_on() {
        use BackupKind::*;
        let all = vec![
            m("a", 1, Full, None),
            m("b", 2, Incremental, Some("a")),
            m("c", 3, Full, None),
            m("d", 4, Incremental, Some("c")),
            m("e", 5, Incremental, Some("d")),
            m("x", 6, Account, None),
        ];
        assert_eq!(prune_plan(&all, 2), vec!["a", "b"]);
        // The newest three need c, d and e; b needs a.
        assert_eq!(prune_plan(&all, 4), Vec::<String>::new());
        assert_eq!(prune_plan(&all, 1), vec!["a", "b"]);
        assert_eq!(chain(&all, &all[4]).unwrap().len(), 3);
        assert!(chain(&all[1..], &all[1]).is_err());
    }
}
