//! Backups: the age of the newest good one in `[backup] dir`, or, on PostgreSQL, whether the
//! database archives its write-ahead log.

use postern_config::Config;
use postern_store::backup::{self, BackupKind};

use crate::report::Section;

pub(super) async fn backups(cfg: &Config) -> Section {
    let mut s = Section::new("Backups");
    if cfg.storage.backend == "postgres" {
        match postern_store::postgres::backup_settings(&cfg.storage.url).await {
            Ok(postern_store::BackupSupport::Database {
                wal_archiving: true,
                detail,
            }) => s.ok(format!(
                "PostgreSQL archives its write-ahead log ({detail}): with base backups (pg_basebackup) the store can be restored to any moment"
            )),
            Ok(postern_store::BackupSupport::Database { detail, .. }) => s.warn(
                format!("PostgreSQL does not archive its write-ahead log ({detail})"),
                "Back the database up with pg_dump at least daily, or turn on WAL archiving (archive_mode = on, archive_command) and take base backups with pg_basebackup to restore to any moment; postern backup does not copy a PostgreSQL store.",
            ),
            Ok(_) => {}
            Err(e) => s.warn(
                format!("cannot read the database's archiving settings: {e}"),
                "Check storage.url.",
            ),
        }
        return s;
    }
    let Some(dir) = &cfg.backup.dir else {
        s.info(
            "no scheduled backups: set [backup] dir (and every, keep) and the server takes them itself; postern backup DIR takes one now",
        );
        return s;
    };
    let all = match backup::list(dir) {
        Ok(all) => all,
        Err(e) => {
            s.fail(
                format!("cannot read the backups in {}: {e}", dir.display()),
                "Check that backup.dir exists and that the server's user may read and write it.",
            );
            return s;
        }
    };
    let Some(last) = all.iter().rev().find(|m| m.kind != BackupKind::Account) else {
        s.warn(
            format!("no backup in {} yet", dir.display()),
            "The server takes the first within a minute of starting; if it does not, its log says why (or run postern backup with that directory).",
        );
        return s;
    };
    let age = postern_store::now() - last.created;
    let every = cfg.backup.every.0 as i64;
    let hours = age as f64 / 3600.0;
    if age > 2 * every + 3600 {
        s.fail(
            format!(
                "the newest backup ({}, {}) is {hours:.0} hours old, and one is due every {} hours",
                last.name,
                backup::show_time(last.created),
                every / 3600
            ),
            "Scheduled backups fail: the server's log says why (disk full, permissions). Run postern backup with backup.dir to see the error now.",
        );
    } else {
        s.ok(format!(
            "newest backup {} ({}, {hours:.1} hours ago): {} messages, verified when written; {} backup(s) in {}",
            last.name,
            last.kind,
            last.counts.messages,
            all.len(),
            dir.display()
        ));
    }
    s
}
