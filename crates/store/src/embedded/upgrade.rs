//! The store's format version: reading it, refusing a newer one, and upgrading an older one
//! after a safety copy of the database file (`docs/upgrades.md`).
//!
//! Migrations change only `store.redb`: message bytes (`blobs/`) keep their layout, so the
//! copy of that one file is what gives an administrator the way back.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::db_err;
use super::tables::*;
use crate::{Result, StoreError};

/// Where the safety copies go, inside the data directory.
pub const PRE_UPGRADE_DIR: &str = "pre-upgrade";

/// The format version recorded in `db`; `None` for a database never initialized.
pub(super) fn stored_version(db: &Database) -> Result<Option<u64>> {
    let r = db.begin_read().map_err(db_err)?;
    let meta = match r.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    Ok(meta.get(SCHEMA_VERSION).map_err(db_err)?.map(|v| v.value()))
}

pub(super) fn newer_format(found: u64) -> StoreError {
    StoreError::NewerStore {
        found,
        known: SCHEMA,
    }
}

/// Brings a store of format `from` up to `SCHEMA`, inside the caller's write transaction (the
/// caller records the new version in the same one).
pub(super) fn migrate(w: &redb::WriteTransaction, from: u64) -> Result<()> {
    if from < 2 {
        carry_subscriptions(w)?;
    }
    // 3 adds the sharing tables, which start empty (`init_tables` makes them): nothing to
    // carry over. New tables alone would not need a new format, but an older build must not
    // run on this store: it drops `shared` from every account record it rewrites, and deleting
    // an account or a mailbox it leaves access-list lines and send-as grants behind, which a
    // new account of the same address would inherit.
    // 5 adds the calendar and address book tables, empty too: a format-4 build deleting an
    // account would leave its collections behind, and its backups would drop them.
    Ok(())
}

/// Schema 1 kept a `subscribed` flag in each mailbox record (every mailbox was created
/// subscribed): those flags become the subscriptions table.
fn carry_subscriptions(w: &redb::WriteTransaction) -> Result<()> {
    let boxes = w.open_table(MAILBOXES).map_err(db_err)?;
    let mut subs = w.open_table(SUBSCRIPTIONS).map_err(db_err)?;
    for x in boxes.iter().map_err(db_err)? {
        let (_, v) = x.map_err(db_err)?;
        let rec: serde_json::Value = from_json(v.value())?;
        let (Some(account), Some(name)) = (rec["account"].as_u64(), rec["name"].as_str()) else {
            continue;
        };
        if rec["subscribed"].as_bool() != Some(false) {
            subs.insert((account, name), ()).map_err(db_err)?;
        }
    }
    Ok(())
}

/// Copies `<dir>/store.redb` of format `from` to `<dir>/pre-upgrade/store-schema-<from>-<UTC
/// time>.redb` and makes the copy durable. The database must be closed: an open one keeps its
/// allocator state in memory and marks its file as needing recovery.
pub(super) fn safety_copy(dir: &Path, from: u64) -> Result<PathBuf> {
    let backups = dir.join(PRE_UPGRADE_DIR);
    let stem = format!("store-schema-{from}-{}", utc_stamp(now_secs()));
    // Never over an earlier copy (a copy put back and upgraded again within the second).
    let dest = (1..)
        .map(|n| match n {
            1 => backups.join(format!("{stem}.redb")),
            n => backups.join(format!("{stem}-{n}.redb")),
        })
        .find(|p| !p.exists())
        .expect("a free name");
    // Under another name until complete, so a copy cut short never looks like a backup.
    let part = backups.join(format!(".{}.part", file_name(&dest)));
    let r = (|| -> io::Result<()> {
        fs::create_dir_all(&backups)?;
        fs::copy(dir.join("store.redb"), &part)?;
        File::open(&part)?.sync_all()?;
        fs::rename(&part, &dest)?;
        File::open(&backups)?.sync_all()?;
        File::open(dir)?.sync_all()
    })();
    r.map_err(|e| {
        let _ = fs::remove_file(&part);
        let why = if crate::is_disk_full(&e) {
            "the disk is full (the copy needs as much free space as store.redb takes)".to_string()
        } else {
            e.to_string()
        };
        StoreError::UpgradeCopy {
            from,
            to: SCHEMA,
            path: dest.display().to_string(),
            why,
        }
    })?;
    Ok(dest)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `20261203T134123Z`: sorts by time, and needs no quoting in a shell.
fn utc_stamp(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Records `version` as the format of the closed store in `dir`, changing nothing else: for
/// tests of what a newer or older store does on open.
#[doc(hidden)]
pub fn set_format_version(dir: &Path, version: u64) -> Result<()> {
    let db = Database::open(dir.join("store.redb")).map_err(db_err)?;
    let w = db.begin_write().map_err(db_err)?;
    w.open_table(META)
        .map_err(db_err)?
        .insert(SCHEMA_VERSION, version)
        .map_err(db_err)?;
    w.commit().map_err(db_err)?;
    db.close().map_err(db_err)
}

/// The format recorded in the closed store in `dir`, for the same tests.
#[doc(hidden)]
pub fn format_version(dir: &Path) -> Result<Option<u64>> {
    let db = Database::open(dir.join("store.redb")).map_err(db_err)?;
    let v = stored_version(&db);
    db.close().map_err(db_err)?;
    v
}

#[cfg(test)]
mod tests {
    use super::utc_stamp;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_796_305_283), "20261203T134123Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
