//! PostgreSQL is backed up by its own tools: a copy through this interface would be slower and
//! no more consistent than `pg_dump`, or base backups with WAL archiving (which also restore to
//! any moment).

use async_trait::async_trait;

use super::{PgStore, pg};
use crate::*;

/// What to do instead, whatever the archiving state.
pub const ADVICE: &str = "this store is in PostgreSQL: back it up with the database's own tools: \
    pg_dump for a nightly copy, or pg_basebackup with WAL archiving (archive_mode = on and an \
    archive_command) to restore to any moment; per-account backups (postern backup --user) \
    still work";

/// Whether the server archives its write-ahead log, and its settings in words.
async fn archiving(c: &tokio_postgres::Client) -> Result<(bool, String)> {
    let mode: String = c
        .query_one("SHOW archive_mode", &[])
        .await
        .map_err(pg)?
        .get(0);
    let command: String = c
        .query_one("SHOW archive_command", &[])
        .await
        .map_err(pg)?
        .get(0);
    // PostgreSQL 15 also takes an archive library instead of a command.
    let library: String = match c.query_opt("SHOW archive_library", &[]).await {
        Ok(Some(r)) => r.get(0),
        _ => String::new(),
    };
    let archiver = if !library.is_empty() {
        format!("archive_library = {library}")
    } else {
        format!("archive_command = {command:?}")
    };
    let has_archiver = !library.is_empty() || !(command.is_empty() || command == "(disabled)");
    Ok((
        mode != "off" && has_archiver,
        format!("archive_mode = {mode}, {archiver}"),
    ))
}

/// The database's backup settings, for the doctor (which has no store open).
pub async fn backup_settings(url: &str) -> Result<BackupSupport> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(pg)?;
    let driver = tokio::spawn(conn);
    let r = archiving(&c).await;
    drop(c);
    driver.abort();
    let (wal_archiving, detail) = r?;
    Ok(BackupSupport::Database {
        wal_archiving,
        detail,
    })
}

#[async_trait]
impl BackupStore for PgStore {
    async fn backup_support(&self) -> Result<BackupSupport> {
        let (wal_archiving, detail) = archiving(&*self.client().await?).await?;
        Ok(BackupSupport::Database {
            wal_archiving,
            detail,
        })
    }

    async fn backup(
        &self,
        _dir: &std::path::Path,
        _incremental: bool,
        _progress: SharedProgress,
    ) -> Result<backup::Manifest> {
        let state = match self.backup_support().await? {
            BackupSupport::Database {
                wal_archiving: true,
                detail,
            } => format!("WAL archiving is on ({detail})"),
            BackupSupport::Database { detail, .. } => {
                format!("WAL archiving is off ({detail})")
            }
            BackupSupport::Snapshot => String::new(),
        };
        Err(StoreError::Invalid(format!("{ADVICE}; {state}")))
    }
}
